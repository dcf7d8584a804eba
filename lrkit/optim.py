"""Optimisers of the course: LoRA+ parameter groups, and Adam and SGD for batched sweeps.

**LoRA+** (Hayou, Ghosh and Yu 2024) trains the two factors of every adapter with
different learning rates,

    eta_B = rho * eta_A,     rho = eta_B / eta_A  (the LoRA+ ratio; lambda in the paper),

because at large width ``n`` efficient learning with Init[A] needs ``eta_A`` of order
``1/n`` and ``eta_B`` of order 1 (Chapter 6). :func:`loraplus_param_groups` builds the
optimiser groups for any model carrying :class:`lrkit.LoRALinear` adapters and
:func:`loraplus_optimizer` is the one-call constructor.

*How it differs from PEFT's* ``peft.optimizers.create_loraplus_optimizer``: for the
adapters' ``A`` and ``B`` matrices the groups and learning rates are the same (a parity
test checks it), but PEFT (following the authors' reference code)

* puts *every* trainable 1-D parameter (biases, LayerNorm weights) in the fast group
  with ``lr * ratio``; here only the ``B`` matrices are fast, every other trainable
  parameter keeps ``lr``;
* overrides the optimiser's ``weight_decay`` with ``loraplus_weight_decay`` (default 0) in
  every group and forces 0 on biases and norms; here ``weight_decay`` (and every other
  keyword) is passed to the optimiser untouched;
* gives LoRA embedding layers their own ``loraplus_lr_embedding`` (default ``1e-6``);
  ``lrkit`` has no LoRA embeddings.

**Batched optimisers.** A sweep trains ``K`` configurations at once: every parameter has a
leading configuration axis ``(K, ...)`` and each configuration has its own learning rate
``lr[k]``. :func:`batched_adam_step` and :func:`batched_sgd_step` apply one update to all
of them; configuration ``k`` follows exactly the trajectory ``torch.optim.Adam`` (or SGD)
would give it alone, up to float round-off.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import nn

from ._validate import as_real, positive_float
from .galore import GaLoreAdamW  # Chapter 10's optimiser, re-exported where optimisers live
from .lora import lora_layers

__all__ = ["loraplus_param_groups", "loraplus_optimizer", "per_config", "AdamState",
           "batched_adam_step", "batched_sgd_step", "GaLoreAdamW"]


# --------------------------------------------------------------------------- LoRA+ groups


def loraplus_param_groups(model: nn.Module, lr: float, ratio: float) -> list[dict[str, Any]]:
    """Optimiser parameter groups for LoRA+: ``B`` at ``lr * ratio``, everything else at ``lr``.

    Returns up to three groups, each ``{"params": [...], "lr": ..., "name": ...}``:
    ``"lora_A"`` (every adapter's ``A``, learning rate ``eta_A = lr``), ``"lora_B"`` (every
    ``B``, ``eta_B = ratio * lr``) and ``"other"`` (any other trainable parameter, ``lr``);
    empty groups are left out. Frozen parameters are never included.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    lr = positive_float(lr, "lr")
    ratio = positive_float(ratio, "ratio")
    layers = lora_layers(model)
    if not layers:
        raise ValueError("model carries no lrkit LoRA adapters: call lrkit.add_lora(model, rank) first")
    a_ids = {id(layer.A) for _, layer in layers}
    b_ids = {id(layer.B) for _, layer in layers}
    groups: dict[str, list[nn.Parameter]] = {"lora_A": [], "lora_B": [], "other": []}
    for p in model.parameters():
        if not p.requires_grad:
            continue
        groups["lora_A" if id(p) in a_ids else "lora_B" if id(p) in b_ids else "other"].append(p)
    rates = {"lora_A": lr, "lora_B": lr * ratio, "other": lr}
    return [{"params": ps, "lr": rates[name], "name": name} for name, ps in groups.items() if ps]


def loraplus_optimizer(model: nn.Module, lr: float, ratio: float = 16.0,
                       optimizer: type[torch.optim.Optimizer] = torch.optim.AdamW,
                       **kwargs: Any) -> torch.optim.Optimizer:
    """``optimizer(loraplus_param_groups(model, lr, ratio), lr=lr, **kwargs)``.

    The default ratio ``16 = 2^4`` is the practical default discussed in Chapter 6; the
    best ratio depends on the model and the task. ``kwargs`` (``weight_decay``, ``betas``, ...)
    reach the optimiser unchanged.
    """
    if not (isinstance(optimizer, type) and issubclass(optimizer, torch.optim.Optimizer)):
        raise TypeError(f"optimizer must be a torch.optim.Optimizer class, got {optimizer!r}")
    make: Callable[..., torch.optim.Optimizer] = optimizer  # a subclass: its own signature (lr, betas, ...)
    return make(loraplus_param_groups(model, lr, ratio), lr=lr, **kwargs)


