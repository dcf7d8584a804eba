"""Checks for Chapter 4's exercises (matrix sensing); expected values come from :mod:`lrkit.sensing` and autograd.

* :func:`check_measure_adjoint`: ``measure(Z, M) -> (..., m)`` and ``adjoint(Z, z) -> (..., n1, n2)``;
* :func:`check_symmetric_step`: ``fn(X, Z, y, lr) -> X_new``, one GD step on ``(1/2m)||Z(X X^T) - y||^2``;
* :func:`check_asymmetric_step`: ``fn(B, A, Z, y, lr) -> (B_new, A_new)``, one GD step on ``(1/2m)||Z(B A) - y||^2``;
* :func:`check_rate_fit`: ``fn(steps, error, lo, hi) -> c``, the per-step linear rate of ``error ~ C e^{-c t}``;
* :func:`check_predicted_rate`: ``fn(delta0, Q, lr, scale) -> c``, the linear rate the conserved imbalance
  predicts for an over-parameterised ``s B A`` run, and :func:`check_rate_measurement`: a measured rate
  against that prediction.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from ..sensing import adjoint, compressed_imbalance, linear_rate, make_problem, measure
from .core import as_number, call, check_close, check_shape, fail, known_mistake, matches_variant, passed

__all__ = ["check_measure_adjoint", "check_symmetric_step", "check_asymmetric_step", "check_rate_fit",
           "check_predicted_rate", "check_rate_measurement"]


def _randn(gen: torch.Generator, *shape: int) -> torch.Tensor:
    return torch.randn(*shape, generator=gen, dtype=torch.float64)


def _loss(Z: torch.Tensor, y: torch.Tensor, M: torch.Tensor) -> torch.Tensor:
    return 0.5 * (measure(Z, M) - y).square().mean()


def check_measure_adjoint(measure_fn: Callable[..., Any], adjoint_fn: Callable[..., Any], seed: int = 0) -> None:
    """``measure_fn(Z, M)_i = <Z_i, M>`` and ``adjoint_fn(Z, z) = sum_i z_i Z_i``, batched over leading axes.

    Expected: :func:`lrkit.sensing.measure` and :func:`lrkit.sensing.adjoint`; then the adjoint identity
    ``<Z(M), z> = <M, Z*(z)>`` on the learner's own pair.
    """
    gen = torch.Generator().manual_seed(seed)
    shapes = [(3, 2, 2, ()), (7, 3, 5, ()), (11, 4, 4, (2,)), (5, 6, 3, (2, 3))]
    for m, n1, n2, batch in shapes:
        Z, M = _randn(gen, m, n1, n2), _randn(gen, *batch, n1, n2)
        case = {"Z": Z, "M": M}
        expected = measure(Z, M)
        variants = {"<Z_i, M> sums Z_i * M entry by entry: do not transpose M (or Z_i)":
                    measure(Z, M.transpose(-2, -1)) if n1 == n2 else expected + math.nan}
        actual = call(measure_fn, case, "measure", "Z is (m, n1, n2) and M (..., n1, n2): multiply entrywise "
                                                   "(broadcast M against Z) and sum the last two axes")
        check_shape(actual, expected.shape, "measure(Z, M)", "one measurement per Z_i, after M's batch axes: "
                                                             f"(..., m) = {tuple(expected.shape)}", case)
        check_close(actual, expected, "measure(Z, M)", matches_variant(actual, variants) or
                    "y_i = sum_jk (Z_i)_jk M_jk: an inner product, not a matrix product", case=case, rtol=1e-9,
                    atol=1e-9)
        z = _randn(gen, *batch, m)
        case = {"Z": Z, "z": z}
        expected = adjoint(Z, z)
        variants = {"the adjoint sums z_i Z_i over i; it does not average": expected / m}
        actual = call(adjoint_fn, case, "adjoint", "weight each Z_i by z_i and sum over i (the axis of length m)")
        check_shape(actual, expected.shape, "adjoint(Z, z)", f"one n1 x n2 matrix per batch entry: "
                                                             f"{tuple(expected.shape)}", case)
        check_close(actual, expected, "adjoint(Z, z)", matches_variant(actual, variants) or
                    "Z*(z) = sum_i z_i Z_i", case=case, rtol=1e-9, atol=1e-9)
    Z, M, z = _randn(gen, 9, 4, 3), _randn(gen, 4, 3), _randn(gen, 9)
    lhs = float((measure_fn(Z, M) * z).sum())
    rhs = float((M * adjoint_fn(Z, z)).sum())
    if not math.isclose(lhs, rhs, rel_tol=1e-9, abs_tol=1e-9):
        fail("your measure and adjoint are not adjoint to each other: <Z(M), z> != <M, Z*(z)>",
             case={"Z": Z, "M": M, "z": z}, expected=lhs, actual=rhs,
             hint="both must use the same pairing of Z_i with M: entrywise products summed")
    passed("measure and adjoint")


def _sensing_case(gen: torch.Generator, n: int, m: int, r: int, symmetric: bool, n2: int | None = None
                  ) -> dict[str, Any]:
    seed = int(torch.randint(0, 2**31 - 1, (1,), generator=gen))
    p = make_problem(n, 1, m, n2=n2, symmetric=symmetric, seed=seed, device="cpu")
    return {"Z": p.Z, "y": p.y, "lr": float(0.05 + 0.2 * torch.rand(1, generator=gen, dtype=torch.float64))}


def _autograd_step(loss_of: Callable[..., torch.Tensor], lr: float, *params: torch.Tensor) -> list[torch.Tensor]:
    leaves = [p.detach().clone().requires_grad_(True) for p in params]
    grads = torch.autograd.grad(loss_of(*leaves), leaves)
    return [p.detach() - lr * g for p, g in zip(params, grads)]


def check_symmetric_step(step_fn: Callable[..., Any], seed: int = 0) -> None:
    """``step_fn(X, Z, y, lr)`` must be one GD step on ``L(X) = (1/2m)||Z(X X^T) - y||^2``.

    Expected: ``X - lr * grad`` with the gradient from autograd (it equals ``(G + G^T) X``,
    ``G = (1/m) Z*(Z(X X^T) - y)``, the step of :func:`lrkit.sensing.symmetric_step`).
    """
    gen = torch.Generator().manual_seed(seed)
    for n, m, r in ((3, 20, 2), (5, 60, 3), (8, 150, 4)):
        case = _sensing_case(gen, n, m, r, True)
        case = {"X": _randn(gen, n, r), **case}
        Z, y, X, lr = case["Z"], case["y"], case["X"], case["lr"]
        (expected,) = _autograd_step(lambda X_, Z=Z, y=y: _loss(Z, y, X_ @ X_.T), lr, X)
        G = adjoint(Z, measure(Z, X @ X.T) - y) / m
        variants = {
            "G = (1/m) Z*(Z(XX^T) - y) is not symmetric when the Z_i are not: the gradient is (G + G^T) X, "
            "not 2 G X": X - lr * 2 * G @ X,
            "the loss has a 1/(2m): divide the adjoint by m": X - lr * m * (G + G.T) @ X,
            "a gradient step goes downhill: X - lr * gradient": X + lr * (G + G.T) @ X,
        }
        actual = call(step_fn, case, "symmetric_gd_step", "X is (n, r); M = X @ X.T is (n, n); the step is "
                                                          "(n, n) @ (n, r)")
        check_shape(actual, X.shape, "symmetric_gd_step(...)", "the new X has the shape of X", case)
        check_close(actual, expected, "symmetric_gd_step(...)", matches_variant(actual, variants) or
                    "X_new = X - lr (G + G^T) X with G = (1/m) Z*(Z(X X^T) - y)", case=case, rtol=1e-8, atol=1e-10)
    passed("symmetric_gd_step")


def check_asymmetric_step(step_fn: Callable[..., Any], seed: int = 0) -> None:
    """``step_fn(B, A, Z, y, lr)`` must be one simultaneous GD step on ``(1/2m)||Z(B A) - y||^2``.

    Expected: ``(B - lr grad_B, A - lr grad_A)`` with autograd's gradients (``G A^T`` and ``B^T G``,
    the step of :func:`lrkit.sensing.asymmetric_step`).
    """
    gen = torch.Generator().manual_seed(seed)
    for n1, n2, m, r in ((3, 3, 20, 2), (5, 4, 60, 3), (7, 6, 120, 2)):
        case = _sensing_case(gen, n1, m, r, False, n2)
        case = {"B": _randn(gen, n1, r), "A": _randn(gen, r, n2), **case}
        Z, y, B, A, lr = case["Z"], case["y"], case["B"], case["A"], case["lr"]
        expected = _autograd_step(lambda B_, A_, Z=Z, y=y: _loss(Z, y, B_ @ A_), lr, B, A)
        G = adjoint(Z, measure(Z, B @ A) - y) / m
        B_seq = B - lr * G @ A.T
        hints = {
            "update both factors from the *same* old (B, A): the new A uses the old B (simultaneous, "
            "not alternating, descent)": (B_seq, A - lr * B_seq.T @ G),
            "the loss has a 1/(2m): divide the adjoint by m": (B - lr * m * G @ A.T, A - lr * m * B.T @ G),
        }
        if n1 == n2:  # transposing G only type-checks for square matrices
            hints["the gradient of A is B^T G (an r x n2 matrix), not B^T G^T"] = (B_seq, A - lr * B.T @ G.T)
            hints["the gradient of B is G A^T (an n1 x r matrix), not G^T A^T"] = (B - lr * G.T @ A.T,
                                                                                   A - lr * B.T @ G)
        actual = call(step_fn, case, "asymmetric_gd_step", "B is (n1, r), A is (r, n2), G is (n1, n2): "
                                                           "grad_B = G A^T, grad_A = B^T G")
        if not (isinstance(actual, tuple) and len(actual) == 2):
            fail("asymmetric_gd_step should return the pair (B_new, A_new)", case=case, actual=actual)
        hint = next((h for h, (b, a) in hints.items() if isinstance(actual[0], torch.Tensor)
                     and isinstance(actual[1], torch.Tensor) and actual[0].shape == b.shape
                     and actual[1].shape == a.shape and torch.allclose(actual[0].double(), b, atol=1e-8)
                     and torch.allclose(actual[1].double(), a, atol=1e-8)), None)
        generic = "B_new = B - lr G A^T and A_new = A - lr B^T G, with G = (1/m) Z*(Z(B A) - y)"
        for name, got, want in (("B_new", actual[0], expected[0]), ("A_new", actual[1], expected[1])):
            check_shape(got, want.shape, name, f"{name} has the shape of the old factor", case)
            check_close(got, want, f"asymmetric_gd_step(...) -> {name}", hint or generic, case=case, rtol=1e-8,
                        atol=1e-10)
    passed("asymmetric_gd_step")


def check_rate_fit(fit_fn: Callable[..., Any], seed: int = 0) -> None:
    """``fit_fn(steps, error, lo, hi)``: the rate ``c`` of ``error ~ C e^{-c t}`` fitted where ``lo <= error <= hi``.

    Expected: :func:`lrkit.sensing.linear_rate` (a least-squares line through ``ln(error)``).
    """
    gen = np.random.default_rng(seed)
    name = "fit_rate"
    for c, plateau in ((0.01, 1e-30), (0.2, 1e-28), (float(gen.uniform(0.001, 0.05)), 1e-25)):
        steps = np.unique(np.round(np.logspace(0, 4, 120))).astype(float)
        error = 3.0 * np.exp(-c * steps) * np.exp(0.05 * gen.standard_normal(steps.shape)) + plateau
        error[:5] = 2.0  # an initial phase that the window must exclude
        lo, hi = 1e-20, 1e-3
        case = {"steps": steps, "error": error, "lo": lo, "hi": hi}
        expected = linear_rate(steps, error, lo, hi)
        actual = call(fit_fn, case, name, "keep the points with lo <= error <= hi, fit a line to ln(error) "
                                          "against the step, return minus its slope")
        if isinstance(actual, (int, float)) and not isinstance(actual, bool) and math.isfinite(actual):
            if math.isclose(actual, expected / math.log(10), rel_tol=1e-3):
                fail(f"{name} is off by the factor ln(10)", case=case, expected=expected, actual=actual,
                     hint="fit the natural logarithm (np.log), not log10: the rate is -d ln(error)/dt")
            if math.isclose(actual, -expected, rel_tol=1e-3):
                fail(f"{name} has the wrong sign", case=case, expected=expected, actual=actual,
                     hint="the error decays, so ln(error) has a negative slope: the rate is minus the slope")
        check_close(actual, expected, f"{name}(...)", "fit only inside [lo, hi]: the plateau at the start and "
                    "the floating-point floor at the end are not part of the linear phase", case=case, rtol=1e-6,
                    atol=1e-12)
    passed(name)


def _orthonormal(gen: torch.Generator, r: int, d: int) -> torch.Tensor:
    Q: torch.Tensor = torch.linalg.qr(_randn(gen, r, d)).Q
    return Q


def check_predicted_rate(rate_fn: Callable[..., Any], seed: int = 0) -> None:
    """``rate_fn(delta0, Q, lr, scale)``: the predicted per-step rate of ``||M_t - M*||^2`` for ``s B A``.

    Expected: ``2 lr s^2 min |eig(Q^T Delta_0 Q)|`` (:func:`lrkit.sensing.compressed_imbalance`), on
    imbalances of both signs (Init[A]-like and Gaussian-like) where the compressed and the full
    spectrum differ.
    """
    gen = torch.Generator().manual_seed(seed)
    name = "predict_rate"
    for sign, r, d in ((1.0, 4, 2), (-1.0, 5, 3), (1.0, 3, 1)):
        V = _orthonormal(gen, r, r)
        eig = sign * (0.2 + 2.0 * torch.rand(r, generator=gen, dtype=torch.float64))
        delta0 = (V * eig) @ V.T
        Q = _orthonormal(gen, r, d)
        lr, scale = float(0.05 + 0.1 * torch.rand(1, generator=gen)), float(0.5 + torch.rand(1, generator=gen))
        case = {"delta0": delta0, "Q": Q, "lr": lr, "scale": scale}
        expected = 2 * lr * scale ** 2 * compressed_imbalance(delta0, Q)
        actual = as_number(call(rate_fn, case, name), name, case=case, finite=True)
        lam_q = torch.linalg.eigvalsh(Q.T @ delta0 @ Q).abs()
        mistakes = {
            "the imbalance the slow direction keeps is Delta_0 compressed to the redundant subspace, "
            "Q^T Delta_0 Q, not the whole Delta_0": 2 * lr * scale ** 2 * float(eig.abs().min()),
            "the scale s enters twice (once per factor): the product s a b decays at s^2 (a^2 + b^2)":
                2 * lr * scale * float(lam_q.min()),
            "the error is squared: ||M||^2 decays at twice the rate of M": lr * scale ** 2 * float(lam_q.min()),
            "the slowest direction sets the late rate: take the smallest eigenvalue":
                2 * lr * scale ** 2 * float(lam_q.max()),
            "an imbalance can be negative (Init[A]: Delta_0 = -A A^T); the rate is its size":
                2 * lr * scale ** 2 * float(torch.linalg.eigvalsh(Q.T @ delta0 @ Q).min()),
        }
        hint = known_mistake(actual, {h: v for h, v in mistakes.items() if not math.isclose(v, expected)},
                             rtol=1e-6, atol=1e-12)
        check_close(actual, expected, f"{name}(...)", hint or "follow one redundant direction: which of b^2 - a^2 "
                    "survives once its product has decayed, and at what rate does the squared error fall?",
                    case=case, rtol=1e-6, atol=1e-12)
    passed(name)


def check_rate_measurement(predicted: Any, measured: Any, tolerance: float = 0.1) -> None:
    """A measured rate within ``tolerance`` (relative) of the imbalance's prediction.

    The default 10% covers the sensing operator's curvature on the redundant directions: at
    least ``(1 - sqrt(d / m))^2`` of the identity for ``d`` redundant parameters and ``m``
    Gaussian measurements (0.93 in the exercise).
    """
    predicted = as_number(predicted, "predicted rate", finite=True)
    measured = as_number(measured, "measured rate", finite=True)
    if not predicted > 0:
        fail("the predicted rate must be positive", actual=float(predicted),
             hint="a decaying error has a positive rate c in exp(-c t)")
    if abs(measured / predicted - 1) > tolerance:
        fail(f"the measured rate is more than {tolerance:.0%} away from your prediction", expected=float(predicted),
             actual=float(measured), hint="check the fit window (the linear phase only) and the prediction's "
                                           "factors: the 2, the scale s and which imbalance survives")
    passed("rate measurement")
