"""Student-teacher fine-tuning: LoRA against full fine-tuning (Chapter 1).

Two experiments live here.

**A small network and a shifted task.** A "pretrained" MLP ``f0`` (trained by
:func:`train` on a random teacher's regression task) is fine-tuned on a shifted
task whose teacher is ``f0`` itself with a perturbation added to some layers,
``W <- W + dW*``, ``dW* = c U diag(i^-decay) V^T`` (:func:`power_law_matrix`,
:func:`perturb`). Then :func:`finetune` trains either LoRA adapters
(``method="lora"``, rank ``r``) or every weight (``method="full"``), and
:func:`weight_updates` returns what each layer actually moved, ``W_ft - W_0``.

**One linear layer, many ranks at once.** With whitened inputs ``x ~ N(0, I)`` the
population loss of a LoRA layer ``y = (W0 + s B A) x`` against a teacher
``y = (W0 + T) x`` is a function of matrices only:

    L(A, B) = 1/2 ||s B A - T||_F^2,   A: (r, n), B: (n, r),  s = alpha / r  or  alpha / sqrt(r).

:func:`lora_linear_sweep` runs plain gradient descent (or Adam) on it for many
``(rank, scaling)`` configurations as *one* batched tensor: every adapter is padded to
the largest rank with zero rows/columns, which stay exactly zero under both
optimisers (their gradients vanish). Diverged configurations are flagged and frozen,
never a crash. :func:`eckart_young_floor` gives the best loss a rank-``r`` update can
reach, the theory line under the measured markers.

Sizes follow :func:`lrkit.get_scale` through :func:`sizes`; tensors live on
:func:`lrkit.get_device`; randomness comes from explicit CPU generators, so runs are
reproducible on any device.
"""

from __future__ import annotations

import copy
import math
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Callable, Literal, Sequence

import torch
from torch import nn

from ._validate import choice, positive_float, positive_int
from .env import generator, get_device, resolve_scale
from .lora import LoRALinear, add_lora, count_parameters
from .optim import AdamState, batched_adam_step, batched_sgd_step


Optimizer = Literal["sgd", "adam"]
METHODS: tuple[str, ...] = ("lora", "full")
OPTIMIZERS: tuple[str, ...] = ("sgd", "adam")
ACTIVATIONS: dict[str, Callable[[], nn.Module]] = {"tanh": nn.Tanh, "relu": nn.ReLU, "gelu": nn.GELU}

__all__ = [
    "sizes", "make_mlp", "RegressionData", "sample_data", "power_law_matrix", "perturb", "mse", "train",
    "TrainLog", "FinetuneResult", "finetune", "finetune_best_lr", "effective_weight", "weight_updates",
    "power_law_teacher", "LinearSweep", "lora_linear_sweep", "eckart_young_floor",
]


# --------------------------------------------------------------------------- sizes and checks
def sizes(scale: str | None = None) -> dict[str, object]:
    """Experiment sizes for ``scale`` (default :func:`lrkit.get_scale`).

    ``small`` runs the whole chapter in well under a minute on two CPU cores;
    ``full`` is a GPU-sized version of the same experiments.
    """
    scale = resolve_scale(scale)
    if scale == "small":
        return dict(d_in=16, width=64, d_out=16, n_train=1024, n_test=2048, pretrain_steps=400,
                    finetune_steps=400, mlp_ranks=(1, 2, 4, 8, 16, 32, 64), lrs=(3e-3, 1e-2, 3e-2),
                    linear_n=256, linear_ranks=(4, 16, 64), linear_steps=300,
                    slope_ranks=(1, 2, 4, 8, 16, 32, 64, 128))
    return dict(d_in=64, width=512, d_out=64, n_train=16384, n_test=8192, pretrain_steps=1500,
                finetune_steps=1500, mlp_ranks=(1, 2, 4, 8, 16, 32, 64, 128, 256, 512),
                lrs=(1e-3, 3e-3, 1e-2), linear_n=1024, linear_ranks=(4, 16, 64, 256), linear_steps=300,
                slope_ranks=(1, 2, 4, 8, 16, 32, 64, 128, 256, 512))


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
            layers[f"fc{i + 1}"] = nn.Linear(dims[i], dims[i + 1])
            with torch.no_grad():
                layers[f"fc{i + 1}"].weight.mul_(gain)
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
    M = (U * (s / s.norm())) @ V.T
    return M.to(torch.float32).to(device if device is not None else get_device())


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
        w = teacher.get_submodule(name).weight
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
    """Training-loss curve ``loss[t]`` for ``t = 0..steps`` (NaN after a divergence)."""

    loss: torch.Tensor
    test_loss: float
    diverged: bool


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
    diverged = False
    x, y = data.x_train, data.y_train
    for t in range(steps + 1):
        loss = ((model(x) - y) ** 2).mean()
        value = loss.item()
        if not math.isfinite(value) or (t > 0 and value > blowup * float(curve[0])):
            diverged = True
            break
        curve[t] = value
        if t == steps:
            break
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    test = float("nan") if diverged else mse(model, data.x_test, data.y_test)
    return TrainLog(curve, test, diverged)


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
    def diverged(self) -> bool:
        return self.log.diverged


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


