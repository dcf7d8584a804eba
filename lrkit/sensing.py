"""Matrix sensing and factorised gradient descent (Chapter 4, after Xiong, Ding and Du, ICLR 2024).

**The problem.** An unknown matrix ``M*`` (``n1 x n2``, rank ``r*``) is seen only through ``m``
linear measurements ``y_i = <Z_i, M*> = sum_jk (Z_i)_jk (M*)_jk`` with Gaussian sensing matrices
``Z_i`` (the paper calls them ``A_i``; here ``A`` is a factor, see the notation page). The
measurement operator and its adjoint are

    Z(M)   = (<Z_1, M>, ..., <Z_m, M>)        (n1, n2) -> (m,)         :func:`measure`
    Z*(z)  = sum_i z_i Z_i                     (m,)     -> (n1, n2)     :func:`adjoint`

and the loss of a candidate ``M`` is ``L(M) = (1/2m) ||Z(M) - y||^2``, whose gradient is
``grad L(M) = (1/m) Z*(Z(M) - y)``. With i.i.d. ``N(0, 1)`` entries ``E[(1/m) Z* Z] = I``: the
loss is ``1/2 ||M - M*||_F^2`` up to the fluctuations that the restricted isometry property
(RIP) bounds on low-rank matrices.

**Factorised gradient descent.** ``M`` is never a free matrix; it is a product:

* symmetric, ``M = X X^T`` with ``X: (n, r)``; ``grad_X = (G + G^T) X`` with ``G = grad L(X X^T)``
  (``G`` is not symmetric when the ``Z_i`` are not);
* asymmetric, ``M = B A`` with ``B: (n1, r)``, ``A: (r, n2)`` (the paper's ``F G^T``: ``B = F``,
  ``A = G^T``); ``grad_B = G A^T``, ``grad_A = B^T G``.

``r = r*`` is *exact* parameterisation, ``r > r*`` *over*-parameterisation. Initial factors are
Gaussian: ``X ~ omega N(0, 1)``; ``B ~ omega N(0, 1)``, ``A ~ (omega / 3) N(0, 1)`` (the paper
initialises ``F`` at scale ``alpha`` and ``G`` at ``alpha / 3``; ``omega`` is its ``alpha``).

**Batched runs.** :func:`run_sweep` runs many configurations (rank ``r``, init scale ``omega``,
init seed) as one tensor program: a leading configuration axis, factors padded to the largest
rank with zero columns (``X``, ``B``) and zero rows (``A``) that stay exactly zero under both
updates (their gradients vanish). Errors ``||M_t - M*||_F^2`` are recorded on a log grid of
steps; a configuration that blows up is marked ``diverged``, reset to zero and reported as NaN,
never a crash. The loss enters only through ``(1/m) Z* Z``, so the batched code uses its
``(n1 n2) x (n1 n2)`` Gram matrix (:attr:`SensingProblem.gram`), exactly equal to
``adjoint(measure(.))/m`` and cheaper when ``m > n1 n2 / 2``.

**One-step rebalancing** (:func:`rebalance`, our construction, see its docstring): a single
modification of the factors that keeps ``B A`` unchanged and removes the ``omega`` dependence
of the asymmetric rate.

Sizes follow :func:`lrkit.get_scale` through :func:`sizes`; tensors live on
:func:`lrkit.get_device` in float64 (errors are followed down to ``1e-25``); randomness comes
from explicit CPU generators, so results do not depend on the device or on the batching.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field
from typing import Literal, Sequence

import numpy as np
import torch

from .fit import fit_power_law
from .env import few_threads, generator, get_device, resolve_scale
from ._validate import broadcast, choice, positive_float, positive_int

Parameterisation = Literal["symmetric", "asymmetric"]
PARAMETERISATIONS: tuple[str, ...] = ("symmetric", "asymmetric")
DTYPE = torch.float64
A_RATIO = 1.0 / 3.0  # scale of A relative to B at initialisation (the paper: G at alpha / 3)

__all__ = [
    "sizes", "UnderdeterminedWarning", "degrees_of_freedom", "SensingProblem", "make_problem", "measure",
    "adjoint", "init_symmetric", "init_asymmetric", "symmetric_step", "asymmetric_step", "imbalance",
    "rebalance", "SensingRun", "run_sweep", "redundant_error_theory", "linearised_rate", "loglog_slope",
    "linear_rate", "log_grid",
]


# --------------------------------------------------------------------------- sizes and checks
def sizes(scale: str | None = None) -> dict[str, object]:
    """Experiment sizes for ``scale`` (default :func:`lrkit.get_scale`).

    ``small``: ``n = 20``, ``r* = 2`` (singular values 1 and 0.5), ``m = 3 n^2`` Gaussian
    measurements, 10 000 steps: seconds per sweep on two CPU cores. ``full``: the paper's
    ``50 x 50``, rank 3 (our singular values 1, 0.75, 0.5 and ``m = 3 n^2``: the paper's ``m``
    and spectrum were not checked), 20 000 steps, for a GPU.
    """
    scale = resolve_scale(scale)
    if scale == "small":
        return dict(n=20, r_star=2, singular_values=(1.0, 0.5), m=1200, lr=0.1, steps=10_000, num_records=300,
                    sym_ranks=(2, 3, 4, 6), sym_omega=0.1, over_rank=4, omegas=(0.03, 0.05, 0.1))
    return dict(n=50, r_star=3, singular_values=(1.0, 0.75, 0.5), m=7500, lr=0.1, steps=20_000,
                num_records=400, sym_ranks=(3, 4, 6, 9), sym_omega=0.1, over_rank=6,
                omegas=(0.015, 0.025, 0.05))


class UnderdeterminedWarning(UserWarning):
    """Fewer measurements than the degrees of freedom of a rank-``r*`` matrix: not identifiable."""


def degrees_of_freedom(n1: int, n2: int, r_star: int, symmetric: bool) -> int:
    """Dimension of the set of rank-``r*`` matrices: ``r*(n1 + n2 - r*)``, or ``r* n - r*(r* - 1)/2``
    for symmetric ``n x n`` ones. Fewer measurements than this cannot determine ``M*``."""
    if symmetric:
        return r_star * n1 - r_star * (r_star - 1) // 2
    return r_star * (n1 + n2 - r_star)


# --------------------------------------------------------------------------- the problem
def measure(Z: torch.Tensor, M: torch.Tensor) -> torch.Tensor:
    """``Z(M)_i = <Z_i, M>``: ``Z (m, n1, n2)``, ``M (..., n1, n2)`` -> ``(..., m)``. No loop over ``i``."""
    if Z.ndim != 3 or M.ndim < 2 or tuple(M.shape[-2:]) != tuple(Z.shape[1:]):
        raise ValueError(f"Z must be (m, n1, n2) and M (..., n1, n2) with the same (n1, n2), "
                         f"got Z {tuple(Z.shape)} and M {tuple(M.shape)}")
    return M.flatten(-2) @ Z.flatten(1).T


def adjoint(Z: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
    """``Z*(z) = sum_i z_i Z_i``: ``Z (m, n1, n2)``, ``z (..., m)`` -> ``(..., n1, n2)``.

    The adjoint of :func:`measure`: ``<Z(M), z> = <M, Z*(z)>`` for every ``M`` and ``z``.
    """
    if Z.ndim != 3 or z.ndim < 1 or z.shape[-1] != Z.shape[0]:
        raise ValueError(f"z must be (..., m) and Z (m, n1, n2) with the same m, "
                         f"got z {tuple(z.shape)} and Z {tuple(Z.shape)}")
    return (z @ Z.flatten(1)).unflatten(-1, tuple(Z.shape[1:]))


@dataclass
class SensingProblem:
    """Ground truth ``M_star (n1, n2)`` of rank ``r_star``, sensing matrices ``Z (m, n1, n2)``,
    measurements ``y = Z(M_star) (m,)``. ``symmetric``: ``M_star`` is symmetric PSD.

    ``gram = Zf^T Zf / m`` and ``zy = Zf^T y / m`` (``Zf = Z`` flattened to ``(m, n1 n2)``) are
    computed once, so that :meth:`gradient` costs one ``(n1 n2) x (n1 n2)`` product.
    """

    M_star: torch.Tensor
    Z: torch.Tensor
    y: torch.Tensor
    r_star: int
    symmetric: bool
    gram: torch.Tensor = field(init=False, repr=False)
    zy: torch.Tensor = field(init=False, repr=False)

    def __post_init__(self) -> None:
        measure(self.Z, self.M_star)  # validates the shapes
        if tuple(self.y.shape) != (self.Z.shape[0],):
            raise ValueError(f"y must have shape (m,) = ({self.Z.shape[0]},), got {tuple(self.y.shape)}")
        Zf = self.Z.flatten(1)
        self.gram = Zf.T @ Zf / self.m
        self.zy = Zf.T @ self.y / self.m

    @property
    def m(self) -> int:
        return int(self.Z.shape[0])

    @property
    def n1(self) -> int:
        return int(self.M_star.shape[0])

    @property
    def n2(self) -> int:
        return int(self.M_star.shape[1])

    def loss(self, M: torch.Tensor) -> torch.Tensor:
        """``(1/2m) ||Z(M) - y||^2`` for ``M (..., n1, n2)`` -> ``(...)``."""
        return 0.5 * (measure(self.Z, M) - self.y).square().mean(-1)

    def gradient(self, M: torch.Tensor) -> torch.Tensor:
        """``grad L(M) = (1/m) Z*(Z(M) - y)``, shape of ``M``; via the Gram matrix (same numbers)."""
        return (M.flatten(-2) @ self.gram - self.zy).unflatten(-1, (self.n1, self.n2))

    def error(self, M: torch.Tensor) -> torch.Tensor:
        """``||M - M*||_F^2`` for ``M (..., n1, n2)`` -> ``(...)``."""
        return (M - self.M_star).square().sum((-2, -1))


def make_problem(n: int, r_star: int, m: int, *, n2: int | None = None,
                 singular_values: Sequence[float] | None = None, symmetric: bool = True,
                 symmetric_sensing: bool = False, seed: int = 0,
                 device: torch.device | str | None = None) -> SensingProblem:
    """A sensing problem: ``M* = U diag(s) U^T`` (symmetric PSD, ``n x n``) or ``U diag(s) V^T``
    (``n x n2``), random orthonormal ``U, V``; ``m`` sensing matrices with i.i.d. ``N(0, 1)``
    entries.

    ``singular_values`` (length ``r_star``, positive) default to ``linspace(1, 0.5, r_star)``.
    ``symmetric_sensing=True`` symmetrises each ``Z_i`` (``(Z + Z^T)/sqrt 2``): then the
    antisymmetric part of an asymmetric ``B A`` is invisible to the measurements, a trap.
    Warns (:class:`UnderdeterminedWarning`) when ``m`` is below the degrees of freedom.
    """
    positive_int(n, "n")
    n2 = n if n2 is None else positive_int(n2, "n2")
    if symmetric and n2 != n:
        raise ValueError(f"a symmetric problem is square: n2 must be None or equal to n = {n}, got {n2}")
    positive_int(r_star, "r_star")
    if r_star > min(n, n2):
        raise ValueError(f"r_star must satisfy 1 <= r_star <= min(n, n2) = {min(n, n2)}, got {r_star}")
    positive_int(m, "m")
    s = torch.linspace(1.0, 0.5, r_star, dtype=DTYPE) if singular_values is None else \
        torch.as_tensor(list(singular_values), dtype=DTYPE)
    if s.shape != (r_star,) or not bool(torch.isfinite(s).all()) or bool((s <= 0).any()):
        raise ValueError(f"singular_values must be r_star = {r_star} positive finite numbers, "
                         f"got {list(singular_values or [])}")
    dof = degrees_of_freedom(n, n2, r_star, symmetric)
    if m < dof:
        warnings.warn(f"m = {m} measurements are fewer than the {dof} degrees of freedom of a rank-{r_star} "
                      f"{'symmetric ' if symmetric else ''}{n}x{n2} matrix: M* is not identifiable (and RIP "
                      f"needs several times more)", UnderdeterminedWarning, stacklevel=2)
    g = generator(seed)
    U, _ = torch.linalg.qr(torch.randn(n, r_star, generator=g, dtype=DTYPE))
    V = U if symmetric else torch.linalg.qr(torch.randn(n2, r_star, generator=g, dtype=DTYPE))[0]
    M_star = (U * s) @ V.T
    Z = torch.randn(m, n, n2, generator=g, dtype=DTYPE)
    if symmetric_sensing:
        if n2 != n:
            raise ValueError("symmetric_sensing needs square sensing matrices (n2 = n)")
        Z = (Z + Z.transpose(1, 2)) / math.sqrt(2.0)
    dev = torch.device(device) if device is not None else get_device()
    M_star, Z = M_star.to(dev), Z.to(dev)
    return SensingProblem(M_star, Z, measure(Z, M_star), r_star, symmetric)


# --------------------------------------------------------------------------- factors and one GD step
def _check_rank(r: int, problem: SensingProblem) -> int:
    positive_int(r, "r")
    if r < problem.r_star:
        raise ValueError(f"r must be >= r_star = {problem.r_star} (a rank-{r} product cannot reach M*), got {r}")
    if r > min(problem.n1, problem.n2):
        raise ValueError(f"r must be <= min(n1, n2) = {min(problem.n1, problem.n2)}, got {r}")
    return r


def init_symmetric(n: int, r: int, omega: float, seed: int = 0) -> torch.Tensor:
    """``X (n, r)`` with i.i.d. ``omega N(0, 1)`` entries, from a CPU generator seeded ``seed``."""
    positive_int(n, "n")
    positive_int(r, "r")
    return positive_float(omega, "omega") * torch.randn(n, r, generator=generator(seed), dtype=DTYPE)


def init_asymmetric(n1: int, n2: int, r: int, omega: float, seed: int = 0,
                    a_ratio: float = A_RATIO) -> tuple[torch.Tensor, torch.Tensor]:
    """``B (n1, r) ~ omega N(0, 1)`` and ``A (r, n2) ~ a_ratio omega N(0, 1)`` (paper: ratio 1/3)."""
    for v, name in ((n1, "n1"), (n2, "n2"), (r, "r")):
        positive_int(v, name)
    omega, a_ratio = positive_float(omega, "omega"), positive_float(a_ratio, "a_ratio")
    g = generator(seed)
    B = omega * torch.randn(n1, r, generator=g, dtype=DTYPE)
    return B, a_ratio * omega * torch.randn(r, n2, generator=g, dtype=DTYPE)


def symmetric_step(problem: SensingProblem, X: torch.Tensor, lr: float) -> torch.Tensor:
    """One GD step on ``L(X X^T)``: ``X - lr (G + G^T) X``, ``G = grad L(X X^T)``; ``X (..., n, r)``."""
    G = problem.gradient(X @ X.transpose(-2, -1))
    return X - lr * (G + G.transpose(-2, -1)) @ X


def asymmetric_step(problem: SensingProblem, B: torch.Tensor, A: torch.Tensor, lr: float
                    ) -> tuple[torch.Tensor, torch.Tensor]:
    """One (simultaneous) GD step on ``L(B A)``: ``B - lr G A^T``, ``A - lr B^T G``, ``G = grad L(B A)``.

    ``B (..., n1, r)``, ``A (..., r, n2)``.
    """
    G = problem.gradient(B @ A)
    return B - lr * G @ A.transpose(-2, -1), A - lr * B.transpose(-2, -1) @ G


def imbalance(B: torch.Tensor, A: torch.Tensor) -> torch.Tensor:
    """``B^T B - A A^T`` (``(..., r, r)``): constant under gradient flow, nearly so under small-step GD.

    Its eigenvalues set the linear rate of the over-parameterised asymmetric run (Chapter 4).
    """
    return B.transpose(-2, -1) @ B - A @ A.transpose(-2, -1)


def rebalance(B: torch.Tensor, A: torch.Tensor, floor: torch.Tensor | float,
              active: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Lift ``B``'s small singular values to ``floor`` and compensate in ``A``: ``B' A' = B A``.

    With ``B = U S V^T`` (thin SVD), ``S' = max(S, floor)``::

        B' = U S' V^T,    A' = V (S / S') V^T A,    so  B' A' = U S V^T A = B A.

    The redundant directions of an over-parameterised run have ``B``-singular values of order
    ``omega`` and ``A``-components decaying to zero; after the lift their imbalance is
    ``floor^2`` instead of ``omega^2``, and so is their linear rate. **Our construction**: it is
    one modification of one step, in the spirit of Xiong, Ding and Du's Section 5, whose exact
    form we could not check. ``floor``: a number or a ``(...)`` tensor (one per configuration);
    ``active (..., r)`` (bool) marks the singular values that may be lifted (padding excluded).
    """
    U, S, Vh = torch.linalg.svd(B, full_matrices=False)
    floor_t = torch.as_tensor(floor, dtype=S.dtype, device=S.device)
    floor_t = floor_t.reshape(floor_t.shape + (1,) * (S.ndim - floor_t.ndim))
    lifted = torch.maximum(S, floor_t)
    if active is not None:
        lifted = torch.where(active, lifted, S)
    ratio = torch.where(lifted > 0, S / torch.where(lifted > 0, lifted, torch.ones_like(lifted)),
                        torch.ones_like(S))
    V = Vh.transpose(-2, -1)
    B_new = (U * lifted.unsqueeze(-2)) @ Vh
    A_new = (V * ratio.unsqueeze(-2)) @ (Vh @ A)
    return B_new, A_new


