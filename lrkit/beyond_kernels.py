"""Low-rank fine-tuning beyond kernels: a rank-1 change learned by spherical online SGD (Chapter 9).

Follows Dayi and Chen, "Low-rank fine-tuning lies between lazy training and feature learning"
(COLT 2025; arXiv 2411.15385, "Gradient dynamics for low-rank fine-tuning beyond kernels").

**Model.** Inputs ``x ~ N(0, I_d)``; the base network of width ``k`` is ``f(x) = lam . sigma(W x)``
with ``W`` of shape ``(k, d)`` (unit rows). The teacher perturbs it by a rank-1 matrix,
``f*(x) = lam . sigma((W + xi c u^T) x)``, with ``u`` a unit vector orthogonal to every row of ``W``
and ``c`` in ``{+-1/sqrt(k)}^k`` (LoRA language: ``c`` is the output-side factor ``B``, ``u`` the
input-side factor ``A``). The student ``f_u(x) = lam . sigma((W + xi c_hat u_hat^T) x)`` has its
output-side factor ``c_hat`` frozen (random in the paper; equal to ``c`` in our aligned instance)
and trains only ``u_hat`` on the unit sphere of ``span(W)^perp``:

    u_hat <- normalise(u_hat - lr (I - u_hat u_hat^T) P grad_u L(u_hat; x_t)),  L = (f*(x) - f_u(x))^2,

one fresh ``x_t`` per step (:func:`sgd_step`; ``P`` projects onto ``span(W)^perp``). The model itself
(:class:`Setting`, :func:`outputs`, the instances :func:`aligned`, :func:`glm`, :func:`faithful`) lives in
:mod:`lrkit.beyond_kernels_model` and is re-exported here. ``W = 0`` is the
GLM ("from scratch"): with ``lam = 1/k``, ``c = c_hat = 1/sqrt(k)`` and ``xi = sqrt(k)``, ``f* = sigma(u . x)``.
The linearised (kernel) student replaces ``f_u`` by its first-order expansion around the base model,
``f(x) + xi sum_j lam_j c_hat_j sigma'(w_j . x) (u_hat . x)``.

**Reduced coordinates** (our derivation). ``P x`` is independent of ``W x`` and standard Gaussian
on the ``d' = d - k`` dimensional complement, so with orthonormal rows the loss depends on ``x``
only through ``g = W x ~ N(0, I_k)``, ``a = u . x`` and ``b = u_hat . x``; :func:`simulate` draws
``g`` and a ``d'``-vector, which is the same process in distribution at ``O(d)`` cost per step
(:func:`lrkit.spherical_sgd.simulate` runs many seeds and sizes at once this way).

**Drift** (our derivation, matching the paper's Prop. 4). The population spherical gradient is
``-h(m) (u - m u_hat)`` with ``m = <u_hat, u>`` and

    h(m) = 2 xi^2 sum_{i,j} lam_i lam_j c_i c_hat_j E[sigma'(z*_i) sigma'(z_j)],
    Cov(z*_i, z_j) = <w_i, w_j> + xi^2 c_i c_hat_j m,  Var = |w_i|^2 + xi^2 / k,

evaluated by Mehler's formula (:func:`lrkit.hermite.derivative_kernel`); so the overlap moves on
average by ``lr h(m) (1 - m^2)`` per step, minus the sphere's noise-induced pull
``lr^2 (d' - 1) V(m) m / 2`` with ``V(m) = E[(dL/db)^2]`` (:meth:`Setting.noise`, our derivation).
With ``W != 0`` the diagonal terms ``i = j`` have correlation of order one at ``m = 0``, so every
Hermite coefficient enters ``h(0)``; in the GLM ``h(m) = 2 sum_p p mu_p^2 m^(p-1)`` vanishes to the
order of the information exponent minus one.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from ._validate import choice, positive_float, positive_int
from .beyond_kernels_model import MODELS, Setting, aligned, faithful, glm, outputs
from .env import generator

__all__ = ["MODELS", "Setting", "Task", "aligned", "drift_limit", "faithful", "glm", "make_task", "outputs",
           "overlap_ode", "safe_lr", "sgd_step", "steps_theory"]


@dataclass(frozen=True)
class Task:
    """One instance in full coordinates: ``W`` ``(k, d)``, orthonormal rows (zero for the GLM), and ``u`` ``(d,)``."""

    setting: Setting
    W: torch.Tensor
    u: torch.Tensor

    def __post_init__(self) -> None:
        k, d = self.W.shape
        if k != self.setting.k or self.u.shape != (d,):
            raise ValueError(f"W must be (k, d) = ({self.setting.k}, d) and u (d,), got {tuple(self.W.shape)}, "
                             f"{tuple(self.u.shape)}")
        if abs(float(self.u.norm()) - 1) > 1e-6:
            raise ValueError(f"u must be a unit vector, got norm {float(self.u.norm()):.6g}")
        if float((self.W @ self.u).abs().max()) > 1e-6:
            raise ValueError("u must be orthogonal to every row of W (u in span(W)^perp; the paper's Assumption 2), "
                             f"got max |<w_i, u>| = {float((self.W @ self.u).abs().max()):.3g}")

    def project(self, v: torch.Tensor) -> torch.Tensor:
        """``v`` with its component in ``span(W)`` removed (rows of ``W`` orthonormal), any batch shape ``(..., d)``."""
        return v - (v @ self.W.T) @ self.W

    def forward(self, x: torch.Tensor, u_hat: torch.Tensor | None = None, model: str = "network") -> torch.Tensor:
        """``f*(x)`` (``u_hat=None``) or the student's output; ``x`` ``(..., d)``, ``u_hat`` broadcast against it."""
        s = self.setting
        g = x @ self.W.T
        if u_hat is None:
            return (s.lam * s.act(g + s.xi * s.c * (x @ self.u)[..., None])).sum(-1)
        return outputs(s.act, s.xi, s.lam, s.c, s.c_hat, g, x @ self.u, (x * u_hat).sum(-1), model)[1]