def finetune_best_lr(model: nn.Module, data: RegressionData, lrs: Sequence[float], **kwargs: object
                     ) -> tuple[FinetuneResult, float]:
    """Run :func:`finetune` once per learning rate in ``lrs``; keep the lowest final training loss.

    Diverged runs (NaN) never win; if every run diverged the first is returned (flagged).
    Returns ``(result, lr)``. Keyword arguments go to :func:`finetune`.
    """
    lrs = [positive_float(v, "lrs[i]") for v in lrs]
    if not lrs:
        raise ValueError("lrs must be a non-empty list of learning rates")
    runs = [finetune(model, data, lr=lr, **kwargs) for lr in lrs]  # type: ignore[arg-type]
    scores = [r.final_loss if math.isfinite(r.final_loss) else math.inf for r in runs]
    i = min(range(len(runs)), key=scores.__getitem__)
    return runs[i], lrs[i]


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


# --------------------------------------------------------------------------- one linear layer, batched
def power_law_teacher(n: int, decay: float = 0.5, seed: int = 0,
                      device: torch.device | str | None = None) -> torch.Tensor:
    """A full-rank ``(n, n)`` teacher ``T = sqrt(n) U diag(i^-decay) V^T``.

    With ``decay = 1/2`` the energy ``sigma_i^2 = n / i`` spreads over every direction:
    the best rank-``r`` update leaves ``(H_n - H_r) / H_n`` of it (``H`` harmonic numbers).
    The ``sqrt(n)`` makes each output coordinate of ``T x`` have variance ``H_n = O(log n)``.
    """
    positive_int(n, "n")
    M = power_law_matrix(n, n, decay, seed=seed, device="cpu").to(torch.float64)
    s = torch.arange(1, n + 1, dtype=torch.float64) ** -decay
    return (M * (math.sqrt(n) * s.norm())).to(torch.float32).to(device if device is not None else get_device())


def eckart_young_floor(teacher: torch.Tensor, ranks: Sequence[int]) -> torch.Tensor:
    """Best relative loss of a rank-``r`` update: ``sum_{i>r} sigma_i^2 / sum_i sigma_i^2``, per rank."""
    s2 = torch.linalg.svdvals(teacher.detach().cpu().to(torch.float64)).square()
    tail = s2.sum() - torch.cumsum(s2, 0)
    return torch.stack([tail[r - 1] / s2.sum() for r in ranks])


@dataclass
class LinearSweep:
    """Relative population loss ``L_t / L_0`` of each configuration: ``loss`` (n_configs, steps + 1)."""

    ranks: list[int]
    rslora: list[bool]
    scaling: torch.Tensor
    lr: torch.Tensor
    loss: torch.Tensor
    diverged: torch.Tensor

    @property
    def final(self) -> torch.Tensor:
        """Relative loss after the last step, per configuration (NaN if diverged)."""
        return self.loss[:, -1]


