"""What LoRA learns and what it forgets, on a small transformer (Chapter 8).

**Tasks.** A *synthetic language* is a set of sparse random Markov chains over ``V`` tokens
(:func:`random_chains`): each token has ``support`` possible successors with random
probabilities. The *source* task mixes ``n_topics`` chains, one per sequence, so the model
must infer the topic from the context; the *target* task is a new chain, so its inputs
(token statistics) differ from the source's. A chain's entropy rate
``H = sum_i pi_i H(P_i.)`` (``pi`` the stationary law) is the lowest next-token loss any
model can reach on it (:func:`entropy_rate`), the floor drawn under the learning curves.

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
held-out target and source sequences: the learning curve and the forgetting curve.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
from torch import nn
from torch.func import functional_call, grad, vmap

from . import spectra
from ._validate import choice, positive_float, positive_int
from .env import generator, resolve_scale
from .optim import AdamState, batched_adam_step
from .transformer import ALL_TARGETS, GPT, GPTConfig, next_token_loss

__all__ = ["sizes", "random_chains", "entropy_rate", "bayes_loss", "sample_sequences", "pretrain", "Sweep",
           "finetune_sweep", "sequence_loss", "projection_names", "layer_second_moments", "intruder_summary",
           "mitigate", "input_weighted", "pareto_excess"]


def sizes(scale: str | None = None) -> dict[str, object]:
    """Experiment sizes for ``scale`` (default :func:`lrkit.get_scale`).

    ``small``: a 2-block, width-32 model; the chapter runs in well under a minute of CPU time.
    ``full``: 4 blocks of width 256 (3.2M parameters), 2048 tokens per step, so about 40 GFLOP
    per training step and configuration; 3000 pretraining steps and 34 configurations of 600
    steps make about 1 PFLOP, roughly 4-5 minutes on a T4-class GPU (an estimate from operation
    counts, at 4 TFLOP/s sustained; not measured).
    """
    if resolve_scale(scale) == "small":
        return dict(cfg=GPTConfig(vocab_size=32, block_size=16, n_layer=2, n_head=2, d_model=32),
                    n_topics=4, support=3, pretrain_steps=400, pretrain_lr=1e-2, batch=32, n_target=1024,
                    n_test=128, steps=150, eval_every=15, ranks=(1, 2, 4, 8, 16), lora_lrs=(3e-3, 1e-2),
                    full_lrs=(3e-4, 1e-3, 3e-3), seeds=2, subspace_ranks=(2, 16))
    return dict(cfg=GPTConfig(vocab_size=64, block_size=32, n_layer=4, n_head=4, d_model=256),
                n_topics=8, support=3, pretrain_steps=3000, pretrain_lr=1e-3, batch=64, n_target=8192,
                n_test=512, steps=600, eval_every=50, ranks=(1, 2, 4, 8, 16, 64), lora_lrs=(1e-3, 3e-3),
                full_lrs=(1e-4, 3e-4, 1e-3), seeds=2, subspace_ranks=(8, 64))


# --------------------------------------------------------------------------- tasks
def random_chains(n_chains: int, vocab: int, support: int, seed: int) -> torch.Tensor:
    """``n_chains`` sparse Markov transition matrices ``P`` (n_chains, vocab, vocab), rows summing to 1.

    Row ``i`` puts random weights ``U(0.2, 1.2)`` (normalised) on ``support`` successors drawn
    without replacement; every other entry is 0.
    """
    positive_int(n_chains, "n_chains"), positive_int(vocab, "vocab"), positive_int(support, "support")
    if support > vocab:
        raise ValueError(f"support must be <= vocab ({vocab}), got {support}")
    gen = generator(seed)
    succ = torch.rand(n_chains, vocab, vocab, generator=gen).argsort(-1)[..., :support]
    P = torch.zeros(n_chains, vocab, vocab, dtype=torch.float64)
    P.scatter_(-1, succ, 0.2 + torch.rand(n_chains, vocab, support, generator=gen, dtype=torch.float64))
    return P / P.sum(-1, keepdim=True)


def _stationary(P: torch.Tensor, iters: int = 2000) -> torch.Tensor:
    pi = torch.full(P.shape[:-1], 1.0 / P.shape[-1], dtype=P.dtype)
    for _ in range(iters):  # power iteration, averaged with the previous step so periodic chains converge
        pi = 0.5 * (pi + (pi.unsqueeze(-2) @ P).squeeze(-2))
    return pi


def entropy_rate(P: torch.Tensor) -> torch.Tensor:
    """``H = sum_i pi_i * (-sum_j P_ij log P_ij)`` in nats, one per chain: the best possible next-token loss.

    ``P`` (n, V, V) or (V, V); the stationary law ``pi`` solves ``pi P = pi``.
    """
    P = P if P.ndim == 3 else P.unsqueeze(0)
    row_h = -(P * torch.where(P > 0, P.log(), torch.zeros_like(P))).sum(-1)     # (n, V)
    return (_stationary(P) * row_h).sum(-1)


def bayes_loss(P: torch.Tensor, x: torch.Tensor) -> float:
    """The Bayes-optimal next-token loss (nats) on ``x`` (n, T) when the chain of each sequence is unknown.

    The ideal predictor knows the chains ``P`` (n_chains, V, V) and the uniform prior over them and
    infers the chain from the prefix: ``p(x_t | x_<t) = sum_c p(c | x_<t) P_c[x_{t-1}, x_t]``. Averaged over
    the targets ``t = 1..T-1`` (the positions :func:`lrkit.transformer.next_token_loss` scores).
    """
    P = P if P.ndim == 3 else P.unsqueeze(0)
    x = x.cpu()
    logpost = torch.full((x.shape[0], P.shape[0]), -math.log(P.shape[0]), dtype=torch.float64)
    pi = _stationary(P)
    logpost = logpost + pi[:, x[:, 0]].T.clamp_min(1e-300).log()
    logpost = logpost - logpost.logsumexp(-1, keepdim=True)
    total = 0.0
    for t in range(1, x.shape[1]):
        step = P[:, x[:, t - 1], x[:, t]].T.clamp_min(1e-300).log()       # (n, n_chains)
        joint = logpost + step
        total -= joint.logsumexp(-1).sum().item()
        logpost = joint - joint.logsumexp(-1, keepdim=True)
    return total / (x.shape[0] * (x.shape[1] - 1))


def sample_sequences(P: torch.Tensor, n: int, length: int, seed: int) -> torch.Tensor:
    """``n`` token sequences (n, length), each from one chain of ``P`` (n_chains, V, V) drawn uniformly.

    The first token is drawn from the chain's stationary law, so every position has the same
    statistics and the entropy rate is the floor of the loss at every position.
    """
    positive_int(n, "n"), positive_int(length, "length")
    P = P if P.ndim == 3 else P.unsqueeze(0)
    gen = generator(seed)
    topic = torch.randint(P.shape[0], (n,), generator=gen)
    x = torch.empty(n, length, dtype=torch.long)
    x[:, 0] = torch.multinomial(_stationary(P)[topic], 1, generator=gen).squeeze(1)
    for t in range(1, length):
        x[:, t] = torch.multinomial(P[topic, x[:, t - 1]], 1, generator=gen).squeeze(1)
    return x


# --------------------------------------------------------------------------- pretraining
def pretrain(cfg: GPTConfig, P: torch.Tensor, steps: int, lr: float, batch: int, seed: int,
             device: torch.device | str = "cpu") -> tuple[GPT, list[float]]:
    """A :class:`GPT` trained by Adam for ``steps`` steps on fresh sequences of the chains ``P``.

    Returns the model (in eval mode, parameters frozen) and the training losses.
    """
    positive_int(steps, "steps"), positive_float(lr, "lr"), positive_int(batch, "batch")
    model = GPT(cfg, seed=seed).to(device)
    data = sample_sequences(P, steps * batch, cfg.block_size, seed=seed + 1).view(steps, batch, -1).to(device)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    losses = []
    for x in data:
        loss = next_token_loss(model(x), x)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    for p in model.parameters():
        p.requires_grad_(False)
    return model.eval(), losses


# --------------------------------------------------------------------------- batched fine-tuning
@dataclass
class Sweep:
    """``K`` fine-tuning runs of one method. Curves are (K, n_evals) at ``eval_steps``."""

    method: str
    ranks: list[int | None]
    lrs: list[float]
    seeds: list[int]
    rslora: list[bool]
    eval_steps: list[int]
    target_loss: torch.Tensor
    source_loss: torch.Tensor
    weights: list[dict[str, torch.Tensor]] = field(repr=False)   # per configuration: every parameter, final
    factors: list[dict[str, torch.Tensor]] = field(default_factory=list, repr=False)  # LoRA: name -> A (r, in)

    def updates(self, model: nn.Module, k: int) -> dict[str, torch.Tensor]:
        """``W_k - W0`` of every projection (the adapted matrices) of configuration ``k``."""
        base = dict(model.named_parameters())
        return {n: self.weights[k][n] - base[n].detach() for n in projection_names(model)}


def projection_names(model: nn.Module, targets: Sequence[str] = ALL_TARGETS) -> list[str]:
    """Parameter names (``...q_proj.weight``) of the targeted projections of ``model``."""
    return [n for n, _ in model.named_parameters() if n.endswith(".weight") and n.split(".")[-2] in targets]


def sequence_loss(model: nn.Module, weights: dict[str, torch.Tensor], x: torch.Tensor) -> torch.Tensor:
    """Next-token loss of ``model`` run with the parameters ``weights`` (a full or partial dict) on ``x``."""
    return next_token_loss(functional_call(model, weights, (x,)), x)


def finetune_sweep(model: GPT, target_train: torch.Tensor, evals: dict[str, torch.Tensor], method: str,
                   lrs: Sequence[float], seeds: Sequence[int], steps: int, batch: int, eval_every: int,
                   ranks: Sequence[int] | None = None, rslora: Sequence[bool] | bool = False,
                   alpha: float | Sequence[float] | None = None,
                   targets: Sequence[str] = ALL_TARGETS) -> Sweep:
    """Fine-tune ``K = len(lrs)`` copies of ``model`` at once (``lrs``, ``seeds``, ``ranks`` one per copy).

    ``evals`` holds the held-out sets ``{"target": (n, T), "source": (n, T)}``. Each copy draws its
    mini-batches from ``target_train`` (N, T) in its own seeded order. ``alpha`` defaults to
    ``2 r`` (the papers' setting, scale 2). Returns a :class:`Sweep`.
    """
    choice(method, "method", ("lora", "full"))
    K = len(lrs)
    if len(seeds) != K or (method == "lora" and (ranks is None or len(ranks) != K)):
        raise ValueError(f"lrs, seeds (and ranks for LoRA) need one value per configuration, got {K} lrs")
    positive_int(steps, "steps"), positive_int(batch, "batch"), positive_int(eval_every, "eval_every")
    rs = [rslora] * K if isinstance(rslora, bool) else list(rslora)
    base = {n: p.detach() for n, p in model.named_parameters()}
    dev = target_train.device
    if method == "full":
        train = {n: torch.zeros((K,) + p.shape, device=dev) for n, p in base.items()}
        gate = torch.zeros(K, 1, device=dev)

        def weights(tr: dict, g: torch.Tensor) -> dict:
            return {n: base[n] + tr[n] for n in base}
    else:
        names = projection_names(model, targets)
        r_max = max(ranks)  # type: ignore[arg-type]
        gens = [generator(s) for s in seeds]
        train = {}
        for n in names:
            out_f, in_f = base[n].shape
            if r_max > min(out_f, in_f):
                raise ValueError(f"rank {r_max} exceeds min(out, in) = {min(out_f, in_f)} of {n}")
            bound = 1.0 / math.sqrt(in_f)   # PEFT's Kaiming-uniform(a = sqrt 5) for A
            A = torch.stack([(2 * torch.rand(r_max, in_f, generator=g) - 1) * bound for g in gens])
            train[n + ".A"], train[n + ".B"] = A.to(dev), torch.zeros(K, out_f, r_max, device=dev)
        al = [2.0 * r for r in ranks] if alpha is None else ([alpha] * K if isinstance(alpha, (int, float))
                                                              else list(alpha))  # type: ignore[union-attr]
        scale = [a / (math.sqrt(r) if s else r) for a, r, s in zip(al, ranks, rs)]  # type: ignore[arg-type]
        gate = torch.tensor([[sc if i < r else 0.0 for i in range(r_max)] for sc, r in zip(scale, ranks)],
                            device=dev)  # type: ignore[arg-type]

        def weights(tr: dict, g: torch.Tensor) -> dict:
            return {n: base[n] + (tr[n + ".B"] * g) @ tr[n + ".A"] for n in names}

    def loss(tr: dict, g: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        return sequence_loss(model, weights(tr, g), x)

    grads = vmap(grad(loss), in_dims=(0, 0, 0))
    evaluate = vmap(loss, in_dims=(0, 0, None))
    states = {n: AdamState(t) for n, t in train.items()}
    orders = [torch.randperm(target_train.shape[0], generator=generator(s)) for s in seeds]
    per_epoch = target_train.shape[0] // batch
    curves: dict[str, list[torch.Tensor]] = {"target": [], "source": []}
    eval_steps = []
    for step in range(steps + 1):
        if step % eval_every == 0 or step == steps:
            with torch.no_grad():
                for key in curves:
                    curves[key].append(evaluate(train, gate, evals[key]).cpu())
            eval_steps.append(step)
        if step == steps:
            break
        j = step % per_epoch
        idx = torch.stack([o[j * batch:(j + 1) * batch] for o in orders]).to(dev)
        g = grads(train, gate, target_train[idx])
        for n in train:
            train[n] = batched_adam_step(train[n], g[n], states[n], lrs)
    with torch.no_grad():
        merged = vmap(weights)(train, gate)
        final = [{**base, **{n: w[k] for n, w in merged.items()}} for k in range(K)]
        factors = [] if method == "full" else [
            {n: train[n + ".A"][k, :ranks[k]].cpu() for n in names} for k in range(K)]  # type: ignore[index]
    return Sweep(method=method, ranks=list(ranks) if ranks is not None else [None] * K, lrs=list(lrs),
                 seeds=list(seeds), rslora=rs, eval_steps=eval_steps, target_loss=torch.stack(curves["target"], 1),
                 source_loss=torch.stack(curves["source"], 1), weights=final, factors=factors)


# --------------------------------------------------------------------------- measurements
def layer_second_moments(model: GPT, weights: dict[str, torch.Tensor], x: torch.Tensor) -> dict[str, torch.Tensor]:
    """``Sigma_x = E[h h^T]`` (in, in) of the input ``h`` of every projection, run with ``weights`` on ``x``."""
    mods = {n: m for n, m in model.named_modules() if n.rsplit(".", 1)[-1] in ALL_TARGETS}
    acc: dict[str, torch.Tensor] = {}
    hooks = [m.register_forward_hook(lambda mod, inp, out, n=n: acc.__setitem__(
        n, inp[0].reshape(-1, inp[0].shape[-1]).double())) for n, m in mods.items()]
    try:
        with torch.no_grad():
            functional_call(model, weights, (x,))
    finally:
        for h in hooks:
            h.remove()
    return {n + ".weight": (h.T @ h / h.shape[0]).cpu() for n, h in acc.items()}


def intruder_summary(model: nn.Module, weights: dict[str, torch.Tensor], k: int = 10,
                     eps: float = 0.5) -> tuple[int, float]:
    """``(count, alignment)`` of a fine-tuned model against ``model``'s weights, over every projection.

    ``count`` sums :func:`lrkit.spectra.intruder_dimensions` over the adapted matrices (the authors'
    model-level count); ``alignment`` is the mean over matrices of ``min_j max_cos_j`` (the weakest
    alignment among the top ``k`` directions): a continuous statistic, steadier than a count.
    """
    base = dict(model.named_parameters())
    counts, weakest = 0, []
    for n in projection_names(model):
        c, max_cos = spectra.intruder_dimensions(base[n], weights[n], k, eps)
        counts += c
        weakest.append(float(max_cos.min()))
    return counts, sum(weakest) / len(weakest)


def mitigate(model: nn.Module, weights: dict[str, torch.Tensor], rank: int | None, lam: float = 0.75,
             k: int = 10, eps: float = 0.5) -> dict[str, torch.Tensor]:
    """``weights`` with every projection's intruders scaled by ``lam`` (:func:`lrkit.spectra.reduce_intruders`)."""
    base = dict(model.named_parameters())
    out = dict(weights)
    for n in projection_names(model):
        out[n] = spectra.reduce_intruders(base[n], weights[n], rank=rank, k=k, eps=eps,
                                          lam=lam).to(weights[n].dtype)
    return out


def input_weighted(delta: torch.Tensor, second_moment: torch.Tensor) -> torch.Tensor:
    """``dW Sigma^{1/2}`` (out, in): the update as it acts on the layer's inputs, ``Sigma = E[h h^T]`` (in, in).

    ``||dW Sigma^{1/2}||_F^2 = E ||dW h||^2``: its spectrum ranks directions by how much they change the
    layer's output on the data, not by their size in weight space.
    """
    evals, Q = torch.linalg.eigh(second_moment.double())
    return delta.double() @ (Q * evals.clamp_min(0).sqrt()) @ Q.T


def pareto_excess(front_target: torch.Tensor, front_source: torch.Tensor, target: torch.Tensor,
                  source: torch.Tensor) -> torch.Tensor:
    """How far points lie above a learning-forgetting front, in source-loss units (negative: below it).

    The front at target loss ``t`` is the smallest source loss among the front's points that reach
    a target loss ``<= t`` (a lower envelope; NaN when no front point is that good).
    Every argument is 1-D; ``target``/``source`` are the points tested.
    """
    ft, fs = front_target.flatten().double(), front_source.flatten().double()
    out = []
    for t, s in zip(target.flatten().double(), source.flatten().double()):
        ok = ft <= t
        out.append(s - fs[ok].min() if ok.any() else torch.tensor(float("nan"), dtype=torch.float64))
    return torch.stack(out)
