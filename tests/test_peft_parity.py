"""lrkit's LoRA must equal Hugging Face PEFT's, number for number."""

from __future__ import annotations

import copy
import math

import pytest
import torch

# PEFT is a test-only dependency (the "test" extra); a missing PEFT fails here, it is never skipped.
from peft import LoraConfig, get_peft_model
from torch import nn

from lrkit import LoRALinear, add_lora, count_parameters, lora_layers, merge_lora


class MLP(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc1 = nn.Linear(12, 24)
        self.act = nn.Tanh()
        self.fc2 = nn.Linear(24, 7)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


def _pair(rank: int, alpha: float, rslora: bool = False, dtype=torch.float64, dropout: float = 0.0,
          init: str = "A"):
    torch.manual_seed(0)
    base = MLP().to(dtype)
    ours = add_lora(copy.deepcopy(base), rank, alpha=alpha, targets=["fc1", "fc2"], rslora=rslora,
                    dropout=dropout, init=init)
    peft_init = {"A": True, "gaussian": "gaussian", "pissa": "pissa"}[init]
    cfg = LoraConfig(r=rank, lora_alpha=alpha, target_modules=["fc1", "fc2"], lora_dropout=dropout,
                     use_rslora=rslora, init_lora_weights=peft_init)
    theirs = get_peft_model(copy.deepcopy(base), cfg)
    return base, ours, theirs


def _peft_layer(model, name: str):
    return model.get_submodule(f"base_model.model.{name}")


def _copy_adapters(ours: nn.Module, theirs: nn.Module, nonzero_b: bool = True) -> None:
    """Give both models the same A and B (B non-zero so the adapter path matters)."""
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for name, layer in lora_layers(ours):
            if nonzero_b:
                layer.B.copy_(torch.randn(layer.B.shape, generator=g, dtype=layer.B.dtype))
            p = _peft_layer(theirs, name)
            p.lora_A["default"].weight.copy_(layer.A)
            p.lora_B["default"].weight.copy_(layer.B)


@pytest.mark.parametrize("rslora", [False, True])
@pytest.mark.parametrize("rank,alpha", [(1, 1.0), (4, 8.0), (6, 3.0)])
def test_forward_gradients_and_merge_match_peft(rank: int, alpha: float, rslora: bool) -> None:
    _, ours, theirs = _pair(rank, alpha, rslora)
    for name, layer in lora_layers(ours):
        expected = alpha / math.sqrt(rank) if rslora else alpha / rank
        assert layer.scaling == pytest.approx(expected, rel=0, abs=0)
        assert _peft_layer(theirs, name).scaling["default"] == pytest.approx(layer.scaling, rel=1e-15)
    _copy_adapters(ours, theirs)
    x = torch.randn(32, 12, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    y_ours, y_theirs = ours(x), theirs(x)
    torch.testing.assert_close(y_ours, y_theirs, rtol=1e-13, atol=1e-13)
    (y_ours ** 2).sum().backward()
    (y_theirs ** 2).sum().backward()
    for name, layer in lora_layers(ours):
        p = _peft_layer(theirs, name)
        torch.testing.assert_close(layer.A.grad, p.lora_A["default"].weight.grad, rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(layer.B.grad, p.lora_B["default"].weight.grad, rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(layer.delta_weight(), p.get_delta_weight("default"), rtol=1e-13, atol=1e-13)
    assert count_parameters(ours) == theirs.get_nb_trainable_parameters()[0]
    merged_theirs = theirs.merge_and_unload()
    merge_lora(ours)
    for name, layer in lora_layers(ours):
        torch.testing.assert_close(layer.base.weight, merged_theirs.get_submodule(name).weight,
                                   rtol=1e-13, atol=1e-13)
    torch.testing.assert_close(ours(x), merged_theirs(x), rtol=1e-12, atol=1e-12)


def test_default_init_matches_peft_distribution() -> None:
    """Init "A": A ~ U(-1/sqrt(in), 1/sqrt(in)) (Kaiming-uniform, a = sqrt 5), B = 0, as PEFT."""
    _, ours, theirs = _pair(6, 8.0)
    for name, layer in lora_layers(ours):
        p = _peft_layer(theirs, name)
        bound = 1 / math.sqrt(layer.in_features)
        for A in (layer.A, p.lora_A["default"].weight):
            assert A.abs().max() <= bound and A.abs().max() > 0.8 * bound
        assert torch.count_nonzero(layer.B) == 0 == torch.count_nonzero(p.lora_B["default"].weight)


def test_gaussian_init_matches_peft_std() -> None:
    torch.manual_seed(0)
    ours = LoRALinear(nn.Linear(400, 300), rank=5, init="gaussian")
    torch.manual_seed(0)
    theirs = get_peft_model(nn.Sequential(nn.Linear(400, 300)),
                            LoraConfig(r=5, target_modules=["0"], init_lora_weights="gaussian"))
    a_theirs = theirs.get_submodule("base_model.model.0").lora_A["default"].weight
    for A in (ours.A, a_theirs):
        assert A.std().item() == pytest.approx(1 / 5, rel=0.03)  # 2000 draws: 3% is ~4 standard errors
    assert torch.count_nonzero(ours.B) == 0


def test_dropout_matches_peft_with_same_rng() -> None:
    _, ours, theirs = _pair(4, 4.0, dropout=0.3)
    _copy_adapters(ours, theirs)
    ours.train(), theirs.train()
    x = torch.randn(16, 12, dtype=torch.float64)
    torch.manual_seed(123)
    y_ours = ours(x)
    torch.manual_seed(123)
    y_theirs = theirs(x)
    torch.testing.assert_close(y_ours, y_theirs, rtol=1e-13, atol=1e-13)


@pytest.mark.parametrize("rank,alpha", [(3, 3.0), (4, 16.0)])
def test_pissa_matches_peft(rank: int, alpha: float) -> None:
    base, ours, theirs = _pair(rank, alpha, dtype=torch.float32, init="pissa")
    for name, layer in lora_layers(ours):
        p = _peft_layer(theirs, name)
        torch.testing.assert_close(layer.A, p.lora_A["default"].weight, rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(layer.B, p.lora_B["default"].weight, rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(layer.base.weight, p.base_layer.weight, rtol=1e-5, atol=1e-6)
    x = torch.randn(8, 12)
    torch.testing.assert_close(ours(x), base(x), rtol=1e-5, atol=1e-5)  # unchanged at step 0
