"""Where and at what size the course runs: device, seeding and the scale knob.

Every lesson starts with ``print(lrkit.describe_env())`` so a reader always knows
which device and which scale produced the numbers on the page.

* device: CUDA if available, else Apple's MPS, else the CPU
  (override with ``LRKIT_DEVICE=cpu|cuda|mps``); a lesson whose checks need float64 asks
  ``get_device(needs_float64=True)`` and runs on the CPU where the device would be MPS;
* scale: ``LRKIT_SCALE=small|full``; by default ``full`` on CUDA and ``small``
  otherwise. ``small`` fits a 2-core laptop in well under a minute per lesson,
  ``full`` reproduces the papers' regime on a GPU;
* dtype: Apple's MPS has no float64 (nor complex128): :func:`float_dtype` names the widest
  real dtype a device computes in (float64 on the CPU and CUDA, float32 on MPS) and
  :func:`to_device_dtype` moves a tensor there, narrowing it where the device needs it.
"""

from __future__ import annotations

import os
import random
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, Literal

import numpy as np
import torch

from ._validate import check_seed

__all__ = ["DEVICES", "SCALES", "by_scale", "complex_dtype", "cpu_on_mps", "describe_env", "few_threads", "float_dtype",
           "generator", "cpu_seeded", "get_device", "get_scale", "get_seed", "resolve_scale", "seed_everything",
           "to_device_dtype"]

Scale = Literal["small", "full"]
SCALES: tuple[str, ...] = ("small", "full")
DEVICES: tuple[str, ...] = ("cpu", "cuda", "mps")


def _mps_available() -> bool:
    mps = getattr(torch.backends, "mps", None)
    return bool(mps is not None and mps.is_available())


FLOAT64_ON_CPU = ("this lesson's checks compare against theory to ~1e-9 or below float32's precision, "
                  "which needs float64; MPS has none, so it runs on the CPU")

# Set once a lesson asks for float64 on a machine whose device is MPS: from then on every
# get_device() in this process (the library's defaults, describe_env, the claims ledger) says CPU.
_float64_on_cpu = False


def _chosen_device() -> torch.device:
    """The device from ``LRKIT_DEVICE``, else CUDA, else MPS, else the CPU."""
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


def get_device(needs_float64: bool = False) -> torch.device:
    """The device every lesson creates its tensors on (``LRKIT_DEVICE`` overrides).

    ``needs_float64=True`` is for a lesson whose claim checks need float64 (they compare
    against theory to about 1e-9, or follow errors far below float32's precision): where the
    device would be MPS, which has no float64, it
    returns the CPU, prints one line saying why, and every later ``get_device()`` in this
    process returns the CPU too, so the library's defaults and :func:`describe_env` agree
    with the lesson. CUDA and the CPU are returned unchanged.
    """
    global _float64_on_cpu
    dev = _chosen_device()
    if dev.type != "mps":
        return dev
    if needs_float64:
        print(f"lrkit: {FLOAT64_ON_CPU}.")
        _float64_on_cpu = True
    return torch.device("cpu") if _float64_on_cpu else dev


def float_dtype(device: torch.device | str | None = None) -> torch.dtype:
    """The widest real dtype ``device`` computes in: float64, or float32 on MPS (which has no float64).

    ``None`` means :func:`get_device`. Code that wants float64 for accuracy asks for
    ``float_dtype(dev)`` instead, so the same line runs on every device.
    """
    dev = get_device() if device is None else torch.device(device)
    return torch.float32 if dev.type == "mps" else torch.float64


def complex_dtype(device: torch.device | str | None = None) -> torch.dtype:
    """complex128, or complex64 on MPS: the complex partner of :func:`float_dtype`."""
    return torch.complex64 if float_dtype(device) == torch.float32 else torch.complex128


