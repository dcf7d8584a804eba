"""Helpers for the course-tooling tests: learner submissions built from a frozen solution notebook.

The fixture (tests/fixtures/grading_solution.ipynb) is Chapter 1's solution notebook as it was when
the grader was written, with its planted mistakes below, so the tooling tests do not move when the
chapter is reworked; it still runs against today's lrkit (its checks are public API).

A *student copy* is what a learner who solved everything hands in: the exercise notebook with
each stub replaced by the solution's code (so: no hidden tests, no markers). Planted mistakes
and hostile submissions are small text edits of it.
"""

from __future__ import annotations

import copy
import json
import os
import pickle
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import nbformat
import torch
from nbformat import NotebookNode

from lrkit.course import HIDDEN, SOLUTION, cell_key, generate_exercise, read_notebook, regions

ROOT = Path(__file__).resolve().parents[1]
SOLUTION_NB = ROOT / "tests" / "fixtures" / "grading_solution.ipynb"
EXERCISE_NB = ROOT / "tests" / "fixtures" / "grading_exercise.ipynb"

PLANTED = [
    ('init_lora_check', 'init_lora', 'torch.zeros(base.out_features, rank)', 'torch.randn(base.out_features, rank)'),
    ('init_lora_check', 'init_lora', 'torch.empty(rank, base.in_features)', 'torch.empty(base.in_features, rank)'),
    ('init_lora_check', 'init_lora', 'a=math.sqrt(5)', 'a=0'),
    ('lora_forward_check', 'lora_forward', 'scaling = alpha / A.shape[0]', 'scaling = alpha'),
    ('lora_forward_check', 'lora_forward', '(h @ A.T) @ B.T', '(h @ B) @ A'),
    ('lora_forward_check', 'lora_forward', 'h = dropout(x) if', 'x = h = dropout(x) if'),
    ('merge_check', 'merge', 'W0 + (alpha / A.shape[0]) * (B @ A)', 'W0 + alpha * (B @ A)'),
    ('merge_check', 'merge', 'W0 + (alpha / A.shape[0]) * (B @ A)', 'W0 + (alpha / A.shape[0]) * (A.T @ B.T)'),
    ('merge_check', 'merge', 'W - (alpha / A.shape[0])', 'W + (alpha / A.shape[0])'),
    ('count_check', 'count_lora_params', 'rank * (module.in_features + module.out_features)', 'rank * module.in_features'),
    ('count_check', 'count_lora_params', 'targeted = targets is None or', 'targeted = True or'),
    ('count_check', 'count_lora_params', 'return total', 'return total + sum(p.numel() for p in model.parameters())'),
    ('scaling_check', 'lora_scaling', 'alpha / math.sqrt(rank) if rslora else alpha / rank', 'alpha / rank'),
    ('scaling_check', 'lora_scaling', 'alpha / math.sqrt(rank) if rslora', 'math.sqrt(alpha / rank) if rslora'),
    ('energy_check', 'energy_rank', 'delta.double()) ** 2', 'delta.double())'),
    ('energy_check', 'energy_rank', 'frac - 1e-12).sum()) + 1', 'frac - 1e-12).sum())'),
]



def _without_markers(source: str) -> str:
    lines = source.split("\n")
    drop = set()
    for markers in (SOLUTION, HIDDEN):
        for begin, end in regions(lines, markers):
            drop.update({begin, end} if markers == SOLUTION else set(range(begin, end + 1)))
    return "\n".join(ln for i, ln in enumerate(lines) if i not in drop and not ln.strip().startswith("# HINT:"))


def student_copy(solution_nb: Path = SOLUTION_NB) -> NotebookNode:
    """The exercise notebook, every exercise solved with the solution's code."""
    solution, exercise = read_notebook(solution_nb), generate_exercise(read_notebook(solution_nb))
    for sol_cell, ex_cell in zip(solution.cells, exercise.cells):
        if ex_cell.cell_type == "code" and ex_cell.source != sol_cell.source and SOLUTION[0] in sol_cell.source:
            ex_cell.source = _without_markers(sol_cell.source)
    return exercise


