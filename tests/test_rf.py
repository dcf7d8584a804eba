"""Unit tests of lrkit.rf: the eigenframework solvers, their limits, the simulation, bad inputs."""

from __future__ import annotations

import math

import pytest
import torch
from lesson_helpers import lesson_sizes

from lrkit import rf


@pytest.fixture(scope="module")
def task() -> tuple[torch.Tensor, torch.Tensor]:
    return rf.power_law_task(500, 1.5, 1.2, device="cpu")




def test_the_lesson_sizes_for_both_scales() -> None:
    assert not hasattr(rf, "sizes")  # sizes live in the lesson, not in the library
    for scale in ("small", "full"):
        s = lesson_sizes("07_random_features", scale)
        assert s["n"] in s["ks"] or s["n"] < max(s["ks"])
        assert max(s["ks"]) <= s["modes"] and s["pool_n"] < s["pool"]
        assert list(s["ks"]) == sorted(s["ks"]) and list(s["ns"]) == sorted(s["ns"])


def test_power_law_task_is_normalised(task: tuple[torch.Tensor, torch.Tensor]) -> None:
    lam, v = task
    assert lam.shape == v.shape == (500,) and lam[0] == 1.0
    assert math.isclose(float(v.norm()), 1.0, rel_tol=1e-12)
    assert torch.allclose(lam[9], torch.tensor(10.0 ** -1.5, dtype=torch.float64))


def test_kappa_solves_its_equation(task: tuple[torch.Tensor, torch.Tensor]) -> None:
    lam, _ = task
    n = torch.tensor([4.0, 32.0, 128.0], dtype=torch.float64)[:, None]
    ridge = torch.tensor([0.0, 1e-4, 1e-1, 10.0], dtype=torch.float64)
    kap = rf.solve_kappa(lam, n, ridge)
    assert kap.shape == (3, 4) and bool((kap > 0).all())
    lhs = (lam / (lam + kap[..., None])).sum(-1) + ridge / kap
    assert torch.allclose(lhs, n.expand_as(lhs), rtol=1e-9)


def test_kappa_by_hand() -> None:
    # eigvals (1, 1), n = 2, ridge 1: 2/(1 + k) + 1/k = 2 -> k = 1
    assert math.isclose(rf.solve_kappa([1.0, 1.0], 2, 1.0).item(), 1.0, rel_tol=1e-10)
    # ridgeless with at least as many samples as modes: kappa = 0
    assert rf.solve_kappa([1.0, 0.5], 3, 0.0).item() == 0.0


def test_krr_by_hand() -> None:
    th = rf.krr_theory([1.0, 1.0], [1.0, 0.0], 1, 0.0, noise=0.1)
    assert math.isclose(th.kappa.item(), 1.0, rel_tol=1e-10)
    assert math.isclose(th.overfitting_coeff.item(), 2.0, rel_tol=1e-10)
    assert math.isclose(th.test_mse.item(), 0.7, rel_tol=1e-10)
    assert th.train_mse.item() == pytest.approx(0.0, abs=1e-12)  # ridgeless: interpolation


def test_train_mse_identity(task: tuple[torch.Tensor, torch.Tensor]) -> None:
    lam, v = task
    th = rf.krr_theory(lam, v, 64, torch.tensor([1e-3, 0.1, 1.0]), noise=0.2)
    assert torch.allclose(th.train_mse, (torch.tensor([1e-3, 0.1, 1.0]) / (64 * th.kappa)) ** 2 * th.test_mse, rtol=1e-8)


def test_rf_recovers_the_kernel_as_k_grows(task: tuple[torch.Tensor, torch.Tensor]) -> None:
    lam, v = task
    ridges = torch.tensor([0.0, 1e-3, 1e-1])
    ker = rf.krr_theory(lam, v, 64, ridges, noise=0.1)
    big = rf.rf_theory(lam, v, 64, 1e9, ridges, noise=0.1)
    inf = rf.rf_theory(lam, v, 64, math.inf, ridges, noise=0.1)
    assert torch.allclose(big.test_mse, ker.test_mse, rtol=1e-6)
    assert torch.allclose(inf.test_mse, ker.test_mse, rtol=1e-12)
    assert torch.allclose(big.gamma, big.kappa, rtol=1e-6)


def test_rf_equations_hold(task: tuple[torch.Tensor, torch.Tensor]) -> None:
    lam, v = task
    n, k, ridge = 64.0, torch.tensor([16.0, 100.0, 1000.0], dtype=torch.float64), 0.05
    th = rf.rf_theory(lam, v, n, k, ridge)
    z = (lam / (lam + th.gamma[:, None])).sum(-1)
    assert torch.allclose(z + ridge / th.kappa, torch.full_like(z, n), rtol=1e-8)
    assert torch.allclose(z + k * th.kappa / th.gamma, k, rtol=1e-8)


def test_interpolation_peak_and_ridgeless_limits(task: tuple[torch.Tensor, torch.Tensor]) -> None:
    lam, v = task
    assert math.isinf(rf.rf_theory(lam, v, 64, 64, 0.0).test_mse.item())
    assert math.isfinite(rf.rf_theory(lam, v, 64, 64, 1e-3).test_mse.item())
    # ridgeless, n > k: ordinary least squares on k features, E0 = n / (n - k)
    th = rf.rf_theory(lam, v, 64, 16, 0.0)
    assert math.isclose(th.overfitting_coeff.item(), 64 / 48, rel_tol=1e-6) and th.kappa.item() == 0.0
    assert math.isinf(rf.krr_theory(lam, v, 500, 0.0).test_mse.item())  # n = M modes, ridgeless


