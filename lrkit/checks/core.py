"""The check framework every chapter's checks share: compare a learner's function with lrkit's.

One pattern (:func:`check_function`): run the learner's ``fn(**case)`` and lrkit's reference on
each case; when they disagree, say on which input, what was expected and what came back, and,
if the answer reproduces a *named mistake* (another function of the case), name it as the hint.
Every failure raises :class:`CheckFailed` (an ``AssertionError``) with a message written for the
learner; a stub's ``NotImplementedError`` passes through untouched.

Checks never touch the learner's global random stream: :func:`call` runs the learner's code, and
:func:`private_rng` any reference that draws, inside ``torch.random.fork_rng``.
"""

from __future__ import annotations

import contextlib
import copy
import math
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any, NoReturn

import numpy as np
import torch
from torch import nn

Case = Mapping[str, Any]
Mistakes = Mapping[str, Callable[..., Any]]

__all__ = ["Case", "CheckFailed", "describe", "fail", "passed", "check_shape", "to_scalar", "as_number",
           "check_close", "check_equal", "call", "known_mistake", "matches_variant", "check_function",
           "private_rng"]


class CheckFailed(AssertionError):
    """A check failed; the message is written for the learner (what, input, expected, actual, hint)."""


@contextlib.contextmanager
def private_rng(seed: int | None = None) -> Iterator[None]:
    """Run a block on a forked copy of torch's CPU random stream (seeded if ``seed`` is given; no GPU
    stream is seeded or changed)."""
    with torch.random.fork_rng(devices=[]):
        if seed is not None:
            torch.default_generator.manual_seed(seed)
        yield


def describe(value: Any, max_items: int = 6) -> str:
    """A short description of ``value``: tensors show shape, dtype and a few entries."""
    if isinstance(value, nn.Module):
        text = repr(value)
        if "\n" not in text and len(text) <= 120:
            return text + ("" if value.training else " in eval mode")
        return f"{type(value).__name__} module ({sum(p.numel() for p in value.parameters())} parameters)"
    if isinstance(value, torch.Tensor):
        t = value.detach()
        head = f"tensor of shape {tuple(t.shape)}, dtype {str(t.dtype).replace('torch.', '')}"
        if t.numel() == 0:
            return head
        flat = t.flatten()[:max_items].tolist()
        more = ", ..." if t.numel() > max_items else ""
        return f"{head}: [{', '.join(_fmt(v) for v in flat)}{more}]"
    if isinstance(value, float):
        return _fmt(value)
    text = repr(value)
    return text if len(text) <= 120 else text[:117] + "..."


def _fmt(v: Any) -> str:
    return f"{v:.6g}" if isinstance(v, float) else repr(v)


def fail(what: str, *, case: Case | None = None, expected: Any = None, actual: Any = None,
         hint: str | None = None, detail: str | None = None) -> NoReturn:
    """Raise :class:`CheckFailed` with a multi-line message; ``None`` parts are left out."""
    lines = [f"✗ {what}"]
    if case:
        lines += ["  on the input:", "\n".join(f"      {k} = {describe(v)}" for k, v in case.items())]
    if expected is not None:
        lines.append(f"  expected: {describe(expected)}")
    if actual is not None:
        lines.append(f"  actual:   {describe(actual)}")
    if detail:
        lines.append(f"  {detail}")
    if hint:
        lines.append(f"  hint: {hint}")
    raise CheckFailed("\n".join(lines))


def passed(name: str) -> None:
    """Tell the learner a check passed."""
    print(f"✓ {name}: all checks passed")


def check_shape(actual: Any, expected_shape: Sequence[int], name: str = "result", hint: str | None = None,
                case: Case | None = None) -> None:
    """``actual`` must be a tensor of shape ``expected_shape``."""
    if not isinstance(actual, torch.Tensor):
        fail(f"{name} should be a torch.Tensor, got {type(actual).__name__}", case=case, actual=actual, hint=hint)
    if tuple(actual.shape) != tuple(expected_shape):
        fail(f"{name} has the wrong shape: expected {tuple(expected_shape)}, got {tuple(actual.shape)}",
             case=case, hint=hint)


def to_scalar(value: Any) -> Any:
    """A 1-element tensor or a NumPy scalar as a Python number; anything else unchanged."""
    if isinstance(value, torch.Tensor) and value.numel() == 1:
        return value.item()
    if isinstance(value, np.generic) and np.ndim(value) == 0:
        return value.item()
    return value


def as_number(value: Any, name: str, *, case: Case | None = None, hint: str | None = None,
              finite: bool = False) -> float:
    """``value`` as a float (1-element tensors and NumPy scalars count), or a failure that says what came back."""
    value = to_scalar(value)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        fail(f"{name} should be a number, got {type(value).__name__}", case=case, actual=value, hint=hint)
    if finite and not math.isfinite(value):
        fail(f"{name} should be a finite number, got {value}", case=case, actual=value, hint=hint)
    return float(value)


def check_close(actual: Any, expected: torch.Tensor | float, name: str = "result", hint: str | None = None, *,
                case: Case | None = None, rtol: float = 1e-5, atol: float = 1e-6) -> None:
    """``actual`` must equal ``expected`` (a tensor or a number) to ``rtol``/``atol``."""
    if not isinstance(expected, torch.Tensor):
        actual = as_number(actual, name, case=case, hint=hint)
        if not math.isclose(actual, expected, rel_tol=rtol, abs_tol=atol):
            fail(f"{name} is wrong", case=case, expected=float(expected), actual=float(actual), hint=hint)
        return
    check_shape(actual, expected.shape, name, hint, case)
    a, e = actual.detach().to(torch.float64), expected.detach().to(torch.float64)
    if not torch.isfinite(a).all():
        fail(f"{name} contains NaN or inf", case=case, actual=actual, hint=hint)
    err = (a - e).abs()
    if bool((err > atol + rtol * e.abs()).any()):
        worst = tuple(int(i) for i in torch.unravel_index(err.argmax(), err.shape))
        fail(f"{name} has the right shape but the wrong values", case=case, expected=expected, actual=actual,
             detail=f"largest difference {err.max().item():.3g} at index {worst}", hint=hint)


