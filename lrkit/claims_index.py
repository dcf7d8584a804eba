"""What the claims page links to and reads: the book's index, the claims registry, value formats.

:class:`BookIndex` scans a book checkout (``_toc.yml``, its pages, the ``.bib`` files) for
the labels, citation keys and exercise pages a row may link to; :func:`load_registry`
reads ``book/claims_registry.yml``; :func:`claim_keys` and :func:`format_value` are shared
by the page (:mod:`lrkit.claims_page`) and the seed runs (:mod:`lrkit.claims_runs`).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .claims_ledger import PAGE_STATUSES, ClaimRecord

__all__ = ["BookIndex", "chapter_key", "claim_keys", "format_value", "load_registry"]

_LABEL = re.compile(r"^\s*:label:\s*(\S+)", re.M)
_TARGET = re.compile(r"^\s*\(([\w.:-]+)\)=\s*$", re.M)
_BIBKEY = re.compile(r"@\w+\s*\{\s*([^,\s]+)\s*,")
_TITLE = re.compile(r"^#\s+(.+?)\s*$", re.M)


@dataclass
class BookIndex:
    """What the page may link to: documents in the table of contents, labels, citation keys."""

    docs: list[str] = field(default_factory=list)
    labels: set[str] = field(default_factory=set)
    bibkeys: set[str] = field(default_factory=set)
    titles: dict[str, str] = field(default_factory=dict)
    texts: dict[str, str] = field(default_factory=dict)  # every cell of the exercise pages

    @classmethod
    def from_root(cls, root: str | Path, toc: str = "_toc.yml",
                  bib: Iterable[str] = ("book/references.bib",)) -> BookIndex:
        """Scan a book checkout: ``_toc.yml``, the sources it names, and the ``.bib`` files."""
        import yaml  # book and test extras

        root = Path(root)
        docs = _toc_files(yaml.safe_load((root / toc).read_text(encoding="utf-8")))
        index = cls(docs=docs)
        for doc in docs:
            for suffix in (".ipynb", ".md"):
                path = root / (doc + suffix)
                if path.is_file():
                    text = _source_text(path)
                    index.labels |= set(_LABEL.findall(text)) | set(_TARGET.findall(text))
                    title = _TITLE.search(text)
                    if title:
                        index.titles[doc] = title.group(1)
                    if doc.startswith("exercises/"):
                        index.texts[doc] = _source_text(path, every_cell=True)
        for b in bib:
            if (root / b).is_file():
                index.bibkeys |= set(_BIBKEY.findall((root / b).read_text(encoding="utf-8")))
        return index

    def chapter_doc(self, chapter: Any, folder: str = "lessons") -> str | None:
        """``lessons/01_lora`` for chapter 1 (the toc entry whose name starts with the number)."""
        try:
            n = int(chapter)
        except (TypeError, ValueError):
            return None
        hits = [d for d in self.docs if re.fullmatch(rf"{folder}/0*{n}_[^/]+", d)]
        return hits[0] if hits else None


def _toc_files(node: Any) -> list[str]:
    out: list[str] = []
    if isinstance(node, dict):
        for key in ("root", "file"):
            if isinstance(node.get(key), str):
                out.append(re.sub(r"\.(md|ipynb)$", "", node[key]))
        for value in node.values():
            if isinstance(value, (list, dict)):
                out += _toc_files(value)
    elif isinstance(node, list):
        for item in node:
            out += _toc_files(item)
    return out


def _source_text(path: Path, every_cell: bool = False) -> str:
    if path.suffix != ".ipynb":
        return path.read_text(encoding="utf-8")
    cells = json.loads(path.read_text(encoding="utf-8")).get("cells", [])
    return "\n".join("".join(c.get("source", "")) for c in cells
                     if every_cell or c.get("cell_type") == "markdown")


def load_registry(path: str | Path) -> list[dict[str, Any]]:
    """The hand-kept claims (``tested by unit tests`` / ``planned``), validated."""
    import yaml

    data = yaml.safe_load(Path(path).read_text(encoding="utf-8")) or {}
    entries = data.get("claims", []) if isinstance(data, dict) else data
    for n, e in enumerate(entries):
        where = f"{path}: claims[{n}]"
        if not isinstance(e, dict):
            raise ValueError(f"{where}: must be a mapping, got {e!r}")
        for key in ("chapter", "statement", "status"):
            if key not in e:
                raise ValueError(f"{where}: missing {key!r}")
        if e["status"] not in PAGE_STATUSES:
            raise ValueError(f"{where}: status must be one of {PAGE_STATUSES}, got {e['status']!r}")
    return list(entries)


def claim_keys(records: Iterable[ClaimRecord]) -> list[tuple[Any, str, int]]:
    """``(chapter, label, k)``: the k-th record of that label in its run; stable across seeds."""
    seen: dict[tuple[Any, str, str], int] = {}
    keys = []
    for r in records:
        k = (r.chapter, r.run, r.label)
        seen[k] = seen.get(k, 0) + 1
        keys.append((r.chapter, r.label, seen[k]))
    return keys


def format_value(x: Any, digits: int = 4) -> str:
    """A number, or an array in short (``[0.1, 0.2, …] (8 values)``)."""
    if isinstance(x, bool) or x is None:
        return str(x)
    if isinstance(x, (int, float)):
        return f"{x:.{digits}g}" if isinstance(x, float) else str(x)
    if isinstance(x, list):
        flat = _flatten(x)
        shown = ", ".join(format_value(v, digits) for v in flat[:4])
        return f"[{shown}]" if len(flat) <= 4 else f"[{shown}, …] ({len(flat)} values)"
    return str(x)


def _flatten(x: list[Any]) -> list[Any]:
    out: list[Any] = []
    for v in x:
        out += _flatten(v) if isinstance(v, list) else [v]
    return out


def chapter_key(ch: Any) -> Any:
    """A chapter as an int when it reads as one (``"3"`` -> 3), else as a string."""
    try:
        return int(ch)
    except (TypeError, ValueError):
        return str(ch)