# --------------------------------------------------------------------------- batched runs
def log_grid(steps: int, num: int) -> torch.Tensor:
    """About ``num`` distinct steps in ``[0, steps]``: ``0``, then log-spaced, always ending at ``steps``."""
    positive_int(steps, "steps")
    positive_int(num, "num")
    grid = np.unique(np.round(np.logspace(0, math.log10(steps), max(num - 1, 1))).astype(np.int64))
    return torch.as_tensor(np.concatenate([[0], grid[grid <= steps]]), dtype=torch.long)


@dataclass
class SensingRun:
    """A batched run: ``error[c, j] = ||M_t - M*||_F^2`` of configuration ``c`` at step ``steps[j]``.

    Configurations: ``ranks[c]``, ``omegas[c]``, ``seeds[c]``. ``diverged[c]``: the run blew up
    (its errors are NaN from then on). ``rebalanced_at[c]``: the step of the one-step
    modification, ``-1`` if none. ``imbalance_eigs[c]`` (asymmetric runs): the ``r`` eigenvalues
    of the imbalance ``B^T B - A A^T`` at step 0, ascending. Tensors are on the CPU.
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
    imbalance_eigs: list[torch.Tensor] | None = None  # per configuration: eigenvalues of B^T B - A A^T at step 0

    @property
    def final(self) -> torch.Tensor:
        return self.error[:, -1]


def run_sweep(problem: SensingProblem, parameterisation: str, ranks: Sequence[int] | int,
              omegas: Sequence[float] | float, seeds: Sequence[int] | int = 0, lr: float = 0.1,
              steps: int = 1000, num_records: int = 200, a_ratio: float = A_RATIO,
              rebalance_once: Sequence[bool] | bool = False, rebalance_below: float = 1e-3,
              rebalance_floor: float | None = None, blowup: float = 1e8) -> SensingRun:
    """Gradient descent for every configuration at once; errors on a log grid of steps.

    The configurations are the broadcast lists ``ranks``, ``omegas``, ``seeds`` (one value is
    repeated). ``parameterisation``: ``"symmetric"`` (``X X^T``, needs a symmetric problem) or
    ``"asymmetric"`` (``B A``). Asymmetric only: each configuration with ``rebalance_once`` true
    (one flag, or one per configuration) is rebalanced once (:func:`rebalance`), at the first
    step where its relative error ``||M_t - M*||^2 / ||M*||^2`` is below ``rebalance_below``,
    with ``floor = rebalance_floor`` (default ``sqrt(sigma_{r*}(B A))`` of that configuration at
    that step: the ``r*``-th singular value of the current product, close to ``sigma_{r*}(M*)``
    by then; it uses the rank ``r*`` but not ``M*``). A configuration whose error is non-finite or
    above ``blowup * ||M*||^2`` is marked diverged and frozen at zero.
    """
    choice(parameterisation, "parameterisation", PARAMETERISATIONS)
    lr = positive_float(lr, "lr")
    positive_int(steps, "steps")
    if parameterisation == "symmetric" and not problem.symmetric:
        raise ValueError("parameterisation='symmetric' (X X^T) needs a symmetric PSD problem "
                         "(make_problem(..., symmetric=True))")
    positive_float(rebalance_below, "rebalance_below")
    if rebalance_floor is not None:
        positive_float(rebalance_floor, "rebalance_floor")
    n_cfg = max(len(v) if isinstance(v, (list, tuple)) else 1 for v in (ranks, omegas, seeds, rebalance_once))
    R = [_check_rank(r, problem) for r in broadcast(ranks, n_cfg, "ranks")]
    W = [positive_float(w, "omegas") for w in broadcast(omegas, n_cfg, "omegas")]
    S = broadcast(seeds, n_cfg, "seeds")
    flags = [bool(f) for f in broadcast(rebalance_once, n_cfg, "rebalance_once")]
    if any(flags) and parameterisation != "asymmetric":
        raise ValueError("rebalance_once applies to parameterisation='asymmetric' only")
    r_max, dev = max(R), problem.M_star.device
    active = (torch.arange(r_max)[None, :] < torch.tensor(R)[:, None]).to(dev)  # (C, r_max)
    B = torch.zeros(n_cfg, problem.n1, r_max, dtype=DTYPE)
    A = torch.zeros(n_cfg, r_max, problem.n2, dtype=DTYPE)
    for c, (r, w, s) in enumerate(zip(R, W, S)):
        if parameterisation == "symmetric":
            B[c, :, :r] = init_symmetric(problem.n1, r, w, s)
        else:
            B[c, :, :r], A[c, :r, :] = init_asymmetric(problem.n1, problem.n2, r, w, s, a_ratio)
    B, A = B.to(dev), A.to(dev)
    eigs = None if parameterisation == "symmetric" else \
        [torch.linalg.eigvalsh(imbalance(B[c, :, :r], A[c, :r, :])).cpu() for c, r in enumerate(R)]

    grid = log_grid(steps, num_records)
    record = {int(t): j for j, t in enumerate(grid)}
    errors = torch.full((n_cfg, len(grid)), float("nan"), dtype=DTYPE, device=dev)
    diverged = torch.zeros(n_cfg, dtype=torch.bool, device=dev)
    pending = torch.tensor(flags, dtype=torch.bool, device=dev)
    rebalanced_at = torch.full((n_cfg,), -1, dtype=torch.long, device=dev)
    with few_threads(dev, n_cfg * (problem.n1 * problem.n2) ** 2):
        B, A, rebalanced_at = _descend(problem, parameterisation, B, A, lr, steps, record, errors, diverged,
                                       pending, rebalanced_at, active, rebalance_below, rebalance_floor, blowup)
    return SensingRun(parameterisation, lr, R, W, [int(s) for s in S], grid, errors.cpu(), diverged.cpu(),
                      rebalanced_at.cpu(), eigs)


def _descend(problem: SensingProblem, parameterisation: str, B: torch.Tensor, A: torch.Tensor, lr: float,
             steps: int, record: dict[int, int], errors: torch.Tensor, diverged: torch.Tensor,
             pending: torch.Tensor, rebalanced_at: torch.Tensor, active: torch.Tensor, rebalance_below: float,
             rebalance_floor: float | None, blowup: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The loop of :func:`run_sweep`; fills ``errors`` and ``diverged`` in place."""
    n_cfg, dev = B.shape[0], B.device
    scale = float(problem.M_star.square().sum())
    rebalancing = bool(pending.any())
    for t in range(steps + 1):
        M = B @ (B.transpose(-2, -1) if parameterisation == "symmetric" else A)
        if t in record or rebalancing:
            err = problem.error(M)
            if t in record:
                bad = ~torch.isfinite(err) | (err > blowup * scale)
                diverged |= bad
                B = torch.where(diverged[:, None, None], torch.zeros_like(B), B)
                A = torch.where(diverged[:, None, None], torch.zeros_like(A), A)
                errors[:, record[t]] = torch.where(diverged, torch.full_like(err, float("nan")), err)
            if rebalancing:
                now = pending & ~diverged & (err <= rebalance_below * scale)
                if bool(now.any()):
                    floor = torch.full((n_cfg,), rebalance_floor or 0.0, dtype=DTYPE, device=dev)
                    if rebalance_floor is None:
                        floor = torch.linalg.svdvals(M)[:, problem.r_star - 1].sqrt()
                    B2, A2 = rebalance(B, A, floor, active)
                    B = torch.where(now[:, None, None], B2, B)
                    A = torch.where(now[:, None, None], A2, A)
                    rebalanced_at = torch.where(now, torch.full_like(rebalanced_at, t), rebalanced_at)
                pending &= ~now & ~diverged
                rebalancing = bool(pending.any())
        if t == steps:
            break
        if parameterisation == "symmetric":
            B = symmetric_step(problem, B, lr)
        else:
            B, A = asymmetric_step(problem, B, A, lr)
    return B, A, rebalanced_at


