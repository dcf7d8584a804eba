"""Performance budgets of DESIGN.md section 9, printed side by side in one run.

    make bench            # or: .venv/bin/python bench/bench.py [--skip-lessons]

* LoRALinear forward+backward vs PEFT's LoRA layer on the same shapes (goal <= 1.1x);
* a merged LoRALinear vs a plain nn.Linear (goal 1.0x);
* each lesson's execution time at the current scale (goal < 60 s at small scale on 2 CPU cores).

Timings are medians over repeats of interleaved trials, so slow drifts of the
machine hit both sides alike.
"""

from __future__ import annotations

import argparse
import copy
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import lrkit  # noqa: E402
from lrkit import LoRALinear  # noqa: E402


def _median_time(fns: dict[str, Callable[[], None]], repeats: int, inner: int) -> dict[str, float]:
    times: dict[str, list[float]] = {k: [] for k in fns}
    for fn in fns.values():  # warm-up
        for _ in range(3):
            fn()
    for _ in range(repeats):
        for k, fn in fns.items():  # interleaved
            t0 = time.perf_counter()
            for _ in range(inner):
                fn()
            times[k].append((time.perf_counter() - t0) / inner)
    return {k: statistics.median(v) for k, v in times.items()}


def bench_layers(batch: int, d_in: int, d_out: int, rank: int, repeats: int = 15, inner: int = 20) -> None:
    from peft import LoraConfig, get_peft_model

    torch.manual_seed(0)
    dev = lrkit.get_device()
    base = nn.Sequential(nn.Linear(d_in, d_out)).to(dev)
    ours = LoRALinear(copy.deepcopy(base[0]), rank=rank, alpha=2 * rank)
    theirs = get_peft_model(copy.deepcopy(base), LoraConfig(r=rank, lora_alpha=2 * rank, target_modules=["0"]))
    theirs_layer = theirs.get_submodule("base_model.model.0")
    x = torch.randn(batch, d_in, device=dev)

    def fb(m: nn.Module) -> Callable[[], None]:
        def step() -> None:
            m.zero_grad(set_to_none=True)
            m(x).sum().backward()
        return step

    t = _median_time({"lrkit": fb(ours), "peft": fb(theirs_layer)}, repeats, inner)
    print(f"  fwd+bwd  batch={batch:5d} {d_in}x{d_out} r={rank:3d}:  lrkit {t['lrkit']*1e3:8.3f} ms   "
          f"PEFT {t['peft']*1e3:8.3f} ms   ratio {t['lrkit']/t['peft']:.3f}  (goal <= 1.1)")

    merged = copy.deepcopy(ours)
    merged.merge()
    plain = copy.deepcopy(base[0])

    def fwd(m: nn.Module) -> Callable[[], None]:
        def step() -> None:
            with torch.no_grad():
                m(x)
        return step

    t = _median_time({"merged": fwd(merged), "linear": fwd(plain)}, repeats, inner)
    print(f"  forward  batch={batch:5d} {d_in}x{d_out} r={rank:3d}:  merged {t['merged']*1e3:8.3f} ms   "
          f"nn.Linear {t['linear']*1e3:8.3f} ms   ratio {t['merged']/t['linear']:.3f}  (goal 1.0)")


def bench_lessons() -> None:
    import nbformat
    from nbclient import NotebookClient

    for path in sorted((ROOT / "lessons").glob("*.ipynb")):
        nb = nbformat.read(path, as_version=4)
        t0 = time.perf_counter()
        NotebookClient(nb, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(ROOT / "lessons")}}
                       ).execute()
        dt = time.perf_counter() - t0
        print(f"  {path.relative_to(ROOT)}: {dt:6.1f} s at scale={lrkit.get_scale()}  (goal < 60 s at small)")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--skip-lessons", action="store_true", help="only time the layers")
    args = ap.parse_args()
    torch.set_num_threads(torch.get_num_threads())
    print(lrkit.describe_env(), f"threads={torch.get_num_threads()}")
    print("LoRA layer vs PEFT, merged layer vs nn.Linear (median of interleaved repeats):")
    for shape in [(64, 512, 512, 8), (256, 1024, 1024, 16), (1024, 1024, 4096, 64)]:
        bench_layers(*shape)
    if not args.skip_lessons:
        print("Lesson execution times:")
        bench_lessons()


if __name__ == "__main__":
    main()
