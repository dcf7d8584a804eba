"""Test and train error of kernel and random-feature ridge regression from the eigenstructure (Chapter 7).

Follows Simon, Karkada, Ghosh and Belkin, "More is better in modern machine learning"
(ICLR 2024); the formulas are those of the paper and of the authors' code (``theory.py`` of
``dkarkada/more-is-better``), in the course's notation.

**Kernel ridge regression** with ``n`` samples and ridge ``delta`` (:func:`krr_theory`), with
``kappa`` and ``L_i`` from :mod:`lrkit.rf.solvers` and ``E0 = n / (n - sum_i L_i^2)``::

    test MSE  = E0 [ sum_i (1 - L_i)^2 v_i^2 + sigma^2 ],
    train MSE = (delta / (n kappa))^2 test MSE = ((n - sum_i L_i) / n)^2 test MSE.

**Random features**, ``k`` of them (:func:`rf_theory`): ``(kappa, gamma)`` solve

    n = sum_i lambda_i / (lambda_i + gamma) + delta / kappa,
    k = sum_i lambda_i / (lambda_i + gamma) + k kappa / gamma;

with ``L_i = lambda_i / (lambda_i + gamma)``, ``z = sum L_i``, ``q2 = sum L_i^2``,
``x = (q2 (k - 2 z) + z^2) / (n (k - q2))``, ``E0 = 1 / (1 - x)`` and
``b_i = (1 - L_i) - (kappa L_i / (lambda_i + gamma)) k / (k - q2)``:
``test MSE = E0 [ sum_i b_i v_i^2 + sigma^2 ]``. As ``k -> inf``, ``gamma -> kappa`` and the
kernel formulas come back (``k = math.inf`` is accepted and means the kernel). The RF train
MSE uses the kernel identity ``delta / (n kappa) = (n - z) / n``: our extension (conditioned on
the features, RF regression is ridge regression with the fixed random kernel, whose ``kappa``
is the pair's); Chapter 7 checks it against simulation above the interpolation peak (``k > n``) and
reports, without claiming it, the deviation below it. Every solver broadcasts ``n``, ``k``
and ``ridge`` and solves the whole grid at once; ridge ``0`` and ``k = n`` included (the
interpolation peak is ``inf``). :func:`optimal_ridge` minimises the predicted test MSE.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from .._validate import positive_int
from .inputs import ArrayLike, check_count, check_nonneg, check_task_coeffs
from .solvers import broadcast_all, chunks, kappa_flat, solve_log, z_and_slope

__all__ = ["KRRTheory", "krr_theory", "RFTheory", "rf_theory", "OptimalRidge", "optimal_ridge", "default_ridges"]


class FittingRatio:
    """``fitting_ratio = train_mse / test_mse`` (for kernel ridge regression ``(delta / (n kappa))^2``)."""

    train_mse: torch.Tensor
    test_mse: torch.Tensor

    @property
    def fitting_ratio(self) -> torch.Tensor:
        return self.train_mse / self.test_mse


@dataclass
class KRRTheory(FittingRatio):
    """Kernel ridge regression predictions; every field has the broadcast shape of (n, ridge)."""

    kappa: torch.Tensor
    overfitting_coeff: torch.Tensor  # E0
    test_mse: torch.Tensor
    train_mse: torch.Tensor


def krr_flat(lam: torch.Tensor, v2: torch.Tensor, n: torch.Tensor, ridge: torch.Tensor, noise: torch.Tensor
              ) -> tuple[torch.Tensor, ...]:
    kap = kappa_flat(lam, n, ridge)
    L = lam / (lam + kap[:, None])
    one_minus = kap[:, None] / (lam + kap[:, None])
    q2 = (L ** 2).sum(-1)
    e0 = torch.where(n > q2, n / (n - q2), torch.full_like(n, math.inf))
    bias = (one_minus ** 2 * v2).sum(-1)
    test = torch.where(torch.isinf(e0), e0, e0 * (bias + noise))
    ratio = ((n - L.sum(-1)) / n).clamp(min=0) ** 2
    train = torch.where(torch.isfinite(test), ratio * test, torch.full_like(test, math.nan))
    return kap, e0, test, train


def krr_theory(eigvals: ArrayLike, coeffs: ArrayLike, n: ArrayLike, ridge: ArrayLike = 0.0,
               noise: float = 0.0) -> KRRTheory:
    """Test and train MSE of kernel ridge regression from the eigenstructure (see module doc).

    ``eigvals`` and ``coeffs``: shape ``(M,)``; ``n`` (>= 1) and ``ridge`` (>= 0) broadcast;
    ``noise`` is the label-noise variance ``sigma^2``. Float64 tensors on the CPU.
    """
    lam, v = check_task_coeffs(eigvals, coeffs)
    sigma2 = float(check_nonneg(noise, "noise"))
    n_t, r_t = broadcast_all(check_count(n, "n"), check_nonneg(ridge, "ridge"))
    shape, fn, fr = n_t.shape, n_t.flatten(), r_t.flatten()
    outs = [torch.empty_like(fn) for _ in range(4)]
    for s in chunks(fn.numel(), lam.numel()):
        for o, val in zip(outs, krr_flat(lam, v ** 2, fn[s], fr[s], torch.tensor(sigma2, dtype=torch.float64))):
            o[s] = val
    return KRRTheory(*(o.reshape(shape) for o in outs))


@dataclass
class RFTheory(FittingRatio):
    """Random-feature ridge regression predictions, broadcast shape of (n, k, ridge)."""

    kappa: torch.Tensor
    gamma: torch.Tensor
    overfitting_coeff: torch.Tensor  # E0
    test_mse: torch.Tensor
    train_mse: torch.Tensor


def rf_flat(lam: torch.Tensor, v2: torch.Tensor, n: torch.Tensor, k: torch.Tensor, ridge: torch.Tensor,
             noise: torch.Tensor) -> tuple[torch.Tensor, ...]:
    modes, tr = lam.numel(), lam.sum()
    # gamma_k: the smallest admissible gamma, z(gamma_k) = k (0 when k >= M)
    has_gk = k < modes
    glo = torch.where(has_gk, lam.min() * (modes - k).clamp(min=1) / (2 * k), torch.ones_like(k))
    ghi = 2 * tr / k

    def fk(u: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        g = u.exp()
        z, dz = z_and_slope(lam, g)
        return z, g * dz

    gk = torch.where(has_gk, solve_log(fk, k, glo, ghi, skip=~has_gk), torch.zeros_like(k))

    def f(u: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:  # decreasing in u = log(gamma - gamma_k)
        s = u.exp()
        g = gk + s
        z, dz = z_and_slope(lam, g)
        slack = g * (k - z)
        val = z + ridge * k / slack
        dval = s * (dz - ridge * k * ((k - z) - g * dz) / slack ** 2)
        bad = k - z <= 0
        return torch.where(bad, torch.full_like(val, math.inf), val), torch.where(bad, torch.ones_like(val), dval)

    hi = 4 * (tr + ridge) / torch.minimum(n, k)
    s_lo = torch.where(gk > 0, gk * 1e-15, torch.full_like(k, 1e-300))
    s = solve_log(f, n, s_lo, hi, skip=(ridge == 0) & (n >= k))  # ridgeless, n >= k: gamma = gamma_k
    gam = gk + s
    L = lam / (lam + gam[:, None])
    z, q2 = L.sum(-1), (L ** 2).sum(-1)
    # kappa from whichever equation is well conditioned: (2) when k > n, else (1)
    kap_from_k = gam * (k - z) / k
    kap_from_n = torch.where(n - z > 0, ridge / (n - z), torch.zeros_like(z))
    kap = torch.where(k > n, kap_from_k, kap_from_n)
    kap = torch.where((ridge == 0) & (n > k), torch.zeros_like(kap), kap)
    x = (q2 * (k - 2 * z) + z ** 2) / (n * (k - q2))
    e0 = torch.where((x < 1) & ~((ridge == 0) & (n == k)), 1 / (1 - x), torch.full_like(x, math.inf))
    bias_i = gam[:, None] / (lam + gam[:, None]) - (kap[:, None] * L / (lam + gam[:, None])) * (k / (k - q2))[:, None]
    test = torch.where(torch.isinf(e0), e0, e0 * ((bias_i * v2).sum(-1) + noise))
    ratio = ((n - z) / n).clamp(min=0) ** 2
    train = torch.where(torch.isfinite(test), ratio * test, torch.full_like(test, math.nan))
    return kap, gam, e0, test, train


def rf_theory(eigvals: ArrayLike, coeffs: ArrayLike, n: ArrayLike, k: ArrayLike, ridge: ArrayLike = 0.0,
              noise: float = 0.0) -> RFTheory:
    """Test and train MSE of ridge regression on ``k`` random features (see module doc).

    ``n``, ``k`` (>= 1; ``math.inf`` = the kernel limit, where ``gamma = kappa``) and
    ``ridge`` (>= 0) broadcast against each other. Float64 tensors on the CPU.
    """
    lam, v = check_task_coeffs(eigvals, coeffs)
    sigma2 = torch.tensor(float(check_nonneg(noise, "noise")), dtype=torch.float64)
    n_t, k_t, r_t = broadcast_all(check_count(n, "n"), check_count(k, "k", allow_inf=True),
                               check_nonneg(ridge, "ridge"))
    shape, fn, fk, fr = n_t.shape, n_t.flatten(), k_t.flatten(), r_t.flatten()
    outs = [torch.empty_like(fn) for _ in range(5)]
    kernel = torch.isinf(fk)
    for s in chunks(fn.numel(), lam.numel()):
        ker, rf = kernel[s], ~kernel[s]
        if bool(rf.any()):
            vals = rf_flat(lam, v ** 2, fn[s][rf], fk[s][rf], fr[s][rf], sigma2)
            for o, val in zip(outs, vals):
                o[s][rf] = val
        if bool(ker.any()):
            kap, e0, test, train = krr_flat(lam, v ** 2, fn[s][ker], fr[s][ker], sigma2)
            for o, val in zip(outs, (kap, kap, e0, test, train)):
                o[s][ker] = val
    return RFTheory(*(o.reshape(shape) for o in outs))


# --------------------------------------------------------------------------- optimal ridge


def default_ridges(low: float = -6.0, high: float = 2.0, num: int = 41) -> torch.Tensor:
    """The ridge grid of the optimal-ridge search: ``0`` followed by ``logspace(low, high, num)``."""
    num = positive_int(num, "num")
    return torch.cat([torch.zeros(1, dtype=torch.float64), torch.logspace(low, high, num, dtype=torch.float64)])


@dataclass
class OptimalRidge(FittingRatio):
    """The best ridge on the grid and the theory at it; shape of the broadcast (n, k)."""

    ridge: torch.Tensor
    test_mse: torch.Tensor
    train_mse: torch.Tensor


def optimal_ridge(eigvals: ArrayLike, coeffs: ArrayLike, n: ArrayLike, k: ArrayLike = math.inf,
                  noise: float = 0.0, ridges: ArrayLike | None = None, refine: bool = True) -> OptimalRidge:
    """Minimise the theoretical test MSE over the ridge, for every broadcast ``(n, k)``.

    A 1-D search over the log grid ``ridges`` (default :func:`default_ridges`, which
    includes ``0``); with ``refine`` a second, 8x finer log grid around each minimum.
    ``k = math.inf`` (default) is kernel ridge regression.
    """
    grid = default_ridges() if ridges is None else check_nonneg(ridges, "ridges").flatten()
    if grid.numel() == 0:
        raise ValueError("ridges must hold at least one ridge")
    grid = grid.sort().values
    n_t, k_t = broadcast_all(check_count(n, "n"), check_count(k, "k", allow_inf=True))
    th = rf_theory(eigvals, coeffs, n_t[..., None], k_t[..., None], grid, noise)
    test = torch.nan_to_num(th.test_mse, nan=math.inf)
    best = test.argmin(-1)
    ridge = grid[best]
    if refine and grid.numel() > 2:
        lo = grid[(best - 1).clamp(min=0)]
        hi = grid[(best + 1).clamp(max=grid.numel() - 1)]
        lo = torch.where(lo > 0, lo, hi * 1e-3)  # next to ridge 0: search down to 1e-3 of the next ridge
        t = torch.linspace(0, 1, 17, dtype=torch.float64)
        fine = torch.exp(lo.log()[..., None] + t * (hi.log() - lo.log())[..., None])
        fine = torch.cat([ridge[..., None], fine], -1)
        th2 = rf_theory(eigvals, coeffs, n_t[..., None], k_t[..., None], fine, noise)
        j = torch.nan_to_num(th2.test_mse, nan=math.inf).argmin(-1)
        ridge = fine.gather(-1, j[..., None])[..., 0]
    final = rf_theory(eigvals, coeffs, n_t, k_t, ridge, noise)
    return OptimalRidge(ridge, final.test_mse, final.train_mse)

