from __future__ import annotations

import numpy as np
import pytest
import torch

import lrkit
from lrkit.env import by_scale


def test_scale_knob(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LRKIT_SCALE", "full")
    assert lrkit.get_scale() == "full" and by_scale(1, 2) == 2
    monkeypatch.setenv("LRKIT_SCALE", "small")
    assert lrkit.get_scale() == "small" and by_scale(1, 2) == 1
    monkeypatch.setenv("LRKIT_SCALE", "huge")
    with pytest.raises(ValueError, match=r"LRKIT_SCALE must be one of \('small', 'full'\)"):
        lrkit.get_scale()
    monkeypatch.delenv("LRKIT_SCALE")
    expected = "full" if torch.cuda.is_available() else "small"
    assert lrkit.get_scale() == expected


def test_device_choice(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("LRKIT_DEVICE", raising=False)
    assert lrkit.get_device().type in ("cpu", "cuda", "mps")
    monkeypatch.setenv("LRKIT_DEVICE", "cpu")
    assert lrkit.get_device() == torch.device("cpu")
    monkeypatch.setenv("LRKIT_DEVICE", "tpu")
    with pytest.raises(ValueError, match="LRKIT_DEVICE must be one of"):
        lrkit.get_device()


def test_seeding_is_deterministic() -> None:
    lrkit.seed_everything(3)
    a = (torch.randn(3), np.random.rand(2))
    lrkit.seed_everything(3)
    b = (torch.randn(3), np.random.rand(2))
    assert torch.equal(a[0], b[0]) and np.array_equal(a[1], b[1])
    with pytest.raises(ValueError, match="seed must be a non-negative int"):
        lrkit.seed_everything(-1)


def test_describe_env_names_device_and_scale() -> None:
    line = lrkit.describe_env()
    assert "device=" in line and "scale=" in line and torch.__version__ in line


def test_few_threads_restores_the_setting() -> None:
    from lrkit.env import few_threads

    before = torch.get_num_threads()
    with few_threads(torch.device("cpu")):
        assert torch.get_num_threads() == 1
    assert torch.get_num_threads() == before
    with few_threads(torch.device("cpu"), work=1e9):  # big work keeps every thread
        assert torch.get_num_threads() == before


def test_resolve_scale_and_generator() -> None:
    from lrkit.env import generator, resolve_scale

    assert resolve_scale("full") == "full" and resolve_scale(None) == lrkit.get_scale()
    assert lrkit.by_scale(1, 2, scale="full") == 2
    with pytest.raises(ValueError, match=r"scale must be one of \('small', 'full'\), got 'big'"):
        resolve_scale("big")
    assert torch.equal(torch.randn(3, generator=generator(5)), torch.randn(3, generator=generator(5)))
    with pytest.raises(ValueError, match="seed must be a non-negative int"):
        generator(-2)


def test_cpu_on_mps_runs_where_the_tensors_are_and_brings_results_back() -> None:
    from lrkit.env import cpu_on_mps

    x = torch.randn(4, 4, dtype=torch.float64)
    x = x + x.T
    s, U = cpu_on_mps(torch.linalg.eigh, x)  # on the CPU: fn itself, unchanged
    assert torch.equal(s, torch.linalg.eigh(x).eigenvalues)

    class OnMps:  # a stand-in for an MPS tensor: records where its results are sent
        device = torch.device("mps")

        def cpu(self) -> torch.Tensor:
            return x

    sent: list[str] = []

    class Back:
        def __init__(self, t: torch.Tensor) -> None:
            self.t = t

        def to(self, dev: torch.device) -> str:
            sent.append(dev.type)
            return "moved"

    out = cpu_on_mps(lambda t: (Back(t.sum()), Back(t.mean())), OnMps())  # type: ignore[arg-type]
    assert out == ("moved", "moved") and sent == ["mps", "mps"]


@pytest.fixture
def fake_mps(monkeypatch: pytest.MonkeyPatch) -> None:
    """A machine whose MPS backend is available and CUDA is not; no lesson has asked for float64 yet."""
    import lrkit.env as env

    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: True)
    monkeypatch.setattr(env, "_mps_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(env, "_float64_on_cpu", False)
    monkeypatch.delenv("LRKIT_DEVICE", raising=False)


@pytest.mark.parametrize("override", ["", "mps"])
def test_needs_float64_runs_on_the_cpu_where_the_device_would_be_mps(
        fake_mps: None, override: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    from lrkit.env import FLOAT64_ON_CPU

    if override:
        monkeypatch.setenv("LRKIT_DEVICE", override)
    assert lrkit.get_device() == torch.device("mps")          # a float32 lesson keeps MPS
    assert capsys.readouterr().out == ""
    assert lrkit.get_device(needs_float64=True) == torch.device("cpu")
    out = capsys.readouterr().out
    assert out.count("\n") == 1 and FLOAT64_ON_CPU in out and "float64" in out and "MPS" in out
    # from then on the whole process agrees: the library's defaults, describe_env, the claims ledger
    assert lrkit.get_device() == torch.device("cpu") and "device=cpu" in lrkit.describe_env()
    assert capsys.readouterr().out == ""                       # the line is printed once, by the asking call


def test_needs_float64_leaves_cuda_and_the_cpu_alone(
        fake_mps: None, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    import lrkit.env as env

    monkeypatch.setenv("LRKIT_DEVICE", "cpu")
    assert lrkit.get_device(needs_float64=True) == torch.device("cpu")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.delenv("LRKIT_DEVICE")
    assert lrkit.get_device(needs_float64=True) == torch.device("cuda")   # auto: CUDA wins over MPS
    monkeypatch.setenv("LRKIT_DEVICE", "cuda")
    assert lrkit.get_device(needs_float64=True) == torch.device("cuda")
    assert capsys.readouterr().out == "" and env._float64_on_cpu is False
    monkeypatch.setenv("LRKIT_DEVICE", "mps")
    monkeypatch.setattr(env, "_mps_available", lambda: False)             # no MPS: the same error as before
    with pytest.raises(ValueError, match="MPS backend is not available"):
        lrkit.get_device(needs_float64=True)