def make_task(setting: Setting, d: int, seed: int = 0) -> tuple[Task, torch.Tensor]:
    """A task of input dimension ``d`` and a start ``u_hat_0``, both uniform on the sphere of ``span(W)^perp``."""
    d = positive_int(d, "d")
    k = setting.k
    if setting.base and d <= k:
        raise ValueError(f"d must exceed k = {k} so that span(W)^perp is not empty, got d={d}")
    gen = generator(seed)
    Q, _ = torch.linalg.qr(torch.randn(d, d, generator=gen, dtype=torch.float64))
    W = Q[:, :k].T.clone() if setting.base else torch.zeros(k, d, dtype=torch.float64)
    r = k if setting.base else 0
    u, u0 = (Q[:, r:] @ torch.randn(d - r, generator=gen, dtype=torch.float64) for _ in range(2))
    return Task(setting, W, u / u.norm()), u0 / u0.norm()


def sgd_step(task: Task, u_hat: torch.Tensor, x: torch.Tensor, lr: float, model: str = "network") -> torch.Tensor:
    """One projected spherical online-SGD step for a batch: ``u_hat`` and ``x`` of shape ``(S, d)``, one sample each.

    ``grad = P grad_u L``, ``grad <- grad - <grad, u_hat> u_hat``, ``u_hat <- (u_hat - lr grad) / ||...||``.
    """
    positive_float(lr, "lr")
    choice(model, "model", MODELS)
    if abs(float(u_hat.norm(dim=-1).max()) - 1) > 1e-6 or abs(float(u_hat.norm(dim=-1).min()) - 1) > 1e-6:
        raise ValueError("u_hat must hold unit vectors (one per row)")
    s = task.setting
    dldb = outputs(s.act, s.xi, s.lam, s.c, s.c_hat, x @ task.W.T, x @ task.u, (x * u_hat).sum(-1), model)[2]
    grad = task.project(dldb[..., None] * x)
    grad = grad - (grad * u_hat).sum(-1, keepdim=True) * u_hat
    new = u_hat - lr * grad
    unit: torch.Tensor = new / new.norm(dim=-1, keepdim=True)
    return unit


def steps_theory(setting: Setting, d: int, lr: float, m0: float | np.ndarray = 0.0, threshold: float = 0.9,
                 points: int = 400, noise_samples: int = 20000) -> float | np.ndarray:
    """Steps for the mean overlap to go from ``m0`` (a number or an array of starts) to ``threshold``
    (our derivation): ``dm/dt = lr [h(m)(1 - m^2) - lr (d' - 1) V(m) m / 2]``; ``inf`` where the drift
    vanishes on the way (the start is stuck on average)."""
    positive_float(lr, "lr")
    starts = np.asarray(m0, dtype=float)
    if not (np.all(starts > -1) and np.all(starts < threshold) and threshold < 1):
        raise ValueError(f"need -1 < m0 < threshold < 1, got m0 in [{starts.min()}, {starts.max()}], "
                         f"threshold={threshold}")
    dp = positive_int(d, "d") - setting.k * setting.base
    m = torch.linspace(float(starts.min()), threshold, points, dtype=torch.float64)
    drift = setting.h(m) * (1 - m ** 2) - lr * (dp - 1) * setting.noise(m, noise_samples) * m / 2
    rate = torch.where(drift > 0, 1 / (lr * drift.clamp(min=1e-300)), torch.full_like(m, math.inf))
    # time left from grid point i to the threshold (trapezoid, accumulated from the end)
    seg = (rate[1:] + rate[:-1]) / 2 * torch.diff(m)
    left = torch.cat([seg.flip(0).cumsum(0).flip(0), torch.zeros(1, dtype=torch.float64)]).numpy()
    out = np.interp(starts, m.numpy(), np.where(np.isfinite(left), left, 1e300))
    out = np.where(out >= 1e299, np.inf, out)
    return float(out) if out.ndim == 0 else out


