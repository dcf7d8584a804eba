"""The claims ledger's records: :class:`ClaimRecord`, its JSON line, and reading a ledger back.

:func:`lrkit.claim` (in :mod:`lrkit.claims`) builds one :class:`ClaimRecord` per claim
check and appends it with :func:`append_record` to the file named by ``LRKIT_LEDGER``;
:func:`read_ledger` and :func:`latest_runs` read it back for the claims page
(:mod:`lrkit.claims_page`) and the seed runs (:mod:`lrkit.claims_runs`).
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["FRAGILE", "KINDS", "PAGE_STATUSES", "STATUSES", "ClaimRecord", "append_record", "latest_runs",
           "read_ledger", "short", "to_plain"]

KINDS = ("abs", "rel", "interval", "ge", "le", "equal")
STATUSES = ("checked", "measured", "not reproduced")
# Statuses the claims page shows; the last two come from book/claims_registry.yml, not from claim().
PAGE_STATUSES = STATUSES + ("tested by unit tests", "planned")
FRAGILE = 0.2  # a passing claim with a smaller margin is marked fragile on the claims page


@dataclass
class ClaimRecord:
    """One line of the ledger (``margin`` is ``-inf`` when a value was not finite)."""

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
    run: str = ""

    @property
    def fragile(self) -> bool:
        """A checked claim that passed with a margin below :data:`FRAGILE`."""
        return bool(self.passed) and self.margin is not None and self.margin < FRAGILE

    def line(self) -> str:
        """The one-line summary :func:`claim` prints."""
        tol = "" if self.tolerance is None else f" (tolerance {short(self.tolerance)}, {self.kind})"
        if self.kind == "interval":
            tol = " (interval)"
        verdict = {True: "PASS", False: "FAIL", None: self.status.upper()}[self.passed]
        margin = "" if self.margin is None else f", margin {self.margin:.2f}"
        return (f"[{verdict}] {self.label}: measured {short(self.measured)} against predicted "
                f"{short(self.predicted)}{tol}{margin}")

    def to_json(self) -> str:
        """The record as one JSON line (non-finite floats become the strings ``"inf"``, ``"nan"``)."""
        data = asdict(self)
        data["margin"] = to_plain(self.margin)
        return json.dumps(data, allow_nan=False)


def short(x: Any) -> str:
    """A number (4 significant digits) or a list of them, as :func:`lrkit.claim` prints it."""
    if isinstance(x, float):
        return f"{x:.4g}"
    if isinstance(x, (list, tuple)):
        return "[" + ", ".join(short(v) for v in x) + "]"
    return str(x)


def to_plain(x: Any) -> Any:
    """A JSON-ready copy: tensors and arrays become (lists of) floats, non-finite floats strings."""
    if hasattr(x, "detach"):
        x = x.detach().cpu().numpy()
    if isinstance(x, np.ndarray):
        return [to_plain(v) for v in x.tolist()] if x.ndim else to_plain(x.item())
    if isinstance(x, np.generic):
        return to_plain(x.item())
    if isinstance(x, (list, tuple)):
        return [to_plain(v) for v in x]
    if isinstance(x, float) and not math.isfinite(x):
        return str(x)
    return x


def append_record(record: ClaimRecord) -> None:
    """Append ``record`` as one JSON line to the file named by ``LRKIT_LEDGER`` (nothing when unset)."""
    path = os.environ.get("LRKIT_LEDGER", "").strip()
    if not path:
        return
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    with p.open("a", encoding="utf-8") as fh:
        fh.write(record.to_json() + "\n")


_FIELDS = {f.name for f in fields(ClaimRecord)}


def read_ledger(path: str | os.PathLike[str]) -> list[ClaimRecord]:
    """Every record of a ledger file, in the order written (unknown keys are ignored)."""
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"no ledger at {p} (set LRKIT_LEDGER and execute the lessons first)")
    records = []
    for n, line in enumerate(p.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            data = json.loads(line)
            rec = ClaimRecord(**{k: v for k, v in data.items() if k in _FIELDS})
        except (json.JSONDecodeError, TypeError, AttributeError) as err:
            raise ValueError(f"{p}:{n}: not a ledger record ({err})") from err
        if isinstance(rec.margin, str):
            rec.margin = float(rec.margin)
        records.append(rec)
    return records


def latest_runs(records: Iterable[ClaimRecord]) -> list[ClaimRecord]:
    """Per chapter, the records of its last run (in order); a re-executed lesson replaces its old records.

    A run is one execution of a lesson (:func:`set_chapter` starts it); records without a run id
    fall back to one run per chapter, where a later record of the same label replaces an earlier one.
    """
    records = list(records)
    last_run: dict[Any, str] = {}
    for r in records:
        last_run[r.chapter] = r.run
    kept = [r for r in records if r.run == last_run[r.chapter]]
    out: dict[tuple[Any, str, int], ClaimRecord] = {}
    seen: dict[tuple[Any, str, str], int] = {}
    for r in kept:
        key3 = (r.chapter, r.run, r.label)
        seen[key3] = seen.get(key3, 0) + 1
        index = seen[key3] if r.run else 1
        out[(r.chapter, r.label, index)] = r
    return list(out.values())
