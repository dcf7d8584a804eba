"""Chapters 2 and 3's exercises: the stubs fail every check, the solutions pass, planted mistakes are caught.

Same protocol as ``tests/test_exercises.py`` (Chapter 1): planted mistakes are edits of the
solution's own code run in this process; the same cells with the visible checks (and the hidden
tests' ``importlib.reload``) defeated show that the plain hidden asserts alone catch them too.
The helpers of ``course_helpers`` are used as they are: ``student_copy`` reads its solution
from ``course_helpers.SOLUTION_NB``, which each test points at this chapter's notebook.
"""

from __future__ import annotations

import importlib
import subprocess
import sys
from pathlib import Path
from typing import Iterator

import pytest

import course_helpers
import lrkit.checks
import lrkit.checks.deep_linear
import lrkit.checks.ssm
from course_helpers import ROOT, cell, replace, run_in_process
from lrkit import course
from lrkit.course import execute_cells, read_notebook

CHAPTERS = {
    "02_deep_linear": (lrkit.checks.deep_linear, 7),
    "03_ssm": (lrkit.checks.ssm, 8),
}

# (chapter, graded cell, solution cell, text in the solution, plausible wrong text): each must be caught.
PLANTED: list[tuple[str, str, str, str, str]] = [
    ("02_deep_linear", "saxe_u_check", "saxe_u", "torch.exp(2 * s * t / tau)", "torch.exp(s * t / tau)"),
    ("02_deep_linear", "saxe_u_check", "saxe_u", "e - 1 + s / u0", "e - 1 + u0 / s"),
    ("02_deep_linear", "learning_time_check", "learning_time", "tau / (2 * s)", "tau / s"),
    ("02_deep_linear", "learning_time_check", "learning_time", "uf * (s - u0) / (u0 * (s - uf))",
     "u0 * (s - uf) / (uf * (s - u0))"),
    ("02_deep_linear", "gd_step_check", "gd_step", "W1 + lr * W2.T @ E", "W1 - lr * W2.T @ E"),
    ("02_deep_linear", "gd_step_check", "gd_step", "W2 + lr * E @ W1.T",
     "W2 + lr * (target - W2 @ W1_new) @ W1_new.T"),
    ("03_ssm", "kernel_check", "ssm_kernel", "A ** l", "A ** (l + 1)"),
    ("03_ssm", "kernel_check", "ssm_kernel", "(C * B * A ** l)", "(B * A ** l)"),
    ("03_ssm", "fft_check", "ssm_output_fft", "n = 2 * L", "n = L"),
    ("03_ssm", "statistics_check", "sufficient_statistics", "(Y * GU.conj())", "(Y * GU)"),
    ("03_ssm", "statistics_check", "sufficient_statistics", "(GU.abs() ** 2).sum() / (M * L * L)",
     "(GU.abs() ** 2).sum() / (M * L)"),
    ("03_ssm", "statistics_check", "sufficient_statistics", "(GU.abs() ** 2)", "(GU.abs())"),
]


def solution_nb(chapter: str) -> Path:
    return ROOT / "solutions" / f"{chapter}.ipynb"


def exercise_nb(chapter: str) -> Path:
    return ROOT / "exercises" / f"{chapter}.ipynb"


def graded_ids(chapter: str) -> list[str]:
    return [course.cell_key(c) for c in read_notebook(solution_nb(chapter)).cells if course.is_graded_cell(c)]


