"""Checks for Chapter 9's exercises (fine-tuning beyond kernels); expected values come from
:mod:`lrkit.hermite` and :mod:`lrkit.beyond_kernels`.

* :func:`check_hermite_coefficients`: ``fn(act, n) -> (n,)``, the orthonormal Hermite coefficients;
* :func:`check_information_exponents`: a dict of predicted information exponents;
* :func:`check_predicted_sign`: ``fn(setting, m0) -> int``, the sign of where the overlap flow ends;
* :func:`check_sgd_step`: ``fn(task, u_hat, x, lr) -> (S, d)``, one projected spherical SGD step.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from .. import beyond_kernels as bk
from ..hermite import ACTIVATIONS, hermite_coefficients, information_exponent
from .core import as_number, call, check_close, check_shape, fail, known_mistake, passed

__all__ = ["PREDICT_ACTIVATIONS", "check_hermite_coefficients", "check_information_exponents", "check_predicted_sign",
           "check_sgd_step"]

# activations whose information exponent the learner predicts before computing it
_MU1_TANH = float(hermite_coefficients(torch.tanh, 2)[1])
PREDICT_ACTIVATIONS: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "relu": lambda z: z.clamp(min=0),
    "abs": lambda z: z.abs(),
    "cube": lambda z: z ** 3,
    "he3": lambda z: z ** 3 - 3 * z,
    "he4_plus_he2": lambda z: (z ** 4 - 6 * z ** 2 + 3) + 0.1 * (z ** 2 - 1),
    "tanh_minus_linear": lambda z: torch.tanh(z) - _MU1_TANH * z,
}


def check_hermite_coefficients(fn: Callable[..., Any], seed: int = 0) -> None:
    """``fn(act, n)``: ``mu_p = E[act(z) h_p(z)]``, ``h_p = He_p/sqrt(p!)``, ``p < n``; tolerance 2e-3 (quadrature)."""
    gen = torch.Generator().manual_seed(seed)
    a = 0.5 + torch.rand(1, generator=gen).item()
    cases = [("he3_tapered", ACTIVATIONS["he3_tapered"].fn, 6), ("relu", ACTIVATIONS["relu"].fn, 5),
             ("cubic", lambda z: z ** 3 + a * z ** 2, 6), ("tanh", torch.tanh, 4)]
    name = "hermite_coefficients"
    for label, act, n in cases:
        case = {"act": act, "n": n}
        expected = hermite_coefficients(act, n)
        actual = call(fn, case, name, "evaluate act at the Gauss-Hermite nodes and weight by the quadrature weights")
        if not isinstance(actual, torch.Tensor):
            actual = torch.as_tensor(actual, dtype=torch.float64)
        check_shape(actual, expected.shape, f"{name}(...)", "one coefficient per degree p = 0..n-1", case)
        z = torch.linspace(-6, 6, 2001, dtype=torch.float64)
        w = torch.exp(-z * z / 2) / math.sqrt(2 * math.pi) * (z[1] - z[0])
        raw = torch.stack([(w * act(z) * torch.from_numpy(np.polynomial.hermite_e.hermeval(
            z.numpy(), [0] * p + [1]))).sum() for p in range(n)])
        sq = torch.tensor([math.sqrt(math.factorial(p)) for p in range(n)], dtype=torch.float64)
        mistakes = {
            "normalise He_p by sqrt(p!): mu_p = E[act(z) He_p(z)] / sqrt(p!) (you left out the sqrt(p!))": raw,
            "divide by sqrt(p!), not by p!": raw / sq ** 2,
            "the quadrature weights must sum to 1 (an expectation over N(0, 1)): numpy's hermegauss weights "
            "sum to sqrt(2 pi)": expected * math.sqrt(2 * math.pi),
        }
        hint = known_mistake(actual.detach().double(), mistakes, rtol=2e-2, atol=2e-3) or (
            "mu_p = sum_i w_i act(z_i) He_p(z_i) / sqrt(p!) with numpy's hermegauss nodes z_i and weights w_i / "
            "sqrt(2 pi); He_p from hermeval or the recursion He_{p+1} = z He_p - p He_{p-1}")
        check_close(actual, expected, f"{name}(...) for {label}", hint, case=case, rtol=0.0, atol=2e-3)
    passed(name)


def check_information_exponents(predicted: Any) -> None:
    """``predicted`` maps every name in :data:`PREDICT_ACTIVATIONS` to its information exponent (an int)."""
    if not isinstance(predicted, dict) or set(predicted) != set(PREDICT_ACTIVATIONS):
        fail("predicted should be a dict with one entry per activation", expected=sorted(PREDICT_ACTIVATIONS),
             actual=predicted if not isinstance(predicted, dict) else sorted(predicted),
             hint="keep the keys of the template and fill in an int for each")
    for name, act in PREDICT_ACTIVATIONS.items():
        expected = information_exponent(hermite_coefficients(act, 8), tol=1e-3)
        got = predicted[name]
        if isinstance(got, bool) or not isinstance(got, int):
            fail(f"the predicted information exponent of {name} should be an int", actual=got,
                 hint="the degree p >= 1 of the first non-zero Hermite coefficient")
        if got != expected:
            fail(f"the information exponent of {name} is wrong", expected=expected, actual=got,
                 hint="p = 0 does not count (a constant carries no direction); odd functions have only odd p, even "
                      "functions only even p; z^3 = He_3 + 3 He_1; subtracting mu_1 z removes p = 1")
    passed("information exponents")


def sign_cases(seed: int) -> list[dict[str, Any]]:
    """Starts on both sides of h's unstable zero, saddles (h(0) = 0) and starts against sign h(0)."""
    gen = torch.Generator().manual_seed(seed)
    jit = (torch.rand(8, generator=gen) * 0.04 - 0.02).tolist()
    near, saddle, neg = (bk.faithful(8, seed=s) for s in (807, 805, 800))  # h(0) = 0.148, 0, -2.0
    return [{"setting": near, "m0": -0.25 + jit[0]}, {"setting": near, "m0": -0.05 + jit[1]},
            {"setting": saddle, "m0": 0.1 + jit[2]}, {"setting": saddle, "m0": -0.1 + jit[3]},
            {"setting": neg, "m0": 0.2 + jit[4]}, {"setting": bk.aligned(4, "he3_tapered"), "m0": -0.2 + jit[5]},
            {"setting": bk.glm("relu"), "m0": 0.15 + jit[6]}, {"setting": bk.glm("relu"), "m0": -0.15 + jit[7]}]


