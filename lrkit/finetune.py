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
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Literal

import torch
from torch import nn

from ._validate import blowup_factor, check_device, check_seed, choice, finite_float, positive_float, positive_int
from .data_rank import input_weighted, layer_inputs  # re-exported: Chapter 1 reads them from here
from .env import cpu_seeded, few_threads, float_dtype, generator
from .lora import LoRALinear, add_lora, count_parameters
from .runs import Divergence

Optimizer = Literal["sgd", "adam"]
METHODS: tuple[str, ...] = ("lora", "full")
OPTIMIZERS: tuple[str, ...] = ("sgd", "adam")
ACTIVATIONS: dict[str, Callable[[], nn.Module]] = {
    "tanh": nn.Tanh, "relu": nn.ReLU, "gelu": nn.GELU}

__all__ = [
    "make_mlp", "RegressionData", "sample_data", "power_law_matrix", "perturb", "mse", "train",
    "TrainLog", "FinetuneResult", "finetune", "finetune_best_lr", "effective_weight", "weight_updates",
    "finetune_lrs", "layer_inputs", "input_weighted", "adapted_copy",
]


# --------------------------------------------------------------------------- models and data
def make_mlp(d_in: int, width: int, d_out: int, depth: int = 2, activation: str = "tanh",
             seed: int = 0, gain: float = 1.0, device: torch.device | str | None = None) -> nn.Sequential:
    """An MLP ``d_in -> width (x depth) -> d_out`` with layers named ``fc1 .. fc{depth+1}``.

    PyTorch's default ``nn.Linear`` initialisation, seeded by ``seed``, weights multiplied
    by ``gain`` (a teacher with ``gain > 1`` is more nonlinear).
    """
    gain = positive_float(gain, "gain")
    d_in, width, d_out, depth = (positive_int(v, n) for v, n in
                                 ((d_in, "d_in"), (width, "width"), (d_out, "d_out"), (depth, "depth")))
    choice(activation, "activation", tuple(ACTIVATIONS))
    seed, dev = check_seed(seed), check_device(device)
    dims = [d_in] + [width] * depth + [d_out]
    layers: OrderedDict[str, nn.Module] = OrderedDict()
    with cpu_seeded(seed):
        for i in range(len(dims) - 1):
            linear = nn.Linear(dims[i], dims[i + 1])
            with torch.no_grad():
                linear.weight.mul_(gain)
            layers[f"fc{i + 1}"] = linear
            if i < len(dims) - 2:
                layers[f"act{i + 1}"] = ACTIVATIONS[activation]()
    return nn.Sequential(layers).to(dev)


@dataclass
class RegressionData:
    """Inputs ``x`` (N, d_in) and targets ``y`` (N, d_out), for training and testing.

    All four are floating-point tensors of one dtype on one device; train and test share
    ``d_in`` and ``d_out``.
    """

    x_train: torch.Tensor
    y_train: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor

    def __post_init__(self) -> None:
        names = ("x_train", "y_train", "x_test", "y_test")
        for n in names:
            t = getattr(self, n)
            if not isinstance(t, torch.Tensor) or not t.is_floating_point():
                got = type(t).__name__ if not isinstance(t, torch.Tensor) else f"a {t.dtype} tensor"
                raise TypeError(f"{n} must be a floating-point torch.Tensor (use torch.as_tensor(..., "
                                f"dtype=torch.float32)), got {got}")
        for a, b in (("x_train", "y_train"), ("x_test", "y_test")):
            xa, yb = getattr(self, a), getattr(self, b)
            if xa.ndim != 2 or yb.ndim != 2 or xa.shape[0] != yb.shape[0]:
                raise ValueError(f"{a} must be (N, d_in) and {b} (N, d_out) with the same N, "
                                 f"got {tuple(xa.shape)} and {tuple(yb.shape)}")
        if self.x_train.shape[1] != self.x_test.shape[1] or self.y_train.shape[1] != self.y_test.shape[1]:
            shapes = [tuple(getattr(self, n).shape) for n in names]
            raise ValueError(f"train and test must share d_in and d_out, got x_train, y_train, x_test, y_test "
                             f"of shapes {shapes}")
        kinds = {(getattr(self, n).dtype, getattr(self, n).device) for n in names}
        if len(kinds) > 1:
            raise ValueError(f"x_train, y_train, x_test and y_test must share one dtype and device, got "
                             f"{sorted(str(k) for k in kinds)}")


