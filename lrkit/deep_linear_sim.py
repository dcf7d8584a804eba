"""Deep linear networks, the simulation side: targets, initialisations, batched gradient descent (Chapter 2).

A depth-``D`` linear network ``y = W_D ... W_1 x`` trained by full-batch gradient descent on the
squared loss with whitened inputs (``E[x x^T] = I``) sees the population loss
``1/2 ||Sigma31 - W_D ... W_1||_F^2 + const`` (Saxe, McClelland & Ganguli 2014), with
``Sigma31 = U diag(s) V^T`` the input-output correlation. A step with learning rate ``lr`` is one
Euler step of the gradient flow in the time ``t = lr * step``; the modes
``u_alpha = U[:, alpha]^T W V[:, alpha]`` are recorded. Everything is vectorised over a leading
*configuration* axis (seeds, initial scales), runs on :func:`lrkit.get_device`, and flags diverged
configurations instead of crashing.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch

from ._validate import positive_float, positive_int
from .deep_linear_theory import check_depth, to_float64
from .env import generator, get_device
from .runs import Divergence

__all__ = ["mode_target", "decoupled_init", "decoupled_pair", "random_init", "gradient_step", "DeepLinearRun",
           "train_deep_linear", "half_times", "crossing_times", "mode_pair_gd", "truncation_loss"]

TensorLike = torch.Tensor | float | int | Sequence[float]


def mode_target(strengths: Sequence[float], out_dim: int | None = None, in_dim: int | None = None, seed: int = 0,
                dtype: torch.dtype = torch.float64) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """A correlation matrix ``Sigma31 = U diag(s) V^T`` with random orthonormal ``U`` (out) and ``V`` (in).

    Returns ``(Sigma31, U, V)`` with shapes ``(out, in)``, ``(out, k)``, ``(in, k)``, ``k = len(strengths)``;
    ``out`` and ``in`` default to ``k``. Strengths must be >= 0 (zero strengths are allowed: nothing to learn).
    """
    s = to_float64(list(strengths), "strengths").to(dtype)
    if s.ndim != 1 or s.numel() == 0 or bool((s < 0).any()):
        raise ValueError(f"strengths must be a non-empty list of numbers >= 0, got {strengths!r}")
    k = s.numel()
    out_dim = k if out_dim is None else positive_int(out_dim, "out_dim")
    in_dim = k if in_dim is None else positive_int(in_dim, "in_dim")
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


def _modes_and_width(U: torch.Tensor, V: torch.Tensor, hidden: int | None) -> tuple[int, int]:
    """The number of modes ``k`` (columns of ``U`` and ``V``) and the hidden width (default ``k``)."""
    k = U.shape[1]
    if V.shape[1] != k:
        raise ValueError(f"U and V must have the same number of columns (modes), got {U.shape[1]} and {V.shape[1]}")
    width = hidden or k
    if width < k:
        raise ValueError(f"hidden must be >= the number of modes {k}, got {width}")
    return k, width


def decoupled_init(U: torch.Tensor, V: torch.Tensor, u0: TensorLike, depth: int = 2, hidden: int | None = None,
                   seed: int = 0) -> list[torch.Tensor]:
    """Balanced, decoupled weights whose end-to-end map is ``U diag(u0) V^T``.

    Each layer carries the mode with strength ``u0^{1/D}``: ``W_1 = R_1 diag(a) V^T``,
    ``W_l = R_l diag(a) R_{l-1}^T``, ``W_D = U diag(a) R_{D-1}^T`` with random orthonormal
    ``R_l`` of shape ``(hidden, k)``. Returns ``[W_1, ..., W_D]`` (``W_1`` of shape ``(hidden, in)``).
    """
    depth = check_depth(depth)
    k, hidden = _modes_and_width(U, V, hidden)
    u0_t = to_float64(u0, "u0").to(U.dtype).to(U.device).expand(k)
    if bool((u0_t <= 0).any()):
        raise ValueError(f"u0 must be > 0, got {u0!r}")
    a = torch.diag(u0_t ** (1.0 / depth))
    gen = generator(seed)
    R = [torch.linalg.qr(torch.randn(hidden, k, generator=gen, dtype=U.dtype))[0].to(U.device)
         for _ in range(depth - 1)]
    left = R + [U]
    right = [V] + R
    return [left[i] @ a @ right[i].T for i in range(depth)]


def decoupled_pair(U: torch.Tensor, V: torch.Tensor, a: TensorLike, b: TensorLike, hidden: int | None = None,
                   seed: int = 0) -> list[torch.Tensor]:
    """Two-layer decoupled weights with per-mode coordinates ``a`` (input side) and ``b`` (output side).

    ``W_1 = R diag(a) V^T`` (``(hidden, in)``), ``W_2 = U diag(b) R^T`` (``(out, hidden)``), ``R`` random
    orthonormal ``(hidden, k)``: mode ``i`` starts at ``u_i = a_i b_i`` with imbalance ``c_i = a_i^2 - b_i^2``.
    ``a = 0`` or ``b = 0`` is allowed (LoRA's Init[B] and Init[A] in the task's own bases).
    """
    k, hidden = _modes_and_width(U, V, hidden)
    a_t = to_float64(a, "a").to(U.dtype).to(U.device).expand(k)
    b_t = to_float64(b, "b").to(U.dtype).to(U.device).expand(k)
    R = torch.linalg.qr(torch.randn(hidden, k, generator=generator(seed), dtype=U.dtype))[0].to(U.device)
    return [R @ torch.diag(a_t) @ V.T, U @ torch.diag(b_t) @ R.T]


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
    lr = positive_float(lr, "lr")
    D = len(weights)
    if D < 2:
        raise ValueError(f"weights must hold at least 2 matrices, got {D}")
    dtypes = {str(w.dtype) for w in weights} | {str(target.dtype)}
    if len(dtypes) > 1:
        raise TypeError(f"weights and target must share one dtype, got {sorted(dtypes)}")
    prefix: list[torch.Tensor] = [weights[0]]  # prefix[l - 1] = W_{l-1} ... W_1 (nothing for l = 0)
    for l in range(2, D):
        prefix.append(weights[l - 1] @ prefix[-1])
    W = weights[-1] @ prefix[-1]
    if W.shape[-2:] != target.shape[-2:]:
        raise ValueError(f"target must have the end-to-end map's shape {tuple(W.shape[-2:])}, got "
                         f"{tuple(target.shape[-2:])}")
    E = target - W
    new: list[torch.Tensor] = []  # built from the last layer down
    suffix: torch.Tensor | None = None  # suffix = W_D ... W_{l+1}
    for l in range(D - 1, -1, -1):
        g = E if suffix is None else suffix.transpose(-1, -2) @ E
        if l > 0:
            g = g @ prefix[l - 1].transpose(-1, -2)
        new.append(weights[l] + lr * g)
        suffix = weights[l] if suffix is None else suffix @ weights[l]
    return new[::-1]


@dataclass
class DeepLinearRun:
    """A batch of deep-linear training runs.

    ``t``: recorded times in units of ``tau`` (``step * lr``), shape ``(T,)``;
    ``modes``: ``u_alpha(t) = u_alpha^T W(t) v_alpha``, shape ``(C, T, k)``;
    ``loss``: ``1/2 ||Sigma31 - W(t)||_F^2``, shape ``(C, T)``;
    ``diverged``: configurations whose loss became non-finite or exceeded 1e6 times its start, shape ``(C,)``
    (the rule of :mod:`lrkit.runs`, checked at the recorded steps); ``diverged_at``: the step it was
    detected, -1 if never, ``(C,)``; ``final``: the last recorded loss (NaN when diverged), ``(C,)``.
    """

    t: torch.Tensor
    modes: torch.Tensor
    loss: torch.Tensor
    diverged: torch.Tensor
    diverged_at: torch.Tensor = field(default_factory=lambda: torch.zeros(0, dtype=torch.long))

    @property
    def final(self) -> torch.Tensor:
        """The last recorded loss per configuration (NaN when diverged): :class:`lrkit.runs.RunResult`."""
        return self.loss[:, -1]


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
    if isinstance(weights, torch.Tensor) or len(weights) < 2 or not all(isinstance(w, torch.Tensor) for w in weights):
        got = [type(w).__name__ for w in weights] if isinstance(weights, (list, tuple)) else type(weights).__name__
        raise TypeError(f"weights must be a list of at least 2 torch.Tensor matrices [W_1, ..., W_D], got {got}")
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
    modes.append(m)
    losses.append(loss)
    div = Divergence(C, blowup=1e6, device=loss.device, start=loss.clamp_min(1e-12))
    for step in range(1, steps + 1):
        new = gradient_step(ws, target, lr)
        ws = [div.keep(n, w) for w, n in zip(ws, new)]      # a diverged configuration stays frozen
        if step % record_every == 0 or step == steps:
            m, loss = measure(ws)
            div.update(loss, step)                            # no host synchronisation
            times.append(step * lr)
            modes.append(div.mask(m))
            losses.append(div.mask(loss))
    return DeepLinearRun(torch.tensor(times, dtype=torch.float64), torch.stack(modes, 1).cpu(),
                         torch.stack(losses, 1).cpu(), ~div.alive.cpu(), div.diverged_at.cpu())


def half_times(t: torch.Tensor, modes: torch.Tensor, s: TensorLike) -> torch.Tensor:
    """First time each mode reaches half its strength, ``u_alpha(t) >= s_alpha / 2``, by linear interpolation.

    ``t`` ``(T,)``, ``modes`` ``(..., T, k)``, ``s`` ``(k,)``; NaN where a mode never gets there.
    """
    s_t = to_float64(s, "s")
    if modes.shape[-1] != s_t.numel() or modes.shape[-2] != t.numel():
        raise ValueError(f"modes must have shape (..., T={t.numel()}, k={s_t.numel()}), got {tuple(modes.shape)}")
    return crossing_times(t, modes, s_t / 2)


def crossing_times(t: torch.Tensor, values: torch.Tensor, level: TensorLike) -> torch.Tensor:
    """First time ``values`` (``(..., T, k)``) reaches ``level`` (``(k,)``) from below, by linear interpolation.

    NaN where it never gets there; ``t[0]`` where it starts at or above the level.
    """
    lv = to_float64(level, "level").to(values.dtype)
    if values.shape[-1] != lv.numel() or values.shape[-2] != t.numel():
        raise ValueError(f"values must have shape (..., T={t.numel()}, k={lv.numel()}), got {tuple(values.shape)}")
    above = values >= lv
    idx = torch.where(above.any(-2), above.to(torch.int64).argmax(-2), -1)
    tt = t.to(values.dtype)
    out = torch.full(idx.shape, math.nan, dtype=values.dtype)
    ok = idx > 0
    if ok.any():
        i = idx.clamp_min(1)
        hi = torch.gather(values, -2, i.unsqueeze(-2)).squeeze(-2)
        lo = torch.gather(values, -2, (i - 1).unsqueeze(-2)).squeeze(-2)
        est = tt[i - 1] + (lv - lo) / (hi - lo) * (tt[i] - tt[i - 1])
        out = torch.where(ok, est, out)
    return torch.where(idx == 0, tt[0].expand_as(out), out)


def mode_pair_gd(steps: int, s: TensorLike, a0: TensorLike, b0: TensorLike, lr: float
                 ) -> tuple[torch.Tensor, torch.Tensor]:
    """Gradient descent on one two-layer mode, ``1/2 (s - a b)^2``: the pair ``(a_k, b_k)`` for ``k = 0..steps``.

    ``a <- a + lr b (s - a b)``, ``b <- b + lr a (s - a b)`` (both at the old values); ``s``, ``a0``,
    ``b0`` broadcast to a shape ``M``; returns two tensors of shape ``(steps + 1, *M)``. The flow
    keeps ``a^2 - b^2`` fixed, so the pair moves along a hyperbola.
    """
    positive_int(steps, "steps")
    lr = positive_float(lr, "lr")
    try:
        s_t, a, b = torch.broadcast_tensors(to_float64(s, "s"), to_float64(a0, "a0"), to_float64(b0, "b0"))  # type: ignore[no-untyped-call]
    except RuntimeError as e:
        raise ValueError("s, a0 and b0 must broadcast together") from e
    a_out, b_out = [a.clone()], [b.clone()]
    for _ in range(steps):
        g = s_t - a * b
        a, b = a + lr * b * g, b + lr * a * g
        a_out.append(a)
        b_out.append(b)
    return torch.stack(a_out), torch.stack(b_out)


def truncation_loss(strengths: TensorLike, rank: int) -> float:
    """``1/2 sum_{i > r} s_i^2`` over the strengths sorted in decreasing order: the loss of the best rank-``r`` map.

    Eckart-Young: the global minimum of ``1/2 ||Sigma31 - W_2 W_1||_F^2`` with hidden width ``r`` keeps the
    ``r`` strongest modes (Saxe et al. 2014, the fixed points of a narrow network).
    """
    s = to_float64(strengths, "strengths").reshape(-1)
    if bool((s < 0).any()):
        raise ValueError(f"strengths must be >= 0 (singular values), got {strengths!r}")
    r = positive_int(rank, "rank")
    tail = torch.sort(s, descending=True).values[r:]
    return float(0.5 * tail.square().sum())
