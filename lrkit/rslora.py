"""The rank-scaling experiment of Chapter 1: one linear layer, many ranks, alpha/r against alpha/sqrt(r).

With whitened inputs ``x ~ N(0, I)`` the population loss of a LoRA layer
``y = (W0 + s B A) x`` against a teacher ``y = (W0 + T) x`` is a function of matrices only:

    L(A, B) = 1/2 ||s B A - T||_F^2,     A: (r, n_in),  B: (n_out, r),
    grad_B = s G A^T,   grad_A = s B^T G,   G = s B A - T,

with ``s = alpha / r`` (LoRA) or ``alpha / sqrt(r)`` (rsLoRA). :func:`lora_linear_sweep` trains
``K`` configurations (rank, scale, learning rate, initial draw) as one batched program;
configurations of equal rank share one tensor, so nothing is padded. A diverged configuration
is flagged, frozen and its curve NaN from then on (the step is recorded), never a crash.

The theory of this experiment (Eckart-Young floors, the exact reparametrisation between scales,
the first step's loss drop) lives in :mod:`lrkit.rslora_theory`; its names are re-exported here.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from ._validate import blowup_factor, broadcast, check_device, check_seed, choice, positive_float, positive_int
from .env import cpu_seeded, few_threads, float_dtype
from .finetune_task import power_law_matrix
from .init import init_lora_
from .lora import lora_scaling
from .optim import AdamState, batched_adam_step, batched_sgd_step
from .rslora_theory import (  # re-exported: Chapter 1 reads the theory from here
    OPTIMIZERS,
    Optimizer,
    eckart_young_floor,
    equivalent_config,
    first_step_theory,
    grad_norm_theory,
    init_std,
    ratio_spread,
    time_to_reach,
)
from .runs import Divergence

__all__ = ["OPTIMIZERS", "power_law_teacher", "eckart_young_floor", "init_std", "initial_factors",
           "LinearSweep", "lora_linear_sweep", "first_step_theory", "grad_norm_theory", "ratio_spread",
           "equivalent_config", "time_to_reach"]


def power_law_teacher(n: int, decay: float = 0.5, seed: int = 0,
                      device: torch.device | str | None = None) -> torch.Tensor:
    """A full-rank ``(n, n)`` teacher ``T = sqrt(n) U diag(i^-decay) V^T`` (random orthonormal U, V).

    With ``decay = 1/2`` the energy ``sigma_i^2 = n / i`` spreads over every direction: the best
    rank-``r`` update leaves ``(H_n - H_r) / H_n`` of it (``H`` harmonic numbers).
    """
    n = positive_int(n, "n")
    dev = check_device(device)
    M = power_law_matrix(n, n, decay, seed=seed, device="cpu").to(torch.float64)
    s = torch.arange(1, n + 1, dtype=torch.float64) ** -float(decay)
    T: torch.Tensor = (M * (math.sqrt(n) * s.norm())).to(torch.float32)
    return T.to(dev)


def initial_factors(n_in: int, rank: int, draws: Sequence[int], seed: int = 0, init: str = "A",
                    dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Initial ``A`` of each draw, shape ``(len(draws), rank, n_in)``, drawn by :func:`lrkit.init.init_lora_`.

    Draw ``d`` is seeded by ``(seed, d)`` only: equal draws give equal matrices, whatever the other
    configurations; the global random stream is left untouched.
    """
    if init not in ("A", "gaussian"):
        raise ValueError(f"init must be 'A' or 'gaussian' (schemes with B = 0), got {init!r}")
    out = torch.empty(len(draws), rank, n_in, dtype=torch.float64)
    for k, d in enumerate(draws):
        A, B = torch.empty(rank, n_in), torch.empty(1, rank)
        with cpu_seeded(check_seed(seed, "seed") * 100_003 + check_seed(d, "draw")):
            init_lora_(A, B, torch.zeros(1, n_in), 1.0, init)
        out[k] = A.to(torch.float64)
    return out.to(dtype)