def check_equal(actual: Any, expected: Any, name: str = "result", hint: str | None = None,
                case: Case | None = None) -> None:
    """``actual == expected`` for plain values such as integers (NumPy and 1-element tensor ints count)."""
    actual = to_scalar(actual)
    if type(expected) is int and (isinstance(actual, bool) or not isinstance(actual, int)):
        fail(f"{name} should be an int, got {type(actual).__name__}", case=case, actual=actual, hint=hint)
    if actual != expected:
        fail(f"{name} is wrong", case=case, expected=expected, actual=actual, hint=hint)


def call(fn: Callable[..., Any], case: Case, name: str,
         hint: str = "read the shapes in the docstring; check every matrix product's inner dimensions",
         seed: int | None = None) -> Any:
    """The learner's ``fn(**case)`` on a private random stream (seeded if ``seed`` is given).

    ``NotImplementedError`` passes through; any other error becomes a failure that shows the input.
    """
    try:
        with private_rng(seed):
            return fn(**copy.deepcopy(dict(case)))
    except NotImplementedError:
        raise
    except Exception as e:  # the learner's code failed: show on what
        fail(f"{name} raised {type(e).__name__}: {e}", case=case, hint=hint)


def _same(a: Any, b: Any, rtol: float, atol: float) -> bool:
    a, b = to_scalar(a), to_scalar(b)
    if isinstance(a, torch.Tensor) or isinstance(b, torch.Tensor):
        return (isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor) and a.shape == b.shape
                and bool(torch.allclose(a.detach().double(), b.detach().double(), rtol=rtol, atol=atol)))
    if isinstance(a, tuple) and isinstance(b, tuple):
        return len(a) == len(b) and all(_same(x, y, rtol, atol) for x, y in zip(a, b))
    if isinstance(a, bool) or isinstance(b, bool) or not isinstance(a, (int, float)) or not isinstance(b, (int, float)):
        return bool(a == b)
    if math.isnan(a) or math.isnan(b):
        return math.isnan(a) and math.isnan(b)
    return math.isclose(a, b, rel_tol=rtol, abs_tol=atol)


def known_mistake(actual: Any, mistakes: Mapping[str, Any], rtol: float = 1e-5, atol: float = 1e-6) -> str | None:
    """The name (a hint) of the first mistake whose value ``actual`` reproduces, else ``None``.

    ``mistakes`` maps a hint to the value that mistake gives: a tensor, a number or a tuple of them.
    """
    for hint, value in mistakes.items():
        try:
            if _same(actual, value, rtol, atol):
                return hint
        except (TypeError, RuntimeError):
            continue
    return None


def matches_variant(actual: Any, variants: Mapping[str, torch.Tensor]) -> str | None:
    """The hint of the first known mistake (a tensor) that ``actual`` reproduces (``atol = 1e-5``)."""
    if not isinstance(actual, torch.Tensor):
        return None
    return known_mistake(actual, variants, rtol=0.0, atol=1e-5)


def _compare(actual: Any, expected: Any, name: str, hint: str | None, case: Case, exact: bool,
             rtol: float, atol: float) -> None:
    if isinstance(expected, tuple):
        if not (isinstance(actual, tuple) and len(actual) == len(expected)):
            fail(f"{name} should return a tuple of {len(expected)} values", case=case, expected=expected,
                 actual=actual, hint=hint)
        for i, (a, e) in enumerate(zip(actual, expected)):
            _compare(a, e, f"{name}[{i}]", hint, case, exact, rtol, atol)
    elif exact:
        check_equal(actual, expected, name, hint, case)
    else:
        check_close(actual, expected, name, hint, case=case, rtol=rtol, atol=atol)


def check_function(student_fn: Callable[..., Any], reference_fn: Callable[..., Any], cases: Sequence[Case],
                   name: str | None = None, hint: str | None = None, exact: bool = False,
                   rtol: float = 1e-5, atol: float = 1e-6, mistakes: Mistakes | None = None,
                   seed: int | None = None, quiet: bool = False) -> None:
    """``student_fn(**case)`` must agree with ``reference_fn(**case)`` on every case.

    ``mistakes`` maps a hint to a function of the case giving a known wrong answer; a learner's
    answer that reproduces one gets that hint. With ``seed``, learner and reference draw from the
    same seeded private stream (dropout masks, random inits).
    """
    name = name or str(getattr(student_fn, "__name__", "your function"))
    cases = list(cases)
    if not cases:
        raise ValueError("cases must hold at least one input (a dict of keyword arguments): "
                         "a check with no cases would pass anything")
    for case in cases:
        with private_rng(seed):
            expected = reference_fn(**copy.deepcopy(dict(case)))
        actual = call(student_fn, case, name, seed=seed)
        wrong: dict[str, Any] = {}
        for label, fn in (mistakes or {}).items():
            with private_rng(seed):
                value = fn(**copy.deepcopy(dict(case)))
            if not _same(value, expected, rtol, atol):  # a mistake that gives the right answer here names nothing
                wrong[label] = value
        named = known_mistake(actual, wrong, rtol, atol) or hint
        _compare(actual, expected, f"{name}(...)", named, case, exact, rtol, atol)
    if not quiet:
        passed(name)
