"""Unit tests of lrkit.rslora: the batched one-layer sweep, the reparametrisation, the first-step theory."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

import lrkit
from lrkit import rslora as rs
from lrkit import spectra
from lrkit.optim import AdamState


def _loop_reference(T: torch.Tensor, rank: int, rslora: bool, alpha: float, lr: float, steps: int,
                    optimizer: str, A0: torch.Tensor) -> list[float]:
    """The same experiment, one configuration, with autograd and torch.optim."""
    s = alpha / math.sqrt(rank) if rslora else alpha / rank
    A = A0.clone().requires_grad_()
    B = torch.zeros(T.shape[0], rank, requires_grad=True)
    opt = torch.optim.SGD([A, B], lr=lr) if optimizer == "sgd" else torch.optim.Adam([A, B], lr=lr)
    L0 = 0.5 * T.square().sum()
    out = []
    for t in range(steps + 1):
        L = 0.5 * (s * B @ A - T).square().sum()
        out.append((L / L0).item())
        if t == steps:
            break
        opt.zero_grad()
        L.backward()
        opt.step()
    return out


@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
def test_sweep_matches_one_by_one_training(optimizer: str) -> None:
    n, ranks, flags = 24, [2, 5, 8, 5], [False, True, False, False]
    T = rs.power_law_teacher(n, seed=0, device="cpu")
    lr = 0.005 if optimizer == "sgd" else 0.002
    sweep = rs.lora_linear_sweep(T, ranks, flags, alpha=4.0, lr=lr, steps=25, optimizer=optimizer, seed=7)
    for k, (r, f) in enumerate(zip(ranks, flags)):
        A0 = rs.initial_factors(n, r, [k], seed=7)[0]
        ref = _loop_reference(T, r, f, 4.0, lr, 25, optimizer, A0)
        np.testing.assert_allclose(sweep.loss[k].numpy(), ref, rtol=2e-4, atol=1e-6)
    assert sweep.scaling.tolist() == pytest.approx([2.0, 4 / math.sqrt(5), 0.5, 0.8])


def test_initial_factors_follow_lrkit_init_and_leave_the_global_stream() -> None:
    torch.manual_seed(5)
    expected = torch.rand(2)
    torch.manual_seed(5)
    A = rs.initial_factors(300, 8, [0, 1, 0], seed=2)
    assert torch.equal(torch.rand(2), expected)
    assert torch.equal(A[0], A[2]) and not torch.equal(A[0], A[1])
    assert A.abs().max() <= 1 / math.sqrt(300) and A.std().item() == pytest.approx(rs.init_std(300), rel=0.05)
    G = rs.initial_factors(300, 8, [0], init="gaussian")
    assert G.std().item() == pytest.approx(rs.init_std(300, "gaussian", 8), rel=0.05)


def test_sweep_flags_divergence_per_configuration_and_records_the_step() -> None:
    T = rs.power_law_teacher(32, seed=0, device="cpu")
    sweep = rs.lora_linear_sweep(T, [4, 4], False, alpha=8.0, lr=[0.005, 5.0], steps=30)
    assert sweep.diverged.tolist() == [False, True]
    assert sweep.diverged_at[0] == -1 and 0 < int(sweep.diverged_at[1]) <= 30
    assert math.isfinite(sweep.final[0].item()) and math.isnan(sweep.final[1].item())


def test_eckart_young_floor_power_law() -> None:
    n = 64
    T = rs.power_law_teacher(n, decay=0.5, seed=0, device="cpu")
    H = np.cumsum(1.0 / np.arange(1, n + 1))
    floor = rs.eckart_young_floor(T, [1, 8, 64]).numpy()
    np.testing.assert_allclose(floor, [(H[-1] - H[0]) / H[-1], (H[-1] - H[7]) / H[-1], 0.0], atol=1e-5)
    np.testing.assert_allclose(spectra.singular_values(T).numpy(), np.sqrt(n / np.arange(1, n + 1)), rtol=1e-4)


@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
def test_the_reparametrisation_is_exact(optimizer: str) -> None:
    """alpha/r at the equivalent rate and start follows alpha/sqrt(r) step for step (float64)."""
    n, r, alpha, lr = 48, 16, 8.0, 0.005 if optimizer == "sgd" else 0.001
    T = rs.power_law_teacher(n, seed=1, device="cpu").double()
    s_sqrt, s_r = lrkit.lora_scaling(alpha, r, True), lrkit.lora_scaling(alpha, r)
    lr2, c = rs.equivalent_config(s_sqrt, s_r, lr, optimizer)
    wrong_lr = lr * s_sqrt / s_r if optimizer == "adam" else lr2
    sweep = rs.lora_linear_sweep(T, [r] * 3, [True, False, False], alpha=alpha, lr=[lr, lr2, wrong_lr], steps=60,
                                 optimizer=optimizer, draw=[0, 0, 0], init_scale=[1.0, c, 1.0 if optimizer == "sgd" else c])
    gap = (sweep.loss[1] - sweep.loss[0]).abs().max().item()
    plant = (sweep.loss[2] - sweep.loss[0]).abs().max().item()
    assert gap < (1e-10 if optimizer == "sgd" else 1e-6) and plant > 1e-2


def test_first_step_matches_the_theory_and_adam_without_bias_correction_does_not(monkeypatch) -> None:
    """The lesson's prefactor check: measured / expected within 4 predicted standard deviations.

    Its plant: Adam without bias correction takes a first step sqrt(1-b2)/(1-b1) = 3.16 times too
    large, so the same check, with the same tolerance, fails.
    """
    n, ranks, draws = 128, [1, 4, 16], 16
    T = rs.power_law_teacher(n, seed=0, device="cpu")
    tol = 4 * rs.ratio_spread(T, 1, draws)

    def ratios(optimizer: str, lr: float) -> np.ndarray:
        R = [r for r in ranks for _ in range(draws)]
        sweep = rs.lora_linear_sweep(T, R, True, lr=lr, steps=1, optimizer=optimizer,
                                     draw=[d for _ in ranks for d in range(draws)])
        drop = (1 - sweep.loss[:, 1]).view(len(ranks), draws).mean(1)
        theory = rs.first_step_theory(T, ranks, [lrkit.lora_scaling(8.0, r, True) for r in ranks], lr, optimizer)
        return (drop / theory).numpy()

    for optimizer, lr in (("sgd", 0.005), ("adam", 0.001)):
        lrkit.claim("test-first-step", ratios(optimizer, lr), 1.0, statement="prefactor", kind="abs", tol=tol,
                    quiet=True)

    def adam_without_bias_correction(param, grad, state: AdamState, lr, betas=(0.9, 0.999), eps=1e-8):
        state.step += 1
        state.m.mul_(betas[0]).add_(grad, alpha=1 - betas[0])
        state.v.mul_(betas[1]).addcmul_(grad, grad, value=1 - betas[1])
        return param - torch.as_tensor(lr).view(-1, 1, 1) * state.m / (state.v.sqrt() + eps)

    monkeypatch.setattr(rs, "batched_adam_step", adam_without_bias_correction)
    planted = ratios("adam", 0.001)
    assert np.all(planted > 2.5)  # 3.16 to first order; the larger step meets its second-order term at r = 1
    with pytest.raises(AssertionError, match="test-first-step"):
        lrkit.claim("test-first-step", planted, 1.0, statement="prefactor", kind="abs", tol=tol, quiet=True)


def test_grad_norm_at_step_0_is_s_sqrt_r_sigma_norm() -> None:
    n, draws = 128, 8
    T = rs.power_law_teacher(n, seed=0, device="cpu")
    for r in (1, 8, 32):
        sweep = rs.lora_linear_sweep(T, [r] * draws, False, steps=1, draw=list(range(draws)))
        rms = sweep.grad_norm[:, 0].square().mean().sqrt().item()
        assert rms == pytest.approx(rs.grad_norm_theory(T, [r], [8.0 / r]).item(), rel=4 * rs.ratio_spread(T, r, draws))


def test_time_to_reach_interpolates() -> None:
    L = torch.tensor([[1.0, 0.8, 0.4, 0.2], [1.0, 0.9, 0.9, 0.9]])
    t = rs.time_to_reach(L, 0.6)
    assert t[0].item() == pytest.approx(1.5) and math.isnan(t[1].item())


def test_bad_inputs() -> None:
    T = rs.power_law_teacher(16, seed=0, device="cpu")
    with pytest.raises(ValueError, match=r"ranks must satisfy 1 <= r <= min\(out, in\) = 16"):
        rs.lora_linear_sweep(T, [32], False)
    with pytest.raises(ValueError, match="ranks must be a non-empty"):
        rs.lora_linear_sweep(T, [], False)
    with pytest.raises(ValueError, match="rslora must be a bool or one bool per rank"):
        rs.lora_linear_sweep(T, [2, 4], [True])
    with pytest.raises(ValueError, match="lr must be a positive finite float"):
        rs.lora_linear_sweep(T, [2], False, lr=float("nan"))
    with pytest.raises(ValueError, match="alpha must be a positive finite float"):
        rs.lora_linear_sweep(T, [2], False, alpha=0.0)
    with pytest.raises(ValueError, match="optimizer must be one of"):
        rs.lora_linear_sweep(T, [2], False, optimizer="rmsprop")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="teacher must be a 2-D tensor"):
        rs.lora_linear_sweep(torch.zeros(3), [1], False)
    with pytest.raises(ValueError, match="init must be 'A' or 'gaussian'"):
        rs.initial_factors(8, 2, [0], init="B")
    with pytest.raises(ValueError, match="s_to must be a positive finite float"):
        rs.equivalent_config(1.0, 0.0, 0.1)


def test_grad_norm_check_fails_when_the_scale_rule_is_ignored() -> None:
    """Plant of the lesson's prop-grad-collapse check: a sweep that applies alpha/r whatever the flag."""
    n, draws, R = 128, 16, [1, 4, 16, 64]
    T = rs.power_law_teacher(n, seed=0, device="cpu")
    tol = 4 * rs.ratio_spread(T, 1, draws) / 2

    def ratios(flag_used: bool) -> np.ndarray:
        sw = rs.lora_linear_sweep(T, [r for r in R for _ in range(draws)], flag_used, steps=1,
                                  draw=[d for _ in R for d in range(draws)])
        g = sw.grad_norm[:, 0].view(len(R), draws).square().mean(1).sqrt()
        return (g / rs.grad_norm_theory(T, R, [lrkit.lora_scaling(8.0, r, True) for r in R])).numpy()

    lrkit.claim("test-grad", ratios(True), 1.0, statement="grad norm", kind="abs", tol=tol, quiet=True)
    with pytest.raises(AssertionError, match="test-grad"):
        lrkit.claim("test-grad", ratios(False), 1.0, statement="grad norm", kind="abs", tol=tol, quiet=True)


