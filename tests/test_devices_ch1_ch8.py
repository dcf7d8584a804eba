"""Device behaviour of Chapters 1 and 8 without a GPU: MPS's dtype policy, host syncs, run results.

As in tests/test_devices.py: a ``TorchDispatchMode`` (tests/device_helpers.py) counts the operations
that force a device -> host sync while the CPU runs the loops, and imitates MPS by failing on any
float64 result while the module's ``float_dtype`` is patched to float32.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from device_helpers import recording
from forgetting_helpers import CFG, tiny_task

from lrkit import forgetting as fg
from lrkit import forgetting_measures as fm
from lrkit import rslora as rs
from lrkit.runs import RunResult

BAD = 1e30   # an Adam rate that overflows: the final LayerNorm bounds the loss, so only inf/NaN can diverge


@pytest.fixture(scope="module")
def setup() -> dict:
    return tiny_task(pretrain_steps=20)


def sweep(setup: dict, method: str, steps: int, lrs: list[float]) -> fg.Sweep:
    ranks = [2] * len(lrs) if method == "lora" else None
    return fg.finetune_sweep(setup["model"], setup["train"], setup["evals"], method, lrs=lrs,
                             seeds=list(range(len(lrs))), steps=steps, batch=8, eval_every=3, ranks=ranks)


# --------------------------------------------------------------------------- Chapter 8: MPS's dtype policy
@pytest.mark.ch08
@pytest.mark.parametrize("method", ["lora", "full"])
def test_forgetting_sweep_makes_no_float64(setup: dict, method: str) -> None:
    with recording(forbid=torch.float64):
        out = sweep(setup, method, steps=4, lrs=[1e-3, 1e-2])
    assert out.target_loss.dtype == torch.float32 and bool(torch.isfinite(out.target_loss).all())


@pytest.mark.ch08
def test_pretraining_makes_no_float64(setup: dict) -> None:
    P = setup["P"][:2].float()   # the chains are CPU-side float64; the training loop must add none
    with recording(forbid=torch.float64):
        model, losses = fg.pretrain(CFG, P, steps=3, lr=1e-2, batch=4, seed=0)
    assert len(losses) == 3 and all(math.isfinite(v) for v in losses)


@pytest.mark.ch08
def test_second_moments_follow_the_float_dtype_of_the_device(setup: dict, monkeypatch: pytest.MonkeyPatch) -> None:
    want = fg.layer_second_moments(setup["model"], {}, setup["evals"]["target"])
    assert all(m.dtype == torch.float64 for m in want.values())   # the CPU keeps float64
    monkeypatch.setattr(fm, "float_dtype", lambda device=None: torch.float32)
    with recording(forbid=torch.float64):
        got = fg.layer_second_moments(setup["model"], {}, setup["evals"]["target"])
    for n, m in got.items():
        assert m.dtype == torch.float32
        torch.testing.assert_close(m.double(), want[n], rtol=1e-4, atol=1e-5)


# --------------------------------------------------------------------------- Chapter 8: no per-step host sync
@pytest.mark.slow  # a few seconds: make test runs it, make test-fast does not
@pytest.mark.ch08
@pytest.mark.parametrize("method", ["lora", "full"])
def test_forgetting_sweep_reads_the_host_a_bounded_number_of_times(setup: dict, method: str,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    copies = [0]   # .cpu() is no dispatched op on a CPU tensor, so count the calls (a device -> host copy on a GPU)
    to_cpu = torch.Tensor.cpu

    def counted(self: torch.Tensor, *args: object, **kwargs: object) -> torch.Tensor:
        copies[0] += 1
        return to_cpu(self, *args, **kwargs)

    monkeypatch.setattr(torch.Tensor, "cpu", counted)
    counts = []
    for steps in (3, 30):
        copies[0] = 0
        with recording() as rec:
            sweep(setup, method, steps=steps, lrs=[1e-3, BAD])   # the second one diverges
        counts.append((sum(rec.syncs.values()), copies[0]))
    assert counts[0] == counts[1] and counts[0][0] <= 5, counts


@pytest.mark.ch08
def test_pretraining_reads_its_losses_once(setup: dict) -> None:
    counts = []
    for steps in (3, 30):
        with recording() as rec:
            fg.pretrain(CFG, setup["P"][:2], steps=steps, lr=1e-2, batch=4, seed=0)
        counts.append(sum(rec.syncs.values()))
    assert counts[0] == counts[1], counts


# --------------------------------------------------------------------------- Chapter 8: divergence
@pytest.mark.ch08
@pytest.mark.parametrize("method", ["lora", "full"])
def test_a_diverged_configuration_is_frozen_and_the_others_run_as_alone(setup: dict, method: str) -> None:
    pair = sweep(setup, method, steps=12, lrs=[1e-3, BAD])
    alone = sweep(setup, method, steps=12, lrs=[1e-3])
    assert isinstance(pair, RunResult)
    assert pair.diverged.tolist() == [False, True] and pair.diverged_at[0] == -1 and pair.diverged_at[1] > 0
    at = pair.diverged_at[1]
    seen = [i for i, t in enumerate(pair.eval_steps) if t < at]   # evaluated before the step it diverged
    assert torch.isfinite(pair.target_loss[1, seen]).all() and torch.isnan(pair.target_loss[1, len(seen):]).all()
    assert math.isnan(pair.final[1]) and math.isfinite(pair.final[0])
    torch.testing.assert_close(pair.target_loss[0], alone.target_loss[0], rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(pair.source_loss[0], alone.source_loss[0], rtol=1e-4, atol=1e-5)
    for n, w in pair.updates(setup["model"], 1).items():   # frozen: its update zeroed, the base model back
        assert torch.equal(w, torch.zeros_like(w)), n


@pytest.mark.ch08
def test_sweep_is_a_run_result(setup: dict) -> None:
    out = sweep(setup, "lora", steps=2, lrs=[1e-3, 3e-3, 1e-2])
    assert isinstance(out, RunResult) and out.final.shape == (3,)
    assert out.diverged.dtype == np.bool_ and out.diverged_at.tolist() == [-1, -1, -1]


# --------------------------------------------------------------------------- Chapter 1: run results
@pytest.mark.ch01
def test_linear_sweep_is_a_run_result_with_the_K_axis_first() -> None:
    T = rs.power_law_teacher(8, seed=0, device="cpu")
    out = rs.lora_linear_sweep(T, [1, 2, 4], lr=[0.01, 50.0, 0.01], steps=10)
    assert isinstance(out, RunResult) and out.final.shape == (3,) and out.loss.shape == (3, 11)
    assert out.diverged.tolist() == [False, True, False] and int(out.diverged_at[1]) > 0
