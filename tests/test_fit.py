"""lrkit.fit: the power-law fit, its residual standard error and the design-aware grid bound."""

from __future__ import annotations

import math

import numpy as np
import pytest

from lrkit.fit import ExponentFit, fit_power_law, grid_rounding_bound


def test_exact_power_law_and_prediction() -> None:
    w = np.array([64, 128, 256, 512, 1024])
    fit = fit_power_law(w, 3.0 * w ** -0.5)
    assert fit.exponent == pytest.approx(-0.5) and fit.prefactor == pytest.approx(3.0)
    assert fit.stderr < 1e-9 and math.isnan(fit.grid_tolerance)
    assert np.allclose(fit.predict(w), 3.0 * w ** -0.5)
    p, se, c = fit
    assert (p, se, c) == (fit.exponent, fit.stderr, fit.prefactor)
    assert isinstance(fit, ExponentFit)


def test_seeds_are_all_used() -> None:
    w = np.array([64, 128, 256])
    noisy = fit_power_law(w, np.stack([w ** -1.0 * 1.1, w ** -1.0 * 0.9], 1))
    assert noisy.exponent == pytest.approx(-1.0, abs=1e-9) and noisy.stderr > 0


def test_grid_bound_by_hand() -> None:
    # x = log2 widths 0..3: sum |x - 1.5| = 4 (log 2), Sxx = 5 (log 2)^2, half step log(2)/2
    assert grid_rounding_bound([1, 2, 4, 8], 2) == pytest.approx(0.5 * 4 / 5)
    # factor-2 widths, factor-2 grid: the bound does not depend on the base width
    assert grid_rounding_bound([64 * 2 ** k for k in range(7)], 2) == pytest.approx(
        grid_rounding_bound([3 * 2 ** k for k in range(7)], 2))


def test_the_rounding_is_not_counted_twice() -> None:
    """stderr is the residual error alone; the grid bound is reported separately (review C5.2)."""
    w = np.array([64, 128, 256, 512, 1024])
    read = 2.0 ** np.floor(np.log2(3.0 * w ** -0.5))   # rounded down to the grid
    plain, gridded = fit_power_law(w, read), fit_power_law(w, read, grid_factor=2)
    assert gridded.stderr == plain.stderr and gridded.exponent == plain.exponent
    assert gridded.grid_tolerance == pytest.approx(grid_rounding_bound(w, 2))


def test_the_grid_bound_holds_for_every_rounding() -> None:
    """Rounding each value anywhere within one grid step never moves the slope beyond it."""
    rng = np.random.default_rng(0)
    w = np.array([64, 128, 256, 512, 1024, 2048, 4096], dtype=float)
    bound = grid_rounding_bound(w, 2)
    for _ in range(2000):
        frac = rng.uniform(0, 1, w.size)          # position of the truth within its grid step
        read = w ** -0.5 * 2.0 ** -frac
        assert abs(fit_power_law(w, read).exponent + 0.5) <= bound + 1e-12
    worst = w ** -0.5 * 2.0 ** -(np.log(w) > np.log(w).mean()).astype(float)   # extreme
    assert abs(fit_power_law(w, worst).exponent + 0.5) == pytest.approx(bound)


@pytest.mark.parametrize("kwargs,match", [
    (dict(widths=[1, 2], values=[1.0, np.nan]), "positive and finite"),
    (dict(widths=[1], values=[1.0]), "must match with W >= 2"),
    (dict(widths=[2, 2], values=[1.0, 2.0]), "must not all be equal"),
    (dict(widths=[1, 2], values=[1.0, 2.0], grid_factor=1), "grid_factor must be a number > 1"),
    (dict(widths=[1, 2], values=[1.0, 2.0], grid_factor=True), "grid_factor must be a number > 1"),
])
def test_bad_inputs(kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        fit_power_law(**kwargs)
    with pytest.raises(ValueError, match="distinct"):
        grid_rounding_bound([4, 4], 2)
