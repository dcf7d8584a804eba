"""Checks for Chapter 2's exercises (deep linear networks); expected values come from :mod:`lrkit.deep_linear`.

* :func:`check_saxe_trajectory`: ``fn(t, s, u0, tau) -> u(t)``, Saxe's closed form;
* :func:`check_learning_time`: ``fn(s, u0, uf, tau) -> t``, the time from ``u0`` to ``uf``;
* :func:`check_gradient_step`: ``fn(W1, W2, target, lr) -> (W1_new, W2_new)``, one gradient-descent step.
"""

from __future__ import annotations

from typing import Any, Callable

import torch

from ..deep_linear import gradient_step, learning_time, saxe_trajectory
from . import _matches_variant, call, check_close, check_shape, fail, passed

__all__ = ["check_saxe_trajectory", "check_learning_time", "check_gradient_step"]


def _as_tensor(value: Any) -> Any:
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return torch.tensor(float(value), dtype=torch.float64)
    return value


def check_saxe_trajectory(fn: Callable[..., Any], seed: int = 0) -> None:
    """``fn(t, s, u0, tau)`` must equal ``s e^{2st/tau} / (e^{2st/tau} - 1 + s/u0)``, broadcasting over ``t`` and ``s``.

    Expected: :func:`lrkit.deep_linear.saxe_trajectory`.
    """
    gen = torch.Generator().manual_seed(seed)
    s = 0.5 + 4.5 * torch.rand(4, generator=gen, dtype=torch.float64)
    cases = [
        {"t": torch.linspace(0, 4, 9, dtype=torch.float64), "s": 2.0, "u0": 0.01, "tau": 1.0},
        {"t": torch.linspace(0, 30, 7, dtype=torch.float64).unsqueeze(-1), "s": s, "u0": 1e-3, "tau": 2.5},
        {"t": torch.tensor([0.0, 0.3, 1.1], dtype=torch.float64), "s": 3.0, "u0": 1.5, "tau": 0.5},
    ]
    name = "saxe_u"
    for case in cases:
        expected = saxe_trajectory(**case)
        actual = _as_tensor(call(fn, case, name, "use torch.exp and broadcasting: t, s, u0 may be tensors"))
        check_shape(actual, expected.shape, f"{name}(...)", "t and s broadcast against each other", case)
        variants = {
            "the exponent is 2 s t / tau (the logistic equation tau u' = 2u(s - u) has rate 2s/tau)":
                saxe_trajectory(case["t"], case["s"], case["u0"], 2 * case["tau"]),
            "the constant in the denominator is s / u0, so that u(0) = u0":
                case["s"] * torch.exp(2 * torch.as_tensor(case["s"]) * case["t"] / case["tau"])
                / (torch.exp(2 * torch.as_tensor(case["s"]) * case["t"] / case["tau"]) - 1 + case["u0"] / case["s"]),
        }
        hint = _matches_variant(actual, variants) or "u(t) = s e^{2st/tau} / (e^{2st/tau} - 1 + s/u0); check u(0) = u0"
        check_close(actual, expected, f"{name}(...)", hint, case=case, rtol=1e-6, atol=1e-9)
    passed(name)


def check_learning_time(fn: Callable[..., Any], seed: int = 0) -> None:
    """``fn(s, u0, uf, tau)`` must equal ``tau/(2s) ln[uf (s - u0) / (u0 (s - uf))]`` (vectorised over ``s``).

    Expected: :func:`lrkit.deep_linear.learning_time`.
    """
    gen = torch.Generator().manual_seed(seed)
    s = 0.5 + 4.5 * torch.rand(5, generator=gen, dtype=torch.float64)
    cases = [
        {"s": 2.0, "u0": 1.0, "uf": 1.5, "tau": 1.0},
        {"s": s, "u0": 1e-3, "uf": s / 2, "tau": 1.0},
        {"s": s, "u0": 1e-6, "uf": 0.9 * s, "tau": 3.0},
    ]
    name = "learning_time"
    for case in cases:
        expected = learning_time(**case)
        actual = _as_tensor(call(fn, case, name, "torch.log works on tensors; s may be a tensor"))
        check_shape(actual, expected.shape, f"{name}(...)", "one time per mode strength s", case)
        variants = {
            "the rate of the logistic equation is 2s/tau, so the time carries a factor tau/(2s), not tau/s":
                2 * expected,
            "the logarithm's argument is upside down: the time from u0 up to uf must be positive": -expected,
        }
        hint = _matches_variant(actual, variants) or "invert u(t): t = tau/(2s) ln[uf (s - u0) / (u0 (s - uf))]"
        check_close(actual, expected, f"{name}(...)", hint, case=case, rtol=1e-6, atol=1e-9)
    passed(name)


def check_gradient_step(fn: Callable[..., Any], seed: int = 0) -> None:
    """``fn(W1, W2, target, lr) -> (W1_new, W2_new)``: one step on ``1/2 ||target - W2 W1||_F^2``.

    ``W1`` ``(hidden, in)``, ``W2`` ``(out, hidden)``; both gradients at the old weights:
    ``W1 += lr W2^T E``, ``W2 += lr E W1^T``, ``E = target - W2 W1``. Expected:
    :func:`lrkit.deep_linear.gradient_step`. Inputs must not be modified.
    """
    gen = torch.Generator().manual_seed(seed)
    name = "gd_step"
    for n_in, hidden, n_out, lr in ((3, 4, 5, 0.1), (6, 2, 3, 0.05), (4, 4, 4, 0.2)):
        W1 = torch.randn(hidden, n_in, generator=gen, dtype=torch.float64)
        W2 = torch.randn(n_out, hidden, generator=gen, dtype=torch.float64)
        target = torch.randn(n_out, n_in, generator=gen, dtype=torch.float64)
        case = {"W1": W1, "W2": W2, "target": target, "lr": lr}
        exp1, exp2 = gradient_step([W1, W2], target, lr)
        out = call(fn, case, name, "W1 is (hidden, in), W2 is (out, hidden): check each product's inner dimensions")
        if not (isinstance(out, tuple) and len(out) == 2):
            fail(f"{name} should return a pair (W1_new, W2_new)", case=case, actual=out)
        new1, new2 = out
        E = target - W2 @ W1
        seq2 = W2 + lr * E @ (W1 + lr * W2.T @ E).T  # W2's gradient taken at the *updated* W1
        hint1 = _matches_variant(new1, {
            "gradient descent moves *against* the gradient of the loss: W1 + lr W2^T E with E = target - W2 W1":
                W1 - lr * W2.T @ E}) or "dL/dW1 = -W2^T E with E = target - W2 W1"
        check_close(new1, exp1, f"{name}(...)[0] (W1_new)", hint1, case=case, rtol=1e-6, atol=1e-9)
        hint2 = _matches_variant(new2, {
            "both gradients are taken at the old weights: compute E once, before updating either matrix": seq2,
            "gradient descent moves *against* the gradient of the loss: W2 + lr E W1^T": W2 - lr * E @ W1.T,
        }) or "dL/dW2 = -E W1^T with E = target - W2 W1"
        check_close(new2, exp2, f"{name}(...)[1] (W2_new)", hint2, case=case, rtol=1e-6, atol=1e-9)
        if not (torch.equal(W1, case["W1"]) and torch.equal(W2, case["W2"])):
            fail(f"{name} modified its inputs in place", hint="return new tensors: W1 + ..., not W1 += ...")
    passed(name)
