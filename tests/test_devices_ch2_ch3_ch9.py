"""Device behaviour of Chapters 2, 3 and 9 without a GPU: the batched loops run in float32 under the MPS
dtype policy, and read the device back a bounded number of times, not once per step.

As in tests/test_devices.py: MPS is imitated by patching a module's ``float_dtype`` to float32 and
running its loop under :func:`device_helpers.recording` with ``forbid=torch.float64`` (any float64
result fails); the same recorder counts the operations that force a device -> host sync.
"""

from __future__ import annotations

from typing import Any

import pytest
import torch
from device_helpers import recording

from lrkit import beyond_kernels as bk
from lrkit import deep_linear_init as dli
from lrkit import deep_linear_sim as dls
from lrkit import runs, ssm, ssm_learning, ssm_poles
from lrkit import spherical_sgd as sgd

F32 = torch.float32


def float32(device: object = None) -> torch.dtype:
    return F32


# --------------------------------------------------------------------------- Chapter 2: deep linear networks
def deep_task(monkeypatch: pytest.MonkeyPatch | None = None
              ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, list[torch.Tensor]]:
    if monkeypatch is not None:
        monkeypatch.setattr(dli, "float_dtype", float32)
    target, U, V = dli.mode_target([3.0, 2.0, 1.0, 0.0], out_dim=5, in_dim=4, seed=0)
    inits = [dli.decoupled_init(U, V, 1e-2, depth=2, hidden=6, seed=s) for s in (1, 2)]
    rand = dli.random_init([4, 6, 5], 1e-1, seed=3)
    weights = [torch.stack([inits[0][l], inits[1][l], rand[l]]) for l in range(2)]
    return target, U, V, weights


@pytest.mark.ch02
def test_deep_linear_targets_are_drawn_in_float64_then_narrowed() -> None:
    wide = dli.mode_target([3.0, 1.0], out_dim=4, in_dim=3, seed=5)
    narrow = dli.mode_target([3.0, 1.0], out_dim=4, in_dim=3, seed=5, dtype=F32)
    assert all(n.dtype == F32 for n in narrow)
    for w, n in zip(wide[1:], narrow[1:]):
        assert torch.equal(n, w.to(F32))  # U and V: the same draw on every device, rounded
    torch.testing.assert_close(narrow[0], wide[0].to(F32))
    w64 = dli.random_init([3, 4, 2], 0.5, seed=1)
    w32 = dli.random_init([3, 4, 2], 0.5, seed=1, dtype=F32)
    assert all(torch.equal(a.to(F32), b) for a, b in zip(w64, w32))


@pytest.mark.ch02
def test_train_deep_linear_runs_in_float32_under_the_mps_policy(monkeypatch: pytest.MonkeyPatch) -> None:
    want = dls.train_deep_linear(*deep_task(), lr=0.05, steps=200, record_every=10)
    target, U, V, weights = deep_task(monkeypatch)
    assert {w.dtype for w in weights} == {F32} and target.dtype == U.dtype == F32
    with recording(forbid=torch.float64):
        got = dls.train_deep_linear(target, U, V, weights, lr=0.05, steps=200, record_every=10)
    assert got.modes.dtype == got.loss.dtype == got.t.dtype == F32
    torch.testing.assert_close(got.modes, want.modes.to(F32), rtol=1e-3, atol=1e-5)


@pytest.mark.ch02
def test_train_deep_linear_never_reads_the_device_in_its_loop() -> None:
    target, U, V, weights = deep_task()
    weights[1][2] *= 1e4  # one configuration diverges on the way
    counts = []
    for steps in (5, 300):
        with recording() as rec:
            run = dls.train_deep_linear(target, U, V, weights, lr=0.5, steps=steps, record_every=1)
        counts.append(sum(rec.syncs.values()))
    assert bool(run.diverged[2]) and counts[0] == counts[1] <= 2, counts
    assert isinstance(run, runs.RunResult) and bool(run.final[2].isnan()) and int(run.diverged_at[2]) > 0


# --------------------------------------------------------------------------- Chapter 3: state-space models
def ssm_task(dtype: torch.dtype = torch.float64) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    u = ssm.colored_noise(64, 0.5, 2, seed=0).cpu()
    y = ssm.ssm_fft(torch.tensor([0.5, -0.3]), torch.ones(2), torch.tensor([1.0, 0.5]), u, periodic=True)
    poles = torch.tensor([[0.9, 0.2, -0.5], [0.9, 0.2, -0.5], [0.9, 0.2, -0.5]], dtype=torch.float64)
    return u.to(dtype), y.to(dtype), poles


