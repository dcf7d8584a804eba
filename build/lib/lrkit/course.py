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
"""

from __future__ import annotations

import argparse
import concurrent.futures
import copy
import csv
import html
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

import nbformat
from nbclient import NotebookClient
from nbclient.exceptions import CellTimeoutError, DeadKernelError
from nbformat import NotebookNode

SOLUTION = ("### BEGIN SOLUTION", "### END SOLUTION")
HIDDEN = ("### BEGIN HIDDEN TESTS", "### END HIDDEN TESTS")
HINT_PREFIX = "# HINT:"
DEFAULT_HINT = "replace this line with your solution"
MARKDOWN_STUB = "YOUR ANSWER HERE"
KERNEL_NAME = "python3"
MAX_SUBMISSION_BYTES = 20_000_000
MAX_OUTPUT_CHARS = 20_000  # per cell: a submission that prints megabytes is cut here
MAX_KERNEL_STARTS = 5  # a notebook that hangs or kills its kernel is re-run without the culprit cell
MIN_LEAK_CHARS = 16  # shorter solution lines ("return y") are too generic to count as a leak


# --------------------------------------------------------------------------- notebooks and markup


def read_notebook(path: str | Path) -> NotebookNode:
    """Read a notebook as nbformat 4."""
    return nbformat.read(str(path), as_version=4)


def notebook_text(nb: NotebookNode) -> str:
    """The notebook as JSON text, deterministic (sorted keys, one-space indent, final newline)."""
    text = nbformat.writes(nb)
    return text if text.endswith("\n") else text + "\n"


def nbgrader(cell: NotebookNode) -> dict[str, Any]:
    """The cell's nbgrader metadata (empty when there is none)."""
    meta = cell.get("metadata", {}).get("nbgrader", {})
    return meta if isinstance(meta, dict) else {}


def is_solution_cell(cell: NotebookNode) -> bool:
    return bool(nbgrader(cell).get("solution"))


def is_graded_cell(cell: NotebookNode) -> bool:
    return bool(nbgrader(cell).get("grade"))


def cell_key(cell: NotebookNode) -> str:
    """How a cell is found again in a submission: its nbgrader grade id, else its cell id."""
    return str(nbgrader(cell).get("grade_id") or cell.get("id") or "")


def regions(lines: Sequence[str], markers: tuple[str, str]) -> list[tuple[int, int]]:
    """``(begin, end)`` line indexes of each marked region (markers included); unbalanced is an error."""
    found, start = [], None
    for i, line in enumerate(lines):
        if line.strip() == markers[0]:
            if start is not None:
                raise ValueError(f"line {i + 1}: {markers[0]!r} inside another region")
            start = i
        elif line.strip() == markers[1]:
            if start is None:
                raise ValueError(f"line {i + 1}: {markers[1]!r} without {markers[0]!r}")
            found.append((start, i))
            start = None
    if start is not None:
        raise ValueError(f"line {start + 1}: {markers[0]!r} is never closed")
    return found


def _replace_regions(source: str, markers: tuple[str, str], make: Callable[[list[str]], list[str]]) -> str:
    lines = source.split("\n")
    for begin, end in reversed(regions(lines, markers)):
        lines[begin:end + 1] = make(lines[begin:end + 1])
    return "\n".join(lines)


def _stub(region: list[str]) -> list[str]:
    indent = region[0][: len(region[0]) - len(region[0].lstrip())]
    hints = [ln.strip()[len(HINT_PREFIX):].strip() for ln in region if ln.strip().startswith(HINT_PREFIX)]
    message = DEFAULT_HINT + (f". Hint: {' '.join(hints)}" if hints else "")
    return [f"{indent}raise NotImplementedError({json.dumps(message, ensure_ascii=False)})"]


def stub_solutions(source: str) -> str:
    """Each solution region becomes one ``raise NotImplementedError(hint)`` at the region's indentation."""
    return _replace_regions(source, SOLUTION, _stub)


