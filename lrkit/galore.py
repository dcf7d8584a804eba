"""GaLore: full-parameter training with optimiser state in a switching low-rank subspace.

Zhao et al., "GaLore: Memory-Efficient LLM Training by Gradient Low-Rank Projection"
(ICML 2024), written to be step-for-step equal to the authors' ``galore-torch``
(``galore_torch.GaLoreAdamW``, ``proj_type="std"`` and its siblings).

For a weight ``W`` of shape ``(m, n)`` with gradient ``G`` in a parameter group that
carries the key ``rank`` (GaLore's keys: ``rank``, ``update_proj_gap``, ``scale``,
``proj_type``), every ``update_proj_gap`` steps the projector is recomputed from the
SVD of the current gradient ``G = U S V^T``:

* ``m >= n`` ("std"): ``P = V_r^T`` (r, n); the low-rank gradient is ``R = G P^T`` (m, r);
* ``m < n``: ``P = U_r`` (m, r); ``R = P^T G`` (r, n).

Adam's moments live in the shape of ``R`` (``2 r max(m, n)`` numbers instead of
``2 m n``), are *not* reset when ``P`` changes, and the normalised step
``N = m_hat / (sqrt(v_hat) + eps)`` is projected back (``N P`` or ``P N``), times
``scale``. Decoupled weight decay ``W -= lr * wd * W`` comes last, as in galore-torch.
Groups without ``rank`` are plain AdamW. The weight itself is updated in full:
the sum of many rank-r steps in different subspaces has full rank.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from typing import Any

import torch
from torch.optim import Optimizer

from ._validate import as_real

__all__ = ["GaLoreAdamW", "GaLoreProjector", "optimizer_state_numel"]

PROJ_TYPES = ("std", "reverse_std", "right", "left", "full")
Ortho = torch.Tensor | list[torch.Tensor]  # one side's singular vectors, or both sides' for "full"


class GaLoreProjector:
    """The low-rank projector of one weight, recomputed every ``update_proj_gap`` steps."""

    def __init__(self, rank: int, update_proj_gap: int = 200, scale: float = 1.0,
                 proj_type: str = "std") -> None:
        if not isinstance(rank, int) or rank < 1:
            raise ValueError(f"rank must be a positive integer, got {rank!r}")
        if not isinstance(update_proj_gap, int) or update_proj_gap < 1:
            raise ValueError(f"update_proj_gap must be a positive integer, got {update_proj_gap!r}")
        if proj_type not in PROJ_TYPES:
            raise ValueError(f"proj_type must be one of {PROJ_TYPES}, got {proj_type!r}")
        self.rank, self.update_proj_gap, self.scale, self.proj_type = rank, update_proj_gap, scale, proj_type
        self.ortho: Ortho | None = None  # (n, r) or (r, m); a [left, right] pair for "full"

    def _side(self, grad: torch.Tensor) -> str:
        tall = grad.shape[0] >= grad.shape[1]
        return {"std": "right" if tall else "left", "reverse_std": "left" if tall else "right",
                "right": "right", "left": "left", "full": "full"}[self.proj_type]

    def project(self, grad: torch.Tensor, step: int) -> torch.Tensor:
        """``R`` from the full gradient ``G`` (m, n); recomputes ``P`` when ``step % gap == 0``."""
        side = self._side(grad)
        if self.ortho is None or step % self.update_proj_gap == 0:
            self.ortho = _orthogonal(grad, self.rank, side)
        ortho = self.ortho
        if isinstance(ortho, list):  # "full": both sides
            low: torch.Tensor = ortho[0].t() @ grad @ ortho[1].t()
        else:
            low = grad @ ortho.t() if side == "right" else ortho.t() @ grad
        return low

    def project_back(self, low: torch.Tensor) -> torch.Tensor:
        """Back to the weight's shape, times ``scale`` (galore-torch's shape rules)."""
        ortho = self.ortho
        if ortho is None:
            raise RuntimeError("project_back needs a projector: call project(grad, step) first")
        full: torch.Tensor
        if isinstance(ortho, list):  # "full"
            full = ortho[0] @ low @ ortho[1]
        elif self.proj_type == "std":
            full = low @ ortho if low.shape[0] >= low.shape[1] else ortho @ low
        elif self.proj_type == "reverse_std":
            full = ortho @ low if low.shape[0] <= low.shape[1] else low @ ortho
        elif self.proj_type == "right":
            full = low @ ortho
        else:
            full = ortho @ low
        return full * self.scale


def _orthogonal(grad: torch.Tensor, rank: int, side: str) -> Ortho:
    """Top-``rank`` singular vectors of ``grad`` (SVD in float32, as galore-torch)."""
    is_float = grad.dtype == torch.float
    U, _, Vh = torch.linalg.svd(grad if is_float else grad.float(), full_matrices=False)

    def back(t: torch.Tensor) -> torch.Tensor:  # to the gradient's dtype and device
        return t if is_float else t.to(grad.device).type(grad.dtype)

    if side == "right":
        return back(Vh[:rank, :])
    if side == "left":
        return back(U[:, :rank])
    return [back(U[:, :rank]), back(Vh[:rank, :])]


class GaLoreAdamW(Optimizer):
    """AdamW whose groups with a ``rank`` key keep their moments in GaLore's subspace.

    ``GaLoreAdamW([{"params": others}, {"params": matrices, "rank": 4,
    "update_proj_gap": 50, "scale": 1.0, "proj_type": "std"}], lr=1e-2)``.
    Defaults as galore-torch: ``betas=(0.9, 0.999)``, ``eps=1e-6``, bias-corrected.
    """

    def __init__(self, params: Iterable[Any], lr: float = 1e-3, betas: tuple[float, float] = (0.9, 0.999),
                 eps: float = 1e-6, weight_decay: float = 0.0, correct_bias: bool = True) -> None:
        lr = as_real(lr, "lr", "a non-negative finite number")
        if not math.isfinite(lr) or lr < 0:
            raise ValueError(f"lr must be a non-negative finite number, got {lr}")
        if not all(0.0 <= b < 1.0 for b in betas):
            raise ValueError(f"betas must be two numbers in [0, 1), got {betas}")
        if eps < 0:
            raise ValueError(f"eps must be >= 0, got {eps}")
        defaults = {"lr": lr, "betas": betas, "eps": eps, "weight_decay": weight_decay,
                    "correct_bias": correct_bias}
        super().__init__(params, defaults)
        for group in self.param_groups:
            if "rank" in group:
                GaLoreProjector(group["rank"], group.get("update_proj_gap", 200), group.get("scale", 1.0),
                                group.get("proj_type", "std"))  # validates the keys
                if any(p.ndim != 2 for p in group["params"]):
                    raise ValueError("a GaLore group (with 'rank') may hold only matrices (2-D parameters)")

    @torch.no_grad()
    def step(self, closure: Callable[[], Any] | None = None) -> Any:
        loss = closure() if closure is not None else None
        for group in self.param_groups:
            beta1, beta2 = group["betas"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                grad, state = p.grad, self.state[p]
                state.setdefault("step", 0)
                if "rank" in group:
                    if "projector" not in state:
                        state["projector"] = GaLoreProjector(
                            group["rank"], group.get("update_proj_gap", 200), group.get("scale", 1.0),
                            group.get("proj_type", "std"))
                    grad = state["projector"].project(grad, state["step"])
                if "exp_avg" not in state:
                    state["exp_avg"] = torch.zeros_like(grad)
                    state["exp_avg_sq"] = torch.zeros_like(grad)
                m, v = state["exp_avg"], state["exp_avg_sq"]
                state["step"] += 1
                m.mul_(beta1).add_(grad, alpha=1.0 - beta1)
                v.mul_(beta2).addcmul_(grad, grad, value=1.0 - beta2)
                denom = v.sqrt().add_(group["eps"])
                step_size = group["lr"]
                if group["correct_bias"]:
                    step_size = step_size * math.sqrt(1.0 - beta2 ** state["step"]) / (1.0 - beta1 ** state["step"])
                norm_grad = m / denom
                if "rank" in group:
                    norm_grad = state["projector"].project_back(norm_grad)
                p.add_(norm_grad, alpha=-step_size)
                if group["weight_decay"] > 0.0:
                    p.add_(p, alpha=-group["lr"] * group["weight_decay"])
        return loss


def optimizer_state_numel(optimizer: Optimizer) -> int:
    """Numbers an optimiser keeps per run: every tensor in its state (moments, projectors)."""
    if not isinstance(optimizer, Optimizer):
        raise TypeError(f"optimizer must be a torch.optim.Optimizer, got {type(optimizer).__name__}")
    total = 0
    for state in optimizer.state.values():
        for value in state.values():
            if isinstance(value, torch.Tensor) and value.ndim > 0:
                total += value.numel()
            elif isinstance(value, GaLoreProjector) and value.ortho is not None:
                parts = value.ortho if isinstance(value.ortho, list) else [value.ortho]
                total += sum(t.numel() for t in parts)
    return total
