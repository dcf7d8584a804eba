"""Linear state-space models in the time and frequency domains (Chapter 3).

A single-input single-output SSM with a diagonal state matrix (after Smékal et al. 2024):

    x_t = A x_{t-1} + B u_t,     y_t = C x_t,       A, B, C in R^N (A diagonal, |A_n| < 1).

**Convolution.** With zero initial state, ``y_t = sum_{l >= 0} K_l u_{t-l}``, with kernel
``K_l = sum_n C_n A_n^l B_n`` (:func:`ssm_kernel`); :func:`ssm_fft` computes it by FFT with
zero padding to ``2L`` (a linear, causal convolution) and agrees with the recurrence
:func:`ssm_scan` to float round-off.

**Periodic inputs and the transfer function.** If each length-``L`` sequence is one period of
a periodic input (``periodic=True``: the state starts in its periodic steady state), the
convolution is circular and the DFT diagonalises it *exactly*:

    Y_k = H(w_k) U_k,   H(w) = sum_n C_n B_n / (1 - A_n e^{-i w}),   w_k = 2 pi k / L

(:func:`transfer_function`; ``H`` is the DTFT of the infinite kernel sampled on the DFT grid).
The causal and periodic outputs differ only in a start-up transient of length ~``1/(1-|A|)``.

**Learning with A fixed.** With ``A_n = a`` for every ``n`` the prediction is ``w z`` with
``w = sum_n C_n B_n`` and ``z`` the input filtered by ``G(w) = 1 / (1 - a e^{-i w})``. The loss
per time step, ``1/(2ML) sum (y - w z)^2`` over ``M`` sequences, is quadratic in ``w``:

    L(w) = sigma_uu/2 w^2 - sigma_uy w + const,
    sigma_uy = 1/(M L^2) sum_seq sum_k Re[Y_k conj(G_k U_k)],   sigma_uu = 1/(M L^2) sum_seq sum_k |G_k U_k|^2

(:func:`frequency_statistics`; the paper calls them sigma and eta, the course keeps eta for
learning rates). By Parseval ``sigma_uy = mean(y z)`` and ``sigma_uu = mean(z^2)``
(:func:`time_statistics`). Gradient descent with learning rate ``lr`` on ``(B_n, C_n)``, in the
time ``t = lr * step``, follows the gradient flow

    C_n' = B_n (sigma_uy - sigma_uu w),    B_n' = C_n (sigma_uy - sigma_uu w),

Saxe's two-layer system with mode strength ``s = sigma_uy / sigma_uu`` and time constant
``1 / sigma_uu``; :func:`train_ssm` runs it on the time-domain loss.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
import torch

from ._validate import positive_float, positive_int
from .env import generator, get_device, resolve_scale

__all__ = [
    "sizes",    "ssm_scan", "ssm_kernel", "transfer_function", "ssm_fft", "filtered_input", "frequency_statistics",
    "time_statistics", "colored_noise", "SSMRun", "train_ssm",
]


def sizes(scale: str | None = None) -> dict[str, object]:
    """Experiment sizes of Chapter 3 for ``scale`` (default :func:`lrkit.get_scale`)."""
    scale = resolve_scale(scale)
    if scale == "small":
        return dict(length=512, n_seq=1, a=0.9, teacher=1.5, lr=1e-3, steps=3000, b0=0.01, states=(1, 2, 4, 8, 16),
                    rhos=(-0.8, 0.0, 0.8), teacher_pole=0.5, colour_steps=8000)
    return dict(length=4096, n_seq=16, a=0.9, teacher=1.5, lr=1e-3, steps=3000, b0=0.01,
                states=(1, 2, 4, 8, 16, 32, 64, 128, 256), rhos=(-0.9, -0.5, 0.0, 0.5, 0.9), teacher_pole=0.5,
                colour_steps=4000)


# --------------------------------------------------------------------------- validation
def _params(A: torch.Tensor, B: torch.Tensor, C: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    ts = []
    for name, p in (("A", A), ("B", B), ("C", C)):
        p = torch.as_tensor(p).to(torch.float64)
        if p.ndim == 0:
            p = p.reshape(1)
        if p.ndim != 1:
            raise ValueError(f"{name} must be a vector of the N diagonal entries (shape (N,)), got shape "
                             f"{tuple(p.shape)}")
        if not torch.isfinite(p).all():
            raise ValueError(f"{name} must be finite")
        ts.append(p)
    A, B, C = ts
    if not (A.shape == B.shape == C.shape):
        raise ValueError(f"A, B and C must have the same shape (N,), got {tuple(A.shape)}, {tuple(B.shape)}, "
                         f"{tuple(C.shape)}")
    if bool((A.abs() >= 1).any()):
        raise ValueError(f"A must be stable: every |A_n| < 1, got max |A_n| = {A.abs().max().item():.4g}")
    return A, B, C


def _signal(u: torch.Tensor, name: str = "u") -> torch.Tensor:
    if not isinstance(u, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor of shape (..., L), got {type(u).__name__}")
    if u.ndim < 1 or u.shape[-1] < 1:
        raise ValueError(f"{name} must have shape (..., L) with L >= 1, got {tuple(u.shape)}")
    if u.is_complex() or not torch.isfinite(u).all():
        raise ValueError(f"{name} must be real and finite")
    return u


# --------------------------------------------------------------------------- the model
def ssm_scan(A: torch.Tensor, B: torch.Tensor, C: torch.Tensor, u: torch.Tensor, periodic: bool = False
             ) -> torch.Tensor:
    """The recurrence ``x_t = A x_{t-1} + B u_t``, ``y_t = C x_t`` (the definition), one step at a time.

    ``u`` has shape ``(..., L)``; returns ``y`` of the same shape. ``periodic=False``: ``x_{-1} = 0``.
    ``periodic=True``: ``x_{-1}`` is the periodic steady state
    ``x_{-1} = sum_l A^{L-1-l} B u_l / (1 - A^L)``, so that ``x_{L-1} = x_{-1}``.
    """
    A, B, C = _params(A, B, C)
    u = _signal(u)
    A, B, C = (p.to(u.device, u.dtype) for p in (A, B, C))
    L = u.shape[-1]
    x = torch.zeros(*u.shape[:-1], A.numel(), dtype=u.dtype, device=u.device)
    if periodic:
        powers = A ** torch.arange(L - 1, -1, -1, device=u.device, dtype=u.dtype).unsqueeze(-1)  # (L, N)
        x = (u.unsqueeze(-1) * powers).sum(-2) * B / (1 - A ** L)
    ys = []
    for t in range(L):
        x = A * x + B * u[..., t:t + 1]
        ys.append((x * C).sum(-1))
    return torch.stack(ys, -1)


def ssm_kernel(A: torch.Tensor, B: torch.Tensor, C: torch.Tensor, length: int) -> torch.Tensor:
    """The convolution kernel ``K_l = sum_n C_n A_n^l B_n`` for ``l = 0..length-1``, shape ``(length,)``."""
    A, B, C = _params(A, B, C)
    l = torch.arange(positive_int(length, "length"), dtype=A.dtype, device=A.device).unsqueeze(-1)
    return (C * B * A ** l).sum(-1)


def transfer_function(A: torch.Tensor, B: torch.Tensor, C: torch.Tensor, length: int) -> torch.Tensor:
    """``H(w_k) = sum_n C_n B_n / (1 - A_n e^{-i w_k})`` on the DFT grid ``w_k = 2 pi k / L``, ``k = 0..L-1``.

    Complex, shape ``(L,)``. It is the DFT of the *periodised* kernel; the DFT of the kernel truncated
    to ``L`` taps is ``sum_n C_n B_n (1 - A_n^L) / (1 - A_n e^{-i w_k})``.
    """
    A, B, C = _params(A, B, C)
    L = positive_int(length, "length")
    w = 2 * math.pi * torch.arange(L, dtype=torch.float64, device=A.device) / L
    z = torch.exp(-1j * w).unsqueeze(-1)  # (L, 1)
    return ((C * B).to(torch.complex128) / (1 - A.to(torch.complex128) * z)).sum(-1)


def ssm_fft(A: torch.Tensor, B: torch.Tensor, C: torch.Tensor, u: torch.Tensor, periodic: bool = False
            ) -> torch.Tensor:
    """The SSM's output computed by FFT; equals :func:`ssm_scan` with the same ``periodic`` flag.

    Causal (``periodic=False``): zero-pad kernel and input to ``2L`` so the circular convolution of
    the FFT is the linear one, then keep the first ``L`` outputs. Periodic: ``y = IDFT(H U)`` with
    :func:`transfer_function`. ``u`` ``(..., L)`` -> ``y`` ``(..., L)``.
    """
    u = _signal(u)
    L = u.shape[-1]
    if periodic:
        H = transfer_function(A, B, C, L)[: L // 2 + 1].to(u.device)
        return torch.fft.irfft(H * torch.fft.rfft(u.to(torch.float64)), n=L).to(u.dtype)
    K = ssm_kernel(A, B, C, L).to(u.device, torch.float64)
    n = 2 * L
    y = torch.fft.irfft(torch.fft.rfft(K, n=n) * torch.fft.rfft(u.to(torch.float64), n=n), n=n)
    return y[..., :L].to(u.dtype)


def filtered_input(a: float, u: torch.Tensor, periodic: bool = True) -> torch.Tensor:
    """``z = g * u`` with ``g_l = a^l``: the SSM's output for ``B = C = 1`` (one state, pole ``a``)."""
    one = torch.ones(1, dtype=torch.float64)
    return ssm_fft(torch.tensor([float(a)], dtype=torch.float64), one, one, u, periodic=periodic)


