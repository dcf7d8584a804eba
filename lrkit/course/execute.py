"""Running a notebook cell by cell in a fresh kernel, with time and output limits."""

from __future__ import annotations

import os
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import nbformat
from jupyter_client.manager import AsyncKernelManager
from nbclient import NotebookClient
from nbclient.exceptions import CellTimeoutError, DeadKernelError
from nbformat import NotebookNode

from .markup import KERNEL_NAME, MAX_KERNEL_STARTS, MAX_OUTPUT_CHARS, cell_key
from .sandbox import Sandbox


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
                outs.append(nbformat.v4.new_output("stream", name="stderr", text="[output cut by lrkit.course]\n"))  # type: ignore[no-untyped-call]
            return None
        return super().output(outs, msg, display_id, cell_index)


class _SandboxedKernelManager(AsyncKernelManager):
    """A kernel manager whose kernel starts inside a :class:`~lrkit.course.sandbox.Sandbox`."""

    sandbox: Sandbox | None = None

    def format_kernel_cmd(self, extra_arguments: list[str] | None = None) -> list[str]:
        cmd = super().format_kernel_cmd(extra_arguments)
        return self.sandbox.command(cmd) if self.sandbox is not None else cmd

    def write_connection_file(self, **kwargs: Any) -> None:
        super().write_connection_file(**kwargs)
        if self.sandbox is not None:
            self.sandbox.give(Path(self.connection_file))


class _Tail:
    """The last ``keep`` characters written to a pipe (a kernel's stderr), drained by a thread."""

    def __init__(self, keep: int = 1500) -> None:
        self.read_fd, self.write_fd = os.pipe()
        self.keep, self.text, self.closed = keep, "", False
        self.thread = threading.Thread(target=self._drain, daemon=True)
        self.thread.start()

    def _drain(self) -> None:
        with os.fdopen(self.read_fd, "rb") as f:
            for chunk in iter(lambda: f.read1(4096), b""):
                self.text = (self.text + chunk.decode("utf-8", "replace"))[-self.keep:]

    def close(self) -> str:
        """Close this process's write end and return the tail read so far (waits at most 2 s)."""
        if not self.closed:
            self.closed = True
            os.close(self.write_fd)
            self.thread.join(timeout=2)
        return self.text.strip()


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
                 records: dict[int, CellRecord], on_event: Callable[[str, Any], None],
                 sandbox: Sandbox | None, sockets: str) -> int | None:
    """Run every code cell not in ``skip`` in one fresh kernel; the index of a fatal cell, if any.

    The kernel talks over Unix sockets in the private folder ``sockets`` (with a sandbox, its
    scratch folder, which the kernel owns), not TCP ports: kernels started at the same moment (``grade --jobs``, a busy
    machine) could otherwise pick the same free port, and one of them dies at start.
    """
    replies: dict[int, dict[str, Any]] = {}
    if sandbox is not None and sandbox.scratch is not None:
        sockets = str(sandbox.scratch)
    km = _SandboxedKernelManager(kernel_name=KERNEL_NAME, transport="ipc",
                                 ip=str(Path(sockets) / "kernel-ipc"))
    launch: dict[str, Any] = {}
    env = kernel_env()
    if sandbox is not None:
        km.sandbox = sandbox
        if sandbox.scratch is not None:
            km.connection_file = str(sandbox.scratch / "kernel.json")
            cwd = str(sandbox.scratch)
        env = sandbox.env(env)
        launch["preexec_fn"] = sandbox.preexec()
    client = _CappedClient(nb, km=km, kernel_name=KERNEL_NAME, allow_errors=True, shutdown_kernel="immediate",
                           startup_timeout=max(10, int(deadline - time.monotonic())), iopub_timeout=2,
                           on_cell_executed=lambda cell, cell_index, execute_reply: replies.update(
                               {cell_index: execute_reply}))

    def record(i: int, status: str, message: str = "") -> None:
        records[i] = CellRecord(i, cell_key(nb.cells[i]), status, message)
        on_event("record", records[i])

    def run_cells() -> int | None:
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

    # cleanup_kc: nbclient keeps a kernel it did not create alive on exit (we pass our own manager);
    # ours is shut down when the attempt ends, a hung or spinning one included. The kernel's stderr
    # goes to a pipe whose tail a failure to start reports (an import error, a sandbox that failed).
    tail = _Tail()
    try:
        with client.setup_kernel(cleanup_kc=True, cwd=cwd, env=env, stdout=subprocess.DEVNULL,
                                 stderr=tail.write_fd, **launch):
            on_event("kernel", getattr(getattr(client.km, "provisioner", None), "pid", None))
            return run_cells()
    except Exception as e:
        last = tail.close()
        if last:
            raise RuntimeError(f"{e}; the kernel's stderr ended with: {last}") from e
        raise
    finally:
        tail.close()


def execute_cells(nb: NotebookNode, *, timeout: float = 300, cell_timeout: float = 60, cwd: str | None = None,
                  on_event: Callable[[str, Any], None] = lambda kind, value: None,
                  sandbox: Sandbox | None = None) -> list[CellRecord]:
    """Run ``nb``'s code cells in order, each in a kernel with a time limit; never raises.

    A cell that times out or kills the kernel is recorded, and the notebook is run again in a
    fresh kernel without it (at most ``MAX_KERNEL_STARTS`` kernels), so that later cells are
    still graded. Cells left when the notebook's ``timeout`` runs out are recorded ``not-run``.
    With a ``sandbox`` the kernel starts inside it, in its scratch folder.
    """
    deadline = time.monotonic() + timeout
    records: dict[int, CellRecord] = {}
    fatal: dict[int, CellRecord] = {}
    with tempfile.TemporaryDirectory(prefix="lrkit-run-") as tmp:
        for _ in range(MAX_KERNEL_STARTS):
            try:
                culprit = _run_attempt(nb, fatal, deadline, cell_timeout, cwd or tmp, records, on_event, sandbox, tmp)
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
