"""LoRA's relatives, one mechanism each (Chapter 10): LoRA-GA, and small matrix problems.

**LoRA-GA** (Wang, Yu, Li 2024, arXiv 2407.05000) initialises a LoRA layer from an
estimate ``G`` (out, in) of the full gradient of the loss with respect to the weight.
With ``G ~ U S V^T`` (top ``2r`` triplets) and the default direction "ArB2r":

    A = V[:, :r]^T  (r, in),      B = U[:, r:2r]  (out, r),

scaled by the "stable" factor ``c = out^{1/4} / sqrt(gamma)`` (``gamma = 16``), and the
frozen weight is corrected, ``W0 <- W0 - s B A``, so the model is unchanged at step 0.
Two published forms differ in the scale (both are here):

* ``form="authors"`` (``Outsider565/LoRA-GA``, its ``peft`` fork ``lora_ga_init``):
  ``A <- c A``, ``B <- c B``; singular values are not used.
* ``form="peft"`` (Hugging Face PEFT >= 0.18, ``LoraGAConfig`` defaults): ``B <- c B S[r:2r]``,
  ``A`` unscaled.

Why it helps (the paper's argument, written in lrkit's notation): one SGD step of size
``eta`` on ``A`` and ``B`` changes ``s B A`` by, to first order,

    Delta = -eta s^2 (G A^T A + B B^T G),

and with the authors' form ``G A^T A + B B^T G = c^2 (U_r S_r V_r^T + U_{r:2r} S_{r:2r}
V_{r:2r}^T) = c^2 G_{2r}``: the best rank-``2r`` approximation of ``G`` (Eckart-Young).
No rank-``k`` matrix has a larger cosine with ``G`` than ``G_k``, whose cosine is
``sqrt(sum_{i<=k} s_i^2 / sum_i s_i^2)`` (:func:`best_rank_cosine`).

The matrix problems below train ``W`` towards ``W*`` under the whitened-regression loss
``L(W) = ||W - W*||_F^2 / 2`` (gradient ``W - W*``), where every claim is exact.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import nn

from ._validate import positive_float, positive_int
from .env import cpu_seeded
from .galore import GaLoreAdamW
from .lora import LoRALinear

__all__ = ["best_rank_cosine", "cosine", "first_step_change", "lora_ga_factors", "lora_ga_init_",
           "matrix_galore_run", "matrix_lora_run", "truncate"]

FORMS = ("authors", "peft")


def cosine(X: torch.Tensor, Y: torch.Tensor) -> float:
    """``<X, Y>_F / (||X||_F ||Y||_F)`` for two tensors of one shape."""
    if X.shape != Y.shape:
        raise ValueError(f"X and Y must have one shape, got {tuple(X.shape)} and {tuple(Y.shape)}")
    return float((X * Y).sum() / (X.norm() * Y.norm()))


def truncate(G: torch.Tensor, k: int) -> torch.Tensor:
    """Best rank-``k`` approximation ``U_k S_k V_k^T`` of ``G`` (out, in) (Eckart-Young)."""
    k = positive_int(k, "k")
    U, S, Vh = torch.linalg.svd(G, full_matrices=False)
    best: torch.Tensor = (U[:, :k] * S[:k]) @ Vh[:k]
    return best


def best_rank_cosine(G: torch.Tensor, k: int) -> float:
    """``sqrt(sum_{i<=k} s_i^2 / sum_i s_i^2)``: the largest cosine a rank-``k`` matrix has with ``G``."""
    k = positive_int(k, "k")
    S = torch.linalg.svdvals(G)
    return float((S[:k].square().sum() / S.square().sum()).sqrt())


def first_step_change(A: torch.Tensor, B: torch.Tensor, G: torch.Tensor, scaling: float) -> torch.Tensor:
    """First-order change of ``s B A`` after one unit SGD step when ``dL/dW = G``.

    ``dL/dB = s G A^T``, ``dL/dA = s B^T G``, so ``Delta = -s^2 (G A^T A + B B^T G)`` (out, in).
    """
    if G.shape != (B.shape[0], A.shape[1]):
        raise ValueError(f"G must have shape (out, in) = {(B.shape[0], A.shape[1])}, got {tuple(G.shape)}")
    return -scaling ** 2 * (G @ A.T @ A + B @ B.T @ G)


def lora_ga_factors(grad: torch.Tensor, rank: int, form: str = "peft", stable_gamma: float = 16.0,
                    svd: str = "lowrank") -> tuple[torch.Tensor, torch.Tensor]:
    """LoRA-GA's ``(A, B)`` (shapes ``(r, in)``, ``(out, r)``) from a gradient estimate (out, in).

    ``svd="lowrank"`` is PEFT's ``torch.svd_lowrank(G, q=min(4r, min(G.shape)), niter=4)``
    (randomised: it draws from torch's global generator); ``svd="exact"`` a full SVD.
    """
    if form not in FORMS:
        raise ValueError(f"form must be one of {FORMS}, got {form!r}")
    if svd not in ("lowrank", "exact"):
        raise ValueError(f"svd must be 'lowrank' or 'exact', got {svd!r}")
    if not isinstance(grad, torch.Tensor) or grad.ndim != 2:
        raise ValueError("grad must be a 2-D tensor (out, in)")
    rank = positive_int(rank, "rank")
    if 2 * rank > min(grad.shape):
        raise ValueError(f"rank must satisfy 2 * rank <= min(out, in) = {min(grad.shape)}, got {rank}")
    gamma = positive_float(stable_gamma, "stable_gamma")
    g = grad.to(torch.float32) if form == "peft" else grad
    if svd == "lowrank":
        U, S, V = torch.svd_lowrank(g, q=min(4 * rank, min(g.shape)), niter=4)
        Vh = V.t()
    else:
        U, S, Vh = torch.linalg.svd(g, full_matrices=False)
    A = Vh[:rank, :]
    B = U[:, rank:2 * rank]
    c = grad.shape[0] ** 0.25 / math.sqrt(gamma)
    if form == "peft":
        return A, (B @ torch.diag(S[rank:2 * rank])) * c
    return A * c, B * c


@torch.no_grad()
def lora_ga_init_(layer: LoRALinear, grad: torch.Tensor, form: str = "peft", stable_gamma: float = 16.0,
                  svd: str = "lowrank") -> LoRALinear:
    """Initialise ``layer`` by LoRA-GA in place: set ``A``, ``B``, then ``W0 <- W0 - s B A``.

    ``grad`` is the (averaged) gradient of the loss with respect to the base weight (out, in).
    The layer's output is unchanged. Returns ``layer``.
    """
    if not isinstance(layer, LoRALinear):
        raise TypeError(f"layer must be an lrkit.LoRALinear, got {type(layer).__name__}")
    if layer.merged or layer.magnitude is not None:
        raise ValueError("layer must be an unmerged LoRALinear without DoRA")
    if grad.shape != layer.base.weight.shape:
        raise ValueError(f"grad must have the base weight's shape {tuple(layer.base.weight.shape)}, "
                         f"got {tuple(grad.shape)}")
    A, B = lora_ga_factors(grad, layer.rank, form, stable_gamma, svd)
    dtype = layer.base.weight.dtype
    A, B = A.to(dtype), B.to(dtype)
    layer.A.copy_(A)
    layer.B.copy_(B)
    w = layer.base.weight
    offset = layer.scaling * (B.float() @ A.float()) if form == "peft" else layer.scaling * (B @ A)
    w.copy_((w.float() - offset).to(dtype) if form == "peft" else w - offset)
    return layer


def _descend(loss_fn: Callable[[], torch.Tensor], opt: torch.optim.Optimizer, steps: int,
             dtype: torch.dtype) -> torch.Tensor:
    """``steps`` steps of ``opt`` on ``loss_fn()``; the loss before each step and after the last ``(steps + 1,)``."""
    losses = torch.empty(steps + 1, dtype=dtype)
    for t in range(steps + 1):
        loss = loss_fn()
        losses[t] = loss.detach()
        if t == steps:
            break
        opt.zero_grad()
        torch.autograd.backward(loss)
        opt.step()
    return losses


def matrix_lora_run(W0: torch.Tensor, W_star: torch.Tensor, rank: int, init: str = "A", steps: int = 500,
                    lr: float = 0.1, optimizer: str = "sgd", seed: int = 0) -> torch.Tensor:
    """Train ``W0 + s B A`` (``lrkit.LoRALinear``, ``init`` "A", "pissa" or "lora_ga") on
    ``L = ||W - W*||_F^2 / 2``; returns the loss before each step and after the last, ``(steps + 1,)``.

    "lora_ga" uses the exact gradient at step 0, ``G = W0 - W*``, the authors' form and an
    exact SVD. ``optimizer``: "sgd" (plain gradient descent) or "adam".
    """
    steps, lr = positive_int(steps, "steps"), positive_float(lr, "lr")
    if optimizer not in ("sgd", "adam"):
        raise ValueError(f"optimizer must be 'sgd' or 'adam', got {optimizer!r}")
    base = nn.utils.skip_init(  # type: ignore[no-untyped-call]  # built without drawing: W0 replaces it
        nn.Linear, W0.shape[1], W0.shape[0], bias=False, dtype=W0.dtype)
    with torch.no_grad():
        base.weight.copy_(W0)
    with cpu_seeded(seed):  # seeded draws; the caller's stream is left as it was
        layer = LoRALinear(base, rank, init="pissa" if init == "pissa" else "A")
    if init == "lora_ga":
        lora_ga_init_(layer, (W0 - W_star).detach(), form="authors", svd="exact")
    elif init not in ("A", "pissa"):
        raise ValueError(f"init must be 'A', 'pissa' or 'lora_ga', got {init!r}")
    params = [layer.A, layer.B]
    opt = torch.optim.SGD(params, lr=lr) if optimizer == "sgd" else torch.optim.Adam(params, lr=lr)
    return _descend(lambda: 0.5 * (layer.base.weight + layer.delta_weight() - W_star).square().sum(), opt, steps,
                    W0.dtype)


def matrix_galore_run(W0: torch.Tensor, W_star: torch.Tensor, rank: int | None, steps: int = 500,
                      lr: float = 0.01, update_proj_gap: int = 50, scale: float = 1.0) -> torch.Tensor:
    """Train the full ``W`` from ``W0`` on ``L = ||W - W*||_F^2 / 2`` with :class:`GaLoreAdamW`
    (``rank=None``: plain AdamW, the full-rank reference); returns the losses ``(steps + 1,)``."""
    steps, lr = positive_int(steps, "steps"), positive_float(lr, "lr")
    W = nn.Parameter(W0.detach().clone())
    group: dict[str, object] = {"params": [W]}
    if rank is not None:
        group.update(rank=positive_int(rank, "rank"), update_proj_gap=update_proj_gap, scale=scale,
                     proj_type="std")
    opt = GaLoreAdamW([group], lr=lr)
    return _descend(lambda: 0.5 * (W - W_star).square().sum(), opt, steps, W0.dtype)