@dataclass
class LinearSweep:
    """``K`` configurations: relative population loss ``loss`` (K, steps + 1) and ``grad_B`` norms.

    ``diverged_at[k]`` is the step at which configuration ``k`` was flagged (-1 if never).
    """

    ranks: list[int]
    rslora: list[bool]
    scaling: torch.Tensor
    lr: torch.Tensor
    loss: torch.Tensor
    grad_norm: torch.Tensor
    diverged: torch.Tensor
    diverged_at: torch.Tensor

    @property
    def final(self) -> torch.Tensor:
        """Relative loss after the last step, per configuration (NaN if diverged)."""
        return self.loss[:, -1]


def lora_linear_sweep(teacher: torch.Tensor, ranks: Sequence[int], rslora: Sequence[bool] | bool = False,
                      alpha: float = 8.0, lr: float | Sequence[float] = 0.005, steps: int = 300,
                      optimizer: Optimizer = "sgd", seed: int = 0, draw: Sequence[int] | None = None,
                      init_scale: float | Sequence[float] = 1.0, init: str = "A",
                      blowup: float = 1e3) -> LinearSweep:
    """Train one LoRA layer per configuration against ``teacher`` (n_out, n_in), all at once.

    Configuration ``k``: rank ``ranks[k]``, scaling ``alpha / r`` (``alpha / sqrt(r)`` if
    ``rslora[k]``), learning rate ``lr[k]``, initial ``A = init_scale[k] * A0`` with ``A0`` draw
    ``draw[k]`` of :func:`initial_factors` (default: draw ``k``), ``B = 0``. ``optimizer``:
    ``"sgd"`` (plain gradient descent) or ``"adam"`` (``beta = (0.9, 0.999)``, ``eps = 1e-8``).
    Computes in the teacher's dtype (float32, or float64 for exactness checks). A configuration
    whose loss is non-finite or above ``blowup * L0`` is frozen from then on (curve NaN).
    """
    if not isinstance(teacher, torch.Tensor) or teacher.ndim != 2:
        raise ValueError(f"teacher must be a 2-D tensor (out, in), got {getattr(teacher, 'shape', teacher)!r}")
    if not torch.isfinite(teacher).all():
        raise ValueError("teacher must be finite")
    ranks = [positive_int(r, "ranks[i]") for r in ranks]
    if not ranks:
        raise ValueError("ranks must be a non-empty list of ints")
    n_out, n_in = teacher.shape
    if max(ranks) > min(n_out, n_in):
        raise ValueError(f"ranks must satisfy 1 <= r <= min(out, in) = {min(n_out, n_in)}, got {max(ranks)}")
    K = len(ranks)
    if isinstance(rslora, bool):
        flags = [rslora] * K
    else:
        flags = [bool(f) for f in rslora]
        if len(flags) != K:
            raise ValueError(f"rslora must be a bool or one bool per rank ({K}), got {len(flags)}")
    lrs = [positive_float(v, "lr") for v in broadcast(lr, K, "lr")]
    scales = [positive_float(v, "init_scale") for v in broadcast(init_scale, K, "init_scale")]
    draws = list(range(K)) if draw is None else [check_seed(d, "draw") for d in broadcast(draw, K, "draw")]
    steps = positive_int(steps, "steps")
    choice(optimizer, "optimizer", OPTIMIZERS)
    alpha = positive_float(alpha, "alpha")
    blowup = blowup_factor(blowup)
    seed = check_seed(seed)
    dtype = torch.float64 if teacher.dtype == torch.float64 else torch.float32
    T = teacher.to(dtype)
    wide = float_dtype(T.device)  # float64 accumulators, float32 on MPS
    L0 = 0.5 * float(T.to(wide).square().sum())  # relative loss L / L0
    s_all = torch.tensor([lora_scaling(alpha, r, f) for r, f in zip(ranks, flags)], dtype=torch.float64)
    loss = torch.full((K, steps + 1), float("nan"), dtype=torch.float64)
    gnorm = torch.full((K, steps + 1), float("nan"), dtype=torch.float64)
    dead_at = torch.full((K,), -1, dtype=torch.long)
    for r in sorted(set(ranks)):  # one tensor per rank: no padding
        idx = [k for k in range(K) if ranks[k] == r]
        A0 = initial_factors(n_in, r, [draws[k] for k in idx], seed, init, dtype)
        A = A0.to(T.device) * torch.tensor([scales[k] for k in idx], dtype=dtype).view(-1, 1, 1).to(T.device)
        g_loss, g_norm, g_dead = _train_group(T, A, s_all[idx], [lrs[k] for k in idx], steps, optimizer, L0, blowup)
        loss[idx], gnorm[idx], dead_at[idx] = g_loss.double(), g_norm.double(), g_dead  # one copy per rank
    return LinearSweep(ranks, flags, s_all.float(), torch.tensor(lrs), loss, gnorm, dead_at >= 0, dead_at)