# --------------------------------------------------------------------------- sufficient statistics
def _check_pair(u: torch.Tensor, y: torch.Tensor, a: float) -> float:
    _signal(u), _signal(y, "y")
    if u.shape != y.shape:
        raise ValueError(f"u and y must have the same shape (..., L), got {tuple(u.shape)} and {tuple(y.shape)}")
    if isinstance(a, bool) or not isinstance(a, (int, float)) or not math.isfinite(a) or abs(a) >= 1:
        raise ValueError(f"a must be a real number with |a| < 1 (a stable pole), got {a!r}")
    return float(a)


def frequency_statistics(u: torch.Tensor, y: torch.Tensor, a: float) -> tuple[float, float]:
    """``(sigma_uy, sigma_uu)`` from the DFTs of input and output, for a student with pole ``a`` (periodic model).

    ``sigma_uy = 1/(M L^2) sum Re[Y_k conj(G_k U_k)]``, ``sigma_uu = 1/(M L^2) sum |G_k U_k|^2`` over the
    ``M`` sequences (all leading axes of ``u`` and ``y``, shape ``(..., L)``) and all ``L`` frequencies,
    ``G_k = 1 / (1 - a e^{-2 pi i k / L})``. The best product is ``w* = sigma_uy / sigma_uu``.
    (Smékal et al. write sigma and eta.)
    """
    a = _check_pair(u, y, a)
    L = u.shape[-1]
    M = u.numel() // L
    one = torch.ones(1, dtype=torch.float64)
    G = transfer_function(torch.tensor([a], dtype=torch.float64), one, one, L).to(u.device)
    GU = G * torch.fft.fft(u.to(torch.float64))
    Y = torch.fft.fft(y.to(torch.float64))
    sigma_uy = (Y * GU.conj()).real.sum() / (M * L * L)
    sigma_uu = GU.abs().square().sum() / (M * L * L)
    return float(sigma_uy), float(sigma_uu)


