"""Exercises from solutions, self-checks and grading: ``python -m lrkit.course ...``.

A solution notebook (``solutions/NN_name.ipynb``) is the single source. Its markup is
nbgrader's, so instructors may also feed it to nbgrader:

* solution code sits between ``### BEGIN SOLUTION`` and ``### END SOLUTION`` in cells whose
  metadata is ``{"nbgrader": {"solution": true, "grade": false, "grade_id": ..., ...}}``;
  a ``# HINT: ...`` comment inside the region becomes the stub's message;
* graded check cells (``"grade": true, "points": N, "locked": true``) call :mod:`lrkit.checks`
  and may hold hidden tests between ``### BEGIN HIDDEN TESTS`` and ``### END HIDDEN TESTS``.

Commands:

* ``make-exercises [--check]``: write ``exercises/NN_name.ipynb`` from each solution (regions
  become ``raise NotImplementedError(hint)``, hidden tests vanish, outputs are stripped, the
  rest is kept byte for byte); ``--check`` only reports exercises that are out of date.
* ``check NOTEBOOK``: run one notebook cell by cell and report every graded check.
* ``grade SOLUTION SUBMISSIONS_DIR --out grades.csv``: run each submission in a fresh kernel,
  in its own process, with a time limit; graded cells are restored from the solution (by
  grade id / cell id), hidden tests included; writes the CSV and ``feedback/<student>.txt``.
* ``check-leaks PATH...``: fail when a solution line or hidden test appears in the files.

Grading runs each kernel in a sandbox (:mod:`lrkit.course.sandbox`) and scores tampering code 0
(:mod:`lrkit.course.tamper`); the threat model is on the book's instructor page.
"""

from __future__ import annotations

try:  # the instructor tools need nbformat, nbclient and ipykernel: the "instructor" extra
    import nbclient  # noqa: F401
    import nbformat  # noqa: F401
except ImportError as err:  # pragma: no cover - exercised by the bare-install test's environment
    raise ImportError(f"lrkit.course needs the instructor tools ({err.name} is missing): "
                      'pip install "lrkit[instructor]"') from err

from .cli import main
from .execute import CellRecord, execute_cells, kernel_env
from .generate import generate_exercise, make_exercises, solution_problems
from .grade import (
    Exercise,
    Grade,
    Score,
    assemble,
    exercises_of,
    feedback_text,
    grade_folder,
    grade_submission,
    grade_worker,
    load_submission,
    score,
)
from .leaks import check_leaks, hinted_solution_lines, leaked_solution_lines, secret_lines
from .markup import (
    DEFAULT_HINT,
    HIDDEN,
    HINT_PREFIX,
    KERNEL_NAME,
    MARKDOWN_STUB,
    MAX_KERNEL_STARTS,
    MAX_OUTPUT_CHARS,
    MAX_SUBMISSION_BYTES,
    MIN_LEAK_CHARS,
    SOLUTION,
    cell_key,
    is_graded_cell,
    is_solution_cell,
    nbgrader,
    notebook_text,
    read_notebook,
    regions,
    strip_hidden_tests,
    stub_solutions,
)

__all__ = [
    "CellRecord", "DEFAULT_HINT", "Exercise", "Grade", "HIDDEN", "HINT_PREFIX", "KERNEL_NAME",
    "MARKDOWN_STUB", "MAX_KERNEL_STARTS", "MAX_OUTPUT_CHARS", "MAX_SUBMISSION_BYTES",
    "MIN_LEAK_CHARS", "SOLUTION", "Score", "assemble", "cell_key", "check_leaks", "execute_cells",
    "exercises_of", "feedback_text", "generate_exercise", "grade_folder", "grade_submission",
    "grade_worker", "hinted_solution_lines", "is_graded_cell", "is_solution_cell", "kernel_env",
    "leaked_solution_lines", "load_submission", "main", "make_exercises", "nbgrader",
    "notebook_text", "read_notebook", "regions", "score", "secret_lines", "solution_problems",
    "strip_hidden_tests", "stub_solutions",
]
