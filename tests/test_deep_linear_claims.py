"""Chapter 2's claim checks fail on their planted wrong mechanisms (and pass on the right one).

Each test computes a lesson check's statistic at a small size, then asks :func:`lrkit.claim` with
the lesson's kind and tolerance: the prediction of the right mechanism passes, the prediction of
a plausible wrong one (the earlier text's Euler argument, a balanced formula for an unbalanced
mode, ...) raises ``AssertionError``.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

import lrkit
from lrkit import deep_linear as dl
from lrkit.fit import fit_power_law

pytestmark = pytest.mark.ch02  # tests/conftest.py marks by file name; this file is Chapter 2's too

S = torch.tensor([5.0, 2.0, 1.0], dtype=torch.float64)


def _lag(depth: int, lr: float = 1e-3, u0: float = 1e-2) -> tuple[torch.Tensor, torch.Tensor]:
    rec = dl.discrete_mode_trajectory(12000, S, u0, lr, depth=depth)
    t = torch.arange(12001, dtype=torch.float64) * lr
    return dl.half_times(t, rec, S) - dl.deep_learning_time(S, u0, S / 2, depth=depth), t


@pytest.mark.parametrize("depth", [2, 3, 4])
def test_gd_lag_claim_catches_the_old_euler_argument(depth: int) -> None:
    lag, _ = _lag(depth)
    kw = dict(kind="rel", tol=0.05, statement="lag", quiet=True)
    lrkit.claim("prop-dln-gd-lag", lag, dl.gd_lag(1e-3, S, 1e-2, S / 2, depth=depth), **kw)
    old = S * 1e-3 * dl.deep_learning_time(S, 1e-2, S / 2, depth=depth)  # "a fraction s lr of the time"
    naive = 1e-3 / (2 * depth) * torch.log(S / 2 / 1e-2)                 # the step's own error only
    for wrong in (old, naive):
        with pytest.raises(AssertionError):
            lrkit.claim("prop-dln-gd-lag", lag, wrong, **kw)


def test_slope_claim_catches_an_inverse_square_law() -> None:
    u0 = np.array([1e-6, 3e-6, 5e-7])
    t_right = np.log(S.numpy()[:, None] / u0) / (2 * S.numpy()[:, None])
    t_wrong = np.log(S.numpy()[:, None] / u0) / (2 * S.numpy()[:, None] ** 2)
    grid = torch.logspace(0, math.log10(5), 50, dtype=torch.float64)
    slope_formula = fit_power_law(grid.numpy(), dl.learning_time(grid, 1e-6, grid / 2).numpy()).exponent
    kw = dict(kind="abs", tol=0.1, statement="slope", quiet=True)
    lrkit.claim("prop-dln-time", fit_power_law(S.numpy(), t_right).exponent, slope_formula, **kw)
    with pytest.raises(AssertionError):
        lrkit.claim("prop-dln-time", fit_power_law(S.numpy(), t_wrong).exponent, slope_formula, **kw)


def _aligned(c: float, lr: float, t_end: float) -> dl.DeepLinearRun:
    target, U, V = dl.mode_target(S.tolist(), seed=0)
    a, b = (math.sqrt(c), 0.0) if c > 0 else (0.0, math.sqrt(-c))
    return dl.train_deep_linear(target, U, V, dl.decoupled_pair(U, V, a, b, seed=1), lr=lr,
                                steps=math.ceil(t_end / lr), record_every=round(10 * 1e-3 / lr))


@pytest.mark.slow  # a few seconds: make test runs it, make test-fast does not
def test_unbalanced_claims_catch_the_balanced_formula() -> None:
    c = 0.05
    r1, r2 = _aligned(c, 1e-3, 4.0), _aligned(c, 5e-4, 4.0)
    n = min(len(r1.t), len(r2.t)) - 1
    richardson = 2 * float((r1.modes[0, :n] - r2.modes[0, :n]).abs().max())
    right = dl.unbalanced_trajectory(r1.t[:n, None], S, c, 0.0)
    wrong = dl.saxe_trajectory(r1.t[:n, None], S, 1e-3)   # balanced, with some small u0 in place of c
    kw = dict(kind="le", statement="gap", quiet=True)
    lrkit.claim("prop-dln-unbalanced", float((r1.modes[0, :n] - right).abs().max()), 1.5 * richardson, **kw)
    with pytest.raises(AssertionError):
        lrkit.claim("prop-dln-unbalanced", float((r1.modes[0, :n] - wrong).abs().max()), 1.5 * richardson, **kw)
    t90 = dl.crossing_times(r1.t, r1.modes[0], 0.9 * S)
    ratio = float(t90[-1] / t90[0])
    pred = dl.unbalanced_time(0.0, 0.9 * S, S, c)
    lazy = torch.full_like(S, math.log(10) / c)          # "every mode relaxes at the rate |c|" (lazy limit)
    kw = dict(kind="rel", tol=0.05, statement="t90 ratio", quiet=True)
    lrkit.claim("prop-dln-unbalanced", ratio, float(pred[-1] / pred[0]), **kw)
    with pytest.raises(AssertionError):
        lrkit.claim("prop-dln-unbalanced", ratio, float(lazy[-1] / lazy[0]), **kw)


def test_hierarchy_and_bottleneck_claims_catch_reversed_and_wrong_subsets() -> None:
    sigma, U, V, s, level = dl.tree_modes(2, scale=4.0)
    n_lev = int(level.max()) + 1
    s_lev = torch.stack([s[level == l].mean() for l in range(n_lev)])
    runs = {w: dl.train_deep_linear(sigma, U, V, dl.random_init([4, w, 7], 1e-2, seed=3), lr=2e-3, steps=4000,
                                    record_every=10) for w in (4, 2)}
    lev = torch.stack([runs[4].modes[0][:, level == l].mean(-1) for l in range(n_lev)], -1)
    order = dl.half_times(runs[4].t, lev, s_lev).argsort().tolist()
    lrkit.claim("prop-dln-hierarchy", order, list(range(n_lev)), kind="equal", statement="order", quiet=True)
    with pytest.raises(AssertionError):  # "fine distinctions first"
        lrkit.claim("prop-dln-hierarchy", order, list(reversed(range(n_lev))), kind="equal", statement="order",
                    quiet=True)
    final = float(runs[2].loss[0, -1])
    kw = dict(kind="rel", tol=1e-3, statement="loss", quiet=True)
    lrkit.claim("prop-dln-bottleneck", final, dl.truncation_loss(s, 2), **kw)
    bottom = 0.5 * float((torch.sort(s).values[2:] ** 2).sum())      # keeps the weakest two instead
    with pytest.raises(AssertionError):
        lrkit.claim("prop-dln-bottleneck", final, bottom, **kw)


def test_depth_width_claim_catches_a_depth_independent_transition() -> None:
    u0 = 1e-2
    widths = {}
    for D in (2, 3):
        rec = dl.discrete_mode_trajectory(8000, S[:2], u0, 1e-3, depth=D)
        t = torch.arange(8001, dtype=torch.float64) * 1e-3
        t10, t50, t90 = (dl.crossing_times(t, rec, f * S[:2]) for f in (0.1, 0.5, 0.9))
        widths[D] = (t90 - t10) / t50
    ode = {D: (dl.deep_learning_time(S[:2], u0, 0.9 * S[:2], depth=D) - dl.deep_learning_time(S[:2], u0, 0.1 * S[:2],
               depth=D)) / dl.deep_learning_time(S[:2], u0, 0.5 * S[:2], depth=D) for D in (2, 3)}
    kw = dict(kind="rel", tol=0.05, statement="width", quiet=True)
    lrkit.claim("prop-dln-depth", widths[3], ode[3], **kw)
    with pytest.raises(AssertionError):  # depth changes nothing: the two-layer width at depth 3
        lrkit.claim("prop-dln-depth", widths[3], ode[2], **kw)
