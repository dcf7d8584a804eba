"""Spectra of weight updates: how many directions does a fine-tuning update use?

For an update ``dW`` of shape ``(out, in)`` with singular values
``s_1 >= s_2 >= ... >= s_m >= 0`` (``m = min(out, in)``):

* energy fraction ``E_k = sum_{i<=k} s_i^2 / sum_i s_i^2``: the share of
  ``||dW||_F^2`` captured by the best rank-``k`` approximation (Eckart-Young);
  ``1 - E_k`` is the relative squared error of that approximation.
* rank for energy ``k(f) = min{k : E_k >= f}``: with ``f = 0.9``, "the rank
  needed to explain 90% of the variance", the measurement Biderman et al. (2024)
  use to compare full fine-tuning's update with LoRA ranks.
* effective rank (Roy and Vetterli 2007): ``exp(H(p))`` with ``p_i = s_i / sum_j s_j``
  and ``H`` the Shannon entropy: ``1`` for a rank-one matrix, ``m`` for a flat spectrum.
* stable rank ``||dW||_F^2 / ||dW||_2^2``.
* subspace overlap of two subspaces (column spans of ``U`` (n, k) and ``V`` (n, l)):
  ``||Q_U^T Q_V||_F^2 / min(k, l)``, the mean squared cosine of their principal
  angles; ``1`` when one contains the other, about ``max(k, l) / n`` for random ones.

Every function accepts a ``torch.Tensor`` (on any device) or anything ``torch.as_tensor``
takes (NumPy arrays, lists); computations run in float64 on the CPU (the matrices of this
course are small, and MPS has no float64), and tensors come back on the CPU.
"""

from __future__ import annotations

import math
from typing import Literal, Sequence

import numpy as np
import torch

ArrayLike = torch.Tensor | np.ndarray | Sequence[float] | Sequence[Sequence[float]]

__all__ = [
    "singular_values", "energy_fraction", "rank_for_energy", "effective_rank", "stable_rank",
    "top_subspace", "subspace_overlap",
]


def _as_tensor(x: object, name: str) -> torch.Tensor:
    if isinstance(x, torch.Tensor):
        t = x.detach().cpu()
    else:
        try:
            t = torch.as_tensor(np.asarray(x, dtype=np.float64))
        except (TypeError, ValueError) as e:
            raise TypeError(f"{name} must be a torch.Tensor or an array of numbers, got {type(x).__name__}") from e
    if t.is_complex():
        raise TypeError(f"{name} must be real, got a complex tensor")
    t = t.to(torch.float64)
    if t.numel() == 0:
        raise ValueError(f"{name} must not be empty")
    if not torch.isfinite(t).all():
        raise ValueError(f"{name} must contain only finite numbers (found NaN or inf)")
    return t


def _as_matrix(x: object, name: str) -> torch.Tensor:
    t = _as_tensor(x, name)
    if t.ndim != 2:
        raise ValueError(f"{name} must be a 2-D matrix (out, in), got shape {tuple(t.shape)}")
    return t


def singular_values(matrix: ArrayLike) -> torch.Tensor:
    """Singular values of ``matrix`` (out, in), descending, shape ``(min(out, in),)``, float64."""
    return torch.linalg.svdvals(_as_matrix(matrix, "matrix"))


def _spectrum(matrix_or_singular_values: ArrayLike, name: str) -> torch.Tensor:
    """A 2-D input is a matrix (its singular values are taken); a 1-D input is a spectrum."""
    t = _as_tensor(matrix_or_singular_values, name)
    if t.ndim == 2:
        return torch.linalg.svdvals(t)
    if t.ndim != 1:
        raise ValueError(f"{name} must be a 2-D matrix or a 1-D vector of singular values, "
                         f"got shape {tuple(t.shape)}")
    if (t < 0).any():
        raise ValueError(f"{name}: singular values must be >= 0, got min {t.min().item():.3g}")
    return torch.sort(t, descending=True).values


def energy_fraction(matrix_or_singular_values: ArrayLike) -> torch.Tensor:
    """Cumulative energy ``E_k = sum_{i<=k} s_i^2 / sum_i s_i^2`` for ``k = 1..m``; shape ``(m,)``.

    ``E_m = 1``. A zero matrix has no energy to share: ``ValueError``.
    """
    s = _spectrum(matrix_or_singular_values, "matrix_or_singular_values")
    e = s.square()
    total = e.sum()
    if total <= 0:
        raise ValueError("matrix_or_singular_values is zero: the energy fraction is undefined")
    out = torch.cumsum(e, 0) / total
    out[-1] = 1.0  # exact, despite round-off
    return out


