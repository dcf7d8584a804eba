"""Device behaviour of Chapters 4 to 7 without a GPU: matrix sensing, the LoRA sweep, random features.

The pattern of tests/test_devices.py: MPS is imitated by patching a module's ``float_dtype`` to
float32 and running its loop under a recorder that fails on any float64 result; host syncs inside
a loop are counted by the same recorder (``item``/``bool``, ``nonzero``, boolean-mask indexing) and
must not grow with the number of steps (or trials). Draws come from CPU generators, so a seed gives
the same numbers on every device. The CUDA tests run only where CUDA exists.
"""

from __future__ import annotations

import contextlib
import importlib
import math
from collections.abc import Callable
from typing import Any

import pytest
import torch
from device_helpers import recording

import lrkit
from lrkit import lr_scaling as lrs
from lrkit import rf
from lrkit import sensing as sn
from lrkit import sweep as sw
from lrkit.rf import relu as rf_relu
from lrkit.sensing import problem as sn_problem
from lrkit.sensing import sweep as sn_sweep

rf_sim = importlib.import_module("lrkit.rf.simulate")  # the package's `simulate` is the function
F32: Callable[..., torch.dtype] = lambda device=None: torch.float32  # noqa: E731  (MPS's policy)


def no_float64(monkeypatch: pytest.MonkeyPatch, module: Any, name: str) -> None:
    """Run ``module.name`` (a loop) under the recorder that fails on any float64 result."""
    inner = getattr(module, name)

    def wrapped(*args: Any, **kwargs: Any) -> Any:
        with recording(forbid=torch.float64):
            return inner(*args, **kwargs)

    monkeypatch.setattr(module, name, wrapped)


def syncs(fn: Callable[..., object], *args: Any, **kwargs: Any) -> int:
    """How many host syncs the recorder counts in ``fn(*args, **kwargs)``."""
    with recording() as rec:
        fn(*args, **kwargs)
    return sum(rec.syncs.values())


# --------------------------------------------------------------------------- Chapter 4: matrix sensing
def sensing_runs() -> dict[str, sn.SensingRun]:
    sym = sn.make_problem(8, 2, 200, seed=0, device="cpu")
    asym = sn.make_problem(8, 2, 260, symmetric=False, seed=1, device="cpu")
    return {
        "symmetric": sn.run_sweep(sym, "symmetric", [2, 3], 0.1, [0, 1], lr=0.1, steps=300, num_records=20),
        "asymmetric": sn.run_sweep(asym, "asymmetric", [2, 3, 3], [0.1, 0.1, 0.05], 0, lr=0.1, steps=300,
                                   num_records=20, rebalance_once=[False, True, True], rebalance_below=1e-1),
    }


@pytest.mark.ch04
def test_sensing_sweeps_run_in_float32_under_the_mps_policy(monkeypatch: pytest.MonkeyPatch) -> None:
    want = sensing_runs()
    monkeypatch.setattr(sn_problem, "float_dtype", F32)
    monkeypatch.setattr(sn_sweep, "float_dtype", F32)
    no_float64(monkeypatch, sn_sweep, "_descend")
    got = sensing_runs()
    for key, run in got.items():
        assert run.error.dtype == torch.float32 and not run.diverged.any(), key
        big = want[key].error > 1e-4  # float32 cannot follow the float64 run down to 1e-30
        torch.testing.assert_close(run.error[big], want[key].error[big].float(), rtol=1e-3, atol=0)
    assert (got["asymmetric"].rebalanced_at[1:] > 0).all()


@pytest.mark.ch04
def test_the_theory_reads_a_float32_run_in_float64(monkeypatch: pytest.MonkeyPatch) -> None:
    def readings() -> list[float]:
        p = sn.make_problem(8, 2, 260, symmetric=False, seed=1, device="cpu")
        run = sn.run_sweep(p, "asymmetric", 3, 0.1, 0, lr=0.1, steps=1500, num_records=20)
        assert run.factors is not None and run.delta0 is not None
        (B, A), d0 = run.factors[0], run.delta0[0]
        Q = sn.redundant_subspace(B, A, 2, d0)
        sym = sn.make_problem(6, 2, 200, seed=0, device="cpu")
        return [sn.compressed_imbalance(d0, Q), sn.redundant_rate(p, B, A, Q, d0, 0.1),
                sn.linearised_rate(sym, 0.1), *sn.redundant_block_curvature(sym)]

    want = readings()
    monkeypatch.setattr(sn_problem, "float_dtype", F32)
    monkeypatch.setattr(sn_sweep, "float_dtype", F32)
    got = readings()
    assert got == pytest.approx(want, rel=1e-4)


