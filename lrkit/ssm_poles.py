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
from dataclasses import dataclass, field

import torch

from ._validate import positive_float, positive_int
from .env import few_threads, float_dtype, to_device_dtype
from .runs import Divergence
from .ssm import check_signal

Poles = float | Sequence[float] | torch.Tensor

__all__ = ["pole_gradient", "pole_curvature", "PoleRun", "train_pole"]


def _grid(L: int, device: torch.device) -> torch.Tensor:
    return torch.exp(-2j * math.pi * torch.arange(L, dtype=float_dtype(device), device=device) / L)


def _poles(a: Poles, device: torch.device, name: str = "a") -> torch.Tensor:
    """``a`` as real poles ``(K,)`` with ``|a| < 1``, checked on the CPU, on ``device`` in its float dtype."""
    t = _cpu64(a)
    if not torch.isfinite(t).all() or bool((t.abs() >= 1).any()):
        raise ValueError(f"{name} must hold real poles with |a| < 1, got {a!r}")
    return to_device_dtype(t, device, float_dtype(device))


def _gains(w: Poles, device: torch.device) -> torch.Tensor:
    return to_device_dtype(_cpu64(w), device, float_dtype(device))


def _cpu64(x: Poles) -> torch.Tensor:
    """``x`` flattened, as a float64 CPU tensor (numbers are read in float64, never through float32)."""
    t = x.cpu() if isinstance(x, torch.Tensor) else torch.as_tensor(x, dtype=torch.float64)
    return t.to(torch.float64).reshape(-1)


def _spectra(u: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    u, y = check_signal(u), check_signal(y, "y")
    if u.shape != y.shape:
        raise ValueError(f"u and y must have the same shape, got {tuple(u.shape)} and {tuple(y.shape)}")
    wide = float_dtype(u.device)
    u = u.reshape(-1, u.shape[-1]).to(wide)
    y = y.reshape(-1, y.shape[-1]).to(wide)
    return torch.fft.fft(u), torch.fft.fft(y)


def pole_gradient(u: torch.Tensor, y: torch.Tensor, a: Poles, w: Poles) -> torch.Tensor:
    """``dL/da`` of the one-state periodic SSM with pole ``a`` and gain ``w`` (module docstring), per configuration.

    ``u``, ``y``: ``(..., L)``; ``a`` and ``w``: scalars or ``(K,)``. Returns ``(K,)``, on the CPU.
    """
    U, Y = _spectra(u, y)
    M, L = U.shape
    a_t, w_t = _poles(a, U.device), _gains(w, U.device)
    e = _grid(L, U.device)
    G = 1 / (1 - a_t[:, None] * e)  # (cfg, L)
    dG = e / (1 - a_t[:, None] * e) ** 2
    R = w_t[:, None, None] * G[:, None] * U[None] - Y[None]  # (K, M, L)
    grad: torch.Tensor = (R.conj() * w_t[:, None, None] * dG[:, None] * U[None]).real.sum((-1, -2))
    return (grad / (M * L * L)).cpu()


def pole_curvature(u: torch.Tensor, a: Poles, w: Poles) -> torch.Tensor:
    """``lambda = w^2 / (M L^2) sum_k |U_k|^2 |dG/da(w_k)|^2``: the loss's curvature in ``a`` at a matching teacher."""
    u = check_signal(u)
    U = torch.fft.fft(u.reshape(-1, u.shape[-1]).to(float_dtype(u.device)))
    M, L = U.shape
    a_t, w_t = _poles(a, U.device), _gains(w, U.device)
    e = _grid(L, U.device)
    dG2 = (1 / (1 - a_t[:, None] * e) ** 2).abs().square()  # |dG/da|^2, (K, L)
    power = U.abs().square().sum(0)  # (L,)
    curvature: torch.Tensor = w_t ** 2 * (dG2 * power).sum(-1) / (M * L * L)
    return curvature.cpu()


@dataclass
class PoleRun:
    """Gradient descent on poles, on the CPU: ``t`` (``step * lr``, ``(T,)``), ``a`` ``(K, T)``, ``loss``
    ``(K, T)``; ``diverged`` ``(K,)``: the pole left ``|a| < 1`` (non-finite from then on), at step
    ``diverged_at`` (-1: never); ``final``: the last recorded loss (:class:`lrkit.runs.RunResult`)."""

    t: torch.Tensor
    a: torch.Tensor
    loss: torch.Tensor
    diverged: torch.Tensor = field(default_factory=lambda: torch.zeros(0, dtype=torch.bool))
    diverged_at: torch.Tensor = field(default_factory=lambda: torch.zeros(0, dtype=torch.long))

    @property
    def final(self) -> torch.Tensor:
        """The last recorded loss per configuration (NaN when diverged)."""
        return self.loss[:, -1]


def train_pole(u: torch.Tensor, y: torch.Tensor, a0: Poles, w: Poles, lr: float, steps: int, record_every: int = 10
               ) -> PoleRun:
    """Gradient descent on the pole ``a`` of a one-state periodic SSM with fixed gain ``w``.

    ``a <- a - lr dL/da`` with :func:`pole_gradient`'s formula, for every configuration of ``a0``
    and ``w`` (scalars or ``(K,)``), on ``u``'s device. A pole that leaves ``|a| < 1`` stops there
    (recorded as NaN, flagged as diverged: :mod:`lrkit.runs`); nothing is read back inside the loop.
    """
    positive_float(lr, "lr"), positive_int(steps, "steps"), positive_int(record_every, "record_every")
    U, Y = _spectra(u, y)
    M, L = U.shape
    a = _poles(a0, U.device, "a0").clone()
    w_t = _gains(w, U.device).expand_as(a)
    e = _grid(L, U.device)

    def grad_and_loss(a: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        G = 1 / (1 - a[:, None] * e)
        R = w_t[:, None, None] * G[:, None] * U[None] - Y[None]
        g = (R.conj() * w_t[:, None, None] * (e * G ** 2)[:, None] * U[None]).real.sum((-1, -2))
        return g / (M * L * L), 0.5 * R.abs().square().sum((-1, -2)) / (M * L * L)

    g, loss = grad_and_loss(a)
    times, poles, losses = [0.0], [a.clone()], [loss]
    div = Divergence(a.numel(), blowup=math.inf, device=a.device, start=0.0)  # only |a| >= 1 diverges
    stable = torch.zeros_like(a)
    with few_threads(a.device):
        for step in range(1, steps + 1):
            a = div.keep(a - lr * g, a)
            div.update(torch.where(a.abs() < 1, stable, math.inf), step)
            g, loss = grad_and_loss(torch.where(div.alive, a, stable))
            if step % record_every == 0 or step == steps:
                times.append(step * lr)
                poles.append(div.mask(a))
                losses.append(div.mask(loss))
    return PoleRun(torch.tensor(times, dtype=a.dtype), torch.stack(poles, 1).cpu(), torch.stack(losses, 1).cpu(),
                   ~div.alive.cpu(), div.diverged_at.cpu())
