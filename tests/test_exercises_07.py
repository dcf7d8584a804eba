"""Chapter 7's exercises: the stubs fail every check, the solution passes, planted mistakes are caught.

Same protocol as ``tests/test_exercises.py`` (Chapter 1): planted mistakes are edits of the
solution's own code run in this process; the same cells with the visible checks (and the hidden
tests' ``importlib.reload``) defeated show that the plain hidden asserts alone catch them too.
``course_helpers.student_copy`` reads its solution from ``course_helpers.SOLUTION_NB``, which
each test points at this chapter's notebook.
"""

from __future__ import annotations

import importlib
import subprocess
import sys
from typing import Iterator

import pytest

import course_helpers
import lrkit.checks
import lrkit.checks.rf
from course_helpers import ROOT, cell, replace, run_in_process
from lrkit import course
from lrkit.course import execute_cells, read_notebook

CHAPTER = "07_random_features"
SOLUTION = ROOT / "solutions" / f"{CHAPTER}.ipynb"
EXERCISE = ROOT / "exercises" / f"{CHAPTER}.ipynb"
POINTS = 10

# (graded cell, solution cell, text in the solution, plausible wrong text): each must be caught.
PLANTED: list[tuple[str, str, str, str]] = [
    ("kappa_check", "solve_kappa_bisect", "if lhs(mid) > n:", "if lhs(mid) < n:"),
    ("kappa_check", "solve_kappa_bisect", "+ ridge / kappa", "+ ridge * kappa"),
    ("kappa_check", "solve_kappa_bisect", "return math.sqrt(lo * hi)", "return (lo + hi) / 2 * 1.01"),
    ("krr_check", "krr_theory", "return eigvals / (eigvals + kappa)", "return kappa / (eigvals + kappa)"),
    ("krr_check", "krr_theory", "return e0 * (float(", "return (float("),
    ("krr_check", "krr_theory", "(1 - L) ** 2 * coeffs", "(1 - L) * coeffs"),
    ("krr_check", "krr_theory", "n / (n - float((L ** 2).sum()))", "n / (n + float((L ** 2).sum()))"),
    ("optimal_check", "optimal_risk_vs_k", "nan=math.inf).min(-1).values", "nan=math.inf)[:, 0]"),
    ("optimal_check", "optimal_risk_vs_k", "nan=math.inf).min(-1).values", "nan=-math.inf).max(-1).values"),
]


def graded_ids() -> list[str]:
    return [course.cell_key(c) for c in read_notebook(SOLUTION).cells if course.is_graded_cell(c)]


def student_copy(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setattr(course_helpers, "SOLUTION_NB", SOLUTION)
    return course_helpers.student_copy()


@pytest.fixture
def pristine_checks() -> Iterator[None]:
    """Hidden tests reload lrkit.checks.rf; put the original module contents back afterwards."""
    modules = [lrkit.checks, lrkit.checks.rf]
    saved = [dict(vars(m)) for m in modules]
    yield
    for m, s in zip(modules, saved):
        vars(m).clear()
        vars(m).update(s)


def test_the_notebook_tells_learners_how_to_check_themselves() -> None:
    nb = read_notebook(EXERCISE)
    assert f"pytest --nbval-lax exercises/{CHAPTER}.ipynb" in nb.cells[0].source
    install = next(c for c in nb.cells if c.cell_type == "code")
    assert install.metadata.get("tags") == ["hide-input"] and 'find_spec("lrkit")' in install.source
    points = [course.nbgrader(c)["points"] for c in nb.cells if course.is_graded_cell(c)]
    assert len(points) >= 3 and sum(points) == POINTS


def test_exercises_are_up_to_date_and_leak_nothing() -> None:
    generated = course.notebook_text(course.generate_exercise(read_notebook(SOLUTION)))
    assert EXERCISE.read_text(encoding="utf-8") == generated, "run python -m lrkit.course make-exercises"
    assert "BEGIN SOLUTION" not in generated and "HIDDEN TESTS" not in generated and "_il.reload" not in generated


@pytest.mark.slow
def test_as_handed_out_every_check_fails_with_not_implemented() -> None:
    records = execute_cells(read_notebook(EXERCISE), timeout=180, cell_timeout=90, cwd=str(ROOT / "exercises"))
    ids = graded_ids()
    for r in records:
        if r.key in ids:
            assert r.status == "error" and r.message.startswith("NotImplementedError:"), r
        else:
            assert r.ok, r


@pytest.mark.slow
def test_the_solution_passes_every_check() -> None:
    records = execute_cells(read_notebook(SOLUTION), timeout=180, cell_timeout=90, cwd=str(ROOT / "solutions"))
    assert [r for r in records if not r.ok] == []
    assert {r.key for r in records} >= set(graded_ids())


@pytest.mark.slow
def test_nbval_self_check_reports_each_unfinished_exercise() -> None:
    proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--nbval-lax",
                           str(EXERCISE)], capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert proc.returncode == 1, proc.stdout[-3000:]
    assert f"{len(graded_ids())} failed" in proc.stdout and "NotImplementedError" in proc.stdout


def test_the_solved_student_copy_passes_in_process(pristine_checks: None, monkeypatch: pytest.MonkeyPatch) -> None:
    nb = student_copy(monkeypatch)
    for grade_id in graded_ids():
        ns = run_in_process(nb, grade_id)
        exec(cell(read_notebook(SOLUTION), grade_id).source, ns)  # visible checks and hidden tests


@pytest.mark.parametrize("grade_id,key,old,new", PLANTED, ids=[f"{p[1]}:{p[3][:30]}" for p in PLANTED])
def test_planted_mistakes_fail_the_visible_check(grade_id: str, key: str, old: str, new: str,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    nb = replace(student_copy(monkeypatch), key, old, new)
    ns = run_in_process(nb, grade_id)
    with pytest.raises(AssertionError) as info:
        exec(cell(nb, grade_id).source, ns)
    assert type(info.value).__name__ == "CheckFailed" and "hint:" in str(info.value)


@pytest.mark.parametrize("grade_id,key,old,new", PLANTED, ids=[f"{p[1]}:{p[3][:30]}" for p in PLANTED])
def test_planted_mistakes_fail_the_plain_hidden_asserts_even_with_every_check_defeated(
        grade_id: str, key: str, old: str, new: str, pristine_checks: None, monkeypatch: pytest.MonkeyPatch) -> None:
    nb = replace(student_copy(monkeypatch), key, old, new)
    ns = run_in_process(nb, grade_id)
    for module in (lrkit.checks, lrkit.checks.rf):
        for name in dir(module):
            if name.startswith("check_"):
                monkeypatch.setattr(module, name, lambda *args, **kwargs: None)
    monkeypatch.setattr(importlib, "reload", lambda module: module)  # the hidden tests' reload is defeated too
    with pytest.raises(Exception) as info:  # a plain assert, or the learner's own error on the hand example
        exec(cell(read_notebook(SOLUTION), grade_id).source, ns)
    assert isinstance(info.value, (AssertionError, RuntimeError)) and "CheckFailed" not in type(info.value).__name__


def test_every_planted_mistake_is_a_real_edit_of_the_solution(monkeypatch: pytest.MonkeyPatch) -> None:
    for grade_id, key, old, new in PLANTED:
        assert grade_id in graded_ids()
        assert old in cell(student_copy(monkeypatch), key).source