@pytest.mark.ch04
def test_sensing_sweep_without_rebalancing_never_looks_at_the_host() -> None:
    problem = sn.make_problem(6, 2, 150, symmetric=False, seed=0, device="cpu")
    counts = [syncs(sn.run_sweep, problem, "asymmetric", [2, 3], [0.1, 1e3], 0, lr=0.1, steps=steps,
                    num_records=10) for steps in (20, 600)]
    assert counts[0] == counts[1], counts


@pytest.mark.ch04
@pytest.mark.parametrize("steps", [250, 1000])
def test_a_pending_rebalance_looks_at_the_host_once_per_window(steps: int) -> None:
    problem = sn.make_problem(6, 2, 150, symmetric=False, seed=0, device="cpu")
    n = syncs(lambda: sn.run_sweep(problem, "asymmetric", [3, 3], 0.1, 0, lr=0.1, steps=steps, num_records=10,
                                   rebalance_once=True, rebalance_below=1e-12))  # never fires: always pending
    windows = steps // sn_sweep.CHECK_EVERY + 1
    assert n <= 2 * windows + 5, n


@pytest.mark.ch04
def test_windowed_rebalancing_equals_a_look_at_every_step(monkeypatch: pytest.MonkeyPatch) -> None:
    problem = sn.make_problem(8, 2, 260, symmetric=False, seed=1, device="cpu")

    def run() -> sn.SensingRun:
        return sn.run_sweep(problem, "asymmetric", [2, 3, 3, 4], [0.1, 0.1, 0.05, 0.1], 0, lr=0.1, steps=700,
                            num_records=40, rebalance_once=[True, True, True, False], rebalance_below=1e-2)

    windowed = run()
    monkeypatch.setattr(sn_sweep, "CHECK_EVERY", 1)  # the host looks at every step: the plain rule
    every = run()
    assert (windowed.rebalanced_at[1:3] > 0).all() and windowed.rebalanced_at[3] == -1
    assert torch.equal(windowed.rebalanced_at, every.rebalanced_at)
    assert torch.equal(windowed.error.nan_to_num(-1.0), every.error.nan_to_num(-1.0))
    assert windowed.factors is not None and every.factors is not None
    for (b1, a1), (b2, a2) in zip(windowed.factors, every.factors):
        assert torch.equal(b1, b2) and torch.equal(a1, a2)


@pytest.mark.ch04
def test_a_diverging_configuration_does_not_break_the_rebalance_of_the_others() -> None:
    problem = sn.make_problem(6, 2, 150, symmetric=False, seed=0, device="cpu")
    run = sn.run_sweep(problem, "asymmetric", [3, 3], [0.1, 30.0], 0, lr=0.3, steps=400, num_records=5,
                       rebalance_once=True, rebalance_below=1e-1)
    assert run.diverged.tolist() == [False, True] and run.rebalanced_at[0] > 0


# --------------------------------------------------------------------------- Chapters 5 and 6: the LoRA sweep
def lora_sweep(steps: int = 40) -> sw.SweepResult:
    task = sw.lora_task(24, seed=0, device="cpu")
    return sw.run_lora_sweep(task, [1e-3, 1e-2, 30.0], init=["A", "B", "A"], seed=[0, 1, 2], steps=steps)


@pytest.mark.ch05
@pytest.mark.ch06
def test_lora_sweep_runs_in_float32_under_the_mps_policy(monkeypatch: pytest.MonkeyPatch) -> None:
    want = lora_sweep()
    monkeypatch.setattr(sw, "float_dtype", F32)
    no_float64(monkeypatch, sw, "_train")
    got = lora_sweep()
    assert got.diverged.tolist() == want.diverged.tolist() == [False, False, True]
    torch.testing.assert_close(torch.as_tensor(got.loss), torch.as_tensor(want.loss), rtol=1e-4, atol=1e-6,
                               equal_nan=True)


@pytest.mark.ch05
@pytest.mark.ch06
def test_lora_sweep_has_no_sync_in_its_loop() -> None:
    counts = [syncs(lora_sweep, steps) for steps in (5, 120)]
    assert counts[0] == counts[1], counts


@pytest.mark.ch05
@pytest.mark.ch06
def test_step_terms_follow_the_dtype_policy(monkeypatch: pytest.MonkeyPatch) -> None:
    res = sw.run_lora_sweep(sw.lora_task(16, seed=0, device="cpu"), 1e-2, steps=10, snapshots=[5, 6])
    (A0, B0), (A1, B1) = res.snapshots[5], res.snapshots[6]
    Z = sw.lora_task(16, seed=0, device="cpu").Z
    want = sw.step_terms(Z, A0, B0, A1, B1)
    assert want["delta1"].dtype == torch.float64  # float64 on the CPU
    monkeypatch.setattr(lrs, "float_dtype", F32)
    with recording(forbid=torch.float64):
        got = sw.step_terms(Z, A0, B0, A1, B1)
        sw.feature_rms(A1, Z)
    for key in want:
        torch.testing.assert_close(got[key], want[key].float(), rtol=1e-4, atol=1e-8)


