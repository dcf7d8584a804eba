"""Training the pole of a linear SSM (Chapter 3): the gradient is the input spectrum weighted by dG/da.

For one state with gain ``w = C B`` and pole ``a`` the periodic model's transfer function is
``w G(w_k)``, ``G = 1 / (1 - a e^{-i w})``, and

    dG/da = e^{-i w} / (1 - a e^{-i w})^2.

With the residual ``R_k = w G_k U_k - Y_k`` (DFTs of ``M`` sequences of length ``L``), Parseval
turns the derivative of the loss per time step ``1/(2ML) sum_t r_t^2`` into

    dL/da = 1/(M L^2) sum_k Re[ conj(R_k) w dG/da(w_k) U_k ]                      (pole_gradient)

so each frequency pushes the pole in proportion to the input power ``|U_k|^2`` there *times*
``|dG/da|``, which for ``a > 0`` is large at low frequencies (``1/(1-a)^2`` at ``w = 0``) and
small at high ones (``1/(1+a)^2`` at ``w = pi``). Near a teacher with the same gain and pole
``a*`` the residual vanishes and the loss is ``1/2 lambda (a - a*)^2`` to second order, with

    lambda = w^2 / (M L^2) sum_k |U_k|^2 |dG/da(w_k)|^2                             (pole_curvature)

so gradient flow on ``a`` relaxes at the rate ``lambda`` (our derivation). :func:`train_pole`
runs gradient descent on ``a`` alone (gain fixed), many configurations at once.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from ._validate import positive_float, positive_int
from .ssm import check_signal

__all__ = ["pole_gradient", "pole_curvature", "PoleRun", "train_pole"]


def _grid(L: int, device: torch.device) -> torch.Tensor:
    return torch.exp(-2j * math.pi * torch.arange(L, dtype=torch.float64, device=device) / L)


def _poles(a: float | Sequence[float] | torch.Tensor, name: str = "a") -> torch.Tensor:
    t = torch.as_tensor(a, dtype=torch.float64).reshape(-1)
    if not torch.isfinite(t).all() or bool((t.abs() >= 1).any()):
        raise ValueError(f"{name} must hold real poles with |a| < 1, got {a!r}")
    return t


def _spectra(u: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    u, y = check_signal(u), check_signal(y, "y")
    if u.shape != y.shape:
        raise ValueError(f"u and y must have the same shape, got {tuple(u.shape)} and {tuple(y.shape)}")
    u = u.reshape(-1, u.shape[-1]).to(torch.float64)
    y = y.reshape(-1, y.shape[-1]).to(torch.float64)
    return torch.fft.fft(u), torch.fft.fft(y)


def pole_gradient(u: torch.Tensor, y: torch.Tensor, a: float | Sequence[float] | torch.Tensor,
                  w: float | Sequence[float] | torch.Tensor) -> torch.Tensor:
    """``dL/da`` of the one-state periodic SSM with pole ``a`` and gain ``w`` (module docstring), per configuration.

    ``u``, ``y``: ``(..., L)``; ``a`` and ``w``: scalars or ``(cfg,)``. Returns ``(cfg,)``.
    """
    U, Y = _spectra(u, y)
    M, L = U.shape
    a_t = _poles(a).to(U.device)
    w_t = torch.as_tensor(w, dtype=torch.float64, device=U.device).reshape(-1)
    e = _grid(L, U.device)
    G = 1 / (1 - a_t[:, None] * e)  # (cfg, L)
    dG = e / (1 - a_t[:, None] * e) ** 2
    R = w_t[:, None, None] * G[:, None] * U[None] - Y[None]  # (cfg, M, L)
    return ((R.conj() * w_t[:, None, None] * dG[:, None] * U[None]).real.sum((-1, -2)) / (M * L * L)).cpu()


def pole_curvature(u: torch.Tensor, a: float | Sequence[float] | torch.Tensor,
                   w: float | Sequence[float] | torch.Tensor) -> torch.Tensor:
    """``lambda = w^2 / (M L^2) sum_k |U_k|^2 |dG/da(w_k)|^2``: the loss's curvature in ``a`` at a matching teacher."""
    U = torch.fft.fft(check_signal(u).reshape(-1, u.shape[-1]).to(torch.float64))
    M, L = U.shape
    a_t = _poles(a).to(U.device)
    w_t = torch.as_tensor(w, dtype=torch.float64, device=U.device).reshape(-1)
    e = _grid(L, U.device)
    dG2 = (1 / (1 - a_t[:, None] * e) ** 2).abs().square()  # |dG/da|^2, (cfg, L)
    power = U.abs().square().sum(0)  # (L,)
    return (w_t ** 2 * (dG2 * power).sum(-1) / (M * L * L)).cpu()


@dataclass
class PoleRun:
    """Gradient descent on poles: ``t`` (``step * lr``, ``(T,)``), ``a`` ``(cfg, T)``, ``loss`` ``(cfg, T)``."""

    t: torch.Tensor
    a: torch.Tensor
    loss: torch.Tensor


def train_pole(u: torch.Tensor, y: torch.Tensor, a0: float | Sequence[float] | torch.Tensor,
               w: float | Sequence[float] | torch.Tensor, lr: float, steps: int, record_every: int = 10
               ) -> PoleRun:
    """Gradient descent on the pole ``a`` of a one-state periodic SSM with fixed gain ``w``.

    ``a <- a - lr dL/da`` with :func:`pole_gradient`'s formula, for every configuration of ``a0``
    and ``w`` (scalars or ``(cfg,)``). A pole that leaves ``|a| < 1`` stops there (recorded as NaN).
    """
    positive_float(lr, "lr"), positive_int(steps, "steps"), positive_int(record_every, "record_every")
    U, Y = _spectra(u, y)
    M, L = U.shape
    a = _poles(a0, "a0").to(U.device).clone()
    w_t = torch.as_tensor(w, dtype=torch.float64, device=U.device).reshape(-1).expand_as(a)
    e = _grid(L, U.device)

    def grad_and_loss(a: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        G = 1 / (1 - a[:, None] * e)
        R = w_t[:, None, None] * G[:, None] * U[None] - Y[None]
        g = (R.conj() * w_t[:, None, None] * (e * G ** 2)[:, None] * U[None]).real.sum((-1, -2))
        return g / (M * L * L), 0.5 * R.abs().square().sum((-1, -2)) / (M * L * L)

    g, loss = grad_and_loss(a)
    times, poles, losses = [0.0], [a.clone()], [loss]
    ok = torch.ones_like(a, dtype=torch.bool)
    for step in range(1, steps + 1):
        a = torch.where(ok, a - lr * g, a)
        ok &= a.abs() < 1
        g, loss = grad_and_loss(torch.where(ok, a, torch.zeros_like(a)))
        if step % record_every == 0 or step == steps:
            times.append(step * lr)
            poles.append(torch.where(ok, a, torch.nan))
            losses.append(torch.where(ok, loss, torch.nan))
    return PoleRun(torch.tensor(times, dtype=torch.float64), torch.stack(poles, 1).cpu(),
                   torch.stack(losses, 1).cpu())
