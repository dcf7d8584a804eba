"""Matrix sensing theory and fits: the symmetric 1/t^2 law, the exact-rank rate, rate fits (Chapter 4).

* :func:`redundant_error_theory`: the late error ``(r - r*) / (16 lr^2 t^2)`` of symmetric
  over-parameterised GD (each redundant singular value follows ``k <- k - 2 lr k^3``);
* :func:`inverse_sqrt_fit`: the same law read as a straight line, ``error^(-1/2) = a + b t``
  with predicted slope ``b = 4 lr / sqrt(r - r*)`` (factorisation limit), and the offset
  ``t0 = a / b`` that bends a plain log-log slope;
* :func:`linearised_rate`: the exact-rank rate from the Hessian of the actual sensing loss;
* :func:`linear_rate`, :func:`loglog_slope`: fits of a measured curve.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from .._validate import positive_float
from ..fit import fit_power_law
from .problem import SensingProblem

__all__ = ["redundant_error_theory", "inverse_sqrt_slope_theory", "InverseSqrtFit", "inverse_sqrt_fit",
           "linearised_rate", "loglog_slope", "linear_rate", "redundant_block_curvature"]


def _np1(x: object) -> np.ndarray:
    return np.asarray(x.cpu() if isinstance(x, torch.Tensor) else x, dtype=float)


def redundant_error_theory(t: torch.Tensor | np.ndarray | float, r: int, r_star: int, lr: float
                           ) -> np.ndarray:
    """Late-time error of symmetric over-parameterised GD: ``(r - r*) / (16 lr^2 t^2)``.

    Each of the ``r - r*`` redundant singular values obeys ``k <- k - 2 lr k^3`` (a cubic map with
    no linear part), so ``k_t^2 ~ 1 / (4 lr t)`` and ``||K K^T||_F^2 = sum k^4 ~ (r - r*) / (16 lr^2 t^2)``.
    (Our derivation of the mechanism; the paper proves an ``Omega(1 / T^2)`` lower bound.)
    """
    t = np.asarray(t.cpu() if isinstance(t, torch.Tensor) else t, dtype=float)
    if not (np.isfinite(t).all() and (t > 0).all()):
        raise ValueError("t must hold finite steps > 0 (the law is a late-time one: it diverges at t = 0)")
    if not r_star <= r:
        raise ValueError(f"r must be >= r_star (r - r_star redundant directions), got r={r}, r_star={r_star}")
    lr = positive_float(lr, "lr")
    return (r - r_star) / (16.0 * lr**2 * t**2)


def linearised_rate(problem: SensingProblem, lr: float) -> float:
    """Predicted linear rate of exact (``r = r*``) symmetric GD near ``X* = U_* Sigma_*^{1/2}``.

    Near the optimum one GD step multiplies the error in each direction of ``X`` by
    ``1 - lr h`` with ``h`` an eigenvalue of the Hessian of ``L(X X^T)`` at ``X*``; the
    ``r*(r*-1)/2`` zero eigenvalues are the rotations ``X* Q`` (they leave ``M`` unchanged), and
    the slowest of the others, ``h_min``, sets ``||M_t - M*||^2 ~ exp(-c t)`` with
    ``c = -2 ln(1 - lr h_min)``. In the population limit (``m -> infinity``) ``h_min = 2 sigma_{r*}``.
    """
    if not problem.symmetric:
        raise ValueError("linearised_rate needs a symmetric problem (the X X^T parameterisation)")
    lr = positive_float(lr, "lr")
    M_star, Z, y = (t.cpu().double() for t in (problem.M_star, problem.Z, problem.y))  # theory: CPU, float64
    evals, evecs = torch.linalg.eigh(M_star)
    r = problem.r_star
    X_star = evecs[:, -r:] * evals[-r:].clamp(min=0).sqrt()
    cpu = SensingProblem(M_star, Z, y, r, True)
    hess = torch.autograd.functional.hessian(  # type: ignore[no-untyped-call]
        lambda X: cpu.loss(X @ X.T), X_star)
    h = torch.linalg.eigvalsh(hess.reshape(X_star.numel(), X_star.numel()))
    h_min = float(h[r * (r - 1) // 2])
    if not 0 < lr * h_min < 1:
        raise ValueError(f"lr * h_min = {lr * h_min:.3g} must lie in (0, 1) for a monotone linear rate")
    return -2.0 * math.log(1.0 - lr * h_min)


def _window(steps: object, error: object, lo: float, hi: float) -> tuple[np.ndarray, np.ndarray]:
    t = np.asarray(steps.cpu() if isinstance(steps, torch.Tensor) else steps, dtype=float)
    e = np.asarray(error.cpu() if isinstance(error, torch.Tensor) else error, dtype=float)
    if t.shape != e.shape or t.ndim != 1:
        raise ValueError(f"steps and error must be 1-D with the same length, got {t.shape} and {e.shape}")
    if not (0 < lo < hi):
        raise ValueError(f"the window needs 0 < lo < hi, got lo={lo}, hi={hi}")
    keep = np.isfinite(e) & (e >= lo) & (e <= hi) & (t > 0)
    if keep.sum() < 3:
        raise ValueError(f"fewer than 3 recorded errors lie in [{lo:g}, {hi:g}]: widen the window or run longer")
    return t[keep], e[keep]


def loglog_slope(steps: object, error: object, t_min: float, t_max: float = math.inf) -> float:
    """Slope of ``log error`` against ``log t`` over ``t_min <= t <= t_max`` (``-2`` for ``1/t^2``)."""
    t = np.asarray(steps.cpu() if isinstance(steps, torch.Tensor) else steps, dtype=float)
    e = np.asarray(error.cpu() if isinstance(error, torch.Tensor) else error, dtype=float)
    keep = (t >= t_min) & (t <= t_max) & np.isfinite(e) & (e > 0)
    if keep.sum() < 3:
        raise ValueError(f"fewer than 3 recorded steps lie in [{t_min:g}, {t_max:g}]")
    return fit_power_law(t[keep], e[keep]).exponent


def linear_rate(steps: object, error: object, lo: float, hi: float) -> float:
    """Per-step linear rate ``c`` of ``error ~ C exp(-c t)``, fitted where ``lo <= error <= hi``.

    ``c = -d ln(error) / dt``: the natural logarithm, per step.
    """
    t, e = _window(steps, error, lo, hi)
    return float(-np.polyfit(t, np.log(e), 1)[0])


def inverse_sqrt_slope_theory(r: int, r_star: int, lr: float) -> float:
    """Predicted slope of ``error^(-1/2)`` against ``t``: ``4 lr / sqrt(r - r*)`` (factorisation limit).

    From ``error ~ (r - r*) / (16 lr^2 (t + t0)^2)``. With the RIP curvature ``c_j`` of each
    redundant direction it becomes ``4 lr / sqrt(sum_j c_j^-2)``. (Our derivation.)
    """
    if r <= r_star:
        raise ValueError(f"r must exceed r_star (over-parameterised), got r = {r}, r_star = {r_star}")
    return 4.0 * positive_float(lr, "lr") / math.sqrt(r - r_star)


@dataclass
class InverseSqrtFit:
    """``error^(-1/2) ~ intercept + slope t`` over a window; ``t0 = intercept / slope``; the log-log
    slope of ``error`` against ``t + t0`` (``-2`` for a shifted ``1/t^2`` law); and ``slope_ratio``,
    the slope of ``error^(-1/2)`` over the window's second half (in ``log t``) over that of its first
    half: ``1`` for a straight line, ``10^((p - 2)/4)`` for ``error ~ t^-p`` over a decade."""

    slope: float
    intercept: float
    t0: float
    shifted_exponent: float
    slope_ratio: float


def inverse_sqrt_fit(steps: object, error: object, t_min: float, t_max: float = math.inf) -> InverseSqrtFit:
    """Fit ``error^(-1/2)`` linearly in ``t`` for ``t_min <= t <= t_max``, then the exponent of
    ``error`` against ``t + t0`` (``-2`` for a ``1/(t + t0)^2`` law, whatever ``t0``) and the
    straightness of ``error^(-1/2)`` (``slope_ratio``, 1 for that law). The free ``t0`` can absorb
    much of a wrong power (a ``t^-1.5`` law fits with exponent near ``-2.1``); the slope ratio
    cannot, so it is the statistic to assert."""
    t, e = _np1(steps), _np1(error)
    keep = (t >= t_min) & (t <= t_max) & np.isfinite(e) & (e > 0)
    if keep.sum() < 3:
        raise ValueError(f"fewer than 3 recorded steps lie in [{t_min:g}, {t_max:g}]")
    t, e = t[keep], e[keep]
    slope, intercept = np.polyfit(t, e ** -0.5, 1)
    t0 = float(intercept / slope)
    if not np.all(t + t0 > 0):
        raise ValueError(f"the fitted offset t0 = {t0:.3g} puts t + t0 <= 0 inside the window")
    mid = math.sqrt(t[0] * t[-1])
    first, second = t <= mid, t >= mid
    if first.sum() < 2 or second.sum() < 2:
        raise ValueError("the window needs at least two recorded steps in each half (in log t)")
    ratio = np.polyfit(t[second], e[second] ** -0.5, 1)[0] / np.polyfit(t[first], e[first] ** -0.5, 1)[0]
    return InverseSqrtFit(float(slope), float(intercept), t0, fit_power_law(t + t0, e).exponent, float(ratio))


def redundant_block_curvature(problem: SensingProblem) -> tuple[float, float]:
    """Smallest and largest curvature of the sensing loss on the redundant block (symmetric problem).

    The redundant part ``K K^T`` of a symmetric run lives in the symmetric matrices supported on
    the orthogonal complement of ``M*``'s column space (``d = n - r*``, dimension ``d (d + 1)/2``).
    Returns the extreme eigenvalues of ``(1/m) Z* Z`` restricted to that space (``1 +- delta``
    under RIP; ``1`` in the factorisation limit). The prefactor of
    :func:`redundant_error_theory` then lies between ``1 / lambda_max^2`` and ``1 / lambda_min^2``.
    """
    if not problem.symmetric:
        raise ValueError("redundant_block_curvature needs a symmetric problem")
    n, r = problem.n1, problem.r_star
    U = torch.linalg.eigh(problem.M_star.cpu().double())[1][:, : n - r]  # complement of the column space
    d = n - r
    i, j = torch.triu_indices(d, d)
    E = torch.zeros(i.numel(), d, d, dtype=U.dtype)
    k = torch.arange(i.numel())
    w = torch.where(i == j, torch.ones_like(i, dtype=U.dtype), torch.full_like(i, 0.5 ** 0.5, dtype=U.dtype))
    E[k, i, j] = w
    E[k, j, i] = w
    basis = (U @ E @ U.T).flatten(1).T  # (n^2, d(d+1)/2), orthonormal columns
    h = torch.linalg.eigvalsh(basis.T @ problem.gram.cpu().double() @ basis)
    return float(h.min()), float(h.max())
