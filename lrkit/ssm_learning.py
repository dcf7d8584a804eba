"""Learning in linear SSMs with fixed poles (Chapter 3): gradient descent on ``B`` and ``C``.

The model ``x_t = A x_{t-1} + B u_t``, ``y_t = C^T x_t`` with a fixed diagonal ``A`` predicts
``yhat = sum_n C_n B_n z_n``, where ``z_n`` is the input filtered by the pole ``A_n``
(``G_n(w) = 1 / (1 - A_n e^{-iw})``, periodic sequences). The loss per time step
``1/(2ML) sum (y - yhat)^2`` is quadratic in the products ``w_n = C_n B_n``:

    L(w) = 1/2 w^T Gram w - sigma^T w + const,
    sigma_n = mean(y z_n) = 1/(M L^2) sum_k Re[Y_k conj(G_n U_k)],
    Gram_nm = mean(z_n z_m) = 1/(M L^2) sum_k Re[G_n conj(G_m)] |U_k|^2      (feature_statistics)

so distinct fixed poles make the SSM a *diagonal* two-layer linear network on correlated,
filtered features (``w_n = C_n B_n``), and one shared pole makes it a scalar two-layer network
(``sigma_uy = sigma_n``, ``sigma_uu = Gram_nn``). :func:`train_ssm` runs gradient descent on
``(B, C)`` (optionally with ``C`` frozen); :func:`train_tied` the *tied* parameterisation
``B = b 1_N``, ``C = c 1_N`` (one shared scalar each; ours, see Chapter 3), whose gain is ``N b c``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch

from ._validate import positive_float, positive_int
from .env import few_threads, float_dtype, to_device_dtype
from .runs import Divergence
from .ssm import check_signal, check_ssm_params, filtered_input, transfer_function

__all__ = ["SSMRun", "train_ssm", "train_tied", "feature_statistics", "SCHEMES", "latent_half_time",
           "isolated_half_times"]


def _pair(u: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    u, y = check_signal(u), check_signal(y, "y")
    if u.shape != y.shape:
        raise ValueError(f"u and y must have the same shape, got {tuple(u.shape)} and {tuple(y.shape)}")
    wide = float_dtype(u.device)
    return u.reshape(-1, u.shape[-1]).to(wide), y.reshape(-1, y.shape[-1]).to(wide)


def feature_statistics(u: torch.Tensor, y: torch.Tensor, poles: Sequence[float] | torch.Tensor
                       ) -> tuple[torch.Tensor, torch.Tensor]:
    """``(sigma, Gram)`` of the filtered features ``z_n``, from the DFTs (periodic model).

    ``u``, ``y``: ``(..., L)``; ``poles``: ``(N,)`` real with ``|a_n| < 1``. Returns ``sigma`` ``(N,)``
    (``mean(y z_n)``) and ``Gram`` ``(N, N)`` (``mean(z_n z_m)``); the best products are
    ``Gram^{-1} sigma``. For one pole this is :func:`lrkit.ssm.frequency_statistics`.
    """
    u, y = _pair(u, y)
    a = torch.as_tensor(poles, dtype=torch.float64).reshape(-1)
    check_ssm_params(a, a, a)
    M, L = u.shape
    one = torch.ones(1, dtype=torch.float64)
    G = torch.stack([transfer_function(a[n:n + 1], one, one, L) for n in range(a.numel())])
    G = to_device_dtype(G, u.device, torch.complex128)
    GU = G[:, None, :] * torch.fft.fft(u)[None]  # (N, M, L)
    Y = torch.fft.fft(y)
    sigma = (Y[None] * GU.conj()).real.sum((-1, -2)) / (M * L * L)
    gram = torch.einsum("nmk,pmk->np", GU, GU.conj()).real / (M * L * L)
    return sigma.cpu(), gram.cpu()


@dataclass
class SSMRun:
    """A batch of SSM training runs, on the CPU: ``t`` (``step * lr``, ``(T,)``), ``product``
    ``w = sum_n C_n B_n`` ``(K, T)``, ``products`` per state ``C_n B_n`` ``(K, T, N)``, ``loss`` per time
    step ``(K, T)``, final ``B`` and ``C`` ``(K, N)``, ``diverged`` ``(K,)`` and ``diverged_at`` ``(K,)``
    (the step, -1 if never; the rule of :mod:`lrkit.runs`, checked at the recorded steps); ``final``:
    the last recorded loss (NaN when diverged)."""

    t: torch.Tensor
    product: torch.Tensor
    products: torch.Tensor
    loss: torch.Tensor
    B: torch.Tensor
    C: torch.Tensor
    diverged: torch.Tensor
    diverged_at: torch.Tensor = field(default_factory=lambda: torch.zeros(0, dtype=torch.long))

    @property
    def final(self) -> torch.Tensor:
        """The last recorded loss per configuration (NaN when diverged): :class:`lrkit.runs.RunResult`."""
        return self.loss[:, -1]


def train_ssm(u: torch.Tensor, y: torch.Tensor, A: torch.Tensor, B0: torch.Tensor, C0: torch.Tensor, lr: float,
              steps: int, periodic: bool = True, record_every: int = 10, freeze_C: bool = False) -> SSMRun:
    """Gradient descent on ``(B, C)`` (``A`` fixed) of the time-domain loss ``1/(2ML) sum (y - yhat)^2``.

    ``u``, ``y``: ``(M, L)`` (or ``(L,)``); ``A``, ``B0``, ``C0``: ``(K, N)`` for ``K`` configurations
    trained at once (or ``(N,)`` for one). With ``A`` fixed the state is ``x_{t,n} = B_n z_{t,n}``,
    ``z_n`` = the input filtered by pole ``A_n`` (computed once), so ``yhat = sum_n C_n B_n z_n`` and
    ``dL/dB_n = C_n mean(z_n r)``, ``dL/dC_n = B_n mean(z_n r)``, ``r = yhat - y``. ``freeze_C``
    keeps ``C`` at ``C0`` (only ``B`` learns). Runs on ``u``'s device in its :func:`lrkit.env.float_dtype`;
    diverged configurations are frozen and flagged (:mod:`lrkit.runs`), nothing is read back inside the loop.
    """
    positive_float(lr, "lr"), positive_int(steps, "steps"), positive_int(record_every, "record_every")
    u, y = _pair(u, y)
    A, B, C = (p.cpu().to(torch.float64) if isinstance(p, torch.Tensor) else torch.as_tensor(p, dtype=torch.float64)
               for p in (A, B0, C0))
    A, B, C = (p.unsqueeze(0) if p.ndim == 1 else p for p in (A, B, C))
    if not (A.ndim == 2 and A.shape == B.shape == C.shape):
        raise ValueError(f"A, B0 and C0 must share one shape (K, N) or (N,), got {tuple(A.shape)}, "
                         f"{tuple(B.shape)}, {tuple(C.shape)}")
    for row in A:
        check_ssm_params(row, row, row)  # stability and finiteness of every pole
    dev = u.device
    B, C = (to_device_dtype(p, dev, u.dtype).clone() for p in (B, C))  # u: float_dtype(dev), by _pair
    filt = {p: filtered_input(p, u, periodic) for p in sorted(set(A.flatten().tolist()))}
    z = torch.stack([torch.stack([filt[float(p)] for p in row]) for row in A])  # (K, N, M, L)
    prods, losses, B, C, div = _descend(z, y, B, C, lr, steps, record_every, freeze_C)
    times = [0.0] + [step * lr for step in range(1, steps + 1) if step % record_every == 0 or step == steps]
    products = prods.cpu()
    return SSMRun(torch.tensor(times, dtype=products.dtype), products.sum(-1), products, losses.cpu(), B.cpu(),
                  C.cpu(), ~div.alive.cpu(), div.diverged_at.cpu())


def _descend(z: torch.Tensor, y: torch.Tensor, B: torch.Tensor, C: torch.Tensor, lr: float, steps: int,
             record_every: int, freeze_C: bool
             ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, Divergence]:
    """The loop of :func:`train_ssm`, all on the device: ``(products (K, T, N), loss (K, T), B, C, divergence)``."""

    def predict(B: torch.Tensor, C: torch.Tensor) -> torch.Tensor:
        return ((C * B)[..., None, None] * z).sum(1)

    def loss_of(r: torch.Tensor) -> torch.Tensor:
        return 0.5 * r.square().mean((-1, -2))

    r = predict(B, C) - y
    prods, losses = [C * B], [loss_of(r)]
    div = Divergence(B.shape[0], blowup=1e6, device=B.device, start=losses[0].clamp_min(1e-12))
    with few_threads(B.device, 4.0 * z.numel()):
        for step in range(1, steps + 1):
            g = (z * r.unsqueeze(1)).mean((-1, -2))  # mean(z_n r), (K, N)
            B_new, C_new = B - lr * C * g, (C if freeze_C else C - lr * B * g)
            B, C = div.keep(B_new, B), div.keep(C_new, C)      # a diverged configuration stays frozen
            r = predict(B, C) - y
            if step % record_every == 0 or step == steps:
                loss = loss_of(r)
                div.update(loss, step)                          # no host synchronisation
                prods.append(div.mask(C * B))
                losses.append(div.mask(loss))
    return torch.stack(prods, 1), torch.stack(losses, 1), B, C, div


def train_tied(u: torch.Tensor, y: torch.Tensor, a: float, N: Sequence[int], b0: Sequence[float],
               c0: Sequence[float], lr: float, steps: int, freeze_c: bool = False, record_every: int = 10
               ) -> SSMRun:
    """Gradient descent on the *tied* SSM ``A = a I_N``, ``B = b 1_N``, ``C = c 1_N`` (one scalar each).

    The output is ``N b c z`` (``z`` the input filtered by ``a``), so ``dL/db = N c mean(z r)`` and
    ``dL/dc = N b mean(z r)``, ``r = N b c z - y``. One configuration per entry of ``N``, ``b0``,
    ``c0`` (equal lengths); ``freeze_c`` keeps ``c = c0``. ``product`` records the gain ``N b c``.
    The loss is quadratic in the gain, so the loop runs on the CPU on ``(K,)`` scalars, with
    :mod:`lrkit.runs`' divergence rule at the recorded steps.
    """
    positive_float(lr, "lr"), positive_int(steps, "steps"), positive_int(record_every, "record_every")
    u, y = _pair(u, y)
    if isinstance(a, bool) or not isinstance(a, (int, float)) or not abs(a) < 1:
        raise ValueError(f"a must be a real pole with |a| < 1, got {a!r}")
    n = torch.as_tensor(list(N), dtype=torch.float64)
    b, c = (torch.as_tensor(list(v), dtype=torch.float64) for v in (b0, c0))
    if not (n.shape == b.shape == c.shape) or n.ndim != 1 or bool((n < 1).any()):
        raise ValueError("N, b0 and c0 must be sequences of the same length, with every N >= 1")
    z = filtered_input(float(a), u, True)  # (M, L)
    zz, zy, yy = float(z.square().mean()), float((z * y).mean()), float(y.square().mean())

    def loss_of(gain: torch.Tensor) -> torch.Tensor:
        return 0.5 * (zz * gain ** 2 - 2 * zy * gain + yy)

    times, gains, losses = [0.0], [n * b * c], [loss_of(n * b * c)]
    div = Divergence(n.numel(), blowup=1e6, start=losses[0].clamp_min(1e-12))
    with few_threads(n.device):
        for step in range(1, steps + 1):
            g = zz * n * b * c - zy  # mean(z r)
            b_new, c_new = b - lr * n * c * g, (c if freeze_c else c - lr * n * b * g)
            b, c = div.keep(b_new, b), div.keep(c_new, c)     # a diverged configuration stays frozen
            if step % record_every == 0 or step == steps:
                gain = n * b * c
                div.update(loss_of(gain), step)
                times.append(step * lr)
                gains.append(div.mask(gain))
                losses.append(div.mask(loss_of(gain)))
    gain_t = torch.stack(gains, 1)
    return SSMRun(torch.tensor(times, dtype=torch.float64), gain_t, gain_t[..., None], torch.stack(losses, 1),
                  b[:, None], c[:, None], ~div.alive, div.diverged_at)


SCHEMES = ("tied balanced", "tied frozen", "untied frozen", "untied balanced")


def latent_half_time(N: int | Sequence[int] | torch.Tensor, sigma_uy: float, sigma_uu: float, scheme: str,
                     w0: float = 1e-3, c0: float = 0.1) -> torch.Tensor:
    """Half-learning time of ``N`` states sharing one fixed pole, by parameterisation (our derivations).

    ``s = sigma_uy / sigma_uu``. ``"tied balanced"`` (``B = b 1``, ``C = c 1``, ``b = c``, gain ``w0`` at
    the start): ``ln((s - w0)/w0) / (2 N sigma_uy)``; ``"tied frozen"`` (``c = c0`` fixed, ``b`` from 0):
    ``ln 2 / (N^2 c0^2 sigma_uu)``; ``"untied frozen"`` (``C_n = c0``, ``B_n`` from 0):
    ``ln 2 / (N c0^2 sigma_uu)``; ``"untied balanced"`` (``B_n = C_n = sqrt(w0)``):
    ``ln((s - N w0)/(N w0)) / (2 sigma_uy)``.
    """
    if scheme not in SCHEMES:
        raise ValueError(f"scheme must be one of {SCHEMES}, got {scheme!r}")
    n = torch.as_tensor(N, dtype=torch.float64)
    if bool((n < 1).any()):
        raise ValueError(f"N must be >= 1, got {N!r}")
    suy, suu = float(sigma_uy), float(sigma_uu)
    if not (suu > 0 and math.isfinite(suy) and suy / suu > 0):
        raise ValueError("need sigma_uu > 0 and s = sigma_uy / sigma_uu > 0")
    s = suy / suu
    positive_float(w0, "w0"), positive_float(c0, "c0")
    if scheme == "tied balanced":
        return torch.log(torch.tensor((s - w0) / w0, dtype=torch.float64)) / (2 * n * suy)
    if scheme == "tied frozen":
        return math.log(2) / (n ** 2 * c0 ** 2 * suu)
    if scheme == "untied frozen":
        return math.log(2) / (n * c0 ** 2 * suu)
    return torch.log((s - n * w0) / (n * w0)) / (2 * suy)


def isolated_half_times(sigma: torch.Tensor, gram: torch.Tensor, B0: torch.Tensor, C0: torch.Tensor
                        ) -> torch.Tensor:
    """Half-learning time of each state of a distinct-pole SSM as an isolated unbalanced mode.

    State ``n``: strength ``s_n = sigma_n / Gram_nn``, time constant ``1 / Gram_nn``, imbalance
    ``B_n^2 - C_n^2``, start ``B_n C_n`` (:func:`lrkit.deep_linear.unbalanced_time` to ``s_n / 2``).
    The first state to be learned from a small start is ``argmin`` (Chapter 3). A state that can
    never leave zero (``s_n = 0``, or balanced with ``B_n C_n s_n <= 0``: a saddle) gets ``inf``.
    """
    from .deep_linear_unbalanced import unbalanced_time

    sig = torch.as_tensor(sigma, dtype=torch.float64).reshape(-1)
    g = torch.as_tensor(gram, dtype=torch.float64)
    b, c = (torch.as_tensor(v, dtype=torch.float64).reshape(-1) for v in (B0, C0))
    if not (g.shape == (sig.numel(), sig.numel()) and b.shape == c.shape == sig.shape):
        raise ValueError("sigma (N,), gram (N, N), B0 (N,) and C0 (N,) must match")
    d = torch.diagonal(g)
    s = sig / d
    out = torch.full_like(s, math.inf)  # a balanced state on the saddle (c = 0, u0 s <= 0) never leaves it
    for n in range(sig.numel()):
        u0, imb = b[n] * c[n], b[n] ** 2 - c[n] ** 2
        if s[n] != 0 and not (imb == 0 and u0 * s[n] <= 0):
            out[n] = unbalanced_time(u0, s[n] / 2, s[n], imb, tau=float(1 / d[n]))
    return out
