"""Every chapter's exercises: stubs fail every check, solutions pass, planted mistakes are caught.

One protocol for all chapters (the list is ``planted.CHAPTERS``):

* as handed out, every graded check fails with the stub's ``NotImplementedError`` and every
  other cell runs; nbval (the learners' self-check) reports one failure per unfinished exercise
  (Chapter 1 only: the command is the same for all); the solutions pass every check under nbval
  in ``make notebooks`` and in-process below, so no notebook is executed twice for the same claim;
* ``exercises/`` is what the generator writes, with no solution or hidden test in it;
* each planted mistake (an edit of the solution's own code, run in this process) fails the
  visible check with a teaching message, and fails the plain hidden asserts even when every
  check and the hidden tests' ``importlib.reload`` are defeated.
"""

from __future__ import annotations

import importlib
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest
from course_helpers import ROOT, cell, exec_from, replace, run_forked, student_copy
from nbformat import NotebookNode
from planted import CHAPTERS

import lrkit.checks
from lrkit import course
from lrkit.course import read_notebook
from lrkit.course.markup import HIDDEN, regions

PLANTED = [(chapter, *p) for chapter, (_, _, planted) in CHAPTERS.items() for p in planted]
PLANTED_IDS = [f"{p[0][:2]}:{p[2]}:{p[4][:30]}" for p in PLANTED]


def solution_nb(chapter: str) -> Path:
    return ROOT / "solutions" / f"{chapter}.ipynb"


def exercise_nb(chapter: str) -> Path:
    return ROOT / "exercises" / f"{chapter}.ipynb"


def graded_ids(chapter: str) -> list[str]:
    return [course.cell_key(c) for c in read_notebook(solution_nb(chapter)).cells if course.is_graded_cell(c)]


def checks_module(chapter: str) -> ModuleType:
    return importlib.import_module(CHAPTERS[chapter][0])


def solved(chapter: str) -> NotebookNode:
    return student_copy(solution_nb(chapter))


def test_every_solution_notebook_is_covered() -> None:
    assert sorted(p.stem for p in (ROOT / "solutions").glob("*.ipynb")) == sorted(CHAPTERS)


@pytest.mark.parametrize("chapter", CHAPTERS)
def test_the_notebook_tells_learners_how_to_check_themselves(chapter: str) -> None:
    nb = read_notebook(exercise_nb(chapter))
    assert f"pytest --nbval-lax exercises/{chapter}.ipynb" in nb.cells[0].source
    install = next(c for c in nb.cells if c.cell_type == "code")
    assert "lrkit-install" in install.metadata.get("tags", []) and 'find_spec("lrkit")' in install.source
    points = [course.nbgrader(c)["points"] for c in nb.cells if course.is_graded_cell(c)]
    assert len(points) >= (4 if chapter == "01_lora" else 3) and sum(points) == CHAPTERS[chapter][1]


@pytest.mark.parametrize("chapter", CHAPTERS)
def test_exercises_are_up_to_date_and_leak_nothing(chapter: str) -> None:
    generated = course.notebook_text(course.generate_exercise(read_notebook(solution_nb(chapter))))
    assert exercise_nb(chapter).read_text(encoding="utf-8") == generated, "run python -m lrkit.course make-exercises"
    assert "BEGIN SOLUTION" not in generated and "HIDDEN TESTS" not in generated and "_il.reload" not in generated
    assert course.leaked_solution_lines(read_notebook(solution_nb(chapter)), generated) == []


@pytest.mark.parametrize("chapter", CHAPTERS)
def test_no_hint_contains_a_line_of_the_solution(chapter: str) -> None:
    assert course.hinted_solution_lines(read_notebook(solution_nb(chapter))) == []


@pytest.mark.slow
@pytest.mark.parametrize("chapter", CHAPTERS)
def test_as_handed_out_every_check_fails_with_not_implemented(chapter: str) -> None:
    ids = graded_ids(chapter)

    def body(ns: dict) -> dict[str, str]:  # every graded cell's outcome; any other cell must run
        outcomes = {}

        def graded(c: NotebookNode) -> None:
            try:
                exec(compile(c.source, f"<cell {course.cell_key(c)}>", "exec"), ns)
                outcomes[course.cell_key(c)] = "passed"
            except Exception as e:
                outcomes[course.cell_key(c)] = f"{type(e).__name__}: {e}"

        exec_from(read_notebook(exercise_nb(chapter)), ns, graded=graded)
        return outcomes

    out = run_forked(solution_nb(chapter), read_notebook(exercise_nb(chapter)), body)
    assert out.kind is None, out
    assert set(out.value) == set(ids)
    for key, outcome in out.value.items():
        assert outcome.startswith("NotImplementedError:"), (key, outcome)


