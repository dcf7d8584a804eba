"""The file system a namespace-mode kernel sees (:class:`lrkit.course.sandbox.Sandbox`).

The kernel runs under a user id of its own, with no group, in a private mount namespace set up as
root by the shell lines :func:`namespace_mounts` writes. Three things are arranged there:

1. **Private world-writable folders.** ``/tmp``, ``/var/tmp``, ``/dev/shm`` and ``/run/lock``
   (:data:`SHARED`) become empty, size-limited ``tmpfs`` mounts of its own: a file it writes there
   (a planted ``/tmp/lrkit/__init__.py``, which any script run from ``/tmp`` would import) never
   reaches the grader or the machine's other users.
2. **A path to what it needs.** Its scratch folder, lrkit's checkout and the Python that runs it
   must stay reachable, even under a covered folder (a checkout in ``/tmp``) or behind a folder
   only root may enter (``mktemp -d`` makes ``/tmp/tmp.XXXX`` with mode 0700; a checkout in
   ``/root``). The topmost such obstacle on the way is replaced by a ``tmpfs`` with the path
   rebuilt in it, and the needed folder is bound back from the original, opened before the
   covering mount and reached through ``/proc/self/fd``. A needed folder that is itself closed to
   others gets a readable ``tmpfs`` with each of its entries bound back. Nothing else of the
   obstacle is exposed, and every bound file keeps its own permissions.
3. **Hidden folders** (the solution's, the submissions', the grader's) are covered last, by empty
   ``tmpfs`` mounts of mode 0: one inside a bound-back checkout stays hidden too.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Sequence
from pathlib import Path
from shlex import quote

__all__ = ["SHARED", "namespace_mounts", "obstacle"]

SHARED = ("/tmp", "/var/tmp", "/dev/shm", "/run/lock")  # world-writable: private copies for the kernel


def _q(word: str | Path) -> str:
    return quote(str(word))


def _open_to_others(path: Path, bits: int) -> bool:
    return (os.stat(path).st_mode & bits) == bits


def obstacle(path: Path, shared: Sequence[str], whole: bool = False) -> Path | None:
    """The topmost folder on the way to ``path`` (``path`` included) that the kernel cannot pass:
    a covered world-writable folder, a folder others may not enter (no ``o+x``) or, unless
    ``whole``, ``path`` itself closed to others (a folder without ``o+rx``). None: nothing to do."""
    chain = [*reversed(path.parents), path]
    for d in chain:
        if str(d) in shared:
            return d
        if d != path and not _open_to_others(d, stat.S_IXOTH):
            return d
    if not whole and _closed(path):
        return path
    return None


def _closed(path: Path) -> bool:
    """A folder others may not list and enter (``o+rx`` missing)."""
    return path.is_dir() and not _open_to_others(path, stat.S_IROTH | stat.S_IXOTH)


def _make(path: Path, like: Path) -> str:
    """Create ``path`` (a folder, or an empty file when ``like`` is a file) to bind ``like`` onto."""
    if like.is_dir():
        return f"mkdir -p {_q(path)}"
    return f"mkdir -p {_q(path.parent)} && : > {_q(path)}"


def _bind(source: str, target: Path, like: Path, writable: bool) -> str:
    ro = "" if writable else f" && mount -o remount,bind,ro {_q(target)}"
    # --no-canonicalize: mount(8) would resolve /proc/self/fd/N to its path name, now covered
    return f"{_make(target, like)} && mount --no-canonicalize --bind {_q(source)} {_q(target)}{ro}"


def namespace_mounts(scratch: Path, needed: Sequence[Path], hidden: Sequence[Path], size: int) -> str:
    """Shell lines (``sh``, run as root inside ``unshare --mount``) that give the kernel private
    world-writable folders of ``size`` bytes each, a way to ``scratch`` (writable) and to each
    ``needed`` path (read-only), and cover ``hidden``. See the module doc."""
    shared = [d for d in SHARED if os.path.isdir(d) and not os.path.islink(d)]
    roots: list[Path] = []
    for p in sorted({scratch, *(q for q in needed if q.exists())}, key=lambda q: len(q.parts)):
        if not any(r == p or r in p.parents for r in roots):
            roots.append(p)
    fds: dict[Path, int] = {}
    grafts: list[tuple[Path, Path]] = []
    for p in roots:
        top = obstacle(p, shared, whole=p == scratch)
        if top is not None:
            fds.setdefault(top, 3 + len(fds))
            grafts.append((p, top))
    if len(fds) > 7:
        raise RuntimeError(f"too many separate folders to reach in the sandbox: {sorted(map(str, fds))}")
    lines = [f"exec {fd}< {_q(top)}" for top, fd in fds.items()]
    lines += [f"mount -t tmpfs -o size={size},mode=1777 none {_q(d)}" for d in shared]
    lines += [f"mount -t tmpfs -o size=1m,mode=0755 none {_q(top)}" for top in fds if str(top) not in shared]
    for p, top in grafts:
        source = f"/proc/self/fd/{fds[top]}" + ("" if p == top else "/" + str(p.relative_to(top)))
        if p == scratch or not _closed(p):  # the kernel's own, or open to others: bind it whole
            lines.append(_bind(source, p, p, writable=p == scratch))
            continue
        lines.append(f"mkdir -p {_q(p)}")  # closed to others: a readable folder of its entries
        for entry in sorted(p.iterdir()):
            if entry.is_symlink():
                lines.append(f"ln -s {_q(os.readlink(entry))} {_q(entry)}")
            else:
                lines.append(_bind(f"{source}/{entry.name}", entry, entry, writable=False))
    lines += [f"exec {fd}<&-" for fd in fds.values()]
    lines += [f"if [ -d {_q(h)} ]; then mount -t tmpfs -o size=1m,mode=0 none {_q(h)}; fi" for h in hidden]
    return "; ".join(lines)