@pytest.mark.slow  # a few seconds: make test runs it, make test-fast does not
def test_slowdown_check_tells_sqrt_r_from_r() -> None:
    """Plant of the lesson's prop-rslora check: dynamics that really run r times slower fail it.

    The lesson's statistic: the exponent of t_half(alpha/r) / t_half(alpha/sqrt(r)) against r
    at one rate, over its prediction 1/2, must lie in [0.5, 1.5]. Running alpha/r at a rate
    divided by a further sqrt(r) is the "r times slower" trajectory: its exponent is about 1.
    """
    from lrkit.fit import fit_power_law

    n, R, lr = 64, [1, 2, 4, 8, 16], 0.005
    T = rs.power_law_teacher(n, seed=0, device="cpu")
    half = (1 + rs.eckart_young_floor(T, R)) / 2
    t_sqrt = rs.time_to_reach(rs.lora_linear_sweep(T, R, True, lr=lr, steps=300, draw=R).loss, half)

    def exponent(rates: list[float]) -> float:
        t_r = rs.time_to_reach(rs.lora_linear_sweep(T, R, False, lr=rates, steps=1000, draw=R).loss, half)
        return fit_power_law(R, (t_r / t_sqrt).numpy()).exponent

    right, planted = exponent([lr] * len(R)), exponent([lr / math.sqrt(r) for r in R])
    lrkit.claim("test-slowdown", right / 0.5, interval=(0.5, 1.5), kind="interval", statement="slowdown",
                quiet=True)
    with pytest.raises(AssertionError, match="test-slowdown"):
        lrkit.claim("test-slowdown", planted / 0.5, interval=(0.5, 1.5), kind="interval", statement="slowdown",
                    quiet=True)
