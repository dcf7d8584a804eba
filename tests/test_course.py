"""lrkit.course: exercises generated from solutions, no leaks, and a grader that survives anything."""

from __future__ import annotations

import csv
import html
import json
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import nbformat
import pytest
from course_helpers import EXERCISE_NB, ROOT, SOLUTION_NB, cell, hostile_submissions, student_copy, write
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

from lrkit import course
from lrkit.course import (
    assemble,
    execute_cells,
    generate_exercise,
    leaked_solution_lines,
    load_submission,
    make_exercises,
    notebook_text,
    read_notebook,
    solution_problems,
)
from lrkit.course.sandbox import detect

GRADED = {"grade": True, "grade_id": "ex1_check", "locked": True, "points": 2, "schema_version": 3,
          "solution": False, "task": False}
SOLVED = {"grade": False, "grade_id": "ex1", "locked": False, "schema_version": 3, "solution": True, "task": False}

SOLUTION_SRC = '''def double(x: int) -> int:
    """Twice x."""
    ### BEGIN SOLUTION
    # HINT: multiply by two
    y = x * 2
    return y
    ### END SOLUTION'''

CHECK_SRC = '''assert double(2) == 4
### BEGIN HIDDEN TESTS
assert double(21) == 42, "hidden: double(21)"
### END HIDDEN TESTS'''


def tiny_solution() -> nbformat.NotebookNode:
    """A two-exercise solution notebook small enough to run in a second."""
    return new_notebook(cells=[
        new_markdown_cell("# Tiny", id="intro"),
        new_code_cell("import math", id="setup"),
        new_code_cell(SOLUTION_SRC, id="ex1", metadata={"nbgrader": SOLVED}),
        new_code_cell(CHECK_SRC, id="ex1_check", metadata={"nbgrader": GRADED}),
        new_code_cell("def triple(x):\n    ### BEGIN SOLUTION\n    return 3 * x\n    ### END SOLUTION", id="ex2",
                      metadata={"nbgrader": {**SOLVED, "grade_id": "ex2"}}),
        new_code_cell("assert triple(1) == 3", id="ex2_check",
                      metadata={"nbgrader": {**GRADED, "grade_id": "ex2_check", "points": 1}}),
    ], metadata={"kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"}})


# --------------------------------------------------------------------------- generating exercises


def test_a_solution_region_becomes_a_stub_with_its_hint_and_indentation() -> None:
    stub = course.stub_solutions(SOLUTION_SRC)
    assert stub == ('def double(x: int) -> int:\n    """Twice x."""\n    raise NotImplementedError('
                    '"replace this line with your solution. Hint: multiply by two")')
    top = course.stub_solutions("x = 1\n### BEGIN SOLUTION\ny = 2\n### END SOLUTION\nz = 3")
    assert top == 'x = 1\nraise NotImplementedError("replace this line with your solution")\nz = 3'


def test_a_written_answer_becomes_your_answer_here() -> None:
    nb = tiny_solution()
    nb.cells.insert(1, new_markdown_cell("Why?\n### BEGIN SOLUTION\nBecause B = 0 at step 0.\n### END SOLUTION",
                                         id="why", metadata={"nbgrader": {**SOLVED, "grade_id": "why"}}))
    assert generate_exercise(nb).cells[1].source == "Why?\nYOUR ANSWER HERE"
    assert "Because B = 0 at step 0." in course.secret_lines(nb)


def test_hidden_tests_vanish_and_nothing_else_changes() -> None:
    assert course.strip_hidden_tests(CHECK_SRC) == "assert double(2) == 4"
    assert course.strip_hidden_tests("a = 1\n\n") == "a = 1\n\n"  # untouched without markers