def strip_hidden_tests(source: str) -> str:
    """Remove hidden-test regions (markers included) and the blank lines they leave at the end."""
    stripped = _replace_regions(source, HIDDEN, lambda region: [])
    return stripped.rstrip() if stripped != source else source


# --------------------------------------------------------------------------- generating exercises


def solution_problems(nb: NotebookNode) -> list[str]:
    """What is wrong with a solution notebook's markup (empty when it is fine)."""
    problems, ids, grade_ids = [], set(), set()
    for i, cell in enumerate(nb.cells):
        where = f"cell {i} (id {cell.get('id')!r})"
        if not cell.get("id"):
            problems.append(f"{where}: has no cell id (save it with nbformat >= 4.5)")
        elif cell.id in ids:
            problems.append(f"{where}: duplicate cell id")
        ids.add(cell.get("id"))
        meta, source = nbgrader(cell), cell.source
        for markers in (SOLUTION, HIDDEN):
            try:
                regions(source.split("\n"), markers)
            except ValueError as e:
                problems.append(f"{where}: {e}")
        has_solution, has_hidden = SOLUTION[0] in source, HIDDEN[0] in source
        if has_solution and not (meta.get("solution") and meta.get("locked") is False):
            problems.append(f"{where}: has {SOLUTION[0]!r} but not nbgrader metadata solution=true, locked=false")
        if has_hidden and not meta.get("grade"):
            problems.append(f"{where}: hidden tests belong in a graded cell (nbgrader grade=true)")
        if meta.get("grade") and not (meta.get("locked") and float(meta.get("points", 0)) > 0):
            problems.append(f"{where}: a graded cell needs points > 0 and locked=true")
        if meta and not meta.get("grade_id"):
            problems.append(f"{where}: nbgrader metadata without a grade_id")
        elif meta:
            if meta["grade_id"] in grade_ids:
                problems.append(f"{where}: duplicate grade_id {meta['grade_id']!r}")
            grade_ids.add(meta["grade_id"])
    if not any(is_graded_cell(c) for c in nb.cells):
        problems.append("no graded cell (nbgrader grade=true)")
    return problems


def generate_exercise(solution: NotebookNode) -> NotebookNode:
    """The student notebook: stubs for solutions, no hidden tests, no outputs; all else unchanged."""
    problems = solution_problems(solution)
    if problems:
        raise ValueError("the solution notebook's markup is broken:\n  " + "\n  ".join(problems))
    nb = copy.deepcopy(solution)
    for cell in nb.cells:
        cell.metadata.pop("execution", None)
        if cell.cell_type == "code":
            cell.outputs, cell.execution_count = [], None
            cell.source = strip_hidden_tests(stub_solutions(cell.source))
        else:  # a written answer (nbgrader's markdown solution cell)
            cell.source = _replace_regions(cell.source, SOLUTION, lambda region: [MARKDOWN_STUB])
    return nb


def make_exercises(solutions_dir: Path, exercises_dir: Path, check: bool = False) -> list[str]:
    """Write (or with ``check`` only compare) ``exercises_dir/X.ipynb`` for each ``solutions_dir/X.ipynb``.

    Returns one line per exercise that was (or, with ``check``, would be) written or is stale.
    """
    changed = []
    sources = sorted(solutions_dir.glob("*.ipynb"))
    for src in sources:
        dest = exercises_dir / src.name
        text = notebook_text(generate_exercise(read_notebook(src)))
        if dest.exists() and dest.read_text(encoding="utf-8") == text:
            continue
        changed.append(f"{dest} is out of date with {src}" if check else f"wrote {dest}")
        if not check:
            exercises_dir.mkdir(parents=True, exist_ok=True)
            dest.write_text(text, encoding="utf-8")
    names = {s.name for s in sources}
    changed += [f"{p} has no solution notebook in {solutions_dir}" for p in sorted(exercises_dir.glob("*.ipynb"))
                if p.name not in names]
    return changed


# --------------------------------------------------------------------------- leaks


def _normalise(text: str) -> str:
    return " ".join(text.split())


