"""Putting a submission together with its solution, and scoring the run: no process, no I/O.

:func:`assemble` builds the notebook to grade (the solution's locked cells, the student's
answers), :func:`tampering` finds the exercises a student's code can tamper with, and
:func:`score` turns the executed cells' records into points with reasons. The grading
processes (time limits, sandbox, the CSV) are in :mod:`lrkit.course.grade`.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import nbformat
from nbformat import NotebookNode

from .execute import CellRecord
from .generate import generate_exercise
from .markup import cell_key, is_graded_cell, is_solution_cell, nbgrader
from .tamper import tamper_findings

__all__ = ["Exercise", "Grade", "Score", "assemble", "exercises_of", "score", "tampering"]


@dataclass(frozen=True)
class Exercise:
    """A graded cell of the solution and the solution cells it checks (those since the previous one)."""

    grade_id: str
    points: float
    solution_keys: tuple[str, ...]


@dataclass
class Score:
    grade_id: str
    points: float
    max_points: float
    reason: str = ""


@dataclass
class Grade:
    """One student's result: a score per exercise and notes on the submission as a whole."""

    student: str
    scores: list[Score]
    notes: list[str] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def total(self) -> float:
        return sum(s.points for s in self.scores)

    @property
    def max_total(self) -> float:
        return sum(s.max_points for s in self.scores)


def exercises_of(solution: NotebookNode) -> list[Exercise]:
    """The graded exercises of a solution notebook, in order."""
    found, pending = [], []
    for cell in solution.cells:
        if is_solution_cell(cell):
            pending.append(cell_key(cell))
        if is_graded_cell(cell):
            found.append(Exercise(cell_key(cell), float(nbgrader(cell)["points"]), tuple(pending)))
            pending = []
    return found


def _index_by_key(cells: Iterable[NotebookNode]) -> dict[str, int]:
    index: dict[str, int] = {}
    for i, cell in enumerate(cells):
        for key in (str(nbgrader(cell).get("grade_id") or ""), str(cell.get("id") or "")):
            if key:
                index.setdefault(key, i)
    return index


def assemble(solution: NotebookNode, submission: NotebookNode) -> tuple[NotebookNode, list[str]]:
    """The notebook to grade: the solution's cells, with the student's answer in each solution cell.

    Cells are matched by grade id, else cell id. Locked cells (checks with their hidden tests,
    given code) come from the solution whatever the student did to them; cells the student
    added are kept after the cell they followed; the solution's order is restored.
    """
    exercise, notes = generate_exercise(solution), []
    sol_index = _index_by_key(solution.cells)
    matched: dict[int, NotebookNode] = {}
    extras: dict[int, list[NotebookNode]] = {}
    anchor, order = -1, []
    for cell in submission.cells:
        keys = [k for k in (str(nbgrader(cell).get("grade_id") or ""), str(cell.get("id") or "")) if k]
        j = next((sol_index[k] for k in keys if k in sol_index), None)
        if j is None:
            if cell.get("cell_type") == "code":
                extras.setdefault(anchor, []).append(nbformat.v4.new_code_cell(cell.get("source", "")))  # type: ignore[no-untyped-call]
        else:
            anchor = j
            order.append(j)
            matched.setdefault(j, cell)
    if order != sorted(order):
        notes.append("cells were moved around; they were run in the original order")
    cells = list(extras.get(-1, []))
    for j, (sol_cell, ex_cell) in enumerate(zip(solution.cells, exercise.cells)):
        if is_solution_cell(sol_cell):
            cell = copy.deepcopy(sol_cell)
            if j in matched:
                cell.source = str(matched[j].get("source", ""))
            else:
                cell.source = ex_cell.source
                notes.append(f"cell {cell_key(sol_cell)!r} is missing from the submission; its stub was run instead")
            cells.append(cell)
        else:
            cells.append(copy.deepcopy(sol_cell))
            if is_graded_cell(sol_cell) and j not in matched:
                notes.append(f"the check cell {cell_key(sol_cell)!r} was deleted; the original was run")
            elif is_graded_cell(sol_cell) and matched[j].get("source") != ex_cell.source:
                notes.append(f"the check cell {cell_key(sol_cell)!r} was edited; the original was run")
        cells.extend(extras.get(j, []))
    nb = copy.deepcopy(solution)
    nb.cells = cells
    return nb, notes


def tampering(solution: NotebookNode, graded: NotebookNode) -> dict[str, str]:
    """``{grade_id: reason}`` for every exercise at or after the first cell the student wrote that
    tampers with the interpreter (see :mod:`lrkit.course.tamper`); locked cells are not scanned."""
    locked = {cell.source for cell in solution.cells if not is_solution_cell(cell)}
    found, reason = {}, ""
    for cell in graded.cells:
        if cell.cell_type == "code" and not reason and cell.source not in locked:
            why = tamper_findings(cell.source)
            if why:
                where = cell_key(cell) or "a cell you added"
                reason = (f"scored 0: your code in {where!r} can tamper with the checks ({'; '.join(why)}); "
                          "no exercise needs this - ask your instructor if you think this is wrong")
        if reason and is_graded_cell(cell):
            found[cell_key(cell)] = reason
    return found


def score(solution: NotebookNode, records: Sequence[CellRecord], notes: Sequence[str],
          tampered: dict[str, str] | None = None) -> list[Score]:
    """Points per exercise from the run's records, with a reason for every lost point."""
    by_key = {r.key: r for r in records}
    scores = []
    for ex in exercises_of(solution):
        if tampered and ex.grade_id in tampered:
            scores.append(Score(ex.grade_id, 0.0, ex.points, tampered[ex.grade_id]))
            continue
        rec = by_key.get(ex.grade_id)
        if rec is not None and rec.ok:
            scores.append(Score(ex.grade_id, ex.points, ex.points))
            continue
        if rec is None:
            scores.append(Score(ex.grade_id, 0.0, ex.points, "not run: " + ("; ".join(notes) or "grading stopped")))
            continue
        reasons = [f"check cell: {rec.message}"]
        for key in ex.solution_keys:
            sol = by_key.get(key)
            if sol is not None and not sol.ok:
                reasons.append(f"your cell {key!r}: {sol.message}")
        reasons += [n for n in notes if any(repr(k) in n for k in (ex.grade_id, *ex.solution_keys))]
        scores.append(Score(ex.grade_id, 0.0, ex.points, "\n".join(reasons)))
    return scores
