"""Rerun the lessons to see how robust every claim is: over seeds, or at full scale.

``seeds`` executes each lesson (nbclient, at most ``--jobs`` kernels at a time) once per
seed with ``LRKIT_SEED=k``, ``LRKIT_SCALE=small`` and a ledger per seed, and writes
under ``--out``: ``claims.md``/``claims.csv`` (per claim: how many seeds passed, the
smallest margin, the seed where it was smallest), ``summary.json`` (read by the claims
page) and ``lessons.md``/``lessons.csv`` (per lesson and seed: time and errors).
``full`` executes each lesson once at ``LRKIT_SCALE=full`` and writes the same files.
Notebooks run with ``allow_errors`` so that one failing claim does not hide the next.

Commands (``make claims-seeds``, ``make claims-full``)::

    python -m lrkit.claims_runs seeds --seeds 0-4 --jobs 2 --out _build/claims/seeds lessons/*.ipynb
    python -m lrkit.claims_runs full --out _build/claims/full lessons/*.ipynb
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from .claims_index import claim_keys, format_value
from .claims_ledger import ClaimRecord, read_ledger

__all__ = ["execute_notebook", "parse_seeds", "run_lessons", "seed_table"]


def parse_seeds(text: str) -> list[int]:
    """``"0-4"`` -> ``[0, 1, 2, 3, 4]``; ``"0,3,7"`` -> ``[0, 3, 7]``."""
    seeds: list[int] = []
    try:
        for part in text.split(","):
            lo, _, hi = part.strip().partition("-")
            seeds += list(range(int(lo), int(hi or lo) + 1))
    except ValueError:
        raise ValueError(f"seeds must look like '0-4' or '0,3,7', got {text!r}") from None
    if not seeds or min(seeds) < 0:
        raise ValueError(f"seeds must be non-negative integers, got {text!r}")
    return seeds


def execute_notebook(path: str | Path, timeout: int = 1200) -> dict[str, Any]:
    """Execute one notebook in this process's environment; report time and the cells that raised."""
    import nbclient
    import nbformat
    from jupyter_client.manager import KernelManager

    path = Path(path)
    nb = nbformat.read(path, as_version=4)  # type: ignore[no-untyped-call]
    start = time.perf_counter()
    # The kernel talks over Unix sockets in a private folder, not TCP ports: two runners starting
    # kernels at the same moment cannot pick the same free port (a race that left a runner waiting
    # forever on a reply that went to the other kernel).
    with tempfile.TemporaryDirectory(prefix="lrkit-kernel-") as sockets:
        km = KernelManager(kernel_name="python3", transport="ipc", ip=str(Path(sockets) / "kernel"))
        client = nbclient.NotebookClient(nb, km=km, timeout=timeout, allow_errors=True,
                                         resources={"metadata": {"path": str(path.parent)}})
        try:
            client.execute()
            crash = ""
        except Exception as err:
            crash = f"{type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}"
    seconds = time.perf_counter() - start
    errors = [f"cell {i}: {o.get('ename')}: {str(o.get('evalue', ''))[:300]}"
              for i, c in enumerate(nb.cells) if c.cell_type == "code"
              for o in c.get("outputs", []) if o.get("output_type") == "error"]
    return {"lesson": path.stem, "seconds": round(seconds, 2), "errors": errors + ([crash] if crash else [])}


def _run_one(path: Path, env: dict[str, str], timeout: int, attempts: int = 2) -> dict[str, Any]:
    """Run one lesson in a fresh process; a run past ``4 * timeout`` seconds is killed and retried once."""
    cmd = [sys.executable, "-m", "lrkit.claims_runs", "execute", str(path), "--timeout", str(timeout)]
    try:
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=4 * timeout,
                              start_new_session=True)
    except subprocess.TimeoutExpired:
        if attempts > 1:
            return _run_one(path, env, timeout, attempts - 1)
        return {"lesson": path.stem, "seconds": None, "errors": [f"runner timed out twice ({4 * timeout} s)"]}
    try:
        result: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
        return result
    except (IndexError, json.JSONDecodeError):
        return {"lesson": path.stem, "seconds": None, "errors": [f"runner failed: {proc.stderr[-500:]}"]}