def _plain_text(text: str) -> str:
    """HTML becomes its visible text (tags dropped, entities decoded); whitespace is collapsed."""
    if re.search(r"</[a-zA-Z][\w-]*>", text):
        text = html.unescape(re.sub(r"<[^>]*>", "", text))
    return _normalise(text)


def secret_lines(solution: NotebookNode) -> list[str]:
    """Distinctive lines of solution regions and hidden tests (normalised), excluding hints and markers."""
    secret, public = [], set()
    for cell in solution.cells:
        lines = cell.source.split("\n")
        inside = set()
        for markers in (SOLUTION, HIDDEN):
            for begin, end in regions(lines, markers):
                inside.update(range(begin + 1, end))
        for i, line in enumerate(lines):
            norm = _normalise(line)
            if i not in inside:
                public.add(norm)
            elif len(norm) >= MIN_LEAK_CHARS and not norm.startswith(HINT_PREFIX):
                secret.append(norm)
    return list(dict.fromkeys(s for s in secret if s not in public))


def leaked_solution_lines(solution: NotebookNode, text: str) -> list[str]:
    """The solution-only lines of ``solution`` that occur in ``text`` (plain text, code or HTML)."""
    plain = _plain_text(text)
    return [line for line in secret_lines(solution) if line in plain]


def _readable_text(path: Path) -> str:
    text = path.read_text(encoding="utf-8", errors="replace")
    if path.suffix == ".ipynb":
        try:
            return "\n".join(c.source for c in nbformat.reads(text, as_version=4).cells)
        except Exception:  # not a notebook after all: scan it as text
            return text
    return text


def check_leaks(paths: Iterable[Path], solutions_dir: Path) -> list[str]:
    """``"file: line"`` for each solution or hidden-test line found in the files (or folders) given."""
    solutions = [read_notebook(p) for p in sorted(solutions_dir.glob("*.ipynb"))]
    files = [f for p in paths for f in (sorted(p.rglob("*")) if p.is_dir() else [p])
             if f.is_file() and f.suffix in (".html", ".ipynb", ".txt", ".md", ".py", ".js")]
    return [f"{f}: {line}" for f in files for sol in solutions
            for line in leaked_solution_lines(sol, _readable_text(f))]


# --------------------------------------------------------------------------- running notebooks


@dataclass
class CellRecord:
    """What happened to one code cell: status ok | error | timeout | dead | not-run, and why."""

    index: int
    key: str
    status: str
    message: str = ""

    @property
    def ok(self) -> bool:
        return self.status == "ok"


class _CappedClient(NotebookClient):
    """A notebook client that keeps at most ``MAX_OUTPUT_CHARS`` of output per cell."""

    def output(self, outs: list[NotebookNode], msg: dict[str, Any], display_id: str | None,
               cell_index: int) -> NotebookNode | None:
        used = getattr(self, "_used_chars", {})
        self._used_chars = used
        used[cell_index] = used.get(cell_index, 0) + len(str(msg.get("content", "")))
        if used[cell_index] > MAX_OUTPUT_CHARS:
            if not outs or outs[-1].get("text") != "[output cut by lrkit.course]\n":
                outs.append(nbformat.v4.new_output("stream", name="stderr", text="[output cut by lrkit.course]\n"))
            return None
        return super().output(outs, msg, display_id, cell_index)


def _error_message(content: dict[str, Any]) -> str:
    """``"Name: message"`` of an execute reply's error (the message cut at 2000 characters)."""
    ename, evalue = str(content.get("ename", "Error")), str(content.get("evalue", ""))
    evalue = evalue if len(evalue) <= 2000 else evalue[:2000] + " ..."
    return f"{ename}: {evalue}" if evalue.strip() else f"{ename} (no message)"


def kernel_env() -> dict[str, str]:
    """The kernel's environment: this one, with the ``lrkit`` being run importable first."""
    root = str(Path(__file__).resolve().parents[1])
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([root] + [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p])
    env.setdefault("MPLBACKEND", "Agg")
    env["PYDEVD_DISABLE_FILE_VALIDATION"] = "1"
    return env


