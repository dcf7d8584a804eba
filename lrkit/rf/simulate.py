"""Simulation of random-feature and kernel ridge regression on Gaussian data (Chapter 7).

Gaussian data ``x ~ N(0, I_M)``, target ``y = v . x + noise``; the kernel is
``x^T diag(lambda) x'`` and the random features are ``phi(x) = W diag(lambda)^(1/2) x / sqrt(k)``
with ``W`` of shape ``(k, M)`` standard normal (the authors' "linear" Gaussian features), so
``E_W[phi(x) . phi(x')]`` is the kernel. Every predictor is linear in ``x``, ``f(x) = beta . x``,
so the test MSE is exact, ``||beta - v||^2 + sigma^2``, with no test set. Ridge regression on
the ``n x n`` Gram matrix ``G = U diag(s) U^T`` costs one eigendecomposition for a whole ridge
path (:func:`ridge_path`). Trials are a leading batch axis; nested sample sizes and feature
counts reuse one draw per trial (the first ``n`` samples, the first ``k`` features), as in the
authors' experiments. :func:`measured_learnabilities` measures ``E[beta_i] / v_i`` per mode.
Random draws come from a CPU generator and are copied to the device, so a seed gives the same
data on the CPU, CUDA and MPS; the device computes in :func:`lrkit.env.float_dtype`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from .._validate import check_device, check_seed, positive_int
from ..env import cpu_on_mps, float_dtype, generator, to_device_dtype
from .inputs import ArrayLike, Number, check_nonneg, check_sizes, check_task, check_task_coeffs

__all__ = ["SimResult", "ridge_path", "simulate", "measured_learnabilities", "familywise_z", "fit_random_features"]


@dataclass
class SimResult:
    """Measured MSEs, shape ``(trials, len(ns), len(ks), len(ridges))``; ``k = inf`` is the kernel."""

    ns: list[int]
    ks: list[float]
    ridges: torch.Tensor
    test_mse: torch.Tensor
    train_mse: torch.Tensor

    def mean(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Trial means of (test, train) MSE, shape ``(len(ns), len(ks), len(ridges))``."""
        return self.test_mse.mean(0), self.train_mse.mean(0)

    def sem(self) -> torch.Tensor:
        """Standard error of the trial-mean test MSE."""
        t = self.test_mse.shape[0]
        return self.test_mse.std(0) / math.sqrt(t) if t > 1 else torch.zeros_like(self.test_mse[0])


