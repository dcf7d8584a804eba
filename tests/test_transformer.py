"""The small decoder-only transformer of Chapter 8: shapes, causality, PEFT-style LoRA targets."""

from __future__ import annotations

import copy
import math

import pytest
import torch

from lrkit import add_lora, count_parameters, lora_layers
from lrkit.transformer import ALL_TARGETS, ATTN, GPT, GPTConfig, next_token_loss

CFG = GPTConfig(vocab_size=11, block_size=8, n_layer=2, n_head=2, d_model=16)


def _tokens(n: int = 3, T: int = 8, seed: int = 0) -> torch.Tensor:
    return torch.randint(CFG.vocab_size, (n, T), generator=torch.Generator().manual_seed(seed))


def test_logits_have_shape_batch_time_vocab() -> None:
    assert GPT(CFG)(_tokens()).shape == (3, 8, 11)


def test_the_model_is_causal() -> None:
    model, x = GPT(CFG), _tokens()
    y = x.clone()
    y[:, 5:] = (y[:, 5:] + 1) % CFG.vocab_size     # change the future
    with torch.no_grad():
        assert torch.allclose(model(x)[:, :5], model(y)[:, :5], atol=1e-6)
        assert not torch.allclose(model(x)[:, 5:], model(y)[:, 5:])


def test_same_seed_same_model() -> None:
    a, b = GPT(CFG, seed=3), GPT(CFG, seed=3)
    assert all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters()))
    assert not torch.equal(GPT(CFG, seed=4).lm_head.weight, a.lm_head.weight)


def test_projections_are_named_as_peft_users_target_them() -> None:
    names = GPT(CFG).projections()
    assert len(names) == CFG.n_layer * len(ALL_TARGETS)
    assert {n.rsplit(".", 1)[-1] for n in names} == set(ALL_TARGETS)


@pytest.mark.parametrize("targets", [list(ATTN), ["q_proj", "v_proj"], list(ALL_TARGETS)])
def test_add_lora_attaches_to_the_targeted_projections(targets: list[str]) -> None:
    model = GPT(CFG)
    adapted = add_lora(copy.deepcopy(model), 2, targets=targets)
    layers = lora_layers(adapted)
    assert len(layers) == CFG.n_layer * len(targets)
    assert count_parameters(adapted) == sum(2 * (m.in_features + m.out_features) for _, m in layers)
    x = _tokens()
    with torch.no_grad():
        assert torch.equal(adapted(x), model(x))          # B = 0: the adapted model starts at the base model


def test_uniform_logits_give_log_vocab() -> None:
    x = _tokens()
    assert math.isclose(next_token_loss(torch.zeros(3, 8, 11), x).item(), math.log(11), rel_tol=1e-6)
    assert next_token_loss(torch.zeros(3, 8, 11), x, start=4).isfinite()


def test_bad_configs_and_inputs_are_named() -> None:
    with pytest.raises(ValueError, match="n_head"):
        GPTConfig(d_model=10, n_head=4)
    with pytest.raises(ValueError, match="d_model"):
        GPTConfig(d_model=0)
    with pytest.raises(TypeError, match="cfg"):
        GPT({"d_model": 8})  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="block_size"):
        GPT(CFG)(_tokens(T=9))
    with pytest.raises(ValueError, match="logits"):
        next_token_loss(torch.zeros(3, 7, 11), _tokens())