@pytest.mark.parametrize("source,problem", [
    ("### BEGIN SOLUTION\nx = 1", "never closed"),
    ("x = 1\n### END SOLUTION", "without"),
    ("### BEGIN SOLUTION\n### BEGIN SOLUTION\n### END SOLUTION", "inside another region"),
])
def test_unbalanced_markers_are_refused(source: str, problem: str) -> None:
    nb = tiny_solution()
    nb.cells[2].source = source
    with pytest.raises(ValueError, match=problem):
        generate_exercise(nb)


def test_broken_nbgrader_markup_is_reported() -> None:
    nb = tiny_solution()
    nb.cells[3].metadata.nbgrader["points"] = 0
    nb.cells[4].metadata.nbgrader["grade_id"] = "ex1"
    nb.cells[1].source = "### BEGIN HIDDEN TESTS\n### END HIDDEN TESTS"
    nb.cells[5].id = "ex2"
    problems = "\n".join(solution_problems(nb))
    for part in ("points > 0", "duplicate grade_id 'ex1'", "hidden tests belong in a graded cell", "duplicate cell id"):
        assert part in problems, problems
    assert solution_problems(tiny_solution()) == []


def test_generation_strips_outputs_keeps_ids_metadata_and_other_cells() -> None:
    nb = tiny_solution()
    nb.cells[1].outputs = [nbformat.v4.new_output("stream", text="hi")]
    nb.cells[1].execution_count = 3
    nb.cells[1].metadata["execution"] = {"iopub.execute_input": "2024"}
    ex = generate_exercise(nb)
    assert [c.id for c in ex.cells] == [c.id for c in nb.cells]
    assert [c.metadata.get("nbgrader") for c in ex.cells] == [c.metadata.get("nbgrader") for c in nb.cells]
    assert ex.cells[1].outputs == [] and ex.cells[1].execution_count is None and "execution" not in ex.cells[1].metadata
    assert ex.cells[0].source == "# Tiny" and ex.cells[1].source == "import math"
    assert "HIDDEN" not in ex.cells[3].source and "double(21)" not in ex.cells[3].source
    assert notebook_text(generate_exercise(nb)) == notebook_text(ex)  # deterministic


def test_make_exercises_writes_then_reports_stale_and_orphan_files(tmp_path: Path) -> None:
    sols, exs = tmp_path / "solutions", tmp_path / "exercises"
    sols.mkdir()
    write(sols / "01_tiny.ipynb", tiny_solution())
    assert make_exercises(sols, exs) == [f"wrote {exs / '01_tiny.ipynb'}"]
    assert make_exercises(sols, exs, check=True) == []
    (exs / "01_tiny.ipynb").write_text((exs / "01_tiny.ipynb").read_text().replace("Tiny", "Edited"))
    (exs / "99_orphan.ipynb").write_text("{}")
    stale = make_exercises(sols, exs, check=True)
    assert len(stale) == 2 and "out of date" in stale[0] and "no solution notebook" in stale[1]
    assert course.main(["make-exercises", "--solutions", str(sols), "--exercises", str(exs), "--check"]) == 1


def test_exercises_folder_is_what_the_generator_writes() -> None:
    assert make_exercises(ROOT / "solutions", ROOT / "exercises", check=True) == [], \
        "exercises/ is out of date: run `python -m lrkit.course make-exercises`"


def test_solution_markup_is_nbgrader_compatible() -> None:
    solution = read_notebook(SOLUTION_NB)
    assert solution_problems(solution) == []
    keys = {"grade", "grade_id", "locked", "schema_version", "solution"}
    graded = [c for c in solution.cells if course.is_graded_cell(c)]
    solved = [c for c in solution.cells if course.is_solution_cell(c)]
    assert len(graded) >= 4 and len(solved) >= 4
    for c in graded:
        assert keys | {"points"} <= set(c.metadata.nbgrader) and c.metadata.nbgrader["schema_version"] == 3
        assert c.metadata.nbgrader["locked"] and not c.metadata.nbgrader["solution"]
    for c in solved:
        assert keys <= set(c.metadata.nbgrader) and not c.metadata.nbgrader["locked"] and c.id


