"""Checks for Chapter 8's exercises (what LoRA learns and forgets): they teach what is wrong.

Expected values come from :mod:`lrkit.spectra` (``intruder_dimensions``, ``reduce_intruders``,
``rank_for_energy``) and :func:`lrkit.forgetting.input_weighted`; a check never carries its own
copy of the formula it checks. Every check takes a ``seed`` so hidden tests can rerun it on
other inputs.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import torch

from .. import spectra
from ..forgetting import input_weighted
from . import call, check_close, check_equal, fail, passed, to_scalar
from .core import Case

__all__ = ["check_intruders", "check_alignment_prediction", "check_input_weighted_rank",
           "check_rank_prediction", "check_scale_intruders", "check_mitigation_prediction"]


def _orthogonal(n: int, gen: torch.Generator) -> torch.Tensor:
    Q: torch.Tensor = torch.linalg.qr(torch.randn(n, n, generator=gen, dtype=torch.float64))[0]
    return Q


def _base_and_tuned(gen: torch.Generator, out_f: int, in_f: int,
                    new_left: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """A base ``W0 = U diag(s) V^T`` and ``W0 + c u v^T``: ``u`` a new output direction (or a base one).

    With ``out > in`` a new ``u`` is taken outside the span of ``U``, so it is an intruder for sure.
    """
    m = min(out_f, in_f)
    U, V = _orthogonal(out_f, gen)[:, :m], _orthogonal(in_f, gen)[:, :m]
    W0 = U @ torch.diag(torch.linspace(2.0, 1.0, m, dtype=torch.float64)) @ V.T
    u = torch.randn(out_f, generator=gen, dtype=torch.float64) if new_left else U[:, 2].clone()
    if new_left and out_f > m:     # outside the base's output span: an intruder for sure
        u = u - U @ (U.T @ u)
    v = torch.randn(in_f, generator=gen, dtype=torch.float64)
    return W0, W0 + 4.0 * torch.outer(u / u.norm(), v / v.norm())


def _variant_hint(actual: Any, case: Mapping[str, Any], variants: Mapping[str, Callable[[], Any]]) -> str | None:
    for hint, fn in variants.items():
        try:
            value = fn()
        except Exception:  # a variant that cannot be computed is not the learner's mistake
            continue
        if isinstance(actual, torch.Tensor) and isinstance(value, torch.Tensor):
            if actual.shape == value.shape and torch.allclose(actual.double(), value.double(), atol=1e-8):
                return hint
        elif to_scalar(actual) == value:
            return hint
    return None


def check_intruders(fn: Callable[..., Any], seed: int = 0) -> None:
    """``fn(W0, W, k, eps) -> (count, max_cos)`` as :func:`lrkit.spectra.intruder_dimensions`.

    Left singular vectors of both matrices; for each of the top ``k`` tuned vectors, the largest
    ``|cos|`` against *all* base singular vectors; an intruder when that is ``< eps``.
    """
    gen = torch.Generator().manual_seed(seed)
    cases: list[Case] = []
    for out_f, in_f, new_left in ((20, 8, True), (20, 8, False), (8, 16, True), (16, 16, False), (24, 10, True)):
        W0, W = _base_and_tuned(gen, out_f, in_f, new_left)
        cases.append({"W0": W0, "W": W, "k": 4, "eps": 0.5})
    W0 = torch.randn(10, 10, generator=gen, dtype=torch.float64)
    cases.append({"W0": W0, "W": -W0, "k": 5, "eps": 0.5})    # a sign flip changes no direction
    for case in cases:
        exp_count, exp_cos = spectra.intruder_dimensions(case["W0"], case["W"], case["k"], case["eps"])
        out = call(fn, case, "intruder_count")
        if not (isinstance(out, tuple) and len(out) == 2):
            fail("intruder_count should return a pair (count, max_cos)", case=case, actual=out)
        count, max_cos = out
        W0_, W_ = case["W0"], case["W"]
        variants = {
            "you used the right singular vectors (Vh); the authors compare the LEFT ones, U (the output "
            "space)": lambda: spectra.intruder_dimensions(W0_.T, W_.T, case["k"], case["eps"])[1],
            "take the absolute value of the cosines: a singular vector's sign is arbitrary":
                lambda: (torch.linalg.svd(W_, full_matrices=False)[0].T
                         @ torch.linalg.svd(W0_, full_matrices=False)[0]).max(dim=1).values[:case["k"]],
            "compare with ALL base singular vectors, not only the base's top k":
                lambda: (torch.linalg.svd(W_, full_matrices=False)[0][:, :case["k"]].T
                         @ torch.linalg.svd(W0_, full_matrices=False)[0][:, :case["k"]]).abs().max(1).values,
            "the SVD is of the fine-tuned matrix W itself, not of the update W - W0":
                lambda: spectra.intruder_dimensions(W0_, W_ - W0_, case["k"], case["eps"])[1],
        }
        hint = _variant_hint(max_cos, case, variants) or (
            "U0 = svd(W0).U, U = svd(W).U; max_cos = |U[:, :k]^T U0|.max over the base vectors")
        check_close(max_cos, exp_cos, "max_cos (the second value)", hint, case=case, atol=1e-8)
        check_equal(count, exp_count, "count (the first value)",
                    "an intruder is a top-k tuned direction whose max |cos| is below eps", case)
    passed("intruder_count")


def _check_named_prediction(prediction: Any, allowed: tuple[str, ...], expected: str, name: str,
                            finding: str, hint: str) -> None:
    """A prediction that must be one of the strings ``allowed`` and equal ``expected``."""
    if prediction not in allowed:
        fail(f"the prediction should be {' or '.join(repr(a) for a in allowed)}", actual=prediction)
    if prediction != expected:
        fail(f"the prediction does not match what {finding} find", actual=prediction, hint=hint)
    passed(name)


def check_alignment_prediction(prediction: Any, seed: int = 0) -> None:
    """The prediction must name the method whose top singular vectors stay closer to the base: ``"full"``."""
    _check_named_prediction(prediction, ("lora", "full"), "full", "alignment prediction",
                            "the papers (and the chapter)",
                            "a low-rank adapter must put its whole update into r directions; full fine-tuning "
                            "spreads many small changes over the existing ones. Which one creates new top "
                            "directions?")


def check_input_weighted_rank(fn: Callable[..., Any], seed: int = 0) -> None:
    """``fn(delta, second_moment, frac) -> int``: the rank for ``frac`` of the energy of ``dW Sigma^{1/2}``."""
    gen = torch.Generator().manual_seed(seed)
    cases: list[Case] = []
    for out_f, in_f, p in ((6, 10, 4), (12, 8, 8), (9, 9, 3)):
        delta = torch.randn(out_f, in_f, generator=gen, dtype=torch.float64)
        X = torch.randn(200, p, generator=gen, dtype=torch.float64) @ torch.randn(p, in_f, generator=gen,
                                                                                   dtype=torch.float64)
        cases.append({"delta": delta, "second_moment": X.T @ X / 200, "frac": 0.9})
    cases.append({"delta": torch.diag(torch.tensor([3.0, 2.0, 1.0], dtype=torch.float64)),
                  "second_moment": torch.diag(torch.tensor([0.01, 1.0, 4.0], dtype=torch.float64)), "frac": 0.9})
    for case in cases:
        expected = spectra.rank_for_energy(input_weighted(case["delta"], case["second_moment"]), case["frac"])
        actual = call(fn, case, "input_weighted_rank",
                      "delta is (out, in) and Sigma^{1/2} is (in, in): the product is delta @ Sigma^{1/2}")
        d, m = case["delta"], case["second_moment"]
        variants = {
            "weight by Sigma^{1/2}, the square root of the second moment, not by Sigma itself":
                lambda: spectra.rank_for_energy(d @ m, case["frac"]),
            "this is the raw rank of delta: multiply by Sigma^{1/2} first": lambda: spectra.rank_for_energy(
                d, case["frac"]),
            "energy is the sum of SQUARED singular values": lambda: spectra.rank_for_energy(
                spectra.singular_values(input_weighted(d, m)).sqrt(), case["frac"]),
        }
        hint = _variant_hint(actual, case, variants) or (
            "Sigma^{1/2} = Q diag(sqrt(max(lambda, 0))) Q^T from eigh(Sigma); then the smallest k whose "
            "squared singular values reach frac of the total")
        check_equal(to_scalar(actual), expected, "input_weighted_rank(...)", hint, case)
    # a rank-deficient second moment: round-off leaves eigenvalues slightly below zero
    Q = _orthogonal(7, gen)
    sigma = Q @ torch.diag(torch.tensor([2.0, 1.0, 0.5, -1e-15, -1e-16, 0.0, 0.0], dtype=torch.float64)) @ Q.T
    case = {"delta": torch.randn(5, 7, generator=gen, dtype=torch.float64), "second_moment": sigma, "frac": 0.9}
    expected = spectra.rank_for_energy(input_weighted(case["delta"], case["second_moment"]), 0.9)
    check_equal(to_scalar(call(fn, case, "input_weighted_rank", "clamp negative eigenvalues to 0 before the "
                                                                 "square root")), expected,
                "input_weighted_rank(...) with a rank-deficient Sigma",
                "round-off makes some eigenvalues slightly negative: clamp them at 0 before sqrt", case)
    passed("input_weighted_rank")


def check_rank_prediction(prediction: Any, seed: int = 0) -> None:
    """``"smaller"``: the input-weighted rank of full fine-tuning's update is below its raw rank."""
    _check_named_prediction(prediction, ("smaller", "equal", "larger"), "smaller", "rank prediction",
                            "the chapter's measurements",
                            "Adam moves every weight, including directions the target inputs barely excite; "
                            "what happens to those directions once they are weighted by Sigma^{1/2}?")