# --------------------------------------------------------------------------- batched optimisers


def per_config(values: float | Sequence[float] | torch.Tensor, like: torch.Tensor,
               name: str = "lr") -> torch.Tensor:
    """Per-configuration values shaped ``(K, 1, ..., 1)`` to broadcast against ``like`` (K, ...).

    Numbers and sequences (NumPy and 0-d tensor scalars included) are checked on the host; a
    tensor already on an accelerator is not inspected, so a training step never waits for the
    device (the caller validated it once, before its loop). ``like`` must be floating point.
    """
    if not like.is_floating_point():
        raise TypeError(f"the parameter must be a floating-point tensor (a {name} would be rounded to its "
                        f"integer dtype), got {like.dtype}")
    K = like.shape[0]
    if isinstance(values, torch.Tensor):
        if values.device.type == "cpu" and (not bool(torch.isfinite(values).all()) or bool((values < 0).any())):
            raise ValueError(f"{name} must be finite and non-negative for every configuration")
        v = values.to(device=like.device, dtype=like.dtype).flatten()
    else:
        items = list(values) if hasattr(values, "__iter__") and not isinstance(values, (str, bytes)) else [values]
        nums = [as_real(x, name, "a number or a sequence of numbers") for x in items]
        if not all(x >= 0 and x < float("inf") for x in nums):
            raise ValueError(f"{name} must be finite and non-negative for every configuration")
        v = torch.tensor(nums, dtype=like.dtype).to(like.device)
    if v.numel() == 1 and K != 1:
        v = v.expand(K)
    if v.numel() != K:
        raise ValueError(f"{name} must be a number or hold one value per configuration (K = {K}), "
                         f"got {v.numel()} values")
    return v.reshape((K,) + (1,) * (like.ndim - 1))


class AdamState:
    """Adam's moments for one batched parameter: ``m``, ``v`` (shape of the parameter) and the step count."""

    def __init__(self, param: torch.Tensor) -> None:
        self.m = torch.zeros_like(param)
        self.v = torch.zeros_like(param)
        self.step = 0


def batched_adam_step(param: torch.Tensor, grad: torch.Tensor, state: AdamState,
                      lr: float | Sequence[float] | torch.Tensor, betas: tuple[float, float] = (0.9, 0.999),
                      eps: float = 1e-8) -> torch.Tensor:
    """One Adam step for ``K`` configurations at once; returns the new parameter, updates ``state``.

    With ``t = state.step + 1``, elementwise and per configuration ``k``:

        m <- b1 m + (1 - b1) g,    v <- b2 v + (1 - b2) g^2,
        p <- p - lr[k] * (m / (1 - b1^t)) / (sqrt(v / (1 - b2^t)) + eps)

    exactly as ``torch.optim.Adam`` (no weight decay, no amsgrad). Shapes: ``param`` and
    ``grad`` ``(K, ...)``; ``lr`` a number or ``K`` values. An update has size about
    ``lr`` per entry whatever the gradient's scale: the fact Chapters 5 and 6 build on.
    """
    if param.shape != grad.shape:
        raise ValueError(f"grad must have the shape of param {tuple(param.shape)}, got {tuple(grad.shape)}")
    if state.m.shape != param.shape or state.v.shape != param.shape:
        raise ValueError(f"state must be the AdamState of this parameter (shape {tuple(param.shape)}), "
                         f"got moments of shape {tuple(state.m.shape)}")
    b1, b2 = betas
    if not (0 <= b1 < 1 and 0 <= b2 < 1):
        raise ValueError(f"betas must lie in [0, 1), got {betas}")
    eps = positive_float(eps, "eps")
    rate = per_config(lr, param)
    state.step += 1
    t = state.step
    state.m.mul_(b1).add_(grad, alpha=1 - b1)
    state.v.mul_(b2).addcmul_(grad, grad, value=1 - b2)
    denom = (state.v / (1 - b2 ** t)).sqrt_().add_(eps)
    return param - rate * (state.m / (1 - b1 ** t)) / denom


def batched_sgd_step(param: torch.Tensor, grad: torch.Tensor,
                     lr: float | Sequence[float] | torch.Tensor) -> torch.Tensor:
    """``param - lr[k] * grad`` per configuration ``k``; shapes ``(K, ...)``."""
    if param.shape != grad.shape:
        raise ValueError(f"grad must have the shape of param {tuple(param.shape)}, got {tuple(grad.shape)}")
    return param - per_config(lr, param) * grad
