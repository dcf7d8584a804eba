"""Inputs of the random-feature chapter: power-law tasks, argument checks (Chapter 7).

Every solver and simulation of :mod:`lrkit.rf` takes a task ``(eigvals, coeffs)`` (shape
``(M,)``, ``M`` modes) and counts or ridges that broadcast; the checks here turn them into
float64 CPU tensors (a tensor on any device, MPS's float32 included, is copied to the CPU
first) and raise ``TypeError``/``ValueError`` naming the argument. The experiment sizes live in
the lesson's sizes cell.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch

from .._validate import check_device, positive_int
from ..env import float_dtype, to_device_dtype

Number = int | float
ArrayLike = Number | Sequence[Number] | torch.Tensor

__all__ = ["Number", "ArrayLike", "power_law_task", "as_tensor", "check_task", "check_count",
           "check_nonneg", "check_sizes", "check_task_coeffs"]


# --------------------------------------------------------------------------- input checks


def as_tensor(x: ArrayLike, name: str) -> torch.Tensor:
    if isinstance(x, bool):
        raise TypeError(f"{name} must be a number, a sequence of numbers or a tensor, got bool")
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu()  # to the CPU first: float64 does not exist on MPS
    try:
        t = torch.as_tensor(x, dtype=torch.float64)
    except (TypeError, ValueError, RuntimeError) as e:
        raise TypeError(f"{name} must be a number, a sequence of numbers or a tensor, got {type(x).__name__}") from e
    return t.detach().cpu()


def check_task(eigvals: ArrayLike, coeffs: ArrayLike | None = None) -> tuple[torch.Tensor, torch.Tensor | None]:
    lam = as_tensor(eigvals, "eigvals")
    if lam.ndim != 1 or lam.numel() == 0:
        raise ValueError(f"eigvals must be a non-empty 1-D array of eigenvalues, got shape {tuple(lam.shape)}")
    if not bool(torch.isfinite(lam).all()) or bool((lam <= 0).any()):
        raise ValueError("eigvals must be positive and finite (kernel eigenvalues lambda_i > 0); "
                         f"smallest given: {lam.min().item():.3g}")
    if coeffs is None:
        return lam, None
    v = as_tensor(coeffs, "coeffs")
    if v.shape != lam.shape:
        raise ValueError(f"coeffs must have the same length as eigvals ({lam.numel()} modes), "
                         f"got shape {tuple(v.shape)}")
    if not bool(torch.isfinite(v).all()):
        raise ValueError("coeffs must be finite")
    return lam, v


def check_task_coeffs(eigvals: ArrayLike, coeffs: ArrayLike) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`check_task` when the coefficients are required: ``(lambda, v)``, both ``(M,)``."""
    lam, v = check_task(eigvals, coeffs)
    assert v is not None
    return lam, v


def check_count(x: ArrayLike, name: str, allow_inf: bool = False) -> torch.Tensor:
    t = as_tensor(x, name)
    bad = torch.isnan(t) | (t < 1) | (torch.isinf(t) & (not allow_inf))
    if bool(bad.any()):
        allowed = "numbers >= 1 (math.inf means infinitely many)" if allow_inf else "finite numbers >= 1"
        raise ValueError(f"{name} must be {allowed}, got {t[bad].flatten()[0].item()}")
    return t


def check_nonneg(x: ArrayLike, name: str) -> torch.Tensor:
    t = as_tensor(x, name)
    bad = ~torch.isfinite(t) | (t < 0)
    if bool(bad.any()):
        raise ValueError(f"{name} must be finite and >= 0, got {t[bad].flatten()[0].item()}")
    return t



def check_sizes(values: Sequence[Number] | Number, name: str, allow_inf: bool) -> list[Any]:
    vals = list(values) if isinstance(values, (list, tuple)) else [values]
    out: list[Any] = []
    for v in vals:
        if allow_inf and isinstance(v, float) and math.isinf(v) and v > 0:
            out.append(math.inf)
            continue
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise ValueError(f"{name} must be positive ints{' (or math.inf for the kernel)' if allow_inf else ''}, "
                             f"got {v!r}")
        out.append(v)
    if not out:
        raise ValueError(f"{name} must not be empty")
    return out



# --------------------------------------------------------------------------- tasks


def power_law_task(modes: int, p: float, q: float, device: torch.device | str | None = None
                   ) -> tuple[torch.Tensor, torch.Tensor]:
    """``lambda_i = i^-p`` and ``v_i = sqrt(i^-q)`` normalised to ``||v|| = 1``, ``i = 1..modes``.

    The paper's exponents ``alpha, beta`` are our ``p, q``. Returns tensors of shape ``(modes,)``
    on ``device`` (default :func:`lrkit.get_device`), computed in float64 on the CPU and stored in
    :func:`lrkit.env.float_dtype` (float32 on MPS); the noiseless test MSE of the zero predictor
    is ``||v||^2 = 1``.
    """
    positive_int(modes, "modes")
    for name, value in (("p", p), ("q", q)):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
            raise ValueError(f"{name} must be a positive finite exponent, got {value!r}")
    i = torch.arange(1, modes + 1, dtype=torch.float64)
    lam, v = i ** (-float(p)), i ** (-float(q) / 2)
    dev = check_device(device)
    wide = float_dtype(dev)
    return to_device_dtype(lam, dev, wide), to_device_dtype(v / v.norm(), dev, wide)

