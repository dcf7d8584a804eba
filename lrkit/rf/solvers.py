"""The self-consistent equations of the eigenframework and their solver (Chapter 7).

``kappa > 0`` of kernel ridge regression solves ``sum_i lambda_i / (lambda_i + kappa) +
delta / kappa = n`` (:func:`solve_kappa`); the learnabilities are ``L_i = lambda_i / (lambda_i +
kappa)``. All equations have a left side that decreases in the unknown; :func:`solve_log`
solves them for a whole grid at once by safeguarded Newton on a log scale (Newton when it stays
inside the bracket and at least halves the previous step, as in Numerical Recipes' ``rtsafe``,
bisection otherwise; no scipy).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch

from .._validate import as_real
from .inputs import ArrayLike, check_count, check_nonneg, check_task

MAX_STEPS = 120  # safeguarded Newton: about 5-15 steps in practice
CHUNK_ELEMENTS = 1 << 22  # grid points x modes evaluated at once by the solvers

__all__ = ["MAX_STEPS", "CHUNK_ELEMENTS", "broadcast_all", "chunks", "solve_log", "z_and_slope", "kappa_flat",
           "solve_kappa", "learnabilities"]


def broadcast_all(*ts: torch.Tensor) -> list[torch.Tensor]:
    return [t.contiguous() for t in torch.broadcast_tensors(*ts)]  # type: ignore[no-untyped-call]


def chunks(size: int, modes: int) -> list[slice]:
    step = max(1, CHUNK_ELEMENTS // modes)
    return [slice(i, min(i + step, size)) for i in range(0, size, step)]


def solve_log(fn: Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor]], target: torch.Tensor,
              lo: torch.Tensor, hi: torch.Tensor, skip: torch.Tensor | None = None) -> torch.Tensor:
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
    for _ in range(MAX_STEPS):
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



def z_and_slope(lam: torch.Tensor, g: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``z(g) = sum_i lambda_i / (lambda_i + g)`` and ``dz/dg = -sum_i lambda_i / (lambda_i + g)^2``
    for ``g`` of shape ``(B,)`` and ``lam`` of shape ``(M,)``.

    Both sums are matrix-vector products with ``1 / (lambda + g)`` of shape ``(B, M)``, made in
    place: this is the solvers' inner loop.
    """
    inv = (lam + g[:, None]).reciprocal_()
    z = inv @ lam
    return z, -(inv.square_() @ lam)


def kappa_flat(lam: torch.Tensor, n: torch.Tensor, ridge: torch.Tensor) -> torch.Tensor:
    modes = lam.numel()
    lo = torch.maximum(ridge / (2 * n), lam.min() * torch.clamp(modes - n, min=0) / (2 * n))
    hi = 2 * (lam.sum() + ridge) / n
    solvable = lo > 0  # else: ridge = 0 and n >= M, kappa = 0
    lo = torch.where(solvable, lo, hi / 2)

    def fn(u: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        c = u.exp()
        z, dz = z_and_slope(lam, c)
        return z + ridge / c, c * dz - ridge / c

    kap = solve_log(fn, n, lo, hi, skip=~solvable)
    return torch.where(solvable, kap, torch.zeros_like(kap))


def solve_kappa(eigvals: ArrayLike, n: ArrayLike, ridge: ArrayLike = 0.0) -> torch.Tensor:
    """Effective regularisation of kernel ridge regression: ``kappa`` with
    ``sum_i lambda_i / (lambda_i + kappa) + ridge / kappa = n``.

    ``n`` and ``ridge`` broadcast; the result has their broadcast shape (float64, CPU).
    With ``ridge = 0`` and ``n >= M`` (at least as many samples as modes) ``kappa = 0``.
    """
    lam, _ = check_task(eigvals)
    n_t, r_t = broadcast_all(check_count(n, "n"), check_nonneg(ridge, "ridge"))
    flat_n, flat_r = n_t.flatten(), r_t.flatten()
    out = torch.empty_like(flat_n)
    for s in chunks(flat_n.numel(), lam.numel()):
        out[s] = kappa_flat(lam, flat_n[s], flat_r[s])
    return out.reshape(n_t.shape)


def learnabilities(eigvals: ArrayLike, kappa: float) -> torch.Tensor:
    """``L_i = lambda_i / (lambda_i + kappa)``: the fraction of mode ``i`` that is learned."""
    lam, _ = check_task(eigvals)
    kappa = as_real(kappa, "kappa", "a finite number >= 0")
    if not math.isfinite(kappa) or kappa < 0:
        raise ValueError(f"kappa must be finite and >= 0, got {kappa}")
    return lam / (lam + kappa)


