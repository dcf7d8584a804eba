"""Deep linear networks: Saxe's exact mode dynamics and their simulation (Chapter 2).

Setting (Saxe, McClelland & Ganguli 2014). A depth-``D`` linear network
``y = W_D ... W_2 W_1 x`` is trained by full-batch gradient descent on the squared loss
with *whitened* inputs (``E[x x^T] = I``). The population loss then depends on the
end-to-end map ``W = W_D ... W_1`` (shape ``(out, in)``) only:

    L(W_1, ..., W_D) = 1/2 ||Sigma31 - W||_F^2 + const,     Sigma31 = E[y x^T] = U S V^T,

where ``Sigma31`` is the input-output correlation and ``S = diag(s_1, s_2, ...)`` its
singular values ("mode strengths"). With learning rate ``lr`` a gradient step is one Euler
step of the gradient flow ``tau dW_l/dt = -dL/dW_l`` with ``tau = 1 / lr`` and ``t = step``.

**Exact mode dynamics (two layers).** From decoupled initial conditions
(``W_1 = R diag(a) V^T``, ``W_2 = U diag(b) R^T``, ``R`` orthogonal) every mode evolves on its
own: ``tau a' = b (s - a b)``, ``tau b' = a (s - a b)``. With ``a = b`` the mode strength
``u = a b = u_alpha^T W v_alpha`` obeys the logistic equation ``tau u' = 2 u (s - u)``:

    u(t) = s e^{2 s t / tau} / (e^{2 s t / tau} - 1 + s / u0)         (saxe_trajectory)

and the time to go from ``u0`` to ``uf`` is

    t(u0 -> uf) = tau / (2 s) * ln[ uf (s - u0) / (u0 (s - uf)) ]    (learning_time),

about ``(tau / s) ln(s / u0)`` for small ``u0``: strong modes are learned first, in stages.

**Deeper networks.** With balanced decoupled conditions (every layer's mode equal to
``a``, ``u = a^D``) the mode obeys ``tau u' = D u^{2 - 2/D} (s - u)`` (Saxe's
``(N_l - 1) u^{2 - 2/(N_l - 1)} (s - u)`` with ``N_l = D + 1`` layers of units), which
:func:`deep_mode_trajectory` integrates numerically (RK4).

Everything is vectorised over a leading *configuration* axis (seeds, initial scales),
runs on :func:`lrkit.get_device`, and flags diverged configurations instead of crashing.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import torch

from ._validate import positive_float, positive_int
from .env import generator, get_device, resolve_scale

__all__ = [
    "sizes", "saxe_trajectory", "learning_time", "deep_mode_trajectory", "deep_learning_time", "DeepLinearRun",
    "mode_target", "decoupled_init", "random_init", "train_deep_linear", "half_times", "gradient_step",
]

Number = float | int
TensorLike = torch.Tensor | Number | Sequence[float]


def sizes(scale: str | None = None) -> dict[str, object]:
    """Experiment sizes of Chapter 2 for ``scale`` (default :func:`lrkit.get_scale`).

    ``small``: an 8-8-8 network (the CPU calibration of CLAIMS.md), a few seconds per experiment.
    ``full``: Saxe et al.'s regime on a GPU: 32 hidden units, 1000-dimensional outputs, ``u0 = 1e-6``,
    16 seeds (strengths are a geometric ladder, not their hierarchical data set).
    """
    scale = resolve_scale(scale)
    if scale == "small":
        return dict(n_in=8, hidden=8, n_out=8, strengths=(5.0, 4.0, 3.0, 2.0, 1.0, 0.5, 0.0, 0.0), lr=1e-3,
                    steps=15000, u0=1e-3, seeds=4, random_scale=3e-3, random_steps=16000, lazy_hidden=1024,
                    lazy_scales=(1e-3, 1.0), lazy_lr=1e-2, lazy_steps=1600, depths=(2, 3, 4), depth_u0=1e-2,
                    depth_steps=10000)
    ladder = tuple(float(5.0 * 0.8 ** i) for i in range(12)) + (0.0,) * 4
    return dict(n_in=32, hidden=32, n_out=1000, strengths=ladder, lr=1e-3, steps=60000, u0=1e-6, seeds=16,
                random_scale=1e-3, random_steps=60000, lazy_hidden=4096, lazy_scales=(1e-3, 1.0), lazy_lr=1e-2,
                lazy_steps=6000, depths=(2, 3, 4, 6), depth_u0=1e-2, depth_steps=40000)


# --------------------------------------------------------------------------- validation
def _tensor(x: TensorLike, name: str, dtype: torch.dtype = torch.float64) -> torch.Tensor:
    if isinstance(x, bool):
        raise TypeError(f"{name} must be a number or a tensor, got bool")
    try:
        t = torch.as_tensor(x, dtype=dtype)
    except (TypeError, ValueError, RuntimeError) as e:
        raise TypeError(f"{name} must be a number, a sequence of numbers or a tensor, got {type(x).__name__}") from e
    if not torch.isfinite(t).all():
        raise ValueError(f"{name} must be finite, got {x!r}")
    return t


def _depth(depth: object) -> int:
    if isinstance(depth, bool) or not isinstance(depth, int):
        raise TypeError(f"depth must be an int >= 2 (the number of weight matrices), got {type(depth).__name__}")
    if depth < 2:
        raise ValueError(f"depth must be >= 2 (the number of weight matrices), got {depth}")
    return depth


def _strengths_and_init(s: TensorLike, u0: TensorLike) -> tuple[torch.Tensor, torch.Tensor]:
    s_t, u0_t = _tensor(s, "s"), _tensor(u0, "u0")
    if bool((s_t <= 0).any()):
        raise ValueError(f"s (mode strength) must be > 0, got {s!r}")
    try:
        s_t, u0_t = torch.broadcast_tensors(s_t, u0_t)
    except RuntimeError as e:
        raise ValueError(f"s and u0 must broadcast together, got shapes {tuple(s_t.shape)} and "
                         f"{tuple(u0_t.shape)}") from e
    if bool(((u0_t <= 0) | (u0_t >= s_t)).any()):
        raise ValueError(f"u0 must lie strictly between 0 and s (the mode is learned from below), got u0={u0!r}, "
                         f"s={s!r}")
    return s_t, u0_t


# --------------------------------------------------------------------------- exact theory
def saxe_trajectory(t: TensorLike, s: TensorLike, u0: TensorLike, tau: Number = 1.0) -> torch.Tensor:
    """Saxe's closed form for a two-layer mode: ``u(t) = s e^{2st/tau} / (e^{2st/tau} - 1 + s/u0)``.

    ``t``, ``s`` and ``u0`` broadcast together (e.g. ``t`` of shape ``(T, 1)`` and ``s`` of shape
    ``(k,)`` give ``(T, k)``); float64 on the CPU. ``s > 0``, ``0 < u0 < s``, ``tau > 0``.
    Written as ``s / (1 + (s/u0 - 1) e^{-2st/tau})``, which never overflows.
    """
    tau = positive_float(tau, "tau")
    t_t = _tensor(t, "t")
    s_t, u0_t = _strengths_and_init(s, u0)
    return s_t / (1.0 + (s_t / u0_t - 1.0) * torch.exp(-2.0 * s_t * t_t / tau))


def learning_time(s: TensorLike, u0: TensorLike, uf: TensorLike, tau: Number = 1.0) -> torch.Tensor:
    """Time for a two-layer mode to go from ``u0`` to ``uf``: ``tau/(2s) ln[uf (s - u0) / (u0 (s - uf))]``.

    Vectorised over broadcastable ``s``, ``u0``, ``uf``; requires ``0 < u0 < s`` and ``0 < uf < s``.
    The half-learning time is ``learning_time(s, u0, s / 2)``.
    """
    tau = positive_float(tau, "tau")
    s_t, u0_t = _strengths_and_init(s, u0)
    uf_t = _tensor(uf, "uf")
    s_t, u0_t, uf_t = torch.broadcast_tensors(s_t, u0_t, uf_t)
    if bool(((uf_t <= 0) | (uf_t >= s_t)).any()):
        raise ValueError(f"uf must lie strictly between 0 and s (s itself is only reached as t -> inf), got uf={uf!r}")
    return tau / (2.0 * s_t) * torch.log(uf_t * (s_t - u0_t) / (u0_t * (s_t - uf_t)))


def deep_mode_trajectory(t: TensorLike, s: TensorLike, u0: TensorLike, depth: int = 2, tau: Number = 1.0,
                         substeps: int = 20) -> torch.Tensor:
    """Mode strength of a balanced depth-``D`` network: solves ``tau u' = D u^{2-2/D} (s - u)`` by RK4.

    ``t`` is a 1-D increasing grid starting at 0, shape ``(T,)``; ``s`` and ``u0`` broadcast to a
    shape ``M``; the result has shape ``(T, *M)``. Each interval of ``t`` is split into
    ``substeps`` RK4 steps. For ``depth = 2`` this reproduces :func:`saxe_trajectory`.
    """
    depth, tau = _depth(depth), positive_float(tau, "tau")
    positive_int(substeps, "substeps")
    t_t = _tensor(t, "t")
    if t_t.ndim != 1 or t_t.numel() < 1 or float(t_t[0]) != 0.0 or bool((t_t.diff() <= 0).any()):
        raise ValueError("t must be a 1-D increasing grid of times starting at 0")
    s_t, u0_t = _strengths_and_init(s, u0)

    def rate(u: torch.Tensor) -> torch.Tensor:
        return depth * u.clamp_min(0.0) ** (2.0 - 2.0 / depth) * (s_t - u) / tau

    out = [u0_t.clone()]
    u = u0_t.clone()
    for dt_total in t_t.diff().tolist():
        h = dt_total / substeps
        for _ in range(substeps):
            k1 = rate(u)
            k2 = rate(u + 0.5 * h * k1)
            k3 = rate(u + 0.5 * h * k2)
            k4 = rate(u + h * k3)
            u = u + h / 6.0 * (k1 + 2 * k2 + 2 * k3 + k4)
        out.append(u.clone())
    return torch.stack(out)


def deep_learning_time(s: TensorLike, u0: TensorLike, uf: TensorLike, depth: int = 2, tau: Number = 1.0,
                       points: int = 4001) -> torch.Tensor:
    """Time from ``u0`` to ``uf`` for ``tau u' = D u^{2-2/D} (s - u)``: ``tau/D * int du / (u^{2-2/D} (s - u))``.

    Computed by Simpson's rule in the variable ``log u`` (exact formula for ``depth = 2``).
    """
    depth, tau = _depth(depth), positive_float(tau, "tau")
    if depth == 2:
        return learning_time(s, u0, uf, tau)
    s_t, u0_t = _strengths_and_init(s, u0)
    s_t, u0_t, uf_t = torch.broadcast_tensors(s_t, u0_t, _tensor(uf, "uf"))
    if bool(((uf_t <= u0_t) | (uf_t >= s_t)).any()):
        raise ValueError("uf must lie strictly between u0 and s")
    n = points + (points + 1) % 2  # odd number of points for Simpson
    x = torch.linspace(0.0, 1.0, n, dtype=torch.float64).reshape(-1, *([1] * s_t.ndim))
    log_u = torch.log(u0_t) + x * (torch.log(uf_t) - torch.log(u0_t))
    u = torch.exp(log_u)
    f = u / (u ** (2.0 - 2.0 / depth) * (s_t - u))  # du = u d(log u)
    w = torch.ones(n, dtype=torch.float64)
    w[1:-1:2], w[2:-1:2] = 4.0, 2.0
    h = (torch.log(uf_t) - torch.log(u0_t)) / (n - 1)
    integral = h / 3.0 * (w.reshape(-1, *([1] * s_t.ndim)) * f).sum(0)
    return tau / depth * integral


# --------------------------------------------------------------------------- simulation
def mode_target(strengths: Sequence[float], out_dim: int | None = None, in_dim: int | None = None, seed: int = 0,
                dtype: torch.dtype = torch.float64) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """A correlation matrix ``Sigma31 = U diag(s) V^T`` with random orthonormal ``U`` (out) and ``V`` (in).

    Returns ``(Sigma31, U, V)`` with shapes ``(out, in)``, ``(out, k)``, ``(in, k)``, ``k = len(strengths)``;
    ``out`` and ``in`` default to ``k``. Strengths must be >= 0 (zero strengths are allowed: nothing to learn).
    """
    s = _tensor(list(strengths), "strengths", dtype)
    if s.ndim != 1 or s.numel() == 0 or bool((s < 0).any()):
        raise ValueError(f"strengths must be a non-empty list of numbers >= 0, got {strengths!r}")
    k = s.numel()
    out_dim, in_dim = out_dim or k, in_dim or k
    if out_dim < k or in_dim < k:
        raise ValueError(f"out_dim and in_dim must be >= len(strengths) = {k}, got {out_dim} and {in_dim}")
    gen = generator(seed)
    U, _ = torch.linalg.qr(torch.randn(out_dim, k, generator=gen, dtype=dtype))
    V, _ = torch.linalg.qr(torch.randn(in_dim, k, generator=gen, dtype=dtype))
    dev = get_device()
    U, V = U.to(dev), V.to(dev)
    return U @ torch.diag(s.to(dev)) @ V.T, U, V


def _dtype_for(device: torch.device, dtype: torch.dtype) -> torch.dtype:
    return torch.float32 if device.type == "mps" else dtype


def decoupled_init(U: torch.Tensor, V: torch.Tensor, u0: TensorLike, depth: int = 2, hidden: int | None = None,
                   seed: int = 0) -> list[torch.Tensor]:
    """Balanced, decoupled weights whose end-to-end map is ``U diag(u0) V^T``.

    Each layer carries the mode with strength ``u0^{1/D}``: ``W_1 = R_1 diag(a) V^T``,
    ``W_l = R_l diag(a) R_{l-1}^T``, ``W_D = U diag(a) R_{D-1}^T`` with random orthonormal
    ``R_l`` of shape ``(hidden, k)``. Returns ``[W_1, ..., W_D]`` (``W_1`` of shape ``(hidden, in)``).
    """
    depth = _depth(depth)
    k = U.shape[1]
    if V.shape[1] != k:
        raise ValueError(f"U and V must have the same number of columns (modes), got {U.shape[1]} and {V.shape[1]}")
    hidden = hidden or k
    if hidden < k:
        raise ValueError(f"hidden must be >= the number of modes {k}, got {hidden}")
    u0_t = _tensor(u0, "u0", U.dtype).to(U.device).expand(k)
    if bool((u0_t <= 0).any()):
        raise ValueError(f"u0 must be > 0, got {u0!r}")
    a = torch.diag(u0_t ** (1.0 / depth))
    gen = generator(seed)
    R = [torch.linalg.qr(torch.randn(hidden, k, generator=gen, dtype=U.dtype))[0].to(U.device)
         for _ in range(depth - 1)]
    left = R + [U]
    right = [V] + R
    return [left[i] @ a @ right[i].T for i in range(depth)]


def random_init(dims: Sequence[int], scale: float, seed: int = 0, dtype: torch.dtype = torch.float64
                ) -> list[torch.Tensor]:
    """Small random weights ``W_l ~ N(0, scale^2 / fan_in)``; ``dims = (in, h_1, ..., out)``."""
    scale = positive_float(scale, "scale")
    if len(dims) < 3 or any(isinstance(d, bool) or not isinstance(d, int) or d < 1 for d in dims):
        raise ValueError(f"dims must list >= 3 positive ints (in, hidden..., out), got {dims!r}")
    gen = generator(seed)
    dev = get_device()
    return [(scale / math.sqrt(dims[i]) * torch.randn(dims[i + 1], dims[i], generator=gen, dtype=dtype)).to(dev)
            for i in range(len(dims) - 1)]


def _product(weights: Sequence[torch.Tensor]) -> torch.Tensor:
    W = weights[0]
    for w in weights[1:]:
        W = w @ W
    return W


def gradient_step(weights: Sequence[torch.Tensor], target: torch.Tensor, lr: float) -> list[torch.Tensor]:
    """One simultaneous gradient-descent step on ``1/2 ||target - W_D ... W_1||_F^2``.

    ``weights = [W_1, ..., W_D]`` (each optionally with a leading batch axis), ``target`` of shape
    ``(..., out, in)``. With ``E = target - W``, ``-dL/dW_l = (W_D..W_{l+1})^T E (W_{l-1}..W_1)^T``;
    every layer's gradient is taken at the *old* weights. Returns new tensors.
    """
    D = len(weights)
    if D < 2:
        raise ValueError(f"weights must hold at least 2 matrices, got {D}")
    prefix = [None] * D  # prefix[l] = W_{l-1} ... W_1 (None for l = 0)
    for l in range(1, D):
        prefix[l] = weights[l - 1] if l == 1 else weights[l - 1] @ prefix[l - 1]
    W = weights[-1] @ prefix[-1]
    if W.shape[-2:] != target.shape[-2:]:
        raise ValueError(f"target must have the end-to-end map's shape {tuple(W.shape[-2:])}, got "
                         f"{tuple(target.shape[-2:])}")
    E = target - W
    new, suffix = [None] * D, None  # suffix = W_D ... W_{l+1}
    for l in range(D - 1, -1, -1):
        g = E if suffix is None else suffix.transpose(-1, -2) @ E
        if prefix[l] is not None:
            g = g @ prefix[l].transpose(-1, -2)
        new[l] = weights[l] + lr * g
        suffix = weights[l] if suffix is None else suffix @ weights[l]
    return new


@dataclass
class DeepLinearRun:
    """A batch of deep-linear training runs.

    ``t``: recorded times in units of ``tau`` (``step * lr``), shape ``(T,)``;
    ``modes``: ``u_alpha(t) = u_alpha^T W(t) v_alpha``, shape ``(C, T, k)``;
    ``loss``: ``1/2 ||Sigma31 - W(t)||_F^2``, shape ``(C, T)``;
    ``diverged``: configurations whose loss became non-finite or exceeded 1e6 times its start, shape ``(C,)``.
    """

    t: torch.Tensor
    modes: torch.Tensor
    loss: torch.Tensor
    diverged: torch.Tensor


def train_deep_linear(target: torch.Tensor, U: torch.Tensor, V: torch.Tensor, weights: Sequence[torch.Tensor],
                      lr: float, steps: int, record_every: int = 10) -> DeepLinearRun:
    """Full-batch gradient descent of a deep linear network with whitened inputs, many configurations at once.

    ``weights = [W_1, ..., W_D]``, each of shape ``(C, n_{l}, n_{l-1})`` (``C`` configurations: seeds,
    initial scales) or without the leading axis (one configuration). ``target = U diag(s) V^T``
    (``(out, in)``), ``U`` ``(out, k)``, ``V`` ``(in, k)``. Every ``record_every`` steps the mode
    strengths ``u_alpha = U[:, alpha]^T W V[:, alpha]`` and the loss are recorded. Diverged
    configurations are frozen and flagged, never a crash.
    """
    lr = positive_float(lr, "lr")
    positive_int(steps, "steps"), positive_int(record_every, "record_every")
    ws = [w if w.ndim == 3 else w.unsqueeze(0) for w in weights]
    C = ws[0].shape[0]
    for i, (a, b) in enumerate(zip(ws[:-1], ws[1:])):
        if b.shape[-1] != a.shape[-2] or b.shape[0] != C:
            raise ValueError(f"weights[{i + 1}] of shape {tuple(b.shape)} does not compose with weights[{i}] of "
                             f"shape {tuple(a.shape)}")
    if target.shape != (ws[-1].shape[-2], ws[0].shape[-1]):
        raise ValueError(f"target must have shape (out, in) = {(ws[-1].shape[-2], ws[0].shape[-1])}, got "
                         f"{tuple(target.shape)}")
    if U.shape[0] != target.shape[0] or V.shape[0] != target.shape[1] or U.shape[1] != V.shape[1]:
        raise ValueError(f"U must be (out, k) and V (in, k) for target {tuple(target.shape)}, got {tuple(U.shape)} "
                         f"and {tuple(V.shape)}")

    def measure(ws: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        W = _product(ws)
        modes = torch.diagonal(U.T @ W @ V, dim1=-2, dim2=-1)  # u_alpha^T W v_alpha, (C, k)
        return modes, 0.5 * (target - W).square().sum((-1, -2))

    times, modes, losses = [0.0], [], []
    m, loss = measure(ws)
    modes.append(m), losses.append(loss)
    start = loss.clone()
    diverged = torch.zeros(C, dtype=torch.bool, device=loss.device)
    for step in range(1, steps + 1):
        new = gradient_step(ws, target, lr)
        ws = [torch.where(diverged[:, None, None], w, n) for w, n in zip(ws, new)]
        if step % record_every == 0 or step == steps:
            m, loss = measure(ws)
            bad = ~torch.isfinite(loss) | (loss > 1e6 * start.clamp_min(1e-12))
            diverged |= bad
            times.append(step * lr)
            modes.append(torch.where(diverged[:, None], torch.nan, m))
            losses.append(torch.where(diverged, torch.nan, loss))
    return DeepLinearRun(torch.tensor(times, dtype=torch.float64), torch.stack(modes, 1).cpu(),
                         torch.stack(losses, 1).cpu(), diverged.cpu())


def half_times(t: torch.Tensor, modes: torch.Tensor, s: TensorLike) -> torch.Tensor:
    """First time each mode reaches half its strength, ``u_alpha(t) >= s_alpha / 2``, by linear interpolation.

    ``t`` ``(T,)``, ``modes`` ``(..., T, k)``, ``s`` ``(k,)``; NaN where a mode never gets there.
    """
    s_t = _tensor(s, "s").to(modes.dtype)
    if modes.shape[-1] != s_t.numel() or modes.shape[-2] != t.numel():
        raise ValueError(f"modes must have shape (..., T={t.numel()}, k={s_t.numel()}), got {tuple(modes.shape)}")
    half = s_t / 2
    above = modes >= half
    idx = torch.where(above.any(-2), above.to(torch.int64).argmax(-2), -1)  # (..., k)
    t = t.to(modes.dtype)
    out = torch.full(idx.shape, math.nan, dtype=modes.dtype)
    ok = idx > 0
    if ok.any():
        i = idx.clamp_min(1)
        u_hi = torch.gather(modes, -2, i.unsqueeze(-2)).squeeze(-2)
        u_lo = torch.gather(modes, -2, (i - 1).unsqueeze(-2)).squeeze(-2)
        frac = (half - u_lo) / (u_hi - u_lo)
        est = t[i - 1] + frac * (t[i] - t[i - 1])
        out = torch.where(ok, est, out)
    out = torch.where(idx == 0, t[0].expand_as(out), out)
    return out