@pytest.mark.ch03
def test_train_ssm_loop_runs_in_float32_under_the_mps_policy(monkeypatch: pytest.MonkeyPatch) -> None:
    u, y, A = ssm_task()
    B0, C0 = torch.full_like(A, 0.1), torch.full_like(A, 0.1)
    want = ssm_learning.train_ssm(u, y, A, B0, C0, lr=0.05, steps=100)
    for module in (ssm, ssm_learning):
        monkeypatch.setattr(module, "float_dtype", float32)
    inner = ssm_learning._descend

    def no_float64(*args, **kwargs):  # type: ignore[no-untyped-def]
        with recording(forbid=torch.float64):
            return inner(*args, **kwargs)

    monkeypatch.setattr(ssm_learning, "_descend", no_float64)
    got = ssm_learning.train_ssm(u, y, A, B0, C0, lr=0.05, steps=100)
    assert got.products.dtype == got.loss.dtype == got.B.dtype == F32
    torch.testing.assert_close(got.products, want.products.to(F32), rtol=1e-4, atol=1e-6)


@pytest.mark.ch03
def test_ssm_loops_never_read_the_device_per_step() -> None:
    u, y, A = ssm_task()
    B0 = torch.tensor([[0.1] * 3, [0.1] * 3, [30.0] * 3], dtype=torch.float64)  # the last one diverges
    calls = {
        "ssm": lambda n: ssm_learning.train_ssm(u, y, A, B0, B0.clone(), lr=0.05, steps=n, record_every=1),
        "tied": lambda n: ssm_learning.train_tied(u, y, 0.9, [1, 2, 4], [0.1, 0.1, 30.0], [0.1, 0.1, 30.0],
                                                  lr=0.05, steps=n, record_every=1),
        "pole": lambda n: ssm_poles.train_pole(u, y, [0.3, 0.95], [1.0, 40.0], lr=0.05, steps=n, record_every=1),
    }
    results: dict[str, list[Any]] = {name: [] for name in calls}
    counts: dict[str, list[int]] = {name: [] for name in calls}
    for steps in (5, 200):
        for name, call in calls.items():
            with recording() as rec:
                results[name].append(call(steps))
            counts[name].append(sum(rec.syncs.values()))
    for name, (few, many) in counts.items():
        assert few == many, (name, counts)  # the syncs are the checks before the loop, not per step
        assert isinstance(results[name][-1], runs.RunResult)
        assert results[name][-1].final.shape == ((2,) if name == "pole" else (3,))
    assert bool(results["ssm"][-1].diverged[2]) and not bool(results["ssm"][-1].diverged[0])
    assert bool(results["tied"][-1].diverged[2]) and not bool(results["tied"][-1].diverged[0])
    pole = results["pole"][-1]
    assert bool(pole.diverged[1]) and int(pole.diverged_at[1]) > 0 and not bool(pole.diverged[0])


@pytest.mark.ch03
def test_train_pole_follows_the_policy_dtype(monkeypatch: pytest.MonkeyPatch) -> None:
    u, y, _ = ssm_task()
    want = ssm_poles.train_pole(u, y, [0.3, 0.1], 1.0, lr=0.05, steps=50)
    monkeypatch.setattr(ssm_poles, "float_dtype", float32)
    got = ssm_poles.train_pole(u, y, [0.3, 0.1], 1.0, lr=0.05, steps=50)
    assert got.a.dtype == got.loss.dtype == F32
    torch.testing.assert_close(got.a, want.a.to(F32), rtol=1e-5, atol=1e-6)


# --------------------------------------------------------------------------- Chapter 9: spherical SGD
@pytest.mark.ch09
@pytest.mark.parametrize("setting", [bk.aligned(4, "relu"), bk.aligned(4, "he3_tapered"), bk.glm("tanh"),
                                     bk.faithful(4, "sigmoid", seed=1)], ids=["relu", "he3_tapered", "glm", "faithful"])
def test_spherical_sgd_runs_in_float32_under_the_mps_policy(monkeypatch: pytest.MonkeyPatch,
                                                            setting: bk.Setting) -> None:
    monkeypatch.setattr(sgd, "float_dtype", float32)
    inner = sgd._chains
    dtypes = []

    def no_float64(*args, **kwargs):  # type: ignore[no-untyped-def]
        dtypes.append(args[5].dtype)  # the mask, like every chain tensor
        with recording(forbid=torch.float64):
            return inner(*args, **kwargs)

    monkeypatch.setattr(sgd, "_chains", no_float64)
    run = sgd.simulate(setting, [16, 24], [0, 1], 0.02, 60, records=6, device="cpu")
    assert dtypes == [F32] and run.m.dtype == run.final.dtype == "float32" and not run.diverged.any()
    assert isinstance(run, runs.RunResult)


@pytest.mark.ch09
@pytest.mark.parametrize("records", [4, 20])
def test_spherical_sgd_reads_the_device_once_per_record(records: int) -> None:
    with recording() as rec:
        run = sgd.simulate(bk.aligned(4, "relu"), [16], [0, 1, 2], 0.01, 200, records=records, device="cpu")
    every = 200 // records
    assert sum(rec.syncs.values()) <= run.steps // every + 2, rec.syncs  # one read per record, none per step
