"""Checks for Chapter 7's exercises (random-feature regression): they teach what is wrong.

Expected values come from :mod:`lrkit.rf` (``solve_kappa``, ``learnabilities``,
``krr_theory``, ``rf_theory``, ``simulate``); a check never carries its own copy of the
formula it checks. Every check takes a ``seed`` so that hidden tests can rerun it on other
inputs.
"""

from __future__ import annotations

import math
from typing import Any, Callable

import torch

from .. import rf
from . import as_number, call, check_close, check_shape, fail, passed

__all__ = ["check_kappa", "check_learnabilities", "check_krr_test_mse", "check_optimal_risk_vs_k"]


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
    cases = [
        {"eigvals": torch.ones(2, dtype=torch.float64), "n": 1, "ridge": 0.0},
        {"eigvals": torch.tensor([4.0, 1.0, 0.25], dtype=torch.float64), "n": 2, "ridge": 0.5},
        {"eigvals": lam, "n": int(torch.randint(10, 100, (1,), generator=gen)), "ridge": 0.0},
        {"eigvals": lam, "n": 64, "ridge": float(10 ** (-3 + 3 * torch.rand(1, generator=gen).item()))},
        {"eigvals": lam, "n": 500, "ridge": 1.0},  # more samples than modes: only the ridge keeps kappa > 0
    ]
    for case in cases:
        expected = rf.solve_kappa(case["eigvals"], case["n"], case["ridge"]).item()
        actual = as_number(call(kappa_fn, case, "solve_kappa_bisect"), "solve_kappa_bisect", case=case, finite=True)
        lhs = (case["eigvals"] / (case["eigvals"] + actual)).sum().item() + case["ridge"] / max(actual, 1e-300)
        hint = ("the left side decreases in kappa: when it is above n, kappa is too small, so move the lower end up; "
                "bisect on a log scale (the geometric mean of the ends), since kappa spans many decades")
        if actual > 0 and abs(lhs - case["n"]) > 1e-3 * case["n"]:
            hint = (f"with your kappa the left side sum_i lambda_i/(lambda_i + kappa) + ridge/kappa is {lhs:.6g}, "
                    f"not n = {case['n']}: " + hint)
        check_close(actual, expected, "solve_kappa_bisect(...)", hint, case=case, rtol=1e-6, atol=1e-12)
    passed("solve_kappa_bisect")


def check_learnabilities(learn_fn: Callable[..., Any], seed: int = 0) -> None:
    """``learn_fn(eigvals, kappa)``: ``L_i = lambda_i / (lambda_i + kappa)``, shape ``(M,)``."""
    gen = torch.Generator().manual_seed(seed)
    lam, _ = _task(gen, 50)
    for kappa in (1.0, float(torch.rand(1, generator=gen).item() * 0.1), 0.0):
        case = {"eigvals": lam, "kappa": kappa}
        actual = call(learn_fn, case, "learnabilities")
        expected = rf.learnabilities(lam, kappa)
        check_shape(actual, expected.shape, "learnabilities(...)", "one learnability per mode", case)
        hint = "L_i = lambda_i / (lambda_i + kappa): close to 1 for lambda_i >> kappa, to 0 for lambda_i << kappa"
        if torch.allclose(actual.detach().double(), 1 - expected, atol=1e-9):
            hint = "you returned 1 - L_i, the unlearned fraction; " + hint
        check_close(actual, expected, "learnabilities(...)", hint, case=case, rtol=1e-9, atol=1e-12)
    passed("learnabilities")


