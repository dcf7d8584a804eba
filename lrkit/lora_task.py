"""The toy fine-tuning task of Chapters 5 and 6: one frozen layer, a low-rank target change.

A frozen "pretrained" layer of width ``n`` reads features ``z = W_in x``
(``x`` in R^d, ``W_in`` (n, d) with entries N(0, 1/d), so every entry of ``z`` is of order 1).
Fine-tuning must add a rank-``r*`` change ``dW* = U V^T`` (``U`` (n, r*) entries N(0, 1),
``V`` (n, r*) entries N(0, 1/n)), so the target change of the layer's output, ``y = dW* z``,
has entries of order 1 too. A LoRA adapter learns it:

    L(A, B) = 1/(2 n N) * sum_samples || s B A z - dW* z ||^2,   A: (r, n), B: (n, r),

with ``s = alpha / r`` (``alpha = None`` means ``s = 1``). The base weight cancels from the
loss, so only the LoRA branch ``s B A z`` is simulated. With ``Z`` (N, n) the samples,
``Y = dW* Z^T`` (n, N), ``P = A Z^T`` (r, N) and ``E = s B P - Y`` (n, N):

    L = ||E||_F^2 / (2 n N),   dL/dB = s E P^T / (n N),   dL/dA = s B^T E Z / (n N).

*How it is computed.* Two exact rewritings keep the ``(K, n, N)`` error tensor out of memory.
(i) The samples span only ``m = rank(Z) <= d`` directions: with the thin SVD ``Z = U S V^T``
the "virtual samples" ``Zr = S V^T`` (m, n) and targets ``Yr = Y U`` (n, m) give the same
loss and gradients. (ii) Sufficient statistics: ``||E||^2 = s^2 <B^T B, P P^T> - 2 s <B^T Yr, P>
+ ||Yr||^2`` (the small ``r x r`` and ``r x m`` products in :func:`lrkit.env.float_dtype`:
float64, float32 on MPS), ``E P^T = s B (P P^T) - Yr P^T`` and ``B^T E = s (B^T B) P - B^T Yr``.
A step costs a few batched products of size ``K r n m`` (:func:`lrkit.sweep.run_lora_sweep`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from ._validate import check_device, positive_int
from .env import generator

__all__ = ["LoRATask", "lora_task"]


@dataclass(frozen=True)
class LoRATask:
    """Features ``Z`` (N, n), targets ``Y = dW* Z^T`` (n, N), reduced ``Zr`` (m, n), ``Yr`` (n, m)."""

    Z: torch.Tensor
    Y: torch.Tensor
    teacher: torch.Tensor  # dW*, (n, n), rank r*
    Zr: torch.Tensor
    Yr: torch.Tensor

    @property
    def width(self) -> int:
        return self.Z.shape[1]

    @property
    def samples(self) -> int:
        return self.Z.shape[0]

    @property
    def initial_loss(self) -> float:
        """The loss of every configuration at step 0 (``B A = 0``): ``mean(Y^2) / 2``."""
        return 0.5 * self.Y.square().mean().item()


def lora_task(width: int, d: int = 16, samples: int = 32, teacher_rank: int = 2, seed: int = 0,
              device: torch.device | str | None = None) -> LoRATask:
    """The task of the module docstring at width ``n = width``, drawn from ``seed``.

    Drawn and reduced on the CPU (the SVD in float64), then moved to ``device`` in float32, so a
    seed gives the same task on every device.
    """
    n, d = positive_int(width, "width"), positive_int(d, "d")
    N, k = positive_int(samples, "samples"), positive_int(teacher_rank, "teacher_rank")
    if k > min(n, d):
        raise ValueError(f"teacher_rank must satisfy 1 <= teacher_rank <= min(width, d) = "
                         f"{min(n, d)}, got {k}")
    g = generator(seed)
    x = torch.randn(N, d, generator=g)
    w_in = torch.randn(n, d, generator=g) / math.sqrt(d)
    U = torch.randn(n, k, generator=g)
    V = torch.randn(n, k, generator=g) / math.sqrt(n)
    dev = check_device(device)
    Z = x @ w_in.T
    teacher = U @ V.T
    Y = teacher @ Z.T
    u, sv, vh = torch.linalg.svd(Z.double(), full_matrices=False)
    m = int((sv > sv[0] * 1e-6).sum())
    Zr = (sv[:m, None] * vh[:m]).float()          # (m, n): Zr^T Zr = Z^T Z
    Yr = (Y.double() @ u[:, :m]).float()          # (n, m): Yr Zr = Y Z
    return LoRATask(*(t.to(dev) for t in (Z, Y, teacher, Zr, Yr)))


