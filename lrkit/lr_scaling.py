"""Reading a LoRA sweep: learning rates, valleys, and the per-step terms (Chapters 5 and 6).

**Rates.** :func:`largest_stable_lr` and :func:`best_lr` read one learning-rate axis,
:func:`best_pair` and :func:`best_eta_A_per_eta_B` (the valley floor) a two-rate grid, and
:func:`near_optimal_centre` the centre of the near-optimal region, a steadier estimate than
the argmin when the loss is flat around its minimum. :func:`steps_to_reach` counts steps.

**The per-step terms.** One optimiser step changes the adapter's output ``B A z`` by

    B' A' z - B A z = B dA z  +  dB A z  +  dB dA z  =  delta1 + delta2 + delta3,

with ``dA = A' - A`` and ``dB = B' - B``: ``delta1`` is ``A``'s update read through the
current ``B``, ``delta2`` is ``B``'s update applied to the current feature ``Z_A = A z``,
``delta3`` the cross term. :func:`step_terms` measures the root mean square of each (over
the ``n`` outputs and the samples) and of ``Z_A`` (over the ``r`` features and the
samples), the quantities whose width scaling Chapters 5 and 6 predict.

Losses follow the sweep's convention: arrays ``(L, S)`` (rates, seeds) or ``(LA, LB, S)``,
NaN for a diverged run; a rate (or pair) where any seed diverged is excluded.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch

from ._validate import as_real
from .env import float_dtype, to_device_dtype

__all__ = ["largest_stable_lr", "best_lr", "best_pair", "best_eta_A_per_eta_B",
           "near_optimal_centre", "steps_to_reach", "feature_rms", "step_terms"]


def _lrs_array(lrs: Sequence[float] | np.ndarray, name: str = "lrs") -> np.ndarray:
    a = np.asarray(lrs, dtype=float)
    if a.ndim != 1 or a.size == 0:
        raise ValueError(f"{name} must be a non-empty 1-D sequence of learning rates, "
                         f"got shape {a.shape}")
    if not np.all(np.isfinite(a)) or np.any(a <= 0) or np.any(np.diff(a) <= 0):
        raise ValueError(f"{name} must be positive, finite and strictly increasing")
    return a


def largest_stable_lr(lrs: Sequence[float] | np.ndarray, diverged: np.ndarray) -> float:
    """The largest grid rate at which, and at every smaller grid rate, no seed diverged.

    ``lrs`` (L,) increasing; ``diverged`` (L,) or (L, S) booleans (S seeds). NaN when even
    the smallest rate diverges. Requiring every smaller rate to be stable too keeps a lucky
    isolated stable rate above the edge from counting.
    """
    a = _lrs_array(lrs)
    d = np.asarray(diverged, dtype=bool)
    if d.ndim == 1:
        d = d[:, None]
    if d.ndim != 2 or d.shape[0] != a.size:
        raise ValueError(f"diverged must have shape (L,) or (L, S) with L = len(lrs) = {a.size}, "
                         f"got {d.shape}")
    stable = np.asarray(~d.any(axis=1), dtype=bool)
    if not stable[0]:
        return float("nan")
    first_bad = np.flatnonzero(~stable)
    return float(a[-1] if first_bad.size == 0 else a[first_bad[0] - 1])


def _mean_losses(losses: np.ndarray) -> np.ndarray:
    """Mean over the last axis (seeds); a diverged seed (NaN) makes the mean +inf."""
    x = np.asarray(losses, dtype=float)
    out: np.ndarray = np.where(np.isnan(x), np.inf, x).mean(axis=-1)
    return out


def _line_mean_losses(lrs: Sequence[float] | np.ndarray,
                      losses: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    a = _lrs_array(lrs)
    x = np.asarray(losses, dtype=float)
    if x.ndim == 1:
        x = x[:, None]
    if x.ndim != 2 or x.shape[0] != a.size:
        raise ValueError(f"losses must have shape (L, S) with L = len(lrs) = {a.size}, "
                         f"got {x.shape}")
    return a, _mean_losses(x)


def best_lr(lrs: Sequence[float] | np.ndarray, losses: np.ndarray) -> tuple[float, float]:
    """``(lr*, loss*)``: the rate with the lowest seed-mean loss; ``losses`` (L, S), NaN = diverged.

    When every rate diverged there is no best rate: ``(nan, inf)``, as :func:`best_pair` gives.
    """
    a, m = _line_mean_losses(lrs, losses)
    if not np.isfinite(m).any():
        return float("nan"), float("inf")
    i = int(np.argmin(m))
    return float(a[i]), float(m[i])


def near_optimal_centre(lrs: Sequence[float] | np.ndarray, losses: np.ndarray,
                        within: float = 0.1) -> float:
    """The geometric centre of the rates whose seed-mean loss is within ``within`` of the best.

    ``losses`` (L,) or (L, S). With ``m*`` the lowest seed-mean loss, the near-optimal rates are
    those with mean loss ``<= (1 + within) m*``; the result is ``exp(mean(log rate))`` over
    them. Where the loss is flat around its minimum the argmin jumps with the seed noise,
    while this centre moves only when the whole near-optimal region does. NaN when every
    rate diverged.
    """
    if not (isinstance(within, (int, float)) and math.isfinite(within) and within >= 0):
        raise ValueError(f"within must be a finite number >= 0, got {within!r}")
    a, m = _line_mean_losses(lrs, losses)
    if not np.isfinite(m).any():
        return float("nan")
    near = m <= (1 + within) * m.min()
    return float(np.exp(np.log(a[near]).mean()))


def _grid_mean_losses(eta_A: Sequence[float] | np.ndarray, eta_B: Sequence[float] | np.ndarray,
                      losses: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Checked ``(eta_A, eta_B, seed-mean losses (LA, LB))``; ``losses`` (LA, LB, S) or (LA, LB)."""
    a, b = _lrs_array(eta_A, "eta_A"), _lrs_array(eta_B, "eta_B")
    x = np.asarray(losses, dtype=float)
    if x.ndim == 2:
        x = x[..., None]
    if x.ndim != 3 or x.shape[:2] != (a.size, b.size):
        raise ValueError(f"losses must have shape (len(eta_A), len(eta_B), S) = "
                         f"({a.size}, {b.size}, S), got {x.shape}")
    return a, b, _mean_losses(x)


