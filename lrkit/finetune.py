"""Student-teacher fine-tuning: LoRA against full fine-tuning (Chapter 1).

A small "pretrained" MLP ``f0`` (trained by :func:`train` on a random teacher's regression
task) is fine-tuned on a shifted task whose teacher is ``f0`` itself with a perturbation
added to some layers, ``W <- W + dW*``, ``dW* = c U diag(i^-decay) V^T``
(:func:`power_law_matrix`, :func:`perturb`). :func:`finetune` trains either LoRA adapters
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
import math
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Literal

import torch
from torch import nn

from ._validate import choice, positive_float, positive_int
from .data_rank import input_weighted, layer_inputs  # re-exported: Chapter 1 reads them from here
from .env import generator, get_device
from .lora import LoRALinear, add_lora, count_parameters

Optimizer = Literal["sgd", "adam"]
METHODS: tuple[str, ...] = ("lora", "full")
OPTIMIZERS: tuple[str, ...] = ("sgd", "adam")
ACTIVATIONS: dict[str, Callable[[], nn.Module]] = {
    "tanh": nn.Tanh, "relu": nn.ReLU, "gelu": nn.GELU}

__all__ = [
    "make_mlp", "RegressionData", "sample_data", "power_law_matrix", "perturb", "mse", "train",
    "TrainLog", "FinetuneResult", "finetune", "finetune_best_lr", "effective_weight", "weight_updates",
    "finetune_lrs", "layer_inputs", "input_weighted",
]


# --------------------------------------------------------------------------- models and data
def make_mlp(d_in: int, width: int, d_out: int, depth: int = 2, activation: str = "tanh",
             seed: int = 0, gain: float = 1.0, device: torch.device | str | None = None) -> nn.Sequential:
    """An MLP ``d_in -> width (x depth) -> d_out`` with layers named ``fc1 .. fc{depth+1}``.

    PyTorch's default ``nn.Linear`` initialisation, seeded by ``seed``, weights multiplied
    by ``gain`` (a teacher with ``gain > 1`` is more nonlinear).
    """
    positive_float(gain, "gain")
    for v, n in ((d_in, "d_in"), (width, "width"), (d_out, "d_out"), (depth, "depth")):
        positive_int(v, n)
    choice(activation, "activation", tuple(ACTIVATIONS))
    dims = [d_in] + [width] * depth + [d_out]
    layers: OrderedDict[str, nn.Module] = OrderedDict()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        for i in range(len(dims) - 1):
            linear = nn.Linear(dims[i], dims[i + 1])
            with torch.no_grad():
                linear.weight.mul_(gain)
            layers[f"fc{i + 1}"] = linear
            if i < len(dims) - 2:
                layers[f"act{i + 1}"] = ACTIVATIONS[activation]()
    return nn.Sequential(layers).to(device if device is not None else get_device())


@dataclass
class RegressionData:
    """Inputs ``x`` (N, d_in) and targets ``y`` (N, d_out), for training and testing."""

    x_train: torch.Tensor
    y_train: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor

    def __post_init__(self) -> None:
        for a, b in (("x_train", "y_train"), ("x_test", "y_test")):
            xa, yb = getattr(self, a), getattr(self, b)
            if xa.ndim != 2 or yb.ndim != 2 or xa.shape[0] != yb.shape[0]:
                raise ValueError(f"{a} must be (N, d_in) and {b} (N, d_out) with the same N, "
                                 f"got {tuple(xa.shape)} and {tuple(yb.shape)}")


@torch.no_grad()
def sample_data(fn: Callable[[torch.Tensor], torch.Tensor], d_in: int, n_train: int, n_test: int,
                seed: int = 0, noise: float = 0.0, device: torch.device | str | None = None) -> RegressionData:
    """``x ~ N(0, I_{d_in})``, ``y = fn(x) + noise * N(0, 1)``: a regression task from a teacher ``fn``."""
    for v, n in ((d_in, "d_in"), (n_train, "n_train"), (n_test, "n_test")):
        positive_int(v, n)
    if not math.isfinite(noise) or noise < 0:
        raise ValueError(f"noise must be a finite number >= 0, got {noise}")
    g = generator(seed)
    dev = torch.device(device) if device is not None else get_device()
    x = torch.randn(n_train + n_test, d_in, generator=g).to(dev)
    y = fn(x)
    y = y + noise * torch.randn(y.shape, generator=g).to(dev)
    return RegressionData(x[:n_train], y[:n_train], x[n_train:], y[n_train:])


def power_law_matrix(out_features: int, in_features: int, decay: float = 0.5, rank: int | None = None,
                     seed: int = 0, device: torch.device | str | None = None) -> torch.Tensor:
    """``U diag(s) V^T`` with ``s_i = i^-decay`` for ``i <= rank``, random orthonormal ``U, V``.

    Shape ``(out, in)``, normalised to unit Frobenius norm. ``rank`` defaults to ``min(out, in)``.
    """
    positive_int(out_features, "out_features")
    positive_int(in_features, "in_features")
    m = min(out_features, in_features)
    rank = m if rank is None else rank
    positive_int(rank, "rank")
    if rank > m:
        raise ValueError(f"rank must satisfy 1 <= rank <= min(out, in) = {m}, got {rank}")
    if not math.isfinite(decay) or decay < 0:
        raise ValueError(f"decay must be a finite number >= 0, got {decay}")
    g = generator(seed)
    U, _ = torch.linalg.qr(torch.randn(out_features, rank, generator=g, dtype=torch.float64))
    V, _ = torch.linalg.qr(torch.randn(in_features, rank, generator=g, dtype=torch.float64))
    s = torch.arange(1, rank + 1, dtype=torch.float64) ** -decay
    M: torch.Tensor = ((U * (s / s.norm())) @ V.T).to(torch.float32)
    return M.to(device if device is not None else get_device())


@torch.no_grad()
def perturb(model: nn.Module, layers: Sequence[str], relative_norm: float = 0.5, decay: float = 0.5,
            rank: int | None = None, seed: int = 0) -> tuple[nn.Module, dict[str, torch.Tensor]]:
    """A copy of ``model`` with ``W <- W + dW*`` in each named ``nn.Linear`` layer.

    ``dW* = relative_norm * ||W||_F * power_law_matrix(out, in, decay, rank)``: a shift
    whose spectrum (``s_i ~ i^-decay``) and rank are chosen. Returns ``(teacher, {name: dW*})``.
    """
    if not math.isfinite(relative_norm) or relative_norm <= 0:
        raise ValueError(f"relative_norm must be a positive finite number, got {relative_norm}")
    linears = {n: m for n, m in model.named_modules() if isinstance(m, nn.Linear)}
    names = [layers] if isinstance(layers, str) else list(layers)
    missing = [n for n in names if n not in linears]
    if not names or missing:
        raise ValueError(f"layers must name nn.Linear modules of the model, one of {sorted(linears)}; "
                         f"got {names}")
    teacher = copy.deepcopy(model)
    shifts: dict[str, torch.Tensor] = {}
    for i, name in enumerate(names):
        layer = teacher.get_submodule(name)
        assert isinstance(layer, nn.Linear)
        w = layer.weight
        d = power_law_matrix(w.shape[0], w.shape[1], decay, rank, seed=seed + i, device=w.device)
        d = relative_norm * w.norm() * d
        w.add_(d)
        shifts[name] = d
    for p in teacher.parameters():
        p.requires_grad_(False)
    return teacher, shifts


@torch.no_grad()
def mse(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    """Mean squared error ``mean ||model(x) - y||^2 / d_out`` (per output coordinate)."""
    return float(((model(x) - y) ** 2).mean())


# --------------------------------------------------------------------------- training
@dataclass
class TrainLog:
    """Training-loss curve ``loss[t]`` for ``t = 0..steps`` (NaN from ``diverged_at`` on, -1 if never)."""

    loss: torch.Tensor
    test_loss: float
    diverged: bool
    diverged_at: int = -1


def train(model: nn.Module, data: RegressionData, steps: int, lr: float, optimizer: Optimizer = "adam",
          blowup: float = 1e4) -> TrainLog:
    """Full-batch training of ``model``'s trainable parameters on the mean squared error.

    ``optimizer``: ``"sgd"`` (plain gradient descent, ``theta <- theta - lr grad``) or
    ``"adam"`` (PyTorch defaults). A run whose loss becomes non-finite or exceeds
    ``blowup`` times its initial value is stopped and flagged ``diverged``; the rest of its
    curve is NaN and its test loss is NaN.
    """
    steps = positive_int(steps, "steps")
    lr = positive_float(lr, "lr")
    choice(optimizer, "optimizer", OPTIMIZERS)
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise ValueError("model has no trainable parameters")
    opt = torch.optim.SGD(params, lr=lr) if optimizer == "sgd" else torch.optim.Adam(params, lr=lr)
    curve = torch.full((steps + 1,), float("nan"))
    diverged, diverged_at = False, -1
    x, y = data.x_train, data.y_train
    for t in range(steps + 1):
        loss = ((model(x) - y) ** 2).mean()
        value = loss.item()
        if not math.isfinite(value) or (t > 0 and value > blowup * float(curve[0])):
            diverged, diverged_at = True, t
            break
        curve[t] = value
        if t == steps:
            break
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    test = float("nan") if diverged else mse(model, data.x_test, data.y_test)
    return TrainLog(curve, test, diverged, diverged_at)


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


def finetune(model: nn.Module, data: RegressionData, method: str = "lora", rank: int | None = None,
             steps: int = 300, lr: float = 1e-3, optimizer: Optimizer = "adam", alpha: float | None = None,
             rslora: bool = False, targets: Sequence[str] | str | None = None, seed: int = 0) -> FinetuneResult:
    """Fine-tune a *copy* of ``model`` on ``data``; ``model`` itself is left untouched.

    * ``method="lora"``: :func:`lrkit.add_lora` with ``rank``, ``alpha``, ``rslora`` and
      ``targets`` (default: every ``nn.Linear``); only the adapters ``A``, ``B`` train,
      from PEFT's default init (``B = 0``), so step 0 is the pretrained model.
    * ``method="full"``: every parameter trains (``rank`` and ``targets`` must be ``None``).

    The adapter initialisation is seeded by ``seed``. Returns a :class:`FinetuneResult`
    with the tuned model, the loss curve (NaN-padded if it diverged) and the number of
    trainable parameters.
    """
    choice(method, "method", METHODS)
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
    log = train(tuned, data, steps, lr, optimizer)
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
    whole update: the matrix whose spectrum Biderman et al. (2024) measure.
    """
    out: dict[str, torch.Tensor] = {}
    for name, layer in base.named_modules():
        if isinstance(layer, nn.Linear):
            out[name] = (effective_weight(tuned.get_submodule(name)) - layer.weight).detach().clone()
    if not out:
        raise ValueError("base has no nn.Linear layers")
    return out


from .finetune_sweep import finetune_best_lr, finetune_lrs  # noqa: E402  (it builds on the above)
