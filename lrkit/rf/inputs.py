"""Inputs of the random-feature chapter: experiment sizes, power-law tasks, argument checks (Chapter 7).

Every solver and simulation of :mod:`lrkit.rf` takes a task ``(eigvals, coeffs)`` (shape
``(M,)``, ``M`` modes) and counts or ridges that broadcast; the checks here turn them into
float64 CPU tensors and raise ``TypeError``/``ValueError`` naming the argument.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch

from .._validate import positive_int
from ..env import get_device, resolve_scale

Number = int | float
ArrayLike = Number | Sequence[Number] | torch.Tensor

__all__ = ["Number", "ArrayLike", "sizes", "power_law_task", "as_tensor", "check_task", "check_count",
           "check_nonneg", "check_sizes", "check_task_coeffs"]


def sizes(scale: str | None = None) -> dict[str, object]:
    """Experiment sizes for ``scale`` (default :func:`lrkit.get_scale`).

    ``small`` follows our CPU calibration (4000 modes, n = 128, 10 trials); ``full`` is the
    paper's synthetic setting (10 000 modes, n = 256, k up to 10^4), for a GPU.
    """
    scale = resolve_scale(scale)
    if scale == "small":
        return dict(modes=4000, n=128, trials=10, ks=(16, 32, 64, 96, 112, 128, 144, 176, 256, 512, 1024),
                    k_fixed=256, ns=(16, 32, 64, 128, 192, 224, 256, 288, 320, 512), opt_ks=(16, 64, 128, 256, 1024),
                    opt_ns=(32, 64, 128, 256, 512), pool=1000, pool_dim=8, pool_n=128,
                    pool_ks=(32, 64, 128, 256, 512, 1024))
    return dict(modes=10000, n=256, trials=10,
                ks=(16, 32, 64, 128, 192, 224, 256, 288, 320, 512, 1024, 2048, 4096, 10000),
                k_fixed=256, ns=(16, 32, 64, 128, 192, 224, 256, 288, 320, 512, 1024, 2048),
                opt_ks=(16, 64, 256, 1024, 4096), opt_ns=(64, 128, 256, 512, 1024, 2048),
                pool=4000, pool_dim=16, pool_n=256, pool_ks=(64, 128, 256, 512, 1024, 2048, 4096))


# --------------------------------------------------------------------------- input checks


def as_tensor(x: ArrayLike, name: str) -> torch.Tensor:
    if isinstance(x, bool):
        raise TypeError(f"{name} must be a number, a sequence of numbers or a tensor, got bool")
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

    The paper's exponents ``alpha, beta`` are our ``p, q``. Returns float64 tensors of shape
    ``(modes,)``; the noiseless test MSE of the zero predictor is ``||v||^2 = 1``.
    """
    positive_int(modes, "modes")
    for name, value in (("p", p), ("q", q)):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
            raise ValueError(f"{name} must be a positive finite exponent, got {value!r}")
    i = torch.arange(1, modes + 1, dtype=torch.float64)
    lam, v = i ** (-float(p)), i ** (-float(q) / 2)
    dev = get_device() if device is None else torch.device(device)
    return lam.to(dev), (v / v.norm()).to(dev)

