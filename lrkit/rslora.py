"""The rank-scaling experiment of Chapter 1: one linear layer, many ranks, alpha/r against alpha/sqrt(r).

With whitened inputs ``x ~ N(0, I)`` the population loss of a LoRA layer
``y = (W0 + s B A) x`` against a teacher ``y = (W0 + T) x`` is a function of matrices only:

    L(A, B) = 1/2 ||s B A - T||_F^2,     A: (r, n_in),  B: (n_out, r),
    grad_B = s G A^T,   grad_A = s B^T G,   G = s B A - T,

with ``s = alpha / r`` (LoRA) or ``alpha / sqrt(r)`` (rsLoRA). :func:`lora_linear_sweep` trains
``K`` configurations (rank, scale, learning rate, initial draw) as one batched program;
configurations of equal rank share one tensor, so nothing is padded. A diverged configuration
is flagged, frozen and its curve NaN from then on (the step is recorded), never a crash.

**The reparametrisation** (exact; our derivation). Put ``B' = sqrt(s) B``, ``A' = sqrt(s) A``: then
``s B A = B' A'``, ``grad_B' = grad_B / sqrt(s)`` and one step of rate ``eta`` on ``(A, B)``

* under gradient descent is a step of rate ``eta s`` on ``(A', B')``;
* under Adam (blind to a gradient's scale up to its ``eps``) is a step of rate ``eta sqrt(s)``,

both from the initialisation ``(sqrt(s) A0, 0)``. :func:`equivalent_config` returns the rate and
the initial-scale factor that make a run with one scale follow a run with another exactly.

**The first step** from Init[A] (``B = 0``; ``A`` uniform with variance ``sigma_A^2 = 1/(3 n_in)``),
to first order in ``eta`` (:func:`first_step_theory`), in expectation over ``A``:

* gradient descent: ``E[(L0 - L1)/L0] = 2 eta s^2 r sigma_A^2``;
* Adam (its first step is ``eta sign(grad)``):
  ``E[(L0 - L1)/L0] = eta s r sigma_A sqrt(2/pi) sum_i ||T_i.|| / L0``;

and the gradient's size at step 0 is ``||grad_B|| ~ s sqrt(r) sigma_A ||T||_F`` (:func:`grad_norm_theory`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import torch

from ._validate import as_int, blowup_factor, broadcast, check_device, check_seed, choice, positive_float, positive_int
from .env import cpu_seeded, few_threads, float_dtype
from .finetune import power_law_matrix
from .init import check_init_name, init_lora_
from .lora import lora_scaling
from .optim import AdamState, batched_adam_step, batched_sgd_step
from .runs import Divergence

Optimizer = Literal["sgd", "adam"]
OPTIMIZERS: tuple[str, ...] = ("sgd", "adam")

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


def eckart_young_floor(teacher: torch.Tensor, ranks: Sequence[int]) -> torch.Tensor:
    """Best relative loss of a rank-``r`` update, ``sum_{i>r} sigma_i^2 / sum_i sigma_i^2``, per rank.

    ``teacher`` (out, in); each rank in ``0 <= r <= min(out, in)`` (rank 0 leaves everything: 1).
    """
    if not isinstance(teacher, torch.Tensor) or teacher.ndim != 2:
        raise ValueError(f"teacher must be a 2-D tensor (out, in), got {getattr(teacher, 'shape', teacher)!r}")
    m = min(teacher.shape)
    if isinstance(ranks, (str, bytes)) or not hasattr(ranks, "__iter__") or getattr(ranks, "ndim", 1) == 0:
        raise TypeError(f"ranks must be a sequence of ranks, got {type(ranks).__name__}")
    rs = [as_int(r, "ranks[i]") for r in ranks]
    if not rs or not all(0 <= r <= m for r in rs):
        raise ValueError(f"ranks must be a non-empty list of ints with 0 <= r <= min(out, in) = {m}, got {rs}")
    s2 = torch.linalg.svdvals(teacher.detach().cpu().to(torch.float64)).square()
    tail = torch.cat([s2.sum().view(1), s2.sum() - torch.cumsum(s2, 0)])  # tail[r] = sum_{i>r} sigma_i^2
    return torch.stack([tail[r] / s2.sum() for r in rs])


def init_std(n_in: int, init: str = "A", rank: int = 1) -> float:
    """Standard deviation of an entry of ``A`` at step 0: ``1/sqrt(3 n_in)`` (Init[A]) or ``1/r`` ("gaussian")."""
    check_init_name(init)
    if init == "A":
        return 1.0 / math.sqrt(3 * positive_int(n_in, "n_in"))
    if init == "gaussian":
        return 1.0 / positive_int(rank, "rank")
    raise ValueError(f"init must be 'A' or 'gaussian' here (B = 0 at step 0), got {init!r}")


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
    """Train the ``k`` configurations of one rank; their ``(loss, grad_norm, diverged_at)``, on the CPU.

    :class:`lrkit.runs.Divergence` (relative loss above ``blowup`` or non-finite): nothing leaves the
    device inside the loop; a configuration that diverges is zeroed (``A = B = 0``, moments 0) and its
    rate set to 0 by masks, its curves are NaN from then on, and the curves are copied to the host
    once, at the end.
    """
    k, dev, dtype = A.shape[0], T.device, T.dtype
    wide = float_dtype(dev)
    B = torch.zeros(k, T.shape[0], A.shape[1], device=dev, dtype=dtype)
    sc = s.to(dtype).to(dev).view(k, 1, 1)
    eta = torch.tensor(lrs, dtype=dtype).to(dev)
    adam_a, adam_b = AdamState(A), AdamState(B)
    div = Divergence(k, blowup, dev, start=1.0)  # the loss is relative to L0: 1 at step 0
    loss = torch.full((k, steps + 1), float("nan"), dtype=wide, device=dev)
    gnorm = torch.full((k, steps + 1), float("nan"), dtype=wide, device=dev)
    T2 = T.to(wide).square().sum()
    work = 6.0 * k * T.numel() * A.shape[1]  # multiply-adds per step
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


def first_step_theory(teacher: torch.Tensor, ranks: Sequence[int], scaling: Sequence[float], lr: float,
                      optimizer: Optimizer = "sgd", sigma_a: float | None = None) -> torch.Tensor:
    """Expected first-order relative loss drop of the first step, per configuration (see the module doc).

    ``sigma_a`` is the standard deviation of ``A``'s entries (default Init[A]'s ``1/sqrt(3 n_in)``).
    """
    choice(optimizer, "optimizer", OPTIMIZERS)
    lr = positive_float(lr, "lr")
    T = teacher.detach().cpu().double()
    sig = init_std(T.shape[1]) if sigma_a is None else positive_float(sigma_a, "sigma_a")
    r = torch.tensor([float(positive_int(v, "ranks[i]")) for v in ranks], dtype=torch.float64)
    s = torch.tensor([positive_float(v, "scaling[i]") for v in scaling], dtype=torch.float64)
    if optimizer == "sgd":
        return 2 * lr * s**2 * r * sig**2
    L0 = 0.5 * T.square().sum()
    adam: torch.Tensor = lr * s * r * sig * math.sqrt(2 / math.pi) * T.norm(dim=1).sum() / L0
    return adam


def grad_norm_theory(teacher: torch.Tensor, ranks: Sequence[int], scaling: Sequence[float],
                     sigma_a: float | None = None) -> torch.Tensor:
    """``||grad_B||`` at step 0, ``s sqrt(r) sigma_A ||T||_F`` (root mean square over ``A``), per configuration."""
    T = teacher.detach().cpu().double()
    sig = init_std(T.shape[1]) if sigma_a is None else positive_float(sigma_a, "sigma_a")
    r = torch.tensor([float(positive_int(v, "ranks[i]")) for v in ranks], dtype=torch.float64)
    s = torch.tensor([positive_float(v, "scaling[i]") for v in scaling], dtype=torch.float64)
    out: torch.Tensor = s * r.sqrt() * sig * T.norm()
    return out


def ratio_spread(teacher: torch.Tensor, rank: int = 1, draws: int = 1) -> float:
    """Predicted standard deviation of (measured / expected) first GD step drop, mean of ``draws`` draws.

    ``||T a||^2`` for one row ``a`` of ``A`` with i.i.d. entries has relative variance at most
    ``2 sum_i sigma_i^4 / (sum_i sigma_i^2)^2`` (Gaussian entries; uniform ones give less); ``A``
    has ``rank`` independent rows and the mean is over ``draws`` independent ``A``.
    """
    s2 = torch.linalg.svdvals(teacher.detach().cpu().double()).square()
    rel_var = 2 * float(s2.square().sum() / s2.sum() ** 2)
    return math.sqrt(rel_var / (positive_int(rank, "rank") * positive_int(draws, "draws")))


def equivalent_config(s_from: float, s_to: float, lr: float, optimizer: Optimizer = "sgd"
                      ) -> tuple[float, float]:
    """``(lr', c)``: a run with scale ``s_to``, rate ``lr'`` and initial ``A = c A0`` follows exactly
    the run with scale ``s_from``, rate ``lr`` and ``A = A0`` (the reparametrisation; ``c = sqrt(s_from/s_to)``).

    Gradient descent: ``lr' = lr s_from / s_to``; Adam: ``lr' = lr sqrt(s_from / s_to)``.
    """
    s_from, s_to = positive_float(s_from, "s_from"), positive_float(s_to, "s_to")
    lr = positive_float(lr, "lr")
    choice(optimizer, "optimizer", OPTIMIZERS)
    ratio = s_from / s_to
    return (lr * ratio if optimizer == "sgd" else lr * math.sqrt(ratio)), math.sqrt(ratio)


def time_to_reach(loss: torch.Tensor, level: torch.Tensor | float) -> torch.Tensor:
    """First step at which each curve (K, steps + 1) is ``<= level`` (linear interpolation); NaN if never."""
    L = torch.as_tensor(loss, dtype=torch.float64)
    if L.ndim != 2:
        raise ValueError(f"loss must be a 2-D tensor (K, steps + 1), got shape {tuple(L.shape)}")
    lev = torch.as_tensor(level, dtype=torch.float64).expand(L.shape[0])
    out = torch.full((L.shape[0],), float("nan"), dtype=torch.float64)
    for k in range(L.shape[0]):
        hit = torch.nonzero(L[k] <= lev[k])
        if hit.numel():
            t = int(hit[0])
            if t == 0:
                out[k] = 0.0
            else:
                a, b = float(L[k, t - 1]), float(L[k, t])
                out[k] = t - 1 + (a - float(lev[k])) / (a - b)
    return out