def test_optimal_ridge_zero_or_positive() -> None:
    lam, v = rf.power_law_task(1000, 1.5, 1.2, device="cpu")
    assert rf.optimal_ridge(lam, v, 64).ridge.item() > 0
    lam, v = rf.power_law_task(1000, 1.2, 1.4, device="cpu")
    assert rf.optimal_ridge(lam, v, 64).ridge.item() == 0.0


def test_optimal_risk_decreases_in_k(task: tuple[torch.Tensor, torch.Tensor]) -> None:
    lam, v = task
    opt = rf.optimal_ridge(lam, v, 32, torch.tensor([8.0, 32.0, 128.0, math.inf]))
    assert bool((torch.diff(opt.test_mse) < 0).all())


def test_simulation_matches_theory_away_from_the_peak(task: tuple[torch.Tensor, torch.Tensor]) -> None:
    lam, v = task
    ridges = torch.tensor([0.0, 0.1])
    sim = rf.simulate(lam, v, [64], [16, 512, math.inf], ridges, trials=8, seed=0, device="cpu")
    assert sim.test_mse.shape == (8, 1, 3, 2)
    th = rf.rf_theory(lam, v, 64, torch.tensor([16.0, 512.0, math.inf])[:, None], ridges).test_mse
    mean, sem = sim.mean()[0][0], sim.sem()[0]
    assert bool(((mean - th).abs() <= 0.06 * th + 3 * sem).all()), (mean, th)


def test_simulation_is_seeded(task: tuple[torch.Tensor, torch.Tensor]) -> None:
    lam, v = task
    a = rf.simulate(lam, v, [16, 32], [8], [0.0, 1.0], trials=2, seed=3, device="cpu")
    b = rf.simulate(lam, v, [16, 32], [8], [0.0, 1.0], trials=2, seed=3, device="cpu")
    assert torch.equal(a.test_mse, b.test_mse) and torch.equal(a.train_mse, b.train_mse)


def test_ridge_path_equals_direct_solves() -> None:
    g = torch.Generator().manual_seed(0)
    F = torch.randn(1, 10, 4, generator=g, dtype=torch.float64)
    G = F @ F.transpose(-1, -2)  # rank 4 < 10
    y = torch.randn(1, 10, generator=g, dtype=torch.float64)
    ridges = torch.tensor([0.0, 0.5], dtype=torch.float64)
    a, train = rf.ridge_path(G, y, ridges)
    direct = torch.linalg.solve(G[0] + 0.5 * torch.eye(10, dtype=torch.float64), y[0])
    assert torch.allclose(a[0, :, 1], direct, atol=1e-10)
    theta0 = torch.linalg.lstsq(F[0], y[0]).solution  # ridgeless limit = least squares in feature space
    assert torch.allclose(F[0].T @ a[0, :, 0], theta0, atol=1e-8)
    assert math.isclose(train[0, 0].item(), ((F[0] @ theta0 - y[0]) ** 2).mean().item(), rel_tol=1e-8)


def test_relu_kernel_is_the_mean_of_relu_features() -> None:
    x = torch.randn(5, 3, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    phi = rf.relu_features(x, 200_000, seed=0)
    assert torch.allclose(phi @ phi.T, rf.relu_kernel(x, x), atol=5e-3)


def test_eigenstructure_of_a_pool() -> None:
    x, y = rf.pool_task(60, 4, seed=0)
    lam, v = rf.eigenstructure(rf.relu_kernel(x, x), y)
    assert bool((lam > 0).all()) and bool((lam[:-1] >= lam[1:]).all())
    assert math.isclose(float((v ** 2).sum()), float((y ** 2).mean()), rel_tol=1e-6)


@pytest.mark.parametrize("call,match", [
    (lambda: rf.solve_kappa([1.0, -1.0], 2), "eigvals must be positive"),
    (lambda: rf.solve_kappa([[1.0]], 2), "eigvals must be a non-empty 1-D"),
    (lambda: rf.solve_kappa([1.0], 0), "n must be finite numbers >= 1"),
    (lambda: rf.solve_kappa([1.0], 2, -1.0), "ridge must be finite and >= 0"),
    (lambda: rf.krr_theory([1.0, 2.0], [1.0], 2), "coeffs must have the same length"),
    (lambda: rf.krr_theory([1.0], [1.0], 2, noise=-0.1), "noise must be finite and >= 0"),
    (lambda: rf.rf_theory([1.0], [1.0], 2, 0), "k must be numbers >= 1"),
    (lambda: rf.power_law_task(0, 1.0, 1.0), "modes must be a positive int"),
    (lambda: rf.power_law_task(10, -1.0, 1.0), "p must be a positive finite exponent"),
    (lambda: rf.simulate([1.0], [1.0], [0], [1], [0.0]), "ns must be positive ints"),
    (lambda: rf.simulate([1.0], [1.0], [2], [1], [0.0], trials=0), "trials must be a positive int"),
    (lambda: rf.relu_features(torch.ones(3), 4), "x must be a 2-D tensor"),
])
def test_bad_inputs(call, match: str) -> None:
    with pytest.raises((ValueError, TypeError), match=match):
        call()


def test_non_numeric_input_is_a_type_error() -> None:
    with pytest.raises(TypeError, match="eigvals must be a number"):
        rf.solve_kappa("abc", 2)
