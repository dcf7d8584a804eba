"""Grading a folder of submissions against a solution: scores, reasons, feedback files."""

from __future__ import annotations

import concurrent.futures
import copy
import csv
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Iterable, Sequence

import nbformat
from nbformat import NotebookNode

from .execute import CellRecord, execute_cells, kernel_env
from .generate import generate_exercise
from .markup import MAX_SUBMISSION_BYTES, cell_key, is_graded_cell, is_solution_cell, nbgrader, read_notebook
from .sandbox import Limits, Sandbox, detect
from .tamper import tamper_findings


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
                extras.setdefault(anchor, []).append(nbformat.v4.new_code_cell(cell.get("source", "")))
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


def load_submission(path: Path) -> NotebookNode:
    """Read a submission; ``ValueError`` with a readable reason when it is not a usable notebook."""
    size = path.stat().st_size
    if size > MAX_SUBMISSION_BYTES:
        raise ValueError(f"the file is {size / 1e6:.0f} MB, more than {MAX_SUBMISSION_BYTES / 1e6:.0f} MB")
    text = path.read_text(encoding="utf-8", errors="replace")
    try:
        raw = json.loads(text)
    except ValueError as e:
        raise ValueError(f"not a Jupyter notebook: the file is not valid JSON ({e})") from None
    if not (isinstance(raw, dict) and isinstance(raw.get("cells"), list) and "nbformat" in raw):
        raise ValueError("not a Jupyter notebook: valid JSON, but without 'nbformat' and a list of 'cells'")
    try:
        nb = nbformat.reads(text, as_version=4)
        if not all(isinstance(c, dict) and isinstance(c.get("source", ""), str) for c in nb.cells):
            raise ValueError("a cell without source")
    except Exception as e:
        raise ValueError(f"not a usable Jupyter notebook ({type(e).__name__}: {str(e)[:200]})") from None
    return nb


def grade_worker(solution_path: Path, submission_path: Path, channel: int, timeout: float, cell_timeout: float,
                 sandbox: Sandbox | None = None) -> None:
    """Run one submission; after every event write the whole state (JSON: notes, records, tampered,
    kernel pids, done) as one line to the file descriptor ``channel``.

    The kernel never holds ``channel`` (kernels start with their descriptors closed, inside the
    sandbox), so what the grader reads there comes from this process alone.
    """
    state: dict[str, Any] = {"notes": [], "records": [], "tampered": {}, "kernels": [], "done": False}
    out = os.fdopen(channel, "w", encoding="utf-8", buffering=1)

    def send() -> None:
        out.write(json.dumps(state) + "\n")

    try:
        solution = read_notebook(solution_path)
        nb, state["notes"] = assemble(solution, load_submission(submission_path))
        state["tampered"] = tampering(solution, nb)
        send()

        def on_event(kind: str, value: Any) -> None:
            if kind == "kernel":
                state["kernels"].append(value)
            else:
                state["records"] = [r for r in state["records"] if r["index"] != value.index] + [asdict(value)]
            send()

        state["records"] = [asdict(r) for r in execute_cells(nb, timeout=timeout, cell_timeout=cell_timeout,
                                                             on_event=on_event, sandbox=sandbox)]
    except ValueError as e:
        state["notes"].append(str(e))
    except Exception as e:  # a grader bug must cost this submission, not the whole run
        state["notes"].append(f"the grader failed on this submission: {type(e).__name__}: {e}")
    state["done"] = True
    send()
    out.close()


def _kill_kernels(pids: Iterable[Any]) -> None:
    """Kill the process groups of kernels a dead worker left behind (only if still kernels)."""
    for pid in pids:
        try:
            cmdline = Path(f"/proc/{int(pid)}/cmdline").read_bytes()
            if b"ipykernel" in cmdline or b"bwrap" in cmdline or b"unshare" in cmdline:
                os.killpg(os.getpgid(int(pid)), signal.SIGKILL)
        except (OSError, TypeError, ValueError):
            pass


def _read_lines(stream: Any, sink: list[str]) -> None:
    for line in stream:
        sink.append(line)


