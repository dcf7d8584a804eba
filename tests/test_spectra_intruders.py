"""Intruder dimensions (Shuttleworth et al. 2024) and their mitigation (PEFT's reduce_intruder_dimension)."""

from __future__ import annotations

import copy
import math

import pytest
import torch

# PEFT is a test-only dependency (the "test" extra): a missing PEFT fails here, it is never skipped.
from peft import LoraConfig, get_peft_model
from peft.tuners.lora.intruders import reduce_intruder_dimension
from torch import nn

from lrkit import add_lora, lora_layers
from lrkit.spectra import intruder_dimensions, reduce_intruders


def _base(d: int = 32, seed: int = 0) -> torch.Tensor:
    """A diagonal base matrix: its singular vectors are the coordinate axes."""
    return torch.diag(torch.linspace(2.0, 1.0, d, dtype=torch.float64))


def _spike(d: int, c: float, left_axis: bool) -> torch.Tensor:
    """``c u v^T`` with v the flat direction (far from every axis) and u an axis (or flat too)."""
    flat = torch.ones(d, dtype=torch.float64) / math.sqrt(d)
    u = torch.zeros(d, dtype=torch.float64)
    u[3] = 1.0
    return c * torch.outer(u if left_axis else flat, flat)


def test_an_unchanged_matrix_has_no_intruders() -> None:
    W0 = torch.randn(20, 12, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    count, max_cos = intruder_dimensions(W0, W0.clone())
    assert count == 0 and max_cos.shape == (10,) and torch.allclose(max_cos, torch.ones(10, dtype=torch.float64))


def test_a_large_new_direction_is_an_intruder_with_the_predicted_cosine() -> None:
    d = 64
    W0 = _base(d)
    count, max_cos = intruder_dimensions(W0, W0 + _spike(d, 5.0, left_axis=False))
    # the top tuned direction is about the flat vector: |cos| with any axis about 1/sqrt(d) = 0.125
    assert count >= 1 and max_cos[0] < 0.3


def test_plant_right_singular_vectors_change_the_result() -> None:
    """A change along an existing output axis with a new input direction: no intruder on the left
    (the authors' convention), an intruder on the right. Using V instead of U is a detectable mistake."""
    d = 64
    W0, W = _base(d), _base(d) + _spike(d, 5.0, left_axis=True)
    left, _ = intruder_dimensions(W0, W)
    right, _ = intruder_dimensions(W0.T, W.T)   # right singular vectors of W are left ones of W^T
    assert left == 0 and right >= 1


def test_plant_signed_cosine_would_count_a_sign_flip() -> None:
    """The authors take |cos|: flipping the sign of W changes no singular direction."""
    W0 = torch.randn(16, 16, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    count, max_cos = intruder_dimensions(W0, -W0)
    assert count == 0 and torch.allclose(max_cos, torch.ones_like(max_cos))


def test_k_and_eps_select_what_is_counted() -> None:
    d = 64
    W0, W = _base(d), _base(d) + _spike(d, 5.0, left_axis=False)
    assert intruder_dimensions(W0, W, k=1)[0] == 1
    assert intruder_dimensions(W0, W, k=1, eps=0.1)[0] == 0   # |cos| ~ 0.125 is not below 0.1
    assert intruder_dimensions(W0, W, k=100)[1].shape == (64,)


@pytest.mark.parametrize("kwargs,err", [({"k": 0}, ValueError), ({"k": 2.0}, TypeError), ({"eps": 0.0}, ValueError),
                                        ({"eps": 1.5}, ValueError)])
def test_bad_arguments_are_named(kwargs: dict, err: type) -> None:
    W0 = torch.eye(4)
    with pytest.raises(err, match=next(iter(kwargs))):
        intruder_dimensions(W0, W0, **kwargs)


def test_shape_mismatch_is_an_error() -> None:
    with pytest.raises(ValueError, match="same shape"):
        intruder_dimensions(torch.eye(4), torch.eye(5))


def test_reduce_intruders_scales_exactly_the_intruders_singular_values() -> None:
    d = 64
    W0, W = _base(d), _base(d) + _spike(d, 5.0, left_axis=False)
    _, max_cos = intruder_dimensions(W0, W)
    s = torch.linalg.svdvals(W)
    expected = s.clone()
    expected[torch.nonzero(max_cos < 0.5).flatten()] *= 0.75
    got = torch.linalg.svdvals(reduce_intruders(W0, W, lam=0.75))
    assert torch.allclose(got, torch.sort(expected, descending=True).values, atol=1e-10)
    assert torch.allclose(reduce_intruders(W0, W, lam=1.0), W)            # lambda = 1 changes nothing
    assert torch.allclose(reduce_intruders(W0, W0.clone()), W0)            # no intruders, nothing to do


def test_reduce_intruders_with_a_rank_keeps_the_update_low_rank() -> None:
    d = 32
    W0 = _base(d)
    g = torch.Generator().manual_seed(3)
    dW = 3 * torch.randn(d, 2, generator=g, dtype=torch.float64) @ torch.randn(2, d, generator=g, dtype=torch.float64)
    out = reduce_intruders(W0, W0 + dW, rank=2)
    assert torch.linalg.matrix_rank(out - W0).item() <= 2
    with pytest.raises(ValueError, match="rank"):
        reduce_intruders(W0, W0 + dW, rank=0)


class _Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.q_proj = nn.Linear(24, 24, bias=False)
        self.up_proj = nn.Linear(24, 40, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.up_proj(self.q_proj(x))


def test_reduce_intruders_equals_peft_reduce_intruder_dimension() -> None:
    torch.manual_seed(0)
    base = _Net().double()
    rank, alpha = 4, 8
    peft_model = get_peft_model(copy.deepcopy(base), LoraConfig(r=rank, lora_alpha=alpha,
                                                                  target_modules=["q_proj", "up_proj"]))
    g = torch.Generator().manual_seed(1)
    for module in peft_model.modules():      # a trained-looking adapter: large random A and B
        if hasattr(module, "lora_A") and "default" in module.lora_A:
            module.lora_A["default"].weight.data = torch.randn(module.lora_A["default"].weight.shape, generator=g).double()
            module.lora_B["default"].weight.data = torch.randn(module.lora_B["default"].weight.shape, generator=g).double()
    expected = {}
    for name, module in peft_model.named_modules():
        if hasattr(module, "lora_A") and "default" in module.lora_A:
            W0 = module.get_base_layer().weight.data.clone()
            W = W0 + module.get_delta_weight("default")
            expected[name.rsplit(".", 1)[-1]] = reduce_intruders(W0, W, rank=rank, lam=0.75)
            assert intruder_dimensions(W0, W)[0] > 0, "the test needs intruders to mitigate"
    reduce_intruder_dimension(peft_model, mitigation_lambda=0.75, logging_sink=None)
    for name, module in peft_model.named_modules():
        if hasattr(module, "lora_A") and "intruder_reduced" in module.lora_A:
            got = module.get_base_layer().weight.data + module.get_delta_weight("intruder_reduced")
            assert torch.allclose(got, expected[name.rsplit(".", 1)[-1]], atol=1e-8)
    ours = add_lora(copy.deepcopy(base), rank, alpha=alpha, targets=["q_proj", "up_proj"])
    assert len(lora_layers(ours)) == len(expected)