def cell(nb: NotebookNode, key: str) -> NotebookNode:
    """The cell with this grade id or cell id."""
    return next(c for c in nb.cells if cell_key(c) == key or c.get("id") == key)


def edit(nb: NotebookNode, key: str, change: Callable[[str], str]) -> NotebookNode:
    """A copy of ``nb`` whose cell ``key`` has ``change(source)`` as its source."""
    nb = copy.deepcopy(nb)
    target = cell(nb, key)
    new = change(target.source)
    assert new != target.source, f"the edit of {key!r} changed nothing"
    target.source = new
    return nb


def replace(nb: NotebookNode, key: str, old: str, new: str) -> NotebookNode:
    """A copy of ``nb`` with ``old`` replaced by ``new`` in cell ``key`` (``old`` must occur)."""
    assert old in cell(nb, key).source, f"{old!r} is not in cell {key!r}"
    return edit(nb, key, lambda s: s.replace(old, new))


def write(path: Path, nb: NotebookNode | str) -> Path:
    path.write_text(nb if isinstance(nb, str) else nbformat.writes(nb), encoding="utf-8")
    return path


def run_in_process(nb: NotebookNode, upto: str) -> dict[str, Any]:
    """Execute the code cells of ``nb`` before the graded cell ``upto``, skipping graded cells; the namespace."""
    ns: dict[str, Any] = {"__name__": "__course_test__"}
    for c in nb.cells:
        if cell_key(c) == upto:
            return ns
        if c.cell_type == "code" and not c.metadata.get("nbgrader", {}).get("grade"):
            exec(compile(c.source, f"<cell {cell_key(c)}>", "exec"), ns)
    raise KeyError(upto)


def _exercise_start(nb: NotebookNode) -> int:
    """Index of the first exercise cell (a solution or a graded cell): the setup runs before it."""
    return next(i for i, c in enumerate(nb.cells)
                if c.cell_type == "code" and (c.metadata.get("nbgrader", {}).get("solution")
                                              or c.metadata.get("nbgrader", {}).get("grade")))


_SETUPS: dict[Path, tuple[str, dict[str, Any]]] = {}


def _setup_namespace(solution_nb: Path) -> tuple[str, dict[str, Any]]:
    """The namespace after the solved copy's setup cells (run once per notebook, in this process)."""
    if solution_nb not in _SETUPS:
        nb = student_copy(solution_nb)
        start = _exercise_start(nb)
        ns: dict[str, Any] = {"__name__": "__course_test__"}
        for c in nb.cells[:start]:
            if c.cell_type == "code":
                exec(compile(c.source, f"<cell {cell_key(c)}>", "exec"), ns)
        _SETUPS[solution_nb] = (notebook_prefix(nb, start), ns)
    return _SETUPS[solution_nb]


def notebook_prefix(nb: NotebookNode, stop: int) -> str:
    """The code of ``nb``'s cells before ``stop``: two notebooks share a setup iff these agree."""
    return "\n\0".join(c.source for c in nb.cells[:stop] if c.cell_type == "code")


@dataclass(frozen=True)
class Outcome:
    """What happened in a forked run: nothing raised (``kind is None``), or the exception's facts."""

    kind: str | None = None
    message: str = ""
    assertion: bool = False
    runtime: bool = False
    value: Any = None


