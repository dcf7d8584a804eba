"""Benchmarks of lrkit.sweep (DESIGN.md section 9; issue 6).

    .venv/bin/python bench/bench_sweep.py [--configs 64] [--width 128]

1. 64 small LoRA configurations (learning rates x inits x seeds, 100 Adam steps) trained as
   one batched sweep vs the same 64 one after another; asserts that both give the same loss
   curves (float tolerance) and prints the speed-up (goal >= 10x on the 2-core CPU).
2. The LoRA+ grid of Chapter 6 at width 1024: 13 x 13 (eta_A, eta_B) x 2 seeds = 338
   configurations, 100 Adam steps, one sweep (goal < 15 s; our numpy reference, one
   configuration at a time, took about 140 s).

Timings are wall-clock medians of a few repeats, taken after one warm-up run.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import lrkit  # noqa: E402
from lrkit import sweep as sw  # noqa: E402

NUMPY_REFERENCE_S = 140.0


def _median_time(fn: Callable[[], object], repeats: int) -> tuple[float, object]:
    out = fn()  # warm-up
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times), out


def bench_batched_vs_sequential(configs: int, width: int, steps: int = 100, repeats: int = 3) -> float:
    task = sw.lora_task(width, seed=0)
    seeds = list(range(max(1, configs // 16)))
    lrs = list(np.geomspace(1e-3, 0.3, configs // (2 * len(seeds))))
    cfg = sw.grid(init=["A", "B"], eta=lrs, seed=seeds)
    K = len(cfg["eta"])

    def batched() -> sw.SweepResult:
        return sw.run_lora_sweep(task, cfg["eta"], init=cfg["init"], seed=cfg["seed"], steps=steps, progress=False)

    def sequential() -> list[sw.SweepResult]:
        return [sw.run_lora_sweep(task, cfg["eta"][k], init=cfg["init"][k], seed=cfg["seed"][k], steps=steps,
                                  progress=False) for k in range(K)]

    t_batched, many = _median_time(batched, repeats)
    t_seq, ones = _median_time(sequential, max(1, repeats - 2))
    for k, one in enumerate(ones):
        assert np.allclose(many.loss[k], one.loss[0], rtol=1e-4, atol=1e-6, equal_nan=True), (
            f"configuration {k}: batched and sequential loss curves differ")
        assert many.diverged[k] == one.diverged[0], f"configuration {k}: divergence differs"
    ratio = t_seq / t_batched
    print(f"sweep: {K} configurations (width {width}, {steps} Adam steps): batched {t_batched:.3f} s, "
          f"one by one {t_seq:.3f} s -> {ratio:.1f}x faster (goal >= 10x); results agree (rtol 1e-4), "
          f"{int(many.diverged.sum())} diverged in both")
    return ratio


def bench_loraplus_grid(width: int = 1024, steps: int = 100, repeats: int = 2) -> float:
    task = sw.lora_task(width, seed=0)
    etas = list(np.logspace(-4, 0, 13))
    cfg = sw.grid(eta_A=etas, eta_B=etas, seed=[0, 1])
    t, res = _median_time(lambda: sw.run_lora_sweep(task, cfg["eta_A"], cfg["eta_B"], init="A", seed=cfg["seed"],
                                                    steps=steps, progress=False), repeats)
    print(f"sweep: LoRA+ grid 13 x 13 x 2 seeds = {len(res)} configurations at width {width}, {steps} Adam steps: "
          f"{t:.2f} s (goal < 15 s; numpy one-at-a-time reference about {NUMPY_REFERENCE_S:.0f} s -> "
          f"{NUMPY_REFERENCE_S / t:.0f}x)")
    return t


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--configs", type=int, default=64)
    parser.add_argument("--width", type=int, default=128)
    args = parser.parse_args(argv)
    print(lrkit.describe_env())
    bench_batched_vs_sequential(args.configs, args.width)
    bench_loraplus_grid()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
