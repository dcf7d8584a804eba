"""Batched gradient-descent runs for matrix sensing (Chapter 4).

:func:`run_sweep` runs many configurations (rank ``r``, init scale ``omega``, init seed, the
LoRA scale ``s``, the init scheme) as one tensor program: a leading configuration axis, factors
padded to the largest rank with zero columns (``X``, ``B``) and zero rows (``A``) that stay
exactly zero under both updates (their gradients vanish). Errors ``||M_t - M*||_F^2`` are
recorded on a log grid of steps; a configuration that blows up is marked ``diverged``, reset
to zero and reported as NaN, never a crash.

**One-step rebalancing** (:func:`lrkit.sensing.rebalance`, our construction): once a
configuration's *training loss* (the observable ``(1/2m)||Z(M) - y||^2``, not the distance to
``M*``) has fallen below ``rebalance_below`` times its value at ``M = 0``, its factors are
rebalanced once, keeping ``B A`` unchanged.

Devices: the factors are drawn on the CPU in float64 and computed in
:func:`lrkit.env.float_dtype` (float32 on MPS); nothing reads the device inside the loop except
one look per :data:`CHECK_EVERY` steps while a rebalance is pending (see :func:`_descend`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import torch

from .._validate import blowup_factor, broadcast, choice, positive_float, positive_int
from ..env import cpu_on_mps, few_threads, float_dtype, to_device_dtype
from ..runs import Divergence
from .factors import (
    A_RATIO,
    LORA_INITS,
    asymmetric_step,
    check_rank,
    imbalance,
    init_asymmetric,
    init_lora_factors,
    init_symmetric,
    rebalance,
    symmetric_step,
)
from .problem import DTYPE, SensingProblem

Parameterisation = str
PARAMETERISATIONS: tuple[str, ...] = ("symmetric", "asymmetric")
INITS: tuple[str, ...] = ("gaussian",) + LORA_INITS

__all__ = ["PARAMETERISATIONS", "INITS", "log_grid", "SensingRun", "run_sweep"]


def log_grid(steps: int, num: int) -> torch.Tensor:
    """About ``num`` distinct steps in ``[0, steps]``: ``0``, then log-spaced, always ending at ``steps``."""
    positive_int(steps, "steps")
    positive_int(num, "num")
    grid = np.unique(np.round(np.logspace(0, math.log10(steps), max(num - 1, 1))).astype(np.int64))
    return torch.as_tensor(np.concatenate([[0], grid[grid <= steps]]), dtype=torch.long)


@dataclass
class SensingRun:
    """A batched run: ``error[c, j] = ||M_t - M*||_F^2`` of configuration ``c`` at step ``steps[j]``.

    Configurations: ``ranks[c]``, ``omegas[c]``, ``seeds[c]``, ``scales[c]``, ``inits[c]``.
    ``diverged[c]``: the run blew up (its errors are NaN from then on; the rule of :mod:`lrkit.runs`,
    checked at the recorded steps), ``diverged_at[c]`` the step (-1 if never). ``rebalanced_at[c]``: the
    step of the one-step modification, ``-1`` if none. Asymmetric runs also keep, per
    configuration, the imbalance ``B^T B - A A^T`` at step 0 (``delta0``, ``(r, r)``), its
    eigenvalues (``imbalance_eigs``, ascending) and the final factors ``(B_T, A_T)``
    (``factors``). Tensors are on the CPU.
    """

    parameterisation: str
    lr: float
    ranks: list[int]
    omegas: list[float]
    seeds: list[int]
    steps: torch.Tensor
    error: torch.Tensor
    diverged: torch.Tensor
    rebalanced_at: torch.Tensor
    imbalance_eigs: list[torch.Tensor] | None = None
    scales: list[float] | None = None
    inits: list[str] | None = None
    delta0: list[torch.Tensor] | None = None
    factors: list[tuple[torch.Tensor, torch.Tensor]] | None = None
    diverged_at: torch.Tensor = field(default_factory=lambda: torch.zeros(0, dtype=torch.long))

    @property
    def final(self) -> torch.Tensor:
        return self.error[:, -1]


def run_sweep(problem: SensingProblem, parameterisation: str, ranks: Sequence[int] | int,
              omegas: Sequence[float] | float = 1.0, seeds: Sequence[int] | int = 0, lr: float = 0.1,
              steps: int = 1000, num_records: int = 200, a_ratio: float = A_RATIO,
              rebalance_once: Sequence[bool] | bool = False, rebalance_below: float = 1e-3,
              rebalance_floor: float | None = None, blowup: float = 1e8,
              scales: Sequence[float] | float = 1.0, inits: Sequence[str] | str = "gaussian") -> SensingRun:
    """Gradient descent for every configuration at once; errors on a log grid of steps.

    The configurations are the broadcast lists ``ranks``, ``omegas``, ``seeds``, ``scales``,
    ``inits`` (one value is repeated). ``parameterisation``: ``"symmetric"`` (``X X^T``, needs a
    symmetric problem) or ``"asymmetric"`` (``s B A``). Asymmetric only: ``inits`` is
    ``"gaussian"`` (the paper's, at scale ``omega``) or LoRA's ``"A"`` / ``"B"``
    (:func:`lrkit.sensing.init_lora_factors`; ``omega`` is then unused); ``scales`` is ``s``.
    Each configuration with ``rebalance_once`` true is rebalanced once, at the first step where
    its training loss is below ``rebalance_below`` times the loss of ``M = 0`` (observable: no
    ``M*``), with ``floor = rebalance_floor`` (default ``sqrt(sigma_{r*}(B A))`` at that step:
    it uses the rank ``r*`` but not ``M*``). A configuration whose error is non-finite or above
    ``blowup * ||M*||^2`` is marked diverged and frozen at zero.
    """
    if not isinstance(problem, SensingProblem):
        raise TypeError(f"problem must be a SensingProblem (from lrkit.sensing.make_problem), "
                        f"got {type(problem).__name__}")
    choice(parameterisation, "parameterisation", PARAMETERISATIONS)
    lr = positive_float(lr, "lr")
    positive_int(steps, "steps")
    positive_int(num_records, "num_records")
    blowup = blowup_factor(blowup)
    if parameterisation == "symmetric" and not problem.symmetric:
        raise ValueError("parameterisation='symmetric' (X X^T) needs a symmetric PSD problem "
                         "(make_problem(..., symmetric=True))")
    positive_float(rebalance_below, "rebalance_below")
    if rebalance_floor is not None:
        positive_float(rebalance_floor, "rebalance_floor")
    lists = (ranks, omegas, seeds, rebalance_once, scales, inits)
    n_cfg = max(len(v) if isinstance(v, (list, tuple)) else 1 for v in lists)
    R = [check_rank(r, problem) for r in broadcast(ranks, n_cfg, "ranks")]
    W = [positive_float(w, "omegas") for w in broadcast(omegas, n_cfg, "omegas")]
    S = broadcast(seeds, n_cfg, "seeds")
    scl = [positive_float(s, "scales") for s in broadcast(scales, n_cfg, "scales")]
    ini = [choice(i, "inits", INITS) for i in broadcast(inits, n_cfg, "inits")]
    flags = [bool(f) for f in broadcast(rebalance_once, n_cfg, "rebalance_once")]
    if parameterisation != "asymmetric" and (any(flags) or any(s != 1.0 for s in scl)
                                             or any(i != "gaussian" for i in ini)):
        raise ValueError("rebalance_once, scales and LoRA inits apply to parameterisation='asymmetric' only")
    r_max, dev = max(R), problem.M_star.device
    wide = float_dtype(dev)                      # float64, or float32 on MPS
    active = (torch.arange(r_max)[None, :] < torch.tensor(R)[:, None]).to(dev)  # (C, r_max)
    B = torch.zeros(n_cfg, problem.n1, r_max, dtype=DTYPE)  # drawn on the CPU in float64
    A = torch.zeros(n_cfg, r_max, problem.n2, dtype=DTYPE)
    for c, (r, w, s, i) in enumerate(zip(R, W, S, ini)):
        if parameterisation == "symmetric":
            B[c, :, :r] = init_symmetric(problem.n1, r, w, s)
        elif i == "gaussian":
            B[c, :, :r], A[c, :r, :] = init_asymmetric(problem.n1, problem.n2, r, w, s, a_ratio)
        else:
            B[c, :, :r], A[c, :r, :] = init_lora_factors(problem.n1, problem.n2, r, i, s)
    delta0 = None if parameterisation == "symmetric" else \
        [imbalance(B[c, :, :r], A[c, :r, :]) for c, r in enumerate(R)]
    B, A = to_device_dtype(B, dev, wide), to_device_dtype(A, dev, wide)
    scale_t = torch.tensor(scl, dtype=wide, device=dev)[:, None, None]

    grid = log_grid(steps, num_records)
    record = {t: j for j, t in enumerate(grid.tolist())}  # a CPU tensor: no device read
    errors = torch.full((n_cfg, len(grid)), float("nan"), dtype=wide, device=dev)
    pending = torch.tensor(flags, dtype=torch.bool, device=dev)
    rebalanced_at = torch.full((n_cfg,), -1, dtype=torch.long, device=dev)
    div = Divergence(n_cfg, blowup, dev, start=problem.M_star.square().sum().to(device=dev, dtype=wide))
    with few_threads(dev, n_cfg * (problem.n1 * problem.n2) ** 2):
        B, A, rebalanced_at = _descend(problem, parameterisation, B, A, scale_t, lr, steps, record, errors,
                                       div, pending, rebalanced_at, active, rebalance_below,
                                       rebalance_floor, any(flags))
    diverged = ~div.alive
    factors = None if parameterisation == "symmetric" else \
        [(B[c, :, :r].cpu(), A[c, :r, :].cpu()) for c, r in enumerate(R)]
    eigs = None if delta0 is None else [torch.linalg.eigvalsh(d) for d in delta0]
    return SensingRun(parameterisation, lr, R, W, [int(s) for s in S], grid, errors.cpu(), diverged.cpu(),
                      rebalanced_at.cpu(), eigs, scl, ini, delta0, factors, div.diverged_at.cpu())


CHECK_EVERY = 100  # steps between two looks at the host while a rebalance is pending


def _descend(problem: SensingProblem, parameterisation: str, B: torch.Tensor, A: torch.Tensor,
             scale: torch.Tensor, lr: float, steps: int, record: dict[int, int], errors: torch.Tensor,
             div: Divergence, pending: torch.Tensor, rebalanced_at: torch.Tensor, active: torch.Tensor,
             rebalance_below: float, rebalance_floor: float | None, rebalancing: bool
             ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The loop of :func:`run_sweep`; fills ``errors`` in place and updates ``div`` (start: ``||M*||^2``).

    No host synchronisation per step. While a rebalance is pending, the steps run in windows of
    :data:`CHECK_EVERY`: each window watches the trigger on the device, and the host looks at its
    end (two reads); without one pending, the host never looks. A window in which some configuration
    fired is run again from its start, applying each rebalance at the step it fired (configurations
    are independent: the others repeat bit for bit), so every configuration is rebalanced exactly
    at its first step below the threshold, as if the host had looked at every step.
    """
    t = 0
    while t <= steps:
        end = min(t + CHECK_EVERY, steps + 1) if rebalancing else steps + 1
        if not rebalancing:
            B, A, _ = _window(problem, parameterisation, B, A, scale, lr, t, end, steps, record, errors, div)
            break
        B0, A0, alive0, at0 = B, A, div.alive, div.diverged_at
        B, A, fired = _window(problem, parameterisation, B, A, scale, lr, t, end, steps, record, errors, div,
                              watch=pending, threshold=rebalance_below * 0.5 * problem.yy)
        left = pending & div.alive & (fired < 0)
        rebalancing = bool(left.any())                   # the host looks at the end of the window
        if bool((fired >= 0).any()):
            div.alive, div.diverged_at = alive0, at0
            fire_at = {s: fired == s for s in set(fired.tolist()) - {-1}}
            B, A, _ = _window(problem, parameterisation, B0, A0, scale, lr, t, end, steps, record, errors, div,
                              apply=fire_at, floor=rebalance_floor, active=active)
            rebalanced_at = torch.where(fired >= 0, fired, rebalanced_at)
        pending = left
        t = end
    return B, A, rebalanced_at


def _window(problem: SensingProblem, parameterisation: str, B: torch.Tensor, A: torch.Tensor,
            scale: torch.Tensor, lr: float, t0: int, t1: int, steps: int, record: dict[int, int],
            errors: torch.Tensor, div: Divergence, watch: torch.Tensor | None = None, threshold: float = 0.0,
            apply: dict[int, torch.Tensor] | None = None, floor: float | None = None,
            active: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Steps ``t0 .. t1 - 1`` of :func:`_descend`. ``watch``: the configurations whose trigger (training
    loss ``<= threshold``) is watched; returns the step each first fired (``-1``: not in this window).
    ``apply``: ``{step: mask}``, rebalance the masked configurations at that step."""
    n_cfg, dev = B.shape[0], B.device
    fired = torch.full((n_cfg,), -1, dtype=torch.long, device=dev)
    for t in range(t0, t1):
        M = B @ B.transpose(-2, -1) if parameterisation == "symmetric" else scale * (B @ A)
        if t in record:
            err = problem.error(M)
            div.update(err, t)                          # no host synchronisation
            B, A = div.freeze(B, A)
            errors[:, record[t]] = div.mask(err)
        if watch is not None:
            loss = problem.training_loss(M)  # observable: the measurements only
            now = watch & div.alive & (fired < 0) & (loss <= threshold)
            fired = torch.where(now, torch.full_like(fired, t), fired)
        if apply is not None and t in apply:
            now = apply[t]
            if floor is None:  # sqrt(sigma_{r*}(B A)); a configuration gone non-finite is left out
                BA = B @ A
                BA = torch.where(torch.isfinite(BA).all(-1).all(-1)[:, None, None], BA, torch.zeros_like(BA))
                floor_t = cpu_on_mps(torch.linalg.svdvals, BA)[:, problem.r_star - 1].sqrt()
            else:
                floor_t = torch.full((n_cfg,), floor, dtype=B.dtype, device=dev)
            ok = torch.isfinite(B).all(-1).all(-1)[:, None, None]
            B2, A2 = rebalance(torch.where(ok, B, torch.zeros_like(B)), A, floor_t, active)
            B = torch.where(now[:, None, None], B2, B)
            A = torch.where(now[:, None, None], A2, A)
        if t == steps:
            break
        if parameterisation == "symmetric":
            B = symmetric_step(problem, B, lr)
        else:
            B, A = asymmetric_step(problem, B, A, lr, scale)
    return B, A, fired
