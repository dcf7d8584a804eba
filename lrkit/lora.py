"""LoRA from scratch, with Hugging Face PEFT's exact semantics.

A frozen linear layer ``y = x W0^T + b`` (``W0`` of shape ``(out, in)``) gets a
trainable low-rank update (Hu et al. 2021):

    y = x W0^T + b + s * dropout(x) A^T B^T,     A: (r, in),  B: (out, r)

with ``s = alpha / r``, or ``s = alpha / sqrt(r)`` when rank-stabilised
(rsLoRA, Kalajdzievski 2023). ``alpha=None`` means ``alpha = r`` (``s = 1``).
The update to the weight is ``dW = s B A`` (rank <= r), trained with
``r (in + out)`` parameters instead of ``in * out``. ``merge()`` folds ``dW``
into ``W0`` so inference costs exactly one ``nn.Linear``; ``unmerge()`` undoes it.

DoRA (Liu et al. 2024; PEFT's ``use_dora=True``) splits each output row of the
adapted weight into a trainable magnitude ``m`` (shape ``(out,)``, initialised to
the row norms ``||W0 + s B A||_row``) and a direction:

    W' = diag(m / n) (W0 + s B A),   n = ||W0 + s B A||_row  (detached: no gradient)

This module holds the layer, :class:`LoRALinear`, and its argument checks; adapters on a whole
model (:func:`add_lora`, :func:`merge_lora`, :func:`remove_lora`, parameter counts) live in
:mod:`lrkit.lora_model` and are re-exported here.
"""

from __future__ import annotations

import math
import warnings

import torch
import torch.nn.functional as F
from torch import nn

from ._validate import as_int, as_real, positive_int
from .init import check_init_name, init_lora_

__all__ = ["LoRALinear", "add_lora", "count_parameters", "lora_layers", "lora_parameter_count", "lora_scaling",
           "merge_lora", "remove_lora", "trainable_parameters", "unmerge_lora"]  # the model-level ones: lora_model


def check_rank(rank: object, in_features: int, out_features: int) -> int:
    """``rank`` as an int with ``1 <= rank <= min(in, out)``, else ``ValueError``."""
    rank = as_int(rank, "rank")
    limit = min(in_features, out_features)
    if not 1 <= rank <= limit:
        raise ValueError(f"rank must satisfy 1 <= rank <= min(in, out) = {limit}, got {rank}")
    return rank


def check_alpha(alpha: object, rank: int) -> float:
    """``alpha`` as a positive finite float; ``None`` means ``alpha = rank``."""
    if alpha is None:
        return float(rank)
    alpha = as_real(alpha, "alpha", "a positive number or None")
    if not math.isfinite(alpha) or alpha <= 0:
        raise ValueError(f"alpha must be a positive finite number or None (meaning alpha = rank), got {alpha}")
    return float(alpha)


def check_dropout(dropout: object) -> float:
    """``dropout`` as a float in ``[0, 1)``."""
    dropout = as_real(dropout, "dropout", "a float in [0, 1)")
    if not 0.0 <= dropout < 1.0:
        raise ValueError(f"dropout must be in [0, 1), got {dropout}")
    return float(dropout)


def lora_scaling(alpha: float, rank: int, rslora: bool = False) -> float:
    """``alpha / r``, or ``alpha / sqrt(r)`` for rsLoRA (``alpha > 0``, ``r >= 1``)."""
    rank = positive_int(rank, "rank")
    alpha = check_alpha(alpha, rank)
    return alpha / math.sqrt(rank) if rslora else alpha / rank