def grade_submission(solution_path: Path, submission_path: Path, timeout: float = 300,
                     cell_timeout: float = 60, sandbox: Sandbox | None = None, index: int = 0) -> Grade:
    """Grade one submission in a separate worker process, its kernel inside ``sandbox``.

    The worker starts with ``python -P`` in an empty folder of its own (nothing planted in a
    working folder is imported), reports over a pipe only it holds, and whatever the kernel left
    running is killed at the end (every process of the kernel's user id, or its process group).
    """
    solution, start = read_notebook(solution_path), time.monotonic()
    box = (sandbox or Sandbox("none")).prepare(index)
    spec = json.dumps({"mode": box.mode, "hidden": [str(h) for h in box.hidden], "uid": box.uid,
                       "scratch": str(box.scratch), "limits": asdict(box.limits)})
    lines: list[str] = []
    with tempfile.TemporaryDirectory(prefix="lrkit-worker-") as cwd:
        read_fd, write_fd = os.pipe()
        cmd = [sys.executable, "-P", "-m", "lrkit.course", "_worker", str(solution_path), str(submission_path),
               str(write_fd), "--timeout", str(timeout), "--cell-timeout", str(cell_timeout), "--sandbox", spec]
        proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                start_new_session=True, env=kernel_env(), cwd=cwd, pass_fds=(write_fd,))
        os.close(write_fd)
        reader = threading.Thread(target=_read_lines, args=(os.fdopen(read_fd, encoding="utf-8"), lines),
                                  daemon=True)
        reader.start()
        try:
            proc.wait(timeout=timeout + 60)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        reader.join(timeout=10)
    state: dict[str, Any] = {"notes": [], "records": []}
    for line in reversed(lines):
        try:
            state = json.loads(line)
            break
        except ValueError:
            continue
    _kill_kernels(state.get("kernels", []))
    box.cleanup()
    notes = list(state.get("notes", []))
    if not state.get("done"):
        notes.append("the grading process was stopped before the end (did the notebook kill its parent process?)")
    if not box.isolated:
        notes.append(box.warning())
    records = [CellRecord(**r) for r in state.get("records", [])]
    return Grade(submission_path.stem, score(solution, records, notes, state.get("tampered")), notes,
                 time.monotonic() - start)


def grade_folder(solution_path: Path, submissions: Path, out_csv: Path, timeout: float = 300,
                 cell_timeout: float = 60, jobs: int = 1, limits: Limits | None = None,
                 sandbox_modes: Sequence[str] | None = None) -> list[Grade]:
    """Grade every ``*.ipynb`` in ``submissions``; write ``out_csv`` and ``feedback/<student>.txt`` beside it.

    Every submission and the solution are first copied into a private folder (mode 0700), so a
    submission cannot change another one, or the solution, before it is graded; kernels run in the
    strongest sandbox available (:func:`lrkit.course.sandbox.detect`), which hides the solution's
    folder, the submissions' folder and the private folder. Without a sandbox the
    console and every CSV row carry a warning.
    """
    for value, name in ((timeout, "timeout"), (cell_timeout, "cell_timeout")):
        if not (isinstance(value, (int, float)) and value > 0):
            raise ValueError(f"{name} must be a positive number of seconds, got {value!r}")
    if not isinstance(jobs, int) or jobs < 1:
        raise ValueError(f"jobs must be a positive int, got {jobs!r}")
    solution_path, submissions, out_csv = solution_path.resolve(), submissions.resolve(), out_csv.resolve()
    if not solution_path.is_file():
        raise FileNotFoundError(f"solution notebook {solution_path} does not exist")
    private = Path(tempfile.mkdtemp(prefix="lrkit-grader-"))
    try:
        os.chmod(private, 0o700)
        shutil.copyfile(solution_path, private / "solution.ipynb")
        (private / "submissions").mkdir()
        paths = []
        for p in sorted(submissions.glob("*.ipynb")):
            if p.is_file():
                paths.append(private / "submissions" / p.name)
                shutil.copyfile(p, paths[-1])
        hidden = [solution_path.parent, submissions, private]
        box = detect(hidden=hidden, limits=limits, allow=sandbox_modes)
        if not box.isolated:
            print(box.warning(), file=sys.stderr)
        with concurrent.futures.ThreadPoolExecutor(max_workers=jobs) as pool:
            grades = list(pool.map(lambda ip: grade_submission(private / "solution.ipynb", ip[1], timeout,
                                                               cell_timeout, box, ip[0]), enumerate(paths)))
    finally:
        shutil.rmtree(private, ignore_errors=True)
    ids = [ex.grade_id for ex in exercises_of(read_notebook(solution_path))]
    out_csv.parent.mkdir(parents=True, exist_ok=True)
    with out_csv.open("w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(["student", *ids, "total", "max", "notes"])
        for g in grades:
            points = {s.grade_id: s.points for s in g.scores}
            writer.writerow([g.student, *(f"{points[i]:g}" for i in ids), f"{g.total:g}", f"{g.max_total:g}",
                             " | ".join(g.notes)])
    feedback_dir = out_csv.parent / "feedback"
    feedback_dir.mkdir(exist_ok=True)
    for g in grades:
        (feedback_dir / f"{g.student}.txt").write_text(feedback_text(g, solution_path.stem), encoding="utf-8")
    return grades


def feedback_text(grade: Grade, assignment: str) -> str:
    """The per-student feedback: points per exercise, and why each lost point was lost."""
    lines = [f"{assignment}: {grade.student}", f"total: {grade.total:g} / {grade.max_total:g}", ""]
    for s in grade.scores:
        lines.append(f"{s.grade_id}: {s.points:g} / {s.max_points:g}" + ("" if s.reason else "  passed"))
        lines += [f"    {ln}" for ln in s.reason.splitlines()]
    if grade.notes:
        lines += ["", "notes:"] + [f"  - {n}" for n in grade.notes]
    return "\n".join(lines) + "\n"