@torch.no_grad()
def sample_data(fn: Callable[[torch.Tensor], torch.Tensor], d_in: int, n_train: int, n_test: int,
                seed: int = 0, noise: float = 0.0, device: torch.device | str | None = None) -> RegressionData:
    """``x ~ N(0, I_{d_in})``, ``y = fn(x) + noise * N(0, 1)``: a regression task from a teacher ``fn``."""
    d_in, n_train, n_test = (positive_int(v, n) for v, n in ((d_in, "d_in"), (n_train, "n_train"), (n_test, "n_test")))
    noise = finite_float(noise, "noise", minimum=0.0)
    if not callable(fn):
        raise TypeError(f"fn must be a callable teacher mapping (N, d_in) inputs to (N, d_out) targets, "
                        f"got {type(fn).__name__}")
    g = generator(seed)
    dev = check_device(device)
    x = torch.randn(n_train + n_test, d_in, generator=g).to(dev)
    try:
        y = fn(x)
    except RuntimeError as err:
        raise ValueError(f"fn must map inputs of shape (N, d_in={d_in}) to targets (N, d_out); on a "
                         f"{tuple(x.shape)} batch it raised: {err}") from err
    if not isinstance(y, torch.Tensor):
        raise TypeError(f"fn must return a torch.Tensor of targets (N, d_out), got {type(y).__name__}")
    y = y + noise * torch.randn(y.shape, generator=g).to(dev)
    if not bool(torch.isfinite(y).all()):
        raise ValueError("fn returned NaN or inf targets: the teacher must be finite on N(0, I) inputs")
    return RegressionData(x[:n_train], y[:n_train], x[n_train:], y[n_train:])


def power_law_matrix(out_features: int, in_features: int, decay: float = 0.5, rank: int | None = None,
                     seed: int = 0, device: torch.device | str | None = None) -> torch.Tensor:
    """``U diag(s) V^T`` with ``s_i = i^-decay`` for ``i <= rank``, random orthonormal ``U, V``.

    Shape ``(out, in)``, normalised to unit Frobenius norm. ``rank`` defaults to ``min(out, in)``.
    """
    out_features = positive_int(out_features, "out_features")
    in_features = positive_int(in_features, "in_features")
    m = min(out_features, in_features)
    rank = m if rank is None else positive_int(rank, "rank")
    if rank > m:
        raise ValueError(f"rank must satisfy 1 <= rank <= min(out, in) = {m}, got {rank}")
    decay = finite_float(decay, "decay", minimum=0.0)
    dev = check_device(device)
    g = generator(seed)
    U, _ = torch.linalg.qr(torch.randn(out_features, rank, generator=g, dtype=torch.float64))
    V, _ = torch.linalg.qr(torch.randn(in_features, rank, generator=g, dtype=torch.float64))
    s = torch.arange(1, rank + 1, dtype=torch.float64) ** -decay
    M: torch.Tensor = ((U * (s / s.norm())) @ V.T).to(torch.float32)
    return M.to(dev)


@torch.no_grad()
def perturb(model: nn.Module, layers: Sequence[str], relative_norm: float = 0.5, decay: float = 0.5,
            rank: int | None = None, seed: int = 0) -> tuple[nn.Module, dict[str, torch.Tensor]]:
    """A copy of ``model`` with ``W <- W + dW*`` in each named ``nn.Linear`` layer.

    ``dW* = relative_norm * ||W||_F * power_law_matrix(out, in, decay, rank)``: a shift
    whose spectrum (``s_i ~ i^-decay``) and rank are chosen. Returns ``(teacher, {name: dW*})``.
    """
    relative_norm = positive_float(relative_norm, "relative_norm")
    seed = check_seed(seed)
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
