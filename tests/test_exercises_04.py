"""Chapter 4's exercises: the stubs fail every check, the solution passes, planted mistakes are caught.

Same protocol as ``tests/test_exercises.py`` (Chapter 1): planted mistakes are edits of the
solution's own code run in this process; the same cells with the visible checks (and the hidden
tests' ``importlib.reload``) defeated show that the plain hidden asserts alone catch them too.
``course_helpers.student_copy`` reads ``course_helpers.SOLUTION_NB``, pointed here at Chapter 4.
"""

from __future__ import annotations

import importlib
import subprocess
import sys
from typing import Iterator

import pytest

import course_helpers
import lrkit.checks
import lrkit.checks.sensing
from course_helpers import ROOT, cell, replace, run_in_process
from lrkit import course
from lrkit.course import execute_cells, read_notebook

CHAPTER = "04_matrix_sensing"
SOLUTION_NB = ROOT / "solutions" / f"{CHAPTER}.ipynb"
EXERCISE_NB = ROOT / "exercises" / f"{CHAPTER}.ipynb"
GRADED_IDS = [course.cell_key(c) for c in read_notebook(SOLUTION_NB).cells if course.is_graded_cell(c)]

# (graded cell, solution cell, text in the solution, plausible wrong text): each must be caught.
PLANTED: list[tuple[str, str, str, str]] = [
    ("measure_check", "measure", "(Z * M.unsqueeze(-3))", "(Z * M.transpose(-2, -1).unsqueeze(-3))"),
    ("measure_check", "measure", "* Z).sum(-3)", "* Z).mean(-3)"),
    ("symmetric_step_check", "symmetric_step", "(G + G.T) @ X", "2 * G @ X"),
    ("symmetric_step_check", "symmetric_step", "G = adjoint(Z, measure(Z, X @ X.T) - y) / m",
     "G = adjoint(Z, measure(Z, X @ X.T) - y)"),
    ("asymmetric_step_check", "asymmetric_step", "return B - lr * G @ A.T, A - lr * B.T @ G",
     "return B - lr * G @ A.T, A - lr * (B - lr * G @ A.T).T @ G"),
    ("asymmetric_step_check", "asymmetric_step", "A - lr * B.T @ G", "A - lr * B.T @ G.T"),
    ("fit_rate_check", "fit_rate", "np.log(e[keep])", "np.log10(e[keep])"),
    ("fit_rate_check", "fit_rate", "keep = np.isfinite(e) & (e >= lo) & (e <= hi)", "keep = np.isfinite(e)"),
    ("exponent_check", "prediction", "return 2", "return 1"),
    ("exponent_check", "prediction", "np.polyfit(np.log(omegas), np.log(rates), 1)[0]",
     "np.polyfit(omegas, rates, 1)[0]"),
]


@pytest.fixture
def student(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setattr(course_helpers, "SOLUTION_NB", SOLUTION_NB)
    return course_helpers.student_copy()


@pytest.fixture
def pristine_checks() -> Iterator[None]:
    """Hidden tests reload lrkit.checks.sensing; put the original module contents back afterwards."""
    modules = [lrkit.checks, lrkit.checks.sensing]
    saved = [dict(vars(m)) for m in modules]
    yield
    for m, s in zip(modules, saved):
        vars(m).clear()
        vars(m).update(s)


def test_the_notebook_tells_learners_how_to_check_themselves() -> None:
    nb = read_notebook(EXERCISE_NB)
    assert f"pytest --nbval-lax exercises/{CHAPTER}.ipynb" in nb.cells[0].source
    install = next(c for c in nb.cells if c.cell_type == "code")
    assert install.metadata.get("tags") == ["hide-input"] and 'find_spec("lrkit")' in install.source
    points = [course.nbgrader(c)["points"] for c in nb.cells if course.is_graded_cell(c)]
    assert len(points) >= 3 and sum(points) == 12


def test_exercises_are_up_to_date_and_leak_nothing() -> None:
    generated = course.notebook_text(course.generate_exercise(read_notebook(SOLUTION_NB)))
    assert EXERCISE_NB.read_text(encoding="utf-8") == generated, "run python -m lrkit.course make-exercises"
    assert "BEGIN SOLUTION" not in generated and "HIDDEN TESTS" not in generated and "_il.reload" not in generated


@pytest.mark.slow
def test_as_handed_out_every_check_fails_with_not_implemented() -> None:
    records = execute_cells(read_notebook(EXERCISE_NB), timeout=180, cell_timeout=90, cwd=str(ROOT / "exercises"))
    for r in records:
        if r.key in GRADED_IDS:
            assert r.status == "error" and r.message.startswith("NotImplementedError: replace this line"), r
        else:
            assert r.ok, r


@pytest.mark.slow
def test_the_solution_passes_every_check() -> None:
    records = execute_cells(read_notebook(SOLUTION_NB), timeout=180, cell_timeout=90, cwd=str(ROOT / "solutions"))
    assert [r for r in records if not r.ok] == []
    assert {r.key for r in records} >= set(GRADED_IDS)


@pytest.mark.slow
def test_nbval_self_check_reports_each_unfinished_exercise() -> None:
    proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--nbval-lax",
                           str(EXERCISE_NB)], capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert proc.returncode == 1, proc.stdout[-3000:]
    assert f"{len(GRADED_IDS)} failed" in proc.stdout and "NotImplementedError" in proc.stdout, proc.stdout[-3000:]


def test_the_solved_student_copy_passes_in_process(student, pristine_checks: None) -> None:
    for grade_id in GRADED_IDS:
        ns = run_in_process(student, grade_id)
        exec(cell(read_notebook(SOLUTION_NB), grade_id).source, ns)  # visible checks and hidden tests


@pytest.mark.parametrize("grade_id,key,old,new", PLANTED, ids=[f"{p[1]}:{p[3][:30]}" for p in PLANTED])
def test_planted_mistakes_fail_the_visible_check(student, grade_id: str, key: str, old: str, new: str) -> None:
    nb = replace(student, key, old, new)
    ns = run_in_process(nb, grade_id)
    with pytest.raises(AssertionError) as info:
        exec(cell(nb, grade_id).source, ns)
    assert type(info.value).__name__ == "CheckFailed" and "hint:" in str(info.value)


@pytest.mark.parametrize("grade_id,key,old,new", PLANTED, ids=[f"{p[1]}:{p[3][:30]}" for p in PLANTED])
def test_planted_mistakes_fail_the_plain_hidden_asserts_even_with_every_check_defeated(
        student, grade_id: str, key: str, old: str, new: str, pristine_checks: None,
        monkeypatch: pytest.MonkeyPatch) -> None:
    nb = replace(student, key, old, new)
    ns = run_in_process(nb, grade_id)
    for module in (lrkit.checks, lrkit.checks.sensing):
        for name in dir(module):
            if name.startswith("check_"):
                monkeypatch.setattr(module, name, lambda *args, **kwargs: None)
    monkeypatch.setattr(importlib, "reload", lambda module: module)  # the hidden tests' reload is defeated too
    with pytest.raises(Exception) as info:  # a plain assert, or the learner's own error on the hand example
        exec(cell(read_notebook(SOLUTION_NB), grade_id).source, ns)
    assert isinstance(info.value, (AssertionError, RuntimeError)) and "CheckFailed" not in type(info.value).__name__


def test_every_planted_mistake_is_a_real_edit_of_the_solution(student) -> None:
    for grade_id, key, old, new in PLANTED:
        assert grade_id in GRADED_IDS
        assert cell(student, key).source.count(old) == 1, (key, old)