# --------------------------------------------------------------------------- theory and fits
def redundant_error_theory(t: torch.Tensor | np.ndarray | float, r: int, r_star: int, lr: float
                           ) -> np.ndarray:
    """Late-time error of symmetric over-parameterised GD: ``(r - r*) / (16 lr^2 t^2)``.

    Each of the ``r - r*`` redundant singular values obeys ``k <- k - 2 lr k^3`` (a cubic map with
    no linear part), so ``k_t^2 ~ 1 / (4 lr t)`` and ``||K K^T||_F^2 = sum k^4 ~ (r - r*) / (16 lr^2 t^2)``.
    (Our derivation of the mechanism; the paper proves an ``Omega(1 / T^2)`` lower bound.)
    """
    t = np.asarray(t.cpu() if isinstance(t, torch.Tensor) else t, dtype=float)
    return (r - r_star) / (16.0 * lr**2 * t**2)


def linearised_rate(problem: SensingProblem, lr: float) -> float:
    """Predicted linear rate of exact (``r = r*``) symmetric GD near ``X* = U_* Sigma_*^{1/2}``.

    Near the optimum one GD step multiplies the error in each direction of ``X`` by
    ``1 - lr h`` with ``h`` an eigenvalue of the Hessian of ``L(X X^T)`` at ``X*``; the
    ``r*(r*-1)/2`` zero eigenvalues are the rotations ``X* Q`` (they leave ``M`` unchanged), and
    the slowest of the others, ``h_min``, sets ``||M_t - M*||^2 ~ exp(-c t)`` with
    ``c = -2 ln(1 - lr h_min)``. In the population limit (``m -> infinity``) ``h_min = 2 sigma_{r*}``.
    """
    if not problem.symmetric:
        raise ValueError("linearised_rate needs a symmetric problem (the X X^T parameterisation)")
    lr = positive_float(lr, "lr")
    evals, evecs = torch.linalg.eigh(problem.M_star.cpu())
    r = problem.r_star
    X_star = evecs[:, -r:] * evals[-r:].clamp(min=0).sqrt()
    cpu = SensingProblem(problem.M_star.cpu(), problem.Z.cpu(), problem.y.cpu(), r, True)
    hess = torch.autograd.functional.hessian(lambda X: cpu.loss(X @ X.T), X_star)
    h = torch.linalg.eigvalsh(hess.reshape(X_star.numel(), X_star.numel()))
    h_min = float(h[r * (r - 1) // 2])
    if not 0 < lr * h_min < 1:
        raise ValueError(f"lr * h_min = {lr * h_min:.3g} must lie in (0, 1) for a monotone linear rate")
    return -2.0 * math.log(1.0 - lr * h_min)


def _window(steps: object, error: object, lo: float, hi: float) -> tuple[np.ndarray, np.ndarray]:
    t = np.asarray(steps.cpu() if isinstance(steps, torch.Tensor) else steps, dtype=float)
    e = np.asarray(error.cpu() if isinstance(error, torch.Tensor) else error, dtype=float)
    if t.shape != e.shape or t.ndim != 1:
        raise ValueError(f"steps and error must be 1-D with the same length, got {t.shape} and {e.shape}")
    if not (0 < lo < hi):
        raise ValueError(f"the window needs 0 < lo < hi, got lo={lo}, hi={hi}")
    keep = np.isfinite(e) & (e >= lo) & (e <= hi) & (t > 0)
    if keep.sum() < 3:
        raise ValueError(f"fewer than 3 recorded errors lie in [{lo:g}, {hi:g}]: widen the window or run longer")
    return t[keep], e[keep]


def loglog_slope(steps: object, error: object, t_min: float, t_max: float = math.inf) -> float:
    """Slope of ``log error`` against ``log t`` over ``t_min <= t <= t_max`` (``-2`` for ``1/t^2``)."""
    t = np.asarray(steps.cpu() if isinstance(steps, torch.Tensor) else steps, dtype=float)
    e = np.asarray(error.cpu() if isinstance(error, torch.Tensor) else error, dtype=float)
    keep = (t >= t_min) & (t <= t_max) & np.isfinite(e) & (e > 0)
    if keep.sum() < 3:
        raise ValueError(f"fewer than 3 recorded steps lie in [{t_min:g}, {t_max:g}]")
    return fit_power_law(t[keep], e[keep]).exponent


def linear_rate(steps: object, error: object, lo: float, hi: float) -> float:
    """Per-step linear rate ``c`` of ``error ~ C exp(-c t)``, fitted where ``lo <= error <= hi``.

    ``c = -d ln(error) / dt``: the natural logarithm, per step.
    """
    t, e = _window(steps, error, lo, hi)
    return float(-np.polyfit(t, np.log(e), 1)[0])
