"""The claims ledger: one call for every claim check, one JSON line per check.

Every claim-check cell of every lesson calls :func:`claim`. It compares what the
experiment measured with what the theory predicts, prints both, raises an
``AssertionError`` naming the claim when the check fails, and appends a record to
the ledger file named by ``LRKIT_LEDGER`` (JSON lines; nothing is written when the
variable is unset, as on Colab). The book build sets ``LRKIT_LEDGER`` to
``_build/claims/ledger.jsonl`` and generates the claims page from it
(:mod:`lrkit.claims_page`); ``python -m lrkit.claims_runs`` reruns every lesson over
seeds or at full scale. Nobody types a measured number by hand. The record and the
ledger file's reading live in :mod:`lrkit.claims_ledger` (re-exported here).

Kinds of check (``kind``) and their margin, the distance inside the tolerance
(1 = exactly as predicted, 0 = at the edge, negative = failed):

=============  ==========================================  ===============================
kind           passes when                                 margin
=============  ==========================================  ===============================
``"abs"``      ``|m - p| <= tol``                          ``1 - |m - p| / tol``
``"rel"``      ``|m - p| <= tol * |p|``  (``p != 0``)      ``1 - |m - p| / (tol |p|)``
``"interval"`` ``lo <= m <= hi`` (``interval=(lo, hi)``)   ``1 - |m - mid| / half-width``
``"ge"``       ``m >= p``                                  ``min(1, (m - p) / scale)``
``"le"``       ``m <= p``                                  ``min(1, (p - m) / scale)``
``"equal"``    ``m == p`` exactly (numbers or arrays)      ``1`` or ``-1``
=============  ==========================================  ===============================

For ``"ge"``/``"le"`` the ``scale`` is ``tol`` when given (the distance from the bound
that counts as a comfortable pass), else ``|p|`` (else 1). Array measurements are
checked elementwise (``predicted`` broadcasts) and the record keeps the smallest
margin. A margin within 1e-9 of 0 counts as on the edge (round-off in ``m - p``), so
passes. A non-finite measured or predicted value fails (margin ``-inf``).

A claim that is shown but deliberately not asserted is recorded with
``status="measured"`` or ``status="not reproduced"`` and a ``reason``; it never
raises (its margin is still computed when the numbers allow, for information).
``exercises`` names the exercise notebooks (``"exercises/01_lora"``) or exercise
labels that practise the claim; the claims page links them.

Records carry a ``run`` id, renewed by :func:`set_chapter` (once per lesson
execution): a ledger that several builds appended to is read back with
:func:`latest_runs`, which keeps, per chapter, the records of its last execution.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Sequence
from typing import Any

import numpy as np

from .claims_ledger import (
    FRAGILE,
    KINDS,
    PAGE_STATUSES,
    STATUSES,
    ClaimRecord,
    append_record,
    latest_runs,
    read_ledger,
    to_plain,
)

__all__ = ["FRAGILE", "KINDS", "PAGE_STATUSES", "STATUSES", "ClaimRecord", "claim", "latest_runs",
           "read_ledger", "set_chapter"]

_EDGE = 1e-9  # a margin this close to 0 is at the edge (float round-off of m - p), not a failure


def _new_run() -> str:
    return f"{os.getpid()}-{time.time_ns()}"


_context: dict[str, Any] = {"chapter": None, "run": _new_run()}


def set_chapter(chapter: int | str) -> None:
    """Name the chapter whose claims the following :func:`claim` calls record (once per lesson).

    It also starts a new run: the claims page shows, per chapter, the records of the last run.
    """
    if isinstance(chapter, bool) or not isinstance(chapter, (int, str)) or chapter == "":
        raise TypeError(f"chapter must be an int or a non-empty str, got {chapter!r}")
    _context["chapter"] = chapter
    _context["run"] = _new_run()


def _array(x: Any, name: str, label: str) -> np.ndarray:
    if hasattr(x, "detach"):
        x = x.detach().cpu().numpy()
    try:
        return np.asarray(x, dtype=float)
    except (TypeError, ValueError) as err:
        raise TypeError(f"claim {label!r}: {name} must be a number or an array of numbers, "
                        f"got {x!r}") from err


def _margin(kind: str, m: np.ndarray, p: np.ndarray | None, tol: float | None,
            interval: tuple[float, float] | None) -> np.ndarray:
    if kind == "interval":
        lo, hi = interval  # type: ignore[misc]
        return np.asarray(1.0 - np.abs(m - (lo + hi) / 2) / ((hi - lo) / 2))
    assert p is not None  # every other kind compares with a prediction (checked by _validate)
    if kind == "abs":
        return np.asarray(1.0 - np.abs(m - p) / tol)
    if kind == "rel":
        return np.asarray(1.0 - np.abs(m - p) / (tol * np.abs(p)))
    scale = tol if tol is not None else np.where(np.abs(p) > 0, np.abs(p), 1.0)
    gap = (m - p) if kind == "ge" else (p - m)
    return np.asarray(np.minimum(1.0, gap / scale))


def _finite_number(x: Any) -> bool:
    return isinstance(x, (int, float, np.integer, np.floating)) and not isinstance(x, bool) \
        and math.isfinite(float(x))


def _validate(label: Any, kind: str, status: str, predicted: Any, tol: Any,
              interval: Sequence[float] | None, exercises: Any) -> None:
    if not isinstance(label, str) or not label:
        raise ValueError(f"label must be the proposition's label (a non-empty string), got {label!r}")
    if kind not in KINDS:
        raise ValueError(f"claim {label!r}: kind must be one of {KINDS}, got {kind!r}")
    if status not in STATUSES:
        raise ValueError(f"claim {label!r}: status must be one of {STATUSES}, got {status!r} "
                         "('tested by unit tests' and 'planned' belong in book/claims_registry.yml)")
    if isinstance(exercises, str) or not all(isinstance(e, str) and e for e in exercises):
        raise TypeError(f"claim {label!r}: exercises must be a list of non-empty strings, got {exercises!r}")
    if tol is not None and not (_finite_number(tol) and tol > 0):
        raise ValueError(f"claim {label!r}: tol must be a finite number > 0 (or None), got {tol!r}")
    if status != "checked":
        return
    if kind in ("abs", "rel") and tol is None:
        raise ValueError(f"claim {label!r}: kind {kind!r} needs a finite tol > 0, got None")
    if kind == "interval":
        ok = (interval is not None and len(interval) == 2 and all(_finite_number(v) for v in interval)
              and interval[0] < interval[1])
        if not ok:
            raise ValueError(f"claim {label!r}: kind 'interval' needs interval=(lo, hi), finite, with "
                             f"lo < hi, got {interval!r}")
    elif predicted is None:
        raise ValueError(f"claim {label!r}: kind {kind!r} needs a predicted value")


def _evaluate(label: str, kind: str, measured: Any, predicted: Any, tol: float | None,
              interval: Sequence[float] | None) -> tuple[bool, float]:
    """``(passed, margin)`` of a check; raises ValueError/TypeError on inputs that cannot be compared."""
    if kind == "equal":
        try:
            passed = bool(np.array_equal(np.asarray(measured), np.asarray(predicted)))
        except Exception:
            passed = bool(measured == predicted)
        return passed, 1.0 if passed else -1.0
    m = _array(measured, "measured", label)
    p = None if kind == "interval" else _array(predicted, "predicted", label)
    iv = None if interval is None else (float(interval[0]), float(interval[1]))
    if p is not None:
        try:
            np.broadcast_shapes(m.shape, p.shape)
        except ValueError:
            raise ValueError(f"claim {label!r}: measured has shape {m.shape} and predicted {p.shape}; "
                             "they must be equal or broadcast") from None
    if m.size == 0:
        raise ValueError(f"claim {label!r}: measured is empty")
    if not np.all(np.isfinite(m)) or (p is not None and not np.all(np.isfinite(p))):
        return False, -math.inf
    if kind == "rel" and np.any(p == 0):
        raise ValueError(f"claim {label!r}: kind 'rel' needs a non-zero predicted value (use 'abs')")
    margin = float(np.min(_margin(kind, m, p, tol, iv)))
    return margin >= -_EDGE, margin


def claim(label: str, measured: Any, predicted: Any = None, *, statement: str, kind: str = "abs",
          tol: float | None = None, interval: Sequence[float] | None = None, status: str = "checked",
          reason: str = "", source: str = "", exercises: Sequence[str] = (),
          chapter: int | str | None = None, seed: int | None = None, quiet: bool = False) -> ClaimRecord:
    """Check one claim, print measured against predicted, record it in the ledger, and return the record.

    ``label`` is the proposition's label (``"prop-rslora"``); ``statement`` a short sentence of
    what is claimed; ``measured`` and ``predicted`` numbers or arrays of the same shape (or
    anything comparable with ``==`` for ``kind="equal"``). See the module docstring for the kinds
    and the margin. ``status="measured"`` or ``"not reproduced"`` records without asserting (give
    a ``reason``). ``source`` is the bibliography key; ``exercises`` the exercise notebooks that
    practise the claim. ``seed`` defaults to ``LRKIT_SEED``; ``chapter`` to :func:`set_chapter`'s.

    Raises ``AssertionError`` naming the claim when a checked claim fails, ``ValueError`` or
    ``TypeError`` on a bad kind, status, tolerance, interval or shape.
    """
    _validate(label, kind, status, predicted, tol, interval, exercises)
    if not isinstance(statement, str) or not statement.strip():
        raise ValueError(f"claim {label!r}: statement must be a short non-empty sentence")
    passed: bool | None
    margin: float | None
    if status == "checked":
        passed, margin = _evaluate(label, kind, measured, predicted, tol, interval)
    else:
        passed, margin = None, None
        try:  # informative only: how far a shown-but-not-asserted claim is from its tolerance
            if kind == "equal" or tol is not None or (kind == "interval" and interval is not None):
                margin = _evaluate(label, kind, measured, predicted, tol, interval)[1]
        except (TypeError, ValueError):
            margin = None
    from .env import get_device, get_scale, get_seed  # late: env imports torch

    record = ClaimRecord(
        label=label, chapter=chapter if chapter is not None else _context["chapter"], statement=statement,
        measured=to_plain(measured), predicted=to_plain(interval if kind == "interval" else predicted),
        tolerance=None if tol is None else float(tol), kind=kind, status=status, passed=passed,
        margin=margin, source=source, reason=reason, exercises=list(exercises), scale=get_scale(),
        seed=get_seed() if seed is None else seed, device=str(get_device()), version=_version(),
        time=time.time(), run=_context["run"])
    if not quiet:
        print(record.line() + (f"  ({reason})" if reason and passed is None else ""))
    append_record(record)
    if passed is False:
        raise AssertionError(f"Claim {label!r} failed: {statement} -- {record.line()}")
    return record


def _version() -> str:
    from . import __version__

    return __version__


