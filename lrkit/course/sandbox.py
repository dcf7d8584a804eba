"""Where a student's kernel runs: a sandbox that needs no container engine.

Three modes, the strongest available first (:func:`detect`):

``"namespace"`` (the grader runs as root on Linux)
    The kernel starts under ``unshare --mount --pid --fork`` (util-linux): its own PID namespace
    (it sees no grader process in ``/proc``; when it ends, every process it started ends, even
    those that called ``setsid``), its own mount namespace in which the solution, the
    submissions and the grader's private folder are covered by empty ``tmpfs`` mounts, and then
    ``setpriv`` drops it to a user id of its own (no group, ``no_new_privs``), so it can write
    only its scratch folder and its own private, empty, size-limited copies of the world-writable
    folders (``/tmp``, ``/var/tmp``, ``/dev/shm``, ``/run/lock``), and every process of that user
    id is killed at the end. Its checkout and Python stay reachable even behind a folder only
    root may enter (:mod:`lrkit.course.sandbox_mounts`).

``"bwrap"`` (not root, bubblewrap installed)
    ``bwrap`` with the whole file system read-only, ``/tmp`` private, the hidden folders covered,
    the scratch folder writable, a PID namespace and ``--die-with-parent``.

``"none"``
    No isolation is possible: the kernel runs as the grader's user. Grading goes on and every
    row of the score table says so.

In every mode the kernel gets resource limits (:class:`Limits`: address space, CPU seconds,
processes, file size) and a clean working folder of its own.
"""

from __future__ import annotations

import contextlib
import os
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from shlex import quote

from .sandbox_mounts import namespace_mounts

__all__ = ["Limits", "Sandbox", "detect", "processes_of_uid"]

UID_BASE = 200_000  # user ids of sandboxed kernels: UID_BASE + a per-kernel number (no passwd entry)


@dataclass(frozen=True)
class Limits:
    """Resource limits of one kernel (``setrlimit``): bytes of address space, CPU seconds,
    processes of its user id, bytes per file written."""

    memory: int = 6 * 2**30
    cpu_seconds: int = 900
    processes: int = 64
    file_size: int = 256 * 2**20

    def apply(self, with_nproc: bool) -> None:
        """Set the limits in the calling process (a ``preexec_fn``); they are inherited by children."""
        resource.setrlimit(resource.RLIMIT_AS, (self.memory, self.memory))
        resource.setrlimit(resource.RLIMIT_CPU, (self.cpu_seconds, self.cpu_seconds))
        resource.setrlimit(resource.RLIMIT_FSIZE, (self.file_size, self.file_size))
        if with_nproc:  # counted per user id: only meaningful for a user id of the kernel's own
            resource.setrlimit(resource.RLIMIT_NPROC, (self.processes, self.processes))