@pytest.mark.slow
@pytest.mark.parametrize("chapter", ["01_lora"])  # one chapter: the learners' command works (each
def test_nbval_self_check_reports_each_unfinished_exercise(chapter: str) -> None:  # notebook runs once)
    proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--nbval-lax",
                           str(exercise_nb(chapter))], capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert proc.returncode == 1, proc.stdout[-3000:]
    assert f"{len(graded_ids(chapter))} failed" in proc.stdout and "NotImplementedError" in proc.stdout


# The solved copy and each planted mistake run in a forked child of this process, on top of the
# chapter's setup cells executed once (course_helpers.run_forked): the same code as a fresh run,
# without re-running each chapter's experiments once per planted mistake.
@pytest.mark.slow
@pytest.mark.parametrize("chapter", CHAPTERS)
def test_the_solved_student_copy_passes_in_process(chapter: str) -> None:
    solution = read_notebook(solution_nb(chapter))
    graded = lambda c: cell(solution, course.cell_key(c)).source  # noqa: E731  visible checks + hidden tests
    out = run_forked(solution_nb(chapter), solved(chapter), lambda ns: exec_from(solved(chapter), ns, graded=graded))
    assert out.kind is None, out


@pytest.mark.slow
@pytest.mark.parametrize("chapter,grade_id,key,old,new", PLANTED, ids=PLANTED_IDS)
def test_planted_mistakes_fail_the_visible_check(chapter: str, grade_id: str, key: str, old: str,
                                                 new: str) -> None:
    nb = replace(solved(chapter), key, old, new)

    def body(ns: dict) -> None:
        exec_from(nb, ns, upto=grade_id)
        exec(cell(nb, grade_id).source, ns)

    out = run_forked(solution_nb(chapter), nb, body)
    assert out.assertion and out.kind == "CheckFailed" and "hint:" in out.message, out


@pytest.mark.slow
@pytest.mark.parametrize("chapter,grade_id,key,old,new", PLANTED, ids=PLANTED_IDS)
def test_planted_mistakes_fail_the_plain_hidden_asserts_even_with_every_check_defeated(
        chapter: str, grade_id: str, key: str, old: str, new: str) -> None:
    nb = replace(solved(chapter), key, old, new)

    def body(ns: dict) -> None:
        exec_from(nb, ns, upto=grade_id)
        for module in {lrkit.checks, checks_module(chapter)}:
            for name in dir(module):
                if name.startswith("check_"):
                    setattr(module, name, lambda *args, **kwargs: None)
        importlib.reload = lambda module: module  # the hidden tests' reload is defeated too (in the child)
        exec(hidden_tests(cell(read_notebook(solution_nb(chapter)), grade_id).source), ns)

    out = run_forked(solution_nb(chapter), nb, body)
    # a plain assert, or the learner's own error on the hand example, inside the hidden tests themselves
    # (the cell's visible experiment above them is not run: it prints, it does not grade)
    assert out.kind is not None and (out.assertion or out.runtime) and out.kind != "CheckFailed", out


def hidden_tests(source: str) -> str:
    """The lines of a graded cell's hidden-test regions (markers excluded)."""
    lines = source.split("\n")
    found = [ln for begin, end in regions(lines, HIDDEN) for ln in lines[begin + 1:end]]
    assert found, "a graded cell without hidden tests"
    return "\n".join(found)


@pytest.mark.parametrize("chapter", CHAPTERS)
def test_every_planted_mistake_is_a_real_edit_of_the_solution(chapter: str) -> None:
    nb, ids = solved(chapter), graded_ids(chapter)
    planted = CHAPTERS[chapter][2]
    assert {p[0] for p in planted} == set(ids), "every graded exercise needs at least one planted mistake"
    for _grade_id, key, old, _ in planted:
        assert old in cell(nb, key).source
