"""Chapter 8's measurements of a fine-tuned transformer: intruders, their mitigation, data-weighted updates.

* :func:`intruder_summary` counts intruder dimensions over every projection (and the weakest alignment),
  :func:`mitigate` scales them down (:mod:`lrkit.spectra`);
* :func:`layer_second_moments` gives each projection's input second moment ``Sigma = E[h h^T]`` and
  :func:`input_weighted` weighs an update by it, ``dW Sigma^{1/2}``;
* :func:`pareto_excess` measures how far runs lie above a learning-forgetting front.

The second moments are computed on the compute device in :func:`lrkit.env.float_dtype` (float32 on
MPS) and returned on the CPU; the rest is CPU-side float64 linear algebra.
:mod:`lrkit.forgetting` re-exports every name here.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn
from torch.func import functional_call

from . import spectra
from .env import float_dtype
from .transformer import ALL_TARGETS, projection_names

__all__ = ["layer_second_moments", "intruder_summary", "mitigate", "input_weighted", "pareto_excess"]


def layer_second_moments(model: nn.Module, weights: dict[str, torch.Tensor],
                         x: torch.Tensor) -> dict[str, torch.Tensor]:
    """``Sigma_x = E[h h^T]`` (in, in) of the input ``h`` of every projection, run with ``weights`` on ``x``.

    Computed on ``x``'s device in :func:`lrkit.env.float_dtype` (float64, float32 on MPS) and returned on
    the CPU in that dtype, keyed by the projection's weight name (``...q_proj.weight``).
    """
    wide = float_dtype(x.device)
    mods = {n: m for n, m in model.named_modules() if n.rsplit(".", 1)[-1] in ALL_TARGETS}
    acc: dict[str, torch.Tensor] = {}

    def recorder(name: str) -> Callable[[nn.Module, tuple[torch.Tensor, ...], torch.Tensor], None]:
        def hook(mod: nn.Module, inp: tuple[torch.Tensor, ...], out: torch.Tensor) -> None:
            acc[name] = inp[0].reshape(-1, inp[0].shape[-1]).to(wide)
        return hook

    hooks = [m.register_forward_hook(recorder(n)) for n, m in mods.items()]
    try:
        with torch.no_grad():
            functional_call(model, weights, (x,))
    finally:
        for h in hooks:
            h.remove()
    return {n + ".weight": (h.T @ h / h.shape[0]).cpu() for n, h in acc.items()}


def intruder_summary(model: nn.Module, weights: dict[str, torch.Tensor], k: int = 10,
                     eps: float = 0.5) -> tuple[int, float]:
    """``(count, alignment)`` of a fine-tuned model against ``model``'s weights, over every projection.

    ``count`` sums :func:`lrkit.spectra.intruder_dimensions` over the adapted matrices (the authors'
    model-level count); ``alignment`` is the mean over matrices of ``min_j max_cos_j`` (the weakest
    alignment among the top ``k`` directions): a continuous statistic, steadier than a count.
    """
    base = dict(model.named_parameters())
    counts, weakest = 0, list[float]()
    for n in projection_names(model):
        c, max_cos = spectra.intruder_dimensions(base[n], weights[n], k, eps)
        counts += c
        weakest.append(float(max_cos.min()))
    return counts, sum(weakest) / len(weakest)


def mitigate(model: nn.Module, weights: dict[str, torch.Tensor], rank: int | None, lam: float = 0.75,
             k: int = 10, eps: float = 0.5) -> dict[str, torch.Tensor]:
    """``weights`` with every projection's intruders scaled by ``lam`` (:func:`lrkit.spectra.reduce_intruders`).

    Each mitigated matrix comes back on its weight's device and in its dtype.
    """
    base = dict(model.named_parameters())
    out = dict(weights)
    for n in projection_names(model):
        out[n] = spectra.reduce_intruders(base[n], weights[n], rank=rank, k=k, eps=eps,
                                          lam=lam).to(device=weights[n].device, dtype=weights[n].dtype)
    return out


def input_weighted(delta: torch.Tensor, second_moment: torch.Tensor) -> torch.Tensor:
    """``dW Sigma^{1/2}`` (out, in): the update as it acts on the layer's inputs, ``Sigma = E[h h^T]`` (in, in).

    ``||dW Sigma^{1/2}||_F^2 = E ||dW h||^2``: its spectrum ranks directions by how much they change the
    layer's output on the data, not by their size in weight space. Computed on the CPU in float64.
    """
    evals, Q = torch.linalg.eigh(second_moment.detach().cpu().to(torch.float64))
    out: torch.Tensor = delta.detach().cpu().to(torch.float64) @ (Q * evals.clamp_min(0).sqrt()) @ Q.T
    return out


def pareto_excess(front_target: torch.Tensor, front_source: torch.Tensor, target: torch.Tensor,
                  source: torch.Tensor) -> torch.Tensor:
    """How far points lie above a learning-forgetting front, in source-loss units (negative: below it).

    The front at target loss ``t`` is the smallest source loss among the front's points that reach
    a target loss ``<= t`` (a lower envelope; NaN when no front point is that good).
    Every argument is 1-D; ``target``/``source`` are the points tested. Computed on the CPU in float64.
    """
    ft, fs, tt, ss = (v.detach().cpu().flatten().to(torch.float64)
                      for v in (front_target, front_source, target, source))
    out = []
    for t, s in zip(tt, ss):
        ok = ft <= t
        out.append(s - fs[ok].min() if ok.any() else torch.tensor(float("nan"), dtype=torch.float64))
    return torch.stack(out)