# --------------------------------------------------------------------------- Chapter 7: random features
TASK = rf.power_law_task(200, 1.5, 1.2, device="cpu")


def rf_simulate(trials: int = 4, **kwargs: Any) -> rf.SimResult:
    lam, v = TASK
    return rf.simulate(lam, v, [12, 30], [8, 24, math.inf], [0.0, 1e-2], trials=trials, noise=0.05, seed=3,
                       memory_mb=1, **kwargs)


@pytest.mark.ch07
def test_rf_loops_run_in_float32_under_the_mps_policy(monkeypatch: pytest.MonkeyPatch) -> None:
    want, want_l = rf_simulate(), rf.measured_learnabilities(TASK[0], 20, trials=3, seed=1)
    x, y = rf.pool_task(120, 4, seed=0)
    want_p = rf.simulate_pool(x, y, 30, [16, math.inf], [1e-3, 1e-1], trials=2, seed=2)
    monkeypatch.setattr(rf_sim, "float_dtype", F32)
    monkeypatch.setattr(rf_relu, "float_dtype", F32)
    for name in ("_simulate", "_hat_diagonals"):
        no_float64(monkeypatch, rf_sim, name)
    no_float64(monkeypatch, rf_relu, "_pool_trials")
    got, got_l = rf_simulate(), rf.measured_learnabilities(TASK[0], 20, trials=3, seed=1)
    got_p = rf.simulate_pool(x, y, 30, [16, math.inf], [1e-3, 1e-1], trials=2, seed=2)
    assert got.test_mse.dtype == torch.float64  # results come back to the CPU in float64
    ridged = got.ridges > 0  # at ridge 0 float32 round-off is amplified near k = n
    torch.testing.assert_close(got.test_mse[..., ridged], want.test_mse[..., ridged], rtol=1e-3, atol=1e-5)
    torch.testing.assert_close(got_l[0], want_l[0], rtol=0, atol=1e-3)
    # the kernel at ridge 1e-3 is ill-conditioned: float32 moves its test MSE by about 1%
    torch.testing.assert_close(got_p.test_mse, want_p.test_mse, rtol=3e-2, atol=1e-5)
    torch.testing.assert_close(got_p.test_mse[..., 1], want_p.test_mse[..., 1], rtol=1e-4, atol=1e-6)
    w = torch.randn(8, 4)  # relu_features draws its own weights on the CPU in float64, then narrows them
    with recording(forbid=torch.float64):
        rf.relu_kernel(x.float(), x.float())
        rf.relu_features(x.float(), 8, weights=w)


@pytest.mark.ch07
def test_rf_loops_have_no_sync_that_grows_with_the_trials() -> None:
    counts = [syncs(rf_simulate, trials) for trials in (2, 6)]
    assert counts[0] == counts[1], counts
    x, y = rf.pool_task(100, 4, seed=0)
    counts = [syncs(rf.simulate_pool, x, y, 20, [8, math.inf], [1e-2], trials=t, seed=0) for t in (1, 4)]
    assert counts[0] == counts[1], counts