def check_predicted_sign(fn: Callable[..., Any], seed: int = 0) -> None:
    """``fn(setting, m0)``: the sign (+1, -1, or 0 at a fixed point) of where the overlap flow
    ``dm/dt = h(m)(1 - m^2)`` from ``m0`` ends, i.e. of :func:`lrkit.beyond_kernels.drift_limit`."""
    name = "predicted_sign"
    for case in sign_cases(seed):
        lim = bk.drift_limit(**case)
        expected = 0 if abs(lim) < 1e-9 else int(math.copysign(1, lim))
        actual = as_number(call(fn, case, name, "use setting.h(m0)"), name, case=case, finite=True)
        s, m0 = case["setting"], case["m0"]
        h0, hm = float(s.h(0.0)), float(s.h(m0))
        shown = {"h(0)": h0, "m0": m0, "h(m0)": hm}
        hint = "the overlap moves in the direction of sign h(m) from where it is, and h keeps that sign on the way"
        if actual == math.copysign(1, h0) and h0 != 0 and expected != actual:
            hint = "this start lies beyond the zero of h: h(m0) has the other sign than h(0); " + hint
        elif actual == math.copysign(1, m0) and expected != actual:
            hint = "the sign of the start alone does not decide: h(m0) does; " + hint
        if actual != expected:
            fail(f"{name}(...) is wrong", case=shown, expected=expected, actual=actual, hint=hint)
    passed(name)


def check_sgd_step(fn: Callable[..., Any], seed: int = 0) -> None:
    """``fn(task, u_hat, x, lr)``: one projected spherical online-SGD step on a batch, as :func:`bk.sgd_step`."""
    name = "sgd_step"
    gen = torch.Generator().manual_seed(seed)
    for setting, d, S in ((bk.aligned(2, "relu"), 5, 1), (bk.faithful(4, "tanh", seed=seed), 12, 6),
                          (bk.aligned(3, "he3_tapered"), 9, 4)):
        task, u0 = bk.make_task(setting, d, seed=seed)
        u_hat = torch.stack([task.project(torch.randn(d, generator=gen, dtype=torch.float64)) for _ in range(S)])
        u_hat = u_hat / u_hat.norm(dim=-1, keepdim=True)
        x = torch.randn(S, d, generator=gen, dtype=torch.float64)
        lr = 0.05
        case = {"task": task, "u_hat": u_hat, "x": x, "lr": lr}
        expected = bk.sgd_step(task, u_hat, x, lr)
        actual = call(fn, case, name, "shapes: u_hat and x are (S, d); W is (k, d)")
        check_shape(actual, expected.shape, f"{name}(...)", "one updated unit vector per row", case)
        s = setting
        g, a, b = x @ task.W.T, x @ task.u, (x * u_hat).sum(-1)
        dldb = bk.outputs(s.act, s.xi, s.lam, s.c, s.c_hat, g, a, b, "network")[2]
        raw = dldb[:, None] * x
        def tang(v: torch.Tensor, u: torch.Tensor = u_hat) -> torch.Tensor:
            return v - (v * u).sum(-1, keepdim=True) * u

        def unit(v: torch.Tensor) -> torch.Tensor:
            out: torch.Tensor = v / v.norm(dim=-1, keepdim=True)
            return out

        mistakes = {
            "project the gradient onto the complement of span(W) (Pi_perp) before the step":
                unit(u_hat - lr * tang(raw)),
            "remove the gradient's component along u_hat (the tangent projection) before the step":
                unit(u_hat - lr * task.project(raw)),
            "divide by the norm after the step so that u_hat stays on the sphere":
                u_hat - lr * tang(task.project(raw)),
            "step against the gradient: u_hat - lr * grad": unit(u_hat + lr * tang(task.project(raw))),
            "the loss is (f* - f)^2: its gradient has a factor 2": unit(u_hat - lr / 2 * tang(task.project(raw))),
        }
        hint = known_mistake(actual.detach().double(), mistakes, rtol=1e-6, atol=1e-9) or (
            "grad = dL/db * x with b = u_hat . x; then Pi_perp, then remove the u_hat component, step, normalise")
        check_close(actual, expected, f"{name}(...)", hint, case=case, rtol=1e-6, atol=1e-9)
    passed(name)
