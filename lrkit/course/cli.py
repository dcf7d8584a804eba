"""Command line of ``python -m lrkit.course``."""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from .execute import execute_cells
from .generate import make_exercises
from .grade import grade_folder, grade_worker
from .leaks import check_leaks
from .markup import cell_key, is_graded_cell, nbgrader, read_notebook
from .sandbox import Limits, Sandbox


def _cmd_make_exercises(args: argparse.Namespace) -> int:
    messages = make_exercises(Path(args.solutions), Path(args.exercises), check=args.check)
    print("\n".join(messages) or "exercises are up to date")
    if args.check and messages:
        print("run: python -m lrkit.course make-exercises", file=sys.stderr)
    return 1 if args.check and messages else 0


def _missing(path: str, what: str) -> bool:
    if Path(path).is_file():
        return False
    print(f"error: {what} {path} does not exist", file=sys.stderr)
    return True


def _cmd_check(args: argparse.Namespace) -> int:
    if _missing(args.notebook, "notebook"):
        return 2
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
    if _missing(args.solution, "solution notebook"):
        return 2
    if not (args.timeout > 0 and args.cell_timeout > 0 and args.jobs >= 1):
        print("error: --timeout and --cell-timeout must be positive seconds, --jobs a positive int", file=sys.stderr)
        return 2
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
    missing = [p for p in args.paths if not Path(p).exists()]
    solutions = Path(args.solutions)
    if missing or not solutions.is_dir() or not any(solutions.glob("*.ipynb")):
        what = f"{', '.join(missing)} does not exist" if missing else f"{solutions} holds no solution notebook"
        print(f"error: {what}: nothing was checked for leaks", file=sys.stderr)
        return 2
    if any(Path(p).is_dir() and not any(f.is_file() for f in Path(p).rglob("*")) for p in args.paths):
        print("error: an empty folder was given: nothing was checked for leaks", file=sys.stderr)
        return 2
    leaks = check_leaks([Path(p) for p in args.paths], Path(args.solutions))
    print("\n".join(leaks) or "no solution or hidden-test line found")
    return 1 if leaks else 0


def _cmd_worker(args: argparse.Namespace) -> int:
    spec = json.loads(args.sandbox) if args.sandbox else None
    box = None
    if spec is not None:
        box = Sandbox(spec["mode"], [Path(h) for h in spec["hidden"]], Limits(**spec["limits"]), spec["uid"],
                      Path(spec["scratch"]))
    grade_worker(Path(args.solution), Path(args.submission), int(args.channel), args.timeout, args.cell_timeout, box)
    return 0


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m lrkit.course",
                                     description="Exercises from solutions, self-checks and grading.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
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
            p.add_argument("channel", help="file descriptor the worker reports on")
            p.add_argument("--sandbox", default="", help="JSON description of the kernel's sandbox")
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
    from .colab import add_colab_command
    from .install import add_install_command

    add_colab_command(sub)
    add_install_command(sub)
    sub._choices_actions = [a for a in sub._choices_actions if a.help != argparse.SUPPRESS]  # hide _worker
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    return int(args.run(args))