@pytest.mark.ch07
def test_rf_draws_come_from_a_cpu_generator(monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[tuple[str, str]] = []
    randn = torch.randn

    def spy(*args: Any, **kwargs: Any) -> torch.Tensor:
        gen = kwargs.get("generator")
        seen.append((gen.device.type if gen is not None else "global", str(kwargs.get("device", "cpu"))))
        return randn(*args, **kwargs)

    monkeypatch.setattr(torch, "randn", spy)
    state = torch.random.get_rng_state()
    want = rf_simulate()
    rf.measured_learnabilities(TASK[0], 16, trials=2, seed=0)
    assert seen and set(seen) == {("cpu", "cpu")}, set(seen)
    assert torch.equal(torch.random.get_rng_state(), state)  # the global stream is left alone
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(123)  # nor do the numbers depend on it
        assert torch.equal(rf_simulate().test_mse, want.test_mse)


@pytest.mark.ch07
@pytest.mark.parametrize("which", ["simulate", "measured_learnabilities"])
def test_rf_draws_on_the_cpu_whatever_the_compute_device(monkeypatch: pytest.MonkeyPatch, which: str) -> None:
    # compute on 'meta' (shapes only, no GPU needed): a generator of the compute device (the old
    # torch.Generator(device=dev) fails there) or a draw made on it would show; every draw must
    # come from a CPU generator and be made on the CPU
    randn = torch.randn
    draws: list[tuple[str, str]] = []

    def spy(*args: Any, **kwargs: Any) -> torch.Tensor:
        gen = kwargs.get("generator")
        draws.append((gen.device.type if gen is not None else "global", str(kwargs.get("device", "cpu"))))
        return randn(*args, **kwargs)

    monkeypatch.setattr(torch, "randn", spy)
    monkeypatch.setattr(rf_sim, "check_device", lambda device=None, name="device": torch.device("meta"))
    with contextlib.suppress(Exception):  # meta results cannot come back to the CPU: it stops there
        if which == "simulate":
            rf_simulate()
        else:
            rf.measured_learnabilities(TASK[0], 16, trials=2, seed=0)
    assert draws and set(draws) == {("cpu", "cpu")}, draws


@pytest.mark.ch07
def test_power_law_task_and_checks_accept_float32_device_tensors() -> None:
    lam, v = TASK
    lam32 = lrkit.env.to_device_dtype(lam, "cpu", torch.float32)
    kap = rf.solve_kappa(lam32, 16)
    assert kap.dtype == torch.float64 and torch.isclose(kap, rf.solve_kappa(lam, 16), rtol=1e-5).all()


# --------------------------------------------------------------------------- devices checked
@pytest.mark.parametrize("call", [
    lambda d: rf.simulate(*TASK, [8], [4], [0.0], trials=1, device=d),
    lambda d: rf.measured_learnabilities(TASK[0], 8, trials=1, device=d),
    lambda d: rf.power_law_task(8, 1.5, 1.2, device=d),
    lambda d: sn.make_problem(4, 1, 40, device=d),
    lambda d: sw.lora_task(8, device=d),
])
def test_meta_is_refused_naming_the_argument_and_the_allowed_devices(call: Callable[[str], object]) -> None:
    with pytest.raises(ValueError, match=r"device must be 'cpu', 'cuda' \(or 'cuda:N'\) or 'mps', got 'meta'"):
        call("meta")


# --------------------------------------------------------------------------- on a real GPU
needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")


@needs_cuda
def test_sensing_sweep_is_the_same_on_cuda() -> None:
    for dev in ("cpu", "cuda"):
        p = sn.make_problem(8, 2, 260, symmetric=False, seed=1, device=dev)
        run = sn.run_sweep(p, "asymmetric", [2, 3, 3], [0.1, 0.1, 0.05], 0, lr=0.1, steps=400, num_records=20,
                           rebalance_once=[False, True, True], rebalance_below=1e-1)
        if dev == "cpu":
            want = run
    big = want.error > 1e-12
    torch.testing.assert_close(run.error[big], want.error[big], rtol=1e-6, atol=0)
    assert torch.equal(run.rebalanced_at, want.rebalanced_at)


@needs_cuda
def test_lora_sweep_is_the_same_on_cuda() -> None:
    want = lora_sweep()
    task = sw.lora_task(24, seed=0, device="cuda")
    got = sw.run_lora_sweep(task, [1e-3, 1e-2, 30.0], init=["A", "B", "A"], seed=[0, 1, 2], steps=40)
    assert got.diverged.tolist() == want.diverged.tolist()
    torch.testing.assert_close(torch.as_tensor(got.loss), torch.as_tensor(want.loss), rtol=1e-4, atol=1e-6,
                               equal_nan=True)


@needs_cuda
def test_rf_simulation_draws_the_same_data_on_cuda() -> None:
    want, got = rf_simulate(device="cpu"), rf_simulate(device="cuda")
    torch.testing.assert_close(got.test_mse, want.test_mse, rtol=1e-6, atol=1e-9)
    lw = rf.measured_learnabilities(TASK[0], 16, trials=2, seed=0, device="cpu")
    lg = rf.measured_learnabilities(TASK[0], 16, trials=2, seed=0, device="cuda")
    torch.testing.assert_close(lg[0], lw[0], rtol=1e-6, atol=1e-9)
    x, y = rf.pool_task(120, 4, seed=0)
    pw = rf.simulate_pool(x, y, 30, [16, math.inf], [1e-3], trials=2, seed=2)
    pg = rf.simulate_pool(x.cuda(), y.cuda(), 30, [16, math.inf], [1e-3], trials=2, seed=2)
    torch.testing.assert_close(pg.test_mse, pw.test_mse, rtol=1e-6, atol=1e-9)
