"""Deep linear networks, an unbalanced mode: its speed, its learning time and its trajectory (Chapter 2).

A two-layer mode with input-side coordinate ``a`` and output-side coordinate ``b`` keeps its
*imbalance* ``c = a^2 - b^2`` under gradient flow (Saxe et al. 2014). Since
``a^2 + b^2 = sqrt(c^2 + 4 u^2)`` with ``u = a b``,

    tau u' = sqrt(c^2 + 4 u^2) (s - u)                                              (unbalanced_rate)

(our derivation; exact solutions of this kind are in Braun et al. 2022 and Kunin et al. 2024).
Separating variables gives the time in closed form (:func:`unbalanced_time`), which bisection
inverts into ``u(t)`` (:func:`unbalanced_trajectory`). ``c = 0`` is Saxe's balanced logistic
(:func:`lrkit.deep_linear_theory.saxe_trajectory`); ``|c| >> s`` the lazy, exponential limit.
"""

from __future__ import annotations

import torch

from ._validate import positive_float, positive_int
from .deep_linear_theory import Number, TensorLike, broadcast_named, to_float64

__all__ = ["unbalanced_rate", "unbalanced_time", "unbalanced_trajectory"]


def unbalanced_rate(u: TensorLike, s: TensorLike, c: TensorLike, tau: Number = 1.0) -> torch.Tensor:
    """``du/dt = sqrt(c^2 + 4 u^2) (s - u) / tau``: the mode's speed at imbalance ``c = a^2 - b^2``."""
    tau = positive_float(tau, "tau")
    u_t, s_t, c_t = broadcast_named(u=to_float64(u, "u"), s=to_float64(s, "s"), c=to_float64(c, "c"))
    return torch.sqrt(c_t ** 2 + 4 * u_t ** 2) * (s_t - u_t) / tau


def _antiderivative(u: torch.Tensor, s: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
    """``F(u) = int du / ((s - u) 2 sqrt(u^2 + q^2))`` for ``s > 0`` (``q = c/2``), stable on both sides of 0.

    ``F = ln[(R r + s u + q^2) / |u - s|] / (2R)`` with ``R = sqrt(s^2 + q^2)``, ``r = sqrt(u^2 + q^2)``;
    where ``s u + q^2 < 0`` the numerator is rewritten as ``q^2 (s - u)^2 / (R r - s u - q^2)``.
    """
    R = torch.sqrt(s ** 2 + q ** 2)
    r = torch.sqrt(u ** 2 + q ** 2)
    lin = s * u + q ** 2
    gap = (s - u).abs()
    pos = torch.log(R * r + lin.clamp_min(0)) - torch.log(gap)
    neg = torch.log(q ** 2) + torch.log(gap) - torch.log(R * r - lin.clamp_max(0))
    return torch.where(lin >= 0, pos, neg) / (2 * R)


def _unbalanced_args(s: TensorLike, c: TensorLike, u0: TensorLike
                     ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    s_t, c_t, u0_t = to_float64(s, "s"), to_float64(c, "c"), to_float64(u0, "u0")
    s_t, c_t, u0_t = broadcast_named(s=s_t, c=c_t, u0=u0_t)
    if bool((s_t == 0).any()):
        raise ValueError(f"s (mode strength) must be non-zero, got {s!r}")
    sign = torch.sign(s_t)  # u -> -u, s -> -s leaves the equation unchanged: work with s > 0
    s_t, u0_t = s_t * sign, u0_t * sign
    if bool(((c_t == 0) & (u0_t <= 0)).any()):
        raise ValueError("a balanced mode (c = 0) must start on the side of s (u0 s > 0): at u0 s <= 0 it "
                         f"sits on the saddle and never learns; got c={c!r}, u0={u0!r}, s={s!r}")
    return s_t, c_t / 2, u0_t, sign


def unbalanced_time(u0: TensorLike, uf: TensorLike, s: TensorLike, c: TensorLike, tau: Number = 1.0
                    ) -> torch.Tensor:
    """Time for ``tau u' = sqrt(c^2 + 4u^2)(s - u)`` to go from ``u0`` to ``uf`` (closed form, our derivation).

    ``uf`` must lie between ``u0`` and ``s`` (``s`` itself is reached only as ``t -> inf``). All
    arguments broadcast. For ``c = 0`` it equals :func:`learning_time`.
    """
    tau = positive_float(tau, "tau")
    s_t, q, u0_t, sign = _unbalanced_args(s, c, u0)
    uf_t = to_float64(uf, "uf") * sign
    s_t, q, u0_t, uf_t = broadcast_named(s=s_t, c=q, u0=u0_t, uf=uf_t)
    lo, hi = torch.minimum(u0_t, s_t), torch.maximum(u0_t, s_t)
    if bool(((uf_t < lo) | (uf_t > hi) | (uf_t == s_t)).any()):
        raise ValueError(f"uf must lie between u0 and s, and differ from s, got uf={uf!r}")
    return tau * (_antiderivative(uf_t, s_t, q) - _antiderivative(u0_t, s_t, q))


def unbalanced_trajectory(t: TensorLike, s: TensorLike, c: TensorLike, u0: TensorLike, tau: Number = 1.0,
                          iterations: int = 90) -> torch.Tensor:
    """``u(t)`` of ``tau u' = sqrt(c^2 + 4 u^2)(s - u)``, ``u(0) = u0``: the mode at imbalance ``c = a^2 - b^2``.

    Vectorised: ``t`` (any shape, ``t >= 0``), ``s``, ``c`` and ``u0`` broadcast; float64 on the CPU.
    The closed-form time :func:`unbalanced_time` is inverted by bisection between ``u0`` and ``s``
    (``iterations`` halvings: accurate to float round-off). ``c = 0`` gives :func:`saxe_trajectory`;
    ``|c| >> s`` gives the lazy limit ``u = s - (s - u0) e^{-|c| t / tau}``. Negative ``s`` is
    allowed (the mirror image ``u -> -u``); a balanced mode must start with ``u0 s > 0``.
    """
    tau = positive_float(tau, "tau")
    positive_int(iterations, "iterations")
    t_t = to_float64(t, "t")
    if bool((t_t < 0).any()):
        raise ValueError("t must be >= 0")
    s_t, q, u0_t, sign = _unbalanced_args(s, c, u0)
    t_t, s_t, q, u0_t, sign = broadcast_named(t=t_t, s=s_t, c=q, u0=u0_t, sign=sign)
    F0 = _antiderivative(u0_t, s_t, q)
    lo, hi = torch.zeros_like(t_t), torch.ones_like(t_t)  # u = u0 + lam (s - u0), lam in [0, 1)
    for _ in range(iterations):
        mid = (lo + hi) / 2
        u_mid = u0_t + mid * (s_t - u0_t)
        early = tau * (_antiderivative(u_mid, s_t, q) - F0) <= t_t
        lo, hi = torch.where(early, mid, lo), torch.where(early, hi, mid)
    u = u0_t + (lo + hi) / 2 * (s_t - u0_t)
    return sign * torch.where(u0_t == s_t, s_t, u)
