"""The reliability review's bad inputs for Chapter 1's fine-tuning modules, spectra, plot and checks.

shared/reviews/reliability.md, appendix: one line per row (its number in the comment). Each row was
obscure (an error from inside torch/numpy that does not name the argument) or silent (accepted with
a wrong result); now each is a clear error naming the argument, or the right result.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

from lrkit import finetune as ft
from lrkit import rslora as rs
from lrkit import spectra
from lrkit.checks.core import CheckFailed, check_equal, check_function
from lrkit.plot import new_figure

CPU = "cpu"
NO_SUCH_DEVICE = "bogus" if torch.cuda.is_available() else "cuda"


def mlp() -> nn.Sequential:
    return ft.make_mlp(4, 8, 2, seed=0, device=CPU)


def data(dtype: torch.dtype = torch.float32) -> ft.RegressionData:
    d = ft.sample_data(ft.make_mlp(4, 8, 2, seed=3, device=CPU), 4, 32, 16, seed=1, device=CPU)
    return ft.RegressionData(*(t.to(dtype) for t in (d.x_train, d.y_train, d.x_test, d.y_test)))


def teacher() -> torch.Tensor:
    return rs.power_law_teacher(16, seed=0, device=CPU)


@pytest.mark.parametrize("call,err,msg", [
    (lambda: ft.make_mlp(4, 8, 2, seed=-1, device=CPU), ValueError, "seed must be a non-negative int"),       # 84
    (lambda: ft.make_mlp(4, 8, 2, seed=1.5, device=CPU), ValueError, "seed must be a non-negative int"),      # 85
    (lambda: ft.make_mlp(4, 8, 2, device=NO_SUCH_DEVICE), ValueError, "device"),                              # 86
    (lambda: ft.sample_data(mlp(), 4, 8, 8, noise="0.1", device=CPU), TypeError, "noise must be"),            # 89
    (lambda: ft.sample_data(lambda x: x[:, :2] * math.nan, 4, 8, 8, device=CPU), ValueError, "NaN or inf"),   # 90
    (lambda: ft.sample_data(mlp(), 5, 8, 8, device=CPU), ValueError, r"fn must map inputs of shape \(N, d_in=5\)"),  # 92
    (lambda: ft.power_law_matrix(4, 4, decay="x", device=CPU), TypeError, "decay must be"),                   # 94
    (lambda: ft.train(mlp(), data(), 5, 1e-3, blowup=-1), ValueError, "blowup must be a finite number > 1"),  # 103
    (lambda: ft.train(mlp(), data(torch.float64), 5, 1e-3), TypeError, "data must have the model's dtype"),   # 105
    (lambda: ft.RegressionData(*(np.zeros((3, 2)),) * 4), TypeError, "x_train must be a floating-point torch.Tensor"),  # 107
    (lambda: ft.finetune(mlp(), data(), rank=2, steps=2, seed=-1), ValueError, "seed must be a non-negative int"),  # 112
    (lambda: ft.finetune_best_lr(mlp(), data(), 0.01, rank=2), TypeError, "lrs must be a non-empty sequence"),  # 114
    (lambda: ft.weight_updates(mlp(), nn.Sequential(nn.Linear(4, 2))), ValueError, "tuned must be a tuned copy of base"),  # 118
    (lambda: rs.lora_linear_sweep(teacher(), [2], blowup=-1, steps=2), ValueError, "blowup must be"),         # 130
    (lambda: rs.eckart_young_floor(teacher(), [100]), ValueError, r"ranks must be .* 0 <= r <= min\(out, in\) = 16"),  # 133
    (lambda: check_function(lambda x: x, lambda x: x, cases=[]), ValueError, "cases must hold at least one"),  # 317
    (lambda: ft.finetune(mlp(), data(), rank=2, steps=2, blowup=float("nan")), ValueError, "blowup"),        # 103 (finetune)
    (lambda: ft.finetune_lrs(mlp(), data(), [1e-3], rank=2, steps=2, blowup=0.5), ValueError, "blowup"),      # 103 (batched)
    (lambda: rs.power_law_teacher(4, device=NO_SUCH_DEVICE), ValueError, "device"),                          # 86 (rslora)
    (lambda: ft.power_law_matrix(4, 4, device=NO_SUCH_DEVICE), ValueError, "device"),                        # 86 (power_law_matrix)
    (lambda: new_figure(ncols=1.5), TypeError, "ncols must be an int"),                                      # 308
])
def test_bad_input_gets_a_clear_error(call, err, msg) -> None:
    with pytest.raises(err, match=msg):
        call()


def test_numpy_rate_is_one_rate() -> None:                                                                  # 127
    a = rs.lora_linear_sweep(teacher(), [2, 4], lr=np.float32(0.01), steps=3)
    b = rs.lora_linear_sweep(teacher(), [2, 4], lr=float(np.float32(0.01)), steps=3)
    torch.testing.assert_close(a.loss, b.loss)


def test_eckart_young_floor_of_rank_zero_is_one() -> None:                                                   # 132
    assert rs.eckart_young_floor(teacher(), [0, 16]).tolist() == pytest.approx([1.0, 0.0], abs=1e-12)


def test_best_lr_is_nan_when_every_rate_diverged() -> None:                                                  # 116 / review 1a best_lr
    with pytest.warns(RuntimeWarning, match="every learning rate"):
        run, lr = ft.finetune_best_lr(mlp(), data(), [1e6, 1e7], method="full", steps=5, optimizer="sgd")
    assert math.isnan(lr) and run.diverged


@pytest.mark.parametrize("call", [
    lambda: spectra.rank_for_energy(torch.eye(3), frac=np.float32(0.9)),                                   # 72 (strict)
    lambda: rs.lora_linear_sweep(teacher(), np.array([2, 4]), steps=2),                                    # 123 (strict)
    lambda: check_equal(np.int64(3), 3),                                                                 # 314 (strict)
])
def test_numpy_scalars_are_accepted(call) -> None:
    call()


def test_check_equal_still_refuses_a_float_for_an_int() -> None:                                              # 314
    with pytest.raises(CheckFailed, match="should be an int"):
        check_equal(3.0, 3)
