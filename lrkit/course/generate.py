"""Exercises generated from solutions: ``python -m lrkit.course make-exercises``."""

from __future__ import annotations

import copy
from pathlib import Path

from nbformat import NotebookNode

from .markup import (
    HIDDEN,
    MARKDOWN_STUB,
    SOLUTION,
    is_graded_cell,
    nbgrader,
    notebook_text,
    read_notebook,
    regions,
    replace_regions,
    strip_hidden_tests,
    stub_solutions,
)


def solution_problems(nb: NotebookNode) -> list[str]:
    """What is wrong with a solution notebook's markup (empty when it is fine)."""
    problems, ids, grade_ids = [], set(), set()
    for i, cell in enumerate(nb.cells):
        where = f"cell {i} (id {cell.get('id')!r})"
        if not cell.get("id"):
            problems.append(f"{where}: has no cell id (save it with nbformat >= 4.5)")
        elif cell.id in ids:
            problems.append(f"{where}: duplicate cell id")
        ids.add(cell.get("id"))
        meta, source = nbgrader(cell), cell.source
        for markers in (SOLUTION, HIDDEN):
            try:
                regions(source.split("\n"), markers)
            except ValueError as e:
                problems.append(f"{where}: {e}")
        has_solution, has_hidden = SOLUTION[0] in source, HIDDEN[0] in source
        if has_solution and not (meta.get("solution") and meta.get("locked") is False):
            problems.append(f"{where}: has {SOLUTION[0]!r} but not nbgrader metadata solution=true, locked=false")
        if has_hidden and not meta.get("grade"):
            problems.append(f"{where}: hidden tests belong in a graded cell (nbgrader grade=true)")
        if meta.get("grade") and not (meta.get("locked") and float(meta.get("points", 0)) > 0):
            problems.append(f"{where}: a graded cell needs points > 0 and locked=true")
        if meta and not meta.get("grade_id"):
            problems.append(f"{where}: nbgrader metadata without a grade_id")
        elif meta:
            if meta["grade_id"] in grade_ids:
                problems.append(f"{where}: duplicate grade_id {meta['grade_id']!r}")
            grade_ids.add(meta["grade_id"])
    if not any(is_graded_cell(c) for c in nb.cells):
        problems.append("no graded cell (nbgrader grade=true)")
    return problems


def generate_exercise(solution: NotebookNode) -> NotebookNode:
    """The student notebook: stubs for solutions, no hidden tests, no outputs; all else unchanged."""
    problems = solution_problems(solution)
    if problems:
        raise ValueError("the solution notebook's markup is broken:\n  " + "\n  ".join(problems))
    nb = copy.deepcopy(solution)
    for cell in nb.cells:
        cell.metadata.pop("execution", None)
        if cell.cell_type == "code":
            cell.outputs, cell.execution_count = [], None
            cell.source = strip_hidden_tests(stub_solutions(cell.source))
        else:  # a written answer (nbgrader's markdown solution cell)
            cell.source = replace_regions(cell.source, SOLUTION, lambda region: [MARKDOWN_STUB])
    return nb


def make_exercises(solutions_dir: Path, exercises_dir: Path, check: bool = False) -> list[str]:
    """Write (or with ``check`` only compare) ``exercises_dir/X.ipynb`` for each ``solutions_dir/X.ipynb``.

    Returns one line per exercise that was (or, with ``check``, would be) written or is stale.
    """
    changed = []
    sources = sorted(solutions_dir.glob("*.ipynb"))
    for src in sources:
        dest = exercises_dir / src.name
        text = notebook_text(generate_exercise(read_notebook(src)))
        if dest.exists() and dest.read_text(encoding="utf-8") == text:
            continue
        changed.append(f"{dest} is out of date with {src}" if check else f"wrote {dest}")
        if not check:
            exercises_dir.mkdir(parents=True, exist_ok=True)
            dest.write_text(text, encoding="utf-8")
    names = {s.name for s in sources}
    changed += [f"{p} has no solution notebook in {solutions_dir}" for p in sorted(exercises_dir.glob("*.ipynb"))
                if p.name not in names]
    return changed