def _run_attempt(nb: NotebookNode, skip: dict[int, CellRecord], deadline: float, cell_timeout: float, cwd: str,
                 records: dict[int, CellRecord], on_event: Callable[[str, Any], None]) -> int | None:
    """Run every code cell not in ``skip`` in one fresh kernel; the index of a fatal cell, if any."""
    replies: dict[int, dict[str, Any]] = {}
    client = _CappedClient(nb, kernel_name=KERNEL_NAME, allow_errors=True, shutdown_kernel="immediate",
                           startup_timeout=max(10, int(deadline - time.monotonic())), iopub_timeout=2,
                           on_cell_executed=lambda cell, cell_index, execute_reply: replies.update(
                               {cell_index: execute_reply}))

    def record(i: int, status: str, message: str = "") -> None:
        records[i] = CellRecord(i, cell_key(nb.cells[i]), status, message)
        on_event("record", records[i])

    with client.setup_kernel(cwd=cwd, env=kernel_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL):
        on_event("kernel", getattr(client.km.provisioner, "pid", None))
        for i, cell in enumerate(nb.cells):
            if cell.cell_type != "code" or i in skip:
                continue
            left = deadline - time.monotonic()
            if not cell.source.strip():
                record(i, "ok")
                continue
            if left <= 1:
                record(i, "not-run", "not run: the notebook's time limit ran out")
                continue
            client.timeout = int(min(cell_timeout, left))
            try:
                client.execute_cell(cell, i)
            except CellTimeoutError:
                if client.timeout < cell_timeout:  # the notebook's own limit ran out: no re-run
                    record(i, "timeout", "stopped: the notebook's time limit ran out")
                    continue
                record(i, "timeout", f"did not finish within {client.timeout} s (an endless loop?) and was stopped; "
                                     "the notebook was re-run without it")
                return i
            except DeadKernelError:
                record(i, "dead", "the kernel died while running it (sys.exit / os._exit, a crash or out of memory); "
                                  "the notebook was re-run without it")
                return i
            content = replies.get(i, {}).get("content", {})
            ok = content.get("status") == "ok"
            record(i, "ok" if ok else "error", "" if ok else _error_message(content))
    return None


def execute_cells(nb: NotebookNode, *, timeout: float = 300, cell_timeout: float = 60, cwd: str | None = None,
                  on_event: Callable[[str, Any], None] = lambda kind, value: None) -> list[CellRecord]:
    """Run ``nb``'s code cells in order, each in a kernel with a time limit; never raises.

    A cell that times out or kills the kernel is recorded, and the notebook is run again in a
    fresh kernel without it (at most ``MAX_KERNEL_STARTS`` kernels), so that later cells are
    still graded. Cells left when the notebook's ``timeout`` runs out are recorded ``not-run``.
    """
    deadline = time.monotonic() + timeout
    records: dict[int, CellRecord] = {}
    fatal: dict[int, CellRecord] = {}
    with tempfile.TemporaryDirectory(prefix="lrkit-run-") as tmp:
        for _ in range(MAX_KERNEL_STARTS):
            try:
                culprit = _run_attempt(nb, fatal, deadline, cell_timeout, cwd or tmp, records, on_event)
            except Exception as e:  # kernel failed to start, or a broken channel
                culprit, problem = None, f"not run: the kernel could not run the notebook ({type(e).__name__}: {e})"
                records.update({i: CellRecord(i, cell_key(c), "not-run", problem) for i, c in enumerate(nb.cells)
                                if c.cell_type == "code" and i not in records and i not in fatal})
            if culprit is None:
                break
            fatal[culprit] = records[culprit]
        records.update(fatal)
    return [records.get(i) or CellRecord(i, cell_key(c), "not-run", "not run: too many cells hung or killed the "
                                                                     "kernel") for i, c in enumerate(nb.cells)
            if c.cell_type == "code"]


# --------------------------------------------------------------------------- grading


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


