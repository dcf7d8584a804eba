"""Chapter 1's exercises: the stubs fail every check, the solution passes, planted mistakes are caught.

Planted mistakes are edits of the solution's own code, run in this process (fast); the same
cells with the visible checks disabled show that the hidden tests alone catch them too.
"""

from __future__ import annotations

import importlib
import subprocess
import sys
from typing import Iterator

import pytest

import lrkit.checks
from course_helpers import EXERCISE_NB, PLANTED, ROOT, SOLUTION_NB, cell, replace, run_in_process, student_copy
from lrkit import course
from lrkit.course import execute_cells, read_notebook

GRADED_IDS = [course.cell_key(c) for c in read_notebook(SOLUTION_NB).cells if course.is_graded_cell(c)]


@pytest.fixture
def pristine_checks() -> Iterator[None]:
    """Hidden tests reload lrkit.checks; put the original module contents back afterwards."""
    saved = dict(vars(lrkit.checks))
    yield
    vars(lrkit.checks).clear()
    vars(lrkit.checks).update(saved)


def test_the_notebook_tells_learners_how_to_check_themselves() -> None:
    nb = read_notebook(EXERCISE_NB)
    assert "pytest --nbval-lax exercises/01_lora.ipynb" in nb.cells[0].source
    install = next(c for c in nb.cells if c.cell_type == "code")
    assert install.metadata.get("tags") == ["hide-input"] and 'find_spec("lrkit")' in install.source
    points = [course.nbgrader(c)["points"] for c in nb.cells if course.is_graded_cell(c)]
    assert len(points) >= 4 and sum(points) == 12


@pytest.mark.slow
def test_as_handed_out_every_check_fails_with_not_implemented() -> None:
    nb = read_notebook(EXERCISE_NB)
    records = {r.key: r for r in execute_cells(nb, timeout=120, cell_timeout=60, cwd=str(ROOT / "exercises"))}
    for key, r in records.items():
        if key in GRADED_IDS:
            assert r.status == "error" and r.message.startswith("NotImplementedError: replace this line"), r
        else:
            assert r.ok, r


@pytest.mark.slow
def test_the_solution_passes_every_check() -> None:
    records = execute_cells(read_notebook(SOLUTION_NB), timeout=120, cell_timeout=60, cwd=str(ROOT / "solutions"))
    assert [r for r in records if not r.ok] == []
    assert {r.key for r in records} >= set(GRADED_IDS)


@pytest.mark.slow
def test_nbval_self_check_reports_each_unfinished_exercise() -> None:
    proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--nbval-lax",
                           str(EXERCISE_NB)], capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert proc.returncode == 1, proc.stdout[-3000:]
    assert f"{len(GRADED_IDS)} failed" in proc.stdout and "NotImplementedError" in proc.stdout, proc.stdout[-3000:]


def test_the_solved_student_copy_passes_in_process(pristine_checks: None) -> None:
    nb = student_copy()
    for grade_id in GRADED_IDS:
        ns = run_in_process(nb, grade_id)
        exec(cell(read_notebook(SOLUTION_NB), grade_id).source, ns)  # visible checks and hidden tests


@pytest.mark.parametrize("grade_id,key,old,new", PLANTED, ids=[f"{p[1]}:{p[3][:30]}" for p in PLANTED])
def test_planted_mistakes_fail_the_visible_check(grade_id: str, key: str, old: str, new: str) -> None:
    nb = replace(student_copy(), key, old, new)
    ns = run_in_process(nb, grade_id)
    with pytest.raises(AssertionError) as info:
        exec(cell(nb, grade_id).source, ns)
    assert type(info.value).__name__ == "CheckFailed" and "hint:" in str(info.value)


@pytest.mark.parametrize("grade_id,key,old,new", PLANTED, ids=[f"{p[1]}:{p[3][:30]}" for p in PLANTED])
def test_planted_mistakes_fail_the_plain_hidden_asserts_even_with_every_check_defeated(
        grade_id: str, key: str, old: str, new: str, pristine_checks: None, monkeypatch: pytest.MonkeyPatch) -> None:
    nb = replace(student_copy(), key, old, new)
    ns = run_in_process(nb, grade_id)
    for name in dir(lrkit.checks):
        if name.startswith("check_"):
            monkeypatch.setattr(lrkit.checks, name, lambda *args, **kwargs: None)
    monkeypatch.setattr(importlib, "reload", lambda module: module)  # the hidden tests' reload is defeated too
    with pytest.raises(Exception) as info:  # a plain assert, or the learner's own error on the hand example
        exec(cell(read_notebook(SOLUTION_NB), grade_id).source, ns)
    assert isinstance(info.value, (AssertionError, RuntimeError)) and "CheckFailed" not in type(info.value).__name__
