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
from collections.abc import Sequence

import torch
from torch import nn

from ._validate import choice, positive_float
from .finetune import METHODS, OPTIMIZERS, FinetuneResult, Optimizer, RegressionData, TrainLog, mse
from .lora import LoRALinear, add_lora, count_parameters
from .optim import AdamState, batched_adam_step, batched_sgd_step

__all__ = ["finetune_lrs", "finetune_best_lr"]


def _prepare(model: nn.Module, method: str, rank: int | None, alpha: float | None, rslora: bool,
             targets: Sequence[str] | str | None, seed: int) -> nn.Sequential:
    """The adapted (or fully trainable) copy every configuration starts from."""
    if not isinstance(model, nn.Sequential):
        raise TypeError(f"model must be an nn.Sequential of nn.Linear layers and activations (as make_mlp "
                        f"builds), got {type(model).__name__}")
    for name, m in model.named_children():
        if not isinstance(m, nn.Linear) and any(True for _ in m.parameters()):
            raise TypeError(f"model layer {name!r} ({type(m).__name__}) has parameters but is not nn.Linear")
    tuned = copy.deepcopy(model)
    if method == "lora":
        if rank is None:
            raise ValueError("rank is required for method='lora' (an int >= 1)")
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            add_lora(tuned, rank, alpha=alpha, targets=targets, rslora=rslora)
    else:
        if rank is not None or targets is not None:
            raise ValueError("rank and targets must be None for method='full' (every weight trains)")
        for p in tuned.parameters():
            p.requires_grad_(True)
    return tuned


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
                 seed: int = 0, blowup: float = 1e4) -> list[FinetuneResult]:
    """One :class:`~lrkit.finetune.FinetuneResult` per learning rate in ``lrs``, trained as one batch.

    Arguments as :func:`lrkit.finetune.finetune`; every configuration starts from the same adapter
    draw (seeded by ``seed``), so configuration ``k`` equals ``finetune(..., lr=lrs[k])``.
    """
    choice(method, "method", METHODS)
    choice(optimizer, "optimizer", OPTIMIZERS)
    rates = [positive_float(v, "lrs[i]") for v in lrs]
    if not rates:
        raise ValueError("lrs must be a non-empty list of learning rates")
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise ValueError(f"steps must be a positive int (>= 1), got {steps!r}")
    tuned = _prepare(model, method, rank, alpha, rslora, targets, seed)
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
    params = {k: v.unsqueeze(0).repeat(K, *([1] * v.ndim)).requires_grad_(True) for k, v in start.items()}
    states = {k: AdamState(p) for k, p in params.items()}
    rate = torch.tensor(rates, device=data.x_train.device)
    alive = torch.ones(K, dtype=torch.bool, device=rate.device)
    curve = torch.full((K, steps + 1), float("nan"))
    dead_at = [-1] * K
    x, y = data.x_train, data.y_train
    for t in range(steps + 1):
        per = ((_forward(layers, params, x, K) - y) ** 2).mean((1, 2))
        value = per.detach()
        bad = alive & (~torch.isfinite(value) | ((value > blowup * curve[:, 0].to(value.device)) if t else False))
        if bad.any():
            for k in torch.nonzero(bad).flatten().tolist():
                dead_at[k] = t
            alive &= ~bad
            with torch.no_grad():
                for k, p in params.items():
                    p[bad] = start[k]
            per = ((_forward(layers, params, x, K) - y) ** 2).mean((1, 2))
        curve[:, t] = torch.where(alive, value, torch.nan).cpu()
        if t == steps or not alive.any():
            break
        for p in params.values():
            p.grad = None
        per[alive].sum().backward()  # type: ignore[no-untyped-call]
        with torch.no_grad():
            step_rate = rate * alive.to(rate.dtype)
            for k, p in params.items():
                assert p.grad is not None
                new = (batched_sgd_step(p, p.grad, step_rate) if optimizer == "sgd"
                       else batched_adam_step(p, p.grad, states[k], step_rate))
                p.copy_(new)
    return [_result(tuned, method, rank, rslora, params, k, curve[k], dead_at[k], data) for k in range(K)]


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

    Diverged runs (NaN) never win; if every run diverged the first is returned (flagged).
    """
    runs = finetune_lrs(model, data, lrs, **kwargs)  # type: ignore[arg-type]
    scores = [r.final_loss if math.isfinite(r.final_loss) else math.inf for r in runs]
    i = min(range(len(runs)), key=scores.__getitem__)
    return runs[i], float(list(lrs)[i])
