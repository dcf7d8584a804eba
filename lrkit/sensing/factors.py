"""Factorised gradient descent for matrix sensing: initial factors, one step, the imbalance (Chapter 4).

``M`` is never a free matrix; it is a product:

* symmetric, ``M = X X^T`` with ``X: (n, r)``; ``grad_X = (G + G^T) X`` with ``G = grad L(X X^T)``
  (``G`` is not symmetric when the ``Z_i`` are not);
* asymmetric, ``M = s B A`` with ``B: (n1, r)``, ``A: (r, n2)`` and a fixed scale ``s`` (LoRA's
  ``alpha / r``; ``s = 1`` is the paper's ``F G^T`` with ``B = F``, ``A = G^T``):
  ``grad_B = s G A^T``, ``grad_A = s B^T G``.

``r = r*`` is *exact* parameterisation, ``r > r*`` *over*-parameterisation. Initial factors:
the paper's Gaussian ones, ``X ~ omega N(0, 1)``; ``B ~ omega N(0, 1)``, ``A ~ (omega / 3) N(0, 1)``
(the paper initialises ``F`` at ``alpha`` and ``G`` at ``alpha / 3``; ``omega`` is its ``alpha``),
or LoRA's Init[A] / Init[B] drawn by :mod:`lrkit.init` (:func:`init_lora_factors`).

**The imbalance** ``Delta = B^T B - A A^T`` (``(r, r)``) is conserved by gradient flow for every
``s`` (both ``d(B^T B)/dt`` and ``d(A A^T)/dt`` equal ``-s (B^T G A^T + A G^T B)``), and changes
by ``O(lr^2)`` per GD step. In a redundant inner direction ``u`` (one the target does not
need) the product decays; whichever factor keeps its size there carries the imbalance, and
the error in that direction decays linearly at ``2 lr s^2 delta`` per step, ``delta`` the
imbalance compressed to the redundant subspace (our derivation; :func:`redundant_subspace`,
:func:`compressed_imbalance`). :func:`redundant_rate` adds the sensing operator's own
curvature on the redundant directions (the RIP correction), from the Gram matrix.
"""

from __future__ import annotations

import math

import torch

from .._validate import positive_float, positive_int
from ..env import cpu_on_mps, cpu_seeded, generator
from ..init import init_lora_
from .problem import DTYPE, SensingProblem

A_RATIO = 1.0 / 3.0  # scale of A relative to B at initialisation (the paper: G at alpha / 3)
LORA_INITS: tuple[str, ...] = ("A", "B")

__all__ = ["A_RATIO", "LORA_INITS", "check_rank", "init_symmetric", "init_asymmetric", "init_lora_factors",
           "symmetric_step", "asymmetric_step", "imbalance", "rebalance", "redundant_subspace",
           "compressed_imbalance", "redundant_rate"]


def check_rank(r: int, problem: SensingProblem) -> int:
    """``r`` if ``r_star <= r <= min(n1, n2)``, else a ``ValueError`` naming ``r``."""
    positive_int(r, "r")
    if r < problem.r_star:
        raise ValueError(f"r must be >= r_star = {problem.r_star} (a rank-{r} product cannot reach M*), got {r}")
    if r > min(problem.n1, problem.n2):
        raise ValueError(f"r must be <= min(n1, n2) = {min(problem.n1, problem.n2)}, got {r}")
    return r


def init_symmetric(n: int, r: int, omega: float, seed: int = 0) -> torch.Tensor:
    """``X (n, r)`` with i.i.d. ``omega N(0, 1)`` entries, from a CPU generator seeded ``seed``."""
    positive_int(n, "n")
    positive_int(r, "r")
    return positive_float(omega, "omega") * torch.randn(n, r, generator=generator(seed), dtype=DTYPE)


def init_asymmetric(n1: int, n2: int, r: int, omega: float, seed: int = 0,
                    a_ratio: float = A_RATIO) -> tuple[torch.Tensor, torch.Tensor]:
    """``B (n1, r) ~ omega N(0, 1)`` and ``A (r, n2) ~ a_ratio omega N(0, 1)`` (paper: ratio 1/3)."""
    for v, name in ((n1, "n1"), (n2, "n2"), (r, "r")):
        positive_int(v, name)
    omega, a_ratio = positive_float(omega, "omega"), positive_float(a_ratio, "a_ratio")
    g = generator(seed)
    B = omega * torch.randn(n1, r, generator=g, dtype=DTYPE)
    return B, a_ratio * omega * torch.randn(r, n2, generator=g, dtype=DTYPE)