# --------------------------------------------------------------------------- leaks


def test_no_solution_or_hidden_test_in_the_exercises() -> None:
    solution, text = read_notebook(SOLUTION_NB), EXERCISE_NB.read_text()
    exercise = read_notebook(EXERCISE_NB)
    assert leaked_solution_lines(solution, "\n".join(c.source for c in exercise.cells)) == []
    for marker in ("BEGIN SOLUTION", "END SOLUTION", "HIDDEN TESTS", "hidden test:"):
        assert marker not in text
    assert len(course.secret_lines(solution)) > 20


def _as_highlighted_html(code: str) -> str:
    """Roughly what Sphinx/Pygments makes of code: every token in its own escaped span."""
    tokens = re.findall(r"\w+|\s+|[^\w\s]", code)
    return "<html><body><pre>" + "".join(f'<span class="n">{html.escape(t)}</span>' for t in tokens) + "</pre>"


def test_leaks_are_found_in_text_and_in_highlighted_html(tmp_path: Path) -> None:
    solution = read_notebook(SOLUTION_NB)
    body = cell(solution, "lora_forward").source.split("\n")[-2]  # the solution's return line
    assert leaked_solution_lines(solution, f"prefix\n{body}\nsuffix") == [" ".join(body.split())]
    assert leaked_solution_lines(solution, _as_highlighted_html(body)) == [" ".join(body.split())]
    hidden = "_il.reload(_lc).check_lora_forward(lora_forward, seed=7)"
    assert leaked_solution_lines(solution, _as_highlighted_html(hidden)) == [hidden]
    assert leaked_solution_lines(solution, _as_highlighted_html(cell(solution, "update").source)) == []
    (tmp_path / "page.html").write_text(_as_highlighted_html(body))
    (tmp_path / "clean.html").write_text(_as_highlighted_html(cell(read_notebook(EXERCISE_NB), "merge").source))
    args = ["check-leaks", str(tmp_path), "--solutions", str(ROOT / "solutions")]
    assert course.main(args) == 1
    (tmp_path / "page.html").unlink()
    assert course.main(args) == 0



def test_what_a_hint_quotes_is_public_but_the_rest_of_the_solution_is_not() -> None:
    src = ("def f(x):\n    ### BEGIN SOLUTION\n    # HINT: start with y_value = helper(x)\n"
           "    y_value = helper(x)\n    return y_value * secret_constant\n    ### END SOLUTION")
    solution = new_notebook(cells=[new_code_cell(src, id="ex1", metadata={"nbgrader": SOLVED}),
                                   new_code_cell(CHECK_SRC, id="ex1_check", metadata={"nbgrader": GRADED})])
    exercise = course.notebook_text(course.generate_exercise(solution))
    assert "y_value = helper(x)" in exercise  # quoted by the hint, on purpose
    assert leaked_solution_lines(solution, exercise) == []
    assert leaked_solution_lines(solution, "return y_value * secret_constant") == ["return y_value * secret_constant"]

# --------------------------------------------------------------------------- putting a submission together


def test_cells_are_matched_by_id_and_locked_cells_restored() -> None:
    sol = tiny_solution()
    sub = generate_exercise(sol)
    sub.cells[2].source = "def double(x):\n    return x + x"
    sub.cells[3].source = "pass  # no check here"
    nb, notes = assemble(sol, sub)
    assert nb.cells[2].source == "def double(x):\n    return x + x"
    assert nb.cells[3].source == CHECK_SRC  # restored, with its hidden tests
    assert notes == ["the check cell 'ex1_check' was edited; the original was run"]


