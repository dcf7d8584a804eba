"""The tiny Chapter 8 task the forgetting tests share: two source chains, one target chain."""

from __future__ import annotations

from typing import Any

from lrkit import forgetting as fg
from lrkit.transformer import GPTConfig

CFG = GPTConfig(vocab_size=12, block_size=8, n_layer=1, n_head=2, d_model=16)


def tiny_task(pretrain_steps: int) -> dict[str, Any]:
    """A model pretrained on chains 0-1 for ``pretrain_steps`` steps, target data from chain 2."""
    P = fg.random_chains(3, CFG.vocab_size, 3, seed=0)
    model, losses = fg.pretrain(CFG, P[:2], steps=pretrain_steps, lr=1e-2, batch=8, seed=0)
    train = fg.sample_sequences(P[2:], 64, CFG.block_size, seed=1)
    evals = {"target": fg.sample_sequences(P[2:], 16, CFG.block_size, seed=2),
             "source": fg.sample_sequences(P[:2], 16, CFG.block_size, seed=3)}
    return dict(P=P, model=model, losses=losses, train=train, evals=evals)