def score(solution: NotebookNode, records: Sequence[CellRecord], notes: Sequence[str]) -> list[Score]:
    """Points per exercise from the run's records, with a reason for every lost point."""
    by_key = {r.key: r for r in records}
    scores = []
    for ex in exercises_of(solution):
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


def _write_json(path: Path, data: dict[str, Any]) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(data), encoding="utf-8")
    os.replace(tmp, path)


def grade_worker(solution_path: Path, submission_path: Path, progress: Path, timeout: float,
                 cell_timeout: float) -> None:
    """Run one submission and keep ``progress`` (JSON: notes, records, kernel pids) up to date."""
    state: dict[str, Any] = {"notes": [], "records": [], "kernels": [], "done": False}
    try:
        solution = read_notebook(solution_path)
        nb, state["notes"] = assemble(solution, load_submission(submission_path))
        _write_json(progress, state)

        def on_event(kind: str, value: Any) -> None:
            if kind == "kernel":
                state["kernels"].append(value)
            else:
                state["records"] = [r for r in state["records"] if r["index"] != value.index] + [asdict(value)]
            _write_json(progress, state)

        state["records"] = [asdict(r) for r in execute_cells(nb, timeout=timeout, cell_timeout=cell_timeout,
                                                             on_event=on_event)]
    except ValueError as e:
        state["notes"].append(str(e))
    except Exception as e:  # a grader bug must cost this submission, not the whole run
        state["notes"].append(f"the grader failed on this submission: {type(e).__name__}: {e}")
    state["done"] = True
    _write_json(progress, state)


def _kill_kernels(pids: Iterable[Any]) -> None:
    """Kill the process groups of kernels a dead worker left behind (only if still ipykernels)."""
    for pid in pids:
        try:
            cmdline = Path(f"/proc/{int(pid)}/cmdline").read_bytes()
            if b"ipykernel" in cmdline:
                os.killpg(os.getpgid(int(pid)), signal.SIGKILL)
        except (OSError, TypeError, ValueError):
            pass


def grade_submission(solution_path: Path, submission_path: Path, timeout: float = 300,
                     cell_timeout: float = 60) -> Grade:
    """Grade one submission in a separate process (it may kill its kernel or its parent: we survive)."""
    solution, start = read_notebook(solution_path), time.monotonic()
    with tempfile.TemporaryDirectory(prefix="lrkit-grade-") as tmp:
        progress = Path(tmp) / "progress.json"
        cmd = [sys.executable, "-m", "lrkit.course", "_worker", str(solution_path), str(submission_path),
               str(progress), "--timeout", str(timeout), "--cell-timeout", str(cell_timeout)]
        proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL, start_new_session=True, env=kernel_env())
        try:
            proc.wait(timeout=timeout + 60)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        state = json.loads(progress.read_text()) if progress.exists() else {"notes": [], "records": []}
        if not state.get("done"):
            _kill_kernels(state.get("kernels", []))
    notes = list(state["notes"])
    if not state.get("done"):
        notes.append("the grading process was stopped before the end (did the notebook kill its parent process?)")
    records = [CellRecord(**r) for r in state["records"]]
    return Grade(submission_path.stem, score(solution, records, notes), notes, time.monotonic() - start)


