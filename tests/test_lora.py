"""LoRALinear, add_lora and friends on their own: semantics, merging, freezing, bad inputs."""

from __future__ import annotations

import math
import warnings

import pytest
import torch
from torch import nn

import lrkit
from lrkit import (
    LoRALinear,
    add_lora,
    count_parameters,
    lora_layers,
    lora_parameter_count,
    merge_lora,
    remove_lora,
    unmerge_lora,
)


def _layer(i: int = 10, o: int = 6, **kw) -> LoRALinear:
    torch.manual_seed(0)
    return LoRALinear(nn.Linear(i, o).double(), **{"rank": 3, **kw})


def test_shapes_and_trainable_parameters() -> None:
    layer = _layer()
    assert layer.A.shape == (3, 10) and layer.B.shape == (6, 3)
    assert isinstance(layer.A, nn.Parameter) and isinstance(layer.B, nn.Parameter)
    trainable = {n for n, p in layer.named_parameters() if p.requires_grad}
    assert trainable == {"A", "B"}
    assert count_parameters(layer) == lora_parameter_count(10, 6, 3) == 3 * 16
    assert count_parameters(layer, trainable_only=False) == 3 * 16 + 10 * 6 + 6


def test_forward_is_base_plus_scaled_low_rank_update() -> None:
    layer = _layer(alpha=5.0)
    with torch.no_grad():
        layer.B.normal_()
    x = torch.randn(4, 10, dtype=torch.float64)
    W0, b = layer.base.weight, layer.base.bias
    expected = x @ W0.T + b + (5.0 / 3) * x @ layer.A.T @ layer.B.T
    torch.testing.assert_close(layer(x), expected)
    torch.testing.assert_close(layer.delta_weight(), (5.0 / 3) * layer.B @ layer.A)


@pytest.mark.parametrize("init", ["A", "B", "gaussian", "pissa"])
def test_every_init_starts_at_the_pretrained_model(init: str) -> None:
    torch.manual_seed(0)
    base = nn.Linear(10, 6).double()
    x = torch.randn(5, 10, dtype=torch.float64)
    y0 = base(x).detach()
    layer = LoRALinear(base, rank=3, alpha=7.0, init=init)
    torch.testing.assert_close(layer(x), y0, rtol=1e-12, atol=1e-12)
    if init in ("A", "gaussian"):
        assert torch.count_nonzero(layer.B) == 0 and torch.count_nonzero(layer.A) > 0
    if init == "B":
        assert torch.count_nonzero(layer.A) == 0 and torch.count_nonzero(layer.B) > 0
        assert layer.B.abs().max() <= 1 / math.sqrt(3)


def test_pissa_takes_the_top_singular_directions() -> None:
    torch.manual_seed(0)
    base = nn.Linear(12, 9).double()
    W = base.weight.detach().clone()
    layer = LoRALinear(base, rank=2, alpha=4.0, init="pissa")
    U, S, Vh = torch.linalg.svd(W)
    torch.testing.assert_close(layer.delta_weight(), U[:, :2] @ torch.diag(S[:2]) @ Vh[:2])
    residual_s = torch.linalg.svdvals(layer.base.weight)
    torch.testing.assert_close(residual_s, torch.cat([S[2:], S.new_zeros(2)]), atol=1e-12, rtol=1e-10)


def test_scaling_rules() -> None:
    assert _layer().scaling == 1.0  # alpha=None means alpha = rank
    assert _layer(alpha=6.0).scaling == 2.0
    assert _layer(alpha=6.0, rslora=True).scaling == pytest.approx(6 / math.sqrt(3))


def test_merge_unmerge_roundtrip() -> None:
    layer = _layer(alpha=2.0)
    with torch.no_grad():
        layer.B.normal_()
    x = torch.randn(7, 10, dtype=torch.float64)
    W0 = layer.base.weight.detach().clone()
    y = layer(x)
    layer.merge()
    assert layer.merged
    torch.testing.assert_close(layer(x), y, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(layer.base.weight, W0 + layer.delta_weight())
    with pytest.warns(UserWarning, match="already merged"):
        layer.merge()
    layer.unmerge()
    torch.testing.assert_close(layer.base.weight, W0, rtol=1e-12, atol=1e-12)
    with pytest.warns(UserWarning, match="not merged"):
        layer.unmerge()


def test_dropout_only_touches_the_adapter_path() -> None:
    layer = _layer(dropout=0.5)
    x = torch.randn(3, 10, dtype=torch.float64)
    layer.eval()
    torch.testing.assert_close(layer(x), layer.base(x))  # B = 0 at init
    with torch.no_grad():
        layer.B.normal_()
    layer.train()
    torch.manual_seed(1)
    y1 = layer(x)
    torch.manual_seed(2)
    assert not torch.allclose(y1, layer(x))


class Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.enc = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 16))
        self.head = nn.Linear(16, 3)
        self.norm = nn.LayerNorm(16)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.norm(self.enc(x)))


