"""One fair bench for LoRA's relatives (Chapter 10): every method with its own tuned learning rate.

Task. A pretrained two-layer network ``f(x) = W2 tanh(W1 x)`` (``W1`` (h, d), ``W2`` (o, h))
is fine-tuned towards a teacher ``W_i + D_i`` whose shifts ``D_i`` are full rank with
power-law spectra (``s_j ~ j^-1``). Target inputs put most of their variance on half of the
input coordinates; the *source* inputs (what the base model was good at) are isotropic.
Target loss: test MSE against the teacher on target inputs. Forgetting: mean squared change
of the output on source inputs, ``E ||f_tuned(x) - f_base(x)||^2 / o``.

Every method adapts ``W1`` and ``W2`` (rank ``r`` for the low-rank ones) and trains with
Adam (``eps`` as torch, bias-corrected), full batch, ``steps`` steps:

====== ========================================================================
full   every entry of ``W1, W2``
lora   ``W0 + s B A``, PEFT's init (A Kaiming-uniform, B = 0)
lora+  as lora, learning rate of ``B`` = 16 x that of ``A`` (Hayou et al. 2024)
pissa  ``W_res + s B A`` from the top-r SVD of ``W0``
loraga LoRA-GA (PEFT form, exact SVD) from the full-batch gradient at step 0
dora   ``m / ||W0 + s B A||_row (W0 + s B A)``, the norm detached
galore full ``W``, Adam moments in a rank-r projection renewed every 50 steps
====== ========================================================================

All ``K = len(lrs) x len(seeds)`` configurations of one method run at once as batched
tensors with a leading configuration axis; a configuration whose loss is not finite is
marked diverged (its loss is +inf) and never selected.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

import torch

from .finetune import power_law_matrix
from .optim import AdamState, batched_adam_step
from .variants import lora_ga_factors

__all__ = ["METHODS", "BenchTask", "make_task", "run_method", "memory_numbers", "select_and_evaluate"]

METHODS = ("full", "lora", "lora+", "pissa", "loraga", "dora", "galore")


@dataclass
class BenchTask:
    """Base weights and per-seed data; ``X*`` are (S, n, d), ``Y*`` (S, n, o) for S seeds."""

    W0: list[torch.Tensor]
    X: torch.Tensor
    Y: torch.Tensor
    Xt: torch.Tensor
    Yt: torch.Tensor
    Xs: torch.Tensor
    Ys: torch.Tensor


def _forward(Ws: list[torch.Tensor], X: torch.Tensor) -> torch.Tensor:
    """(K, n, d) -> (K, n, o) with ``Ws`` = [(K, h, d), (K, o, h)]."""
    return torch.tanh(X @ Ws[0].transpose(1, 2)) @ Ws[1].transpose(1, 2)


def make_task(seeds: list[int], base_seed: int = 0, d: int = 32, h: int = 32, o: int = 16,
              n_train: int = 256, n_test: int = 512, shift: float = 0.8) -> BenchTask:
    """A base network from ``base_seed`` and, per seed, a teacher shift and data."""
    g = torch.Generator().manual_seed(base_seed)
    W0 = [torch.randn(h, d, generator=g) / math.sqrt(d), torch.randn(o, h, generator=g) / math.sqrt(h)]
    scales = torch.ones(d)
    scales[d // 2:] = 0.3
    X, Y, Xt, Yt, Xs, Ys = [], [], [], [], [], []
    for s in seeds:
        gs = torch.Generator().manual_seed(10_000 + s)
        T = [w + shift * w.norm() * power_law_matrix(w.shape[0], w.shape[1], decay=1.0, seed=1000 * s + i,
                                                     device="cpu")
             for i, w in enumerate(W0)]
        x = torch.randn(n_train + n_test, d, generator=gs) * scales
        y = _forward([t[None] for t in T], x[None])[0]
        xs = torch.randn(n_test, d, generator=gs)
        X.append(x[:n_train])
        Y.append(y[:n_train])
        Xt.append(x[n_train:])
        Yt.append(y[n_train:])
        Xs.append(xs)
        Ys.append(_forward([w[None] for w in W0], xs[None])[0])
    st = torch.stack
    return BenchTask(W0, st(X), st(Y), st(Xt), st(Yt), st(Xs), st(Ys))


def _mse(out: torch.Tensor, Y: torch.Tensor) -> torch.Tensor:
    return (out - Y).square().mean(dim=(1, 2))


def memory_numbers(method: str, shapes: list[tuple[int, int]], rank: int) -> tuple[int, int]:
    """(trainable parameters, optimiser-state numbers) of ``method`` on matrices ``shapes``."""
    if method == "full":
        p = sum(m * n for m, n in shapes)
        return p, 2 * p
    if method == "galore":
        p = sum(m * n for m, n in shapes)
        return p, sum(2 * rank * max(m, n) + rank * min(m, n) for m, n in shapes)
    p = sum(rank * (m + n) + (m if method == "dora" else 0) for m, n in shapes)
    return p, 2 * p


def run_method(task: BenchTask, method: str, lrs: list[float], rank: int = 4, steps: int = 200,
               gap: int = 50, ratio: float = 16.0, seed: int = 0) -> dict[str, torch.Tensor | float]:
    """Train ``method`` for every (lr, seed) pair at once.

    Returns ``target`` and ``forget`` of shape (len(lrs), S) (+inf where diverged) and
    ``seconds_per_step`` (wall time of one batched step divided by the K configurations).
    """
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    L, S = len(lrs), task.X.shape[0]
    K = L * S
    rep = lambda t: t.repeat(L, *([1] * (t.ndim - 1)))  # noqa: E731  config k = (lr k // S, seed k % S)
    X, Y, Xt, Yt, Xs, Ys = map(rep, (task.X, task.Y, task.Xt, task.Yt, task.Xs, task.Ys))
    lr = torch.tensor(lrs, dtype=torch.float32).repeat_interleave(S)
    W0 = [w[None].repeat(K, 1, 1) for w in task.W0]
    g = torch.Generator().manual_seed(seed)
    params: list[torch.Tensor] = []
    rates: list[torch.Tensor] = []
    if method in ("full", "galore"):
        params = [w.clone().requires_grad_(True) for w in W0]
        rates = [lr, lr]
    else:
        As, Bs, Ms = [], [], []
        if method == "loraga":  # the full-batch gradient of the base model, every layer at once
            w_ = [v.clone().requires_grad_(True) for v in W0]
            full_grads = torch.autograd.grad(_mse(_forward(w_, X), Y).sum(), w_)
        for i, w in enumerate(W0):
            out_f, in_f = w.shape[1:]
            if method == "pissa":
                U, Sv, Vh = torch.linalg.svd(w, full_matrices=False)
                root = Sv[:, :rank].sqrt()
                A, B = root[..., None] * Vh[:, :rank], U[:, :, :rank] * root[:, None, :]
            elif method == "loraga":
                ab = [lora_ga_factors(full_grads[i][k], rank, form="peft", svd="exact") for k in range(K)]
                A, B = torch.stack([a for a, _ in ab]), torch.stack([b for _, b in ab])
            else:
                bound = 1 / math.sqrt(in_f)
                A = (torch.rand(K, rank, in_f, generator=g) * 2 - 1) * bound
                B = torch.zeros(K, out_f, rank)
            if method in ("pissa", "loraga"):
                W0[i] = w - B @ A  # s = 1: the model is unchanged at step 0
            As.append(A)
            Bs.append(B)
            if method == "dora":
                Ms.append((W0[i] + B @ A).norm(dim=2))
        params = [t.clone().requires_grad_(True) for t in As + Bs + Ms]
        b_rate = lr * ratio if method == "lora+" else lr
        rates = [lr] * len(As) + [b_rate] * len(Bs) + [lr] * len(Ms)

    def weights() -> list[torch.Tensor]:
        if method in ("full", "galore"):
            return params
        Ws = [W0[i] + params[2 + i] @ params[i] for i in range(2)]
        if method == "dora":
            Ws = [(params[4 + i] / Ws[i].norm(dim=2).detach())[..., None] * Ws[i] for i in range(2)]
        return Ws

    states = [AdamState(p.detach()) for p in params]
    proj: list[torch.Tensor | None] = [None, None]
    low: list[AdamState | None] = [None, None]
    start = time.perf_counter()
    for t in range(steps):
        loss = _mse(_forward(weights(), X), Y)
        grads = torch.autograd.grad(loss.sum(), params)
        with torch.no_grad():
            for j, (p, gr) in enumerate(zip(params, grads)):
                gr = torch.nan_to_num(gr, nan=0.0, posinf=0.0, neginf=0.0)
                if method == "galore":
                    p.copy_(_galore_step(p, gr, t, j, proj, low, lr, rank, gap))
                else:
                    p.copy_(batched_adam_step(p, gr, states[j], rates[j]))
    per_step = (time.perf_counter() - start) / (steps * K)
    with torch.no_grad():
        Ws = weights()
        target, forget = _mse(_forward(Ws, Xt), Yt), _mse(_forward(Ws, Xs), Ys)
        bad = ~(torch.isfinite(target) & torch.isfinite(forget)) | (target > 1e3)
        target, forget = target.masked_fill(bad, math.inf), forget.masked_fill(bad, math.inf)
    return {"target": target.reshape(L, S), "forget": forget.reshape(L, S), "seconds_per_step": per_step}


def _galore_step(p: torch.Tensor, g: torch.Tensor, t: int, j: int, proj: list[torch.Tensor | None],
                 low: list[AdamState | None],
                 lr: torch.Tensor, rank: int, gap: int, betas: tuple[float, float] = (0.9, 0.999),
                 eps: float = 1e-6) -> torch.Tensor:
    """Batched :class:`lrkit.galore.GaLoreAdamW` step (proj_type "std", scale 1) on (K, m, n)."""
    tall = p.shape[1] >= p.shape[2]
    if proj[j] is None or t % gap == 0:
        U, _, Vh = torch.linalg.svd(g, full_matrices=False)
        proj[j] = Vh[:, :rank] if tall else U[:, :, :rank]
    P = proj[j]
    assert P is not None
    R = g @ P.transpose(1, 2) if tall else P.transpose(1, 2) @ g
    st = low[j]
    if st is None:
        st = low[j] = AdamState(R)
    st.step += 1
    b1, b2 = betas
    st.m.mul_(b1).add_(R, alpha=1 - b1)
    st.v.mul_(b2).addcmul_(R, R, value=1 - b2)
    size = lr.view(-1, 1, 1) * math.sqrt(1 - b2 ** st.step) / (1 - b1 ** st.step)
    N = st.m / (st.v.sqrt() + eps)
    back = N @ P if tall else P @ N
    return p - size * back


def select_and_evaluate(result: dict[str, torch.Tensor | float], lrs: list[float],
                        n_train_seeds: int) -> dict[str, float]:
    """Pick the learning rate with the lowest mean target loss on the first ``n_train_seeds``
    seeds (columns); report mean and standard deviation on the remaining, held-out seeds."""
    target, forget = result["target"], result["forget"]
    if not isinstance(target, torch.Tensor) or not isinstance(forget, torch.Tensor):
        raise TypeError("result must be run_method's output (tensors 'target' and 'forget')")
    if not 0 < n_train_seeds < target.shape[1]:
        raise ValueError(f"n_train_seeds must be in [1, {target.shape[1] - 1}], got {n_train_seeds}")
    i = int(torch.argmin(target[:, :n_train_seeds].mean(dim=1)))
    held_t, held_f = target[i, n_train_seeds:], forget[i, n_train_seeds:]
    return {"lr": lrs[i], "lr_index": i, "target": float(held_t.mean()), "target_sd": float(held_t.std()),
            "forget": float(held_f.mean()), "forget_sd": float(held_f.std())}
