"""Chapters 5 and 6's exercises: the stubs fail every check, the solutions pass, planted mistakes are caught.

Same protocol as ``tests/test_exercises.py`` (Chapter 1): planted mistakes are edits of the
solution's own code run in this process; the same cells with the visible checks (and the hidden
tests' ``importlib.reload``) defeated show that the plain hidden asserts alone catch them too.
``course_helpers.student_copy`` reads its solution from ``course_helpers.SOLUTION_NB``, which each
test points at this chapter's notebook.
"""

from __future__ import annotations

import importlib
import subprocess
import sys
import time
from pathlib import Path
from typing import Iterator

import pytest

import course_helpers
import lrkit.checks
import lrkit.checks.lora_init
import lrkit.checks.lora_plus
from course_helpers import ROOT, cell, replace, run_in_process
from lrkit import course
from lrkit.course import execute_cells, read_notebook

CHAPTERS = {
    "05_lora_init": (lrkit.checks.lora_init, 8),
    "06_lora_plus": (lrkit.checks.lora_plus, 9),
}
CH5, CH6 = "05_lora_init", "06_lora_plus"
KAIMING_B = "nn.init.kaiming_uniform_(B, a=math.sqrt(5))"
NOT_FROZEN = "        if not p.requires_grad:\n            continue\n"
POLYFIT = "np.polyfit(np.log(np.asarray(widths, dtype=float)), np.log(np.asarray(values, dtype=float)), 1)"

# (chapter, graded cell, solution cell, text in the solution, plausible wrong text): each must be caught.
PLANTED: list[tuple[str, str, str, str, str]] = [
    # Init[A] / Init[B]
    (CH5, "init_pair_check", "init_pair", KAIMING_B, "nn.init.kaiming_uniform_(A, a=math.sqrt(5))"),  # B = Init[A]
    (CH5, "init_pair_check", "init_pair", KAIMING_B, "B.zero_()"),                          # Init[B] with B zero
    (CH5, "init_pair_check", "init_pair", KAIMING_B,                                        # B's fan from out
     "nn.init.uniform_(B, -1 / math.sqrt(out_features), 1 / math.sqrt(out_features))"),
    (CH5, "init_pair_check", "init_pair", "nn.init.kaiming_uniform_(A, a=math.sqrt(5))",
     "nn.init.normal_(A, std=1 / math.sqrt(in_features))"),
    # the largest stable rate
    (CH5, "largest_stable_check", "largest_stable", ".any(axis=1)", ".all(axis=1)"),
    (CH5, "largest_stable_check", "largest_stable", "return float(lrs[k])", "return float(lrs[stable].max())"),
    (CH5, "largest_stable_check", "largest_stable", 'return float("nan")', "return float(lrs[0])"),
    # the exponent
    (CH5, "stability_exponent_check", "stability_exponent", "np.log(np.asarray(values, dtype=float))",
     "np.asarray(values, dtype=float)"),                                                    # fitted on lr, not log lr
    (CH5, "stability_exponent_check", "stability_exponent", POLYFIT,
     "np.polyfit(np.log(np.asarray(values, dtype=float)), np.log(np.asarray(widths, dtype=float)), 1)"),
    (CH5, "predicted_exponents_check", "predicted_exponents", '{"A": -0.5, "B": -1.0}', '{"A": -1.0, "B": -0.5}'),
    (CH5, "predicted_exponents_check", "predicted_exponents", '{"A": -0.5, "B": -1.0}', '{"A": 0.5, "B": 1.0}'),
    # LoRA+ groups
    (CH6, "loraplus_groups_check", "loraplus_groups", '{"A": lr, "B": lr * ratio, "other": lr}',
     '{"A": lr * ratio, "B": lr, "other": lr}'),                                            # ratio applied to A
    (CH6, "loraplus_groups_check", "loraplus_groups", '"B": lr * ratio', '"B": lr / ratio'),
    (CH6, "loraplus_groups_check", "loraplus_groups", '"other": lr}', '"other": lr * ratio}'),  # PEFT's bias rule
    (CH6, "loraplus_groups_check", "loraplus_groups", NOT_FROZEN, ""),                      # frozen params included
    # batched Adam
    (CH6, "adam_step_check", "adam_step", "m_hat = m / (1 - b1 ** t)\n    v_hat = v / (1 - b2 ** t)",
     "m_hat = m\n    v_hat = v"),
    (CH6, "adam_step_check", "adam_step", "rate = lr.reshape((-1,) + (1,) * (param.ndim - 1))", "rate = lr.mean()"),
    (CH6, "adam_step_check", "adam_step", "(v_hat.sqrt() + eps)", "(v_hat + eps).sqrt()"),
    # the best ratio
    (CH6, "best_ratio_check", "best_ratio", "float(eta_B[j] / eta_A[i])", "float(eta_A[i] / eta_B[j])"),
    (CH6, "best_ratio_check", "best_ratio", "np.where(np.isnan(score), np.inf, np.asarray(score, dtype=float))"
     ".mean(axis=-1)", "np.nanmean(np.asarray(score, dtype=float), axis=-1)"),
    (CH6, "predicted_ratio_exponent_check", "predicted_ratio_exponent", "return 1.0", "return -1.0"),
    (CH6, "predicted_ratio_exponent_check", "predicted_ratio_exponent", "return 1.0", "return 0.5"),
]
PLANTED_IDS = [f"{p[2]}:{p[4][:30]}" for p in PLANTED]


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
    modules = [lrkit.checks] + [m for m, _ in CHAPTERS.values()]
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
    assert f"({CHAPTERS[chapter][1]} in all)" in nb.cells[0].source


