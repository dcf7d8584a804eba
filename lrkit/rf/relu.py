"""ReLU random features on real-valued inputs, and the eigenstructure of a kernel on a finite pool (Chapter 7).

``phi(x) = relu(W x / sqrt(d)) / sqrt(k)`` (:func:`relu_features`), whose kernel is the
arc-cosine kernel (:func:`relu_kernel`); :func:`eigenstructure` turns a kernel matrix on a finite
pool of points and a target into ``(lambda_i, v_i)`` for the theory, and :func:`simulate_pool`
runs the matching experiment (train on ``n`` points of the pool, test on the whole pool).
Inputs are drawn on the CPU in float64; the algebra runs on the inputs' device in
:func:`lrkit.env.float_dtype` (float32 on MPS); results come back to the CPU in float64.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch

from .._validate import positive_int
from ..env import cpu_on_mps, float_dtype, generator, to_device_dtype
from .inputs import ArrayLike, Number, check_nonneg, check_sizes
from .simulate import SimResult, ridge_path

__all__ = ["relu_features", "relu_kernel", "eigenstructure", "pool_task", "simulate_pool"]


def relu_features(x: torch.Tensor, k: int, seed: int = 0, weights: torch.Tensor | None = None) -> torch.Tensor:
    """``phi(x) = relu(x W^T / sqrt(d)) / sqrt(k)``, ``W ~ N(0, I)`` of shape ``(k, d)``; x: ``(N, d)`` -> ``(N, k)``.

    A width-``k`` two-layer ReLU network with a frozen random first layer: ``phi(x) . theta``.
    ``E_W[phi(x) . phi(x')]`` is :func:`relu_kernel`. Pass ``weights`` to reuse a draw.
    """
    if not isinstance(x, torch.Tensor) or x.ndim != 2:
        raise ValueError(f"x must be a 2-D tensor of inputs (N, d), got {type(x).__name__}"
                         f"{'' if not isinstance(x, torch.Tensor) else ' of shape ' + str(tuple(x.shape))}")
    positive_int(k, "k")
    d = x.shape[1]
    if weights is None:  # drawn on the CPU in float64, used in float_dtype of x's device
        weights = to_device_dtype(torch.randn(k, d, generator=generator(seed), dtype=torch.float64), x.device,
                                  float_dtype(x.device))
    if weights.shape != (k, d):
        raise ValueError(f"weights must have shape (k, d) = {(k, d)}, got {tuple(weights.shape)}")
    phi: torch.Tensor = torch.relu(x.to(weights) @ weights.T / math.sqrt(d)) / math.sqrt(k)
    return phi


def relu_kernel(x1: torch.Tensor, x2: torch.Tensor) -> torch.Tensor:
    """``E_w[relu(w.x/sqrt d) relu(w.x'/sqrt d)]`` (arc-cosine kernel of order 1), shape ``(N1, N2)``:

    ``|x| |x'| (sin t + (pi - t) cos t) / (2 pi d)``, ``t`` the angle between ``x`` and ``x'``.
    """
    if not (isinstance(x1, torch.Tensor) and isinstance(x2, torch.Tensor)) or x1.ndim != 2 or x2.ndim != 2 \
            or x1.shape[1] != x2.shape[1]:
        raise ValueError("x1 and x2 must be 2-D tensors (N1, d) and (N2, d) with the same d")
    x1 = to_device_dtype(x1, x1.device, float_dtype(x1.device))  # float64; float32 on MPS
    x2 = to_device_dtype(x2, x1.device, x1.dtype)
    n1, n2 = x1.norm(dim=1, keepdim=True), x2.norm(dim=1, keepdim=True)
    tiny = max(1e-300, torch.finfo(x1.dtype).tiny)
    cos = ((x1 @ x2.T) / (n1 * n2.T).clamp(min=tiny)).clamp(-1, 1)
    t = torch.arccos(cos)
    K: torch.Tensor = n1 * n2.T * (torch.sin(t) + (math.pi - t) * cos) / (2 * math.pi * x1.shape[1])
    return K


def eigenstructure(K: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Eigenvalues and target coefficients of a kernel on a finite pool of ``N`` points.

    With the uniform distribution on the pool as the data distribution, the kernel operator
    has eigenvalues ``eig(K) / N`` and eigenfunctions ``sqrt(N) u_i``; the target's coefficients
    are ``v_i = u_i . y / sqrt(N)``. Returns ``(lambda, v)`` sorted by decreasing ``lambda``,
    keeping the eigenvalues above round-off (positive).
    """
    if not isinstance(K, torch.Tensor) or K.ndim != 2 or K.shape[0] != K.shape[1]:
        raise ValueError("K must be a square 2-D tensor (a kernel matrix)")
    if not isinstance(y, torch.Tensor) or y.shape != (K.shape[0],):
        raise ValueError(f"y must be a 1-D tensor of length {K.shape[0]}, got "
                         f"{tuple(y.shape) if isinstance(y, torch.Tensor) else type(y).__name__}")
    if not (bool(torch.isfinite(K).all()) and bool(torch.isfinite(y).all())):
        raise ValueError("K and y must be finite (found NaN or inf)")
    N = K.shape[0]
    K = to_device_dtype(K, K.device, float_dtype(K.device))  # float64; float32 on MPS
    s, U = cpu_on_mps(torch.linalg.eigh, K)
    s, U = s.flip(0), U.flip(1)
    keep = s > s[0] * N * torch.finfo(K.dtype).eps * 10
    v = (U.T @ to_device_dtype(y, K.device, K.dtype)) / math.sqrt(N)
    return (s[keep] / N).cpu().double(), v[keep].cpu().double()


def pool_task(size: int, dim: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """A finite pool of real-valued inputs and a nonlinear target for the ReLU experiment.

    ``x ~ N(0, I_dim)`` of shape ``(size, dim)``; ``y = tanh(1.5 x_1) + 0.5 x_2 x_3``, centred and
    scaled to unit mean square over the pool (so the zero predictor has test MSE 1).
    """
    if isinstance(size, bool) or not isinstance(size, int) or size < 2:
        raise ValueError(f"size must be an int >= 2, got {size!r}")
    if isinstance(dim, bool) or not isinstance(dim, int) or dim < 3:
        raise ValueError(f"dim must be an int >= 3 (the target uses three coordinates), got {dim!r}")
    x = torch.randn(size, dim, generator=generator(seed), dtype=torch.float64)
    y = torch.tanh(1.5 * x[:, 0]) + 0.5 * x[:, 1] * x[:, 2]
    y = y - y.mean()
    return x, y / y.pow(2).mean().sqrt()


def simulate_pool(x: torch.Tensor, y: torch.Tensor, n: int, ks: Sequence[Number], ridges: ArrayLike,
                  trials: int = 10, seed: int = 0) -> SimResult:
    """ReLU random-feature regression on a finite pool: train on ``n`` pool points drawn without
    replacement, test MSE over the whole pool (the population of :func:`eigenstructure`).

    ``k = math.inf`` uses :func:`relu_kernel` itself. Shapes as in :class:`SimResult` (one ``n``,
    float64 on the CPU). The draws (subsets and weights) come from a CPU generator seeded ``seed``;
    the algebra runs on ``x``'s device in :func:`lrkit.env.float_dtype` (float32 on MPS).
    """
    if not isinstance(x, torch.Tensor) or x.ndim != 2 or not isinstance(y, torch.Tensor) or y.shape != (x.shape[0],):
        raise ValueError("x must be (N, d) and y (N,) tensors")
    (n,) = check_sizes(n, "n", False)
    if n >= x.shape[0]:
        raise ValueError(f"n must be smaller than the pool ({x.shape[0]} points), got {n}")
    ks_l = check_sizes(ks, "ks", True)
    positive_int(trials, "trials")
    dev = x.device
    wide = float_dtype(dev)
    grid = to_device_dtype(check_nonneg(ridges, "ridges").flatten(), dev, wide)
    gen = generator(seed)
    k_max = max([k for k in ks_l if not math.isinf(k)], default=0)
    subsets, weights = [], []
    for _ in range(trials):  # every draw on the CPU, in the order of one trial after another
        subsets.append(torch.randperm(x.shape[0], generator=gen)[:n])
        if k_max:
            weights.append(torch.randn(k_max, x.shape[1], generator=gen, dtype=torch.float64))
    idx = torch.stack(subsets).to(dev)
    W = to_device_dtype(torch.stack(weights), dev, wide) if k_max else None
    test, train = _pool_trials(to_device_dtype(x, dev, wide), to_device_dtype(y, dev, wide), idx, W, ks_l, grid)
    return SimResult([n], [float(k) for k in ks_l], grid.cpu().double(), test.double(), train.double())


def _pool_trials(x: torch.Tensor, y: torch.Tensor, idx: torch.Tensor, W: torch.Tensor | None,
                 ks_l: list[Any], grid: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The trials of :func:`simulate_pool` on the device: subsets ``idx (T, n)``, weights ``W (T, k_max, d)``;
    returns ``(test, train)`` ``(T, 1, len(ks), R)`` copied to the CPU once, after the loop."""
    trials = idx.shape[0]
    test = torch.empty(trials, 1, len(ks_l), grid.numel(), dtype=x.dtype, device=x.device)
    train = torch.empty_like(test)
    Kfull = relu_kernel(x, x) if any(math.isinf(k) for k in ks_l) else None
    for t in range(trials):
        for j, k in enumerate(ks_l):
            if math.isinf(k):
                assert Kfull is not None
                Kp = Kfull[:, idx[t]]  # (N, n)
            else:
                assert W is not None
                Fk = relu_features(x, k, weights=W[t, :k])
                Kp = Fk @ Fk[idx[t]].T
            a, tr = ridge_path(Kp[idx[t]][None], y[idx[t]][None], grid)
            pred = Kp @ a[0]  # (N, R)
            test[t, 0, j] = ((pred - y[:, None]) ** 2).mean(0)
            train[t, 0, j] = tr[0]
    return test.cpu(), train.cpu()