def init_lora_factors(n1: int, n2: int, r: int, init: str = "A", seed: int = 0
                      ) -> tuple[torch.Tensor, torch.Tensor]:
    """LoRA's initial factors for an ``n1 x n2`` update, drawn by :func:`lrkit.init.init_lora_`.

    ``init="A"`` (PEFT's default): ``B = 0``, ``A ~ U(-1/sqrt(n2), 1/sqrt(n2))``, so
    ``Delta_0 = -A A^T ~ -(1/3) I``. ``init="B"``: ``A = 0``, ``B ~ U(-1/sqrt(r), 1/sqrt(r))``,
    so ``Delta_0 = B^T B ~ (n1 / 3r) I``: ``n1 / r`` times larger. Seeded (the global torch
    generator is forked, not disturbed); float64 on the CPU.
    """
    for v, name in ((n1, "n1"), (n2, "n2"), (r, "r")):
        positive_int(v, name)
    if init not in LORA_INITS:
        raise ValueError(f"init must be one of {LORA_INITS} (Init[A] or Init[B]), got {init!r}")
    A = torch.empty(r, n2, dtype=DTYPE)
    B = torch.empty(n1, r, dtype=DTYPE)
    with cpu_seeded(seed):
        init_lora_(A, B, torch.zeros(n1, n2, dtype=DTYPE), 1.0, init)
    return B, A


def symmetric_step(problem: SensingProblem, X: torch.Tensor, lr: float) -> torch.Tensor:
    """One GD step on ``L(X X^T)``: ``X - lr (G + G^T) X``, ``G = grad L(X X^T)``; ``X (..., n, r)``."""
    G = problem.gradient(X @ X.transpose(-2, -1))
    return X - lr * (G + G.transpose(-2, -1)) @ X


def asymmetric_step(problem: SensingProblem, B: torch.Tensor, A: torch.Tensor, lr: float,
                    scale: float | torch.Tensor = 1.0) -> tuple[torch.Tensor, torch.Tensor]:
    """One simultaneous GD step on ``L(s B A)``: ``B - lr s G A^T``, ``A - lr s B^T G``, ``G = grad L(s B A)``.

    ``B (..., n1, r)``, ``A (..., r, n2)``; ``scale`` a number or a ``(..., 1, 1)`` tensor.
    """
    G = scale * problem.gradient(scale * (B @ A))
    return B - lr * G @ A.transpose(-2, -1), A - lr * B.transpose(-2, -1) @ G


def imbalance(B: torch.Tensor, A: torch.Tensor) -> torch.Tensor:
    """``B^T B - A A^T`` (``(..., r, r)``): constant under gradient flow, nearly so under small-step GD."""
    return B.transpose(-2, -1) @ B - A @ A.transpose(-2, -1)