def time_statistics(u: torch.Tensor, y: torch.Tensor, a: float, periodic: bool = True) -> tuple[float, float]:
    """``(sigma_uy, sigma_uu) = (mean(y z), mean(z^2))`` in the time domain, ``z`` = :func:`filtered_input`.

    With ``periodic=True`` this equals :func:`frequency_statistics` (Parseval).
    """
    a = _check_pair(u, y, a)
    z = filtered_input(a, u.to(torch.float64), periodic)
    return float((y.to(torch.float64) * z).mean()), float(z.square().mean())


def colored_noise(length: int, rho: float = 0.0, n_seq: int = 1, seed: int = 0) -> torch.Tensor:
    """Unit-variance AR(1) noise ``u_t = rho u_{t-1} + sqrt(1 - rho^2) e_t``, shape ``(n_seq, length)``.

    Its power spectrum is ``(1 - rho^2) / |1 - rho e^{-i w}|^2``: white for ``rho = 0``, low-pass for
    ``rho > 0``, high-pass for ``rho < 0``. Stationary from the first sample (``u_0 ~ N(0, 1)``).
    """
    L = positive_int(length, "length")
    if isinstance(rho, bool) or not isinstance(rho, (int, float)) or not abs(rho) < 1:
        raise ValueError(f"rho must be a number with |rho| < 1, got {rho!r}")
    positive_int(n_seq, "n_seq")
    e = torch.randn(n_seq, L, generator=generator(seed), dtype=torch.float64)
    u = torch.empty_like(e)
    u[:, 0] = e[:, 0]
    c = math.sqrt(1 - rho ** 2)
    for t in range(1, L):
        u[:, t] = rho * u[:, t - 1] + c * e[:, t]
    return u.to(get_device())


