"""The reliability review's bad inputs (shared/reviews/reliability.md, appendix), one line each.

Each row was obscure (an error from inside torch/numpy that does not name the argument) or silent
(accepted with a wrong result). Now each is a clear error naming the argument, or the right result.
"""

from __future__ import annotations

import copy
import io

import numpy as np
import pytest
import torch
from torch import nn

import lrkit
from lrkit import _validate as V
from lrkit.lora import LoRALinear, add_lora, count_parameters, lora_parameter_count, lora_scaling


def mlp() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(8, 6), nn.Tanh(), nn.Linear(6, 4))


@pytest.mark.parametrize("call,err,msg", [
    (lambda: lrkit.seed_everything(2**70), ValueError, "seed must be a non-negative int below 2"),      # 12
    (lambda: LoRALinear(nn.Linear(8, 4).half(), 2)(torch.randn(3, 8)), TypeError, "x must have the layer's dtype"),  # 30
    (lambda: LoRALinear(nn.Linear(8, 4), 2)(torch.randn(3, 8, dtype=torch.float64)), TypeError, "dtype"),  # 31
    (lambda: LoRALinear(nn.Linear(8, 4), 2)(torch.ones(3, 8, dtype=torch.int64)), TypeError, "dtype"),  # 32
    (lambda: LoRALinear(nn.Linear(8, 4), 2)(torch.randn(3, 7)), ValueError, r"x must have shape \(\.\.\., in_features=8\)"),  # 33
    (lambda: lora_parameter_count(-8, 4, 2), ValueError, "in_features must be a positive int"),        # 56
    (lambda: lora_parameter_count(8.5, 4, 2), TypeError, "in_features must be an int"),                # 57
    (lambda: lora_scaling(8, 0), ValueError, "rank must be a positive int"),                           # 58
    (lambda: lora_scaling(8, -4, rslora=True), ValueError, "rank must be a positive int"),             # 59
    (lambda: lora_scaling(-8, 4), ValueError, "alpha must be a positive finite number"),               # 60
    (lambda: count_parameters("abc"), TypeError, "model must be a torch.nn.Module"),                   # 61
    (lambda: V.check_device("cuda") if not torch.cuda.is_available() else V.check_device("bogus"),
     ValueError, "device"),                                                                            # 86, 291
])
def test_bad_input_gets_a_clear_error(call, err, msg) -> None:
    with pytest.raises(err, match=msg):
        call()


@pytest.mark.parametrize("bad", [{"alpha": -1}, {"dropout": 2.0}, {"rank": 99}])
def test_add_lora_rejects_before_touching_the_model(bad) -> None:                                        # 49, 50
    model = mlp()
    kwargs = {"rank": 2, **bad}
    with pytest.raises(ValueError):
        add_lora(model, **kwargs)
    assert all(p.requires_grad for p in model.parameters()) and not lrkit.lora_layers(model)


def test_tied_linear_is_refused() -> None:                                                                # 52
    shared = nn.Linear(4, 4)
    with pytest.raises(ValueError, match="tied weights"):
        add_lora(nn.Sequential(shared, nn.Tanh(), shared), rank=2)


def test_a_merged_state_dict_round_trips_without_applying_the_update_twice() -> None:                   # 54
    model = add_lora(mlp(), rank=2, init="gaussian")
    x = torch.randn(5, 8)
    want = model(x)
    lrkit.merge_lora(model)
    buf = io.BytesIO()
    torch.save(model.state_dict(), buf)
    fresh = add_lora(mlp(), rank=2)
    fresh.load_state_dict(torch.load(io.BytesIO(buf.getvalue())))
    assert all(layer.merged for _, layer in lrkit.lora_layers(fresh))
    torch.testing.assert_close(fresh(x), want)
    lrkit.unmerge_lora(fresh)
    torch.testing.assert_close(fresh(x), want)


def test_unmerge_restores_the_base_weight_even_if_b_changed_while_merged() -> None:                     # 39
    layer = LoRALinear(nn.Linear(8, 4), 2, init="gaussian")
    w0 = layer.base.weight.detach().clone()
    layer.merge()
    with torch.no_grad():
        layer.B.add_(1.0)
    with pytest.warns(UserWarning, match="changed while merged"):
        layer.unmerge()
    torch.testing.assert_close(layer.base.weight, w0)


@pytest.mark.parametrize("value", [np.int64(3), torch.tensor(3), 3])
def test_numpy_and_0d_tensor_integers_are_integers(value) -> None:                                      # 13, 20
    assert V.positive_int(value, "n") == 3 and V.check_seed(value) == 3
    assert LoRALinear(nn.Linear(8, 4), value).rank == 3


@pytest.mark.parametrize("value", [np.float32(0.01), torch.tensor(0.01), 0.01])
def test_numpy_and_0d_tensor_reals_are_one_value(value) -> None:                                         # 142, 143
    assert V.broadcast(value, 3, "lr") == pytest.approx([0.01] * 3)
    assert V.positive_float(value, "lr") == pytest.approx(0.01)


@pytest.mark.parametrize("value,err", [(-1, ValueError), (np.nan, ValueError), (1.0, ValueError), ("x", TypeError)])
def test_blowup_must_be_a_finite_factor_above_one(value, err) -> None:                                  # 103, 130, 261
    with pytest.raises(err, match="blowup"):
        V.blowup_factor(value)


def test_deepcopy_of_a_merged_layer_unmerges_to_the_base_weight() -> None:
    layer = LoRALinear(nn.Linear(8, 4), 2, init="gaussian")
    w0 = layer.base.weight.detach().clone()
    layer.merge()
    twin = copy.deepcopy(layer)
    twin.unmerge()
    torch.testing.assert_close(twin.base.weight, w0)