def to_device_dtype(tensor: torch.Tensor, device: torch.device | str | None = None,
                    dtype: torch.dtype | None = None) -> torch.Tensor:
    """``tensor`` on ``device`` (default: where it is) in ``dtype`` (default: :func:`float_dtype`).

    A float64 (complex128) ``dtype`` becomes float32 (complex64) on MPS; the dtype is changed on
    whichever side supports both, so a CPU float64 tensor reaches MPS as float32.
    """
    dev = tensor.device if device is None else torch.device(device)
    want = float_dtype(dev) if dtype is None else dtype
    if dev.type == "mps":
        want = {torch.float64: torch.float32, torch.complex128: torch.complex64}.get(want, want)
    if tensor.device.type == "cpu":
        return tensor.to(want).to(dev)
    return tensor.to(dev).to(want)


def cpu_on_mps(fn: Callable[..., Any], *tensors: torch.Tensor) -> Any:
    """``fn(*tensors)``; on MPS it runs on the CPU and its tensor results come back to MPS.

    For the decompositions (``torch.linalg.eigh``, ``svd``, ``svdvals``) that torch's MPS backend
    may lack. Elsewhere ``fn`` runs where the tensors are, unchanged. Not for a per-step loop:
    each call on MPS copies to the host and back.
    """
    dev = tensors[0].device if tensors else torch.device("cpu")
    if dev.type != "mps":
        return fn(*tensors)
    out = fn(*(t.cpu() for t in tensors))
    if isinstance(out, torch.Tensor):
        return out.to(dev)
    return type(out)(*(o.to(dev) for o in out)) if hasattr(out, "_fields") else tuple(o.to(dev) for o in out)


def get_scale() -> Scale:
    """``small`` or ``full``, from ``LRKIT_SCALE`` (default: full on CUDA, else small)."""
    raw = os.environ.get("LRKIT_SCALE", "").strip().lower()
    if not raw:
        return "full" if get_device().type == "cuda" else "small"
    if raw not in SCALES:
        raise ValueError(f"LRKIT_SCALE must be one of {SCALES}, got {raw!r}")
    return raw  # type: ignore[return-value]


def by_scale(small: object, full: object, scale: str | None = None) -> object:
    """Pick a setting by scale: ``by_scale(small=64, full=4096)``.

    ``scale`` defaults to :func:`get_scale`; a given one must be ``"small"`` or ``"full"``.
    """
    return small if resolve_scale(scale) == "small" else full


def resolve_scale(scale: str | None = None) -> Scale:
    """``scale`` checked to be ``"small"`` or ``"full"``; ``None`` means :func:`get_scale`."""
    if scale is None:
        return get_scale()
    if scale not in SCALES:
        raise ValueError(f"scale must be one of {SCALES}, got {scale!r}")
    return scale  # type: ignore[return-value]


def get_seed() -> int:
    """The lesson's seed, from ``LRKIT_SEED`` (default 0): every lesson takes all its randomness from it."""
    raw = os.environ.get("LRKIT_SEED", "").strip()
    if not raw:
        return 0
    try:
        value = int(raw)
    except ValueError:
        raise ValueError(f"LRKIT_SEED must be a non-negative integer, got {raw!r}") from None
    return check_seed(value)


def generator(seed: int) -> torch.Generator:
    """A CPU ``torch.Generator`` seeded with ``seed`` (a non-negative int), for reproducible draws."""
    return torch.Generator().manual_seed(check_seed(seed))


@contextmanager
def cpu_seeded(seed: int) -> Iterator[None]:
    """Run a block on a private copy of torch's CPU stream seeded with ``seed``, then restore it.

    Unlike ``torch.manual_seed`` inside ``fork_rng(devices=[])``, no GPU stream is seeded (or
    changed) as a side effect; code that draws on the CPU inside gives the same numbers on
    every device.
    """
    seed = check_seed(seed)
    with torch.random.fork_rng(devices=[]):
        torch.default_generator.manual_seed(seed)
        yield


def seed_everything(seed: int) -> torch.Generator:
    """Seed Python, NumPy and torch (all devices); returns a CPU generator seeded the same.

    CPU runs are then deterministic; GPU kernels may still differ in the last bits.
    """
    check_seed(seed)
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    return generator(seed)


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
