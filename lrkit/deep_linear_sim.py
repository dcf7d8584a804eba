"""Deep linear networks, the simulation side: batched gradient descent and what it is measured by (Chapter 2).

A depth-``D`` linear network ``y = W_D ... W_1 x`` trained by full-batch gradient descent on the
squared loss with whitened inputs (``E[x x^T] = I``) sees the population loss
``1/2 ||Sigma31 - W_D ... W_1||_F^2 + const`` (Saxe, McClelland & Ganguli 2014), with
``Sigma31 = U diag(s) V^T`` the input-output correlation. A step with learning rate ``lr`` is one
Euler step of the gradient flow in the time ``t = lr * step``; the modes
``u_alpha = U[:, alpha]^T W V[:, alpha]`` are recorded. Everything is vectorised over a leading
configuration axis ``K`` (seeds, initial scales) and follows :mod:`lrkit.runs`: it runs where the
weights are (targets and initial weights: :mod:`lrkit.deep_linear_init`), never reads the device
inside the loop, and flags diverged configurations instead of crashing.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch

from ._validate import positive_float, positive_int
from .deep_linear_theory import TensorLike, broadcast_named, to_float64
from .env import few_threads
from .runs import Divergence

__all__ = ["gradient_step", "DeepLinearRun", "train_deep_linear", "half_times", "crossing_times", "mode_pair_gd",
           "truncation_loss"]


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
    """A batch of deep-linear training runs, on the CPU (in the weights' dtype).

    ``t``: recorded times in units of ``tau`` (``step * lr``), shape ``(T,)``;
    ``modes``: ``u_alpha(t) = u_alpha^T W(t) v_alpha``, shape ``(K, T, k)``;
    ``loss``: ``1/2 ||Sigma31 - W(t)||_F^2``, shape ``(K, T)``;
    ``diverged``: configurations whose loss became non-finite or exceeded 1e6 times its start, shape ``(K,)``
    (the rule of :mod:`lrkit.runs`, checked at the recorded steps); ``diverged_at``: the step it was
    detected, -1 if never, ``(K,)``; ``final``: the last recorded loss (NaN when diverged), ``(K,)``.
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

    ``weights = [W_1, ..., W_D]``, each of shape ``(K, n_{l}, n_{l-1})`` (``K`` configurations: seeds,
    initial scales) or without the leading axis (one configuration). ``target = U diag(s) V^T``
    (``(out, in)``), ``U`` ``(out, k)``, ``V`` ``(in, k)``, all on the weights' device and in their dtype.
    Every ``record_every`` steps the mode strengths ``u_alpha = U[:, alpha]^T W V[:, alpha]`` and the
    loss are recorded. Diverged configurations are frozen and flagged, never a crash; nothing is read
    back from the device inside the loop, and on the CPU it runs on one thread (:func:`lrkit.env.few_threads`).
    """
    lr = positive_float(lr, "lr")
    positive_int(steps, "steps"), positive_int(record_every, "record_every")
    if isinstance(weights, torch.Tensor) or len(weights) < 2 or not all(isinstance(w, torch.Tensor) for w in weights):
        got = [type(w).__name__ for w in weights] if isinstance(weights, (list, tuple)) else type(weights).__name__
        raise TypeError(f"weights must be a list of at least 2 torch.Tensor matrices [W_1, ..., W_D], got {got}")
    ws = [w if w.ndim == 3 else w.unsqueeze(0) for w in weights]
    K = ws[0].shape[0]
    for i, (a, b) in enumerate(zip(ws[:-1], ws[1:])):
        if b.shape[-1] != a.shape[-2] or b.shape[0] != K:
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
        modes = torch.diagonal(U.T @ W @ V, dim1=-2, dim2=-1)  # u_alpha^T W v_alpha, (K, k)
        return modes, 0.5 * (target - W).square().sum((-1, -2))

    times, modes, losses = [0.0], [], []
    m, loss = measure(ws)
    modes.append(m)
    losses.append(loss)
    div = Divergence(K, blowup=1e6, device=loss.device, start=loss.clamp_min(1e-12))
    work = 3.0 * K * len(ws) * sum(w[0].numel() for w in ws)  # multiply-adds per step, roughly
    with few_threads(ws[0].device, work):
        for step in range(1, steps + 1):
            new = gradient_step(ws, target, lr)
            ws = [div.keep(n, w) for w, n in zip(ws, new)]      # a diverged configuration stays frozen
            if step % record_every == 0 or step == steps:
                m, loss = measure(ws)
                div.update(loss, step)                            # no host synchronisation
                times.append(step * lr)
                modes.append(div.mask(m))
                losses.append(div.mask(loss))
    return DeepLinearRun(torch.tensor(times, dtype=ws[0].dtype), torch.stack(modes, 1).cpu(),
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
    s_t, a, b = broadcast_named(s=to_float64(s, "s"), a0=to_float64(a0, "a0"), b0=to_float64(b0, "b0"))
    a_out, b_out = [a.clone()], [b.clone()]
    with few_threads(a.device):
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