def grade_folder(solution_path: Path, submissions: Path, out_csv: Path, timeout: float = 300,
                 cell_timeout: float = 60, jobs: int = 1) -> list[Grade]:
    """Grade every ``*.ipynb`` in ``submissions``; write ``out_csv`` and ``feedback/<student>.txt`` beside it."""
    paths = sorted(submissions.glob("*.ipynb"))
    with concurrent.futures.ThreadPoolExecutor(max_workers=max(1, jobs)) as pool:
        grades = list(pool.map(lambda p: grade_submission(solution_path, p, timeout, cell_timeout), paths))
    ids = [ex.grade_id for ex in exercises_of(read_notebook(solution_path))]
    out_csv.parent.mkdir(parents=True, exist_ok=True)
    with out_csv.open("w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(["student", *ids, "total", "max"])
        for g in grades:
            points = {s.grade_id: s.points for s in g.scores}
            writer.writerow([g.student, *(f"{points[i]:g}" for i in ids), f"{g.total:g}", f"{g.max_total:g}"])
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


# --------------------------------------------------------------------------- command line


def _cmd_make_exercises(args: argparse.Namespace) -> int:
    messages = make_exercises(Path(args.solutions), Path(args.exercises), check=args.check)
    print("\n".join(messages) or "exercises are up to date")
    if args.check and messages:
        print("run: python -m lrkit.course make-exercises", file=sys.stderr)
    return 1 if args.check and messages else 0


def _cmd_check(args: argparse.Namespace) -> int:
    nb = read_notebook(args.notebook)
    graded = {cell_key(c): nbgrader(c).get("points", 0) for c in nb.cells if is_graded_cell(c)}
    records = execute_cells(nb, timeout=args.timeout, cell_timeout=args.cell_timeout,
                            cwd=str(Path(args.notebook).resolve().parent))
    for r in records:
        if r.key in graded or not r.ok:
            label = f"[{graded[r.key]} pt] " if r.key in graded else ""
            print(f"{'PASS' if r.ok else 'FAIL'} {label}{r.key or f'cell {r.index}'}"
                  + ("" if r.ok else "\n    " + r.message.replace("\n", "\n    ")))
    return 0 if all(r.ok for r in records) else 1


def _cmd_grade(args: argparse.Namespace) -> int:
    start = time.monotonic()
    if not Path(args.submissions).is_dir():
        print(f"error: {args.submissions} is not a folder of submissions", file=sys.stderr)
        return 2
    grades = grade_folder(Path(args.solution), Path(args.submissions), Path(args.out), args.timeout,
                          args.cell_timeout, args.jobs)
    for g in grades:
        print(f"{g.student}: {g.total:g} / {g.max_total:g} ({g.seconds:.1f} s)")
    print(f"graded {len(grades)} submission(s) in {time.monotonic() - start:.1f} s: {args.out}, "
          f"{Path(args.out).parent / 'feedback'}")
    return 0


def _cmd_check_leaks(args: argparse.Namespace) -> int:
    leaks = check_leaks([Path(p) for p in args.paths], Path(args.solutions))
    print("\n".join(leaks) or "no solution or hidden-test line found")
    return 1 if leaks else 0


def _cmd_worker(args: argparse.Namespace) -> int:
    grade_worker(Path(args.solution), Path(args.submission), Path(args.progress), args.timeout, args.cell_timeout)
    return 0


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m lrkit.course", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("make-exercises", help="write exercises/ from solutions/")
    p.add_argument("--solutions", default="solutions")
    p.add_argument("--exercises", default="exercises")
    p.add_argument("--check", action="store_true", help="only report out-of-date exercises (exit 1)")
    p.set_defaults(run=_cmd_make_exercises)
    for name, run, helptext in (("check", _cmd_check, "run one notebook and report its checks"),
                                ("grade", _cmd_grade, "grade a folder of submissions"),
                                ("_worker", _cmd_worker, argparse.SUPPRESS)):
        p = sub.add_parser(name, help=helptext)
        if name == "check":
            p.add_argument("notebook")
        else:
            p.add_argument("solution")
            p.add_argument("submission" if name == "_worker" else "submissions")
        if name == "_worker":
            p.add_argument("progress")
        if name == "grade":
            p.add_argument("--out", default="grades.csv", help="CSV path; feedback/ goes beside it")
            p.add_argument("--jobs", type=int, default=1, help="submissions graded at once")
        p.add_argument("--timeout", type=float, default=300, help="seconds per notebook")
        p.add_argument("--cell-timeout", type=float, default=60, help="seconds per cell")
        p.set_defaults(run=run)
    p = sub.add_parser("check-leaks", help="fail if solution code or hidden tests appear in files")
    p.add_argument("paths", nargs="+")
    p.add_argument("--solutions", default="solutions")
    p.set_defaults(run=_cmd_check_leaks)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    return int(args.run(args))


if __name__ == "__main__":
    sys.exit(main())
