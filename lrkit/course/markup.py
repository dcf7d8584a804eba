"""Notebook markup: nbgrader's solution and hidden-test regions, cell keys, stubs."""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import nbformat
from nbformat import NotebookNode

SOLUTION = ("### BEGIN SOLUTION", "### END SOLUTION")
HIDDEN = ("### BEGIN HIDDEN TESTS", "### END HIDDEN TESTS")
HINT_PREFIX = "# HINT:"
DEFAULT_HINT = "replace this line with your solution"
MARKDOWN_STUB = "YOUR ANSWER HERE"
KERNEL_NAME = "python3"
MAX_SUBMISSION_BYTES = 20_000_000
MAX_OUTPUT_CHARS = 20_000  # per cell: a submission that prints megabytes is cut here
MAX_KERNEL_STARTS = 5  # a notebook that hangs or kills its kernel is re-run without the culprit cell
MIN_LEAK_CHARS = 16  # shorter solution lines ("return y") are too generic to count as a leak


def read_notebook(path: str | Path) -> NotebookNode:
    """Read a notebook as nbformat 4."""
    nb: NotebookNode = nbformat.read(str(path), as_version=4)  # type: ignore[no-untyped-call]
    return nb


def notebook_text(nb: NotebookNode) -> str:
    """The notebook as JSON text, deterministic (sorted keys, one-space indent, final newline)."""
    text: str = nbformat.writes(nb)  # type: ignore[no-untyped-call]
    return text if text.endswith("\n") else text + "\n"


def nbgrader(cell: NotebookNode) -> dict[str, Any]:
    """The cell's nbgrader metadata (empty when there is none)."""
    meta = cell.get("metadata", {}).get("nbgrader", {})
    return meta if isinstance(meta, dict) else {}


def is_solution_cell(cell: NotebookNode) -> bool:
    return bool(nbgrader(cell).get("solution"))


def is_graded_cell(cell: NotebookNode) -> bool:
    return bool(nbgrader(cell).get("grade"))


def cell_key(cell: NotebookNode) -> str:
    """How a cell is found again in a submission: its nbgrader grade id, else its cell id."""
    return str(nbgrader(cell).get("grade_id") or cell.get("id") or "")


def regions(lines: Sequence[str], markers: tuple[str, str]) -> list[tuple[int, int]]:
    """``(begin, end)`` line indexes of each marked region (markers included); unbalanced is an error."""
    found, start = [], None
    for i, line in enumerate(lines):
        if line.strip() == markers[0]:
            if start is not None:
                raise ValueError(f"line {i + 1}: {markers[0]!r} inside another region")
            start = i
        elif line.strip() == markers[1]:
            if start is None:
                raise ValueError(f"line {i + 1}: {markers[1]!r} without {markers[0]!r}")
            found.append((start, i))
            start = None
    if start is not None:
        raise ValueError(f"line {start + 1}: {markers[0]!r} is never closed")
    return found


def replace_regions(source: str, markers: tuple[str, str], make: Callable[[list[str]], list[str]]) -> str:
    """``source`` with each ``markers`` region (begin line .. end line) replaced by ``make(region)``."""
    lines = source.split("\n")
    for begin, end in reversed(regions(lines, markers)):
        lines[begin:end + 1] = make(lines[begin:end + 1])
    return "\n".join(lines)


def _stub(region: list[str]) -> list[str]:
    indent = region[0][: len(region[0]) - len(region[0].lstrip())]
    hints = [ln.strip()[len(HINT_PREFIX):].strip() for ln in region if ln.strip().startswith(HINT_PREFIX)]
    message = DEFAULT_HINT + (f". Hint: {' '.join(hints)}" if hints else "")
    return [f"{indent}raise NotImplementedError({json.dumps(message, ensure_ascii=False)})"]


def stub_solutions(source: str) -> str:
    """Each solution region becomes one ``raise NotImplementedError(hint)`` at the region's indentation."""
    return replace_regions(source, SOLUTION, _stub)


def strip_hidden_tests(source: str) -> str:
    """Remove hidden-test regions (markers included) and the blank lines they leave at the end."""
    stripped = replace_regions(source, HIDDEN, lambda region: [])
    return stripped.rstrip() if stripped != source else source
