"""Many LoRA training configurations as one tensor program: the engine of Chapters 5 and 6.

**The task** (:mod:`lrkit.lora_task`): a frozen width-``n`` layer whose features ``z`` have
entries of order 1 must learn a rank-``r*`` change; the adapter ``s B A`` (``A`` (r, n),
``B`` (n, r)) is trained on ``L = ||s B A Z^T - dW* Z^T||_F^2 / (2 n N)``, computed from
reduced sufficient statistics at a cost of ``K r n m`` per step (``m = rank(Z) <= d``).

**The sweep.** :func:`run_lora_sweep` trains ``K`` configurations at once, each with its
own ``(eta_A, eta_B, init, seed)``: ``A`` (K, r, n), ``B`` (K, n, r). A configuration whose
loss becomes non-finite or exceeds ``blowup`` times the task's starting loss is *diverged*:
frozen, marked, its curves NaN from then on (the course's one rule, :mod:`lrkit.runs`).
``snapshots`` keeps ``(A, B)`` at chosen steps. The readers of a sweep live in
:mod:`lrkit.lr_scaling` and are re-exported here, with ``fit_exponent``.
Randomness comes from explicit seeds: a configuration gives the same numbers in a sweep of
one and in a sweep of a thousand.
"""

from __future__ import annotations

import itertools
import math
import numbers
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from ._validate import blowup_factor, broadcast, check_seed, positive_float, positive_int
from .env import cpu_seeded, few_threads, float_dtype
from .fit import ExponentFit, fit_power_law
from .init import INIT_SCHEMES, init_lora_
from .lora_task import LoRATask, lora_task
from .lr_scaling import (
    best_eta_A_per_eta_B,
    best_lr,
    best_pair,
    feature_rms,
    largest_stable_lr,
    near_optimal_centre,
    step_terms,
    steps_to_reach,
)
from .optim import AdamState, batched_adam_step, batched_sgd_step
from .progress import progress_bar
from .runs import Divergence

OPTIMIZERS: tuple[str, ...] = ("adam", "sgd")
# pissa needs a base weight
SWEEP_INITS: tuple[str, ...] = tuple(k for k in INIT_SCHEMES if k != "pissa")

__all__ = ["LoRATask", "lora_task", "SweepResult", "run_lora_sweep", "init_factors", "grid",
           "factor2_grid", "largest_stable_lr", "best_lr", "best_pair", "best_eta_A_per_eta_B",
           "near_optimal_centre", "steps_to_reach", "feature_rms", "step_terms", "ExponentFit",
           "fit_exponent"]

# Chapters 5 and 6 fit exponents across widths: the course's one power-law fit
fit_exponent = fit_power_law


# --------------------------------------------------------------------------- configurations


def grid(**axes: Sequence[Any]) -> dict[str, list[Any]]:
    """The Cartesian product of the axes, as one list per name (last axis fastest).

    ``grid(eta=[0.1, 0.2], seed=[0, 1])`` gives
    ``{"eta": [0.1, 0.1, 0.2, 0.2], "seed": [0, 1, 0, 1]}``.
    """
    if not axes:
        raise ValueError("grid needs at least one axis, e.g. grid(eta=[...], seed=[...])")
    for name, values in axes.items():
        if isinstance(values, (str, bytes)) or not hasattr(values, "__len__") or len(values) == 0:
            raise ValueError(f"axis {name!r} must be a non-empty sequence, got {values!r}")
    rows = list(itertools.product(*axes.values()))
    return {name: [row[i] for row in rows] for i, name in enumerate(axes)}


def factor2_grid(low: float, high: float) -> list[float]:
    """Learning rates ``2^k`` for every integer ``k`` with ``low <= 2^k <= high``."""
    low, high = positive_float(low, "low"), positive_float(high, "high")
    if low > high:
        raise ValueError(f"low must not exceed high, got low={low}, high={high}")
    lo, hi = math.ceil(math.log2(low) - 1e-9), math.floor(math.log2(high) + 1e-9)
    if lo > hi:
        raise ValueError(f"[low, high] = [{low}, {high}] holds no power of 2: widen it (e.g. low={2.0 ** hi}, "
                         f"high={2.0 ** lo})")
    return [2.0 ** k for k in range(lo, hi + 1)]


