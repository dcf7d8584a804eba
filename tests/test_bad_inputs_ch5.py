"""The reliability review's bad inputs in lrkit.optim, lrkit.lr_scaling and lrkit.sweep (Chapters 5-6).

shared/reviews/reliability.md, appendix: one line per row (its number in the comment).
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from lrkit import lr_scaling, optim, sweep

P, G = torch.ones(2, 3), torch.ones(2, 3)


@pytest.mark.parametrize("call,err,msg", [
    (lambda: lr_scaling.steps_to_reach([1.0, 0.5], "x"), TypeError, "target must be a number"),                  # 160
    (lambda: sweep.factor2_grid(0.3, 0.4), ValueError, "holds no power of 2"),                                      # 165
    (lambda: optim.batched_adam_step(P, G, optim.AdamState(P), 0.1, eps=math.nan), ValueError, "eps must be"),     # 179
    (lambda: optim.batched_adam_step(P, G, optim.AdamState(torch.ones(3, 3)), 0.1), ValueError, "state must be the AdamState"),  # 180
    (lambda: optim.batched_sgd_step(torch.full((2, 3), 10), torch.ones(2, 3, dtype=torch.long), 0.1), TypeError, "floating-point"),  # 181
    (lambda: optim.batched_sgd_step(P, G, True), TypeError, "lr must be a number"),                                 # 182
])
def test_bad_input_gets_a_clear_error(call, err, msg) -> None:
    with pytest.raises(err, match=msg):
        call()


def test_best_lr_is_nan_when_every_rate_diverged() -> None:                                                        # 157
    lr, loss = lr_scaling.best_lr([0.1, 0.2], np.full((2, 3), np.nan))
    assert math.isnan(lr) and loss == math.inf


@pytest.mark.parametrize("eta", [np.float32(0.01), torch.tensor(0.01)])                                             # 142, 143
def test_numpy_and_0d_tensor_rates_are_one_rate(eta) -> None:
    task = sweep.lora_task(16, d=8, seed=0, device="cpu")
    got, want = sweep.run_lora_sweep(task, eta, steps=3), sweep.run_lora_sweep(task, float(np.float32(0.01)), steps=3)
    assert got.loss.shape == (1, 4) and np.array_equal(got.loss, want.loss)


def test_a_rate_tensor_on_a_device_is_never_inspected() -> None:
    # meta tensors have no values: reading one (a host sync on a GPU) would raise
    like = torch.empty(2, 3, device="meta")
    assert optim.per_config(torch.tensor([0.1, math.nan], device="meta"), like).shape == (2, 1)
