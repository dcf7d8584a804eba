"""Student-teacher fine-tuning: LoRA against full fine-tuning (Chapter 1).

A small "pretrained" MLP ``f0`` (trained by :func:`train` on a random teacher's regression
task) is fine-tuned on a shifted task whose teacher is ``f0`` itself with a perturbation
added to some layers, ``W <- W + dW*``, ``dW* = c U diag(i^-decay) V^T``
(:func:`power_law_matrix`, :func:`perturb`; the task's models and data live in
:mod:`lrkit.finetune_task` and are re-exported here). :func:`finetune` trains either LoRA adapters
(``method="lora"``, rank ``r``) or every weight (``method="full"``);
:func:`finetune_best_lr` trains one copy per learning rate *at once* (a batched program, see
:mod:`lrkit.finetune_sweep`) and keeps the best. :func:`weight_updates` returns what each
layer moved, ``W_ft - W_0``, and :func:`input_weighted` (from :mod:`lrkit.data_rank`) weighs an
update by the data that reaches its layer, ``dW Sigma^(1/2)`` with ``Sigma = E[h h^T]`` the second moment of the
layer's input ``h`` (:func:`layer_inputs`): its spectrum counts only the directions the data
excite, the "data-relevant" rank.

The rank-scaling experiment on one linear layer lives in :mod:`lrkit.rslora`. Tensors live on
:func:`lrkit.get_device`; randomness comes from explicit CPU generators (or a forked, seeded
stream), so runs are reproducible on any device and never touch the learner's global stream.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal

import torch
from torch import nn

from ._validate import blowup_factor, check_seed, choice, positive_float, positive_int
from .data_rank import input_weighted, layer_inputs  # re-exported: Chapter 1 reads them from here
from .env import cpu_seeded, few_threads, float_dtype
from .finetune_task import (  # re-exported: Chapter 1 reads the task from here
    RegressionData,
    make_mlp,
    mse,
    perturb,
    power_law_matrix,
    sample_data,
)
from .lora import LoRALinear, add_lora, count_parameters
from .runs import Divergence

Optimizer = Literal["sgd", "adam"]
METHODS: tuple[str, ...] = ("lora", "full")
OPTIMIZERS: tuple[str, ...] = ("sgd", "adam")

__all__ = [
    "make_mlp", "RegressionData", "sample_data", "power_law_matrix", "perturb", "mse", "train",
    "TrainLog", "FinetuneResult", "finetune", "finetune_best_lr", "effective_weight", "weight_updates",
    "finetune_lrs", "layer_inputs", "input_weighted", "adapted_copy",
]


# --------------------------------------------------------------------------- training
@dataclass
class TrainLog:
    """Training-loss curve ``loss[t]`` for ``t = 0..steps`` (NaN from ``diverged_at`` on, -1 if never)."""

    loss: torch.Tensor
    test_loss: float
    diverged: bool
    diverged_at: int = -1


def train(model: nn.Module, data: RegressionData, steps: int, lr: float, optimizer: Optimizer = "adam",
          blowup: float = 1e4, check_every: int = 50) -> TrainLog:
    """Full-batch training of ``model``'s trainable parameters on the mean squared error.

    ``optimizer``: ``"sgd"`` (plain gradient descent, ``theta <- theta - lr grad``) or
    ``"adam"`` (PyTorch defaults). A run whose loss becomes non-finite or exceeds
    ``blowup`` (a finite factor > 1) times its initial value is flagged ``diverged`` at that
    step (:class:`lrkit.runs.Divergence`, ``K = 1``), its parameters are put back to their
    starting values (as :func:`finetune_lrs` does), the rest of its curve is NaN and its test
    loss is NaN.

    The curve stays on the model's device; the host looks at it once every ``check_every``
    steps (to stop a diverged run early), not once per step.
    """
    steps = positive_int(steps, "steps")
    lr = positive_float(lr, "lr")
    blowup = blowup_factor(blowup)
    check_every = positive_int(check_every, "check_every")
    choice(optimizer, "optimizer", OPTIMIZERS)
    if not isinstance(data, RegressionData):
        raise TypeError(f"data must be a RegressionData (from sample_data), got {type(data).__name__}")
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise ValueError("model has no trainable parameters")
    x, y = data.x_train, data.y_train
    if (params[0].dtype, params[0].device) != (x.dtype, x.device):
        raise TypeError(f"data must have the model's dtype and device ({params[0].dtype} on {params[0].device}), "
                        f"got {x.dtype} on {x.device}: convert one, e.g. model.to(data.x_train.dtype)")
    opt = torch.optim.SGD(params, lr=lr) if optimizer == "sgd" else torch.optim.Adam(params, lr=lr)
    start = [p.detach().clone() for p in params]
    dev, wide = x.device, float_dtype(x.device)
    curve = torch.full((steps + 1,), float("nan"), device=dev)
    div = Divergence(1, blowup, dev)
    work = 3.0 * x.shape[0] * sum(p.numel() for p in model.parameters())  # forward + backward multiply-adds
    with few_threads(dev, work):
        for t in range(steps + 1):
            loss = ((model(x) - y) ** 2).mean()
            value = loss.detach().view(1).to(wide)  # compared in float64 where the device has it
            alive = div.update(value, t)
            curve[t] = div.mask(value)[0]
            if t == steps or (t % check_every == 0 and not bool(alive[0])):
                break
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
    diverged_at = int(div.diverged_at[0])
    diverged = diverged_at >= 0
    if diverged:
        with torch.no_grad():
            for p, p0 in zip(params, start):
                p.copy_(p0)
    test = float("nan") if diverged else mse(model, data.x_test, data.y_test)
    return TrainLog(curve.cpu(), test, diverged, diverged_at)


@dataclass
class FinetuneResult:
    """One fine-tuning run: the tuned copy of the model and its curves."""

    method: str
    rank: int | None
    rslora: bool
    model: nn.Module
    log: TrainLog
    trainable: int
    extra: dict[str, float] = field(default_factory=dict)

    @property
    def final_loss(self) -> float:
        """Training loss after the last step (NaN if diverged)."""
        return float(self.log.loss[-1])

    @property
    def test_loss(self) -> float:
        return self.log.test_loss

    @property
    def final(self) -> float:
        """The same as :attr:`final_loss` (the name every run result of lrkit shares)."""
        return self.final_loss

    @property
    def diverged(self) -> bool:
        return self.log.diverged

    @property
    def diverged_at(self) -> int:
        """The step at which the run was stopped as diverged, -1 if it never was."""
        return self.log.diverged_at


def adapted_copy(model: nn.Module, method: str = "lora", rank: int | None = None, alpha: float | None = None,
                 rslora: bool = False, targets: Sequence[str] | str | None = None, seed: int = 0) -> nn.Module:
    """A copy of ``model`` ready to fine-tune: LoRA adapters added (``method="lora"``) or every
    parameter trainable (``method="full"``); ``model`` itself is left untouched.

    The adapters are drawn on the CPU from a private stream seeded by ``seed`` (:mod:`lrkit.init`
    draws on the CPU and copies to the model's device), so a seed gives the same adapters on every
    device and no global random stream (CPU or GPU) changes.
    """
    choice(method, "method", METHODS)
    seed = check_seed(seed)
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    tuned = copy.deepcopy(model)
    if method == "lora":
        if rank is None:
            raise ValueError("rank is required for method='lora' (an int >= 1)")
        with cpu_seeded(seed):
            add_lora(tuned, rank, alpha=alpha, targets=targets, rslora=rslora)
    else:
        if rank is not None or targets is not None:
            raise ValueError("rank and targets must be None for method='full' (every weight trains)")
        for p in tuned.parameters():
            p.requires_grad_(True)
    return tuned


def finetune(model: nn.Module, data: RegressionData, method: str = "lora", rank: int | None = None,
             steps: int = 300, lr: float = 1e-3, optimizer: Optimizer = "adam", alpha: float | None = None,
             rslora: bool = False, targets: Sequence[str] | str | None = None, seed: int = 0,
             blowup: float = 1e4) -> FinetuneResult:
    """Fine-tune a *copy* of ``model`` on ``data``; ``model`` itself is left untouched.

    * ``method="lora"``: :func:`lrkit.add_lora` with ``rank``, ``alpha``, ``rslora`` and
      ``targets`` (default: every ``nn.Linear``); only the adapters ``A``, ``B`` train,
      from PEFT's default init (``B = 0``), so step 0 is the pretrained model.
    * ``method="full"``: every parameter trains (``rank`` and ``targets`` must be ``None``).

    The adapter initialisation is seeded by ``seed`` and drawn on the CPU (:func:`adapted_copy`),
    so it is the same on every device. Returns a :class:`FinetuneResult` with the tuned model,
    the loss curve (NaN-padded if it diverged, see :func:`train`) and the number of trainable
    parameters.
    """
    tuned = adapted_copy(model, method, rank, alpha, rslora, targets, seed)
    log = train(tuned, data, steps, lr, optimizer, blowup)
    return FinetuneResult(method, rank, bool(rslora), tuned, log, count_parameters(tuned))


def effective_weight(layer: nn.Module) -> torch.Tensor:
    """The weight a layer applies: ``W0 + s B A`` for an unmerged :class:`LoRALinear`, else ``W``."""
    if isinstance(layer, LoRALinear):
        w = layer.base.weight
        return w if layer.merged else w + layer.delta_weight()
    if isinstance(layer, nn.Linear):
        return layer.weight
    raise TypeError(f"layer must be an nn.Linear or a LoRALinear, got {type(layer).__name__}")


@torch.no_grad()
def weight_updates(base: nn.Module, tuned: nn.Module) -> dict[str, torch.Tensor]:
    """``{name: W_tuned - W_base}`` for every ``nn.Linear`` of ``base`` (shape ``(out, in)``).

    For a LoRA-tuned model this is ``s B A`` (rank ``<= r``); for a fully tuned one, the
    whole update: the matrix whose spectrum Biderman et al. (2024) measure. ``tuned`` must be a
    tuned copy of ``base`` (same layer names and shapes).
    """
    for n, m in (("base", base), ("tuned", tuned)):
        if not isinstance(m, nn.Module):
            raise TypeError(f"{n} must be a torch.nn.Module, got {type(m).__name__}")
    theirs = dict(tuned.named_modules())
    out: dict[str, torch.Tensor] = {}
    for name, layer in base.named_modules():
        if isinstance(layer, nn.Linear):
            other = theirs.get(name)
            if not isinstance(other, (nn.Linear, LoRALinear)):
                raise ValueError(f"tuned must be a tuned copy of base: base has the nn.Linear {name!r}, tuned has "
                                 f"{'no such module' if other is None else type(other).__name__}")
            w = effective_weight(other)
            if w.shape != layer.weight.shape:
                raise ValueError(f"tuned must be a tuned copy of base: layer {name!r} is {tuple(w.shape)} in tuned "
                                 f"and {tuple(layer.weight.shape)} in base")
            out[name] = (w - layer.weight).detach().clone()
    if not out:
        raise ValueError("base has no nn.Linear layers")
    return out


from .finetune_sweep import finetune_best_lr, finetune_lrs  # noqa: E402  (it builds on the above)