@dataclass
class SweepResult:
    """What a sweep measured, per configuration ``k`` (curves are NaN after a divergence).

    ``loss`` (K, steps + 1): the loss relative to the starting loss (1.0 at step 0);
    ``feature_rms`` (K, steps + 1): rms over samples and rank of the LoRA feature ``A z``;
    ``diverged`` (K,) and ``diverged_at`` (K,) (the step it was detected, -1 if never);
    ``A`` (K, r, n) and ``B`` (K, n, r): the final factors (zero for diverged configurations);
    ``snapshots``: ``{step: (A, B)}`` for the steps asked for (CPU tensors).
    """

    eta_A: np.ndarray
    eta_B: np.ndarray
    init: list[str]
    seed: list[int]
    loss: np.ndarray
    feature_rms: np.ndarray
    diverged: np.ndarray
    diverged_at: np.ndarray
    A: torch.Tensor
    B: torch.Tensor
    snapshots: dict[int, tuple[torch.Tensor, torch.Tensor]] = field(default_factory=dict)

    @property
    def final_loss(self) -> np.ndarray:
        """Relative loss after the last step, NaN for diverged configurations."""
        return self.loss[:, -1]

    @property
    def final(self) -> np.ndarray:
        """The :class:`lrkit.runs.RunResult` name of :attr:`final_loss`."""
        return self.final_loss

    def __len__(self) -> int:
        return len(self.init)


def init_factors(init: Sequence[str], seed: Sequence[int], rank: int, n: int, scaling: float,
                 device: torch.device | str = "cpu") -> tuple[torch.Tensor, torch.Tensor]:
    """``A`` (K, r, n) and ``B`` (K, n, r); configuration ``k`` drawn by ``lrkit.init`` from ``seed[k]``."""
    K = len(init)
    A = torch.empty(K, rank, n)
    B = torch.empty(K, n, rank)
    dummy = torch.empty(0)
    for k in range(K):
        with cpu_seeded(seed[k]):
            init_lora_(A[k], B[k], dummy, scaling, init[k])
    return A.to(device), B.to(device)


# --------------------------------------------------------------------------- the sweep


def run_lora_sweep(task: LoRATask, eta_A: float | Sequence[float],
                   eta_B: float | Sequence[float] | None = None, init: str | Sequence[str] = "A",
                   seed: int | Sequence[int] = 0, rank: int = 4, alpha: float | None = None,
                   steps: int = 100, optimizer: str = "adam", blowup: float = 10.0,
                   progress: bool | None = None, snapshots: Sequence[int] = ()) -> SweepResult:
    """Train ``K`` LoRA configurations on ``task`` at once (full batch); see the module docstring.

    ``eta_A`` gives ``K`` (a number means ``K = 1``); ``eta_B`` (default: equal to ``eta_A``),
    ``init`` ("A", "B" or "gaussian") and ``seed`` (the adapter's initial draw) are one value
    or ``K`` values. ``optimizer``: "adam" (``torch.optim.Adam``'s defaults) or "sgd".
    A configuration diverges when its loss is non-finite or above ``blowup`` times the
    starting loss. ``progress``: a tqdm bar (:mod:`lrkit.progress`'s rule; ``None``: full scale,
    not in the book build). ``snapshots``: steps (0 to ``steps``) at which to keep a copy of ``(A, B)``.
    """
    if not isinstance(task, LoRATask):
        raise TypeError(f"task must be a LoRATask (from lrkit.sweep.lora_task), "
                        f"got {type(task).__name__}")
    one = isinstance(eta_A, numbers.Real) or getattr(eta_A, "ndim", None) == 0  # NumPy / 0-d tensor scalars
    etas_A = [eta_A] if one else list(eta_A)  # type: ignore[arg-type]
    K = len(etas_A)
    if K == 0:
        raise ValueError("eta_A must be a learning rate or a non-empty sequence of them")
    etas_A = [positive_float(v, "eta_A") for v in etas_A]
    etas_B = etas_A if eta_B is None else [positive_float(v, "eta_B")
                                           for v in broadcast(eta_B, K, "eta_B")]
    inits = broadcast(init, K, "init")
    for name in set(inits):
        if name not in SWEEP_INITS:
            raise ValueError(f"init must be one of {list(SWEEP_INITS)}, got {name!r}")
    seeds = [check_seed(s) for s in broadcast(seed, K, "seed")]
    n = task.width
    rank = positive_int(rank, "rank")
    if rank > n:
        raise ValueError(f"rank must satisfy 1 <= rank <= width = {n}, got {rank}")
    scaling = 1.0 if alpha is None else positive_float(alpha, "alpha") / rank
    steps = positive_int(steps, "steps")
    if optimizer not in OPTIMIZERS:
        raise ValueError(f"optimizer must be one of {list(OPTIMIZERS)}, got {optimizer!r}")
    blowup = blowup_factor(blowup)
    keep = sorted(set(snapshots))
    if any(isinstance(t, bool) or not isinstance(t, int) or not 0 <= t <= steps for t in keep):
        raise ValueError(f"snapshots must be steps between 0 and steps = {steps}, got {snapshots!r}")
    with few_threads(task.Z.device):
        return _train(task, etas_A, etas_B, inits, seeds, rank, scaling, steps, optimizer, blowup,
                      progress, keep)