def test_add_lora_targets_freezing_and_counts() -> None:
    net = add_lora(Net(), rank=2, targets=["head", "enc.2"])
    assert sorted(n for n, _ in lora_layers(net)) == ["enc.2", "head"]
    assert isinstance(net.enc[0], nn.Linear) and not isinstance(net.enc[0], LoRALinear)
    assert count_parameters(net) == 2 * (16 + 16) + 2 * (16 + 3)
    assert all(not p.requires_grad for n, p in net.named_parameters() if not n.endswith((".A", ".B")))
    net_all = add_lora(Net(), rank=2)
    assert len(lora_layers(net_all)) == 3


def test_merge_remove_whole_model() -> None:
    torch.manual_seed(0)
    net = add_lora(Net(), rank=2, targets=["head"])
    with torch.no_grad():
        net.head.B.normal_()
    x = torch.randn(4, 8)
    y = net(x)
    merge_lora(net)
    torch.testing.assert_close(net(x), y, rtol=1e-5, atol=1e-6)
    unmerge_lora(net)
    torch.testing.assert_close(net(x), y, rtol=1e-5, atol=1e-6)
    remove_lora(net)
    assert not lora_layers(net) and isinstance(net.head, nn.Linear)
    torch.testing.assert_close(net(x), y, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("kwargs,err,words", [
    ({"rank": 0}, ValueError, ["rank", "1 <= rank"]),
    ({"rank": 7}, ValueError, ["rank", "min(in, out) = 6"]),
    ({"rank": 2.0}, TypeError, ["rank", "int"]),
    ({"rank": 2, "dropout": -0.1}, ValueError, ["dropout", "[0, 1)"]),
    ({"rank": 2, "dropout": 1.0}, ValueError, ["dropout", "[0, 1)"]),
    ({"rank": 2, "init": "kaiming"}, ValueError, ["init", "'A'", "'pissa'"]),
    ({"rank": 2, "alpha": 0.0}, ValueError, ["alpha", "positive"]),
    ({"rank": 2, "alpha": float("nan")}, ValueError, ["alpha"]),
])
def test_bad_inputs_name_the_argument(kwargs: dict, err: type, words: list[str]) -> None:
    with pytest.raises(err) as info:
        LoRALinear(nn.Linear(10, 6), **kwargs)
    for w in words:
        assert w in str(info.value)


def test_bad_base_and_targets() -> None:
    with pytest.raises(TypeError, match="base must be a torch.nn.Linear"):
        LoRALinear(nn.Conv1d(3, 3, 1), rank=1)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"targets \['q_proj'\] match no nn.Linear.*'enc.0'"):
        add_lora(Net(), rank=2, targets=["q_proj"])
    with pytest.raises(ValueError, match="init must be one of"):
        add_lora(Net(), rank=2, init="zeros")
    with pytest.raises(TypeError, match="bare nn.Linear"):
        add_lora(nn.Linear(4, 4), rank=1)
    net = add_lora(Net(), rank=1)
    with pytest.raises(ValueError, match="already carries LoRA adapters"):
        add_lora(net, rank=1)
    with pytest.raises(ValueError, match=r"rank must satisfy 1 <= rank <= min\(in, out\) = 3"):
        add_lora(Net(), rank=4)  # head has out = 3


def test_public_api_is_exported() -> None:
    for name in ["LoRALinear", "add_lora", "count_parameters", "get_device", "seed_everything", "get_scale",
                 "describe_env", "INIT_SCHEMES"]:
        assert hasattr(lrkit, name)
    assert set(lrkit.INIT_SCHEMES) == {"A", "B", "gaussian", "pissa"}


def test_works_in_float32_and_on_default_device() -> None:
    dev = lrkit.get_device()
    layer = LoRALinear(nn.Linear(5, 4).to(dev), rank=2)
    assert layer.A.device.type == dev.type and layer.A.dtype == torch.float32
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        layer(torch.randn(2, 5, device=dev)).sum().backward()
    assert layer.A.grad is not None and layer.base.weight.grad is None
