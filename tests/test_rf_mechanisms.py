"""Chapter 7's new machinery (measured learnabilities, one RF fit, family-wise tolerances) and the claim
checks' planted wrong mechanisms: each statistic must reject the mechanism it rules out."""

from __future__ import annotations

import math

import pytest
import torch

from lrkit import rf


@pytest.fixture(scope="module")
def task() -> tuple[torch.Tensor, torch.Tensor]:
    return rf.power_law_task(600, 1.5, 1.2, device="cpu")


def test_familywise_z() -> None:
    assert rf.familywise_z(1, 0.05) == pytest.approx(1.95996, abs=1e-4)   # two-sided 5%
    assert rf.familywise_z(512) > rf.familywise_z(32) > 3.0
    with pytest.raises(ValueError):
        rf.familywise_z(10, 1.5)


def test_fit_random_features_is_ridge_regression_in_feature_space(task) -> None:
    lam, v = task
    g = torch.Generator().manual_seed(0)
    X, W = torch.randn(30, 600, generator=g, dtype=torch.float64), torch.randn(50, 600, generator=g, dtype=torch.float64)
    Phi = (X * lam.sqrt()) @ W.T / math.sqrt(50)
    theta = torch.linalg.solve(Phi.T @ Phi + 0.1 * torch.eye(50, dtype=torch.float64), Phi.T @ (X @ v))
    beta = lam.sqrt() * (W.T @ theta) / math.sqrt(50)
    test, train = rf.fit_random_features(lam, v, X, W, 0.1)
    assert test == pytest.approx(float(((beta - v) ** 2).sum()), rel=1e-8)
    assert train == pytest.approx(float(((Phi @ theta - X @ v) ** 2).mean()), rel=1e-8)
    with pytest.raises(ValueError, match="X must be"):
        rf.fit_random_features(lam, v, X[:, :10], W, 0.1)


def test_measured_learnabilities_are_the_hat_matrix_diagonal(task) -> None:
    lam, _ = task
    mean, sem = rf.measured_learnabilities(lam, 20, 0.5, trials=1, seed=3, device="cpu")
    g = torch.Generator().manual_seed(3)
    X = torch.randn(20, 600, generator=g, dtype=torch.float32).double()
    H = lam[:, None] * X.T @ torch.linalg.solve((X * lam) @ X.T + 0.5 * torch.eye(20, dtype=torch.float64), X)
    assert torch.allclose(mean, torch.diagonal(H), atol=1e-8) and bool((sem == 0).all())


# ---------------------------------------------------------------- planted wrong mechanisms
def test_plant_bare_ridge_learnabilities_fail_the_learnability_check(task) -> None:
    lam, _ = task
    n, ridge = 64, 1.0
    L_sim, L_sem = rf.measured_learnabilities(lam, n, ridge, trials=10, seed=0, device="cpu")
    z = rf.familywise_z(2 * n)

    def excess(L: torch.Tensor) -> float:
        return float(((L_sim - L).abs() - z * L_sem)[: 2 * n].max())

    assert excess(rf.learnabilities(lam, rf.solve_kappa(lam, n, ridge).item())) <= 2 / n
    assert excess(lam / (lam + ridge / n)) > 2 / n            # the bare ridge, no self-consistency


def test_plant_unsquared_train_formula_fails_the_train_check(task) -> None:
    lam, v = task
    n, ridges = 64, torch.tensor([1e-2, 1e-1], dtype=torch.float64)
    sim = rf.simulate(lam, v, [n], [math.inf], ridges, trials=10, seed=1, device="cpu")
    train = sim.mean()[1][0, 0]
    sem = sim.train_mse[:, 0, 0].std(0) / math.sqrt(10)
    th = rf.krr_theory(lam, v, n, ridges)
    tol = 2 / n + rf.familywise_z(2) * sem / train
    assert bool(((train / th.train_mse - 1).abs() <= tol).all())
    wrong = th.test_mse * th.fitting_ratio.sqrt()              # (delta / n kappa) x test, not squared
    assert bool(((train / wrong - 1).abs() > tol).any())


def test_plant_a_biased_theory_fails_the_bias_check(task) -> None:
    lam, v = task
    n, ks, ridges = 128, [96, 112, 144, 176, 256], torch.tensor([1e-2, 1e-1], dtype=torch.float64)
    sim = rf.simulate(lam, v, [n], ks, ridges, trials=10, seed=2, device="cpu")
    th = rf.rf_theory(lam, v, n, torch.tensor(ks, dtype=torch.float64)[:, None], ridges).test_mse

    def bias_ok(theory: torch.Tensor) -> bool:
        per_trial = (sim.test_mse[:, 0] / theory - 1).flatten(1).mean(1)
        return abs(per_trial.mean().item()) <= 3 * per_trial.std().item() / math.sqrt(10) + 2 / n

    assert bias_ok(th)
    assert not bias_ok(1.2 * th)       # 10 trials near the peak resolve a bias of about 8-10%, not less


def test_plant_unsquared_bias_fails_the_gaussian_control(task) -> None:
    """The control compares a Gaussian simulation with the theory; a theory with (1 - L) instead of
    (1 - L)^2 in the bias is rejected by the same tolerance."""
    lam, v = task
    n, ridges = 64, torch.tensor([1e-3, 1e-2, 1e-1], dtype=torch.float64)
    sim = rf.simulate(lam, v, [n], [math.inf], ridges, trials=10, seed=3, device="cpu")
    best, j = sim.mean()[0][0, 0].min(-1)
    sem = sim.sem()[0, 0][j]
    th = rf.krr_theory(lam, v, n, ridges)
    tol = 2 / n + rf.familywise_z(1) * sem / best
    assert abs(best / th.test_mse.min() - 1) <= tol
    kap = rf.solve_kappa(lam, n, ridges)
    L = lam / (lam + kap[:, None])
    e0 = n / (n - (L ** 2).sum(-1))
    wrong = (e0 * ((1 - L) * v ** 2).sum(-1)).min()
    assert abs(best / wrong - 1) > tol