def _train(task: LoRATask, etas_A: list[float], etas_B: list[float], inits: list[str],
           seeds: list[int], rank: int, scaling: float, steps: int, optimizer: str,
           blowup: float, progress: bool | None, keep: list[int]) -> SweepResult:
    """The training loop of :func:`run_lora_sweep` (arguments already checked)."""
    K, n, N = len(etas_A), task.width, task.samples
    dev = task.Z.device
    wide = float_dtype(dev)                            # the r x r and r x m statistics: float64 (MPS: float32)
    Zr, Yr = task.Zr, task.Yr
    Zrt = Zr.T.contiguous()                            # (n, m)
    Yr64 = Yr.to(wide)
    y2 = Yr64.square().sum()
    A, B = init_factors(inits, seeds, rank, n, scaling, dev)
    lr_A = torch.tensor(etas_A, device=dev)
    lr_B = torch.tensor(etas_B, device=dev)
    state_A, state_B = AdamState(A), AdamState(B)
    div = Divergence(K, blowup, dev, start=1.0)        # losses below are relative to the task's L0
    L0 = task.initial_loss
    loss = torch.full((K, steps + 1), float("nan"), device=dev)   # curves stay on the device
    feat = torch.full((K, steps + 1), float("nan"), device=dev)
    shots: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}
    bar = progress_bar(steps, progress, desc="sweep")
    norm = scaling / (n * N)
    for t in range(steps + 1):
        if t in keep:
            shots[t] = (A.cpu().clone(), B.cpu().clone())
        P = A @ Zrt                                       # (K, r, m): the LoRA feature A z
        Bt, Pd = B.transpose(1, 2).to(wide), P.to(wide)
        G = Bt @ Bt.transpose(1, 2)                       # (K, r, r)  B^T B
        PPt = Pd @ Pd.transpose(1, 2)                     # (K, r, r)  P P^T
        BtY = Bt @ Yr64                                   # (K, r, m)  B^T Yr
        sq = scaling ** 2 * (G * PPt).sum((1, 2)) - 2 * scaling * (BtY * Pd).sum((1, 2)) + y2
        Lk = (0.5 * sq.clamp_min(0) / (n * N) / L0).float()   # (K,) loss relative to step 0
        alive = div.update(Lk, t)                         # no host synchronisation
        A, B, P, G, PPt, BtY = div.freeze(A, B, P, G, PPt, BtY)
        state_A.m, state_A.v, state_B.m, state_B.v = div.freeze(state_A.m, state_A.v, state_B.m, state_B.v)
        loss[:, t] = div.mask(Lk)
        feat[:, t] = div.mask((P.square().sum((1, 2)) / (rank * N)).sqrt())
        if t == steps:
            break
        gB = norm * (scaling * (B @ PPt.float()) - Yr @ P.transpose(1, 2))   # s E P^T / (nN)
        gA = norm * ((scaling * (G.float() @ P) - BtY.float()) @ Zr)        # s B^T E Z / (nN)
        rate_A, rate_B = lr_A * alive, lr_B * alive
        if optimizer == "adam":
            A = batched_adam_step(A, gA, state_A, rate_A)
            B = batched_adam_step(B, gB, state_B, rate_B)
        else:
            A = batched_sgd_step(A, gA, rate_A)
            B = batched_sgd_step(B, gB, rate_B)
        bar.update(1)
    bar.close()
    diverged, diverged_at = div.result()
    return SweepResult(eta_A=np.array(etas_A), eta_B=np.array(etas_B), init=list(inits),
                       seed=list(seeds), loss=loss.cpu().numpy(), feature_rms=feat.cpu().numpy(),
                       diverged=diverged, diverged_at=diverged_at, A=A.cpu(), B=B.cpu(),
                       snapshots=shots)
