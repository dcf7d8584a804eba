"""The claims ledger: one call for every claim check, one JSON line per check.

Every claim-check cell of every lesson calls :func:`claim`. It compares what the
experiment measured with what the theory predicts, prints both, raises an
``AssertionError`` naming the claim when the check fails, and appends a record to
the ledger file named by ``LRKIT_LEDGER`` (JSON lines; nothing is written when the
variable is unset, as on Colab). The book's claims page is generated from that
ledger (``python -m lrkit.claims page``), so nobody types a measured number by hand.

Kinds of check (``kind``) and their margin, the distance inside the tolerance
(1 = exactly as predicted, 0 = at the edge, negative = failed):

=============  ==========================================  ===============================
kind           passes when                                 margin
=============  ==========================================  ===============================
``"abs"``      ``|m - p| <= tol``                          ``1 - |m - p| / tol``
``"rel"``      ``|m - p| <= tol * |p|``                    ``1 - |m - p| / (tol |p|)``
``"interval"`` ``lo <= m <= hi`` (``interval=(lo, hi)``)   ``1 - |m - mid| / half-width``
``"ge"``       ``m >= p``                                  ``min(1, (m - p) / scale)``
``"le"``       ``m <= p``                                  ``min(1, (p - m) / scale)``
``"equal"``    ``m == p`` exactly (numbers or arrays)      ``1`` or ``-1``
=============  ==========================================  ===============================

For ``"ge"``/``"le"`` the ``scale`` is ``tol`` when given (the distance from the bound
that counts as a comfortable pass), else ``|p|`` (else 1). Array measurements are
checked elementwise and the record keeps the smallest margin.

A claim that is shown but deliberately not asserted is recorded with
``status="measured"`` or ``status="not reproduced"`` and a ``reason``; it never
raises. Statuses: ``checked`` (asserted), ``measured``, ``not reproduced``.
"""

from __future__ import annotations

import json
import math
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np

__all__ = ["KINDS", "STATUSES", "ClaimRecord", "claim", "read_ledger", "set_chapter"]

KINDS = ("abs", "rel", "interval", "ge", "le", "equal")
STATUSES = ("checked", "measured", "not reproduced")
FRAGILE = 0.2  # a passing claim with a smaller margin is marked fragile on the claims page

_context: dict[str, Any] = {"chapter": None}


def set_chapter(chapter: int | str) -> None:
    """Name the chapter whose claims the following :func:`claim` calls record (once per lesson)."""
    _context["chapter"] = chapter


@dataclass
class ClaimRecord:
    """One line of the ledger."""

    label: str
    chapter: int | str | None
    statement: str
    measured: Any
    predicted: Any
    tolerance: Any
    kind: str
    status: str
    passed: bool | None
    margin: float | None
    source: str = ""
    reason: str = ""
    exercises: list[str] = field(default_factory=list)
    scale: str = ""
    seed: int | None = None
    device: str = ""
    version: str = ""
    time: float = 0.0

    def line(self) -> str:
        """The one-line summary :func:`claim` prints."""
        tol = "" if self.tolerance is None else f" (tolerance {_fmt(self.tolerance)}, {self.kind})"
        verdict = {True: "PASS", False: "FAIL", None: self.status.upper()}[self.passed]
        margin = "" if self.margin is None else f", margin {self.margin:.2f}"
        return (f"[{verdict}] {self.label}: measured {_fmt(self.measured)} against predicted "
                f"{_fmt(self.predicted)}{tol}{margin}")


def _fmt(x: Any) -> str:
    if isinstance(x, float):
        return f"{x:.4g}"
    if isinstance(x, (list, tuple)):
        return "[" + ", ".join(_fmt(v) for v in x) + "]"
    return str(x)


def _plain(x: Any) -> Any:
    """A JSON-ready copy: tensors and arrays become (lists of) floats, non-finite floats strings."""
    if hasattr(x, "detach"):
        x = x.detach().cpu().numpy()
    if isinstance(x, np.ndarray):
        return [_plain(v) for v in x.tolist()] if x.ndim else _plain(x.item())
    if isinstance(x, (np.generic,)):
        return _plain(x.item())
    if isinstance(x, (list, tuple)):
        return [_plain(v) for v in x]
    if isinstance(x, float) and not math.isfinite(x):
        return str(x)
    return x


def _array(x: Any, name: str, label: str) -> np.ndarray:
    if hasattr(x, "detach"):
        x = x.detach().cpu().numpy()
    try:
        arr = np.asarray(x, dtype=float)
    except (TypeError, ValueError) as err:
        raise TypeError(f"claim {label!r}: {name} must be a number or an array of numbers, got {x!r}") from err
    return arr


def _margin(kind: str, m: np.ndarray, p: np.ndarray | None, tol: float | None,
            interval: tuple[float, float] | None) -> np.ndarray:
    if kind == "abs":
        return 1.0 - np.abs(m - p) / tol
    if kind == "rel":
        return 1.0 - np.abs(m - p) / (tol * np.abs(p))
    if kind == "interval":
        lo, hi = interval  # type: ignore[misc]
        return 1.0 - np.abs(m - (lo + hi) / 2) / ((hi - lo) / 2)
    scale = tol if tol is not None else np.where(np.abs(p) > 0, np.abs(p), 1.0)
    gap = (m - p) if kind == "ge" else (p - m)
    return np.minimum(1.0, gap / scale)


