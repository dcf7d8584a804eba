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

Saxe's two-layer system with mode strength ``s = sigma_uy / sigma_uu``; a balanced mode escapes
from ``w0`` at the rate ``2 sigma_uy`` (half-time ``ln((s - w0)/w0) / (2 sigma_uy)``).

Learning lives in :mod:`lrkit.ssm_learning` (gradient descent on ``B, C``, tied parameters,
distinct poles as a diagonal network on correlated features) and :mod:`lrkit.ssm_poles`
(the gradient of a trained pole); their public names are re-exported here.
"""

from __future__ import annotations

import math

import torch

from ._validate import as_real, positive_int
from .env import complex_dtype, few_threads, float_dtype, generator, get_device, to_device_dtype

__all__ = [
    "ssm_scan", "ssm_kernel", "transfer_function", "ssm_fft", "filtered_input", "frequency_statistics",
    "time_statistics", "colored_noise", "check_ssm_params", "check_signal",
]  # plus, lazily, the learning names of lrkit.ssm_learning and lrkit.ssm_poles (see __getattr__)


# --------------------------------------------------------------------------- validation
def check_ssm_params(A: torch.Tensor, B: torch.Tensor, C: torch.Tensor
                     ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``A``, ``B``, ``C`` as vectors ``(N,)`` of one shape, finite, with ``|A_n| < 1``.

    In float64 (float32 on MPS), on the device they are on.
    """
    ts = []
    for name, p in (("A", A), ("B", B), ("C", C)):
        p = to_device_dtype(torch.as_tensor(p), dtype=torch.float64)
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


def check_signal(u: torch.Tensor, name: str = "u") -> torch.Tensor:
    """``u`` if it is a real, finite tensor of shape ``(..., L)``, ``L >= 1``; an error naming ``name`` otherwise."""
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
    A, B, C = check_ssm_params(A, B, C)
    u = check_signal(u)
    if not u.is_floating_point():  # an integer signal would round the poles (review row 227)
        u = u.to(torch.get_default_dtype())
    A, B, C = (to_device_dtype(p, u.device, u.dtype) for p in (A, B, C))
    L = u.shape[-1]
    x = torch.zeros(*u.shape[:-1], A.numel(), dtype=u.dtype, device=u.device)
    if periodic:
        powers = A ** torch.arange(L - 1, -1, -1, device=u.device, dtype=u.dtype).unsqueeze(-1)  # (L, N)
        x = (u.unsqueeze(-1) * powers).sum(-2) * B / (1 - A ** L)
    ys = []
    with few_threads(u.device):
        for t in range(L):
            x = A * x + B * u[..., t:t + 1]
            ys.append((x * C).sum(-1))
    return torch.stack(ys, -1)


def ssm_kernel(A: torch.Tensor, B: torch.Tensor, C: torch.Tensor, length: int) -> torch.Tensor:
    """The convolution kernel ``K_l = sum_n C_n A_n^l B_n`` for ``l = 0..length-1``, shape ``(length,)``."""
    A, B, C = check_ssm_params(A, B, C)
    l = torch.arange(positive_int(length, "length"), dtype=A.dtype, device=A.device).unsqueeze(-1)
    return (C * B * A ** l).sum(-1)


def transfer_function(A: torch.Tensor, B: torch.Tensor, C: torch.Tensor, length: int) -> torch.Tensor:
    """``H(w_k) = sum_n C_n B_n / (1 - A_n e^{-i w_k})`` on the DFT grid ``w_k = 2 pi k / L``, ``k = 0..L-1``.

    Complex, shape ``(L,)``. It is the DFT of the *periodised* kernel; the DFT of the kernel truncated
    to ``L`` taps is ``sum_n C_n B_n (1 - A_n^L) / (1 - A_n e^{-i w_k})``.
    """
    A, B, C = check_ssm_params(A, B, C)
    L = positive_int(length, "length")
    w = 2 * math.pi * torch.arange(L, dtype=A.dtype, device=A.device) / L
    z = torch.exp(-1j * w).unsqueeze(-1)  # (L, 1)
    cplx = complex_dtype(A.device)
    return ((C * B).to(cplx) / (1 - A.to(cplx) * z)).sum(-1)


