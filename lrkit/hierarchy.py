"""Hierarchically structured data for deep linear networks (Chapter 2, after Saxe et al. 2014, Fig. 3).

``P = 2^K`` items sit at the leaves of a binary tree of depth ``K``. Each node of the tree is a
feature, present (1) for the items below it and absent (0) otherwise: ``Y`` has shape
``(2^{K+1} - 1, P)`` (features x items). A deterministic simplification of Saxe et al.'s
diffusion process on a tree (ours): every level of the tree contributes the same features.

Inputs are the items, one-hot and scaled so that they are whitened (``x = sqrt(P) e_item``,
``E[x x^T] = I``), so ``Sigma31 = E[y x^T] = Y / sqrt(P)``. Its singular vectors are organised by the
tree: the input-side singular vectors are constant on subtrees (Haar functions), one for the
root (all items alike) and one per internal node (left subtree against right subtree), and the
singular value depends only on the node's depth ``l``: :func:`tree_modes` returns them grouped
into *levels*. Broader distinctions (small ``l``) have larger strengths, so a small-init deep
linear network learns them first.
"""

from __future__ import annotations

import math

import torch

from ._validate import positive_float, positive_int
from .env import get_device, to_device_dtype

__all__ = ["tree_features", "tree_modes", "level_strengths"]


def tree_features(levels: int) -> torch.Tensor:
    """``Y`` of shape ``(2^{levels+1} - 1, 2^levels)``: feature (node) x item, 1 where the item is below the node.

    Nodes are listed level by level (root first); ``levels >= 1``.
    """
    K = positive_int(levels, "levels")
    if K > 12:
        raise ValueError(f"levels must be <= 12 (2^levels items), got {K}")
    P = 2 ** K
    rows = []
    for depth in range(K + 1):
        width = P // 2 ** depth  # items below a node at this depth
        for node in range(2 ** depth):
            row = torch.zeros(P, dtype=torch.float64)
            row[node * width:(node + 1) * width] = 1.0
            rows.append(row)
    return torch.stack(rows)


def tree_modes(levels: int, scale: float = 1.0
               ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """The correlation ``Sigma31 = scale * Y / sqrt(P)`` of the tree data and its modes, grouped by level.

    Returns ``(Sigma31, U, V, s, level)``: ``Sigma31`` ``(F, P)``, ``U`` ``(F, P)``, ``V`` ``(P, P)``,
    strengths ``s`` ``(P,)`` (descending) and the tree level of each mode ``level`` ``(P,)``
    (0 = root: all items alike; ``l`` = the split at a node of depth ``l - 1``). Within a level the
    strengths are equal, so ``U`` and ``V`` are fixed only up to a rotation inside each level; any
    quantity per level (:func:`level_strengths`) does not depend on that choice. ``Sigma31``, ``U`` and
    ``V`` are on :func:`lrkit.get_device`, ``s`` and ``level`` on the CPU.
    """
    K = positive_int(levels, "levels")
    scale = positive_float(scale, "scale")
    Y = tree_features(K)
    P = Y.shape[1]
    sigma = scale * Y / math.sqrt(P)
    U, s, Vh = torch.linalg.svd(sigma, full_matrices=False)
    V = Vh.T
    # the level of a mode: the finest depth at which its input vector is not constant on subtrees
    level = torch.empty(P, dtype=torch.int64)
    for i in range(P):
        v = V[:, i]
        for depth in range(K + 1):
            width = P // 2 ** depth
            blocks = v.reshape(2 ** depth, width)
            if bool((blocks - blocks.mean(1, keepdim=True)).abs().max() < 1e-9):
                level[i] = depth
                break
    dev = get_device()  # in its widest dtype (float32 on MPS); s and level stay on the CPU
    sigma, U, V = (to_device_dtype(x, dev) for x in (sigma, U, V))
    return sigma, U, V, s, level


def level_strengths(W: torch.Tensor, U: torch.Tensor, V: torch.Tensor, level: torch.Tensor) -> torch.Tensor:
    """The mean mode strength of ``W`` on each level, ``tr(U_l^T W V_l) / m_l`` (rotation-invariant in a level).

    ``W`` ``(..., F, P)``; returns ``(..., levels + 1)``.
    """
    diag = torch.diagonal(U.T @ W @ V, dim1=-2, dim2=-1)  # (..., P)
    n_levels = int(level.max()) + 1
    out = [diag[..., (level == l).to(diag.device)].mean(-1) for l in range(n_levels)]
    return torch.stack(out, -1)
