"""Leak detection: no solution line or hidden test may reach exercises or the built book."""

from __future__ import annotations

import html
import re
from collections.abc import Iterable
from pathlib import Path

import nbformat
from nbformat import NotebookNode

from .markup import HIDDEN, HINT_PREFIX, MIN_LEAK_CHARS, SOLUTION, read_notebook, regions


def _normalise(text: str) -> str:
    return " ".join(text.split())


def _plain_text(text: str) -> str:
    """HTML becomes its visible text (tags dropped, entities decoded); whitespace is collapsed."""
    if re.search(r"</[a-zA-Z][\w-]*>", text):
        text = html.unescape(re.sub(r"<[^>]*>", "", text))
    return _normalise(text)


def secret_lines(solution: NotebookNode) -> list[str]:
    """Distinctive lines of solution regions and hidden tests (normalised), excluding hints, what hints
    quote, and markers."""
    secret, public, hints = [], set(), []
    for cell in solution.cells:
        lines = cell.source.split("\n")
        inside: set[int] = set()
        for markers in (SOLUTION, HIDDEN):
            for begin, end in regions(lines, markers):
                inside.update(range(begin + 1, end))
        for i, line in enumerate(lines):
            norm = _normalise(line)
            if i not in inside:
                public.add(norm)
            elif norm.startswith(HINT_PREFIX):
                hints.append(norm)
            elif len(norm) >= MIN_LEAK_CHARS:
                secret.append(norm)
    # what a hint quotes on purpose is public: the stub's message shows it to learners
    return list(dict.fromkeys(s for s in secret if s not in public and not any(s in h for h in hints)))


def hinted_solution_lines(solution: NotebookNode) -> list[str]:
    """``"hint  <-  solution line"`` for each hint that contains a line of the solution it stands for.

    A hint points the way; it never hands over a line of the answer. A solution line counts when it
    has at least ``MIN_LEAK_CHARS`` characters once whitespace is collapsed.
    """
    found = []
    for cell in solution.cells:
        lines = cell.source.split("\n")
        for begin, end in regions(lines, SOLUTION):
            body = [_normalise(ln) for ln in lines[begin + 1:end]]
            hints = [ln for ln in body if ln.startswith(HINT_PREFIX)]
            code = [ln for ln in body if ln and not ln.startswith(HINT_PREFIX) and len(ln) >= MIN_LEAK_CHARS]
            found += [f"{h}  <-  {c}" for h in hints for c in code if c in h]
    return found


def leaked_solution_lines(solution: NotebookNode, text: str) -> list[str]:
    """The solution-only lines of ``solution`` that occur in ``text`` (plain text, code or HTML)."""
    plain = _plain_text(text)
    return [line for line in secret_lines(solution) if line in plain]


def _readable_text(path: Path) -> str:
    text = path.read_text(encoding="utf-8", errors="replace")
    if path.suffix == ".ipynb":
        try:
            return "\n".join(c.source for c in nbformat.reads(text, as_version=4).cells)  # type: ignore[no-untyped-call]
        except Exception:  # not a notebook after all: scan it as text
            return text
    return text


def check_leaks(paths: Iterable[Path], solutions_dir: Path) -> list[str]:
    """``"file: line"`` for each solution or hidden-test line found in the files (or folders) given."""
    solutions = [read_notebook(p) for p in sorted(solutions_dir.glob("*.ipynb"))]
    files = [f for p in paths for f in (sorted(p.rglob("*")) if p.is_dir() else [p])
             if f.is_file() and f.suffix in (".html", ".ipynb", ".txt", ".md", ".py", ".js")]
    return [f"{f}: {line}" for f in files for sol in solutions
            for line in leaked_solution_lines(sol, _readable_text(f))]