@pytest.mark.parametrize("chapter", CHAPTERS)
def test_exercises_are_up_to_date_and_leak_nothing(chapter: str) -> None:
    generated = course.notebook_text(course.generate_exercise(read_notebook(solution_nb(chapter))))
    assert exercise_nb(chapter).read_text(encoding="utf-8") == generated, "run python -m lrkit.course make-exercises"
    assert "BEGIN SOLUTION" not in generated and "HIDDEN TESTS" not in generated and "_il.reload" not in generated
    assert course.leaked_solution_lines(read_notebook(solution_nb(chapter)), generated) == []


@pytest.mark.slow
@pytest.mark.parametrize("chapter", CHAPTERS)
def test_as_handed_out_every_check_fails_with_not_implemented(chapter: str) -> None:
    records = execute_cells(read_notebook(exercise_nb(chapter)), timeout=180, cell_timeout=90,
                            cwd=str(ROOT / "exercises"))
    ids = graded_ids(chapter)
    assert {r.key for r in records} >= set(ids)
    for r in records:
        if r.key in ids:
            assert r.status == "error" and r.message.startswith("NotImplementedError: replace this line"), r
        else:
            assert r.ok, r


@pytest.mark.slow
@pytest.mark.parametrize("chapter", CHAPTERS)
def test_the_solution_passes_every_check_within_budget(chapter: str) -> None:
    start = time.monotonic()
    records = execute_cells(read_notebook(solution_nb(chapter)), timeout=180, cell_timeout=90,
                            cwd=str(ROOT / "solutions"))
    assert [r for r in records if not r.ok] == []
    assert {r.key for r in records} >= set(graded_ids(chapter))
    assert time.monotonic() - start < 60, "each solution notebook must run in under 60 s on the course machine"


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


@pytest.mark.parametrize("chapter,grade_id,key,old,new", PLANTED, ids=PLANTED_IDS)
def test_planted_mistakes_fail_the_visible_check(chapter: str, grade_id: str, key: str, old: str, new: str,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    nb = replace(student_copy(chapter, monkeypatch), key, old, new)
    ns = run_in_process(nb, grade_id)
    with pytest.raises(AssertionError) as info:
        exec(cell(nb, grade_id).source, ns)
    assert type(info.value).__name__ == "CheckFailed" and "hint:" in str(info.value)


@pytest.mark.parametrize("chapter,grade_id,key,old,new", PLANTED, ids=PLANTED_IDS)
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
        assert cell(student_copy(chapter, monkeypatch), key).source.count(old) == 1
    for chapter in CHAPTERS:  # at least one planted mistake per graded exercise
        assert {p[1] for p in PLANTED if p[0] == chapter} == set(graded_ids(chapter))


@pytest.mark.parametrize("chapter", CHAPTERS)
def test_the_checks_pass_lrkit_itself_on_several_seeds(chapter: str) -> None:
    """The references accept their own answers whatever the seed: no seed-dependent false alarm."""
    import numpy as np
    import torch

    from lrkit import init, optim, sweep

    def init_pair(rank: int, in_features: int, out_features: int, init_name: str):
        A, B = torch.empty(rank, in_features), torch.empty(out_features, rank)
        init.init_lora_(A, B, torch.empty(0), 1.0, init_name)
        return A, B

    def adam(param, grad, m, v, t, lr):
        state = optim.AdamState(param)
        state.m, state.v, state.step = m.clone(), v.clone(), t - 1
        return optim.batched_adam_step(param, grad, state, lr), state.m, state.v

    def ratio(eta_A, eta_B, score):
        a, b, _ = sweep.best_pair(eta_A, eta_B, score)
        return b / a

    for seed in range(6):
        if chapter == CH5:
            c = lrkit.checks.lora_init
            c.check_init_pair(lambda rank, in_features, out_features, init: init_pair(
                rank, in_features, out_features, init), seed=seed)
            c.check_largest_stable_lr(lambda lrs, diverged: sweep.largest_stable_lr(lrs, np.asarray(diverged)), seed)
            c.check_fit_exponent(lambda widths, values: sweep.fit_exponent(widths, values).exponent, seed)
            c.check_predicted_exponents(lambda: {"A": -0.5, "B": -1.0}, seed)
        else:
            c = lrkit.checks.lora_plus
            c.check_loraplus_groups(optim.loraplus_param_groups, seed)
            c.check_adam_step(adam, seed)
            c.check_best_ratio(ratio, seed)
            c.check_predicted_ratio_exponent(lambda: 1.0, seed)
