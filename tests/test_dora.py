"""DoRA in lrkit equals PEFT's ``use_dora=True``: forward, gradients, merge, training steps."""

from __future__ import annotations

import copy

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


def _pair(rank: int, alpha: float, rslora: bool = False):
    torch.manual_seed(0)
    base = MLP().double()
    ours = add_lora(copy.deepcopy(base), rank, alpha=alpha, targets=["fc1", "fc2"], rslora=rslora, dora=True)
    cfg = LoraConfig(r=rank, lora_alpha=alpha, target_modules=["fc1", "fc2"], use_rslora=rslora, use_dora=True)
    theirs = get_peft_model(copy.deepcopy(base), cfg)
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for name, layer in lora_layers(ours):
            layer.B.copy_(torch.randn(layer.B.shape, generator=g, dtype=layer.B.dtype))
            layer.magnitude.mul_(1 + 0.1 * torch.randn(layer.magnitude.shape, generator=g, dtype=torch.float64))
            p = theirs.get_submodule(f"base_model.model.{name}")
            p.lora_A["default"].weight.copy_(layer.A)
            p.lora_B["default"].weight.copy_(layer.B)
            p.lora_magnitude_vector["default"].weight.copy_(layer.magnitude)
    return ours, theirs


def test_magnitude_starts_at_row_norms_and_model_unchanged() -> None:
    torch.manual_seed(0)
    base = nn.Linear(10, 6).double()
    layer = LoRALinear(copy.deepcopy(base), 3, dora=True)
    assert layer.magnitude.shape == (6,) and layer.magnitude.requires_grad
    torch.testing.assert_close(layer.magnitude.detach(), base.weight.norm(dim=1), rtol=0, atol=0)
    x = torch.randn(5, 10, dtype=torch.float64)
    torch.testing.assert_close(layer(x), base(x), rtol=1e-14, atol=1e-14)
    assert count_parameters(layer) == 3 * (10 + 6) + 6


@pytest.mark.parametrize("rslora", [False, True])
@pytest.mark.parametrize("rank,alpha", [(1, 1.0), (4, 8.0)])
def test_dora_matches_peft(rank: int, alpha: float, rslora: bool) -> None:
    ours, theirs = _pair(rank, alpha, rslora)
    x = torch.randn(32, 12, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    y_ours, y_theirs = ours(x), theirs(x)
    torch.testing.assert_close(y_ours, y_theirs, rtol=1e-13, atol=1e-13)
    (y_ours ** 2).sum().backward()
    (y_theirs ** 2).sum().backward()
    for name, layer in lora_layers(ours):
        p = theirs.get_submodule(f"base_model.model.{name}")
        torch.testing.assert_close(layer.A.grad, p.lora_A["default"].weight.grad, rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(layer.B.grad, p.lora_B["default"].weight.grad, rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(layer.magnitude.grad, p.lora_magnitude_vector["default"].weight.grad,
                                   rtol=1e-12, atol=1e-12)
    assert count_parameters(ours) == theirs.get_nb_trainable_parameters()[0]
    merged = theirs.merge_and_unload()
    merge_lora(ours)
    torch.testing.assert_close(ours(x), merged(x), rtol=1e-12, atol=1e-12)
    for name, layer in lora_layers(ours):
        torch.testing.assert_close(layer.base.weight, merged.get_submodule(name).weight, rtol=1e-12, atol=1e-12)


def test_dora_adam_steps_match_peft() -> None:
    ours, theirs = _pair(2, 4.0)
    opt_o = torch.optim.Adam([p for p in ours.parameters() if p.requires_grad], lr=1e-2)
    opt_t = torch.optim.Adam([p for p in theirs.parameters() if p.requires_grad], lr=1e-2)
    g = torch.Generator().manual_seed(3)
    for _ in range(5):
        x = torch.randn(16, 12, dtype=torch.float64, generator=g)
        for m, opt in ((ours, opt_o), (theirs, opt_t)):
            opt.zero_grad()
            (m(x) ** 2).mean().backward()
            opt.step()
    x = torch.randn(8, 12, dtype=torch.float64, generator=g)
    torch.testing.assert_close(ours(x), theirs(x), rtol=1e-11, atol=1e-11)


def test_merge_unmerge_exact_and_bad_input() -> None:
    torch.manual_seed(0)
    layer = LoRALinear(nn.Linear(10, 6).double(), 3, dora=True)
    with torch.no_grad():
        layer.B.normal_()
        layer.magnitude.mul_(1.3)
    w0 = layer.base.weight.detach().clone()
    x = torch.randn(4, 10, dtype=torch.float64)
    y = layer(x)
    layer.merge()
    torch.testing.assert_close(layer(x), y, rtol=1e-13, atol=1e-13)
    layer.unmerge()
    assert torch.equal(layer.base.weight, w0)
    with pytest.raises(TypeError, match="dora"):
        LoRALinear(nn.Linear(4, 4), 2, dora="yes")
    with pytest.raises(TypeError, match="dora"):
        add_lora(MLP(), 2, dora=1)
