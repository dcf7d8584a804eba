"""What an update does on the data (Chapter 1): the inputs a layer reads, and updates weighed by them.

A layer ``W`` only ever sees its inputs ``h``. With their second moment ``Sigma = E[h h^T]``, an
update's effect on the data is ``E ||dW h||^2 = ||dW Sigma^(1/2)||_F^2``: the spectrum of
``dW Sigma^(1/2)`` ranks directions by how much they change the layer's output *on its inputs*,
and its rank for 90% of the energy (:func:`lrkit.spectra.rank_for_energy`) is the "data-relevant"
rank, at most the number of directions the inputs excite, whatever the raw rank of ``dW`` is.
"""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["layer_inputs", "input_weighted"]


@torch.no_grad()
def layer_inputs(model: nn.Module, layer: str, x: torch.Tensor) -> torch.Tensor:
    """What reaches the named layer when ``model`` reads ``x``: shape ``(N, in_features)``."""
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"x must be a torch.Tensor of inputs, got {type(x).__name__}")
    module = dict(model.named_modules()).get(layer)
    if module is None:
        raise ValueError(f"layer must name a module of the model, one of {sorted(dict(model.named_modules()))[1:]}; "
                         f"got {layer!r}")
    seen: list[torch.Tensor] = []
    handle = module.register_forward_hook(lambda m, inp, out: seen.append(inp[0].detach()))
    try:
        model(x)
    finally:
        handle.remove()
    if not seen:
        raise ValueError(f"layer {layer!r} is not used when the model reads x: it saw no input")
    return seen[0].reshape(-1, seen[0].shape[-1])


def input_weighted(delta: torch.Tensor, inputs: torch.Tensor) -> torch.Tensor:
    """``dW Sigma^(1/2)`` with ``Sigma = inputs^T inputs / N`` (the layer input's second moment).

    ``||dW Sigma^(1/2)||_F^2 = E ||dW h||^2``: the update's effect on the data, so the spectrum of
    this matrix ranks directions by how much they change the layer's output *on its inputs*.
    Shapes: ``delta`` (out, in), ``inputs`` (N, in) -> (out, in); computed in float64.
    """
    for n, t in (("delta", delta), ("inputs", inputs)):
        if not isinstance(t, torch.Tensor):
            raise TypeError(f"{n} must be a torch.Tensor, got {type(t).__name__}")
    if delta.ndim != 2 or inputs.ndim != 2 or delta.shape[1] != inputs.shape[1]:
        raise ValueError(f"delta must be (out, in) and inputs (N, in) with the same in, got "
                         f"{tuple(delta.shape)} and {tuple(inputs.shape)}")
    h = inputs.detach().cpu().double()
    sigma = h.T @ h / h.shape[0]
    evals, evecs = torch.linalg.eigh(sigma)
    root = (evecs * evals.clamp_min(0).sqrt()) @ evecs.T
    out: torch.Tensor = delta.detach().cpu().double() @ root
    return out
