"""Where and at what size the course runs: device, seeding and the scale knob.

Every lesson starts with ``print(lrkit.describe_env())`` so a reader always knows
which device and which scale produced the numbers on the page.

* device: CUDA if available, else Apple's MPS, else the CPU
  (override with ``LRKIT_DEVICE=cpu|cuda|mps``);
* scale: ``LRKIT_SCALE=small|full``; by default ``full`` on CUDA and ``small``
  otherwise. ``small`` fits a 2-core laptop in well under a minute per lesson,
  ``full`` reproduces the papers' regime on a GPU.
"""

from __future__ import annotations

import os
import random
from contextlib import contextmanager
from typing import Iterator, Literal

import numpy as np
import torch

Scale = Literal["small", "full"]
SCALES: tuple[str, ...] = ("small", "full")
DEVICES: tuple[str, ...] = ("cpu", "cuda", "mps")


def _mps_available() -> bool:
    mps = getattr(torch.backends, "mps", None)
    return bool(mps is not None and mps.is_available())


def get_device() -> torch.device:
    """The device every lesson creates its tensors on (``LRKIT_DEVICE`` overrides)."""
    choice = os.environ.get("LRKIT_DEVICE", "").strip().lower()
    if choice:
        if choice not in DEVICES:
            raise ValueError(f"LRKIT_DEVICE must be one of {DEVICES}, got {choice!r}")
        if choice == "cuda" and not torch.cuda.is_available():
            raise ValueError("LRKIT_DEVICE='cuda' but torch.cuda.is_available() is False")
        if choice == "mps" and not _mps_available():
            raise ValueError("LRKIT_DEVICE='mps' but the MPS backend is not available")
        return torch.device(choice)
    if torch.cuda.is_available():
        return torch.device("cuda")
    if _mps_available():
        return torch.device("mps")
    return torch.device("cpu")


def get_scale() -> Scale:
    """``small`` or ``full``, from ``LRKIT_SCALE`` (default: full on CUDA, else small)."""
    raw = os.environ.get("LRKIT_SCALE", "").strip().lower()
    if not raw:
        return "full" if get_device().type == "cuda" else "small"
    if raw not in SCALES:
        raise ValueError(f"LRKIT_SCALE must be one of {SCALES}, got {raw!r}")
    return raw  # type: ignore[return-value]


def by_scale(small: object, full: object) -> object:
    """Pick a setting by the current scale: ``by_scale(small=64, full=4096)``."""
    return small if get_scale() == "small" else full


def seed_everything(seed: int) -> torch.Generator:
    """Seed Python, NumPy and torch (all devices); returns a CPU generator seeded the same.

    CPU runs are then deterministic; GPU kernels may still differ in the last bits.
    """
    if not isinstance(seed, int) or isinstance(seed, bool) or seed < 0:
        raise ValueError(f"seed must be a non-negative int, got {seed!r}")
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    return torch.Generator().manual_seed(seed)


def describe_env() -> str:
    """One line naming the device, the scale and the torch version."""
    dev = get_device()
    name = torch.cuda.get_device_name(dev) if dev.type == "cuda" else dev.type
    return f"lrkit: device={name}, scale={get_scale()} (LRKIT_SCALE), torch={torch.__version__}"


@contextmanager
def few_threads(device: torch.device, work: float = 0.0, limit: float = 20_000_000) -> Iterator[None]:
    """On the CPU, run a block of small kernels on one thread, then restore the setting.

    Batched sweeps run thousands of small matrix products per second; OpenMP threads gain
    little on them and, when the cores are shared, spin-waiting threads made our sweeps 7 to
    100x slower (bench/bench_sweep.py). ``work`` (multiply-adds per step) above ``limit`` keeps
    the threads; on a GPU nothing changes.
    """
    if device.type != "cpu" or work > limit:
        yield
        return
    saved = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(saved)
