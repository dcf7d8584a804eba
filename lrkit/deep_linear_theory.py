"""Deep linear networks, the theory side: exact mode trajectories and learning times (Chapter 2).

A mode of strength ``s`` of a two-layer linear network trained by gradient flow from decoupled
initial conditions has an input-side coordinate ``a`` and an output-side coordinate ``b``,

    tau a' = b (s - a b),    tau b' = a (s - a b),    u = a b,                       (Saxe et al. 2014)

and the *imbalance* ``c = a^2 - b^2`` is conserved (an unbalanced mode, ``c != 0``:
:mod:`lrkit.deep_linear_unbalanced`). Balanced (``c = 0``) it is Saxe's logistic
``tau u' = 2 u (s - u)``, solved by

    u(t) = s e^{2st/tau} / (e^{2st/tau} - 1 + s/u0)                                  (saxe_trajectory)
    t(u0 -> uf) = tau/(2s) ln[uf (s - u0) / (u0 (s - uf))]                           (learning_time)

With ``D`` balanced layers (``u = a^D``): ``tau u' = D u^{2-2/D} (s - u)`` (:func:`deep_mode_trajectory`).

**Gradient descent is not the flow.** With learning rate ``lr`` the balanced mode follows the
recursion ``a <- a + lr a^{D-1} (s - a^D)`` exactly (:func:`discrete_mode_trajectory`). Write
``r(u) = D u^{1-2/D} (s - u)`` for the flow's growth rate of ``ln u``. One step multiplies ``u`` by
``(1 + r lr / D)^D``, so ``ln u`` gains ``r lr - r^2 lr^2 / (2D)``, while the flow over the same
time gains ``r lr + (lr^2 / 2) u r r'``. Each step's deficit, divided by the local rate ``r``, is
a time lag that the autonomous flow carries along unchanged; summed along the path
(``dt = du / (u r)``), GD reaches ``uf`` later than the flow by (our derivation, first order in ``lr``)

    delta t = (lr / 2) [ (1 - 1/D) ln(uf / u0) + ln((s - uf) / (s - u0)) ]            (gd_lag)

For ``D = 2`` and ``uf = s/2`` this is a relative ``s lr / 2`` of the half-learning time (up to
the logarithm's constant), not ``s lr``; at depth ``D`` it is not ``D`` times larger.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch

from ._validate import positive_float, positive_int
from .env import few_threads

__all__ = [
    "Number", "TensorLike", "to_float64", "check_depth", "broadcast_named", "saxe_trajectory", "learning_time",
    "deep_mode_trajectory", "deep_learning_time", "discrete_mode_trajectory", "gd_lag",
]

Number = float | int
TensorLike = torch.Tensor | Number | Sequence[float]

# torch.broadcast_tensors has no annotations; its type, given once
_broadcast_tensors: Callable[..., tuple[torch.Tensor, ...]] = torch.broadcast_tensors


def to_float64(x: TensorLike, name: str) -> torch.Tensor:
    """``x`` as a finite float64 tensor; ``TypeError``/``ValueError`` naming ``name`` otherwise."""
    if isinstance(x, bool):
        raise TypeError(f"{name} must be a number or a tensor, got bool")
    try:
        t = torch.as_tensor(x, dtype=torch.float64).cpu()
    except (TypeError, ValueError, RuntimeError) as e:
        raise TypeError(f"{name} must be a number, a sequence of numbers or a tensor, got {type(x).__name__}") from e
    if not torch.isfinite(t).all():
        raise ValueError(f"{name} must be finite, got {x!r}")
    return t


def check_depth(depth: object) -> int:
    """``depth`` if it is an int >= 2 (the number of weight matrices), else an error naming it."""
    if isinstance(depth, bool) or not isinstance(depth, int):
        raise TypeError(f"depth must be an int >= 2 (the number of weight matrices), got {type(depth).__name__}")
    if depth < 2:
        raise ValueError(f"depth must be >= 2 (the number of weight matrices), got {depth}")
    return depth


def broadcast_named(**named: torch.Tensor) -> list[torch.Tensor]:
    """The tensors broadcast to one shape; a ``ValueError`` naming them and their shapes if they cannot be."""
    try:
        return list(_broadcast_tensors(*named.values()))
    except RuntimeError as e:
        shapes = ", ".join(f"{k} {tuple(v.shape)}" for k, v in named.items())
        raise ValueError(f"{', '.join(named)} must broadcast together, got shapes {shapes}") from e


def _strengths_and_init(s: TensorLike, u0: TensorLike) -> tuple[torch.Tensor, torch.Tensor]:
    s_t, u0_t = to_float64(s, "s"), to_float64(u0, "u0")
    if bool((s_t <= 0).any()):
        raise ValueError(f"s (mode strength) must be > 0, got {s!r}")
    s_t, u0_t = broadcast_named(s=s_t, u0=u0_t)
    if bool(((u0_t <= 0) | (u0_t >= s_t)).any()):
        raise ValueError(f"u0 must lie strictly between 0 and s (the mode is learned from below), got u0={u0!r}, "
                         f"s={s!r}")
    return s_t, u0_t


# --------------------------------------------------------------------------- balanced modes
def saxe_trajectory(t: TensorLike, s: TensorLike, u0: TensorLike, tau: Number = 1.0) -> torch.Tensor:
    """Saxe's closed form for a two-layer mode: ``u(t) = s e^{2st/tau} / (e^{2st/tau} - 1 + s/u0)``.

    ``t``, ``s`` and ``u0`` broadcast together (e.g. ``t`` of shape ``(T, 1)`` and ``s`` of shape
    ``(k,)`` give ``(T, k)``); float64 on the CPU. ``s > 0``, ``0 < u0 < s``, ``tau > 0``.
    Written as ``s / (1 + (s/u0 - 1) e^{-2st/tau})``, which never overflows.
    """
    tau = positive_float(tau, "tau")
    t_t = to_float64(t, "t")
    s_t, u0_t = _strengths_and_init(s, u0)
    return s_t / (1.0 + (s_t / u0_t - 1.0) * torch.exp(-2.0 * s_t * t_t / tau))


def learning_time(s: TensorLike, u0: TensorLike, uf: TensorLike, tau: Number = 1.0) -> torch.Tensor:
    """Time for a two-layer mode to go from ``u0`` to ``uf``: ``tau/(2s) ln[uf (s - u0) / (u0 (s - uf))]``.

    Vectorised over broadcastable ``s``, ``u0``, ``uf``; requires ``0 < u0 < s`` and ``0 < uf < s``.
    The half-learning time is ``learning_time(s, u0, s / 2)``.
    """
    tau = positive_float(tau, "tau")
    s_t, u0_t = _strengths_and_init(s, u0)
    uf_t = to_float64(uf, "uf")
    s_t, u0_t, uf_t = broadcast_named(s=s_t, u0=u0_t, uf=uf_t)
    if bool(((uf_t <= 0) | (uf_t >= s_t)).any()):
        raise ValueError(f"uf must lie strictly between 0 and s (s itself is only reached as t -> inf), got uf={uf!r}")
    time: torch.Tensor = tau / (2.0 * s_t) * torch.log(uf_t * (s_t - u0_t) / (u0_t * (s_t - uf_t)))
    return time


def deep_mode_trajectory(t: TensorLike, s: TensorLike, u0: TensorLike, depth: int = 2, tau: Number = 1.0,
                         substeps: int = 20) -> torch.Tensor:
    """Mode strength of a balanced depth-``D`` network: solves ``tau u' = D u^{2-2/D} (s - u)`` by RK4.

    ``t`` is a 1-D increasing grid starting at 0, shape ``(T,)``; ``s`` and ``u0`` broadcast to a
    shape ``M``; the result has shape ``(T, *M)``. Each interval of ``t`` is split into
    ``substeps`` RK4 steps. For ``depth = 2`` this reproduces :func:`saxe_trajectory`.
    """
    depth, tau = check_depth(depth), positive_float(tau, "tau")
    positive_int(substeps, "substeps")
    t_t = to_float64(t, "t")
    if t_t.ndim != 1 or t_t.numel() < 1 or float(t_t[0]) != 0.0 or bool((t_t.diff() <= 0).any()):
        raise ValueError("t must be a 1-D increasing grid of times starting at 0")
    s_t, u0_t = _strengths_and_init(s, u0)

    def rate(u: torch.Tensor) -> torch.Tensor:
        return depth * u.clamp_min(0.0) ** (2.0 - 2.0 / depth) * (s_t - u) / tau

    out = [u0_t.clone()]
    u = u0_t.clone()
    with few_threads(u.device):  # thousands of tiny CPU kernels
        for dt_total in t_t.diff().tolist():
            h = dt_total / substeps
            for _ in range(substeps):
                k1 = rate(u)
                k2 = rate(u + 0.5 * h * k1)
                k3 = rate(u + 0.5 * h * k2)
                k4 = rate(u + h * k3)
                u = u + h / 6.0 * (k1 + 2 * k2 + 2 * k3 + k4)
            out.append(u.clone())
    traj = torch.stack(out)
    # the exact u(t) stays in (0, s): leaving it (by more than round-off) means RK4 was unstable
    if not bool(torch.isfinite(traj).all()) or bool(((traj < 0) | (traj > s_t * (1 + 1e-2))).any()):
        raise ValueError(f"the RK4 integration is unstable at this grid (u left (0, s)): increase substeps "
                         f"(got {substeps}) or use a finer t")
    return traj


def deep_learning_time(s: TensorLike, u0: TensorLike, uf: TensorLike, depth: int = 2, tau: Number = 1.0,
                       points: int = 4001) -> torch.Tensor:
    """Time from ``u0`` to ``uf`` for ``tau u' = D u^{2-2/D} (s - u)``: ``tau/D * int du / (u^{2-2/D} (s - u))``.

    Computed by Simpson's rule in the variable ``log u`` (exact formula for ``depth = 2``).
    """
    depth, tau = check_depth(depth), positive_float(tau, "tau")
    if positive_int(points, "points") < 3:
        raise ValueError(f"points must be an int >= 3 (Simpson's rule), got {points}")
    if depth == 2:
        return learning_time(s, u0, uf, tau)
    s_t, u0_t = _strengths_and_init(s, u0)
    s_t, u0_t, uf_t = broadcast_named(s=s_t, u0=u0_t, uf=to_float64(uf, "uf"))
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
    time: torch.Tensor = tau / depth * integral
    return time


# --------------------------------------------------------------------------- gradient descent, exactly
def discrete_mode_trajectory(steps: int, s: TensorLike, u0: TensorLike, lr: float, depth: int = 2
                             ) -> torch.Tensor:
    """The exact gradient-descent recursion of a balanced decoupled mode, ``u_k`` for ``k = 0..steps``.

    Each of the ``D`` layers carries ``a = u^{1/D}``; a step is ``a <- a + lr a^{D-1} (s - a^D)``
    (the gradient of ``1/2 (s - a^D)^2`` in one layer, all layers equal). ``s`` and ``u0``
    broadcast to a shape ``M``; returns shape ``(steps + 1, *M)``. This is what a full-matrix
    simulation from :func:`decoupled_init` computes, up to float round-off.
    """
    positive_int(steps, "steps")
    lr = positive_float(lr, "lr")
    depth = check_depth(depth)
    s_t, u0_t = _strengths_and_init(s, u0)
    a = u0_t ** (1.0 / depth)
    out = [u0_t.clone()]
    with few_threads(a.device):
        for _ in range(steps):
            a = a + lr * a ** (depth - 1) * (s_t - a ** depth)
            out.append(a ** depth)
    return torch.stack(out)


def gd_lag(lr: float, s: TensorLike, u0: TensorLike, uf: TensorLike, depth: int = 2) -> torch.Tensor:
    """How much later gradient descent reaches ``uf`` than the flow (first order in ``lr``; our derivation).

    ``delta t = (lr / 2) [(1 - 1/D) ln(uf / u0) + ln((s - uf) / (s - u0))]`` in units of
    ``t = lr * step``, for a balanced decoupled mode of a depth-``D`` network (module docstring).
    ``0 < u0 < uf < s``; arguments broadcast.
    """
    lr = positive_float(lr, "lr")
    depth = check_depth(depth)
    s_t, u0_t = _strengths_and_init(s, u0)
    s_t, u0_t, uf_t = broadcast_named(s=s_t, u0=u0_t, uf=to_float64(uf, "uf"))
    if bool(((uf_t <= u0_t) | (uf_t >= s_t)).any()):
        raise ValueError("uf must lie strictly between u0 and s (a mode learned from below)")
    return lr / 2 * ((1 - 1 / depth) * torch.log(uf_t / u0_t) + torch.log((s_t - uf_t) / (s_t - u0_t)))