class LoRALinear(nn.Module):
    """A frozen ``nn.Linear`` plus a trainable low-rank adapter ``s B A``.

    Args:
        base: the pretrained layer; its weight (out, in) and bias are frozen.
        rank: r, with ``1 <= r <= min(in, out)``.
        alpha: scale numerator; ``None`` means ``alpha = r``.
        init: "A" (PEFT default), "B", "gaussian" or "pissa" (see :mod:`lrkit.init`).
        dropout: dropout probability on the adapter's input, in [0, 1).
        rslora: use ``alpha / sqrt(r)`` instead of ``alpha / r``.
        dora: add DoRA's trainable magnitude ``.magnitude`` of shape ``(out,)``.

    Shapes: input ``(..., in)``, output ``(..., out)``.
    """

    def __init__(self, base: nn.Linear, rank: int, alpha: float | None = None, init: str = "A",
                 dropout: float = 0.0, rslora: bool = False, dora: bool = False) -> None:
        super().__init__()
        if not isinstance(dora, bool):
            raise TypeError(f"dora must be True or False, got {dora!r}")
        if not isinstance(base, nn.Linear):
            raise TypeError(f"base must be a torch.nn.Linear, got {type(base).__name__}")
        if isinstance(base, LoRALinear):  # pragma: no cover - LoRALinear is not an nn.Linear
            raise TypeError("base already carries a LoRA adapter")
        self.rank = check_rank(rank, base.in_features, base.out_features)
        self.alpha = check_alpha(alpha, self.rank)
        self.init = check_init_name(init)
        self.rslora = bool(rslora)
        self.scaling = lora_scaling(self.alpha, self.rank, self.rslora)
        self.base = base
        for p in base.parameters():
            p.requires_grad_(False)
        w = base.weight
        self.A = nn.Parameter(torch.empty(self.rank, base.in_features, device=w.device, dtype=w.dtype))
        self.B = nn.Parameter(torch.empty(base.out_features, self.rank, device=w.device, dtype=w.dtype))
        rate = check_dropout(dropout)
        self.dropout: nn.Module = nn.Dropout(rate) if rate > 0 else nn.Identity()
        self.merged = False
        self._merged_delta: torch.Tensor | None = None
        init_lora_(self.A.data, self.B.data, base.weight.data, self.scaling, self.init)
        self.dora = dora
        self.magnitude: nn.Parameter | None = None
        self._dora_weight: torch.Tensor | None = None
        if dora:
            with torch.no_grad():
                self.magnitude = nn.Parameter(self.weight_norm())

    def weight_norm(self) -> torch.Tensor:
        """DoRA's ``n = ||W0 + s B A||`` per output row, shape ``(out,)``, detached."""
        w = self.base.weight
        if self.merged:
            raise RuntimeError("weight_norm() needs the unmerged base weight: call unmerge() first")
        norm: torch.Tensor = torch.linalg.norm(w + self.scaling * (self.B @ self.A).detach(), dim=1)
        return norm.detach()

    @property
    def in_features(self) -> int:
        return self.base.in_features

    @property
    def out_features(self) -> int:
        return self.base.out_features

    def delta_weight(self) -> torch.Tensor:
        """``dW = s B A``, shape ``(out, in)``."""
        return self.scaling * (self.B @ self.A)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[-1:] != (self.in_features,) or x.dtype != self.A.dtype:
            self._bad_input(x)
        y: torch.Tensor = self.base(x)
        if self.merged:  # one nn.Linear: A and B get no gradient until unmerge()
            return y
        if self.magnitude is not None:
            extra: torch.Tensor = self._dora_extra(x)
            return y + extra
        low: torch.Tensor = F.linear(F.linear(self.dropout(x), self.A), self.B)
        return y + self.scaling * low

    def _dora_extra(self, x: torch.Tensor) -> torch.Tensor:
        """``(m/n - 1) x W0^T + (m/n) s B A x`` (PEFT's DoRA forward, bias kept once)."""
        assert self.magnitude is not None
        scale = (self.magnitude / self.weight_norm()).view(1, -1)
        dx = self.dropout(x)
        base_out = F.linear(dx, self.base.weight)
        lora_out = F.linear(F.linear(dx, self.A), self.B)
        return (scale - 1) * base_out + scale * lora_out * self.scaling

    def _bad_input(self, x: torch.Tensor) -> None:
        if not isinstance(x, torch.Tensor):
            raise TypeError(f"x must be a torch.Tensor, got {type(x).__name__}")
        if x.shape[-1:] != (self.in_features,):
            raise ValueError(f"x must have shape (..., in_features={self.in_features}), got {tuple(x.shape)}")
        raise TypeError(f"x must have the layer's dtype {self.A.dtype}, got {x.dtype} "
                        f"(convert it with x.to({self.A.dtype}))")

    def get_extra_state(self) -> dict[str, bool]:
        """Saved in ``state_dict``: whether the base weight already holds ``s B A``."""
        return {"merged": self.merged}

    def set_extra_state(self, state: dict[str, bool]) -> None:
        """Loading a merged layer's state marks this layer merged (its base weight holds ``s B A``),
        so the update is not applied twice."""
        self.merged = bool(state.get("merged", False))
        self._merged_delta = None
        self._dora_weight = None

    @torch.no_grad()
    def merge(self) -> None:
        """Fold ``s B A`` into the base weight: afterwards ``forward`` is one ``nn.Linear``."""
        if self.merged:
            warnings.warn("LoRALinear.merge(): already merged, nothing to do", stacklevel=2)
            return
        if self.magnitude is not None:  # W' = diag(m / n) (W0 + s B A); unmerge restores W0 exactly
            w0 = self.base.weight.detach().clone()
            scale = (self.magnitude / self.weight_norm()).view(-1, 1)
            self.base.weight.copy_((scale * (w0 + self.delta_weight())).to(w0.dtype))
            self._dora_weight = w0
            self.merged = True
            return
        delta = self.delta_weight().to(self.base.weight.dtype)
        self.base.weight.add_(delta)
        self._merged_delta = delta  # unmerge subtracts exactly this, even if A or B change meanwhile
        self.merged = True

    @torch.no_grad()
    def unmerge(self) -> None:
        """Subtract ``s B A`` from the base weight again (inverse of :meth:`merge`)."""
        if not self.merged:
            warnings.warn("LoRALinear.unmerge(): not merged, nothing to do", stacklevel=2)
            return
        if self.magnitude is not None:
            if self._dora_weight is None:
                raise RuntimeError("a DoRA layer loaded merged cannot be unmerged: the row norms of the "
                                   "unmerged weight are not recoverable from the merged one")
            self.base.weight.copy_(self._dora_weight)
            self._dora_weight = None
            self.merged = False
            return
        delta = self._merged_delta
        if delta is None:  # merged state loaded from a state_dict: A and B are the ones merged
            delta = self.delta_weight().to(self.base.weight.dtype)
        elif not torch.equal(delta, self.delta_weight().to(delta.dtype)):
            warnings.warn("LoRALinear.unmerge(): A or B changed while merged; the update that was merged "
                          "is subtracted (the base weight is restored) and the new A, B are kept", stacklevel=2)
        self.base.weight.sub_(delta)
        self._merged_delta = None
        self.merged = False

    def extra_repr(self) -> str:
        return (f"in={self.in_features}, out={self.out_features}, rank={self.rank}, alpha={self.alpha:g}, "
                f"scaling={self.scaling:g}, init={self.init!r}, rslora={self.rslora}, merged={self.merged}"
                + (", dora=True" if self.dora else ""))


from .lora_model import (  # noqa: E402  (they build on LoRALinear; `from lrkit.lora import add_lora` keeps working)
    add_lora,
    count_parameters,
    lora_layers,
    lora_parameter_count,
    merge_lora,
    remove_lora,
    trainable_parameters,
    unmerge_lora,
)
