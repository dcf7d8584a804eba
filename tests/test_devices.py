"""Device behaviour without a GPU: dtype policy (MPS has no float64), no host sync inside batched
loops, adapters drawn on the CPU, explicit devices checked.

No GPU runs here: a ``TorchDispatchMode`` counts the operations that force a device -> host sync
(``item``/``bool`` -> ``_local_scalar_dense``, ``nonzero``, boolean-mask indexing) while the CPU
runs the loops, and MPS is imitated by the dtype policy (``float_dtype`` patched to float32) with
a recorder that fails on any float64 result. The CUDA test runs only where CUDA exists.
"""

from __future__ import annotations

import pytest
import torch
from device_helpers import recording

import lrkit
from lrkit import _validate as V
from lrkit import env
from lrkit import finetune as ft
from lrkit import finetune_sweep as fts
from lrkit import rslora as rs


def task() -> tuple[torch.nn.Module, ft.RegressionData]:
    base = ft.make_mlp(4, 8, 2, seed=0, device="cpu")
    teacher = ft.make_mlp(4, 8, 2, seed=1, device="cpu")
    return base, ft.sample_data(teacher, 4, 64, 16, seed=2, device="cpu")


# --------------------------------------------------------------------------- dtype policy
def test_float_dtype_is_float32_on_mps_only() -> None:
    assert env.float_dtype("cpu") == torch.float64 and env.complex_dtype("cpu") == torch.complex128
    assert env.float_dtype(torch.device("mps")) == torch.float32
    assert env.complex_dtype("mps") == torch.complex64
    assert env.float_dtype("cuda") == torch.float64


def test_to_device_dtype_defaults_and_keeps_the_cpu_wide() -> None:
    x = torch.arange(3, dtype=torch.float32)
    assert env.to_device_dtype(x).dtype == torch.float64
    assert env.to_device_dtype(x, "cpu", torch.float16).dtype == torch.float16


def test_fake_mps_is_accepted_by_check_device(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: True)
    assert V.check_device("mps").type == "mps"


@pytest.mark.parametrize("bad", ["cuda" if not torch.cuda.is_available() else "bogus", "tpu", "meta", 3.5])
def test_explicit_devices_are_checked(bad: object) -> None:
    # 'meta' stays refused: every lrkit function that takes a device computes numbers (losses,
    # divergence, eigenvalues) that a meta tensor does not hold. The message names the argument
    # and what is allowed.
    with pytest.raises(ValueError, match=r"device.*'cpu'"):
        ft.make_mlp(2, 4, 1, device=bad)  # type: ignore[arg-type]


def test_rslora_loop_runs_in_float32_under_the_mps_policy(monkeypatch: pytest.MonkeyPatch) -> None:
    T = rs.power_law_teacher(12, seed=0, device="cpu")
    want = rs.lora_linear_sweep(T, [2, 4], lr=0.01, steps=20)
    monkeypatch.setattr(rs, "float_dtype", lambda device=None: torch.float32)
    inner = rs._train_group

    def no_float64(*args, **kwargs):  # type: ignore[no-untyped-def]
        with recording(forbid=torch.float64):
            return inner(*args, **kwargs)

    monkeypatch.setattr(rs, "_train_group", no_float64)
    got = rs.lora_linear_sweep(T, [2, 4], lr=0.01, steps=20)
    torch.testing.assert_close(got.loss, want.loss, rtol=1e-4, atol=1e-6)


def test_train_loop_runs_in_float32_under_the_mps_policy(monkeypatch: pytest.MonkeyPatch) -> None:
    base, data = task()
    monkeypatch.setattr(ft, "float_dtype", lambda device=None: torch.float32)
    with recording(forbid=torch.float64):
        log = ft.train(base, data, 20, 1e-2)
    assert not log.diverged


# --------------------------------------------------------------------------- no per-step host sync
@pytest.mark.parametrize("steps", [10, 200])
def test_train_looks_at_the_host_once_per_check(steps: int) -> None:
    base, data = task()
    with recording() as rec:
        ft.train(base, data, steps, 1e-2, check_every=50)
    assert sum(rec.syncs.values()) <= steps // 50 + 5, rec.syncs


