"""Random-feature ridge regression and its eigenstructure theory (Chapter 7).

Follows Simon, Karkada, Ghosh and Belkin, "More is better in modern machine learning"
(ICLR 2024); the formulas are those of the paper and of the authors' code
(``theory.py`` of ``dkarkada/more-is-better``), in the course's notation.

**The task.** A kernel (or a feature map) has eigenvalues ``lambda_i > 0`` (shape ``(M,)``,
``M`` modes) and the target has coefficients ``v_i`` in its eigenbasis, plus label noise of
variance ``sigma^2`` (``noise``). A power-law task (:func:`power_law_task`) has
``lambda_i = i^-p`` and ``v_i^2 ∝ i^-q`` (the paper's ``alpha, beta`` are our ``p, q``).

**Kernel ridge regression** with ``n`` samples and ridge ``delta`` (:func:`krr_theory`):
``kappa > 0`` solves ``sum_i lambda_i / (lambda_i + kappa) + delta / kappa = n``
(:func:`solve_kappa`); the learnabilities are ``L_i = lambda_i / (lambda_i + kappa)``,
the overfitting coefficient ``E0 = n / (n - sum_i L_i^2)``, and

    test MSE  = E0 [ sum_i (1 - L_i)^2 v_i^2 + sigma^2 ],
    train MSE = (delta / (n kappa))^2 test MSE = ((n - sum_i L_i) / n)^2 test MSE.

**Random features**, ``k`` of them (:func:`rf_theory`): ``(kappa, gamma)`` solve

    n = sum_i lambda_i / (lambda_i + gamma) + delta / kappa,
    k = sum_i lambda_i / (lambda_i + gamma) + k kappa / gamma;

with ``L_i = lambda_i / (lambda_i + gamma)``, ``z = sum L_i``, ``q2 = sum L_i^2``,
``x = (q2 (k - 2 z) + z^2) / (n (k - q2))``, ``E0 = 1 / (1 - x)`` and
``b_i = (1 - L_i) - (kappa L_i / (lambda_i + gamma)) k / (k - q2)``:
``test MSE = E0 [ sum_i b_i v_i^2 + sigma^2 ]``. As ``k -> inf``, ``gamma -> kappa`` and the
kernel formulas come back (``k = math.inf`` is accepted and means the kernel). The train
MSE uses the kernel identity ``delta / (n kappa) = (n - z) / n`` (our extension: it holds
for ridge regression with any fixed kernel, here the random-feature kernel; the chapter
checks it against simulation).

Both solvers broadcast ``n``, ``k`` and ``ridge`` against each other and solve every
point of the grid at once by bisection on a log scale (no scipy), ridge ``0`` and
``k = n`` included (the interpolation peak is ``inf``).

**Simulation** (:func:`simulate`): Gaussian data ``x ~ N(0, I_M)``, target
``y = v . x + noise``; the kernel is ``x^T diag(lambda) x'`` and the random features are
``phi(x) = W diag(lambda)^(1/2) x / sqrt(k)`` with ``W`` of shape ``(k, M)`` standard normal
(the authors' "linear" Gaussian features), so ``E_W[phi(x) . phi(x')]`` is the kernel.
Every predictor is linear in ``x``, ``f(x) = beta . x``, so the test MSE is exact,
``||beta - v||^2 + sigma^2``, with no test set. Ridge regression on the ``n x n`` Gram
matrix ``G = U diag(s) U^T`` costs one eigendecomposition for a whole ridge path:
``a(delta) = U diag(1 / (s + delta)) U^T y``. Trials are a leading batch axis; nested
sample sizes and feature counts reuse one draw per trial (the first ``n`` samples, the
first ``k`` features), as in the authors' experiments.

**ReLU random features** (:func:`relu_features`, :func:`relu_kernel`): ``phi(x) =
relu(W x / sqrt(d)) / sqrt(k)`` on real-valued inputs ``x in R^d``, whose kernel is the
arc-cosine kernel; :func:`eigenstructure` turns a kernel matrix on a finite pool of points
and a target into ``(lambda_i, v_i)`` for the theory, and :func:`simulate_pool` runs the
matching experiment (train on ``n`` points of the pool, test on the whole pool).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import torch

from ._validate import positive_int
from .env import generator, get_device, resolve_scale

__all__ = [
    "sizes", "power_law_task", "solve_kappa", "learnabilities", "KRRTheory", "krr_theory", "RFTheory",
    "rf_theory", "OptimalRidge", "optimal_ridge", "default_ridges", "SimResult", "simulate", "relu_features",
    "relu_kernel", "eigenstructure", "pool_task", "simulate_pool",
]

Number = int | float
ArrayLike = Number | Sequence[Number] | torch.Tensor

_MAX_STEPS = 120  # safeguarded Newton: about 5-15 steps in practice
_CHUNK_ELEMENTS = 1 << 22  # grid points x modes evaluated at once by the solvers


def sizes(scale: str | None = None) -> dict[str, object]:
    """Experiment sizes for ``scale`` (default :func:`lrkit.get_scale`).

    ``small`` follows our CPU calibration (4000 modes, n = 128, 10 trials); ``full`` is the
    paper's synthetic setting (10 000 modes, n = 256, k up to 10^4), for a GPU.
    """
    scale = resolve_scale(scale)
    if scale == "small":
        return dict(modes=4000, n=128, trials=10, ks=(16, 32, 64, 96, 112, 128, 144, 176, 256, 512, 1024),
                    k_fixed=256, ns=(16, 32, 64, 128, 192, 224, 256, 288, 320, 512), opt_ks=(16, 64, 128, 256, 1024),
                    opt_ns=(32, 64, 128, 256, 512), pool=1000, pool_dim=8, pool_n=128,
                    pool_ks=(32, 64, 128, 256, 512, 1024))
    return dict(modes=10000, n=256, trials=10,
                ks=(16, 32, 64, 128, 192, 224, 256, 288, 320, 512, 1024, 2048, 4096, 10000),
                k_fixed=256, ns=(16, 32, 64, 128, 192, 224, 256, 288, 320, 512, 1024, 2048),
                opt_ks=(16, 64, 256, 1024, 4096), opt_ns=(64, 128, 256, 512, 1024, 2048),
                pool=4000, pool_dim=16, pool_n=256, pool_ks=(64, 128, 256, 512, 1024, 2048, 4096))


# --------------------------------------------------------------------------- input checks


def _as_tensor(x: ArrayLike, name: str) -> torch.Tensor:
    if isinstance(x, bool):
        raise TypeError(f"{name} must be a number, a sequence of numbers or a tensor, got bool")
    try:
        t = torch.as_tensor(x, dtype=torch.float64)
    except (TypeError, ValueError, RuntimeError) as e:
        raise TypeError(f"{name} must be a number, a sequence of numbers or a tensor, got {type(x).__name__}") from e
    return t.detach().cpu()


def _check_task(eigvals: ArrayLike, coeffs: ArrayLike | None = None) -> tuple[torch.Tensor, torch.Tensor | None]:
    lam = _as_tensor(eigvals, "eigvals")
    if lam.ndim != 1 or lam.numel() == 0:
        raise ValueError(f"eigvals must be a non-empty 1-D array of eigenvalues, got shape {tuple(lam.shape)}")
    if not bool(torch.isfinite(lam).all()) or bool((lam <= 0).any()):
        raise ValueError("eigvals must be positive and finite (kernel eigenvalues lambda_i > 0); "
                         f"smallest given: {lam.min().item():.3g}")
    if coeffs is None:
        return lam, None
    v = _as_tensor(coeffs, "coeffs")
    if v.shape != lam.shape:
        raise ValueError(f"coeffs must have the same length as eigvals ({lam.numel()} modes), "
                         f"got shape {tuple(v.shape)}")
    if not bool(torch.isfinite(v).all()):
        raise ValueError("coeffs must be finite")
    return lam, v


def _check_count(x: ArrayLike, name: str, allow_inf: bool = False) -> torch.Tensor:
    t = _as_tensor(x, name)
    bad = torch.isnan(t) | (t < 1) | (torch.isinf(t) & (not allow_inf))
    if bool(bad.any()):
        allowed = "numbers >= 1 (math.inf means infinitely many)" if allow_inf else "finite numbers >= 1"
        raise ValueError(f"{name} must be {allowed}, got {t[bad].flatten()[0].item()}")
    return t


def _check_nonneg(x: ArrayLike, name: str) -> torch.Tensor:
    t = _as_tensor(x, name)
    bad = ~torch.isfinite(t) | (t < 0)
    if bool(bad.any()):
        raise ValueError(f"{name} must be finite and >= 0, got {t[bad].flatten()[0].item()}")
    return t


# --------------------------------------------------------------------------- tasks


def power_law_task(modes: int, p: float, q: float, device: torch.device | str | None = None
                   ) -> tuple[torch.Tensor, torch.Tensor]:
    """``lambda_i = i^-p`` and ``v_i = sqrt(i^-q)`` normalised to ``||v|| = 1``, ``i = 1..modes``.

    The paper's exponents ``alpha, beta`` are our ``p, q``. Returns float64 tensors of shape
    ``(modes,)``; the noiseless test MSE of the zero predictor is ``||v||^2 = 1``.
    """
    positive_int(modes, "modes")
    for name, value in (("p", p), ("q", q)):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
            raise ValueError(f"{name} must be a positive finite exponent, got {value!r}")
    i = torch.arange(1, modes + 1, dtype=torch.float64)
    lam, v = i ** (-float(p)), i ** (-float(q) / 2)
    dev = get_device() if device is None else torch.device(device)
    return lam.to(dev), (v / v.norm()).to(dev)


# --------------------------------------------------------------------------- solvers


def _broadcast(*ts: torch.Tensor) -> list[torch.Tensor]:
    return [t.contiguous() for t in torch.broadcast_tensors(*ts)]


def _chunks(size: int, modes: int) -> list[slice]:
    step = max(1, _CHUNK_ELEMENTS // modes)
    return [slice(i, min(i + step, size)) for i in range(0, size, step)]


def _solve_log(fn, target: torch.Tensor, lo: torch.Tensor, hi: torch.Tensor,
               skip: torch.Tensor | None = None) -> torch.Tensor:
    """Solve ``G(u) = target`` for a positive decreasing ``G`` of ``u = log x``, ``x`` in ``[lo, hi]``.

    ``fn(u) -> (G, dG/du)``; ``G = +inf`` marks an inadmissible point left of the root.
    Safeguarded Newton on ``log G(u) - log target`` (nearly linear for power-law spectra, so
    a handful of steps suffice): a Newton step when it stays inside the bracket and at least
    halves the previous step (as in Numerical Recipes' ``rtsafe``), a bisection step
    otherwise. Returns ``x`` at the root; points marked in ``skip`` (no root inside) return ``lo``.
    """
    a, b = lo.log(), hi.log()
    done = torch.zeros_like(a, dtype=torch.bool) if skip is None else skip.clone()
    u = torch.where(done, a, (a + b) / 2)
    log_target = target.log()
    step_before = b - a
    for _ in range(_MAX_STEPS):
        G, dG = fn(u)
        F = G.log() - log_target
        positive = F > 0  # decreasing: the root lies to the right of u
        a, b = torch.where(positive, u, a), torch.where(positive, b, u)
        newton = u - F * G / dG
        finite = torch.isfinite(newton)
        converged = (F == 0) | (finite & ((newton - u).abs() <= 1e-12 * (1 + u.abs())))
        ok = finite & (newton >= a) & (newton <= b) & ((newton - u).abs() < step_before.abs() / 2)
        u_next = torch.where(ok | converged, torch.where(F == 0, u, newton), (a + b) / 2)
        u_next = torch.where(done, u, u_next)
        step_before = torch.where(done, step_before, u_next - u)
        u = u_next
        done = done | converged | ((b - a) <= 1e-12 * (1 + u.abs()))  # converged points stay put
        if bool(done.all()):
            break
    return u.exp()


def _z(lam: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
    """``sum_i lambda_i / (lambda_i + g)`` for a column ``g`` (shape ``(B, 1)``) -> ``(B,)``."""
    return (lam / (lam + g)).sum(-1)


def _z_and_slope(lam: torch.Tensor, g: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``z(g)`` and ``dz/dg = -sum_i lambda_i / (lambda_i + g)^2`` for ``g`` of shape ``(B,)``."""
    r = lam / (lam + g[:, None])
    return r.sum(-1), -(r * r / lam).sum(-1)


def _kappa_flat(lam: torch.Tensor, n: torch.Tensor, ridge: torch.Tensor) -> torch.Tensor:
    modes = lam.numel()
    lo = torch.maximum(ridge / (2 * n), lam.min() * torch.clamp(modes - n, min=0) / (2 * n))
    hi = 2 * (lam.sum() + ridge) / n
    solvable = lo > 0  # else: ridge = 0 and n >= M, kappa = 0
    lo = torch.where(solvable, lo, hi / 2)

    def fn(u: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        c = u.exp()
        z, dz = _z_and_slope(lam, c)
        return z + ridge / c, c * dz - ridge / c

    kap = _solve_log(fn, n, lo, hi, skip=~solvable)
    return torch.where(solvable, kap, torch.zeros_like(kap))


def solve_kappa(eigvals: ArrayLike, n: ArrayLike, ridge: ArrayLike = 0.0) -> torch.Tensor:
    """Effective regularisation of kernel ridge regression: ``kappa`` with
    ``sum_i lambda_i / (lambda_i + kappa) + ridge / kappa = n``.

    ``n`` and ``ridge`` broadcast; the result has their broadcast shape (float64, CPU).
    With ``ridge = 0`` and ``n >= M`` (at least as many samples as modes) ``kappa = 0``.
    """
    lam, _ = _check_task(eigvals)
    n_t, r_t = _broadcast(_check_count(n, "n"), _check_nonneg(ridge, "ridge"))
    flat_n, flat_r = n_t.flatten(), r_t.flatten()
    out = torch.empty_like(flat_n)
    for s in _chunks(flat_n.numel(), lam.numel()):
        out[s] = _kappa_flat(lam, flat_n[s], flat_r[s])
    return out.reshape(n_t.shape)


def learnabilities(eigvals: ArrayLike, kappa: float) -> torch.Tensor:
    """``L_i = lambda_i / (lambda_i + kappa)``: the fraction of mode ``i`` that is learned."""
    lam, _ = _check_task(eigvals)
    if not math.isfinite(float(kappa)) or float(kappa) < 0:
        raise ValueError(f"kappa must be finite and >= 0, got {kappa}")
    return lam / (lam + float(kappa))


class _FittingRatio:
    """``fitting_ratio = train_mse / test_mse`` (for kernel ridge regression ``(delta / (n kappa))^2``)."""

    train_mse: torch.Tensor
    test_mse: torch.Tensor

    @property
    def fitting_ratio(self) -> torch.Tensor:
        return self.train_mse / self.test_mse


@dataclass
class KRRTheory(_FittingRatio):
    """Kernel ridge regression predictions; every field has the broadcast shape of (n, ridge)."""

    kappa: torch.Tensor
    overfitting_coeff: torch.Tensor  # E0
    test_mse: torch.Tensor
    train_mse: torch.Tensor


def _krr_flat(lam: torch.Tensor, v2: torch.Tensor, n: torch.Tensor, ridge: torch.Tensor, noise: torch.Tensor
              ) -> tuple[torch.Tensor, ...]:
    kap = _kappa_flat(lam, n, ridge)
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
    lam, v = _check_task(eigvals, coeffs)
    sigma2 = float(_check_nonneg(noise, "noise"))
    n_t, r_t = _broadcast(_check_count(n, "n"), _check_nonneg(ridge, "ridge"))
    shape, fn, fr = n_t.shape, n_t.flatten(), r_t.flatten()
    outs = [torch.empty_like(fn) for _ in range(4)]
    for s in _chunks(fn.numel(), lam.numel()):
        for o, val in zip(outs, _krr_flat(lam, v ** 2, fn[s], fr[s], torch.tensor(sigma2, dtype=torch.float64))):
            o[s] = val
    return KRRTheory(*(o.reshape(shape) for o in outs))


@dataclass
class RFTheory(_FittingRatio):
    """Random-feature ridge regression predictions, broadcast shape of (n, k, ridge)."""

    kappa: torch.Tensor
    gamma: torch.Tensor
    overfitting_coeff: torch.Tensor  # E0
    test_mse: torch.Tensor
    train_mse: torch.Tensor


def _rf_flat(lam: torch.Tensor, v2: torch.Tensor, n: torch.Tensor, k: torch.Tensor, ridge: torch.Tensor,
             noise: torch.Tensor) -> tuple[torch.Tensor, ...]:
    modes, tr = lam.numel(), lam.sum()
    # gamma_k: the smallest admissible gamma, z(gamma_k) = k (0 when k >= M)
    has_gk = k < modes
    glo = torch.where(has_gk, lam.min() * (modes - k).clamp(min=1) / (2 * k), torch.ones_like(k))
    ghi = 2 * tr / k

    def fk(u: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        g = u.exp()
        z, dz = _z_and_slope(lam, g)
        return z, g * dz

    gk = torch.where(has_gk, _solve_log(fk, k, glo, ghi, skip=~has_gk), torch.zeros_like(k))

    def f(u: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:  # decreasing in u = log(gamma - gamma_k)
        s = u.exp()
        g = gk + s
        z, dz = _z_and_slope(lam, g)
        slack = g * (k - z)
        val = z + ridge * k / slack
        dval = s * (dz - ridge * k * ((k - z) - g * dz) / slack ** 2)
        bad = k - z <= 0
        return torch.where(bad, torch.full_like(val, math.inf), val), torch.where(bad, torch.ones_like(val), dval)

    hi = 4 * (tr + ridge) / torch.minimum(n, k)
    s_lo = torch.where(gk > 0, gk * 1e-15, torch.full_like(k, 1e-300))
    s = _solve_log(f, n, s_lo, hi, skip=(ridge == 0) & (n >= k))  # ridgeless, n >= k: gamma = gamma_k
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
    lam, v = _check_task(eigvals, coeffs)
    sigma2 = torch.tensor(float(_check_nonneg(noise, "noise")), dtype=torch.float64)
    n_t, k_t, r_t = _broadcast(_check_count(n, "n"), _check_count(k, "k", allow_inf=True),
                               _check_nonneg(ridge, "ridge"))
    shape, fn, fk, fr = n_t.shape, n_t.flatten(), k_t.flatten(), r_t.flatten()
    outs = [torch.empty_like(fn) for _ in range(5)]
    kernel = torch.isinf(fk)
    for s in _chunks(fn.numel(), lam.numel()):
        ker, rf = kernel[s], ~kernel[s]
        if bool(rf.any()):
            vals = _rf_flat(lam, v ** 2, fn[s][rf], fk[s][rf], fr[s][rf], sigma2)
            for o, val in zip(outs, vals):
                o[s][rf] = val
        if bool(ker.any()):
            kap, e0, test, train = _krr_flat(lam, v ** 2, fn[s][ker], fr[s][ker], sigma2)
            for o, val in zip(outs, (kap, kap, e0, test, train)):
                o[s][ker] = val
    return RFTheory(*(o.reshape(shape) for o in outs))


# --------------------------------------------------------------------------- optimal ridge


def default_ridges(low: float = -6.0, high: float = 2.0, num: int = 41) -> torch.Tensor:
    """The ridge grid of the optimal-ridge search: ``0`` followed by ``logspace(low, high, num)``."""
    return torch.cat([torch.zeros(1, dtype=torch.float64), torch.logspace(low, high, num, dtype=torch.float64)])


@dataclass
class OptimalRidge:
    """The best ridge on the grid and the theory at it; shape of the broadcast (n, k)."""

    ridge: torch.Tensor
    test_mse: torch.Tensor
    train_mse: torch.Tensor

    @property
    def fitting_ratio(self) -> torch.Tensor:
        return self.train_mse / self.test_mse


def optimal_ridge(eigvals: ArrayLike, coeffs: ArrayLike, n: ArrayLike, k: ArrayLike = math.inf,
                  noise: float = 0.0, ridges: ArrayLike | None = None, refine: bool = True) -> OptimalRidge:
    """Minimise the theoretical test MSE over the ridge, for every broadcast ``(n, k)``.

    A 1-D search over the log grid ``ridges`` (default :func:`default_ridges`, which
    includes ``0``); with ``refine`` a second, 8x finer log grid around each minimum.
    ``k = math.inf`` (default) is kernel ridge regression.
    """
    grid = default_ridges() if ridges is None else _check_nonneg(ridges, "ridges").flatten()
    if grid.numel() == 0:
        raise ValueError("ridges must hold at least one ridge")
    grid = grid.sort().values
    n_t, k_t = _broadcast(_check_count(n, "n"), _check_count(k, "k", allow_inf=True))
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


# --------------------------------------------------------------------------- simulation


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


def _ridge_path(G: torch.Tensor, y: torch.Tensor, ridges: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Dual coefficients ``a = (G + delta I)^+ y`` for every ridge, from one eigendecomposition.

    ``G``: ``(T, n, n)``, ``y``: ``(T, n)``, ``ridges``: ``(R,)`` -> ``a``: ``(T, n, R)`` and the
    train MSE ``||delta (G + delta I)^+ y||^2 / n``: ``(T, R)``. At ``delta = 0`` the null space
    of ``G`` is handled as the limit ``delta -> 0+`` (pseudo-inverse, residual kept).
    """
    s, U = torch.linalg.eigh(G)
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


def _check_sizes(values: Sequence[Number] | Number, name: str, allow_inf: bool) -> list:
    vals = list(values) if isinstance(values, (list, tuple)) else [values]
    out = []
    for v in vals:
        if allow_inf and isinstance(v, float) and math.isinf(v) and v > 0:
            out.append(math.inf)
            continue
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise ValueError(f"{name} must be positive ints{' (or math.inf for the kernel)' if allow_inf else ''}, "
                             f"got {v!r}")
        out.append(v)
    if not out:
        raise ValueError(f"{name} must not be empty")
    return out


def simulate(eigvals: ArrayLike, coeffs: ArrayLike, ns: Sequence[int] | int, ks: Sequence[Number] | Number,
             ridges: ArrayLike, trials: int = 10, noise: float = 0.0, seed: int = 0,
             device: torch.device | str | None = None, memory_mb: int = 256) -> SimResult:
    """Ridge regression on Gaussian-design random features (``k = math.inf``: the kernel itself).

    For each trial: ``X ~ N(0, I)`` of shape ``(max(ns), M)``, ``y = X v + sqrt(noise) eps``,
    ``W ~ N(0, I)`` of shape ``(max finite k, M)``; the first ``n`` samples and the first ``k``
    features give every ``(n, k)``. Returns a :class:`SimResult` with exact population test MSE
    (``||beta - v||^2 + noise``) and train MSE. Trials run as a batch, in chunks that keep
    each batch near ``memory_mb``.
    """
    lam, v = _check_task(eigvals, coeffs)
    sigma2 = float(_check_nonneg(noise, "noise"))
    ns_l, ks_l = _check_sizes(ns, "ns", False), _check_sizes(ks, "ks", True)
    positive_int(trials, "trials")
    grid = _check_nonneg(ridges, "ridges").flatten()
    dev = get_device() if device is None else torch.device(device)
    lam, v, grid = lam.to(dev), v.to(dev), grid.to(dev)
    M, n_max = lam.numel(), max(ns_l)
    finite = [k for k in ks_l if not math.isinf(k)]
    k_max = max(finite) if finite else 0
    per_trial = 8 * (k_max * M + 3 * n_max * M + n_max * max(k_max, 1) + 2 * n_max * n_max)
    chunk = max(1, min(trials, (memory_mb << 20) // max(per_trial, 1)))
    gen = torch.Generator(device=dev).manual_seed(seed)
    sqrt_lam = lam.sqrt()

    def normal(*shape: int) -> torch.Tensor:  # drawn in float32 (twice as fast), used in float64
        return torch.randn(*shape, generator=gen, device=dev, dtype=torch.float32).to(torch.float64)

    tests, trains = [], []
    for start in range(0, trials, chunk):
        T = min(chunk, trials - start)
        X = normal(T, n_max, M)
        y = X @ v + math.sqrt(sigma2) * normal(T, n_max)
        B = normal(T, k_max, M) * sqrt_lam if k_max else None  # rows: W_j diag(lambda)^(1/2)
        Phi = X @ B.transpose(-1, -2) if k_max else None  # (T, n_max, k_max), unscaled features
        test = torch.empty(T, len(ns_l), len(ks_l), grid.numel(), dtype=torch.float64, device=dev)
        train = torch.empty_like(test)
        for j, k in enumerate(ks_l):
            F = X * sqrt_lam if math.isinf(k) else Phi[..., :k] / math.sqrt(k)
            Gfull = F @ F.transpose(-1, -2)
            for i, n in enumerate(ns_l):
                a, tr = _ridge_path(Gfull[:, :n, :n], y[:, :n], grid)
                theta = F[:, :n].transpose(-1, -2) @ a  # feature-space weights, (T, k, R)
                # the predictor is linear in x: f(x) = beta . x, beta = diag(lambda)^(1/2) W^T theta / sqrt(k)
                beta = theta * sqrt_lam[:, None] if math.isinf(k) else B[:, :k].transpose(-1, -2) @ theta / math.sqrt(k)
                test[:, i, j] = ((beta - v[None, :, None]) ** 2).sum(-2) + sigma2
                train[:, i, j] = tr
        tests.append(test.cpu())
        trains.append(train.cpu())
    return SimResult(ns_l, [float(k) for k in ks_l], grid.cpu(), torch.cat(tests), torch.cat(trains))


# --------------------------------------------------------------------------- ReLU features on real inputs


def relu_features(x: torch.Tensor, k: int, seed: int = 0, weights: torch.Tensor | None = None) -> torch.Tensor:
    """``phi(x) = relu(x W^T / sqrt(d)) / sqrt(k)``, ``W ~ N(0, I)`` of shape ``(k, d)``; x: ``(N, d)`` -> ``(N, k)``.

    A width-``k`` two-layer ReLU network with a frozen random first layer: ``phi(x) . theta``.
    ``E_W[phi(x) . phi(x')]`` is :func:`relu_kernel`. Pass ``weights`` to reuse a draw.
    """
    if not isinstance(x, torch.Tensor) or x.ndim != 2:
        raise ValueError(f"x must be a 2-D tensor of inputs (N, d), got {type(x).__name__}"
                         f"{'' if not isinstance(x, torch.Tensor) else ' of shape ' + str(tuple(x.shape))}")
    positive_int(k, "k")
    d = x.shape[1]
    if weights is None:
        weights = torch.randn(k, d, generator=generator(seed), dtype=torch.float64).to(x.device)
    if weights.shape != (k, d):
        raise ValueError(f"weights must have shape (k, d) = {(k, d)}, got {tuple(weights.shape)}")
    return torch.relu(x.to(weights) @ weights.T / math.sqrt(d)) / math.sqrt(k)


def relu_kernel(x1: torch.Tensor, x2: torch.Tensor) -> torch.Tensor:
    """``E_w[relu(w.x/sqrt d) relu(w.x'/sqrt d)]`` (arc-cosine kernel of order 1), shape ``(N1, N2)``:

    ``|x| |x'| (sin t + (pi - t) cos t) / (2 pi d)``, ``t`` the angle between ``x`` and ``x'``.
    """
    if not (isinstance(x1, torch.Tensor) and isinstance(x2, torch.Tensor)) or x1.ndim != 2 or x2.ndim != 2 \
            or x1.shape[1] != x2.shape[1]:
        raise ValueError("x1 and x2 must be 2-D tensors (N1, d) and (N2, d) with the same d")
    x1, x2 = x1.double(), x2.double()
    n1, n2 = x1.norm(dim=1, keepdim=True), x2.norm(dim=1, keepdim=True)
    cos = ((x1 @ x2.T) / (n1 * n2.T).clamp(min=1e-300)).clamp(-1, 1)
    t = torch.arccos(cos)
    return n1 * n2.T * (torch.sin(t) + (math.pi - t) * cos) / (2 * math.pi * x1.shape[1])


def eigenstructure(K: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Eigenvalues and target coefficients of a kernel on a finite pool of ``N`` points.

    With the uniform distribution on the pool as the data distribution, the kernel operator
    has eigenvalues ``eig(K) / N`` and eigenfunctions ``sqrt(N) u_i``; the target's coefficients
    are ``v_i = u_i . y / sqrt(N)``. Returns ``(lambda, v)`` sorted by decreasing ``lambda``,
    keeping the eigenvalues above round-off (positive).
    """
    if not isinstance(K, torch.Tensor) or K.ndim != 2 or K.shape[0] != K.shape[1]:
        raise ValueError("K must be a square 2-D tensor (a kernel matrix)")
    if not isinstance(y, torch.Tensor) or y.shape != (K.shape[0],):
        raise ValueError(f"y must be a 1-D tensor of length {K.shape[0]}, got "
                         f"{tuple(y.shape) if isinstance(y, torch.Tensor) else type(y).__name__}")
    N = K.shape[0]
    s, U = torch.linalg.eigh(K.double())
    s, U = s.flip(0), U.flip(1)
    keep = s > s[0] * N * torch.finfo(torch.float64).eps * 10
    return (s[keep] / N).cpu(), ((U.T @ y.double()) / math.sqrt(N))[keep].cpu()


def pool_task(size: int, dim: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """A finite pool of real-valued inputs and a nonlinear target for the ReLU experiment.

    ``x ~ N(0, I_dim)`` of shape ``(size, dim)``; ``y = tanh(1.5 x_1) + 0.5 x_2 x_3``, centred and
    scaled to unit mean square over the pool (so the zero predictor has test MSE 1).
    """
    if isinstance(size, bool) or not isinstance(size, int) or size < 2:
        raise ValueError(f"size must be an int >= 2, got {size!r}")
    if isinstance(dim, bool) or not isinstance(dim, int) or dim < 3:
        raise ValueError(f"dim must be an int >= 3 (the target uses three coordinates), got {dim!r}")
    x = torch.randn(size, dim, generator=generator(seed), dtype=torch.float64)
    y = torch.tanh(1.5 * x[:, 0]) + 0.5 * x[:, 1] * x[:, 2]
    y = y - y.mean()
    return x, y / y.pow(2).mean().sqrt()


def simulate_pool(x: torch.Tensor, y: torch.Tensor, n: int, ks: Sequence[Number], ridges: ArrayLike,
                  trials: int = 10, seed: int = 0) -> SimResult:
    """ReLU random-feature regression on a finite pool: train on ``n`` pool points drawn without
    replacement, test MSE over the whole pool (the population of :func:`eigenstructure`).

    ``k = math.inf`` uses :func:`relu_kernel` itself. Shapes as in :class:`SimResult` (one ``n``).
    """
    if not isinstance(x, torch.Tensor) or x.ndim != 2 or not isinstance(y, torch.Tensor) or y.shape != (x.shape[0],):
        raise ValueError("x must be (N, d) and y (N,) tensors")
    (n,) = _check_sizes(n, "n", False)
    if n >= x.shape[0]:
        raise ValueError(f"n must be smaller than the pool ({x.shape[0]} points), got {n}")
    ks_l = _check_sizes(ks, "ks", True)
    positive_int(trials, "trials")
    grid = _check_nonneg(ridges, "ridges").flatten().to(x.device)
    gen = generator(seed)
    x, y = x.double(), y.double()
    k_max = max([k for k in ks_l if not math.isinf(k)], default=0)
    test = torch.empty(trials, 1, len(ks_l), grid.numel(), dtype=torch.float64)
    train = torch.empty_like(test)
    Kfull = relu_kernel(x, x) if any(math.isinf(k) for k in ks_l) else None
    for t in range(trials):
        idx = torch.randperm(x.shape[0], generator=gen)[:n].to(x.device)
        W = torch.randn(k_max, x.shape[1], generator=gen, dtype=torch.float64).to(x.device) if k_max else None
        for j, k in enumerate(ks_l):
            if math.isinf(k):
                Kp = Kfull[:, idx]  # (N, n)
            else:
                Fk = relu_features(x, k, weights=W[:k])
                Kp = Fk @ Fk[idx].T
            a, tr = _ridge_path(Kp[idx][None], y[idx][None], grid)
            pred = Kp @ a[0]  # (N, R)
            test[t, 0, j] = ((pred - y[:, None]) ** 2).mean(0).cpu()
            train[t, 0, j] = tr[0].cpu()
    return SimResult([n], [float(k) for k in ks_l], grid.cpu(), test, train)
