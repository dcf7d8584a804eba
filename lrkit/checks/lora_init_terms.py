"""Checks for Chapter 5's exercises on the three terms of one step; re-exported by :mod:`lrkit.checks.lora_init`.

* :func:`check_delta_terms`: ``fn(Z, A, B, A_next, B_next) -> (delta1, delta2, delta3)``, the rms
  of the three output terms of one step (:func:`lrkit.lr_scaling.step_terms`);
* :func:`check_predicted_term_exponents`: ``fn() -> {...}``, their predicted width exponents.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Any

import torch

from ..lr_scaling import step_terms
from .core import as_number, call, fail, known_mistake, passed, to_scalar

__all__ = ["PREDICTED_TERM_EXPONENTS", "check_delta_terms", "check_predicted_term_exponents"]

# --------------------------------------------------------------------------- the three terms of a step


def _terms_cases(gen: torch.Generator) -> list[dict[str, Any]]:
    cases = []
    for r, n, N, zero_B in ((2, 6, 3, False), (4, 40, 8, True), (3, 25, 5, False)):
        A = torch.randn(r, n, generator=gen) / math.sqrt(n)
        B = torch.zeros(n, r) if zero_B else torch.randn(n, r, generator=gen)
        cases.append({"Z": torch.randn(N, n, generator=gen), "A": A, "B": B,
                      "A_next": A + 0.1 * torch.randn(r, n, generator=gen),
                      "B_next": B + 0.1 * torch.randn(n, r, generator=gen)})
    return cases


def check_delta_terms(fn: Callable[..., Any], seed: int = 0) -> None:
    """``fn(Z, A, B, A_next, B_next)`` -> ``(delta1, delta2, delta3)``: rms of the three terms.

    ``Z`` (N, n) samples, ``A`` (r, n), ``B`` (n, r). With ``dA = A_next - A``, ``dB = B_next - B``:
    ``delta1 = B dA z``, ``delta2 = dB A z``, ``delta3 = dB dA z``, each as the root mean square
    over the ``n`` outputs and the ``N`` samples. Expected: :func:`lrkit.lr_scaling.step_terms`.
    """
    gen = torch.Generator().manual_seed(seed)
    name = "delta_terms"
    for case in _terms_cases(gen):
        Z, A, B, A2, B2 = (case[k] for k in ("Z", "A", "B", "A_next", "B_next"))
        ref = step_terms(Z, A[None], B[None], A2[None], B2[None])
        expected = tuple(float(ref[k][0]) for k in ("delta1", "delta2", "delta3"))
        out = call(fn, case, name, "return three numbers (delta1, delta2, delta3)")
        if not (isinstance(out, (tuple, list)) and len(out) == 3):
            fail(f"{name} should return three numbers (delta1, delta2, delta3)", case=case,
                 actual=out)
        got = tuple(as_number(to_scalar(v), f"{name}(...)[{i}]", case=case)
                    for i, v in enumerate(out))
        Zt, dA, dB = Z.T.double(), (A2 - A).double(), (B2 - B).double()

        def rms(x: torch.Tensor) -> float:
            return float(x.square().mean().sqrt())

        mistakes = {
            "delta2 applies dB to the feature *before* the step, A z, not A_next z":
                (expected[0], rms(dB @ A2.double() @ Zt), expected[2]),
            "delta1 reads dA through the B *before* the step, not B_next":
                (rms(B2.double() @ dA @ Zt), expected[1], expected[2]),
            "take the root *mean* square over outputs and samples, not the Frobenius norm":
                tuple(v * math.sqrt(Z.shape[0] * Z.shape[1]) for v in expected),
        }
        hint = known_mistake(got, mistakes, rtol=1e-6, atol=1e-12) or (
            "delta1 = B (dA z), delta2 = dB (A z), delta3 = dB (dA z), with the factors before "
            "the step and dA = A_next - A, dB = B_next - B")
        for i, (g, e) in enumerate(zip(got, expected)):
            if not math.isclose(g, e, rel_tol=1e-5, abs_tol=1e-9):
                fail(f"{name}(...): delta{i + 1} is wrong", case=case, expected=e, actual=g,
                     hint=hint)
    passed(name)


# Chapter 5's table, row Init[A] at eta ~ n^(-1/2): exponents of delta1, delta2, delta3, Z_A
PREDICTED_TERM_EXPONENTS: dict[str, float] = {"delta1": 0.0, "delta2": 0.0, "delta3": 0.0,
                                              "Z_A": 0.5}


def check_predicted_term_exponents(fn: Callable[..., Any], seed: int = 0) -> None:
    """``fn()`` -> ``{"delta1": p1, "delta2": p2, "delta3": p3, "Z_A": q}`` for Init[A] at
    ``eta ~ n^(-1/2)`` (Chapter 5's table). ``seed`` is unused (every check takes one)."""
    name = "predicted_term_exponents"
    out = call(fn, {}, name, "return a dict with the keys delta1, delta2, delta3, Z_A")
    keys = set(PREDICTED_TERM_EXPONENTS)
    if not (isinstance(out, Mapping) and set(out) == keys):
        fail(f"{name}() should return a dict with the keys {sorted(keys)}", actual=out)
    for key, want in PREDICTED_TERM_EXPONENTS.items():
        got = as_number(to_scalar(out[key]), f"{name}()[{key!r}]")
        if math.isclose(got, want, abs_tol=1e-9):
            continue
        if key == "Z_A":
            hint = ("Z_A = A_0 z + (sum of the updates) z; each update moves A z by about "
                    "eta n (coherent Adam steps): what is that at eta ~ n^(-1/2)?")
        elif key == "delta2" and math.isclose(got, -0.5, abs_tol=1e-9):
            hint = ("dB ~ eta, but it multiplies the *current* feature A z, which has grown "
                    "with the width, not A_0 z")
        else:
            hint = ("B ~ t eta and dB ~ eta per entry, dA z ~ eta n: multiply the sizes at "
                    "eta ~ n^(-1/2)")
        fail(f"{name}()[{key!r}] is not what the table predicts", actual=got, hint=hint)
    passed(name)