@pytest.mark.slow  # a few seconds: make test runs it, make test-fast does not
@pytest.mark.parametrize("steps", [10, 200])
def test_finetune_lrs_looks_at_the_host_once_per_check(steps: int) -> None:
    base, data = task()
    with recording() as rec:
        fts.finetune_lrs(base, data, [1e-3, 1e6], rank=2, steps=steps, optimizer="sgd", check_every=50)
    assert sum(rec.syncs.values()) <= steps // 50 + 10, rec.syncs


def test_lora_linear_sweep_has_no_sync_in_its_loop() -> None:
    T = rs.power_law_teacher(12, seed=0, device="cpu")
    counts = []
    for steps in (5, 100):
        with recording() as rec:
            rs.lora_linear_sweep(T, [2, 2, 4], lr=[0.01, 50.0, 0.01], steps=steps, optimizer="adam")
        counts.append(sum(rec.syncs.values()))
    assert counts[0] == counts[1], counts


def test_a_diverged_run_is_flagged_at_its_step_and_restored() -> None:
    base, data = task()
    single = ft.finetune(base, data, method="full", steps=120, lr=1e6, optimizer="sgd")
    batched = fts.finetune_lrs(base, data, [1e6, 1e-2], method="full", steps=120, optimizer="sgd")
    assert single.diverged and batched[0].diverged and single.diverged_at == batched[0].diverged_at > 0
    assert torch.isnan(single.log.loss[single.diverged_at:]).all()
    assert torch.isfinite(single.log.loss[:single.diverged_at]).all()
    for a, b in zip(single.model.parameters(), base.parameters()):
        torch.testing.assert_close(a, b)  # put back at its start, as the batched trainer does
    assert not batched[1].diverged


# --------------------------------------------------------------------------- adapters drawn on the CPU
def test_adapters_are_drawn_on_the_cpu_and_leave_the_global_stream_alone() -> None:
    base, _ = task()
    state = torch.random.get_rng_state()
    tuned = ft.adapted_copy(base, "lora", rank=2, seed=7)
    assert torch.equal(torch.random.get_rng_state(), state)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(7)
        ref = lrkit.add_lora(ft.copy.deepcopy(base), 2)
    for (_, a), (_, b) in zip(lrkit.lora_layers(tuned), lrkit.lora_layers(ref)):
        assert torch.equal(a.A, b.A) and torch.equal(a.B, b.B)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_adapters_are_the_same_on_cuda() -> None:
    base, _ = task()
    cpu = ft.adapted_copy(base, "lora", rank=2, seed=7)
    gpu = ft.adapted_copy(base.to("cuda"), "lora", rank=2, seed=7)
    for (_, a), (_, b) in zip(lrkit.lora_layers(cpu), lrkit.lora_layers(gpu)):
        assert b.A.device.type == "cuda" and torch.equal(a.A, b.A.cpu())


def test_seeded_draws_never_seed_a_gpu_stream(monkeypatch: pytest.MonkeyPatch) -> None:
    def forbidden(seed: int) -> None:
        raise AssertionError("a GPU stream was seeded as a side effect")

    monkeypatch.setattr(torch.cuda, "manual_seed_all", forbidden)
    monkeypatch.setattr(torch.mps, "manual_seed", forbidden, raising=False)
    base, _ = task()
    ft.adapted_copy(base, "lora", rank=2, seed=3)
    rs.initial_factors(4, 2, [0, 1], seed=1)
    from lrkit.checks.core import check_function
    check_function(lambda n: torch.randn(n), lambda n: torch.randn(n), [{"n": 3}], seed=5, quiet=True)


def test_adapters_on_another_device_are_drawn_from_the_cpu_stream() -> None:
    # a meta-device layer (no data, no generator of its own): its A must consume the CPU stream
    # exactly as a CPU layer's does, i.e. be drawn on the CPU and copied over
    after = []
    for device in ("cpu", "meta"):
        base = torch.nn.Linear(8, 4).to(device)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)
            layer = lrkit.LoRALinear(base, 2)
            after.append(torch.rand(1))
        assert layer.A.device.type == device
    assert torch.equal(after[0], after[1])
