"""The reliability review's bad inputs in lrkit.deep_linear (Chapter 2): one line per row."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from lrkit import deep_linear as dl

pytestmark = pytest.mark.ch02  # tests/conftest.py marks by file name; this file is Chapter 2's too


def target() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    return dl.mode_target([1.0, 0.5], seed=0)


@pytest.mark.parametrize("call,err,msg", [
    (lambda: dl.deep_learning_time(1.0, 0.01, 0.5, depth=3, points=0), ValueError, "points must be"),         # 198
    (lambda: dl.deep_learning_time(1.0, 0.01, 0.5, depth=3, points=-5), ValueError, "points must be"),        # 199
    (lambda: dl.mode_target([1.0, 0.5], out_dim=0), ValueError, "out_dim must be a positive int"),             # 203
    (lambda: dl.mode_target([1.0, 0.5], out_dim=2.5), TypeError, "out_dim must be an int"),                    # 204
    (lambda: dl.gradient_step([torch.eye(2)] * 2, torch.eye(2), math.nan), ValueError, "lr must be"),          # 213
    (lambda: dl.gradient_step([torch.eye(2)] * 2, torch.eye(2), -1.0), ValueError, "lr must be"),              # 214
    (lambda: dl.train_deep_linear(*target(), [], lr=0.1, steps=2), TypeError, "weights must be a list"),       # 217
    (lambda: dl.train_deep_linear(*target(), [np.eye(2)] * 2, lr=0.1, steps=2), TypeError, "weights must be a list"),  # 218
])
def test_bad_input_gets_a_clear_error(call, err, msg) -> None:
    with pytest.raises(err, match=msg):
        call()


def test_gradient_step_refuses_mixed_dtypes() -> None:                                                           # 215
    with pytest.raises(TypeError, match="share one dtype"):
        dl.gradient_step([torch.eye(2)] * 2, torch.eye(2, dtype=torch.float64), 0.1)


def test_an_unstable_rk4_grid_is_refused() -> None:                                                             # 196
    with pytest.raises(ValueError, match="increase substeps"):
        dl.deep_mode_trajectory(torch.tensor([0.0, 10.0]), s=100.0, u0=1e-3, depth=3, substeps=1)