def run_forked(solution_nb: Path, nb: NotebookNode, body: Callable[[dict[str, Any]], Any]) -> Outcome:
    """Run ``body(ns)`` in a forked child whose ``ns`` holds ``nb``'s setup, already executed.

    The setup cells (before the first exercise) of the solved copy of ``solution_nb`` run once in
    this process; ``nb`` (an edit of that copy, or the exercise notebook) must share them exactly.
    Each call forks, so nothing ``body`` does (edited definitions, reloaded or monkeypatched checks,
    the global random stream) reaches this process or the next test. POSIX only (fork); sets
    this process to one torch thread (see the comment below).
    """
    # One intra-op thread in this process from here on: a child forked from a process whose OpenMP
    # pool has run with several threads deadlocks in its first parallel region (GNU libgomp), which
    # a plain `pytest` without OMP_NUM_THREADS=1 hit in the chapters' checks.
    torch.set_num_threads(1)
    prefix, ns = _setup_namespace(solution_nb)
    assert notebook_prefix(nb, _exercise_start(nb)) == prefix, "the notebook's setup differs from the solution's"
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: never returns into pytest
        os.close(read)
        try:
            value = body(ns)
            out = Outcome(value=value if value is not ns else None)
        except BaseException as e:
            out = Outcome(type(e).__name__, str(e), isinstance(e, AssertionError), isinstance(e, RuntimeError))
        try:
            data = pickle.dumps(out)
        except Exception as e:
            data = pickle.dumps(Outcome("UnpicklableResult", repr(e)))
        with os.fdopen(write, "wb") as f:
            f.write(data)
        os._exit(0)
    os.close(write)
    with os.fdopen(read, "rb") as f:
        data = f.read()
    _, status = os.waitpid(pid, 0)
    assert data, f"the forked run died without a report (wait status {status})"
    result: Outcome = pickle.loads(data)
    return result


def exec_from(nb: NotebookNode, ns: dict[str, Any], upto: str | None = None,
              graded: Callable[[NotebookNode], str | None] = lambda c: None) -> dict[str, Any]:
    """Continue ``nb`` in ``ns`` from its first exercise up to the graded cell ``upto`` (None: to the end).

    A graded cell runs ``graded(cell)`` when that returns a source (else it is skipped).
    """
    for c in nb.cells[_exercise_start(nb):]:
        if upto is not None and cell_key(c) == upto:
            return ns
        if c.cell_type != "code":
            continue
        source = graded(c) if c.metadata.get("nbgrader", {}).get("grade") else c.source
        if source is not None:
            exec(compile(source, f"<cell {cell_key(c)}>", "exec"), ns)
    if upto is not None:
        raise KeyError(upto)
    return ns


def hostile_submissions(folder: Path) -> dict[str, Path]:
    """Write the hostile submissions of issue 3 into ``folder``; name -> path."""
    folder.mkdir(parents=True, exist_ok=True)
    good = student_copy()
    cheat = good
    for _, key, old, new in PLANTED:
        if old in cell(cheat, key).source:
            cheat = replace(cheat, key, old, new)
    defeat = ("\nimport importlib, lrkit.checks\nimportlib.reload = lambda module: module\n"
              "for _name in dir(lrkit.checks):\n    if _name.startswith('check_'):\n"
              "        setattr(lrkit.checks, _name, lambda *a, **k: print('all good!'))")
    for c in cheat.cells:  # check cells "edited to pass"; before each, the checks themselves redefined
        if c.metadata.get("nbgrader", {}).get("grade"):
            c.source = "pass"
        elif c.metadata.get("nbgrader", {}).get("solution"):
            c.source += defeat
    shuffled = copy.deepcopy(good)
    shuffled.cells = [c for c in shuffled.cells if cell_key(c) not in ("energy_rank", "merge_check")]
    shuffled.cells = shuffled.cells[:3] + shuffled.cells[3:][::-1]
    subs: dict[str, NotebookNode | str] = {
        "good": good,
        "raises": edit(good, "lora_forward", lambda s: 'raise ValueError("I give up")\n' + s),
        "loops": edit(good, "count_lora_params", lambda s: s + "\nwhile True:\n    pass"),
        "sysexit": edit(good, "lora_scaling", lambda s: "import sys\nsys.exit(3)\n" + s),
        "oskill": edit(good, "merge", lambda s: "import os\nos._exit(1)\n" + s),
        "killparent": edit(good, "energy_rank", lambda s: s + "\nimport os, signal\n"
                                                               "os.kill(os.getppid(), signal.SIGKILL)"),
        "chatty": edit(good, "init_lora", lambda s: s + "\nfor _ in range(200):\n    print('x' * 50_000)"),
        "cheat": cheat,
        "shuffled": shuffled,
        "notjson": "{ this is not json",
        "notnotebook": json.dumps({"hello": "world", "cells": "nope"}),
    }
    return {name: write(folder / f"{name}.ipynb", nb) for name, nb in subs.items()}