def test_reordered_deleted_and_added_cells() -> None:
    sol = tiny_solution()
    sub = generate_exercise(sol)
    sub.cells[2].source = "def double(x):\n    return 2 * x"
    helper = new_code_cell("HELPER = 1")
    sub.cells = [sub.cells[0], sub.cells[5], sub.cells[2], helper, sub.cells[1]]  # ex2 and ex1_check deleted
    for c in sub.cells:  # ids lost (an old Jupyter): grade ids still match
        c.pop("id", None)
    nb, notes = assemble(sol, sub)
    sources = [c.source for c in nb.cells]
    assert sources[3:5] == ["HELPER = 1", "import math"]  # added (or unmatchable) cells stay after ex1
    assert [c.id for c in nb.cells if course.cell_key(c)[:2] == "ex"] == ["ex1", "ex1_check", "ex2", "ex2_check"]
    assert nb.cells[2].source == "def double(x):\n    return 2 * x"
    assert "NotImplementedError" in nb.cells[-2].source  # the missing ex2 runs its stub
    assert "cells were moved around; they were run in the original order" in notes
    assert "cell 'ex2' is missing from the submission; its stub was run instead" in notes
    assert "the check cell 'ex1_check' was deleted; the original was run" in notes


@pytest.mark.parametrize("content,reason", [
    ("{ not json", "not valid JSON"),
    ('{"cells": "nope", "nbformat": 4}', "without 'nbformat' and a list of 'cells'"),
    ('[1, 2]', "without 'nbformat'"),
    ('{"cells": [{"cell_type": "code", "source": 3}], "nbformat": 4, "nbformat_minor": 5, "metadata": {}}',
     "not a usable Jupyter notebook"),
])
def test_unusable_files_are_refused_with_a_reason(tmp_path: Path, content: str, reason: str) -> None:
    path = tmp_path / "s.ipynb"
    path.write_text(content)
    with pytest.raises(ValueError, match=re.escape(reason)):
        load_submission(path)


def test_huge_files_are_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(course.grade, "MAX_SUBMISSION_BYTES", 10)
    path = write(tmp_path / "s.ipynb", tiny_solution())
    with pytest.raises(ValueError, match="MB"):
        load_submission(path)


# --------------------------------------------------------------------------- running notebooks (real kernels)


def _run(*sources: str, **kwargs: Any) -> list[course.CellRecord]:
    return execute_cells(new_notebook(cells=[new_code_cell(s) for s in sources]), **kwargs)


