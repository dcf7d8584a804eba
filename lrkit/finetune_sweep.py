"""Fine-tuning at several learning rates at once: ``K`` copies of one MLP as one batched program.

:func:`finetune_lrs` does what a loop of :func:`lrkit.finetune.finetune` calls over ``lrs`` would
do, configuration ``k`` at learning rate ``lrs[k]``, but every trainable tensor carries a leading
configuration axis ``(K, ...)`` and every step is one forward and one backward pass for all ``K``.
The model must be an ``nn.Sequential`` of ``nn.Linear`` layers and parameter-free (elementwise)
activations, as :func:`lrkit.finetune.make_mlp` builds. Per layer, with ``h`` of shape (K, N, in):

* frozen layer: ``h W^T + b``;
* LoRA layer (``method="lora"``, targeted): ``h W0^T + b + s (h A_k^T) B_k^T`` (PEFT's order);
* fully trained layer (``method="full"``): ``h W_k^T + b_k``.

The loss of configuration ``k`` is its own mean squared error; the configurations share no
parameter, so the gradient of their sum is each one's own gradient. Optimisers are
:func:`lrkit.optim.batched_adam_step` / :func:`~lrkit.optim.batched_sgd_step` (``torch.optim``'s
formulas). A configuration whose loss becomes non-finite or exceeds ``blowup`` times its initial
value is flagged at that step, frozen (its parameters back to their start) and its curve NaN.
"""

from __future__ import annotations

import copy
import math
import warnings
from collections.abc import Sequence

import torch
from torch import nn

from ._validate import blowup_factor, choice, positive_float, positive_int
from .env import few_threads
from .finetune import METHODS, OPTIMIZERS, FinetuneResult, Optimizer, TrainLog, adapted_copy
from .finetune_task import RegressionData, mse
from .lora import LoRALinear, count_parameters
from .optim import AdamState, batched_adam_step, batched_sgd_step
from .runs import Divergence

__all__ = ["finetune_lrs", "finetune_best_lr"]


def _check_layers(model: nn.Module) -> None:
    if not isinstance(model, nn.Sequential):
        raise TypeError(f"model must be an nn.Sequential of nn.Linear layers and activations (as make_mlp "
                        f"builds), got {type(model).__name__}")
    for name, m in model.named_children():
        if not isinstance(m, nn.Linear) and any(True for _ in m.parameters()):
            raise TypeError(f"model layer {name!r} ({type(m).__name__}) has parameters but is not nn.Linear")


def _rates(lrs: object) -> list[float]:
    """``lrs`` as a list of positive finite floats (a sequence, a 1-D array or tensor), else a clear error."""
    if isinstance(lrs, (str, bytes)) or not hasattr(lrs, "__iter__") or getattr(lrs, "ndim", 1) == 0:
        raise TypeError(f"lrs must be a non-empty sequence of learning rates, e.g. [1e-3, 3e-3], "
                        f"got {type(lrs).__name__}")
    rates = [positive_float(v, "lrs[i]") for v in lrs]
    if not rates:
        raise ValueError("lrs must be a non-empty list of learning rates")
    return rates


def _forward(layers: list[tuple[str, nn.Module]], params: dict[str, torch.Tensor], x: torch.Tensor,
             K: int) -> torch.Tensor:
    h = x.unsqueeze(0).expand(K, *x.shape)
    for name, m in layers:
        if isinstance(m, LoRALinear):
            base = nn.functional.linear(h, m.base.weight, m.base.bias)
            h = base + m.scaling * ((h @ params[name + ".A"].transpose(1, 2)) @ params[name + ".B"].transpose(1, 2))
        elif isinstance(m, nn.Linear) and name + ".weight" in params:
            h = h @ params[name + ".weight"].transpose(1, 2)
            if name + ".bias" in params:
                h = h + params[name + ".bias"].unsqueeze(1)
        else:
            h = m(h)
    return h