def ridge_path(G: torch.Tensor, y: torch.Tensor, ridges: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Dual coefficients ``a = (G + delta I)^+ y`` for every ridge, from one eigendecomposition.

    ``G``: ``(T, n, n)``, ``y``: ``(T, n)``, ``ridges``: ``(R,)`` -> ``a``: ``(T, n, R)`` and the
    train MSE ``||delta (G + delta I)^+ y||^2 / n``: ``(T, R)``. At ``delta = 0`` the null space
    of ``G`` is handled as the limit ``delta -> 0+`` (pseudo-inverse, residual kept).
    """
    s, U = cpu_on_mps(torch.linalg.eigh, G)  # MPS may lack eigh
    tol = s.amax(-1, keepdim=True).clamp(min=0) * G.shape[-1] * torch.finfo(G.dtype).eps * 10
    null = (s <= tol)[..., None]  # (T, n, 1)
    s = torch.where(null[..., 0], torch.zeros_like(s), s)[..., None]
    d = ridges.to(G)[None, None, :]
    zero = null & (d == 0)  # null directions at ridge 0: pseudo-inverse
    inv = torch.where(zero, torch.zeros_like(s + d), 1 / torch.where(zero, torch.ones_like(s + d), s + d))
    resid = torch.where(zero, torch.ones_like(inv), d * inv)
    yt = (U.transpose(-1, -2) @ y[..., None])  # (T, n, 1)
    a = U @ (yt * inv)
    train = ((yt * resid) ** 2).mean(-2)
    return a, train


def simulate(eigvals: ArrayLike, coeffs: ArrayLike, ns: Sequence[int] | int, ks: Sequence[Number] | Number,
             ridges: ArrayLike, trials: int = 10, noise: float = 0.0, seed: int = 0,
             device: torch.device | str | None = None, memory_mb: int = 256) -> SimResult:
    """Ridge regression on Gaussian-design random features (``k = math.inf``: the kernel itself).

    For each trial: ``X ~ N(0, I)`` of shape ``(max(ns), M)``, ``y = X v + sqrt(noise) eps``,
    ``W ~ N(0, I)`` of shape ``(max finite k, M)``; the first ``n`` samples and the first ``k``
    features give every ``(n, k)``. Returns a :class:`SimResult` (float64, CPU) with exact
    population test MSE (``||beta - v||^2 + noise``) and train MSE. Trials run as a batch, in
    chunks that keep each batch near ``memory_mb``. The draws come from a CPU generator seeded
    ``seed`` (a seed gives the same data on every device); the algebra runs on ``device`` in
    :func:`lrkit.env.float_dtype` (float64; float32 on MPS).
    """
    lam, v = check_task_coeffs(eigvals, coeffs)
    sigma2 = float(check_nonneg(noise, "noise"))
    ns_l, ks_l = check_sizes(ns, "ns", False), check_sizes(ks, "ks", True)
    positive_int(trials, "trials")
    grid = check_nonneg(ridges, "ridges").flatten()
    seed, memory_mb = check_seed(seed), positive_int(memory_mb, "memory_mb")
    dev = check_device(device)
    wide = float_dtype(dev)
    lam, v, grid = (to_device_dtype(t, dev, wide) for t in (lam, v, grid))
    test, train = _simulate(lam, v, ns_l, ks_l, grid, trials, sigma2, generator(seed), memory_mb)
    return SimResult(ns_l, [float(k) for k in ks_l], grid.cpu().double(), test.double(), train.double())


def _simulate(lam: torch.Tensor, v: torch.Tensor, ns_l: list[int], ks_l: list[Any], grid: torch.Tensor,
              trials: int, sigma2: float, gen: torch.Generator, memory_mb: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The trials of :func:`simulate` (arguments checked, task on its device): ``(test, train)`` copied to
    the CPU once, after the loop, in the task's dtype."""
    dev, wide = lam.device, lam.dtype
    M, n_max = lam.numel(), max(ns_l)
    finite = [k for k in ks_l if not math.isinf(k)]
    k_max = max(finite) if finite else 0
    per_trial = 8 * (k_max * M + 3 * n_max * M + n_max * max(k_max, 1) + 2 * n_max * n_max)
    chunk = max(1, min(trials, (memory_mb << 20) // max(per_trial, 1)))
    sqrt_lam = lam.sqrt()

    def normal(*shape: int) -> torch.Tensor:  # drawn on the CPU in float32 (twice as fast), used in `wide`
        return torch.randn(*shape, generator=gen, dtype=torch.float32).to(dev).to(wide)

    tests, trains = [], []
    for start in range(0, trials, chunk):
        T = min(chunk, trials - start)
        X = normal(T, n_max, M)
        y = X @ v + math.sqrt(sigma2) * normal(T, n_max)
        B = normal(T, k_max, M) * sqrt_lam if k_max else None  # rows: W_j diag(lambda)^(1/2)
        Phi = X @ B.transpose(-1, -2) if B is not None else None  # (T, n_max, k_max), unscaled features
        test = torch.empty(T, len(ns_l), len(ks_l), grid.numel(), dtype=wide, device=dev)
        train = torch.empty_like(test)
        for j, k in enumerate(ks_l):
            if math.isinf(k):
                F = X * sqrt_lam
            else:
                assert Phi is not None
                F = Phi[..., :k] / math.sqrt(k)
            Gfull = F @ F.transpose(-1, -2)
            for i, n in enumerate(ns_l):
                a, tr = ridge_path(Gfull[:, :n, :n], y[:, :n], grid)
                theta = F[:, :n].transpose(-1, -2) @ a  # feature-space weights, (T, k, R)
                # the predictor is linear in x: f(x) = beta . x, beta = diag(lambda)^(1/2) W^T theta / sqrt(k)
                if math.isinf(k):
                    beta = theta * sqrt_lam[:, None]
                else:
                    assert B is not None
                    beta = B[:, :k].transpose(-1, -2) @ theta / math.sqrt(k)
                test[:, i, j] = ((beta - v[None, :, None]) ** 2).sum(-2) + sigma2
                train[:, i, j] = tr
        tests.append(test)
        trains.append(train)
    return torch.cat(tests).cpu(), torch.cat(trains).cpu()


def measured_learnabilities(eigvals: ArrayLike, n: int, ridge: float = 0.0, trials: int = 10, seed: int = 0,
                            device: torch.device | str | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-mode learnability of kernel ridge regression, measured: mean and SEM over ``trials``.

    Ridge regression maps a target with coefficients ``v`` to ``beta = H v`` with the hat operator
    ``H = diag(lambda) X^T (X diag(lambda) X^T + ridge I)^+ X`` (``X ~ N(0, I)`` of shape ``(n, M)``).
    By the symmetry ``x_i -> -x_i``, ``E[H]`` is diagonal, so ``E[beta_i] = E[H_ii] v_i``: the
    measured learnability of mode ``i`` is ``E[H_ii]``, whatever the target. Returns two
    ``(M,)`` float64 CPU tensors (the theory's ``L_i = lambda_i / (lambda_i + kappa)``). Draws
    from a CPU generator seeded ``seed``, algebra on ``device`` as in :func:`simulate`.
    """
    lam, _ = check_task(eigvals)
    positive_int(n, "n")
    positive_int(trials, "trials")
    delta = float(check_nonneg(ridge, "ridge"))
    seed, dev = check_seed(seed), check_device(device)
    H = _hat_diagonals(to_device_dtype(lam, dev, float_dtype(dev)), n, delta, trials, generator(seed)).double()
    sem = H.std(0) / math.sqrt(trials) if trials > 1 else torch.zeros_like(H[0])
    return H.mean(0), sem


def _hat_diagonals(lam: torch.Tensor, n: int, delta: float, trials: int, gen: torch.Generator) -> torch.Tensor:
    """The diagonals of the hat operator of :func:`measured_learnabilities`, ``(trials, M)``, on the CPU."""
    dev, wide = lam.device, lam.dtype
    diags = []
    for _ in range(trials):
        X = torch.randn(n, lam.numel(), generator=gen, dtype=torch.float32).to(dev).to(wide)
        s, U = cpu_on_mps(torch.linalg.eigh, (X * lam) @ X.T)
        inv = torch.where(s + delta > s.max() * n * 1e-15, 1 / (s + delta), torch.zeros_like(s))
        diags.append(lam * ((U.T @ X) ** 2 * inv[:, None]).sum(0))
    return torch.stack(diags).cpu()


def familywise_z(count: int, level: float = 0.01) -> float:
    """The number of standard errors that ``count`` independent Gaussian deviations all stay within,
    together, with probability ``1 - level``: ``Phi^-1(1 - level / (2 count))`` (Bonferroni).

    A check of ``count`` points at "3 standard errors" each fails by chance with probability about
    ``0.0027 count``; this threshold keeps the whole family at ``level``.
    """
    positive_int(count, "count")
    if not 0 < level < 1:
        raise ValueError(f"level must lie in (0, 1), got {level}")
    return float(torch.special.ndtri(torch.tensor(1 - level / (2 * count), dtype=torch.float64)))


def fit_random_features(eigvals: ArrayLike, coeffs: ArrayLike, X: torch.Tensor, W: torch.Tensor,
                        ridge: float) -> tuple[float, float]:
    """One random-feature ridge regression, noiseless: ``(test MSE, train MSE)`` for given draws.

    ``X (n, M)`` Gaussian inputs, ``W (k, M)`` Gaussian weights, labels ``y = X v``; features
    ``Phi = X diag(lambda)^(1/2) W^T / sqrt(k)``; ``theta = Phi^T (Phi Phi^T + ridge I)^+ y`` (the
    minimum-norm interpolant at ridge 0); the predictor is ``beta . x`` with
    ``beta = diag(lambda)^(1/2) W^T theta / sqrt(k)``, so the test MSE is ``||beta - v||^2``.
    The single-draw reference of :func:`simulate` (which batches trials and nested sizes).
    """
    lam, v = check_task_coeffs(eigvals, coeffs)
    if not (isinstance(X, torch.Tensor) and isinstance(W, torch.Tensor)) or X.ndim != 2 or W.ndim != 2 \
            or X.shape[1] != lam.numel() or W.shape[1] != lam.numel():
        raise ValueError(f"X must be (n, M) and W (k, M) tensors with M = {lam.numel()} modes")
    delta = float(check_nonneg(ridge, "ridge"))
    X, W = X.double().cpu(), W.double().cpu()
    k = W.shape[0]
    F = (X * lam.sqrt()) @ W.T / math.sqrt(k)
    y = X @ v
    a, train = ridge_path((F @ F.T)[None], y[None], torch.tensor([delta], dtype=torch.float64))
    beta = (W.T @ (F.T @ a[0, :, 0])) * lam.sqrt() / math.sqrt(k)
    return float(((beta - v) ** 2).sum()), float(train[0, 0])
