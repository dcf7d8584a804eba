"""LoRA initialisation schemes, one name each.

For a layer ``y = W0 x + s B A x`` with ``A`` of shape ``(r, in)``, ``B`` of shape
``(out, r)`` and scaling ``s``:

========== ============================================ ===========================
name       A                                            B
========== ============================================ ===========================
"A"        Kaiming-uniform, ``a = sqrt 5``:             0
           ``U(-1/sqrt(in), 1/sqrt(in))`` (PEFT default)
"B"        0                                            Kaiming-uniform on B's own
                                                        shape: ``U(-1/sqrt(r), 1/sqrt(r))``
"gaussian" ``N(0, 1/r^2)`` (PEFT's "gaussian": std 1/r) 0
"pissa"    ``sqrt(S_r / s) V_r^T``                      ``U_r sqrt(S_r / s)``
========== ============================================ ===========================

Random draws are made on the CPU (from torch's CPU stream) and copied to the adapter's device,
so a seed gives the same adapters on CPU, CUDA and MPS.

"A" and "B" are Init[A] and Init[B] of Hayou, Ghosh and Yu (2024); both make
``B A = 0``, so the adapted model equals the pretrained one at step 0.
PiSSA (Meng et al. 2024) takes the top-r singular triplets of ``W0 = U S V^T``
into the adapter and replaces the frozen weight by the residual
``W_res = W0 - s B A``, so the output is again unchanged at step 0.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import nn

__all__ = ["INIT_SCHEMES", "InitFn", "check_init_name", "init_lora_"]


@torch.no_grad()
def _on_cpu(t: torch.Tensor, draw: Callable[[torch.Tensor], object]) -> None:
    """Fill ``t`` by ``draw`` on the CPU stream: in place on the CPU, else drawn on the CPU and copied."""
    if t.device.type == "cpu":
        draw(t)
    else:
        tmp = torch.empty(t.shape, dtype=t.dtype)
        draw(tmp)
        t.copy_(tmp)


@torch.no_grad()
def _init_a(A: torch.Tensor, B: torch.Tensor, W0: torch.Tensor, scaling: float) -> None:
    _on_cpu(A, lambda t: nn.init.kaiming_uniform_(t, a=math.sqrt(5)))
    B.zero_()


@torch.no_grad()
def _init_b(A: torch.Tensor, B: torch.Tensor, W0: torch.Tensor, scaling: float) -> None:
    A.zero_()
    _on_cpu(B, lambda t: nn.init.kaiming_uniform_(t, a=math.sqrt(5)))


@torch.no_grad()
def _init_gaussian(A: torch.Tensor, B: torch.Tensor, W0: torch.Tensor, scaling: float) -> None:
    _on_cpu(A, lambda t: nn.init.normal_(t, std=1.0 / A.shape[0]))
    B.zero_()


@torch.no_grad()
def _init_pissa(A: torch.Tensor, B: torch.Tensor, W0: torch.Tensor, scaling: float) -> None:
    r = A.shape[0]
    dtype = W0.dtype
    W = W0.to(torch.float32 if dtype in (torch.float16, torch.bfloat16) else dtype)
    if W.device.type == "mps":  # MPS has no SVD: compute it on the CPU and bring the factors back
        U, S, Vh = (f.to(W.device) for f in torch.linalg.svd(W.cpu(), full_matrices=False))
    else:
        U, S, Vh = torch.linalg.svd(W, full_matrices=False)
    root = torch.sqrt(S[:r] / scaling)
    A.copy_(root[:, None] * Vh[:r])  # (r, in)
    B.copy_(U[:, :r] * root[None, :])  # (out, r)
    W0.sub_((scaling * (B @ A)).to(dtype))  # frozen residual


InitFn = Callable[[torch.Tensor, torch.Tensor, torch.Tensor, float], None]

INIT_SCHEMES: dict[str, InitFn] = {
    "A": _init_a,
    "B": _init_b,
    "gaussian": _init_gaussian,
    "pissa": _init_pissa,
}


def check_init_name(init: str) -> str:
    """Return ``init`` if it names a scheme, else raise a ``ValueError`` listing them."""
    if not isinstance(init, str) or init not in INIT_SCHEMES:
        raise ValueError(f"init must be one of {sorted(INIT_SCHEMES)}, got {init!r}")
    return init


def init_lora_(A: torch.Tensor, B: torch.Tensor, W0: torch.Tensor, scaling: float, init: str = "A") -> None:
    """Initialise ``A`` (r, in) and ``B`` (out, r) in place; "pissa" also rewrites ``W0`` (out, in)."""
    INIT_SCHEMES[check_init_name(init)](A, B, W0, scaling)
