"""Notebooks are committed without outputs: the book build executes them."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted(p for d in ("lessons", "exercises", "solutions") for p in (ROOT / d).glob("*.ipynb"))


def test_there_are_notebooks() -> None:
    assert any(p.parent.name == "lessons" for p in NOTEBOOKS), "lessons/ holds no notebook"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_notebook_has_no_outputs(path: Path) -> None:
    nb = json.loads(path.read_text())
    dirty = [i for i, c in enumerate(nb["cells"])
             if c["cell_type"] == "code" and (c.get("outputs") or c.get("execution_count") is not None)]
    assert not dirty, f"{path.name}: cells {dirty} have stored outputs; strip them (jupyter nbconvert --clear-output)"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_notebook_starts_with_install_cell(path: Path) -> None:
    nb = json.loads(path.read_text())
    first_code = next(c for c in nb["cells"] if c["cell_type"] == "code")
    src = "".join(first_code["source"])
    assert 'find_spec("lrkit")' in src and "LRKIT_INSTALL_SOURCE" in src, \
        f"{path.name}: the first code cell must install lrkit when it is missing (see book/how_to_use.md)"
