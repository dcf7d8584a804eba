"""Chapter 8's tasks: synthetic languages made of sparse random Markov chains, and their loss floors.

A *synthetic language* is a set of sparse random Markov chains over ``V`` tokens
(:func:`random_chains`): each token has ``support`` possible successors with random
probabilities. The *source* task mixes ``n_topics`` chains, one per sequence, so the model
must infer the topic from the context; the *target* task is a new chain, so its inputs
(token statistics) differ from the source's. A chain's entropy rate
``H = sum_i pi_i H(P_i.)`` (``pi`` the stationary law) is the lowest next-token loss any
model can reach on it (:func:`entropy_rate`), the floor drawn under the learning curves;
:func:`bayes_loss` is the floor of a mixture whose chain must be inferred.

Chains and sequences live on the CPU (sequences are moved to the compute device by their user);
the floors are CPU-side theory in float64. :mod:`lrkit.forgetting` re-exports every name here.
"""

from __future__ import annotations

import math

import torch

from ._validate import positive_int
from .env import generator

__all__ = ["random_chains", "entropy_rate", "bayes_loss", "sample_sequences"]


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