@dataclass
class Sandbox:
    """How to start one kernel: the mode, the folders it must not see, its limits and user id."""

    mode: str
    hidden: list[Path] = field(default_factory=list)
    limits: Limits = field(default_factory=Limits)
    uid: int | None = None
    scratch: Path | None = None

    @property
    def isolated(self) -> bool:
        return self.mode != "none"

    def warning(self) -> str:
        """The sentence the score table and the console carry when there is no isolation."""
        if self.isolated:
            return ""
        return ("WARNING: no sandbox was available (run the grader as root on Linux, or install bubblewrap): "
                "student code ran as the grader's user and could read or change files that user can")

    def prepare(self, index: int) -> Sandbox:
        """A copy for kernel number ``index``: its own user id and a scratch folder it owns."""
        scratch = Path(tempfile.mkdtemp(prefix="lrkit-kernel-"))
        box = Sandbox(self.mode, list(self.hidden), self.limits, None, scratch)
        if self.mode == "namespace":
            box.uid = UID_BASE + (os.getpid() % 10_000) * 100 + index % 100
            os.chown(scratch, box.uid, box.uid)
        os.chmod(scratch, 0o700)
        return box

    def give(self, path: Path) -> None:
        """Make ``path`` (a file the kernel must read, such as its connection file) readable by it."""
        if self.uid is not None:
            os.chown(path, self.uid, self.uid)

    def command(self, argv: Sequence[str]) -> list[str]:
        """``argv`` (the kernel's command line) wrapped in this sandbox."""
        if self.mode == "none":
            return list(argv)
        scratch = str(self.scratch)
        hidden = [str(p) for p in self.hidden if p.exists()]
        if self.mode == "bwrap":
            cmd = ["bwrap", "--ro-bind", "/", "/", "--dev", "/dev", "--proc", "/proc", "--tmpfs", "/tmp",
                   "--tmpfs", "/dev/shm", "--unshare-pid", "--as-pid-1", "--unshare-ipc", "--new-session"]
            for h in hidden:
                cmd += ["--tmpfs", h]
            cmd += ["--bind", scratch, scratch, "--chdir", scratch, "--"]
            return cmd + list(argv)
        drop = (f"exec setpriv --reuid={self.uid} --regid={self.uid} --clear-groups --no-new-privs "
                f"--inh-caps=-all --bounding-set=-all -- ")
        assert self.scratch is not None, "prepare() the sandbox first"
        mounts = namespace_mounts(self.scratch, _needed(), self.hidden, max(self.limits.file_size, 16 * 2**20))
        script = (f"{mounts}; mount -t proc proc /proc; cd {quote(scratch)} && "
                  f"{drop}{' '.join(quote(a) for a in argv)}")
        return ["unshare", "--mount", "--pid", "--fork", "--kill-child", "--propagation", "private",
                "--", "sh", "-c", script]

    def preexec(self) -> Callable[[], None]:
        """The ``preexec_fn`` that applies the limits (process limit only with an own user id)."""
        limits, own_uid = self.limits, self.uid is not None
        return lambda: limits.apply(with_nproc=own_uid)

    def env(self, base: dict[str, str]) -> dict[str, str]:
        """The kernel's environment: ``base`` with a home, IPython and matplotlib folders in scratch."""
        env = dict(base)
        if self.scratch is not None:
            env.update(HOME=str(self.scratch), IPYTHONDIR=str(self.scratch / ".ipython"),
                       MPLCONFIGDIR=str(self.scratch / ".mpl"), TMPDIR=str(self.scratch),
                       JUPYTER_RUNTIME_DIR=str(self.scratch / ".runtime"))
        return env

    def cleanup(self) -> None:
        """Kill whatever is left of this kernel's processes, and remove its scratch folder."""
        if self.uid is not None:
            for _ in range(3):
                pids = processes_of_uid(self.uid)
                if not pids:
                    break
                for pid in pids:
                    with contextlib.suppress(OSError):
                        os.kill(pid, signal.SIGKILL)
                time.sleep(0.05)
        if self.scratch is not None:
            shutil.rmtree(self.scratch, ignore_errors=True)


def processes_of_uid(uid: int) -> list[int]:
    """The pids of every process whose real user id is ``uid`` (from ``/proc``)."""
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            status = (entry / "status").read_text()
        except OSError:
            continue
        for line in status.splitlines():
            if line.startswith("Uid:") and int(line.split()[1]) == uid:
                pids.append(int(entry.name))
                break
    return pids


def _needed() -> list[Path]:
    """What a kernel must see: lrkit's checkout and the Python that runs it."""
    return [Path(__file__).resolve().parents[2], Path(sys.prefix).resolve(), Path(sys.base_prefix).resolve(),
            Path(sys.executable).resolve()]


def _works(cmd: list[str]) -> bool:
    try:
        return subprocess.run(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                              timeout=20).returncode == 0
    except (OSError, subprocess.SubprocessError):
        return False


def detect(hidden: Sequence[Path] = (), limits: Limits | None = None, allow: Sequence[str] | None = None) -> Sandbox:
    """The strongest sandbox this machine offers (``allow`` restricts the modes tried, for tests).

    ``hidden`` folders are covered inside the sandbox, except one that holds Python or lrkit itself.
    """
    modes = list(allow) if allow is not None else ["namespace", "bwrap", "none"]
    needed = _needed()
    safe = [Path(p).resolve() for p in hidden]
    safe = [p for p in safe if not any(n == p or p in n.parents for n in needed)]  # never hide Python or lrkit
    box = Sandbox("none", safe, limits or Limits())
    if "namespace" in modes and os.name == "posix" and os.geteuid() == 0 and shutil.which("unshare") \
            and shutil.which("setpriv") and _works(["unshare", "--mount", "--pid", "--fork", "--", "sh", "-c",
                                                   "mount -t tmpfs none /mnt && setpriv --reuid=65534 "
                                                   "--regid=65534 --clear-groups true"]):
        box.mode = "namespace"
    elif "bwrap" in modes and shutil.which("bwrap") and _works(["bwrap", "--ro-bind", "/", "/", "--unshare-pid",
                                                                "--die-with-parent", "true"]):
        box.mode = "bwrap"
    return box