def check_scale_intruders(fn: Callable[..., Any], seed: int = 0) -> None:
    """``fn(W0, W, lam, k, eps) -> W_mit``: ``W + (lam - 1) sum_{j in intruders} s_j u_j v_j^T``.

    Expected: :func:`lrkit.spectra.reduce_intruders` with ``rank=None``.
    """
    gen = torch.Generator().manual_seed(seed)
    cases: list[Case] = []
    for out_f, in_f, lam in ((20, 8, 0.75), (16, 6, 0.5), (24, 10, 0.0)):
        W0, W = _base_and_tuned(gen, out_f, in_f, new_left=True)
        cases.append({"W0": W0, "W": W, "lam": lam, "k": 4, "eps": 0.5})
    W0, W = _base_and_tuned(gen, 10, 10, new_left=False)
    cases.append({"W0": W0, "W": W, "lam": 0.75, "k": 4, "eps": 0.5})   # no intruder: nothing changes
    for case in cases:
        expected = spectra.reduce_intruders(case["W0"], case["W"], rank=None, k=case["k"], eps=case["eps"],
                                            lam=case["lam"])
        actual = call(fn, case, "scale_intruders")
        W0_: torch.Tensor = case["W0"]
        W_: torch.Tensor = case["W"]
        lam, k = float(case["lam"]), int(case["k"])

        def top_scaled() -> torch.Tensor:
            U, s, Vh = torch.linalg.svd(W_, full_matrices=False)
            scaled: torch.Tensor = W_ + (lam - 1) * (U[:, :k] * s[:k]) @ Vh[:k]
            return scaled

        variants = {
            "scale only the intruders (top-k directions with max |cos| < eps), not every top-k direction":
                top_scaled,
            "the new singular value is lam * s_j: add (lam - 1) s_j u_j v_j^T, not lam s_j u_j v_j^T":
                lambda: spectra.reduce_intruders(W0_, W_, lam=lam + 1, k=k),
            "this scales the whole update W - W0; the mitigation touches only the intruder directions":
                lambda: W0_ + lam * (W_ - W0_),
        }
        hint = _variant_hint(actual, case, variants) or (
            "find the intruders with your intruder_count; then W + (lam - 1) * U[:, I] diag(s[I]) Vh[I]")
        check_close(actual, expected, "scale_intruders(...)", hint, case=case, atol=1e-8)
    passed("scale_intruders")


def check_mitigation_prediction(prediction: Any, seed: int = 0) -> None:
    """``{"source": "down", "target": "up"}``: the mitigation lowers forgetting and costs some learning."""
    if not (isinstance(prediction, Mapping) and set(prediction) == {"source", "target"}):
        fail("the prediction should be a dict with the keys 'source' and 'target'", actual=prediction,
             hint="each value 'up' or 'down': the change of that task's loss")
    bad = [k for k, want in (("source", "down"), ("target", "up")) if prediction[k] != want]
    if bad:
        fail(f"the predicted direction for {bad} does not match the chapter's measurement", actual=prediction,
             hint="the intruders carry much of what the adapter learned, and much of what it broke")
    passed("mitigation prediction")