def ssm_fft(A: torch.Tensor, B: torch.Tensor, C: torch.Tensor, u: torch.Tensor, periodic: bool = False
            ) -> torch.Tensor:
    """The SSM's output computed by FFT; equals :func:`ssm_scan` with the same ``periodic`` flag.

    Causal (``periodic=False``): zero-pad kernel and input to ``2L`` so the circular convolution of
    the FFT is the linear one, then keep the first ``L`` outputs. Periodic: ``y = IDFT(H U)`` with
    :func:`transfer_function`. ``u`` ``(..., L)`` -> ``y`` ``(..., L)``.
    """
    u = check_signal(u)
    if not u.is_floating_point():  # the output is returned in u's dtype (review row 228)
        u = u.to(torch.get_default_dtype())
    L, wide = u.shape[-1], float_dtype(u.device)
    y: torch.Tensor
    if periodic:
        H = to_device_dtype(transfer_function(A, B, C, L)[: L // 2 + 1], u.device, torch.complex128)
        y = torch.fft.irfft(H * torch.fft.rfft(u.to(wide)), n=L)
        return y.to(u.dtype)
    kernel = to_device_dtype(ssm_kernel(A, B, C, L), u.device, wide)
    n = 2 * L
    y = torch.fft.irfft(torch.fft.rfft(kernel, n=n) * torch.fft.rfft(u.to(wide), n=n), n=n)
    return y[..., :L].to(u.dtype)


def filtered_input(a: float, u: torch.Tensor, periodic: bool = True) -> torch.Tensor:
    """``z = g * u`` with ``g_l = a^l``: the SSM's output for ``B = C = 1`` (one state, pole ``a``)."""
    pole = as_real(a, "a", "a real number with |a| < 1 (a stable pole)")
    if not math.isfinite(pole) or abs(pole) >= 1:
        raise ValueError(f"a must be a real number with |a| < 1 (a stable pole), got {a!r}")
    one = torch.ones(1, dtype=torch.float64)
    return ssm_fft(torch.tensor([pole], dtype=torch.float64), one, one, u, periodic=periodic)


# --------------------------------------------------------------------------- sufficient statistics
def _check_pair(u: torch.Tensor, y: torch.Tensor, a: float) -> float:
    check_signal(u), check_signal(y, "y")
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
    one, wide = torch.ones(1, dtype=torch.float64), float_dtype(u.device)
    G = to_device_dtype(transfer_function(torch.tensor([a], dtype=torch.float64), one, one, L), u.device,
                        torch.complex128)
    GU = G * torch.fft.fft(u.to(wide))
    Y = torch.fft.fft(y.to(wide))
    sigma_uy = (Y * GU.conj()).real.sum() / (M * L * L)
    sigma_uu = GU.abs().square().sum() / (M * L * L)
    return float(sigma_uy), float(sigma_uu)


def time_statistics(u: torch.Tensor, y: torch.Tensor, a: float, periodic: bool = True) -> tuple[float, float]:
    """``(sigma_uy, sigma_uu) = (mean(y z), mean(z^2))`` in the time domain, ``z`` = :func:`filtered_input`.

    With ``periodic=True`` this equals :func:`frequency_statistics` (Parseval).
    """
    a = _check_pair(u, y, a)
    wide = float_dtype(u.device)
    z = filtered_input(a, u.to(wide), periodic)
    return float((y.to(wide) * z).mean()), float(z.square().mean())


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
    with few_threads(u.device):
        for t in range(1, L):
            u[:, t] = rho * u[:, t - 1] + c * e[:, t]
    return to_device_dtype(u, get_device())  # drawn on the CPU in float64: the same on every device




_LEARNING = {"SSMRun", "train_ssm", "train_tied", "feature_statistics", "SCHEMES", "latent_half_time",
             "isolated_half_times"}
_POLES = {"PoleRun", "pole_gradient", "pole_curvature", "train_pole"}


def __getattr__(name: str) -> object:
    """Re-export the learning names of :mod:`lrkit.ssm_learning` and :mod:`lrkit.ssm_poles` (lazily: no cycle)."""
    if name in _LEARNING:
        from . import ssm_learning
        return getattr(ssm_learning, name)
    if name in _POLES:
        from . import ssm_poles
        return getattr(ssm_poles, name)
    raise AttributeError(f"module 'lrkit.ssm' has no attribute {name!r}")
