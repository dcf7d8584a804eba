"""Checks for Chapter 7's exercises (random-feature regression): they teach what is wrong.

Expected values come from :mod:`lrkit.rf` (``solve_kappa``, ``rf_theory``,
``fit_random_features``); a check never carries its own copy of the formula it checks. Every
check takes a ``seed`` so that hidden tests can rerun it on other inputs.

* :func:`check_kappa`: ``fn(eigvals, n, ridge) -> kappa`` of kernel ridge regression;
* :func:`check_rf_pair`: ``fn(eigvals, n, k, ridge) -> (kappa, gamma)`` of random-feature regression;
* :func:`check_rf_test_mse`: ``fn(eigvals, coeffs, X, W, ridge) -> test MSE`` of one random-feature fit;
* :func:`check_peak`: a predicted and a measured location of the double-descent peak.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from .. import rf
from .core import as_number, call, check_close, fail, known_mistake, passed

__all__ = ["check_kappa", "check_rf_pair", "check_rf_test_mse", "check_peak"]


def _task(gen: torch.Generator, modes: int) -> tuple[torch.Tensor, torch.Tensor]:
    """A power-law task with random exponents: (eigvals, coeffs), float64 on the CPU."""
    p = 1.1 + torch.rand(1, generator=gen).item()
    q = 0.8 + 1.2 * torch.rand(1, generator=gen).item()
    return rf.power_law_task(modes, p, q, device="cpu")


def check_kappa(kappa_fn: Callable[..., Any], seed: int = 0) -> None:
    """``kappa_fn(eigvals, n, ridge)`` must solve ``sum_i lambda_i / (lambda_i + kappa) + ridge / kappa = n``.

    Expected: :func:`lrkit.rf.solve_kappa` (relative tolerance 1e-6), on hand-sized and
    power-law spectra, with and without ridge.
    """
    gen = torch.Generator().manual_seed(seed)
    lam, _ = _task(gen, 300)
    spectra: list[tuple[torch.Tensor, int, float]] = [  # (eigvals, n, ridge)
        (torch.ones(2, dtype=torch.float64), 1, 0.0),
        (torch.tensor([4.0, 1.0, 0.25], dtype=torch.float64), 2, 0.5),
        (lam, int(torch.randint(10, 100, (1,), generator=gen)), 0.0),
        (lam, 64, float(10 ** (-3 + 3 * torch.rand(1, generator=gen).item()))),
        (lam, 500, 1.0),  # more samples than modes: only the ridge keeps kappa > 0
    ]
    for eigvals, n, ridge in spectra:
        case = {"eigvals": eigvals, "n": n, "ridge": ridge}
        expected = rf.solve_kappa(eigvals, n, ridge).item()
        actual = as_number(call(kappa_fn, case, "solve_kappa_bisect"), "solve_kappa_bisect", case=case, finite=True)
        lhs = (eigvals / (eigvals + actual)).sum().item() + ridge / max(actual, 1e-300)
        hint = ("the left side decreases in kappa: when it is above n, kappa is too small, so move the lower end up; "
                "bisect on a log scale (the geometric mean of the ends), since kappa spans many decades")
        if actual > 0 and abs(lhs - n) > 1e-3 * n:
            hint = (f"with your kappa the left side sum_i lambda_i/(lambda_i + kappa) + ridge/kappa is {lhs:.6g}, "
                    f"not n = {n}: " + hint)
        check_close(actual, expected, "solve_kappa_bisect(...)", hint, case=case, rtol=1e-6, atol=1e-12)
    passed("solve_kappa_bisect")


def check_rf_pair(pair_fn: Callable[..., Any], seed: int = 0) -> None:
    """``pair_fn(eigvals, n, k, ridge) -> (kappa, gamma)``: the random-feature pair for ``ridge > 0``.

    Expected: ``lrkit.rf.rf_theory(...).kappa`` and ``.gamma`` (relative tolerance 1e-5), with fewer
    and more features than samples.
    """
    gen = torch.Generator().manual_seed(seed)
    lam, v = _task(gen, 300)
    name = "solve_rf_pair"
    n = int(torch.randint(20, 60, (1,), generator=gen))
    for k, ridge in ((n // 2, 0.01), (3 * n, 0.1), (n + 1, float(10 ** (-3 + 2 * torch.rand(1, generator=gen).item()))),
                     (10 * n, 1.0)):
        case = {"eigvals": lam, "n": n, "k": k, "ridge": ridge}
        th = rf.rf_theory(lam, v, n, k, ridge)
        expected = (th.kappa.item(), th.gamma.item())
        out = call(pair_fn, case, name, "return a pair (kappa, gamma)")
        if not isinstance(out, (tuple, list)) or len(out) != 2:
            fail(f"{name} must return two numbers (kappa, gamma)", case=case, actual=out)
        kap = as_number(out[0], "kappa", case=case, finite=True)
        gam = as_number(out[1], "gamma", case=case, finite=True)
        hint = known_mistake((kap, gam), {"you returned (gamma, kappa): the order is (kappa, gamma)": expected[::-1]},
                             rtol=1e-5, atol=1e-12)
        if hint is None and not (kap > 0 and gam > 0):
            hint = "kappa and gamma are both positive: the feature equation gives kappa = gamma (1 - z / k) > 0"
        elif hint is None:
            z = float((lam / (lam + gam)).sum())
            if abs(z + k * kap / gam - k) > 1e-3 * k:
                hint = (f"with your (kappa, gamma) the feature equation sum_i lambda_i/(lambda_i + gamma) "
                        f"+ k kappa/gamma gives {z + k * kap / gam:.5g}, not k = {k}: "
                        "given gamma, that equation fixes kappa")
            elif abs(z + ridge / kap - n) > 1e-3 * n:
                hint = (f"your pair solves the feature equation but sum_i lambda_i/(lambda_i + gamma) + ridge/kappa = "
                        f"{z + ridge / kap:.5g}, not n = {n}: search gamma until the sample equation holds too")
        for got, want, what in ((kap, expected[0], "kappa"), (gam, expected[1], "gamma")):
            check_close(got, want, f"{name}(...) -> {what}", hint or "eliminate kappa with the feature equation, then "
                        "solve the sample equation for gamma by bisection on log(gamma)", case=case, rtol=1e-5,
                        atol=1e-12)
    passed(name)


def check_rf_test_mse(mse_fn: Callable[..., Any], seed: int = 0) -> None:
    """``mse_fn(eigvals, coeffs, X, W, ridge)``: the exact test MSE ``||beta - v||^2`` of one noiseless fit.

    Expected: :func:`lrkit.rf.fit_random_features` (relative tolerance 1e-6), for ``k`` below, at and
    above ``n``, with and without ridge.
    """
    gen = torch.Generator().manual_seed(seed)
    lam, v = _task(gen, 120)
    name = "rf_test_mse"
    n = 24
    for k, ridge in ((8, 0.0), (48, 1e-2), (24, 0.1), (96, 0.0)):
        X = torch.randn(n, lam.numel(), generator=gen, dtype=torch.float64)
        W = torch.randn(k, lam.numel(), generator=gen, dtype=torch.float64)
        case = {"eigvals": lam, "coeffs": v, "X": X, "W": W, "ridge": ridge}
        expected = rf.fit_random_features(lam, v, X, W, ridge)[0]
        actual = as_number(call(mse_fn, case, name), name, case=case, finite=True)
        mistakes = {
            "the features carry diag(lambda)^(1/2): phi(x) = W diag(lambda)^(1/2) x / sqrt(k)":
                rf.fit_random_features(torch.ones_like(lam), v, X, W, ridge)[0],
            "you returned the train MSE; the test MSE of a linear predictor beta . x is ||beta - v||^2":
                rf.fit_random_features(lam, v, X, W, ridge)[1],
        }
        hint = known_mistake(actual, mistakes, rtol=1e-6, atol=1e-12)
        check_close(actual, expected, f"{name}(...)", hint or "features Phi = X diag(lambda)^(1/2) W^T / sqrt(k); "
                    "ridge regression on (Phi, y = X v); the predictor in x-space is "
                    "beta = diag(lambda)^(1/2) W^T theta / sqrt(k); at ridge 0 take the minimum-norm "
                    "solution (a pseudo-inverse)", case=case, rtol=1e-6,
                    atol=1e-10)
    passed(name)


def check_peak(predicted: Any, measured: Any, ks: list[int]) -> None:
    """The predicted location of the double-descent peak must be a number on the grid ``ks``, and the
    measured one (the ``k`` of the largest simulated test MSE) must equal it."""
    predicted = as_number(predicted, "predicted peak", finite=True)
    measured = as_number(measured, "measured peak", finite=True)
    if predicted not in ks:
        fail("the predicted peak is not one of the feature counts you simulated", actual=float(predicted),
             hint="at ridge 0 the overfitting coefficient diverges where the two budgets, n samples and k "
                  "features, are equal", expected=ks)
    if measured != predicted:
        fail("the simulated peak is not where you predicted it", expected=float(predicted), actual=float(measured),
             hint="check the prediction (where does E0 diverge at ridge 0?) and that the measured peak is the "
                  "k of the largest mean test MSE")
    passed("double-descent peak")