def best_pair(eta_A: Sequence[float] | np.ndarray, eta_B: Sequence[float] | np.ndarray,
              losses: np.ndarray) -> tuple[float, float, float]:
    """``(eta_A*, eta_B*, loss*)`` minimising the seed-mean loss; ``losses`` (LA, LB, S) or (LA, LB)."""
    a, b, m = _grid_mean_losses(eta_A, eta_B, losses)
    if not np.isfinite(m).any():
        return float("nan"), float("nan"), float("inf")
    i, j = np.unravel_index(int(np.argmin(m)), m.shape)
    return float(a[i]), float(b[j]), float(m[i, j])


def best_eta_A_per_eta_B(eta_A: Sequence[float] | np.ndarray, eta_B: Sequence[float] | np.ndarray,
                         losses: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The best ``eta_A`` at each fixed ``eta_B`` of a grid: the floor of the loss valley.

    Returns ``(eta_A_star, loss_star)``, both (LB,): ``eta_A_star[j]`` minimises the seed-mean
    loss over ``eta_A`` in column ``eta_B[j]``, ``loss_star[j]`` its mean loss; NaN and +inf
    for a column where every pair diverged. ``loss_star`` as a function of ``eta_B`` is the
    valley floor, whose :func:`near_optimal_centre` estimates the best ``eta_B``.
    """
    a, b, m = _grid_mean_losses(eta_A, eta_B, losses)
    i = np.argmin(m, axis=0)
    loss_star = m[i, np.arange(b.size)]
    eta_star = np.where(np.isfinite(loss_star), a[i], np.nan)
    return eta_star, loss_star


def steps_to_reach(curve: Sequence[float] | np.ndarray, target: float) -> int | None:
    """The first step at which ``curve`` is at or below ``target``; ``None`` if never."""
    target = as_real(target, "target")
    c = np.asarray(curve, dtype=float)
    if c.ndim != 1:
        raise ValueError(f"curve must be 1-D (one loss per step), got shape {c.shape}")
    hits = np.flatnonzero(c <= target)
    return int(hits[0]) if hits.size else None


# --------------------------------------------------------------------------- per-step terms


def _batched(x: torch.Tensor, name: str, ndim: int = 3, like: torch.Tensor | None = None) -> torch.Tensor:
    """``x`` checked, in :func:`lrkit.env.float_dtype` of its device (float64; float32 on MPS), or on
    the device and in the dtype of ``like``."""
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    if x.ndim != ndim:
        raise ValueError(f"{name} must have {ndim} dimensions (K, ., .), got shape {tuple(x.shape)}")
    if like is None:
        return to_device_dtype(x, x.device, float_dtype(x.device))
    return to_device_dtype(x, like.device, like.dtype)


def feature_rms(A: torch.Tensor, Z: torch.Tensor) -> torch.Tensor:
    """rms of the LoRA feature ``Z_A = A z`` over the ``r`` features and the samples: (K,).

    ``A`` (K, r, n), ``Z`` (N, n) the samples (rows ``z_j``).
    """
    A = _batched(A, "A")
    Zt = _batched(Z, "Z", ndim=2, like=A).T
    if A.shape[2] != Zt.shape[0]:
        raise ValueError(f"A (K, r, n) and Z (N, n) must share n, got {tuple(A.shape)}, "
                         f"{tuple(Z.shape)}")
    return (A @ Zt).square().mean((1, 2)).sqrt()


def step_terms(Z: torch.Tensor, A: torch.Tensor, B: torch.Tensor, A_next: torch.Tensor,
               B_next: torch.Tensor, scaling: float = 1.0) -> dict[str, torch.Tensor]:
    """rms sizes of the three output terms of one step and of the feature before it.

    ``A``, ``A_next`` (K, r, n); ``B``, ``B_next`` (K, n, r); ``Z`` (N, n). Returns
    ``{"delta1", "delta2", "delta3", "Z_A"}``, each (K,): the rms over outputs and samples
    of ``s B dA z``, ``s dB A z`` and ``s dB dA z`` (module docstring), and
    :func:`feature_rms` of ``A``. Their sum is exactly the change of ``s B A z``. Computed on
    ``A``'s device in :func:`lrkit.env.float_dtype` (float64; float32 on MPS).
    """
    A = _batched(A, "A")
    A_next, B, B_next = (_batched(x, name, like=A) for x, name in ((A_next, "A_next"), (B, "B"), (B_next, "B_next")))
    K, r, n = A.shape
    if A_next.shape != A.shape or B.shape != (K, n, r) or B_next.shape != B.shape:
        raise ValueError(f"A, A_next must be (K, r, n) and B, B_next (K, n, r) with matching "
                         f"sizes, got {tuple(A.shape)}, {tuple(A_next.shape)}, "
                         f"{tuple(B.shape)}, {tuple(B_next.shape)}")
    Zt = _batched(Z, "Z", ndim=2, like=A).T
    if Zt.shape[0] != A.shape[2]:
        raise ValueError(f"Z must be (N, n) with n = {A.shape[2]}, got {tuple(Z.shape)}")
    za, dza = A @ Zt, (A_next - A) @ Zt                    # (K, r, N)
    dB = B_next - B

    def rms(x: torch.Tensor) -> torch.Tensor:
        return (scaling * x).square().mean((1, 2)).sqrt()

    return {"delta1": rms(B @ dza), "delta2": rms(dB @ za), "delta3": rms(dB @ dza),
            "Z_A": za.square().mean((1, 2)).sqrt()}
