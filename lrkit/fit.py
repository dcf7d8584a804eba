"""Power laws measured on data: ``value ~ c x^p`` fitted in log-log space, with honest errors.

Every chapter checks a scaling exponent this way (learning rate against width, learning time
against mode strength, error against steps): one least-squares fit of ``log value`` on
``log x``. Two uncertainties are reported, and they are not added:

* ``stderr``, the statistical standard error of the slope from the scatter of the residuals
  (which already contains whatever rounding the values carry);
* ``grid_tolerance``, for values read off a geometric grid of ratio ``g`` (a largest stable
  rate on ``eta = 2^k``): the largest shift of the slope that rounding each value by up to
  one grid step can cause. The true value lies within one step of the value read; a constant
  offset leaves the slope unchanged, so each point carries at most half a step, ``log(g)/2``,
  around the mean offset, and the least-squares slope ``sum (x_i - xbar) y_i / Sxx`` moves
  by at most ``log(g)/2 * sum |x_i - xbar| / Sxx``. It depends only on the design (the grid
  and the ``x`` values), so it can be fixed before running: a fixed, design-aware tolerance.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np

__all__ = ["ExponentFit", "fit_power_law", "grid_rounding_bound"]


@dataclass(frozen=True)
class ExponentFit:
    """``value ~ prefactor * x^exponent``; ``stderr`` of the exponent from the residuals.

    ``grid_tolerance``: the worst-case slope shift from rounding to the grid (NaN when the
    values were not read off a grid); see the module docstring.
    """

    exponent: float
    stderr: float
    prefactor: float
    grid_tolerance: float = float("nan")

    def __iter__(self) -> Iterator[float]:
        return iter((self.exponent, self.stderr, self.prefactor))

    def predict(self, widths: Sequence[float] | np.ndarray) -> np.ndarray:
        return self.prefactor * np.asarray(widths, dtype=float) ** self.exponent


def _check_grid_factor(grid_factor: object) -> float:
    if isinstance(grid_factor, bool) or not isinstance(grid_factor, (int, float)) \
            or not math.isfinite(grid_factor) or grid_factor <= 1:
        raise ValueError(f"grid_factor must be a number > 1 (2 for a factor-2 grid), "
                         f"got {grid_factor!r}")
    return float(grid_factor)


def grid_rounding_bound(x: Sequence[float] | np.ndarray, grid_factor: float) -> float:
    """``log(g)/2 * sum |log x_i - mean| / sum (log x_i - mean)^2``: see the module docstring.

    ``x`` (W,) positive, not all equal (the widths, once each: seeds at the same width share
    the bound); ``grid_factor`` ``g > 1``.
    """
    g = _check_grid_factor(grid_factor)
    lx = np.log(np.asarray(x, dtype=float))
    if lx.ndim != 1 or lx.size < 2 or not np.all(np.isfinite(lx)) or np.ptp(lx) == 0:
        raise ValueError("x must hold at least two positive, finite, distinct values")
    dx = lx - lx.mean()
    return float(math.log(g) / 2 * np.abs(dx).sum() / np.square(dx).sum())


def fit_power_law(widths: Sequence[float] | np.ndarray, values: Sequence[float] | np.ndarray,
                  grid_factor: float | None = None) -> ExponentFit:
    """Least-squares fit of ``log value = log c + p log width``; ``p`` with its uncertainties.

    ``values`` may be (W,) or (W, S) (several seeds per width, all used). ``stderr`` is the
    residual standard error of ``p`` (0 with two points). With ``grid_factor`` (the ratio of
    the geometric grid the values were read off, 2 for ``eta = 2^k``) the fit also carries
    ``grid_tolerance`` (:func:`grid_rounding_bound` of the widths); the rounding is *not*
    added to ``stderr`` a second time. Non-finite or non-positive values (a width where
    every rate diverged) are an error.
    """
    try:
        w = np.asarray(widths, dtype=float)
        v = np.asarray(values, dtype=float)
    except (TypeError, ValueError) as err:
        raise TypeError(f"widths and values must be numbers (arrays or lists of them): {err}") from None
    if v.ndim == 1:
        v = v[:, None]
    if w.ndim != 1 or v.ndim != 2 or v.shape[0] != w.size or w.size < 2:
        raise ValueError(f"widths (W,) and values (W,) or (W, S) must match with W >= 2, "
                         f"got {w.shape}, {v.shape}")
    if not (np.all(np.isfinite(v)) and np.all(v > 0) and np.all(w > 0)):
        raise ValueError("widths and values must be positive and finite to fit a power law "
                         "(a NaN value means every rate diverged at that width)")
    x = np.repeat(np.log(w), v.shape[1])
    y = np.log(v).ravel()
    if np.ptp(x) == 0:
        raise ValueError("widths must not all be equal")
    tol = float("nan") if grid_factor is None else grid_rounding_bound(w, grid_factor)
    p, c = np.polyfit(x, y, 1)
    sxx = np.square(x - x.mean()).sum()
    dof = x.size - 2
    resid = y - (p * x + c)
    var = (np.square(resid).sum() / dof) / sxx if dof > 0 else 0.0
    return ExponentFit(exponent=float(p), stderr=float(math.sqrt(var)),
                       prefactor=float(math.exp(c)), grid_tolerance=tol)