def student_copy(chapter: str, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setattr(course_helpers, "SOLUTION_NB", solution_nb(chapter))
    return course_helpers.student_copy()


@pytest.fixture
def pristine_checks() -> Iterator[None]:
    """Hidden tests reload the chapters' check modules; put their original contents back afterwards."""
    modules = [lrkit.checks, lrkit.checks.deep_linear, lrkit.checks.ssm]
    saved = [dict(vars(m)) for m in modules]
    yield
    for m, s in zip(modules, saved):
        vars(m).clear()
        vars(m).update(s)


@pytest.mark.parametrize("chapter", CHAPTERS)
def test_the_notebook_tells_learners_how_to_check_themselves(chapter: str) -> None:
    nb = read_notebook(exercise_nb(chapter))
    assert f"pytest --nbval-lax exercises/{chapter}.ipynb" in nb.cells[0].source
    install = next(c for c in nb.cells if c.cell_type == "code")
    assert install.metadata.get("tags") == ["hide-input"] and 'find_spec("lrkit")' in install.source
    points = [course.nbgrader(c)["points"] for c in nb.cells if course.is_graded_cell(c)]
    assert len(points) >= 3 and sum(points) == CHAPTERS[chapter][1]


@pytest.mark.parametrize("chapter", CHAPTERS)
def test_exercises_are_up_to_date_and_leak_nothing(chapter: str) -> None:
    generated = course.notebook_text(course.generate_exercise(read_notebook(solution_nb(chapter))))
    assert exercise_nb(chapter).read_text(encoding="utf-8") == generated, "run python -m lrkit.course make-exercises"
    assert "BEGIN SOLUTION" not in generated and "HIDDEN TESTS" not in generated and "_il.reload" not in generated


@pytest.mark.slow
@pytest.mark.parametrize("chapter", CHAPTERS)
def test_as_handed_out_every_check_fails_with_not_implemented(chapter: str) -> None:
    records = execute_cells(read_notebook(exercise_nb(chapter)), timeout=180, cell_timeout=90,
                            cwd=str(ROOT / "exercises"))
    ids = graded_ids(chapter)
    for r in records:
        if r.key in ids:
            assert r.status == "error" and r.message.startswith("NotImplementedError:"), r
        else:
            assert r.ok, r


@pytest.mark.slow
@pytest.mark.parametrize("chapter", CHAPTERS)
def test_the_solution_passes_every_check(chapter: str) -> None:
    records = execute_cells(read_notebook(solution_nb(chapter)), timeout=180, cell_timeout=90,
                            cwd=str(ROOT / "solutions"))
    assert [r for r in records if not r.ok] == []
    assert {r.key for r in records} >= set(graded_ids(chapter))


@pytest.mark.slow
@pytest.mark.parametrize("chapter", CHAPTERS)
def test_nbval_self_check_reports_each_unfinished_exercise(chapter: str) -> None:
    proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--nbval-lax",
                           str(exercise_nb(chapter))], capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert proc.returncode == 1, proc.stdout[-3000:]
    assert f"{len(graded_ids(chapter))} failed" in proc.stdout and "NotImplementedError" in proc.stdout


@pytest.mark.parametrize("chapter", CHAPTERS)
def test_the_solved_student_copy_passes_in_process(chapter: str, pristine_checks: None,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    nb = student_copy(chapter, monkeypatch)
    for grade_id in graded_ids(chapter):
        ns = run_in_process(nb, grade_id)
        exec(cell(read_notebook(solution_nb(chapter)), grade_id).source, ns)  # visible checks and hidden tests


@pytest.mark.parametrize("chapter,grade_id,key,old,new", PLANTED, ids=[f"{p[2]}:{p[4][:30]}" for p in PLANTED])
def test_planted_mistakes_fail_the_visible_check(chapter: str, grade_id: str, key: str, old: str, new: str,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    nb = replace(student_copy(chapter, monkeypatch), key, old, new)
    ns = run_in_process(nb, grade_id)
    with pytest.raises(AssertionError) as info:
        exec(cell(nb, grade_id).source, ns)
    assert type(info.value).__name__ == "CheckFailed" and "hint:" in str(info.value)


@pytest.mark.parametrize("chapter,grade_id,key,old,new", PLANTED, ids=[f"{p[2]}:{p[4][:30]}" for p in PLANTED])
def test_planted_mistakes_fail_the_plain_hidden_asserts_even_with_every_check_defeated(
        chapter: str, grade_id: str, key: str, old: str, new: str, pristine_checks: None,
        monkeypatch: pytest.MonkeyPatch) -> None:
    nb = replace(student_copy(chapter, monkeypatch), key, old, new)
    ns = run_in_process(nb, grade_id)
    for module in (lrkit.checks, CHAPTERS[chapter][0]):
        for name in dir(module):
            if name.startswith("check_"):
                monkeypatch.setattr(module, name, lambda *args, **kwargs: None)
    monkeypatch.setattr(importlib, "reload", lambda module: module)  # the hidden tests' reload is defeated too
    with pytest.raises(Exception) as info:  # a plain assert, or the learner's own error on the hand example
        exec(cell(read_notebook(solution_nb(chapter)), grade_id).source, ns)
    assert isinstance(info.value, (AssertionError, RuntimeError)) and "CheckFailed" not in type(info.value).__name__


def test_every_planted_mistake_is_a_real_edit_of_the_solution(monkeypatch: pytest.MonkeyPatch) -> None:
    for chapter, grade_id, key, old, new in PLANTED:
        assert grade_id in graded_ids(chapter)
        assert old in cell(student_copy(chapter, monkeypatch), key).source
