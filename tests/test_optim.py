"""Unit tests of lrkit.optim: LoRA+ parameter groups (with PEFT parity) and the batched optimisers."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

import lrkit
from lrkit import optim


def small_model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 4))


def test_loraplus_groups_on_an_lrkit_model() -> None:
    model = lrkit.add_lora(small_model(), rank=2)
    groups = optim.loraplus_param_groups(model, lr=1e-3, ratio=16)
    by_name = {g["name"]: g for g in groups}
    assert set(by_name) == {"lora_A", "lora_B"}
    layers = [layer for _, layer in lrkit.lora_layers(model)]
    assert [id(p) for p in by_name["lora_A"]["params"]] == [id(layer.A) for layer in layers]
    assert [id(p) for p in by_name["lora_B"]["params"]] == [id(layer.B) for layer in layers]
    assert by_name["lora_A"]["lr"] == 1e-3 and by_name["lora_B"]["lr"] == pytest.approx(16e-3)


def test_other_trainable_parameters_keep_the_base_rate() -> None:
    model = lrkit.add_lora(small_model(), rank=2)
    model[0].base.bias.requires_grad_(True)  # a trainable bias: PEFT would put it in the fast group
    groups = {g["name"]: g for g in optim.loraplus_param_groups(model, lr=1e-3, ratio=16)}
    assert [id(p) for p in groups["other"]["params"]] == [id(model[0].base.bias)] and groups["other"]["lr"] == 1e-3
    n_trainable = sum(1 for p in model.parameters() if p.requires_grad)
    assert sum(len(g["params"]) for g in groups.values()) == n_trainable


def test_optimizer_constructor_passes_kwargs_untouched() -> None:
    model = lrkit.add_lora(small_model(), rank=2)
    opt = optim.loraplus_optimizer(model, lr=2e-4, ratio=8, optimizer=torch.optim.AdamW, weight_decay=0.1)
    assert isinstance(opt, torch.optim.AdamW)
    assert sorted(g["lr"] for g in opt.param_groups) == [pytest.approx(2e-4), pytest.approx(1.6e-3)]
    assert all(g["weight_decay"] == 0.1 for g in opt.param_groups)
    with pytest.raises(TypeError, match="optimizer must be a torch.optim.Optimizer class"):
        optim.loraplus_optimizer(model, lr=1e-3, optimizer="adam")  # type: ignore[arg-type]


@pytest.mark.parametrize("kwargs,exc,match", [
    (dict(lr=0.0, ratio=16), ValueError, "lr must be a positive finite"),
    (dict(lr=float("inf"), ratio=16), ValueError, "lr must be a positive finite"),
    (dict(lr=1e-3, ratio=-2), ValueError, "ratio must be a positive finite"),
    (dict(lr=1e-3, ratio="16"), TypeError, "ratio must be a positive finite"),
])
def test_bad_rates(kwargs: dict, exc: type, match: str) -> None:
    model = lrkit.add_lora(small_model(), rank=2)
    with pytest.raises(exc, match=match):
        optim.loraplus_param_groups(model, **kwargs)


def test_a_model_without_adapters_is_an_error() -> None:
    with pytest.raises(ValueError, match="no lrkit LoRA adapters"):
        optim.loraplus_param_groups(small_model(), lr=1e-3, ratio=16)
    with pytest.raises(TypeError, match="model must be a torch.nn.Module"):
        optim.loraplus_param_groups("model", lr=1e-3, ratio=16)  # type: ignore[arg-type]


def test_parity_with_peft_create_loraplus_optimizer() -> None:
    """Same LoRA A/B matrices -> same groups and learning rates as PEFT; the 1-D trap differs."""
    from peft import LoraConfig, get_peft_model
    from peft.optimizers import create_loraplus_optimizer

    base = small_model()
    ours = lrkit.add_lora(copy.deepcopy(base), rank=2)
    theirs = get_peft_model(copy.deepcopy(base), LoraConfig(r=2, lora_alpha=2, target_modules=["0", "2"]))
    lr, ratio = 1e-3, 16.0
    peft_opt = create_loraplus_optimizer(theirs, torch.optim.AdamW, lr=lr, loraplus_lr_ratio=ratio)
    peft_lr = {}
    for g in peft_opt.param_groups:
        for p in g["params"]:
            peft_lr[id(p)] = g["lr"]
    named = dict(theirs.named_parameters())
    our_lr = {id(p): g["lr"] for g in optim.loraplus_param_groups(ours, lr, ratio) for p in g["params"]}
    for layer in ("0", "2"):
        ours_layer = ours.get_submodule(layer)
        for ours_p, peft_name in ((ours_layer.A, f"base_model.model.{layer}.lora_A.default.weight"),
                                  (ours_layer.B, f"base_model.model.{layer}.lora_B.default.weight")):
            peft_p = named[peft_name]
            assert ours_p.shape == peft_p.shape
            assert our_lr[id(ours_p)] == pytest.approx(peft_lr[id(peft_p)])
    assert len(our_lr) == len(peft_lr) == 4
    # the trap: a trainable bias goes to PEFT's fast group, but stays at lr with lrkit
    theirs.get_submodule("base_model.model.0").base_layer.bias.requires_grad_(True)
    ours.get_submodule("0").base.bias.requires_grad_(True)
    peft_opt = create_loraplus_optimizer(theirs, torch.optim.AdamW, lr=lr, loraplus_lr_ratio=ratio, weight_decay=0.1)
    bias = theirs.get_submodule("base_model.model.0").base_layer.bias
    fast = next(g for g in peft_opt.param_groups if any(p is bias for p in g["params"]))
    assert fast["lr"] == pytest.approx(lr * ratio) and fast["weight_decay"] == 0.0
    assert all(g["weight_decay"] == 0.0 for g in peft_opt.param_groups)  # weight_decay=0.1 was overridden
    other = next(g for g in optim.loraplus_param_groups(ours, lr, ratio) if g["name"] == "other")
    assert other["lr"] == lr


def test_batched_adam_equals_torch_adam_per_configuration() -> None:
    gen = torch.Generator().manual_seed(0)
    K = 3
    p0 = torch.randn(K, 4, 5, generator=gen)
    grads = [torch.randn(K, 4, 5, generator=gen) * 10.0 ** -i for i in range(4)]
    lrs = [1e-3, 1e-2, 0.0]
    p, state = p0.clone(), optim.AdamState(p0)
    for g in grads:
        p = optim.batched_adam_step(p, g, state, lrs)
    for k in range(K):
        q = p0[k].clone().requires_grad_(True)
        opt = torch.optim.Adam([q], lr=lrs[k]) if lrs[k] > 0 else None
        for g in grads:
            if opt:
                q.grad = g[k].clone()
                opt.step()
        assert torch.allclose(p[k], q.detach(), atol=1e-7)
    assert state.step == 4


def test_batched_sgd_and_per_config_errors() -> None:
    p, g = torch.ones(2, 3), torch.ones(2, 3)
    assert torch.equal(optim.batched_sgd_step(p, g, [0.5, 0.25]), torch.tensor([[0.5] * 3, [0.75] * 3]))
    assert torch.equal(optim.batched_sgd_step(p, g, 0.5), torch.full((2, 3), 0.5))
    with pytest.raises(ValueError, match="lr must be a number or hold one value per configuration"):
        optim.batched_sgd_step(p, g, [0.1, 0.2, 0.3])
    with pytest.raises(ValueError, match="lr must be finite and non-negative"):
        optim.batched_sgd_step(p, g, [float("nan"), 0.1])
    with pytest.raises(ValueError, match="grad must have the shape of param"):
        optim.batched_adam_step(p, torch.ones(3, 2), optim.AdamState(p), 0.1)
    with pytest.raises(ValueError, match="betas must lie in"):
        optim.batched_adam_step(p, g, optim.AdamState(p), 0.1, betas=(1.0, 0.9))