def _validate(label: str, kind: str, status: str, predicted: Any, tol: float | None,
              interval: Sequence[float] | None) -> None:
    if not isinstance(label, str) or not label:
        raise ValueError(f"label must be the proposition's label (a non-empty string), got {label!r}")
    if kind not in KINDS:
        raise ValueError(f"claim {label!r}: kind must be one of {KINDS}, got {kind!r}")
    if status not in STATUSES:
        raise ValueError(f"claim {label!r}: status must be one of {STATUSES}, got {status!r}")
    if status != "checked":
        return
    if kind in ("abs", "rel") and (tol is None or not (tol > 0) or not math.isfinite(tol)):
        raise ValueError(f"claim {label!r}: kind {kind!r} needs a finite tol > 0, got {tol!r}")
    if kind in ("ge", "le") and tol is not None and not (tol > 0 and math.isfinite(tol)):
        raise ValueError(f"claim {label!r}: tol (the margin's scale) must be finite and > 0, got {tol!r}")
    if kind == "interval":
        if interval is None or len(interval) != 2 or not interval[0] < interval[1]:
            raise ValueError(f"claim {label!r}: kind 'interval' needs interval=(lo, hi) with lo < hi, "
                             f"got {interval!r}")
    elif predicted is None and status == "checked":
        raise ValueError(f"claim {label!r}: kind {kind!r} needs a predicted value")


def claim(label: str, measured: Any, predicted: Any = None, *, statement: str, kind: str = "abs",
          tol: float | None = None, interval: Sequence[float] | None = None, status: str = "checked",
          reason: str = "", source: str = "", exercises: Sequence[str] = (), chapter: int | str | None = None,
          seed: int | None = None, quiet: bool = False) -> ClaimRecord:
    """Check one claim, print measured against predicted, record it in the ledger, and return the record.

    ``label`` is the proposition's label (``"prop-rslora"``); ``statement`` a short sentence of
    what is claimed; ``measured`` and ``predicted`` numbers or arrays of the same shape (or
    anything comparable with ``==`` for ``kind="equal"``). See the module docstring for the kinds
    and the margin. ``status="measured"`` or ``"not reproduced"`` records without asserting (give
    a ``reason``). ``seed`` defaults to ``LRKIT_SEED``; ``chapter`` to :func:`set_chapter`'s.

    Raises ``AssertionError`` naming the claim when a checked claim fails.
    """
    _validate(label, kind, status, predicted, tol, interval)
    passed: bool | None
    margin: float | None
    if status != "checked":
        passed, margin = None, None
    elif kind == "equal":
        try:
            passed = bool(np.array_equal(np.asarray(measured), np.asarray(predicted)))
        except Exception:  # noqa: BLE001 - objects numpy cannot compare
            passed = bool(measured == predicted)
        margin = 1.0 if passed else -1.0
    else:
        m = _array(measured, "measured", label)
        p = None if kind == "interval" else _array(predicted, "predicted", label)
        iv = None if interval is None else (float(interval[0]), float(interval[1]))
        if not np.all(np.isfinite(m)):
            passed, margin = False, -math.inf
        else:
            margins = _margin(kind, m, p, tol, iv)
            margin = float(np.min(margins))
            passed = bool(margin >= 0)
    from .env import get_device, get_scale, get_seed  # late: env imports torch

    record = ClaimRecord(
        label=label, chapter=chapter if chapter is not None else _context["chapter"], statement=statement,
        measured=_plain(measured), predicted=_plain(interval if kind == "interval" else predicted),
        tolerance=tol, kind=kind, status=status, passed=passed,
        margin=None if margin is None else (margin if math.isfinite(margin) else -1e9),
        source=source, reason=reason, exercises=list(exercises), scale=get_scale(),
        seed=get_seed() if seed is None else seed, device=str(get_device()), version=_version(), time=time.time())
    if not quiet:
        print(record.line() + (f"  ({reason})" if reason and passed is None else ""))
    _append(record)
    if passed is False:
        raise AssertionError(f"Claim {label!r} failed: {statement} -- {record.line()}")
    return record


def _version() -> str:
    from . import __version__

    return __version__


def _append(record: ClaimRecord) -> None:
    path = os.environ.get("LRKIT_LEDGER", "").strip()
    if not path:
        return
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    with p.open("a", encoding="utf-8") as fh:
        fh.write(json.dumps(asdict(record), allow_nan=False) + "\n")


def read_ledger(path: str | os.PathLike[str]) -> list[ClaimRecord]:
    """Every record of a ledger file, in the order written (later records of a label win on the page)."""
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"no ledger at {p} (set LRKIT_LEDGER and execute the lessons first)")
    records = []
    for n, line in enumerate(p.read_text(encoding="utf-8").splitlines(), 1):
        if line.strip():
            try:
                records.append(ClaimRecord(**json.loads(line)))
            except (json.JSONDecodeError, TypeError) as err:
                raise ValueError(f"{p}:{n}: not a ledger record ({err})") from err
    return records
