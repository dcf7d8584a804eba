"""The claims page, generated: every claim of the course, per chapter, from the ledger.

The book build executes the lessons with ``LRKIT_LEDGER`` set (:mod:`lrkit.claims`),
then renders this module's Markdown into ``book/claims.md`` (the Sphinx hook in
``book/_ext/lrkit_book.py`` reads that page after every lesson). Two inputs only:

* the ledger: one record per :func:`lrkit.claim` call; per chapter the last run counts;
* ``book/claims_registry.yml``: the claims no lesson cell checks (``tested by unit
  tests``, ``planned``), each with ``chapter``, ``statement``, ``source``, ``status`` and
  optionally ``label``, ``tests``, ``exercises``.

Every cross-reference is checked before it is written (proposition labels, citation
keys, exercise pages): a missing one becomes plain text and a warning in
:attr:`ClaimsPage.warnings`, so the page builds under ``-W -n``.

Command line (writes the Markdown table, prints the warnings)::

    python -m lrkit.claims_page --ledger _build/claims/ledger.jsonl --out _build/claims/claims_table.md
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path
from typing import Any

from .claims_index import BookIndex, chapter_key, claim_keys, format_value, load_registry
from .claims_ledger import ClaimRecord, latest_runs, read_ledger

__all__ = ["BookIndex", "ClaimsPage", "claim_keys", "format_value", "load_registry", "render"]

_LOOKS_LIKE_KEY = re.compile(r"^[a-z][a-z0-9_-]*\d{4}[a-z0-9_-]*$")


def _tolerance(r: ClaimRecord) -> str:
    t = "" if r.tolerance is None else format_value(r.tolerance, 3)
    if r.kind == "abs":
        return f"± {t}"
    if r.kind == "rel":
        return f"± {t} × predicted"
    if r.kind == "interval":
        return "in the interval"
    if r.kind in ("ge", "le"):
        return (">= predicted" if r.kind == "ge" else "<= predicted") + (f", scale {t}" if t else "")
    return "exactly"


def _measured_vs_predicted(r: ClaimRecord) -> str:
    if r.predicted is None:
        return format_value(r.measured)
    tol = _tolerance(r)
    if r.kind in ("abs", "rel") and r.tolerance is None:
        tol = "no tolerance"
    return f"{format_value(r.measured)} vs {format_value(r.predicted)} ({tol})"


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ").strip()


class ClaimsPage:
    """Renders the per-chapter tables; collects a warning for each link it could not make."""

    def __init__(self, index: BookIndex, seeds: dict[tuple[Any, str, int], dict[str, Any]] | None = None):
        self.index = index
        self.seeds = seeds or {}
        self.warnings: list[str] = []

    def prop(self, label: str | None) -> str:
        if not label:
            return ""
        if label in self.index.labels:
            return f"{{prf:ref}}`{label}`"
        self.warnings.append(f"proposition label {label!r} not found in any page of the book")
        return f"`{label}`"

    def cite(self, source: str) -> str:
        keys = [k.strip() for k in source.split(",") if k.strip()]
        if keys and all(k in self.index.bibkeys for k in keys):
            return f"{{cite:p}}`{','.join(keys)}`"
        for k in keys:
            if k not in self.index.bibkeys and _LOOKS_LIKE_KEY.match(k):
                self.warnings.append(f"citation key {k!r} not in the bibliography")
        return _cell(source) or "—"

    def exercise(self, name: str, chapter: Any = None) -> str:
        """A page (``exercises/01_lora``), a label, or an exercise of the chapter's notebook by name."""
        doc = name.split("#")[0].removesuffix(".ipynb").strip("/")
        if doc in self.index.docs:
            return f"{{doc}}`/{doc}`"
        if name in self.index.labels:
            return f"{{ref}}`{name}`"
        ex = self.index.chapter_doc(chapter, "exercises")
        if ex is not None and "/" not in name:
            if name not in self.index.texts.get(ex, name):
                self.warnings.append(f"exercise {name!r} not found in {ex}")
            return f"{{doc}}`{_cell(name).replace('`', '')} </{ex}>`"
        self.warnings.append(f"exercise {name!r} is neither a page of the book nor a label")
        return f"`{name}`"

    def status(self, r: ClaimRecord) -> str:
        if r.status != "checked":
            return r.status
        if r.passed is False:
            return "**FAILED**"
        return "checked, **fragile**" if r.fragile else "checked"

    def row(self, r: ClaimRecord, key: tuple[Any, str, int]) -> str:
        claim = (self.prop(r.label) + ": " if r.label else "") + _cell(r.statement)
        if r.reason:
            claim += f" *({_cell(r.reason)})*"
        mp = _measured_vs_predicted(r)
        margin = "—" if r.margin is None else f"{r.margin:.2f}"
        if r.margin is not None and r.status != "checked":
            margin += " (not asserted)"
        cells = [claim, self.cite(r.source), self.status(r), _cell(mp), margin]
        if self.seeds:
            s = self.seeds.get(key)
            cells.append("—" if not s else f"{s['passed']}/{s['runs']}, min {s['min_margin']:.2f}")
        cells.append(", ".join(self.exercise(e, r.chapter) for e in r.exercises) or "—")
        return _list_row(cells)

    def registry_row(self, e: dict[str, Any]) -> str:
        claim = (self.prop(e.get("label")) + ": " if e.get("label") else "") + _cell(e["statement"])
        tests = ", ".join(f"`{t}`" for t in e.get("tests", []))
        cells = [claim, self.cite(str(e.get("source", ""))), e["status"], tests or "—", "—"]
        if self.seeds:
            cells.append("—")
        cells.append(", ".join(self.exercise(x, e["chapter"]) for x in e.get("exercises", [])) or "—")
        return _list_row(cells)

    def header(self) -> str:
        cols = ["claim", "source", "status", "measured vs predicted (tolerance)", "margin"]
        widths = [36, 14, 10, 22, 7]
        if self.seeds:
            cols.append("seeds passed, min margin")
            widths.append(8)
        cols.append("practised in")
        widths.append(11)
        return ("```{list-table}\n:header-rows: 1\n:class: lrkit-claims\n"
                f":widths: {' '.join(map(str, widths))}\n\n" + _list_row(cols))

    def render(self, records: list[ClaimRecord], registry: list[dict[str, Any]]) -> str:
        latest = latest_runs(records)
        keys = dict(zip(map(id, latest), claim_keys(latest)))
        chapters: dict[Any, list[str]] = {}
        lesson_chapters = [d for d in self.index.docs if d.startswith("lessons/")]
        for d in lesson_chapters:
            match = re.match(r"lessons/0*(\d+)", d)
            if match:
                chapters[int(match.group(1))] = []
        for r in latest:
            chapters.setdefault(chapter_key(r.chapter), []).append(self.row(r, keys[id(r)]))
        checked_sources = {k.strip() for r in latest for k in r.source.split(",")}
        for e in registry:
            sources = {k.strip() for k in str(e.get("source", "")).split(",") if k.strip()}
            if e["status"] == "planned" and sources and sources <= checked_sources:
                self.warnings.append(f"planned claim {e['statement'][:50]!r}... dropped: a lesson now records "
                                     f"claims from {sorted(sources)} (remove it from the registry)")
                continue
            chapters.setdefault(chapter_key(e["chapter"]), []).append(self.registry_row(e))
        out = [_provenance(latest)] if latest else []
        for ch, rows in sorted(chapters.items(), key=lambda kv: _sort_key(kv[0])):
            out.append(self._section(ch, rows, has_records=any(chapter_key(r.chapter) == ch for r in latest)))
        return "\n\n".join(out) + "\n"

    def _section(self, ch: Any, rows: list[str], has_records: bool) -> str:
        lesson = self.index.chapter_doc(ch)
        if lesson is None:
            head = "## Planned chapters" if ch in ("later", "planned") else f"## Chapter {ch}"
            lines = [head, ""]
        else:
            title = self.index.titles.get(lesson, lesson)
            lines = [f"## {ch}. {_cell(title)}", ""]
            links = [f"Lesson: {{doc}}`/{lesson}`"]
            ex = self.index.chapter_doc(ch, "exercises")
            if ex:
                links.append(f"exercises: {{doc}}`/{ex}`")
            lines += ["; ".join(links) + ".", ""]
        if lesson is not None and not has_records:
            self.warnings.append(f"chapter {ch}: no claim records in the ledger (lesson not executed "
                                 "with LRKIT_LEDGER set, or it calls no lrkit.claim)")
            lines += ["*No claim records yet: this lesson has not been executed with the ledger on.*", ""]
        if rows:
            lines += [self.header()] + rows + ["```"]
        return "\n".join(lines)