def run_lessons(lessons: Sequence[str | Path], seeds: Sequence[int], scale: str, out: str | Path,
                jobs: int = 2, timeout: int = 1200) -> list[dict[str, Any]]:
    """Execute every lesson for every seed (``jobs`` at a time); one ledger per seed under ``out``."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    tasks = []
    for seed in seeds:
        ledger = out / f"ledger-seed{seed}.jsonl"
        ledger.unlink(missing_ok=True)
        for lesson in lessons:
            env = dict(os.environ, LRKIT_SEED=str(seed), LRKIT_SCALE=scale, LRKIT_LEDGER=str(ledger.resolve()),
                       OMP_NUM_THREADS=os.environ.get("OMP_NUM_THREADS", "1"), MPLBACKEND="Agg")
            tasks.append((Path(lesson), env, seed))

    def one(task: tuple[Path, dict[str, str], int]) -> dict[str, Any]:
        path, env, seed = task
        result = _run_one(path, env, timeout)
        result["seed"] = seed
        status = "ok" if not result["errors"] else f"{len(result['errors'])} error(s)"
        print(f"  {path.stem} seed {seed} ({scale}): {result['seconds']} s, {status}", flush=True)
        return result

    with ThreadPoolExecutor(max_workers=max(1, min(jobs, 2))) as pool:
        results = list(pool.map(one, tasks))
    _write_table(out / "lessons", ["lesson", "seed", "seconds", "errors"],
                 [[r["lesson"], r["seed"], r["seconds"], "; ".join(r["errors"])] for r in results])
    return results


def seed_table(ledgers: dict[int, list[ClaimRecord]]) -> list[dict[str, Any]]:
    """Per claim ``(chapter, label, k)``: seeds run, passed, the smallest margin and where."""
    table: dict[tuple[Any, str, int], dict[str, Any]] = {}
    for seed, records in sorted(ledgers.items()):
        for r, key in zip(records, claim_keys(records)):
            row = table.setdefault(key, {"chapter": r.chapter, "label": r.label, "index": key[2],
                                         "statement": r.statement, "status": r.status, "runs": 0,
                                         "passed": 0, "min_margin": None, "worst_seed": None,
                                         "measured": {}})
            row["runs"] += 1
            row["passed"] += bool(r.passed) if r.status == "checked" else 0
            row["measured"][seed] = format_value(r.measured)
            if r.margin is not None and (row["min_margin"] is None or r.margin < row["min_margin"]):
                row["min_margin"], row["worst_seed"] = r.margin, seed
    return sorted(table.values(), key=lambda row: (str(row["chapter"]).zfill(3), row["label"], row["index"]))


def _write_table(stem: Path, header: list[str], rows: list[list[Any]]) -> None:
    with stem.with_suffix(".csv").open("w", newline="", encoding="utf-8") as fh:
        csv.writer(fh).writerows([header] + rows)
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(v).replace("|", "\\|") for v in row) + " |" for row in rows]
    stem.with_suffix(".md").write_text("\n".join(lines) + "\n", encoding="utf-8")


def summarise(out: str | Path, seeds: Sequence[int]) -> list[dict[str, Any]]:
    """Read the per-seed ledgers under ``out`` and write ``claims.md``, ``claims.csv``, ``summary.json``."""
    out = Path(out)
    ledgers = {s: read_ledger(out / f"ledger-seed{s}.jsonl") for s in seeds
               if (out / f"ledger-seed{s}.jsonl").is_file()}
    rows = seed_table(ledgers)
    for row in rows:
        row["fragile"] = row["min_margin"] is not None and row["min_margin"] < 0.2
    header = ["chapter", "label", "index", "status", "passed", "runs", "min_margin", "worst_seed",
              "statement"]
    _write_table(out / "claims", header, [[r["chapter"], r["label"], r["index"], r["status"], r["passed"],
                                           r["runs"], "" if r["min_margin"] is None else f"{r['min_margin']:.3f}",
                                           r["worst_seed"], r["statement"]] for r in rows])
    (out / "summary.json").write_text(json.dumps(rows, indent=1, default=str), encoding="utf-8")
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m lrkit.claims_runs", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    for name in ("seeds", "full"):
        p = sub.add_parser(name)
        p.add_argument("lessons", nargs="+")
        p.add_argument("--out", default=f"_build/claims/{name}")
        p.add_argument("--jobs", type=int, default=2 if name == "seeds" else 1)
        p.add_argument("--timeout", type=int, default=1200, help="seconds per cell")
        if name == "seeds":
            p.add_argument("--seeds", default="0-4")
    p = sub.add_parser("execute", help="execute one notebook here (used by the others)")
    p.add_argument("notebook")
    p.add_argument("--timeout", type=int, default=1200)
    args = parser.parse_args(argv)
    if args.command == "execute":
        print(json.dumps(execute_notebook(args.notebook, args.timeout)))
        return 0
    seeds = parse_seeds(args.seeds) if args.command == "seeds" else [0]
    scale = "small" if args.command == "seeds" else "full"
    results = run_lessons(args.lessons, seeds, scale, args.out, args.jobs, args.timeout)
    rows = summarise(args.out, seeds)
    failed = [r for r in rows if r["status"] == "checked" and r["passed"] < len(seeds)]
    print(f"{len(rows)} claims over seeds {seeds} at scale {scale}: {len(failed)} not passing at every seed; "
          f"tables in {args.out}/claims.md and {args.out}/lessons.md")
    for r in failed:
        print(f"  FAIL {r['chapter']} {r['label']}#{r['index']}: {r['passed']}/{len(seeds)} passed, "
              f"min margin {r['min_margin']}")
    return 1 if failed or any(r["errors"] for r in results) else 0


if __name__ == "__main__":
    raise SystemExit(main())