def finetune_lrs(model: nn.Module, data: RegressionData, lrs: Sequence[float], method: str = "lora",
                 rank: int | None = None, steps: int = 300, optimizer: Optimizer = "adam",
                 alpha: float | None = None, rslora: bool = False, targets: Sequence[str] | str | None = None,
                 seed: int = 0, blowup: float = 1e4, check_every: int = 50) -> list[FinetuneResult]:
    """One :class:`~lrkit.finetune.FinetuneResult` per learning rate in ``lrs``, trained as one batch.

    Arguments as :func:`lrkit.finetune.finetune`; every configuration starts from the same adapter
    draw (seeded by ``seed``, drawn on the CPU), so configuration ``k`` equals
    ``finetune(..., lr=lrs[k])``. Curves stay on the device; the host looks once every
    ``check_every`` steps (to stop when every configuration has diverged).
    """
    choice(method, "method", METHODS)
    choice(optimizer, "optimizer", OPTIMIZERS)
    rates = _rates(lrs)
    steps = positive_int(steps, "steps")
    blowup = blowup_factor(blowup)
    check_every = positive_int(check_every, "check_every")
    if not isinstance(data, RegressionData):
        raise TypeError(f"data must be a RegressionData (from sample_data), got {type(data).__name__}")
    _check_layers(model)
    tuned = adapted_copy(model, method, rank, alpha, rslora, targets, seed)
    K, layers = len(rates), list(tuned.named_children())
    start: dict[str, torch.Tensor] = {}
    for name, m in layers:
        if isinstance(m, LoRALinear):
            start[name + ".A"], start[name + ".B"] = m.A.detach(), m.B.detach()
        elif isinstance(m, nn.Linear) and method == "full":
            start[name + ".weight"] = m.weight.detach()
            if m.bias is not None:
                start[name + ".bias"] = m.bias.detach()
    if not start:
        raise ValueError("model has no trainable parameters")
    x, y = data.x_train, data.y_train
    first = next(iter(start.values()))
    if (first.dtype, first.device) != (x.dtype, x.device):
        raise TypeError(f"data must have the model's dtype and device ({first.dtype} on {first.device}), "
                        f"got {x.dtype} on {x.device}: convert one, e.g. model.to(data.x_train.dtype)")
    params = {k: v.unsqueeze(0).repeat(K, *([1] * v.ndim)).requires_grad_(True) for k, v in start.items()}
    states = {k: AdamState(p) for k, p in params.items()}
    dev = x.device
    rate = torch.tensor(rates, device=dev)
    div = Divergence(K, blowup, dev)  # the reference: each configuration's loss at step 0
    curve = torch.full((K, steps + 1), float("nan"), device=dev)
    work = 3.0 * K * x.shape[0] * sum(p[0].numel() for p in params.values())
    with few_threads(dev, work):
        for t in range(steps + 1):
            per = ((_forward(layers, params, x, K) - y) ** 2).mean((1, 2))
            value = per.detach()
            alive = div.update(value, t)
            curve[:, t] = div.mask(value)
            if t == steps or (t % check_every == 0 and not bool(alive.any())):
                break
            for p in params.values():
                p.grad = None
            torch.autograd.backward(torch.where(alive, per, 0.0).sum())
            with torch.no_grad():
                step_rate = rate * alive.to(rate.dtype)
                for k, p in params.items():
                    assert p.grad is not None
                    grad = div.keep(p.grad, torch.zeros_like(p.grad))  # a diverged configuration takes no step
                    new = (batched_sgd_step(p, grad, step_rate) if optimizer == "sgd"
                           else batched_adam_step(p, grad, states[k], step_rate))
                    p.copy_(div.keep(new, start[k].expand_as(new)))  # and stays at its start
    with torch.no_grad():
        for k, p in params.items():
            p.copy_(div.keep(p, start[k].expand_as(p)))
    curve, dead_list = curve.cpu(), div.diverged_at.tolist()
    return [_result(tuned, method, rank, rslora, params, k, curve[k], dead_list[k], data) for k in range(K)]


def _result(tuned: nn.Module, method: str, rank: int | None, rslora: bool, params: dict[str, torch.Tensor],
            k: int, curve: torch.Tensor, diverged_at: int, data: RegressionData) -> FinetuneResult:
    """Configuration ``k`` as an ordinary module and result."""
    diverged = diverged_at >= 0
    out = copy.deepcopy(tuned)
    with torch.no_grad():
        for key, p in params.items():
            out.get_parameter(key).copy_(p[k])
    test = float("nan") if diverged else mse(out, data.x_test, data.y_test)
    return FinetuneResult(method, rank, bool(rslora), out, TrainLog(curve, test, diverged, diverged_at),
                          count_parameters(out))


def finetune_best_lr(model: nn.Module, data: RegressionData, lrs: Sequence[float], **kwargs: object
                     ) -> tuple[FinetuneResult, float]:
    """:func:`finetune_lrs`, then the run with the lowest final training loss and its learning rate.

    Diverged runs (NaN) never win. If every run diverged there is no best rate: the first run is
    returned (flagged ``diverged``) with the rate ``NaN``, and a ``RuntimeWarning`` says so.
    """
    rates = _rates(lrs)
    runs = finetune_lrs(model, data, rates, **kwargs)  # type: ignore[arg-type]
    scores = [r.final_loss if math.isfinite(r.final_loss) else math.inf for r in runs]
    i = min(range(len(runs)), key=scores.__getitem__)
    if not math.isfinite(scores[i]):
        warnings.warn(f"finetune_best_lr: every learning rate in {rates} diverged; no best rate (NaN returned)",
                      RuntimeWarning, stacklevel=2)
        return runs[0], math.nan
    return runs[i], rates[i]