def _provenance(records: list[ClaimRecord]) -> str:
    """Where the numbers come from, read from the records (not typed)."""
    def values(attr: str) -> str:
        return ", ".join(sorted({str(getattr(r, attr)) for r in records}))
    return (f"The measurements below were recorded by `lrkit` {values('version')} at scale "
            f"**{values('scale')}**, seed {values('seed')}, on {values('device')}.")


def _list_row(cells: list[str]) -> str:
    """One row of a MyST ``{list-table}``: ``* - a`` then ``  - b`` ..."""
    return "\n".join(("* - " if i == 0 else "  - ") + (c or "—") for i, c in enumerate(cells))


def _sort_key(ch: Any) -> tuple[int, Any]:
    return (0, ch) if isinstance(ch, int) else (1, str(ch))


def render(ledger: str | Path | None, registry: str | Path | None, root: str | Path = ".",
           seeds: str | Path | None = None) -> tuple[str, list[str]]:
    """The page's Markdown and the warnings; a missing ledger renders the registry alone."""
    index = BookIndex.from_root(root)
    records = read_ledger(ledger) if ledger and Path(ledger).is_file() else []
    entries = load_registry(registry) if registry and Path(registry).is_file() else []
    seed_table = None
    if seeds and Path(seeds).is_file():
        rows = json.loads(Path(seeds).read_text(encoding="utf-8"))
        seed_table = {(chapter_key(r["chapter"]), r["label"], r["index"]): r for r in rows}
    page = ClaimsPage(index, seed_table)
    text = page.render(records, entries)
    if ledger and not records:
        page.warnings.append(f"no ledger records at {ledger}")
    return text, page.warnings


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m lrkit.claims_page", description=__doc__.split("\n")[0])
    parser.add_argument("--ledger", default="_build/claims/ledger.jsonl")
    parser.add_argument("--registry", default="book/claims_registry.yml")
    parser.add_argument("--seeds", default=None, help="seeds summary JSON from python -m lrkit.claims_runs")
    parser.add_argument("--root", default=".")
    parser.add_argument("--out", default="_build/claims/claims_table.md")
    args = parser.parse_args(argv)
    text, warnings = render(args.ledger, args.registry, args.root, args.seeds)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(text, encoding="utf-8")
    for w in warnings:
        print(f"claims page: warning: {w}", file=sys.stderr)
    print(f"claims page: wrote {args.out} ({len(warnings)} warnings)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
