"""Grading a folder of submissions against a solution: scores, reasons, feedback files.

The processes (one sandboxed worker per submission, time limits, the CSV) are here; putting a
submission together and scoring it are in :mod:`lrkit.course.assemble` (re-exported).
"""

from __future__ import annotations

import concurrent.futures
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
from collections.abc import Iterable, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

import nbformat
from nbformat import NotebookNode

from .assemble import Exercise, Grade, Score, assemble, exercises_of, score, tampering
from .execute import CellRecord, execute_cells, kernel_env
from .markup import MAX_SUBMISSION_BYTES, read_notebook
from .sandbox import Limits, Sandbox, detect

# assemble/tampering/score and the result dataclasses live in .assemble; re-exported here.
__all__ = ["Exercise", "Grade", "Score", "assemble", "exercises_of", "feedback_text", "grade_folder",
           "grade_submission", "grade_worker", "load_submission", "score", "tampering"]


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
        nb: NotebookNode = nbformat.reads(text, as_version=4)  # type: ignore[no-untyped-call]
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


# The worker's command line (``python -P -c WORKER_BOOT _worker ...``). It imports no torch (lrkit's
# names load lazily). It also skips rfc3987_syntax: jsonschema, which nbformat imports, would build
# that package's IRI grammar at import (1.3 s per submission), for a format no notebook schema uses.
WORKER_BOOT = ("import sys; sys.modules.setdefault('rfc3987_syntax', None); "
               "from lrkit.course.cli import main; sys.exit(main())")


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
        cmd = [sys.executable, "-P", "-c", WORKER_BOOT, "_worker", str(solution_path), str(submission_path),
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