def safe_lr(setting: Setting, d: int, m_start: float = 0.0, threshold: float = 0.9, points: int = 200,
            noise_samples: int = 20000) -> float:
    """The largest step for which the sphere's noise pull stays below half the drift on ``[m_start, threshold]``
    (our design rule): ``lr = min_m h(m)(1 - m^2) / ((d' - 1) V(m) m)``. About ``1/d`` when ``h(0) > 0``; for a GLM
    started at ``m_start = 1/sqrt(d)`` with information exponent ``p`` it falls like ``d^(-(p+1)/2)``."""
    dp = positive_int(d, "d") - setting.k * setting.base
    if not 0 <= m_start < threshold < 1:
        raise ValueError(f"need 0 <= m_start < threshold < 1, got m_start={m_start}, threshold={threshold}")
    m = torch.linspace(max(m_start, 1e-3), threshold, points, dtype=torch.float64)
    ratio = setting.h(m) * (1 - m ** 2) / ((dp - 1) * setting.noise(m, noise_samples) * m)
    if bool((ratio <= 0).any()):
        raise ValueError("h(m) <= 0 somewhere on the way: no step size makes this start escape on average")
    return float(ratio.min())


def overlap_ode(setting: Setting, d: int, lr: float, m0: float | np.ndarray, steps: int, records: int = 200
                ) -> tuple[np.ndarray, np.ndarray]:
    """The mean overlap ``m(t)`` from each start ``m0`` (a number or ``(C,)``), for ``t = 0..steps`` at ``records + 1``
    times: ``(t, m)`` with ``m`` of shape ``(R,)`` or ``(C, R)``. Euler on the drift of :func:`steps_theory` (our
    derivation), tabulated on 801 overlaps, with at most 4000 Euler steps (each spanning several SGD steps)."""
    positive_float(lr, "lr")
    positive_int(steps, "steps")
    dp = positive_int(d, "d") - setting.k * setting.base
    grid = torch.linspace(-1, 1, 801, dtype=torch.float64)
    drift = (lr * (setting.h(grid) * (1 - grid ** 2) - lr * (dp - 1) * setting.noise(grid) * grid / 2)).numpy()
    ts = np.unique(np.linspace(0, steps, records + 1).round().astype(int))
    dt = max(1, steps // 4000)
    m, t, out = np.atleast_1d(np.asarray(m0, dtype=float)).copy(), 0, []
    for target in ts:
        while t < target:
            h = min(dt, target - t)
            m = np.clip(m + h * np.interp(m, grid.numpy(), drift), -1.0, 1.0)
            t += h
        out.append(m.copy())
    traj = np.stack(out, -1)
    return ts, traj[0] if np.ndim(m0) == 0 else traj


def drift_limit(setting: Setting, m0: float, points: int = 2001) -> float:
    """Where the noiseless overlap flow ``dm/dt = h(m)(1 - m^2)`` started at ``m0`` ends (our derivation):
    the first sign change of ``h`` in the direction of ``sign h(m0)``, or ``+-1``; ``m0`` itself when
    ``h(m0) = 0``. A zero where ``h`` touches 0 without changing sign (the GLM's saddle at ``m = 0``) is
    passed: noise carries ``m`` across."""
    if not -1 <= m0 <= 1:
        raise ValueError(f"m0 must be an overlap in [-1, 1], got {m0}")
    h0 = float(setting.h(m0))
    if abs(h0) < 1e-12:
        return float(m0)
    end = 1.0 if h0 > 0 else -1.0
    m = torch.linspace(m0, end, points, dtype=torch.float64)
    h = setting.h(m)
    cross = (h[1:] * h0 <= 0).nonzero()
    if cross.numel() == 0:
        return end
    i = int(cross[0])
    return float(m[i] + (m[i + 1] - m[i]) * h[i] / (h[i] - h[i + 1]))
