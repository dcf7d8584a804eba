"""What LoRA learns and what it forgets, on a small transformer (Chapter 8).

**Tasks** (:mod:`lrkit.forgetting_tasks`): a *source* task mixing sparse random Markov chains
(the model must infer the topic from the context) and a *target* task, a new chain. Their
entropy rates and Bayes losses are the floors under the learning curves. :func:`pretrain` trains a
:class:`lrkit.transformer.GPT` on the source task.

**Fine-tuning, batched.** :func:`finetune_sweep` trains ``K`` configurations of one method
at once with ``torch.func.vmap``: every configuration has its own weights and data order,
one Adam step updates all of them (:func:`lrkit.optim.batched_adam_step`).

* ``method="full"``: every parameter ``p`` becomes ``p + D`` with a trainable ``D`` (K, *p.shape)
  starting at 0: exactly full fine-tuning.
* ``method="lora"``: every targeted weight ``W0`` (out, in) becomes
  ``W0 + B diag(g) A`` with ``A`` (K, r_max, in) Kaiming-uniform, ``B`` (K, out, r_max) zero and the
  gate ``g_i = s`` for ``i < r``, ``0`` beyond (``s = alpha / r`` or ``alpha / sqrt(r)``):
  exactly ``s B A`` of PEFT's LoRA (``lrkit.LoRALinear``), with all ranks padded to ``r_max``
  (padded rows get zero gradients, so they never move). A test checks a configuration
  against ``lrkit.add_lora`` trained by ``torch.optim.Adam``.

Losses are next-token cross-entropies in nats, evaluated every ``eval_every`` steps on
held-out target and source sequences: the learning curve and the forgetting curve. The loop
follows :mod:`lrkit.runs`: a configuration whose training loss is non-finite or above ``blowup``
times its first is frozen (its update zeroed) with NaN curves from that step, and nothing is read
back to the host before the loop ends.

**Measurements** (:mod:`lrkit.forgetting_measures`): intruder dimensions and their mitigation,
input-weighted updates, the learning-forgetting front. Both modules' names are re-exported here.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn
from torch.func import functional_call, grad_and_value, vmap

from ._validate import blowup_factor, choice, finite_float, positive_float, positive_int
from .env import generator
from .forgetting_measures import input_weighted, intruder_summary, layer_second_moments, mitigate, pareto_excess
from .forgetting_tasks import bayes_loss, entropy_rate, random_chains, sample_sequences
from .optim import AdamState, batched_adam_step
from .progress import track
from .runs import Divergence
from .transformer import ALL_TARGETS, GPT, GPTConfig, next_token_loss, projection_names

__all__ = ["random_chains", "entropy_rate", "bayes_loss", "sample_sequences", "pretrain", "Sweep",
           "finetune_sweep", "sequence_loss", "projection_names", "layer_second_moments", "intruder_summary",
           "mitigate", "input_weighted", "pareto_excess"]

Params = dict[str, torch.Tensor]


def pretrain(cfg: GPTConfig, P: torch.Tensor, steps: int, lr: float, batch: int, seed: int,
             device: torch.device | str = "cpu", progress: bool | None = None) -> tuple[GPT, list[float]]:
    """A :class:`GPT` trained by Adam for ``steps`` steps on fresh sequences of the chains ``P``.

    Returns the model (in eval mode, parameters frozen) and the training losses (read from the
    device once, after the loop). ``progress``: a bar (:mod:`lrkit.progress`; ``None``: full scale only).
    """
    positive_int(steps, "steps"), positive_float(lr, "lr"), positive_int(batch, "batch")
    model = GPT(cfg, seed=seed).to(device)
    data = sample_sequences(P, steps * batch, cfg.block_size, seed=seed + 1).view(steps, batch, -1).to(device)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    losses = torch.empty(steps, device=device)
    for t, x in enumerate(track(data, progress, desc="pretrain")):
        loss = next_token_loss(model(x), x)
        opt.zero_grad()
        torch.autograd.backward(loss)
        opt.step()
        losses[t] = loss.detach()
    for p in model.parameters():
        p.requires_grad_(False)
    curve: list[float] = losses.tolist()
    return model.eval(), curve


@dataclass
class Sweep:
    """``K`` fine-tuning runs of one method. Curves are (K, n_evals) at ``eval_steps``, NaN once diverged.

    A :class:`lrkit.runs.RunResult`: ``final`` is the last target loss, ``diverged`` (K,) and
    ``diverged_at`` (K,) (the training step it was detected, -1 if never).
    """

    method: str
    ranks: list[int | None]
    lrs: list[float]
    seeds: list[int]
    rslora: list[bool]
    eval_steps: list[int]
    target_loss: torch.Tensor
    source_loss: torch.Tensor
    weights: list[Params] = field(repr=False)   # per configuration: every parameter, final
    factors: list[Params] = field(default_factory=list, repr=False)  # LoRA: name -> A (r, in)
    diverged: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=bool))
    diverged_at: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))

    @property
    def final(self) -> torch.Tensor:
        """The target loss at the last evaluation, per configuration (NaN if diverged)."""
        return self.target_loss[:, -1]

    def updates(self, model: nn.Module, k: int) -> Params:
        """``W_k - W0`` of every projection (the adapted matrices) of configuration ``k``."""
        base = dict(model.named_parameters())
        return {n: self.weights[k][n] - base[n].detach() for n in projection_names(model)}


def sequence_loss(model: nn.Module, weights: Params, x: torch.Tensor) -> torch.Tensor:
    """Next-token loss of ``model`` run with the parameters ``weights`` (a full or partial dict) on ``x``."""
    return next_token_loss(functional_call(model, weights, (x,)), x)


def _lora_init(base: Params, names: list[str], seeds: Sequence[int], r_max: int,
               dev: torch.device) -> Params:
    """``A`` (K, r_max, in) Kaiming-uniform, drawn layer after layer from ``generator(seed)``, and ``B = 0``."""
    K, gens, train = len(seeds), [generator(s) for s in seeds], {}
    for n in names:
        out_f, in_f = base[n].shape
        if r_max > min(out_f, in_f):
            raise ValueError(f"rank {r_max} exceeds min(out, in) = {min(out_f, in_f)} of {n}")
        bound = 1.0 / math.sqrt(in_f)   # PEFT's Kaiming-uniform(a = sqrt 5) for A
        A = torch.stack([(2 * torch.rand(r_max, in_f, generator=g) - 1) * bound for g in gens])
        train[n + ".A"], train[n + ".B"] = A.to(dev), torch.zeros(K, out_f, r_max, device=dev)
    return train


def finetune_sweep(model: GPT, target_train: torch.Tensor, evals: dict[str, torch.Tensor], method: str,
                   lrs: Sequence[float], seeds: Sequence[int], steps: int, batch: int, eval_every: int,
                   ranks: Sequence[int] | None = None, rslora: Sequence[bool] | bool = False,
                   alpha: float | Sequence[float] | None = None,
                   targets: Sequence[str] = ALL_TARGETS, blowup: float = 10.0,
                   progress: bool | None = None) -> Sweep:
    """Fine-tune ``K = len(lrs)`` copies of ``model`` at once (``lrs``, ``seeds``, ``ranks`` one per copy).

    ``evals`` holds the held-out sets ``{"target": (n, T), "source": (n, T)}``. Each copy draws its
    mini-batches from ``target_train`` (N, T) in its own seeded order. ``alpha`` defaults to
    ``2 r`` (the papers' setting, scale 2). A copy whose training loss is non-finite or above
    ``blowup`` times its first is frozen from that step (:class:`lrkit.runs.Divergence`).
    ``progress``: a bar over the steps (:mod:`lrkit.progress`; ``None``: full scale only).
    Returns a :class:`Sweep`.
    """
    choice(method, "method", ("lora", "full"))
    K = len(lrs)
    if len(seeds) != K or (method == "lora" and (ranks is None or len(ranks) != K)):
        raise ValueError(f"lrs, seeds (and ranks for LoRA) need one value per configuration, got {K} lrs")
    positive_int(steps, "steps"), positive_int(batch, "batch"), positive_int(eval_every, "eval_every")
    blowup = blowup_factor(blowup)
    rs = [rslora] * K if isinstance(rslora, bool) else list(rslora)
    base = {n: p.detach() for n, p in model.named_parameters()}
    dev = target_train.device
    names = projection_names(model, targets)
    rk = [] if ranks is None or method == "full" else [positive_int(r, "ranks[i]") for r in ranks]
    weights: Callable[[Params, torch.Tensor], Params]
    if method == "full":
        train = {n: torch.zeros((K,) + p.shape, device=dev) for n, p in base.items()}
        gate = torch.zeros(K, 1, device=dev)

        def weights(tr: Params, g: torch.Tensor) -> Params:
            return {n: base[n] + tr[n] for n in base}
    else:
        r_max = max(rk)
        train = _lora_init(base, names, seeds, r_max, dev)
        al = ([2.0 * r for r in rk] if alpha is None else [float(alpha)] * K if isinstance(alpha, (int, float))
              else [float(a) for a in alpha])
        scale = [a / (math.sqrt(r) if s else r) for a, r, s in zip(al, rk, rs)]
        gate = torch.tensor([[sc if i < r else 0.0 for i in range(r_max)] for sc, r in zip(scale, rk)],
                            device=dev)

        def weights(tr: Params, g: torch.Tensor) -> Params:
            return {n: base[n] + (tr[n + ".B"] * g) @ tr[n + ".A"] for n in names}

    def loss(tr: Params, g: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        return sequence_loss(model, weights(tr, g), x)

    step_fn = vmap(grad_and_value(loss), in_dims=(0, 0, 0))
    evaluate = vmap(loss, in_dims=(0, 0, None))
    states = {n: AdamState(t) for n, t in train.items()}
    eta = torch.tensor([finite_float(v, "lrs[i]", minimum=0.0) for v in lrs], dtype=torch.float32, device=dev)
    order = torch.stack([torch.randperm(target_train.shape[0], generator=generator(s)) for s in seeds]).to(dev)
    per_epoch = target_train.shape[0] // batch
    eval_steps = [t for t in range(steps + 1) if t % eval_every == 0 or t == steps]
    column = {t: i for i, t in enumerate(eval_steps)}
    curves = {key: torch.full((K, len(eval_steps)), math.nan, device=dev) for key in ("target", "source")}
    div = Divergence(K, blowup, dev)
    for step in track(range(steps + 1), progress, desc=f"fine-tune ({method})"):
        if step < steps:
            j = step % per_epoch
            g, train_loss = step_fn(train, gate, target_train[order[:, j * batch:(j + 1) * batch]])
            alive = div.update(train_loss.detach(), step)
            frozen = div.freeze(*train.values(), *g.values(), *(x for s in states.values() for x in (s.m, s.v)))
            n_par = len(train)
            train = dict(zip(train, frozen[:n_par]))
            g = dict(zip(g, frozen[n_par:2 * n_par]))
            for i, s in enumerate(states.values()):
                s.m, s.v = frozen[2 * n_par + 2 * i], frozen[2 * n_par + 2 * i + 1]
        if step in column:
            with torch.no_grad():
                for key, curve in curves.items():
                    curve[:, column[step]] = div.mask(evaluate(train, gate, evals[key]))
        if step == steps:
            break
        rate = eta * alive.to(eta.dtype)   # frozen configurations take no step
        for n in train:
            train[n] = batched_adam_step(train[n], g[n], states[n], rate)
    with torch.no_grad():
        merged = vmap(weights)(train, gate)
        final = [{**base, **{n: w[k] for n, w in merged.items()}} for k in range(K)]
        factors = [] if method == "full" else [
            {n: train[n + ".A"][k, :rk[k]].cpu() for n in names} for k in range(K)]
    diverged, diverged_at = div.result()
    return Sweep(method=method, ranks=list[int | None](rk) if rk else [None] * K, lrs=list(lrs),
                 seeds=list(seeds), rslora=rs, eval_steps=eval_steps, target_loss=curves["target"].cpu(),
                 source_loss=curves["source"].cpu(), weights=final, factors=factors,
                 diverged=diverged, diverged_at=diverged_at)
