"""Checks for Chapter 6's exercises on the best ratio (LoRA+); re-exported by :mod:`lrkit.checks.lora_plus`.

* :func:`check_best_ratio`: ``fn(eta_A, eta_B, score) -> rho*``, the best ratio on a grid of pairs
  (:func:`lrkit.sweep.best_pair`);
* :func:`check_predicted_ratio_exponent`: ``fn() -> p``, the predicted growth ``rho* ~ n^p``
  (Proposition ``prop-loraplus-efficient``);
* :func:`check_predicted_rate_exponents`: ``fn() -> {"eta_A": p_A, "eta_B": p_B}``, the best
  rates' predicted width exponents.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
import torch

from ..lr_scaling import best_pair
from .core import as_number, call, fail, known_mistake, passed, to_scalar

__all__ = ["PREDICTED_RATE_EXPONENTS", "PREDICTED_RATIO_EXPONENT", "check_best_ratio",
           "check_predicted_rate_exponents", "check_predicted_ratio_exponent"]

PREDICTED_RATIO_EXPONENT = 1.0


# --------------------------------------------------------------------------- the best ratio


def _ratio_cases(gen: torch.Generator) -> list[dict[str, Any]]:
    grid = [10.0 ** (k / 2) for k in range(-6, 1)]                  # 1e-3 ... 1, steps of 10^(1/2)

    def bowl(eta_A: list[float], eta_B: list[float], a0: float, b0: float, seeds: int, noise: float) -> np.ndarray:
        la, lb = np.meshgrid(np.log10(eta_A), np.log10(eta_B), indexing="ij")
        base = 0.05 + (la - a0) ** 2 + 0.5 * (lb - b0) ** 2
        eps = noise * torch.rand(len(eta_A), len(eta_B), seeds, generator=gen, dtype=torch.float64).numpy()
        return base[..., None] * (1 + eps)

    L = len(grid)
    one = bowl(grid, grid, -2.0, -0.5, 1, 0.0)                        # eta_A* = 1e-2, eta_B* = 10^-0.5
    two = bowl(grid, grid, -2.5, -1.0, 2, 0.05)
    two[L - 1, :, 1] = np.nan                                         # the largest eta_A diverges for seed 1
    trap = bowl(grid, grid, -1.5, -0.5, 2, 0.0)
    trap[grid.index(10.0 ** -1.5), grid.index(10.0 ** -0.5)] = [0.01, np.nan]   # the best-looking pair diverged
    eta_A = [2.0 ** k for k in range(-12, -2)]                        # two different grids, eta_B a single value
    a0 = float(torch.empty(1).uniform_(-3, -1.5, generator=gen))
    rect = bowl(eta_A, [0.5, 1.0], a0, 0.0, 3, 0.1)
    column = bowl(eta_A, [0.3], a0 - 0.5, -0.5, 2, 0.1)
    return [{"eta_A": grid, "eta_B": grid, "score": one}, {"eta_A": grid, "eta_B": grid, "score": two},
            {"eta_A": grid, "eta_B": grid, "score": trap}, {"eta_A": eta_A, "eta_B": [0.5, 1.0], "score": rect},
            {"eta_A": eta_A, "eta_B": [0.3], "score": column}]


def _check_ratio(actual: Any, expected: float, name: str, hint: str, case: Mapping[str, Any]) -> None:
    """``actual`` must be a number equal to ``expected`` (relative 1e-9)."""
    actual = as_number(actual, name, case=case, hint=hint)
    if not math.isclose(actual, expected, rel_tol=1e-9, abs_tol=1e-12):
        fail(f"{name} is wrong", case=case, expected=float(expected), actual=float(actual), hint=hint)


def check_best_ratio(fn: Callable[..., Any], seed: int = 0) -> None:
    """``fn(eta_A, eta_B, score)``: ``eta_B* / eta_A*`` for the pair with the lowest seed-mean score.

    ``score[i, j, s]`` is seed ``s``'s score at ``eta_A[i]``, ``eta_B[j]``; NaN = diverged, and a pair
    where any seed diverged is excluded. Expected: from :func:`lrkit.sweep.best_pair`.
    """
    gen = torch.Generator().manual_seed(seed)
    name = "best_ratio"
    for case in _ratio_cases(gen):
        eta_A, eta_B, score = np.asarray(case["eta_A"]), np.asarray(case["eta_B"]), case["score"]
        a, b, _ = best_pair(eta_A, eta_B, score)
        expected = b / a
        actual = to_scalar(call(fn, case, name, "score has shape (len(eta_A), len(eta_B), seeds): "
                                                "axis 0 is eta_A, axis 1 is eta_B"))
        nan_mean = np.nanmean(score, axis=-1)
        i, j = np.unravel_index(int(np.nanargmin(nan_mean)), nan_mean.shape)
        variants = {
            "the ratio is inverted: rho = eta_B / eta_A, and B is the fast factor": a / b,
            "a pair where any seed diverged (NaN) must be excluded, not averaged over the seeds that survived: "
            "np.nanmean hides the divergence": float(eta_B[j] / eta_A[i]),
        }
        variants = {h: x for h, x in variants.items() if not math.isclose(x, expected, rel_tol=1e-9)}
        hint = known_mistake(actual, variants, rtol=1e-9, atol=1e-12) or (
            "average over seeds (axis -1), treat NaN as +inf, take the argmin over (i, j) and return "
            "eta_B[j] / eta_A[i]")
        _check_ratio(actual, expected, f"{name}(...)", hint, case)
    passed(name)


def check_predicted_ratio_exponent(fn: Callable[..., Any], seed: int = 0) -> None:
    """``fn()`` must return ``p`` in ``rho* ~ n^p`` as the efficiency argument of Chapter 6 predicts.

    ``seed`` is unused (every check takes one).
    """
    name = "predicted_ratio_exponent"
    value = as_number(call(fn, {}, name, "return a number"), f"{name}()")
    if math.isclose(value, PREDICTED_RATIO_EXPONENT, abs_tol=1e-9):
        passed(name)
        return
    if math.isclose(value, -PREDICTED_RATIO_EXPONENT, abs_tol=1e-9):
        hint = "eta_A shrinks like 1/n, but the ratio is eta_B / eta_A: it *grows* with width"
    elif math.isclose(value, 0.5, abs_tol=1e-9):
        hint = ("n^(-1/2) is Chapter 5's single stable rate; LoRA+ asks eta_B = Theta(1) and eta_A n = Theta(1) "
                "(both output terms of order 1): what is eta_B / eta_A then?")
    else:
        hint = ("efficient learning asks Delta B A_0 z ~ t eta_B and Delta B Delta A z ~ t eta_B * t eta_A n to "
                "be of order 1: solve for eta_A and eta_B as powers of n")
    fail(f"{name}() is not what the efficiency argument predicts", actual=value, hint=hint)


# Proposition prop-loraplus-efficient: eta_A* ~ n^-1 and eta_B* ~ n^0
PREDICTED_RATE_EXPONENTS: dict[str, float] = {"eta_A": -1.0, "eta_B": 0.0}


def check_predicted_rate_exponents(fn: Callable[..., Any], seed: int = 0) -> None:
    """``fn()`` -> ``{"eta_A": p_A, "eta_B": p_B}``: the best rates' width exponents under
    LoRA+'s efficiency conditions (Adam, Init[A]). ``seed`` is unused (every check takes one)."""
    name = "predicted_rate_exponents"
    out = call(fn, {}, name, "return a dict such as {'eta_A': ..., 'eta_B': ...}")
    if not (isinstance(out, Mapping) and set(out) == set(PREDICTED_RATE_EXPONENTS)):
        fail(f"{name}() should return a dict with the keys 'eta_A' and 'eta_B'", actual=out)
    got = {k: as_number(to_scalar(out[k]), f"{name}()[{k!r}]") for k in PREDICTED_RATE_EXPONENTS}
    if all(math.isclose(got[k], v, abs_tol=1e-9) for k, v in PREDICTED_RATE_EXPONENTS.items()):
        passed(name)
        return
    if all(math.isclose(v, -0.5, abs_tol=1e-9) for v in got.values()):
        hint = ("n^(-1/2) for both is Chapter 5's single stable rate, the compromise LoRA+ "
                "removes: which rate must keep delta2 = dB (A z) of order 1?")
    elif math.isclose(got["eta_A"], 0.0, abs_tol=1e-9) and math.isclose(got["eta_B"], -1.0,
                                                                        abs_tol=1e-9):
        hint = "the two are swapped: B is the fast factor, A reads the n-dimensional input"
    elif not math.isclose(got["eta_B"], 0.0, abs_tol=1e-9):
        hint = ("delta2 = dB (A z) with A z of order 1 is of order eta_B: for B to keep "
                "contributing at every width, eta_B must not shrink")
    else:
        hint = ("A's update moves A z by about eta_A n (coherent Adam steps); Z_A and "
                "delta1 stay of order 1 only if eta_A n does")
    fail(f"{name}() is not what the efficiency argument predicts", actual=out, hint=hint)
