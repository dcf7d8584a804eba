"""Deep linear networks, the starting points: a target's modes and the initial weights (Chapter 2).

The task is the input-output correlation ``Sigma31 = U diag(s) V^T`` (:func:`mode_target`). A
network starts either *decoupled*, each layer carrying the modes in the task's own bases
(:func:`decoupled_init` balanced at any depth, :func:`decoupled_pair` with any imbalance at depth
two), or from small random weights (:func:`random_init`). Random draws are made on the CPU in
float64 from a seeded generator, so every device starts from the same numbers; the tensors are
then moved to :func:`lrkit.get_device` in its widest dtype (:func:`lrkit.env.float_dtype`:
float32 on Apple's MPS).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

from ._validate import positive_float, positive_int
from .deep_linear_theory import TensorLike, check_depth, to_float64
from .env import float_dtype, generator, get_device, to_device_dtype

__all__ = ["mode_target", "decoupled_init", "decoupled_pair", "random_init"]


def mode_target(strengths: Sequence[float], out_dim: int | None = None, in_dim: int | None = None, seed: int = 0,
                dtype: torch.dtype | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """A correlation matrix ``Sigma31 = U diag(s) V^T`` with random orthonormal ``U`` (out) and ``V`` (in).

    Returns ``(Sigma31, U, V)`` with shapes ``(out, in)``, ``(out, k)``, ``(in, k)``, ``k = len(strengths)``;
    ``out`` and ``in`` default to ``k``. Strengths must be >= 0 (zero strengths are allowed: nothing to learn).
    On :func:`lrkit.get_device`, in ``dtype`` (default :func:`lrkit.env.float_dtype` of the device).
    """
    s = to_float64(list(strengths), "strengths")
    if s.ndim != 1 or s.numel() == 0 or bool((s < 0).any()):
        raise ValueError(f"strengths must be a non-empty list of numbers >= 0, got {strengths!r}")
    k = s.numel()
    out_dim = k if out_dim is None else positive_int(out_dim, "out_dim")
    in_dim = k if in_dim is None else positive_int(in_dim, "in_dim")
    if out_dim < k or in_dim < k:
        raise ValueError(f"out_dim and in_dim must be >= len(strengths) = {k}, got {out_dim} and {in_dim}")
    gen = generator(seed)
    U, _ = torch.linalg.qr(torch.randn(out_dim, k, generator=gen, dtype=torch.float64))
    V, _ = torch.linalg.qr(torch.randn(in_dim, k, generator=gen, dtype=torch.float64))
    dev = get_device()
    want = float_dtype(dev) if dtype is None else dtype
    U, V, s = (to_device_dtype(x, dev, want) for x in (U, V, s))
    return U @ torch.diag(s) @ V.T, U, V


def _modes_and_width(U: torch.Tensor, V: torch.Tensor, hidden: int | None) -> tuple[int, int]:
    """The number of modes ``k`` (columns of ``U`` and ``V``) and the hidden width (default ``k``)."""
    k = U.shape[1]
    if V.shape[1] != k:
        raise ValueError(f"U and V must have the same number of columns (modes), got {U.shape[1]} and {V.shape[1]}")
    width = hidden or k
    if width < k:
        raise ValueError(f"hidden must be >= the number of modes {k}, got {width}")
    return k, width


def _orthonormal(hidden: int, k: int, gen: torch.Generator, like: torch.Tensor) -> torch.Tensor:
    """A random ``(hidden, k)`` matrix with orthonormal columns, drawn on the CPU, on ``like``'s device and dtype."""
    R = torch.linalg.qr(torch.randn(hidden, k, generator=gen, dtype=torch.float64))[0]
    return to_device_dtype(R, like.device, like.dtype)


def _per_mode(x: TensorLike, name: str, like: torch.Tensor, k: int) -> torch.Tensor:
    return to_device_dtype(to_float64(x, name), like.device, like.dtype).expand(k)


def decoupled_init(U: torch.Tensor, V: torch.Tensor, u0: TensorLike, depth: int = 2, hidden: int | None = None,
                   seed: int = 0) -> list[torch.Tensor]:
    """Balanced, decoupled weights whose end-to-end map is ``U diag(u0) V^T``.

    Each layer carries the mode with strength ``u0^{1/D}``: ``W_1 = R_1 diag(a) V^T``,
    ``W_l = R_l diag(a) R_{l-1}^T``, ``W_D = U diag(a) R_{D-1}^T`` with random orthonormal
    ``R_l`` of shape ``(hidden, k)``. Returns ``[W_1, ..., W_D]`` (``W_1`` of shape ``(hidden, in)``),
    on ``U``'s device and in its dtype.
    """
    depth = check_depth(depth)
    k, hidden = _modes_and_width(U, V, hidden)
    if bool((to_float64(u0, "u0") <= 0).any()):
        raise ValueError(f"u0 must be > 0, got {u0!r}")
    a = torch.diag(_per_mode(u0, "u0", U, k) ** (1.0 / depth))
    gen = generator(seed)
    R = [_orthonormal(hidden, k, gen, U) for _ in range(depth - 1)]
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
    a_t, b_t = _per_mode(a, "a", U, k), _per_mode(b, "b", U, k)
    R = _orthonormal(hidden, k, generator(seed), U)
    return [R @ torch.diag(a_t) @ V.T, U @ torch.diag(b_t) @ R.T]


def random_init(dims: Sequence[int], scale: float, seed: int = 0, dtype: torch.dtype | None = None
                ) -> list[torch.Tensor]:
    """Small random weights ``W_l ~ N(0, scale^2 / fan_in)``; ``dims = (in, h_1, ..., out)``.

    Drawn on the CPU in float64; on :func:`lrkit.get_device` in ``dtype`` (default its
    :func:`lrkit.env.float_dtype`).
    """
    scale = positive_float(scale, "scale")
    if len(dims) < 3 or any(isinstance(d, bool) or not isinstance(d, int) or d < 1 for d in dims):
        raise ValueError(f"dims must list >= 3 positive ints (in, hidden..., out), got {dims!r}")
    gen = generator(seed)
    dev = get_device()
    want = float_dtype(dev) if dtype is None else dtype
    return [to_device_dtype(scale / math.sqrt(dims[i]) * torch.randn(dims[i + 1], dims[i], generator=gen,
                                                                     dtype=torch.float64), dev, want)
            for i in range(len(dims) - 1)]
