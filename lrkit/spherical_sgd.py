"""Many spherical online-SGD chains at once: seeds and input sizes as one batched tensor (Chapter 9).

The process is :func:`lrkit.beyond_kernels.sgd_step`'s, in the reduced coordinates of
:mod:`lrkit.beyond_kernels`: per step and chain, ``g ~ N(0, I_k)`` (zero for the GLM) and
``x ~ N(0, I_d')`` on the complement of ``span(W)``, ``a = u . x``, ``b = u_hat . x``; chains of
different ``d`` share one ``(C, max d')`` tensor, padded with zeros and masked. Cost per step
``O(C (max d' + k))``; a run stops when every chain has reached the threshold. The chains are
the configuration axis (``K = C``) of :mod:`lrkit.runs`: a chain whose overlap turns non-finite
diverges (a normalised chain cannot blow up, so ``blowup`` is infinite), is frozen at its last
direction, and reads NaN from then on. The chains run on the device in its
:func:`lrkit.env.float_dtype` (float32 on MPS), on one CPU thread on the CPU; the loop reads the
device once per record, to stop when enough chains are done.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from ._validate import choice, positive_float, positive_int
from .beyond_kernels_model import MODELS, Setting, outputs
from .env import few_threads, float_dtype, generator, get_device, to_device_dtype
from .progress import track
from .runs import Divergence

__all__ = ["Run", "simulate"]


@dataclass
class Run:
    """Result of :func:`simulate`: per configuration ``d``, ``seed``, ``m0``, ``steps_to`` (inf: not reached);
    ``t`` ``(R,)`` recorded steps and ``m`` ``(C, R)`` overlaps; ``final`` ``(C,)`` the last overlap;
    ``diverged`` ``(C,)`` and ``diverged_at`` ``(C,)`` (-1: never), as every :class:`lrkit.runs.RunResult`."""

    d: np.ndarray
    seed: np.ndarray
    m0: np.ndarray
    steps_to: np.ndarray
    t: np.ndarray
    m: np.ndarray
    final: np.ndarray
    steps: int
    meta: dict[str, Any] = field(default_factory=dict)
    diverged: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=bool))
    diverged_at: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))

    def median_steps(self) -> dict[int, float]:
        """Median of ``steps_to`` over seeds, per ``d`` (inf when half the seeds did not reach the threshold)."""
        return {int(d): float(np.median(self.steps_to[self.d == d])) for d in np.unique(self.d)}


def simulate(setting: Setting | list[Setting], dims: list[int], seeds: list[int], lr: float | list[float],
             max_steps: int, *, model: str = "network", threshold: float = 0.9, flip_start: bool = False,
             stop_fraction: float = 1.0, records: int = 200, stream_seed: int | None = None,
             device: torch.device | str | None = None, progress: bool | None = None) -> Run:
    """Spherical online SGD on ``u_hat`` for every ``(d, seed)`` pair at once (in reduced coordinates).

    ``setting`` is one :class:`Setting` or one per seed (e.g. :func:`faithful` draws); ``lr`` one value or
    one per ``d``. Runs until every chain has ``<u_hat, u> >= threshold`` or ``max_steps``; chains of
    different ``d`` share one tensor, padded to the largest ``d'`` and masked. ``flip_start`` starts from
    ``-u_hat_0``. Task draws use CPU generators seeded by ``seed``; the sample stream a generator on the
    device seeded by ``stream_seed`` (default ``seeds[0]``): deterministic on the CPU. ``progress``: a bar
    over the steps (:mod:`lrkit.progress`'s rule; ``None``: full scale, not in the book build).
    """
    choice(model, "model", MODELS)
    dims = [positive_int(d, "d") for d in dims]
    if not seeds:
        raise ValueError("seeds must be a non-empty list of non-negative ints")
    settings = setting if isinstance(setting, list) else [setting] * len(seeds)
    if len(settings) != len(seeds):
        raise ValueError(f"give one setting or one per seed ({len(seeds)}), got {len(settings)}")
    lrs = [lr] * len(dims) if isinstance(lr, (int, float)) else list(lr)
    if len(lrs) != len(dims):
        raise ValueError(f"lr must be one value or one per d ({len(dims)}), got {len(lrs)}")
    lrs = [positive_float(v, "lr") for v in lrs]
    positive_int(max_steps, "max_steps")
    if not 0 < stop_fraction <= 1:
        raise ValueError(f"stop_fraction must be in (0, 1], got {stop_fraction}")
    s0 = settings[0]
    if any(s.k != s0.k or s.act is not s0.act or s.base != s0.base or s.xi != s0.xi for s in settings):
        raise ValueError("the settings of one run must share k, xi, the activation and base")
    dev = torch.device(device) if device is not None else get_device()
    k, dp = s0.k, [d - s0.k * s0.base for d in dims]
    if min(dp) < 2:
        raise ValueError(f"every d must exceed k + 1 = {k + 1} (base) or 1 (GLM), got {dims}")
    D = max(dp)
    conf = [(i, j) for i in range(len(dims)) for j in range(len(seeds))]
    mask, u, uh, eta = (torch.zeros(len(conf), D, dtype=torch.float64) for _ in range(4))
    for n, (i, j) in enumerate(conf):  # drawn on the CPU in float64: the same task on every device
        gen = generator(seeds[j])
        mask[n, :dp[i]] = 1
        for vec in (u, uh):
            v = torch.randn(dp[i], generator=gen, dtype=torch.float64)
            vec[n, :dp[i]] = v / v.norm()
        eta[n] = lrs[i]
    if flip_start:
        uh = -uh
    wide = float_dtype(dev)  # float32 on MPS
    lam, c, ch = (to_device_dtype(torch.stack([getattr(settings[j], a) for _, j in conf]), dev, wide)
                  for a in ("lam", "c", "c_hat"))
    mask, u, uh, eta = (to_device_dtype(x, dev, wide) for x in (mask, u, uh, eta[:, :1]))
    gen = torch.Generator(device=dev).manual_seed(seeds[0] if stream_seed is None else stream_seed)
    m0 = (uh * u).sum(-1).cpu().numpy().copy()
    every = max(1, max_steps // records)
    with few_threads(dev, 8.0 * len(conf) * (D + k)):
        ts, ms, m, hit, div, t = _chains(s0, model, lam, c, ch, mask, u, uh, eta, gen, max_steps, every, threshold,
                                         stop_fraction, len(dims), progress)
    d_arr = np.array([dims[i] for i, _ in conf])
    diverged, diverged_at = div.result()
    return Run(d=d_arr, seed=np.array([seeds[j] for _, j in conf]), m0=m0, steps_to=hit.cpu().numpy(),
               t=np.array(ts), m=torch.stack(ms, 1).cpu().numpy(), final=m.cpu().numpy(), steps=t,
               meta=dict(model=model, threshold=threshold, lr=lrs, dims=dims), diverged=diverged,
               diverged_at=diverged_at)


def _chains(s0: Setting, model: str, lam: torch.Tensor, c: torch.Tensor, ch: torch.Tensor, mask: torch.Tensor,
            u: torch.Tensor, uh: torch.Tensor, eta: torch.Tensor, gen: torch.Generator, max_steps: int, every: int,
            threshold: float, stop_fraction: float, n_dims: int, progress: bool | None = None
            ) -> tuple[list[int], list[torch.Tensor], torch.Tensor, torch.Tensor, Divergence, int]:
    """The loop of :func:`simulate`, on the chains' device and dtype: every ``every`` steps the overlaps are
    recorded (on the device) and the one host read of the loop decides whether enough chains are done."""
    C, D = mask.shape
    k, scale, dt, dev = s0.k, float(s0.base), mask.dtype, mask.device
    m = (uh * u).sum(-1)
    div = Divergence(C, blowup=math.inf, device=dev)
    hit = torch.full_like(m, math.inf)
    ts, ms, t = [0], [m], 0
    steps = track(range(1, max_steps + 1), progress, desc="spherical SGD")
    for t in steps:
        g = torch.randn(C, k, generator=gen, device=dev, dtype=dt) * scale
        x = torch.randn(C, D, generator=gen, device=dev, dtype=dt) * mask
        dldb = outputs(s0.act, s0.xi, lam, c, ch, g, (x * u).sum(-1), (x * uh).sum(-1), model)[2]
        grad = dldb[:, None] * x
        grad = grad - (grad * uh).sum(-1, keepdim=True) * uh
        new = uh - eta * grad
        new = new / new.norm(dim=-1, keepdim=True)
        div.update((new * u).sum(-1), t)          # no host synchronisation
        uh = div.keep(new, uh)                    # a diverged chain stays at its last finite direction
        m = div.mask((uh * u).sum(-1))
        hit = torch.where(torch.isinf(hit) & (m >= threshold), torch.full_like(hit, t), hit)
        if t % every == 0:
            ts.append(t)
            ms.append(m)
            done = torch.isfinite(hit).to(dt).reshape(n_dims, -1).mean(1)
            if bool((done >= stop_fraction).all()):   # the loop's one host read, once per record
                break
    return ts, ms, m, hit, div, t