@pytest.mark.slow
def test_a_kernel_that_dies_at_start_is_reported_with_its_last_words(tmp_path: Path,
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    # the kernel's Python imports this at start, writes to stderr and exits before it can reply
    (tmp_path / "sitecustomize.py").write_text("import sys\nsys.stderr.write('lrkit-probe: cannot start')\n"
                                               "sys.stderr.flush()\nimport os\nos._exit(3)\n")
    monkeypatch.setenv("PYTHONPATH", str(tmp_path))
    records = _run("a = 1", "b = 2", timeout=30, cell_timeout=20)
    assert [r.status for r in records] == ["not-run", "not-run"]
    assert "the kernel could not run the notebook" in records[0].message
    assert "stderr ended with: lrkit-probe: cannot start" in records[0].message, records[0].message


@pytest.mark.slow
def test_a_hanging_cell_is_stopped_and_the_rest_still_runs() -> None:
    start, kernels = time.monotonic(), []
    records = _run("a = 1", "while True:\n    pass", "assert a == 1", "", timeout=60, cell_timeout=3,
                   on_event=lambda kind, value: kernels.append(value) if kind == "kernel" else None)
    assert [r.status for r in records] == ["ok", "timeout", "ok", "ok"]
    assert "did not finish within 3 s" in records[1].message
    assert time.monotonic() - start < 20
    # no kernel outlives the run: the spinning one was left running at full CPU before the fix
    assert len(kernels) == 2 and all(isinstance(pid, int) for pid in kernels)
    time.sleep(0.5)
    alive = [pid for pid in kernels if Path(f"/proc/{pid}").exists()
             and "zombie" not in Path(f"/proc/{pid}/status").read_text().lower()]
    assert alive == [], f"kernels still running after execute_cells: {alive}"


@pytest.mark.slow
def test_the_notebook_time_limit_stops_everything_after_it() -> None:
    records = _run("a = 1", "import time\nwhile True:\n    time.sleep(0.1)", "b = 2", timeout=5, cell_timeout=60)
    assert [r.status for r in records] == ["ok", "timeout", "not-run"]
    assert "time limit" in records[1].message and "time limit" in records[2].message


@pytest.mark.slow
def test_a_killed_kernel_is_replaced_and_exit_is_an_error() -> None:
    records = _run("a = 1", "import os\nos._exit(1)", "import sys\nsys.exit(2)", "assert a == 1\nprint('x' * 10**6)",
                   timeout=60, cell_timeout=20)
    assert [r.status for r in records] == ["ok", "dead", "error", "ok"]
    assert "kernel died" in records[1].message and records[2].message == "SystemExit: 2"


@pytest.mark.slow
def test_megabytes_of_output_are_cut() -> None:
    nb = new_notebook(cells=[new_code_cell("for _ in range(100):\n    print('y' * 50_000)")])
    records = execute_cells(nb, timeout=60, cell_timeout=30)
    assert records[0].ok
    kept = sum(len(o.get("text", "")) for o in nb.cells[0].outputs)
    assert kept <= course.MAX_OUTPUT_CHARS + 100 and "[output cut by lrkit.course]" in str(nb.cells[0].outputs)


@pytest.mark.slow
def test_check_command_reports_each_graded_cell(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    solution = write(tmp_path / "solution.ipynb", tiny_solution())
    exercise = write(tmp_path / "exercise.ipynb", generate_exercise(tiny_solution()))
    assert course.main(["check", str(solution), "--cell-timeout", "20"]) == 0
    assert "PASS [2 pt] ex1_check\nPASS [1 pt] ex2_check" in capsys.readouterr().out
    assert course.main(["check", str(exercise), "--cell-timeout", "20"]) == 1
    out = capsys.readouterr().out
    assert "FAIL [2 pt] ex1_check\n    NotImplementedError: replace this line with your solution. Hint: multiply" in out


# --------------------------------------------------------------------------- grading hostile submissions


@pytest.fixture(scope="module")
def graded(tmp_path_factory: pytest.TempPathFactory) -> dict[str, object]:
    """Grade every hostile submission once, two at a time, through the command line."""
    folder = tmp_path_factory.mktemp("grading")
    hostile_submissions(folder / "submissions")
    (folder / "submissions" / "README.txt").write_text("not a notebook, not graded")
    start = time.monotonic()
    proc = subprocess.run([sys.executable, "-m", "lrkit.course", "grade", str(SOLUTION_NB), str(folder / "submissions"),
                           "--out", str(folder / "out" / "grades.csv"), "--timeout", "90", "--cell-timeout", "20",
                           "--jobs", "2"], capture_output=True, text=True, timeout=400)
    with (folder / "out" / "grades.csv").open() as f:
        rows = {r["student"]: r for r in csv.DictReader(f)}
    feedback = {p.stem: p.read_text() for p in (folder / "out" / "feedback").glob("*.txt")}
    seconds = {m[0]: float(m[1]) for m in re.findall(r"^(\w+): .* \(([\d.]+) s\)$", proc.stdout, re.M)}
    return {"proc": proc, "rows": rows, "feedback": feedback, "seconds": seconds, "wall": time.monotonic() - start}


FULL = {"init_lora_check": "2", "lora_forward_check": "3", "merge_check": "2", "count_check": "2",
        "scaling_check": "1", "energy_check": "2"}


def _points(row: dict[str, str]) -> dict[str, str]:
    return {k: row[k] for k in FULL}


def _zeroed(graded: dict, student: str) -> set[str]:
    return {k for k, v in _points(graded["rows"][student]).items() if v == "0"}


@pytest.mark.slow
def test_grading_finishes_and_writes_a_row_and_feedback_per_student(graded: dict) -> None:
    proc = graded["proc"]
    assert proc.returncode == 0, proc.stderr
    students = {"good", "raises", "loops", "sysexit", "oskill", "killparent", "chatty", "cheat", "shuffled",
                "notjson", "notnotebook"}
    assert set(graded["rows"]) == students and set(graded["feedback"]) == students
    assert all(r["max"] == "12" for r in graded["rows"].values())
    assert graded["wall"] < 360


@pytest.mark.slow
def test_a_correct_submission_gets_full_marks_within_the_budget(graded: dict) -> None:
    assert _points(graded["rows"]["good"]) == FULL and graded["rows"]["good"]["total"] == "12"
    assert graded["seconds"]["good"] < 30


@pytest.mark.slow
@pytest.mark.parametrize("student,lost,why", [
    ("raises", {"lora_forward_check"}, "your cell 'lora_forward': ValueError: I give up"),
    ("loops", {"count_check"}, "your cell 'count_lora_params': did not finish within 20 s"),
    ("sysexit", {"scaling_check"}, "your cell 'lora_scaling': SystemExit: 3"),
    ("oskill", {"merge_check"}, "your cell 'merge': the kernel died"),
    # in a sandbox the kernel sees no parent (getppid() is 0, it is its namespace's init): the kill
    # reaches nothing and costs nothing; without one it kills the worker, and the exercise is lost
    ("killparent", set() if detect().isolated else {"energy_check"},
     "" if detect().isolated else "the grading process was stopped before the end"),
    ("shuffled", {"energy_check"}, "cell 'energy_rank' is missing from the submission"),
    ("chatty", set(), ""),
])
def test_a_broken_cell_costs_only_its_exercise(graded: dict, student: str, lost: set[str], why: str) -> None:
    assert _zeroed(graded, student) == lost
    assert why in graded["feedback"][student]


@pytest.mark.slow
def test_redefined_checks_and_edited_check_cells_do_not_save_wrong_answers(graded: dict) -> None:
    assert _zeroed(graded, "cheat") == set(FULL)
    text = graded["feedback"]["cheat"]
    assert text.count("was edited; the original was run") >= len(FULL)
    # setattr on lrkit.checks and importlib.reload: the tampering is recognised before anything runs
    assert text.count("can tamper with the checks") == len(FULL) and "imports importlib" in text


@pytest.mark.slow
@pytest.mark.parametrize("student", ["notjson", "notnotebook"])
def test_a_file_that_is_no_notebook_gets_zero_and_a_reason(graded: dict, student: str) -> None:
    assert graded["rows"][student]["total"] == "0"
    assert "not a Jupyter notebook" in graded["feedback"][student]


@pytest.mark.slow
def test_every_lost_point_has_a_reason(graded: dict) -> None:
    for student, row in graded["rows"].items():
        text = graded["feedback"][student]
        for grade_id, full in FULL.items():
            block = text.split(f"{grade_id}: ")[1].split("\n")
            if row[grade_id] != full:
                assert block[1].startswith("    ") and len(block[1].strip()) > 10, (student, grade_id, text)
            else:
                assert block[0].endswith("passed")


def test_grade_refuses_a_missing_folder(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert course.main(["grade", str(SOLUTION_NB), str(tmp_path / "nowhere")]) == 2
    assert "is not a folder" in capsys.readouterr().err


def test_a_student_copy_differs_from_the_exercise_only_in_solution_cells() -> None:
    exercise, copy_ = read_notebook(EXERCISE_NB), student_copy()
    changed = [c.id for c, e in zip(copy_.cells, exercise.cells) if c.source != e.source]
    assert changed == [c.id for c in exercise.cells if course.is_solution_cell(c)]
    assert json.loads(nbformat.writes(copy_))["nbformat"] == 4