def lora_linear_sweep(teacher: torch.Tensor, ranks: Sequence[int], rslora: Sequence[bool] | bool,
                      alpha: float = 8.0, lr: float | Sequence[float] = 0.005, steps: int = 300,
                      optimizer: Optimizer = "sgd", seed: int = 0, blowup: float = 1e3) -> LinearSweep:
    """Train one LoRA layer per configuration against ``teacher`` (out, in), all at once.

    Configuration ``c`` has rank ``ranks[c]``, scaling ``s_c = alpha / r`` (or ``alpha / sqrt(r)``
    if ``rslora[c]``) and learning rate ``lr[c]``. Loss (whitened inputs, population):
    ``L_c = 1/2 ||s_c B_c A_c - T||_F^2``, gradients ``dL/dB = s G A^T``, ``dL/dA = s B^T G``
    with ``G = s B A - T``. ``A`` starts Kaiming-uniform, ``U(-1/sqrt(in), 1/sqrt(in))``, and
    ``B = 0`` (PEFT's default). ``optimizer="sgd"`` is plain gradient descent; ``"adam"``
    uses ``beta = (0.9, 0.999)``, ``eps = 1e-8``. A configuration whose loss is non-finite or
    grows past ``blowup * L_0`` is flagged, its adapter reset to zero and frozen, and its curve
    NaN from then on. Shapes: padded ``A`` (C, r_max, in), ``B`` (C, out, r_max).
    """
    if not isinstance(teacher, torch.Tensor) or teacher.ndim != 2:
        raise ValueError(f"teacher must be a 2-D tensor (out, in), got {getattr(teacher, 'shape', teacher)!r}")
    if not torch.isfinite(teacher).all():
        raise ValueError("teacher must be finite")
    ranks = [positive_int(r, "ranks[i]") for r in ranks]
    if not ranks:
        raise ValueError("ranks must be a non-empty list of ints")
    out_f, in_f = teacher.shape
    if max(ranks) > min(out_f, in_f):
        raise ValueError(f"ranks must satisfy 1 <= r <= min(out, in) = {min(out_f, in_f)}, got {max(ranks)}")
    C = len(ranks)
    flags = [bool(rslora)] * C if isinstance(rslora, bool) else [bool(f) for f in rslora]
    if len(flags) != C:
        raise ValueError(f"rslora must be a bool or one bool per rank ({C}), got {len(flags)}")
    lrs = [lr] * C if isinstance(lr, (int, float)) else list(lr)
    if len(lrs) != C:
        raise ValueError(f"lr must be a float or one float per rank ({C}), got {len(lrs)}")
    lrs = [positive_float(v, "lr") for v in lrs]
    positive_int(steps, "steps")
    choice(optimizer, "optimizer", OPTIMIZERS)
    if isinstance(alpha, bool) or not isinstance(alpha, (int, float)) or not math.isfinite(alpha) or alpha <= 0:
        raise ValueError(f"alpha must be a positive finite number, got {alpha!r}")

    dev, T = teacher.device, teacher.to(torch.float32)
    rmax = max(ranks)
    g = generator(seed)
    bound = 1.0 / math.sqrt(in_f)
    A = (torch.rand(C, rmax, in_f, generator=g) * 2 - 1) * bound
    mask = (torch.arange(rmax)[None, :] < torch.tensor(ranks)[:, None]).float()  # (C, r_max)
    A = (A * mask[:, :, None]).to(dev)
    B = torch.zeros(C, out_f, rmax, device=dev)
    s = torch.tensor([alpha / math.sqrt(r) if f else alpha / r for r, f in zip(ranks, flags)],
                     device=dev).view(C, 1, 1)
    eta = torch.tensor(lrs, device=dev).view(C, 1, 1)
    adam_a, adam_b = AdamState(A), AdamState(B)
    L0 = 0.5 * T.square().sum()
    loss = torch.full((C, steps + 1), float("nan"))
    dead = torch.zeros(C, dtype=torch.bool, device=dev)
    for t in range(steps + 1):
        G = s * (B @ A) - T  # (C, out, in)
        Lc = 0.5 * G.square().sum((1, 2)) / L0
        bad = ~torch.isfinite(Lc) | (Lc > blowup)
        if bad.any():
            dead |= bad
            keep = (~dead).float().view(C, 1, 1)
            A, B = A * keep, B * keep
            A, B = torch.nan_to_num(A), torch.nan_to_num(B)
            for st in (adam_a, adam_b):
                st.m, st.v = torch.nan_to_num(st.m * keep), torch.nan_to_num(st.v * keep)
            G = s * (B @ A) - T
        loss[:, t] = torch.where(dead, torch.nan, Lc).cpu()
        if t == steps:
            break
        gB = s * (G @ A.transpose(1, 2))
        gA = s * (B.transpose(1, 2) @ G)
        rate = eta.flatten() * (~dead).float()  # frozen configurations take no step
        if optimizer == "sgd":
            A, B = batched_sgd_step(A, gA, rate), batched_sgd_step(B, gB, rate)
        else:
            A, B = batched_adam_step(A, gA, adam_a, rate), batched_adam_step(B, gB, adam_b, rate)
    return LinearSweep(ranks, flags, s.flatten().cpu(), eta.flatten().cpu(), loss, dead.cpu())
