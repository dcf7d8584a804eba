"""Checks for Chapter 5's exercises (Init[A] or Init[B]).

Expected values come from :mod:`lrkit.init`, :mod:`lrkit.sweep` and :mod:`lrkit.lr_scaling`.

* :func:`check_init_pair`: ``fn(rank, in_features, out_features, init) -> (A, B)``, Init[A] or Init[B];
* :func:`check_largest_stable_lr`: ``fn(lrs, diverged) -> eta_max``, read off a sweep
  (:func:`lrkit.sweep.largest_stable_lr`);
* :func:`check_fit_exponent`: ``fn(widths, values) -> p``, the least-squares power law
  ``value ~ c n^p`` (the exponent of :func:`lrkit.sweep.fit_exponent`);
* :func:`check_predicted_exponents`: ``fn() -> {"A": p_A, "B": p_B}``, the stability exponents
  predicted by the scaling argument of Chapter 5 (Proposition ``prop-init-stable-lr``);
* :func:`check_delta_terms`: ``fn(Z, A, B, A_next, B_next) -> (delta1, delta2, delta3)``, the rms
  of the three output terms of one step (:func:`lrkit.lr_scaling.step_terms`);
* :func:`check_predicted_term_exponents`: ``fn() -> {...}``, their predicted width exponents.

The last two live in :mod:`lrkit.checks.lora_init_terms` and are re-exported here.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
import torch

from ..init import init_lora_
from ..lr_scaling import largest_stable_lr
from ..sweep import fit_exponent
from .core import as_number, call, check_shape, fail, passed, to_scalar
from .lora_init_terms import PREDICTED_TERM_EXPONENTS, check_delta_terms, check_predicted_term_exponents

__all__ = ["check_init_pair", "check_largest_stable_lr", "check_fit_exponent", "check_predicted_exponents",
           "check_delta_terms", "check_predicted_term_exponents", "PREDICTED_TERM_EXPONENTS"]

# The exponents of Proposition prop-init-stable-lr (lessons/05_lora_init.ipynb): eta_max ~ n^p.
PREDICTED_EXPONENTS: dict[str, float] = {"A": -0.5, "B": -1.0}


def _float_variant(actual: Any, variants: Mapping[str, float], rtol: float = 1e-6) -> str | None:
    """The hint of the first known mistake whose (float) result ``actual`` reproduces, if any."""
    if isinstance(actual, bool) or not isinstance(actual, (int, float)):
        return None
    for hint, value in variants.items():
        if (math.isnan(value) and math.isnan(actual)) or math.isclose(actual, value, rel_tol=rtol, abs_tol=1e-12):
            return hint
    return None


def _check_float(actual: Any, expected: float, name: str, hint: str, case: Mapping[str, Any],
                 rtol: float = 1e-6) -> None:
    """``actual`` must be a finite-or-NaN number equal to ``expected`` (NaN equals NaN here)."""
    actual = as_number(actual, name, case=case, hint=hint)
    if math.isnan(expected) or math.isnan(actual):
        if not (math.isnan(expected) and math.isnan(actual)):
            fail(f"{name} is wrong", case=case, expected=float(expected), actual=float(actual), hint=hint)
        return
    if not math.isclose(actual, expected, rel_tol=rtol, abs_tol=1e-12):
        fail(f"{name} is wrong", case=case, expected=float(expected), actual=float(actual), hint=hint)


# --------------------------------------------------------------------------- Init[A] and Init[B]


def check_init_pair(fn: Callable[..., Any], seed: int = 0) -> None:
    """``fn(rank, in_features, out_features, init)`` must return ``(A, B)`` as :func:`lrkit.init.init_lora_` draws them.

    ``A`` (r, in), ``B`` (out, r). ``init="A"``: ``A ~ U(-1/sqrt(in), 1/sqrt(in))`` (Kaiming-uniform,
    ``a = sqrt 5``), ``B = 0``. ``init="B"``: ``A = 0``, ``B ~ U(-1/sqrt(r), 1/sqrt(r))`` (the same
    Kaiming-uniform on B's own shape, whose fan-in is ``r``). Both give ``B A = 0``: the adapted
    layer starts at the pretrained one. The random factor is checked by its range and spread.
    """
    gen = torch.Generator().manual_seed(seed)
    sizes = [(2, 7, 5), (4, 384, 512), (8, 1000, 300), (int(torch.randint(2, 9, (1,), generator=gen)), 600, 700)]
    name = "init_pair"
    for rank, in_f, out_f in sizes:
        for init in ("A", "B"):
            A_ref, B_ref = torch.empty(rank, in_f), torch.empty(out_f, rank)
            init_lora_(A_ref, B_ref, torch.empty(0), 1.0, init)
            case = {"rank": rank, "in_features": in_f, "out_features": out_f, "init": init}
            out = call(fn, case, name, "A has shape (rank, in_features) and B (out_features, rank)")
            if not (isinstance(out, tuple) and len(out) == 2):
                fail(f"{name} should return a pair (A, B)", case=case, actual=out)
            A, B = out
            shapes = f"A is (r, in) = {tuple(A_ref.shape)}, B is (out, r) = {tuple(B_ref.shape)}"
            check_shape(A, A_ref.shape, "A", shapes, case)
            check_shape(B, B_ref.shape, "B", shapes, case)
            A, B = A.detach(), B.detach()
            zero_name, zero, rand_name, rand = ("B", B, "A", A) if init == "A" else ("A", A, "B", B)
            fan_in = in_f if init == "A" else rank
            bound = 1.0 / math.sqrt(fan_in)
            if not bool((zero == 0).all()):
                hint = (f"Init[{init}] is named after the factor that is drawn at random: {rand_name}; the other "
                        f"one, {zero_name}, starts at exactly zero so that B A = 0")
                if bool((rand == 0).all()):
                    hint = "you swapped the two schemes: " + hint
                fail(f"with init={init!r}, {zero_name} should be exactly zero", case=case, actual=zero, hint=hint)
            if bool((rand == 0).all()):
                fail(f"with init={init!r}, {rand_name} should be random, but it is zero", case=case,
                     detail="with A = 0 and B = 0 both gradients vanish (dL/dA = B^T ..., dL/dB = ... A^T): "
                            "the adapter would never train",
                     hint=f"draw {rand_name} with nn.init.kaiming_uniform_({rand_name}, a=math.sqrt(5))")
            largest = rand.abs().max().item()
            std_expected = bound / math.sqrt(3)
            if largest > bound * (1 + 1e-5):
                fail(f"{rand_name} should lie in (-1/sqrt(fan_in), 1/sqrt(fan_in)) = (-{bound:.4g}, {bound:.4g})",
                     case=case, actual=rand, detail=f"your largest |{rand_name}| entry is {largest:.4g}",
                     hint=f"nn.init.kaiming_uniform_({rand_name}, a=math.sqrt(5)) draws U(-1/sqrt(fan_in), "
                          f"1/sqrt(fan_in)) with fan_in = {rand_name}.shape[1] = {fan_in}")
            if rand.numel() >= 1000 and abs(rand.std().item() - std_expected) > 0.1 * std_expected:
                fail(f"{rand_name}'s entries do not look uniform on (-{bound:.4g}, {bound:.4g})", case=case,
                     detail=f"std of {rand_name}: yours {rand.std().item():.4g}, expected about {std_expected:.4g} "
                            f"(= bound / sqrt(3))",
                     hint=f"the bound is 1/sqrt(fan_in) with fan_in = {rand_name}.shape[1] = {fan_in} "
                          f"(for B that is the rank r, not out_features); kaiming_uniform_ gets it right")
    case = {"rank": 2, "in_features": 4, "out_features": 3, "init": "C"}
    try:
        out = fn(**case)
    except NotImplementedError:
        raise
    except ValueError:
        pass
    except Exception as e:  # the learner's code failed in another way
        fail(f"{name} raised {type(e).__name__}: {e}", case=case,
             hint="an unknown init is a bad input: raise ValueError naming the allowed values 'A' and 'B'")
    else:
        fail(f"{name} accepted an unknown init", case=case, actual=out,
             hint="raise ValueError(f\"init must be 'A' or 'B', got {init!r}\") for any other value")
    passed(name)


# --------------------------------------------------------------------------- reading a sweep


def _stable_cases(gen: torch.Generator) -> list[dict[str, Any]]:
    lrs = [2.0 ** k for k in range(-6, 0)]
    F, T = False, True
    cases = [
        {"lrs": lrs, "diverged": np.array([[F], [F], [F], [T], [T], [T]])},                       # one seed
        {"lrs": lrs, "diverged": np.array([[F], [F], [T], [F], [T], [T]])},                       # a lucky stable rate
        {"lrs": lrs, "diverged": np.array([[F, F], [F, F], [F, T], [F, F], [T, T], [T, T]])},   # one seed fails early
        {"lrs": lrs, "diverged": np.zeros((6, 3), dtype=bool)},                                   # never diverges
        {"lrs": lrs, "diverged": np.array([[T, F], [T, T], [T, T], [T, T], [T, T], [T, T]])},   # even the smallest
    ]
    L, S = 9, 3  # a random staircase: seed s diverges from its own edge upward, with one lucky rate
    edges = torch.randint(2, L, (S,), generator=gen).tolist()
    d = np.array([[i >= e for e in edges] for i in range(L)])
    lucky = min(edges) + 1
    if lucky < L:
        d[lucky] = False
    cases.append({"lrs": [0.001 * 3 ** i for i in range(L)], "diverged": d})
    return cases


def check_largest_stable_lr(fn: Callable[..., Any], seed: int = 0) -> None:
    """``fn(lrs, diverged)``: the largest grid rate at which, and at every smaller one, no seed diverged.

    ``lrs`` (L,) increasing, ``diverged`` (L, S) booleans (row ``i``: the S seeds at ``lrs[i]``);
    NaN when even the smallest rate diverges. Expected: :func:`lrkit.sweep.largest_stable_lr`.
    """
    gen = torch.Generator().manual_seed(seed)
    name = "largest_stable"
    for case in _stable_cases(gen):
        lrs, d = np.asarray(case["lrs"]), case["diverged"]
        expected = largest_stable_lr(lrs, d)
        actual = to_scalar(call(fn, case, name, "diverged[i, s] says whether seed s diverged at lrs[i]"))
        all_seeds = ~d.all(axis=1)
        stable_any = ~d.any(axis=1)
        variants = {
            "a rate is stable only if *every* seed is stable there: use diverged.any(axis=1) to mark it unstable, "
            "not diverged.all(axis=1)": largest_stable_lr(lrs, ~all_seeds),
            "a stable rate above the first unstable one is luck, not stability: stop at the first rate where "
            "some seed diverged and return the rate just below it":
                float(lrs[stable_any].max()) if stable_any.any() else float("nan"),
            "off by one: return the last stable rate, the one *before* the first rate that diverged":
                float(lrs[np.flatnonzero(~stable_any)[0]]) if (~stable_any).any() else float("nan"),
        }
        variants = {h: v for h, v in variants.items()
                    if not (v == expected or (math.isnan(v) and math.isnan(expected)))}
        if math.isnan(expected):
            variants = {"when even the smallest rate diverges there is no stable rate: return float('nan')":
                        float(lrs[0])} | variants
        hint = _float_variant(actual, variants) or (
            "walk up the grid from the smallest rate and stop before the first rate where any seed diverged")
        _check_float(actual, expected, f"{name}(...)", hint, case)
    passed(name)


# --------------------------------------------------------------------------- fitting an exponent


def _fit_cases(gen: torch.Generator) -> list[dict[str, Any]]:
    noise = torch.randn(5, generator=gen, dtype=torch.float64).numpy()
    widths = [64, 128, 256, 512, 1024]
    return [
        {"widths": [64, 256, 1024], "values": [0.25, 0.125, 0.0625]},                                   # exact n^-1/2
        {"widths": widths, "values": [0.125, 0.0625, 0.0625, 0.03125, 0.015625]},                       # a grid table
        {"widths": [100, 300, 2000, 5000], "values": [2e-2, 4e-3, 8e-4, 3e-4]},                         # uneven widths
        {"widths": widths, "values": (3.0 * np.array(widths, dtype=float) ** -0.8 * np.exp(0.3 * noise)).tolist()},
    ]


def check_fit_exponent(fn: Callable[..., Any], seed: int = 0) -> None:
    """``fn(widths, values)``: the slope ``p`` of the least-squares line ``log value = log c + p log width``.

    Expected: ``lrkit.sweep.fit_exponent(widths, values).exponent``.
    """
    gen = torch.Generator().manual_seed(seed)
    name = "stability_exponent"
    for case in _fit_cases(gen):
        w, v = np.log(np.asarray(case["widths"], float)), np.asarray(case["values"], float)
        expected = fit_exponent(case["widths"], case["values"]).exponent
        actual = to_scalar(call(fn, case, name, "np.polyfit(x, y, 1) returns (slope, intercept)"))
        variants = {
            "fit log(value), not the value itself: a power law v = c n^p is a straight line only in log-log "
            "coordinates": float(np.polyfit(w, v, 1)[0]),
            "x and y are swapped: regress log(value) on log(width), not the other way round":
                float(np.polyfit(np.log(v), w, 1)[0]),
            "take the log of the widths too: a power law is a line in log-log coordinates":
                float(np.polyfit(np.asarray(case["widths"], float), np.log(v), 1)[0]),
            "the slope of the first and last points ignores the others: fit all of them by least squares":
                float((np.log(v[-1]) - np.log(v[0])) / (w[-1] - w[0])),
        }
        variants = {h: x for h, x in variants.items() if not math.isclose(x, expected, rel_tol=1e-6)}
        hint = _float_variant(actual, variants) or "p = slope of np.polyfit(np.log(widths), np.log(values), 1)"
        _check_float(actual, expected, f"{name}(...)", hint, case)
    passed(name)


def check_predicted_exponents(fn: Callable[..., Any], seed: int = 0) -> None:
    """``fn()`` must return ``{"A": p_A, "B": p_B}``, the predicted exponents of ``eta_max ~ n^p`` under Adam.

    ``seed`` is unused (every check takes one).
    """
    name = "predicted_exponents"
    out = call(fn, {}, name, "return a dict such as {'A': ..., 'B': ...}")
    if not (isinstance(out, Mapping) and set(out) == {"A", "B"}):
        fail(f"{name}() should return a dict with the keys 'A' and 'B'", actual=out,
             hint="one exponent per initialisation: {'A': p_A, 'B': p_B}")
    hints = {
        "A": "with Init[A] the dangerous term is Delta B Delta A z ~ (t eta)^2 n r: it must stay of order 1",
        "B": "with Init[B] already the first-order term B_0 Delta A z ~ t eta n r must stay of order 1",
    }
    got = {k: to_scalar(out[k]) for k in ("A", "B")}
    if got == {"A": PREDICTED_EXPONENTS["B"], "B": PREDICTED_EXPONENTS["A"]}:
        fail(f"{name}(): the two exponents are swapped", actual=out,
             hint="Init[A] tolerates the *larger* rates: its exponent is the less negative one")
    for key in ("A", "B"):
        value = got[key]
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isclose(
                value, PREDICTED_EXPONENTS[key], abs_tol=1e-9):
            sign = " (a stable rate *decreases* with width: the exponent is negative)" \
                if isinstance(value, (int, float)) and value > 0 else ""
            fail(f"{name}()[{key!r}] is not what the scaling argument predicts{sign}", actual=value,
                 hint=hints[key] + "; solve that for eta as a power of n")
    passed(name)
