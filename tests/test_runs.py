"""lrkit.runs: the one divergence rule of every batched loop, and the RunResult convention."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from lrkit import beyond_kernels as bk
from lrkit import runs, spherical_sgd, sweep
from lrkit.runs import Divergence, RunResult

pytestmark = [pytest.mark.ch05, pytest.mark.ch06, pytest.mark.ch09]


def test_rule_non_finite_or_blowup_times_start_and_the_step_recorded() -> None:
    div = Divergence(4, blowup=10.0)
    div.update(torch.tensor([1.0, 2.0, 1.0, 1.0]), 0)                 # the start
    div.update(torch.tensor([5.0, 21.0, float("nan"), 9.9]), 1)        # 21 > 10 * 2; NaN
    div.update(torch.tensor([11.0, 0.0, 0.0, float("inf")]), 2)        # 11 > 10 * 1; inf
    diverged, at = div.result()
    assert diverged.tolist() == [True, True, True, True]
    assert at.tolist() == [2, 1, 1, 2]
    div.update(torch.tensor([0.0, 0.0, 0.0, 0.0]), 3)                  # once diverged, always diverged
    assert div.result()[1].tolist() == [2, 1, 1, 2]


def test_explicit_start_and_infinite_blowup() -> None:
    div = Divergence(2, blowup=10.0, start=1.0)
    div.update(torch.tensor([5.0, 10.5]), 0)
    assert div.result()[1].tolist() == [-1, 0]
    only_nan = Divergence(2, blowup=math.inf)
    only_nan.update(torch.tensor([1.0, 1.0]), 0)
    only_nan.update(torch.tensor([1e30, float("nan")]), 1)
    assert only_nan.result()[1].tolist() == [-1, 1]


def test_freeze_keep_and_mask_act_on_the_configuration_axis() -> None:
    div = Divergence(3)
    div.update(torch.ones(3), 0)
    alive = div.update(torch.tensor([1.0, float("nan"), 1.0]), 1)
    assert alive.tolist() == [True, False, True] and alive.dtype == torch.bool
    A = torch.ones(3, 2, 5)
    (Af,) = div.freeze(A)
    assert Af[1].abs().sum() == 0 and torch.equal(Af[0], A[0]) and torch.equal(Af[2], A[2])
    kept = div.keep(torch.full((3, 4), 2.0), torch.zeros(3, 4))
    assert kept[1].tolist() == [0.0] * 4 and kept[0].tolist() == [2.0] * 4
    curve = div.mask(torch.tensor([0.5, 0.5, 0.5]))
    assert math.isnan(float(curve[1])) and float(curve[0]) == 0.5


@pytest.mark.parametrize("K, blowup", [(0, 10.0), (True, 10.0), (2, 1.0), (2, float("nan")), (2, "10")])
def test_bad_arguments_name_themselves(K: object, blowup: object) -> None:
    with pytest.raises(ValueError, match="K|blowup"):
        Divergence(K, blowup=blowup)  # type: ignore[arg-type]


def test_batched_runs_follow_the_convention() -> None:
    task = sweep.lora_task(width=32, seed=0)
    res = sweep.run_lora_sweep(task, eta_A=[1e-3, 1e3], steps=5)
    assert isinstance(res, RunResult)
    assert res.diverged.tolist() == [False, True] and res.diverged_at[0] == -1
    assert np.isnan(res.final[1]) and np.array_equal(res.final, res.final_loss, equal_nan=True)
    run = spherical_sgd.simulate(bk.aligned(4, "relu"), [16], [0, 1], 0.01, 20, device="cpu")
    assert isinstance(run, RunResult)
    assert run.diverged.shape == (2,) and not run.diverged.any() and (run.diverged_at == -1).all()
    assert runs.CONFIG_AXIS == "K"