def _train_group(T: torch.Tensor, A: torch.Tensor, s: torch.Tensor, lrs: list[float], steps: int,
                 optimizer: str, L0: float, blowup: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Train the ``K`` configurations of one rank; their ``(loss, grad_norm, diverged_at)``, on the CPU.

    :class:`lrkit.runs.Divergence` (relative loss above ``blowup`` or non-finite): nothing leaves the
    device inside the loop; a configuration that diverges is zeroed (``A = B = 0``, moments 0) and its
    rate set to 0 by masks, its curves are NaN from then on, and the curves are copied to the host
    once, at the end.
    """
    K, dev, dtype = A.shape[0], T.device, T.dtype
    wide = float_dtype(dev)
    B = torch.zeros(K, T.shape[0], A.shape[1], device=dev, dtype=dtype)
    sc = s.to(dtype).to(dev).view(K, 1, 1)
    eta = torch.tensor(lrs, dtype=dtype).to(dev)
    adam_a, adam_b = AdamState(A), AdamState(B)
    div = Divergence(K, blowup, dev, start=1.0)  # the loss is relative to L0: 1 at step 0
    loss = torch.full((K, steps + 1), float("nan"), dtype=wide, device=dev)
    gnorm = torch.full((K, steps + 1), float("nan"), dtype=wide, device=dev)
    T2 = T.to(wide).square().sum()
    work = 6.0 * K * T.numel() * A.shape[1]  # multiply-adds per step
    with few_threads(dev, work):
        for t in range(steps + 1):
            # no (n_out, n_in) temporaries: every product is O(n^2 r) or O(n r^2)
            TA, AAt, BtB = T @ A.transpose(1, 2), A @ A.transpose(1, 2), B.transpose(1, 2) @ B
            Lk = 0.5 * ((sc.flatten() ** 2 * (BtB * AAt).sum((1, 2))).to(wide)
                        - 2 * (sc.flatten() * (B * TA).sum((1, 2))).to(wide) + T2) / L0
            alive = div.update(Lk, t)
            # a diverged configuration is zeroed: A = B = 0 gives TA = AAt = BtB = 0 exactly
            A, B, TA, AAt, BtB = div.freeze(A, B, TA, AAt, BtB)
            if optimizer == "adam":
                adam_a.m, adam_a.v, adam_b.m, adam_b.v = div.freeze(adam_a.m, adam_a.v, adam_b.m, adam_b.v)
            gB = sc * (sc * (B @ AAt) - TA)  # s G A^T with G = s B A - T
            loss[:, t] = div.mask(Lk)
            gnorm[:, t] = div.mask(gB.square().sum((1, 2)).to(wide).sqrt())
            if t == steps:
                break
            gA = sc * (sc * (BtB @ A) - B.transpose(1, 2) @ T)  # s B^T G
            rate = eta * alive.to(dtype)  # frozen configurations take no step
            if optimizer == "sgd":
                A, B = batched_sgd_step(A, gA, rate), batched_sgd_step(B, gB, rate)
            else:
                A, B = batched_adam_step(A, gA, adam_a, rate), batched_adam_step(B, gB, adam_b, rate)
    return loss.cpu(), gnorm.cpu(), div.diverged_at.cpu()  # the caller's float64 rows take them