def rebalance(B: torch.Tensor, A: torch.Tensor, floor: torch.Tensor | float,
              active: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Lift ``B``'s small singular values to ``floor`` and compensate in ``A``: ``B' A' = B A``.

    With ``B = U S V^T`` (thin SVD), ``S' = max(S, floor)``::

        B' = U S' V^T,    A' = V (S / S') V^T A,    so  B' A' = U S V^T A = B A.

    The redundant directions of an over-parameterised run have ``B``-singular values of order
    ``omega`` and ``A``-components decaying to zero; after the lift their imbalance is
    ``floor^2`` instead of ``omega^2``, and so is their linear rate. **Our construction**: one
    modification of one step, in the spirit of Xiong, Ding and Du's Section 5, whose exact
    form we could not check. ``floor``: a number or a ``(...)`` tensor (one per configuration);
    ``active (..., r)`` (bool) marks the singular values that may be lifted (padding excluded).
    """
    U, S, Vh = cpu_on_mps(lambda b: torch.linalg.svd(b, full_matrices=False), B)  # MPS may lack svd
    floor_t = torch.as_tensor(floor, dtype=S.dtype, device=S.device)
    floor_t = floor_t.reshape(floor_t.shape + (1,) * (S.ndim - floor_t.ndim))
    lifted = torch.maximum(S, floor_t)
    if active is not None:
        lifted = torch.where(active, lifted, S)
    ratio = torch.where(lifted > 0, S / torch.where(lifted > 0, lifted, torch.ones_like(lifted)),
                        torch.ones_like(S))
    V = Vh.transpose(-2, -1)
    B_new = (U * lifted.unsqueeze(-2)) @ Vh
    A_new = (V * ratio.unsqueeze(-2)) @ (Vh @ A)
    return B_new, A_new


def _sides(B: torch.Tensor, A: torch.Tensor, delta0: torch.Tensor) -> tuple[torch.Tensor, bool]:
    """The Gram matrix of the factor that decays in redundant directions, and whether it is ``A``."""
    a_decays = bool(torch.trace(delta0) > 0)  # Delta > 0: B keeps its size, A's redundant rows vanish
    return (A @ A.T if a_decays else B.T @ B), a_decays


def redundant_subspace(B: torch.Tensor, A: torch.Tensor, r_star: int, delta0: torch.Tensor) -> torch.Tensor:
    """An orthonormal basis ``Q (r, r - r*)`` of the inner directions the product no longer uses.

    ``B (n1, r)`` and ``A (r, n2)`` late in a run (the target learned); ``delta0 (r, r)`` the
    imbalance at step 0, whose sign says which factor decays there: with ``Delta > 0`` the
    redundant rows of ``A`` vanish (the ``r - r*`` smallest eigenvectors of ``A A^T``), with
    ``Delta < 0`` the redundant columns of ``B`` (of ``B^T B``).
    """
    r = B.shape[-1]
    if not 1 <= r_star < r:
        raise ValueError(f"r_star must satisfy 1 <= r_star < r = {r} (over-parameterised), got {r_star}")
    B, A = B.to(delta0), A.to(delta0)  # a run's factors may be float32 (MPS); delta0 is CPU float64
    gram, _ = _sides(B, A, delta0)
    basis: torch.Tensor = torch.linalg.eigh(gram)[1][:, : r - r_star]
    return basis


def compressed_imbalance(delta0: torch.Tensor, Q: torch.Tensor) -> float:
    """``min |eig(Q^T Delta_0 Q)|``: the imbalance the slowest redundant direction keeps.

    The predicted linear rate of the error is ``2 lr s^2`` times this (factorisation limit).
    """
    Q = Q.to(delta0)  # a run's factors are float32 on MPS; delta0 is kept in float64 on the CPU
    return float(torch.linalg.eigvalsh(Q.T @ delta0 @ Q).abs().min())


def redundant_rate(problem: SensingProblem, B: torch.Tensor, A: torch.Tensor, Q: torch.Tensor,
                   delta0: torch.Tensor, lr: float, scale: float = 1.0) -> float:
    """Predicted per-step rate of ``||M_t - M*||^2`` from the redundant directions, RIP included.

    With the decaying factor's redundant part ``A_K = Q^T A`` (or ``B_K = B Q``) and the other
    one's, ``B_K = B Q`` (``A_K``), held fixed, the error ``s B_K A_K`` obeys the linear map
    ``A_K <- A_K - lr s^2 B_K^T gram(B_K A_K)``; its smallest eigenvalue ``h`` gives the rate
    ``-2 ln(1 - lr h)`` (``~ 2 lr h``). In the factorisation limit (``gram = I``) ``h`` is
    ``s^2 min eig(Q^T Delta_0 Q)``. (Our derivation.)
    """
    lr = positive_float(lr, "lr")
    B, A, Q = (t.cpu().to(DTYPE) for t in (B, A, Q))  # theory on the CPU in float64, whatever the run's dtype
    _, a_decays = _sides(B, A, delta0)
    n1, n2 = problem.n1, problem.n2
    gram = problem.gram.cpu().to(DTYPE)
    if a_decays:  # e = B_K A_K with A_K the variable: vec_row(B_K A_K) = kron(B_K, I_n2) vec_row(A_K)
        J = torch.kron((B @ Q).contiguous(), torch.eye(n2, dtype=DTYPE))
    else:  # B_K the variable: kron(I_n1, A_K^T)
        J = torch.kron(torch.eye(n1, dtype=DTYPE), (Q.T @ A).T.contiguous())
    h = float(torch.linalg.eigvalsh(scale ** 2 * J.T @ gram @ J).min())
    if not 0 < lr * h < 1:
        raise ValueError(f"lr * h = {lr * h:.3g} must lie in (0, 1) for a monotone linear rate")
    return -2.0 * math.log(1.0 - lr * h)
