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

* intruder dimensions (Shuttleworth et al. 2024): top singular directions of a fine-tuned
  matrix that are far (``max |cos| < eps``) from every singular direction of the base matrix;
  ``reduce_intruders`` scales them down as PEFT's ``reduce_intruder_dimension`` does.

Every function accepts a ``torch.Tensor`` (on any device) or anything ``torch.as_tensor``
takes (NumPy arrays, lists); computations run in float64 on the CPU (the matrices of this
course are small, and MPS has no float64), and tensors come back on the CPU.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Literal

import numpy as np
import torch

from ._validate import as_int, as_real

ArrayLike = torch.Tensor | np.ndarray | Sequence[float] | Sequence[Sequence[float]]

__all__ = [
    "singular_values", "energy_fraction", "rank_for_energy", "effective_rank", "stable_rank",
    "top_subspace", "subspace_overlap", "intruder_dimensions", "reduce_intruders",
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
    s: torch.Tensor = torch.linalg.svdvals(_as_matrix(matrix, "matrix"))
    return s


def _spectrum(matrix_or_singular_values: ArrayLike, name: str) -> torch.Tensor:
    """A 2-D input is a matrix (its singular values are taken); a 1-D input is a spectrum."""
    t = _as_tensor(matrix_or_singular_values, name)
    if t.ndim == 2:
        s: torch.Tensor = torch.linalg.svdvals(t)
        return s
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
    frac = as_real(frac, "frac", "a number in (0, 1]")
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
    k = as_int(k, "k")
    if not 1 <= k <= min(m.shape):
        raise ValueError(f"k must satisfy 1 <= k <= min(out, in) = {min(m.shape)}, got {k}")
    if side not in ("left", "right"):
        raise ValueError(f"side must be one of ('left', 'right'), got {side!r}")
    U, _, Vh = torch.linalg.svd(m, full_matrices=False)
    basis: torch.Tensor = U[:, :k] if side == "left" else Vh[:k].T
    return basis


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


# --------------------------------------------------------------------------- intruder dimensions (Chapter 8)
def intruder_dimensions(W0: ArrayLike, W: ArrayLike, k: int = 10, eps: float = 0.5) -> tuple[int, torch.Tensor]:
    """Intruder dimensions of a fine-tuned matrix ``W`` against its base ``W0`` (Shuttleworth et al. 2024).

    With the thin SVDs ``W0 = U0 S0 V0^T`` and ``W = U S V^T`` (both (out, in); the *left*
    singular vectors, the output space, as in the authors' ``find_intruder_dimensions.py``):

        max_cos_j = max_i |<U[:, j], U0[:, i]>|   over *all* base singular vectors i,  j = 1..k,

    and the tuned direction ``j`` (among the top ``k``) is an intruder when ``max_cos_j < eps``.
    Returns ``(count, max_cos)`` with ``max_cos`` of shape ``(min(k, m),)``, ``m = min(out, in)``.
    The model's count is the sum of the counts over its adapted matrices (LoRA merged first).
    """
    a, b = _as_matrix(W0, "W0"), _as_matrix(W, "W")
    if a.shape != b.shape:
        raise ValueError(f"W0 and W must have the same shape (out, in), got {tuple(a.shape)} and {tuple(b.shape)}")
    if isinstance(k, bool) or not isinstance(k, int):
        raise TypeError(f"k must be an int, got {type(k).__name__}")
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    if isinstance(eps, bool) or not isinstance(eps, (int, float)) or not 0.0 < eps <= 1.0:
        raise ValueError(f"eps must be a number in (0, 1], got {eps!r}")
    U0 = torch.linalg.svd(a, full_matrices=False)[0]
    U = torch.linalg.svd(b, full_matrices=False)[0]
    max_cos = (U.T @ U0).abs().max(dim=1).values[:k]
    return int((max_cos < eps).sum()), max_cos


def reduce_intruders(W0: ArrayLike, W: ArrayLike, rank: int | None = None, k: int = 10, eps: float = 0.5,
                     lam: float = 0.75) -> torch.Tensor:
    """Scale the intruder dimensions of ``W`` down by ``lam``, as PEFT's ``reduce_intruder_dimension`` does.

    With ``W = U S V^T`` and ``I`` the intruders among its top ``k`` directions
    (:func:`intruder_dimensions`), ``W_mit = W + (lam - 1) sum_{j in I} s_j u_j v_j^T``. PEFT then
    re-factorises the new update ``W_mit - W0`` to the adapter's rank; with ``rank`` given, the
    returned weight is ``W0 + (best rank-``rank`` approximation of W_mit - W0)``, else ``W_mit``.
    ``lam = 1`` changes nothing; ``lam = 0`` removes the intruders. Returns a float64 (out, in) tensor.
    """
    a, b = _as_matrix(W0, "W0"), _as_matrix(W, "W")
    _, max_cos = intruder_dimensions(a, b, k, eps)
    if isinstance(lam, bool) or not isinstance(lam, (int, float)) or not math.isfinite(lam):
        raise ValueError(f"lam must be a finite number, got {lam!r}")
    U, s, Vh = torch.linalg.svd(b, full_matrices=False)
    idx = torch.nonzero(max_cos < eps).flatten()
    mitigated: torch.Tensor = b + (lam - 1.0) * (U[:, idx] * s[idx]) @ Vh[idx]
    if rank is None:
        return mitigated
    if isinstance(rank, bool) or not isinstance(rank, int) or not 1 <= rank <= min(a.shape):
        raise ValueError(f"rank must be None or an int in [1, {min(a.shape)}], got {rank!r}")
    Ud, sd, Vhd = torch.linalg.svd(mitigated - a, full_matrices=False)
    refactored: torch.Tensor = a + (Ud[:, :rank] * sd[:rank]) @ Vhd[:rank]
    return refactored
