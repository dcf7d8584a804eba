"""Checks for Chapter 2's exercises (deep linear networks); expected values come from :mod:`lrkit.deep_linear`.

* :func:`check_learning_time`: ``fn(s, u0, uf, tau) -> t``, the time a balanced mode needs from ``u0`` to ``uf``;
* :func:`check_unbalanced_rate`: ``fn(u, s, c, tau) -> du/dt``, the speed of a mode with imbalance ``c``;
* :func:`check_gd_lag`: ``fn(lr, s, u0, uf) -> delta t``, how much later gradient descent gets there (D = 2);
* :func:`check_truncation_loss`: ``fn(strengths, width) -> loss``, the final loss of a too-narrow network.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from ..deep_linear import gd_lag, learning_time, truncation_loss, unbalanced_rate
from .core import check_function

__all__ = ["check_learning_time", "check_unbalanced_rate", "check_gd_lag", "check_truncation_loss"]

F64 = torch.float64


def _strengths(seed: int, n: int) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    return 0.5 + 4.5 * torch.rand(n, generator=gen, dtype=F64)


def check_learning_time(fn: Callable[..., Any], seed: int = 0) -> None:
    """``fn(s, u0, uf, tau)`` must equal :func:`lrkit.deep_linear.learning_time` (vectorised over ``s``)."""
    s = _strengths(seed, 5)
    cases: list[dict[str, Any]] = [{"s": 2.0, "u0": 1.0, "uf": 1.5, "tau": 1.0},
                                   {"s": s, "u0": 1e-3, "uf": s / 2, "tau": 1.0},
                                   {"s": s, "u0": 1e-6, "uf": 0.9 * s, "tau": 3.0}]
    check_function(fn, lambda **c: learning_time(**c), cases, name="learning_time", rtol=1e-6, atol=1e-9,
                   hint="separate variables: du / (u (s - u)) = (2 / tau) dt, and 1/(u(s-u)) = (1/s)(1/u + 1/(s-u))",
                   mistakes={
                       "the rate of tau u' = 2u(s - u) is 2s/tau, so the time carries a factor tau/(2s), not tau/s":
                           lambda **c: 2 * learning_time(**c),
                       "the logarithm is upside down: the time from u0 up to uf must be positive":
                           lambda **c: -learning_time(**c),
                       "that is the small-u0 approximation; the exact time keeps (s - u0) and (s - uf)":
                           lambda s, u0, uf, tau: tau / (2 * torch.as_tensor(s, dtype=F64))
                           * torch.log(torch.as_tensor(uf / u0, dtype=F64)),
                   })


def check_unbalanced_rate(fn: Callable[..., Any], seed: int = 0) -> None:
    """``fn(u, s, c, tau)`` must equal ``sqrt(c^2 + 4u^2)(s - u)/tau`` (:func:`lrkit.deep_linear.unbalanced_rate`)."""
    gen = torch.Generator().manual_seed(seed)
    u = torch.linspace(-1.0, 3.0, 9, dtype=F64)
    cases = [{"u": u, "s": 2.0, "c": 0.7, "tau": 1.0}, {"u": u, "s": 2.0, "c": -1.5, "tau": 2.0},
             {"u": 0.3 + torch.rand(5, generator=gen, dtype=F64), "s": 1.0, "c": 4.0, "tau": 1.0},
             {"u": torch.tensor([0.0, 0.5], dtype=F64), "s": 3.0, "c": 0.0, "tau": 1.0}]
    check_function(fn, lambda **c: unbalanced_rate(**c), cases, name="unbalanced_rate", rtol=1e-6, atol=1e-9,
                   hint="u' = (a^2 + b^2)(s - u)/tau; write (a^2 + b^2)^2 with c = a^2 - b^2 and u = a b",
                   mistakes={
                       "that is the balanced speed 2u(s - u): it ignores the imbalance c, which never goes away":
                           lambda u, s, c, tau: 2 * u * (s - u) / tau,
                       "(a^2 + b^2)^2 = (a^2 - b^2)^2 + 4 a^2 b^2: the u^2 term carries a factor 4":
                           lambda u, s, c, tau: torch.sqrt(c ** 2 + u ** 2) * (s - u) / tau,
                       "a^2 + b^2 is not c + 2u: square it and compare with c^2 + 4u^2":
                           lambda u, s, c, tau: (abs(c) + 2 * u) * (s - u) / tau,
                   })


def check_gd_lag(fn: Callable[..., Any], seed: int = 0) -> None:
    """``fn(lr, s, u0, uf)`` must equal :func:`lrkit.deep_linear.gd_lag` at depth 2."""
    s = _strengths(seed, 4)
    cases: list[dict[str, Any]] = [{"lr": 1e-3, "s": 2.0, "u0": 1e-3, "uf": 1.0},
                                   {"lr": 2e-3, "s": s, "u0": 1e-4, "uf": s / 2},
                                   {"lr": 5e-4, "s": s, "u0": 1e-2, "uf": 0.9 * s}]

    def half(lr: float, s: Any, u0: float, uf: Any) -> torch.Tensor:
        return lr / 4 * torch.log(torch.as_tensor(uf, dtype=F64) / u0)

    check_function(fn, lambda **c: gd_lag(**c, depth=2), cases, name="gd_lag", rtol=1e-6, atol=1e-12,
                   hint="add up, step by step, the ground a step loses against the flow, divided by the local "
                        "speed r(u) = 2(s - u) of ln u; then use dt = du / (u r)",
                   mistakes={
                       "you kept only the step's own error; the flow's rate also changes during a step "
                       "(the ln((s - uf)/(s - u0)) term)": half,
                       "the lag is not a fixed fraction s lr of the learning time":
                           lambda lr, s, u0, uf: torch.as_tensor(s, dtype=F64) * lr
                           * learning_time(s, u0, uf),
                   })


def check_truncation_loss(fn: Callable[..., Any], seed: int = 0) -> None:
    """``fn(strengths, width)`` must equal :func:`lrkit.deep_linear.truncation_loss` (a float)."""
    gen = torch.Generator().manual_seed(seed)
    perm = torch.randperm(6, generator=gen)
    base = torch.tensor([5.0, 4.0, 3.0, 2.0, 1.0, 0.5], dtype=F64)
    cases = [{"strengths": [3.0, 2.0, 1.0], "width": 1}, {"strengths": base[perm].tolist(), "width": 2},
             {"strengths": base.tolist(), "width": 4}]

    def tail(strengths: list[float], width: int, order: bool = True, half: bool = True) -> float:
        s = sorted(strengths, reverse=True) if order else list(strengths)
        return (0.5 if half else 1.0) * sum(v * v for v in s[width:])

    check_function(fn, lambda strengths, width: truncation_loss(strengths, width), cases, name="truncation_loss",
                   rtol=1e-9, atol=1e-12,
                   hint="which modes does the best rank-`width` map keep, and what does the loss charge for the rest?",
                   mistakes={
                       "the network keeps the strongest modes: sort the strengths first":
                           lambda strengths, width: tail(strengths, width, order=False),
                       "the loss is 1/2 ||Sigma - W||^2: keep the factor 1/2": lambda strengths, width:
                           tail(strengths, width, half=False),
                       "that is what is learned; the loss is what is left, the modes beyond `width`":
                           lambda strengths, width: 0.5 * sum(v * v for v in sorted(strengths, reverse=True)[:width]),
                   })
