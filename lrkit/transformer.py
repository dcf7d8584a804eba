"""A small decoder-only transformer, nanoGPT style (Chapter 8).

One pre-norm block is

    h = x + o_proj(attention(q_proj(LN(x)), k_proj(LN(x)), v_proj(LN(x))))   causal, n_head heads
    y = h + down_proj(gelu(up_proj(LN(h))))

and the model is token + position embeddings, ``n_layer`` blocks, a final LayerNorm and a
linear read-out ``lm_head`` to next-token logits. Every projection is an ``nn.Linear`` with
the names PEFT users target (``q_proj``, ``k_proj``, ``v_proj``, ``o_proj``, ``up_proj``,
``down_proj``), so ``lrkit.add_lora(model, r, targets=["q_proj", "v_proj"])`` adapts the
attention and ``targets=ATTN + MLP`` every projection, as on a Llama-type model.

Shapes: tokens ``idx`` (B, T) of ints in ``[0, vocab_size)``; logits (B, T, vocab_size);
a projection weight is (out, in) as in ``nn.Linear``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ._validate import positive_int
from .env import cpu_seeded

__all__ = ["GPTConfig", "GPT", "ATTN", "MLP_TARGETS", "ALL_TARGETS", "next_token_loss", "projection_names"]

ATTN: tuple[str, ...] = ("q_proj", "k_proj", "v_proj", "o_proj")
MLP_TARGETS: tuple[str, ...] = ("up_proj", "down_proj")
ALL_TARGETS: tuple[str, ...] = ATTN + MLP_TARGETS


@dataclass(frozen=True)
class GPTConfig:
    """Sizes of :class:`GPT`. ``d_ff`` defaults to ``4 * d_model``."""

    vocab_size: int = 32
    block_size: int = 32      # longest sequence the position embedding covers
    n_layer: int = 2
    n_head: int = 2
    d_model: int = 64
    d_ff: int | None = None

    def __post_init__(self) -> None:
        for name in ("vocab_size", "block_size", "n_layer", "n_head", "d_model"):
            positive_int(getattr(self, name), name)
        if self.d_ff is not None:
            positive_int(self.d_ff, "d_ff")
        if self.d_model % self.n_head:
            raise ValueError(f"d_model ({self.d_model}) must be divisible by n_head ({self.n_head})")

    @property
    def ff(self) -> int:
        return self.d_ff if self.d_ff is not None else 4 * self.d_model


class Attention(nn.Module):
    """Causal multi-head self-attention with separate q/k/v/o projections (no biases)."""

    def __init__(self, cfg: GPTConfig) -> None:
        super().__init__()
        d = cfg.d_model
        self.n_head = cfg.n_head
        self.q_proj, self.k_proj = nn.Linear(d, d, bias=False), nn.Linear(d, d, bias=False)
        self.v_proj, self.o_proj = nn.Linear(d, d, bias=False), nn.Linear(d, d, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, T, d = x.shape
        # (B, T, d) -> (B, n_head, T, d / n_head)
        q, k, v = (p(x).view(B, T, self.n_head, d // self.n_head).transpose(1, 2)
                   for p in (self.q_proj, self.k_proj, self.v_proj))
        att = (q @ k.transpose(-2, -1)) / math.sqrt(q.shape[-1])       # (B, n_head, T, T)
        causal = torch.ones(T, T, dtype=torch.bool, device=x.device).tril()
        att = att.masked_fill(~causal, float("-inf")).softmax(dim=-1)
        y = att @ v                                                      # (B, n_head, T, d / n_head)
        out: torch.Tensor = self.o_proj(y.transpose(1, 2).reshape(B, T, d))
        return out


class MLP(nn.Module):
    """``down_proj(gelu(up_proj(x)))``: d_model -> d_ff -> d_model."""

    def __init__(self, cfg: GPTConfig) -> None:
        super().__init__()
        self.up_proj = nn.Linear(cfg.d_model, cfg.ff, bias=False)
        self.down_proj = nn.Linear(cfg.ff, cfg.d_model, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.down_proj(F.gelu(self.up_proj(x)))
        return out


class Block(nn.Module):
    """Pre-norm residual block: attention, then MLP."""

    def __init__(self, cfg: GPTConfig) -> None:
        super().__init__()
        self.ln1, self.ln2 = nn.LayerNorm(cfg.d_model), nn.LayerNorm(cfg.d_model)
        self.attn, self.mlp = Attention(cfg), MLP(cfg)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h: torch.Tensor = x + self.attn(self.ln1(x))
        y: torch.Tensor = h + self.mlp(self.ln2(h))
        return y


class GPT(nn.Module):
    """Token and position embeddings, ``n_layer`` blocks, final norm, ``lm_head``.

    ``GPT(cfg, seed=s)`` draws its initial weights from a CPU generator seeded with ``s``
    (PyTorch's default ``nn.Linear`` init, embeddings N(0, 1)), so a model is reproducible
    on any device.
    """

    def __init__(self, cfg: GPTConfig, seed: int = 0) -> None:
        super().__init__()
        if not isinstance(cfg, GPTConfig):
            raise TypeError(f"cfg must be a GPTConfig, got {type(cfg).__name__}")
        self.cfg = cfg
        with cpu_seeded(seed):
            self.tok_emb = nn.Embedding(cfg.vocab_size, cfg.d_model)
            self.pos_emb = nn.Embedding(cfg.block_size, cfg.d_model)
            self.blocks = nn.ModuleList(Block(cfg) for _ in range(cfg.n_layer))
            self.ln_f = nn.LayerNorm(cfg.d_model)
            self.lm_head = nn.Linear(cfg.d_model, cfg.vocab_size, bias=False)

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        B, T = idx.shape
        if self.cfg.block_size < T:
            raise ValueError(f"sequence length {T} exceeds block_size {self.cfg.block_size}")
        x = self.tok_emb(idx) + self.pos_emb(torch.arange(T, device=idx.device))   # (B, T, d)
        for block in self.blocks:
            x = block(x)
        logits: torch.Tensor = self.lm_head(self.ln_f(x))                           # (B, T, V)
        return logits

    def projections(self) -> dict[str, nn.Linear]:
        """Every attention and MLP projection by its module name (the matrices LoRA adapts)."""
        return {n: m for n, m in self.named_modules()
                if isinstance(m, nn.Linear) and n.rsplit(".", 1)[-1] in ALL_TARGETS}


def next_token_loss(logits: torch.Tensor, idx: torch.Tensor, start: int = 1) -> torch.Tensor:
    """Mean cross-entropy (nats) of predicting ``idx[:, t + 1]`` from ``logits[:, t]``, for ``t + 1 >= start``.

    ``logits`` (B, T, V), ``idx`` (B, T); ``start`` skips the first targets (the first token of a
    sequence has no context to predict it from).
    """
    if logits.shape[:2] != idx.shape:
        raise ValueError(f"logits (B, T, V) and idx (B, T) disagree: {tuple(logits.shape)} vs {tuple(idx.shape)}")
    pred, tgt = logits[:, start - 1:-1], idx[:, start:]
    return F.cross_entropy(pred.reshape(-1, pred.shape[-1]), tgt.reshape(-1))


def projection_names(model: nn.Module, targets: Sequence[str] = ALL_TARGETS) -> list[str]:
    """Parameter names (``...q_proj.weight``) of the targeted projections of ``model``."""
    return [n for n, _ in model.named_parameters() if n.endswith(".weight") and n.split(".")[-2] in targets]