# --------------------------------------------------------------------------- training
@dataclass
class SSMRun:
    """A batch of SSM training runs: ``t`` (``step * lr``, ``(T,)``), ``product`` ``w = sum_n C_n B_n``
    ``(cfg, T)``, ``loss`` per time step ``(cfg, T)``, final ``B`` and ``C`` ``(cfg, N)``, ``diverged`` ``(cfg,)``."""

    t: torch.Tensor
    product: torch.Tensor
    loss: torch.Tensor
    B: torch.Tensor
    C: torch.Tensor
    diverged: torch.Tensor


def train_ssm(u: torch.Tensor, y: torch.Tensor, A: torch.Tensor, B0: torch.Tensor, C0: torch.Tensor, lr: float,
              steps: int, periodic: bool = True, record_every: int = 10) -> SSMRun:
    """Gradient descent on ``(B, C)`` (``A`` fixed) of the time-domain loss ``1/(2ML) sum (y - yhat)^2``.

    ``u``, ``y``: ``(M, L)`` (or ``(L,)``); ``A``, ``B0``, ``C0``: ``(cfg, N)`` for ``cfg`` configurations
    trained at once (or ``(N,)`` for one). With ``A`` fixed the state is ``x_{t,n} = B_n z_{t,n}``,
    ``z_n`` = the input filtered by pole ``A_n`` (computed once), so ``yhat = sum_n C_n B_n z_n`` and
    ``dL/dB_n = C_n mean(z_n r)``, ``dL/dC_n = B_n mean(z_n r)``, ``r = yhat - y``. Diverged
    configurations are frozen and flagged.
    """
    positive_float(lr, "lr"), positive_int(steps, "steps"), positive_int(record_every, "record_every")
    u, y = _signal(u), _signal(y, "y")
    if u.shape != y.shape:
        raise ValueError(f"u and y must have the same shape, got {tuple(u.shape)} and {tuple(y.shape)}")
    u = u.reshape(-1, u.shape[-1]).to(torch.float64)
    y = y.reshape(-1, y.shape[-1]).to(torch.float64)
    A, B, C = (torch.as_tensor(p, dtype=torch.float64) for p in (A, B0, C0))
    A, B, C = (p.unsqueeze(0) if p.ndim == 1 else p for p in (A, B, C))
    if not (A.ndim == 2 and A.shape == B.shape == C.shape):
        raise ValueError(f"A, B0 and C0 must share one shape (cfg, N) or (N,), got {tuple(A.shape)}, "
                         f"{tuple(B.shape)}, {tuple(C.shape)}")
    for row in A:
        _params(row, row, row)  # stability and finiteness of every pole
    dev = u.device
    A, B, C = A.to(dev), B.to(dev).clone(), C.to(dev).clone()
    # z[c, n] = input filtered by pole A[c, n]: (cfg, N, M, L)
    poles = A.unique()
    filt = {float(p): filtered_input(float(p), u, periodic) for p in poles}
    z = torch.stack([torch.stack([filt[float(p)] for p in row]) for row in A])

    def predict(B: torch.Tensor, C: torch.Tensor) -> torch.Tensor:
        return ((C * B)[..., None, None] * z).sum(1)

    def loss_of(r: torch.Tensor) -> torch.Tensor:
        return 0.5 * r.square().mean((-1, -2))

    r = predict(B, C) - y
    times, prods, losses = [0.0], [(C * B).sum(-1)], [loss_of(r)]
    start = losses[0].clone()
    diverged = torch.zeros(A.shape[0], dtype=torch.bool, device=dev)
    for step in range(1, steps + 1):
        g = (z * r.unsqueeze(1)).mean((-1, -2))  # mean(z_n r), (cfg, N)
        B_new, C_new = B - lr * C * g, C - lr * B * g
        B = torch.where(diverged[:, None], B, B_new)
        C = torch.where(diverged[:, None], C, C_new)
        r = predict(B, C) - y
        if step % record_every == 0 or step == steps:
            loss = loss_of(r)
            diverged |= ~torch.isfinite(loss) | (loss > 1e6 * start.clamp_min(1e-12))
            times.append(step * lr)
            prods.append(torch.where(diverged, torch.nan, (C * B).sum(-1)))
            losses.append(torch.where(diverged, torch.nan, loss))
    return SSMRun(torch.tensor(times, dtype=torch.float64), torch.stack(prods, 1).cpu(), torch.stack(losses, 1).cpu(),
                  B.cpu(), C.cpu(), diverged.cpu())