def check_krr_test_mse(mse_fn: Callable[..., Any], seed: int = 0, simulate: bool = True) -> None:
    """``mse_fn(eigvals, coeffs, n, ridge, noise)``: the predicted test MSE of kernel ridge regression.

    Expected: :func:`lrkit.rf.krr_theory` (relative tolerance 1e-6); then, with ``simulate``, the
    prediction must match a small simulation (:func:`lrkit.rf.simulate`, 20 trials) within 5%
    plus three standard errors.
    """
    gen = torch.Generator().manual_seed(seed)
    lam, v = _task(gen, 400)
    hand_l, hand_v = torch.ones(2, dtype=torch.float64), torch.tensor([1.0, 0.0], dtype=torch.float64)
    cases = [
        {"eigvals": hand_l, "coeffs": hand_v, "n": 1, "ridge": 0.0, "noise": 0.0},
        {"eigvals": hand_l, "coeffs": hand_v, "n": 1, "ridge": 0.0, "noise": 0.1},
        {"eigvals": lam, "coeffs": v, "n": 40, "ridge": 0.0, "noise": 0.0},
        {"eigvals": lam, "coeffs": v, "n": 80, "ridge": 0.05, "noise": 0.2},
    ]
    for case in cases:
        expected = rf.krr_theory(**case).test_mse.item()
        actual = as_number(call(mse_fn, case, "krr_test_mse"), "krr_test_mse", case=case, finite=True)
        kap = rf.solve_kappa(case["eigvals"], case["n"], case["ridge"]).item()
        L = rf.learnabilities(case["eigvals"], kap)
        e0 = case["n"] / (case["n"] - (L ** 2).sum().item())
        bias = (((1 - L) ** 2) * case["coeffs"] ** 2).sum().item()
        variants = {
            "the overfitting coefficient E0 = n / (n - sum_i L_i^2) multiplies the bias and the noise": bias + case["noise"],
            "the unlearned fraction enters squared: (1 - L_i)^2 v_i^2": e0 * ((1 - L) * case["coeffs"] ** 2).sum().item()
            + e0 * case["noise"],
            "E0 multiplies the noise too: E0 (bias + sigma^2)": e0 * bias + case["noise"],
            "E0 = n / (n - sum_i L_i^2) uses the squared learnabilities":
                case["n"] / (case["n"] - L.sum().item()) * (bias + case["noise"]) if case["n"] > L.sum().item() else -1.0,
        }
        hint = next((h for h, val in variants.items() if math.isclose(actual, val, rel_tol=1e-6) and
                     not math.isclose(val, expected, rel_tol=1e-6)),
                    "test MSE = E0 [sum_i (1 - L_i)^2 v_i^2 + noise], E0 = n / (n - sum_i L_i^2)")
        check_close(actual, expected, "krr_test_mse(...)", hint, case=case, rtol=1e-6, atol=1e-12)
    if simulate:
        case = {"eigvals": lam, "coeffs": v, "n": 64, "ridge": 0.01, "noise": 0.1}
        sim = rf.simulate(lam, v, [64], [math.inf], [0.01], trials=20, noise=0.1, seed=seed, device="cpu")
        measured, sem = sim.mean()[0].item(), sim.sem().item()
        predicted = as_number(call(mse_fn, case, "krr_test_mse"), "krr_test_mse", case=case, finite=True)
        if abs(predicted - measured) > 0.05 * measured + 3 * sem:
            fail("krr_test_mse disagrees with a simulation of kernel ridge regression", case=case,
                 expected=measured, actual=predicted, detail=f"simulated test MSE {measured:.4f} +- {sem:.4f} (20 trials)",
                 hint="the theory should match the simulation within 5% plus three standard errors")
    passed("krr_test_mse")


def check_optimal_risk_vs_k(opt_fn: Callable[..., Any], seed: int = 0) -> None:
    """``opt_fn(eigvals, coeffs, n, ks, ridges) -> tensor (len(ks),)``: the smallest predicted test MSE over
    ``ridges`` for each number of features ``k`` (``math.inf`` = the kernel).

    Expected: ``lrkit.rf.rf_theory(...).test_mse.min(-1)`` over the given ridge grid.
    """
    gen = torch.Generator().manual_seed(seed)
    lam, v = _task(gen, 400)
    n = int(torch.randint(30, 60, (1,), generator=gen))
    ks = [8, n // 2, n, 2 * n, 8 * n, math.inf]
    ridges = torch.cat([torch.zeros(1, dtype=torch.float64), torch.logspace(-4, 1, 11, dtype=torch.float64)])
    case = {"eigvals": lam, "coeffs": v, "n": n, "ks": ks, "ridges": ridges}
    actual = call(opt_fn, case, "optimal_risk_vs_k")
    grid = rf.rf_theory(lam, v, n, torch.tensor(ks, dtype=torch.float64)[:, None], ridges).test_mse
    expected = torch.nan_to_num(grid, nan=math.inf).min(-1).values
    check_shape(actual, expected.shape, "optimal_risk_vs_k(...)", "one optimal risk per k", case)
    hint = "for each k, evaluate rf.rf_theory on every ridge and keep the smallest test MSE (min over the ridge axis)"
    a = actual.detach().double()
    if torch.allclose(a, grid[:, 0], rtol=1e-6):
        hint = "you kept the first ridge only; the claim is about the *optimal* ridge: " + hint
    elif torch.allclose(a, torch.nan_to_num(grid, nan=-math.inf).max(-1).values, rtol=1e-6):
        hint = "you took the worst ridge (max); the optimum is the min: " + hint
    check_close(actual, expected, "optimal_risk_vs_k(...)", hint, case=case, rtol=1e-6, atol=1e-9)
    if not bool((torch.diff(a) < 0).all()):
        fail("the optimal-ridge risk should decrease with k", case=case, actual=actual)
    passed("optimal_risk_vs_k")
