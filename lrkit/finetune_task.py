"""Chapter 1's student-teacher task: small MLPs, their regression data, and the shift to learn.

A "pretrained" MLP ``f0`` (:func:`make_mlp`, trained by :func:`lrkit.finetune.train` on a random
teacher's regression task, :func:`sample_data`) is fine-tuned on a shifted task whose teacher is
``f0`` with a perturbation added to some layers, ``W <- W + dW*``, ``dW* = c U diag(i^-decay) V^T``
(:func:`power_law_matrix`, :func:`perturb`). :func:`mse` is the loss every Chapter 1 run reports.
Randomness comes from explicit CPU generators, so a seed gives the same task on every device.
:mod:`lrkit.finetune` re-exports every name here.
"""

from __future__ import annotations

import copy
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import nn

from ._validate import check_device, check_seed, choice, finite_float, positive_float, positive_int
from .env import cpu_seeded, generator

ACTIVATIONS: dict[str, Callable[[], nn.Module]] = {
    "tanh": nn.Tanh, "relu": nn.ReLU, "gelu": nn.GELU}

__all__ = ["ACTIVATIONS", "make_mlp", "RegressionData", "sample_data", "power_law_matrix", "perturb", "mse"]


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
