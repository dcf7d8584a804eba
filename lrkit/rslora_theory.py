"""The rank-scaling experiment's theory (Chapter 1): floors, the exact reparametrisation, the first step.

Everything here is CPU-side arithmetic in float64 on the teacher ``T`` (out, in) and the
configurations' ranks and scales; :mod:`lrkit.rslora` trains the layers it predicts and
re-exports these names. The best rank-``r`` update leaves the Eckart-Young floor
``sum_{i>r} sigma_i^2 / sum_i sigma_i^2`` of the loss (:func:`eckart_young_floor`).

**The reparametrisation** (exact; our derivation). Put ``B' = sqrt(s) B``, ``A' = sqrt(s) A``: then
``s B A = B' A'``, ``grad_B' = grad_B / sqrt(s)`` and one step of rate ``eta`` on ``(A, B)``

* under gradient descent is a step of rate ``eta s`` on ``(A', B')``;
* under Adam (blind to a gradient's scale up to its ``eps``) is a step of rate ``eta sqrt(s)``,

both from the initialisation ``(sqrt(s) A0, 0)``. :func:`equivalent_config` returns the rate and
the initial-scale factor that make a run with one scale follow a run with another exactly.

**The first step** from Init[A] (``B = 0``; ``A`` uniform with variance ``sigma_A^2 = 1/(3 n_in)``),
to first order in ``eta`` (:func:`first_step_theory`), in expectation over ``A``:

* gradient descent: ``E[(L0 - L1)/L0] = 2 eta s^2 r sigma_A^2``;
* Adam (its first step is ``eta sign(grad)``):
  ``E[(L0 - L1)/L0] = eta s r sigma_A sqrt(2/pi) sum_i ||T_i.|| / L0``;

and the gradient's size at step 0 is ``||grad_B|| ~ s sqrt(r) sigma_A ||T||_F`` (:func:`grad_norm_theory`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Literal

import torch

from ._validate import as_int, choice, positive_float, positive_int
from .init import check_init_name

Optimizer = Literal["sgd", "adam"]
OPTIMIZERS: tuple[str, ...] = ("sgd", "adam")

__all__ = ["eckart_young_floor", "init_std", "first_step_theory", "grad_norm_theory", "ratio_spread",
           "equivalent_config", "time_to_reach"]


def eckart_young_floor(teacher: torch.Tensor, ranks: Sequence[int]) -> torch.Tensor:
    """Best relative loss of a rank-``r`` update, ``sum_{i>r} sigma_i^2 / sum_i sigma_i^2``, per rank.

    ``teacher`` (out, in); each rank in ``0 <= r <= min(out, in)`` (rank 0 leaves everything: 1).
    """
    if not isinstance(teacher, torch.Tensor) or teacher.ndim != 2:
        raise ValueError(f"teacher must be a 2-D tensor (out, in), got {getattr(teacher, 'shape', teacher)!r}")
    m = min(teacher.shape)
    if isinstance(ranks, (str, bytes)) or not hasattr(ranks, "__iter__") or getattr(ranks, "ndim", 1) == 0:
        raise TypeError(f"ranks must be a sequence of ranks, got {type(ranks).__name__}")
    rs = [as_int(r, "ranks[i]") for r in ranks]
    if not rs or not all(0 <= r <= m for r in rs):
        raise ValueError(f"ranks must be a non-empty list of ints with 0 <= r <= min(out, in) = {m}, got {rs}")
    s2 = torch.linalg.svdvals(teacher.detach().cpu().to(torch.float64)).square()
    tail = torch.cat([s2.sum().view(1), s2.sum() - torch.cumsum(s2, 0)])  # tail[r] = sum_{i>r} sigma_i^2
    return torch.stack([tail[r] / s2.sum() for r in rs])


def init_std(n_in: int, init: str = "A", rank: int = 1) -> float:
    """Standard deviation of an entry of ``A`` at step 0: ``1/sqrt(3 n_in)`` (Init[A]) or ``1/r`` ("gaussian")."""
    check_init_name(init)
    if init == "A":
        return 1.0 / math.sqrt(3 * positive_int(n_in, "n_in"))
    if init == "gaussian":
        return 1.0 / positive_int(rank, "rank")
    raise ValueError(f"init must be 'A' or 'gaussian' here (B = 0 at step 0), got {init!r}")


def first_step_theory(teacher: torch.Tensor, ranks: Sequence[int], scaling: Sequence[float], lr: float,
                      optimizer: Optimizer = "sgd", sigma_a: float | None = None) -> torch.Tensor:
    """Expected first-order relative loss drop of the first step, per configuration (see the module doc).

    ``sigma_a`` is the standard deviation of ``A``'s entries (default Init[A]'s ``1/sqrt(3 n_in)``).
    """
    choice(optimizer, "optimizer", OPTIMIZERS)
    lr = positive_float(lr, "lr")
    T = teacher.detach().cpu().double()
    sig = init_std(T.shape[1]) if sigma_a is None else positive_float(sigma_a, "sigma_a")
    r = torch.tensor([float(positive_int(v, "ranks[i]")) for v in ranks], dtype=torch.float64)
    s = torch.tensor([positive_float(v, "scaling[i]") for v in scaling], dtype=torch.float64)
    if optimizer == "sgd":
        return 2 * lr * s**2 * r * sig**2
    L0 = 0.5 * T.square().sum()
    adam: torch.Tensor = lr * s * r * sig * math.sqrt(2 / math.pi) * T.norm(dim=1).sum() / L0
    return adam


def grad_norm_theory(teacher: torch.Tensor, ranks: Sequence[int], scaling: Sequence[float],
                     sigma_a: float | None = None) -> torch.Tensor:
    """``||grad_B||`` at step 0, ``s sqrt(r) sigma_A ||T||_F`` (root mean square over ``A``), per configuration."""
    T = teacher.detach().cpu().double()
    sig = init_std(T.shape[1]) if sigma_a is None else positive_float(sigma_a, "sigma_a")
    r = torch.tensor([float(positive_int(v, "ranks[i]")) for v in ranks], dtype=torch.float64)
    s = torch.tensor([positive_float(v, "scaling[i]") for v in scaling], dtype=torch.float64)
    out: torch.Tensor = s * r.sqrt() * sig * T.norm()
    return out


def ratio_spread(teacher: torch.Tensor, rank: int = 1, draws: int = 1) -> float:
    """Predicted standard deviation of (measured / expected) first GD step drop, mean of ``draws`` draws.

    ``||T a||^2`` for one row ``a`` of ``A`` with i.i.d. entries has relative variance at most
    ``2 sum_i sigma_i^4 / (sum_i sigma_i^2)^2`` (Gaussian entries; uniform ones give less); ``A``
    has ``rank`` independent rows and the mean is over ``draws`` independent ``A``.
    """
    s2 = torch.linalg.svdvals(teacher.detach().cpu().double()).square()
    rel_var = 2 * float(s2.square().sum() / s2.sum() ** 2)
    return math.sqrt(rel_var / (positive_int(rank, "rank") * positive_int(draws, "draws")))


def equivalent_config(s_from: float, s_to: float, lr: float, optimizer: Optimizer = "sgd"
                      ) -> tuple[float, float]:
    """``(lr', c)``: a run with scale ``s_to``, rate ``lr'`` and initial ``A = c A0`` follows exactly
    the run with scale ``s_from``, rate ``lr`` and ``A = A0`` (the reparametrisation; ``c = sqrt(s_from/s_to)``).

    Gradient descent: ``lr' = lr s_from / s_to``; Adam: ``lr' = lr sqrt(s_from / s_to)``.
    """
    s_from, s_to = positive_float(s_from, "s_from"), positive_float(s_to, "s_to")
    lr = positive_float(lr, "lr")
    choice(optimizer, "optimizer", OPTIMIZERS)
    ratio = s_from / s_to
    return (lr * ratio if optimizer == "sgd" else lr * math.sqrt(ratio)), math.sqrt(ratio)


def time_to_reach(loss: torch.Tensor, level: torch.Tensor | float) -> torch.Tensor:
    """First step at which each curve (K, steps + 1) is ``<= level`` (linear interpolation); NaN if never."""
    L = torch.as_tensor(loss, dtype=torch.float64)
    if L.ndim != 2:
        raise ValueError(f"loss must be a 2-D tensor (K, steps + 1), got shape {tuple(L.shape)}")
    lev = torch.as_tensor(level, dtype=torch.float64).expand(L.shape[0])
    out = torch.full((L.shape[0],), float("nan"), dtype=torch.float64)
    for k in range(L.shape[0]):
        hit = torch.nonzero(L[k] <= lev[k])
        if hit.numel():
            t = int(hit[0])
            if t == 0:
                out[k] = 0.0
            else:
                a, b = float(L[k, t - 1]), float(L[k, t])
                out[k] = t - 1 + (a - float(lev[k])) / (a - b)
    return out