def rank_for_energy(matrix_or_singular_values: ArrayLike, frac: float = 0.9) -> int:
    """Smallest ``k`` with ``E_k >= frac``: the rank that explains ``frac`` of ``||dW||_F^2``.

    ``frac`` must lie in ``(0, 1]``. With ``frac = 0.9`` this is the "rank needed to
    explain 90% of the variance" of Biderman et al. (2024). Equivalently, the best
    rank-``k`` approximation has relative squared Frobenius error ``<= 1 - frac``.
    """
    if isinstance(frac, bool) or not isinstance(frac, (int, float)):
        raise TypeError(f"frac must be a number in (0, 1], got {type(frac).__name__}")
    if not (0.0 < frac <= 1.0) or math.isnan(frac):
        raise ValueError(f"frac must be in (0, 1], got {frac}")
    e = energy_fraction(matrix_or_singular_values)
    # a relative tolerance of a few ulps so that e.g. an exact rank-k matrix gives k at frac = 1
    k = int(torch.searchsorted(e, torch.tensor([frac - 1e-12], dtype=e.dtype, device=e.device)).item())
    return min(k + 1, e.numel())


def effective_rank(matrix_or_singular_values: ArrayLike) -> float:
    """Roy and Vetterli's effective rank ``exp(-sum_i p_i log p_i)``, ``p_i = s_i / sum_j s_j``.

    Lies in ``[1, m]``: ``1`` for rank one, ``m`` when all singular values are equal.
    """
    s = _spectrum(matrix_or_singular_values, "matrix_or_singular_values")
    total = s.sum()
    if total <= 0:
        raise ValueError("matrix_or_singular_values is zero: the effective rank is undefined")
    p = s / total
    p = p[p > 0]
    return float(torch.exp(-(p * p.log()).sum()))


def stable_rank(matrix_or_singular_values: ArrayLike) -> float:
    """``||M||_F^2 / ||M||_2^2 = sum_i s_i^2 / s_1^2``, in ``[1, rank M]``."""
    s = _spectrum(matrix_or_singular_values, "matrix_or_singular_values")
    if s[0] <= 0:
        raise ValueError("matrix_or_singular_values is zero: the stable rank is undefined")
    return float(s.square().sum() / s[0] ** 2)


def top_subspace(matrix: ArrayLike, k: int, side: Literal["left", "right"] = "left") -> torch.Tensor:
    """Orthonormal basis of the top-``k`` singular subspace of ``matrix`` (out, in).

    ``side="left"``: ``U[:, :k]`` of shape ``(out, k)`` (output directions);
    ``side="right"``: ``V[:, :k]`` of shape ``(in, k)`` (input directions).
    """
    m = _as_matrix(matrix, "matrix")
    if isinstance(k, bool) or not isinstance(k, int):
        raise TypeError(f"k must be an int, got {type(k).__name__}")
    if not 1 <= k <= min(m.shape):
        raise ValueError(f"k must satisfy 1 <= k <= min(out, in) = {min(m.shape)}, got {k}")
    if side not in ("left", "right"):
        raise ValueError(f"side must be one of ('left', 'right'), got {side!r}")
    U, _, Vh = torch.linalg.svd(m, full_matrices=False)
    return U[:, :k] if side == "left" else Vh[:k].T


def subspace_overlap(U: ArrayLike, V: ArrayLike) -> float:
    """Overlap ``||Q_U^T Q_V||_F^2 / min(k, l)`` of the column spans of ``U`` (n, k) and ``V`` (n, l).

    The columns need not be orthonormal (they are orthonormalised by QR) but must be
    linearly independent. The result is the mean of ``cos^2`` of the ``min(k, l)``
    principal angles: ``1`` when the smaller span lies in the larger, ``0`` when they are
    orthogonal, and about ``max(k, l) / n`` on average for random subspaces.
    """
    a, b = _as_matrix(U, "U"), _as_matrix(V, "V")
    if a.shape[0] != b.shape[0]:
        raise ValueError(f"U and V must have the same number of rows (ambient dimension n), "
                         f"got U {tuple(a.shape)} and V {tuple(b.shape)}")
    for name, t in (("U", a), ("V", b)):
        if t.shape[1] > t.shape[0]:
            raise ValueError(f"{name} has more columns than rows {tuple(t.shape)}: "
                             "it cannot hold linearly independent columns")
    qa, ra = torch.linalg.qr(a)
    qb, rb = torch.linalg.qr(b)
    for name, r, t in (("U", ra, a), ("V", rb, b)):
        d = r.diagonal().abs()
        if (d <= 1e-10 * max(float(t.abs().max()), 1e-300)).any():
            raise ValueError(f"{name} has linearly dependent (or zero) columns")
    k = min(a.shape[1], b.shape[1])
    return float((qa.T @ qb).square().sum() / k)
