"""Power laws measured on data: ``value ~ c x^p`` fitted in log-log space, with an honest error.

Every chapter checks a scaling exponent this way (learning rate against width, learning time
against mode strength, error against steps): one least-squares fit of ``log value`` on ``log x``,
whose standard error can include the rounding of values read off a geometric grid.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Iterator, Sequence

import numpy as np


@dataclass(frozen=True)
class ExponentFit:
    """``value ~ prefactor * width^exponent``, with the standard error of the exponent."""

    exponent: float
    stderr: float
    prefactor: float

    def __iter__(self) -> Iterator[float]:
        return iter((self.exponent, self.stderr, self.prefactor))

    def predict(self, widths: Sequence[float] | np.ndarray) -> np.ndarray:
        return self.prefactor * np.asarray(widths, dtype=float) ** self.exponent


def fit_power_law(widths: Sequence[float] | np.ndarray, values: Sequence[float] | np.ndarray,
                  grid_factor: float | None = None) -> ExponentFit:
    """Least-squares fit of ``log value = log c + p log width``; ``p`` with its standard error.

    ``values`` may be (W,) or (W, S) (several seeds per width, all used). The standard error
    combines the scatter of the residuals with, when the values were read off a geometric grid
    of ratio ``grid_factor`` (2 for a factor-2 grid), the rounding of each value to that grid:
    an error uniform over one grid step in log space, standard deviation ``log(grid_factor)/sqrt(12)``.
    Non-finite or non-positive values (a width where every rate diverged) are an error.
    """
    w = np.asarray(widths, dtype=float)
    v = np.asarray(values, dtype=float)
    if v.ndim == 1:
        v = v[:, None]
    if w.ndim != 1 or v.shape[0] != w.size or w.size < 2:
        raise ValueError(f"widths (W,) and values (W,) or (W, S) must match with W >= 2, got {w.shape}, {v.shape}")
    if not (np.all(np.isfinite(v)) and np.all(v > 0) and np.all(w > 0)):
        raise ValueError("widths and values must be positive and finite to fit a power law "
                         "(a NaN value means every rate diverged at that width)")
    x = np.repeat(np.log(w), v.shape[1])
    y = np.log(v).ravel()
    if np.ptp(x) == 0:
        raise ValueError("widths must not all be equal")
    p, c = np.polyfit(x, y, 1)
    sxx = np.square(x - x.mean()).sum()
    dof = x.size - 2
    resid = y - (p * x + c)
    var = (np.square(resid).sum() / dof) / sxx if dof > 0 else 0.0
    if grid_factor is not None:
        if not (isinstance(grid_factor, (int, float)) and grid_factor > 1):
            raise ValueError(f"grid_factor must be a number > 1 (2 for a factor-2 grid), got {grid_factor!r}")
        var += (math.log(grid_factor) ** 2 / 12) / sxx
    return ExponentFit(exponent=float(p), stderr=float(math.sqrt(var)), prefactor=float(math.exp(c)))
