"""lrkit.sensing: the measurement operator, factorised GD steps, rebalancing, batched sweeps, bad inputs."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
import torch
from lesson_helpers import lesson_sizes

import lrkit
from lrkit import sensing as sn


@pytest.fixture(scope="module")
def sym() -> sn.SensingProblem:
    return sn.make_problem(6, 2, 200, singular_values=(1.0, 0.5), seed=0, device="cpu")


@pytest.fixture(scope="module")
def asym() -> sn.SensingProblem:
    return sn.make_problem(6, 2, 300, n2=5, symmetric=False, seed=1, device="cpu")


# --------------------------------------------------------------------------- the problem
def test_problem_shapes_rank_and_psd(sym: sn.SensingProblem, asym: sn.SensingProblem) -> None:
    assert sym.Z.shape == (200, 6, 6) and sym.y.shape == (200,) and sym.M_star.shape == (6, 6)
    assert torch.allclose(sym.M_star, sym.M_star.T)
    eig = torch.linalg.eigvalsh(sym.M_star)
    assert torch.allclose(eig[-2:], torch.tensor([0.5, 1.0], dtype=torch.float64)) and eig[:-2].abs().max() < 1e-12
    assert asym.M_star.shape == (6, 5) and torch.linalg.matrix_rank(asym.M_star) == 2
    assert not torch.allclose(sym.Z[0], sym.Z[0].T)  # non-symmetric sensing by default
    s = sn.make_problem(5, 1, 40, symmetric_sensing=True, device="cpu")
    assert torch.allclose(s.Z, s.Z.transpose(1, 2))


def test_problem_lives_on_the_course_device() -> None:
    assert sn.make_problem(4, 1, 30).M_star.device.type == lrkit.get_device().type


def test_measure_and_adjoint_match_a_loop_over_measurements(sym: sn.SensingProblem) -> None:
    M = torch.randn(6, 6, dtype=torch.float64)
    z = torch.randn(200, dtype=torch.float64)
    loop_y = torch.stack([(Zi * M).sum() for Zi in sym.Z])
    loop_adj = sum(zi * Zi for zi, Zi in zip(z, sym.Z))
    assert torch.allclose(sn.measure(sym.Z, M), loop_y)
    assert torch.allclose(sn.adjoint(sym.Z, z), loop_adj)
    assert torch.allclose(sym.y, sn.measure(sym.Z, sym.M_star))


def test_adjoint_identity_and_batching(asym: sn.SensingProblem) -> None:
    M = torch.randn(3, 4, 6, 5, dtype=torch.float64)
    z = torch.randn(3, 4, 300, dtype=torch.float64)
    lhs = (sn.measure(asym.Z, M) * z).sum(-1)
    rhs = (M * sn.adjoint(asym.Z, z)).sum((-2, -1))
    assert sn.measure(asym.Z, M).shape == (3, 4, 300) and sn.adjoint(asym.Z, z).shape == (3, 4, 6, 5)
    assert torch.allclose(lhs, rhs)


def test_gradient_is_the_adjoint_formula_and_autograd(asym: sn.SensingProblem) -> None:
    M = torch.randn(6, 5, dtype=torch.float64, requires_grad=True)
    asym.loss(M).backward()
    by_formula = sn.adjoint(asym.Z, sn.measure(asym.Z, M.detach()) - asym.y) / asym.m
    assert torch.allclose(asym.gradient(M.detach()), by_formula)
    assert torch.allclose(asym.gradient(M.detach()), M.grad)
    assert float(asym.loss(asym.M_star)) < 1e-25 and float(asym.error(asym.M_star)) == 0.0


def test_symmetric_step_is_a_gradient_step_with_autograd(sym: sn.SensingProblem) -> None:
    X = torch.randn(6, 3, dtype=torch.float64, requires_grad=True)
    sym.loss(X @ X.T).backward()
    assert torch.allclose(sn.symmetric_step(sym, X.detach(), 0.05), X.detach() - 0.05 * X.grad)


def test_asymmetric_step_is_a_simultaneous_gradient_step(asym: sn.SensingProblem) -> None:
    B = torch.randn(6, 3, dtype=torch.float64, requires_grad=True)
    A = torch.randn(3, 5, dtype=torch.float64, requires_grad=True)
    asym.loss(B @ A).backward()
    B1, A1 = sn.asymmetric_step(asym, B.detach(), A.detach(), 0.05)
    assert torch.allclose(B1, B.detach() - 0.05 * B.grad) and torch.allclose(A1, A.detach() - 0.05 * A.grad)


def test_imbalance_is_nearly_conserved_by_small_steps(asym: sn.SensingProblem) -> None:
    B, A = sn.init_asymmetric(6, 5, 3, omega=0.3, seed=0)
    D0 = sn.imbalance(B, A)
    for _ in range(200):
        B, A = sn.asymmetric_step(asym, B, A, 0.01)
    assert (sn.imbalance(B, A) - D0).abs().max() < 5e-3 * D0.abs().max()  # drift O(lr^2) per step
    assert (B.T @ B - D0).abs().max() > 0.05 * D0.abs().max()  # while each Gram matrix did move


def test_rebalance_keeps_the_product_and_lifts_small_singular_values() -> None:
    g = torch.Generator().manual_seed(0)
    B = torch.randn(2, 7, 4, generator=g, dtype=torch.float64) @ torch.diag(torch.tensor([2.0, 1.0, 1e-2, 1e-3],
                                                                                          dtype=torch.float64))
    A = torch.randn(2, 4, 5, generator=g, dtype=torch.float64)
    B2, A2 = sn.rebalance(B, A, torch.tensor([0.5, 0.8], dtype=torch.float64))
    assert torch.allclose(B2 @ A2, B @ A, atol=1e-12)
    s = torch.linalg.svdvals(B2)
    assert s[0, -1] >= 0.5 - 1e-9 and s[1, -1] >= 0.8 - 1e-9
    assert torch.allclose(s[:, 0], torch.linalg.svdvals(B)[:, 0])  # large ones untouched
    active = torch.tensor([[True, True, True, False]] * 2)
    B3, A3 = sn.rebalance(B, A, 0.5, active)
    assert torch.allclose(B3 @ A3, B @ A, atol=1e-12)
    assert torch.linalg.svdvals(B3)[0, -1] < 1e-2  # the inactive (padding) direction is left alone


# --------------------------------------------------------------------------- sweeps
def test_batched_sweep_equals_one_run_per_configuration(sym: sn.SensingProblem, asym: sn.SensingProblem) -> None:
    cfg = dict(ranks=[2, 3, 4], omegas=[0.1, 0.3, 0.05], seeds=[0, 1, 2])
    for problem, kind in ((sym, "symmetric"), (asym, "asymmetric")):
        batched = sn.run_sweep(problem, kind, lr=0.05, steps=300, num_records=40, **cfg)
        for c in range(3):
            alone = sn.run_sweep(problem, kind, cfg["ranks"][c], cfg["omegas"][c], cfg["seeds"][c], lr=0.05,
                                 steps=300, num_records=40)
            assert torch.allclose(batched.error[c], alone.error[0], rtol=1e-9, atol=1e-20), (kind, c)
        assert torch.equal(batched.steps, alone.steps) and batched.steps[0] == 0 and batched.steps[-1] == 300


def test_sweep_is_deterministic_and_records_on_a_log_grid(asym: sn.SensingProblem) -> None:
    a = sn.run_sweep(asym, "asymmetric", 3, 0.2, 0, lr=0.05, steps=500, num_records=30)
    b = sn.run_sweep(asym, "asymmetric", 3, 0.2, 0, lr=0.05, steps=500, num_records=30)
    assert torch.equal(a.error, b.error)
    gaps = torch.diff(a.steps.double())
    assert bool((gaps > 0).all()) and gaps[-1] > 10 * gaps[1]
    assert len(a.imbalance_eigs) == 1 and a.imbalance_eigs[0].shape == (3,)


def test_exact_parameterisation_converges_linearly(sym: sn.SensingProblem) -> None:
    run = sn.run_sweep(sym, "symmetric", 2, 0.1, 0, lr=0.1, steps=1500, num_records=80)
    assert run.final[0] < 1e-20
    assert sn.linear_rate(run.steps, run.error[0], 1e-22, 1e-4) > 0.05


def test_linearised_rate_predicts_the_exact_rate_and_its_population_limit(sym: sn.SensingProblem) -> None:
    run = sn.run_sweep(sym, "symmetric", 2, 0.1, 0, lr=0.1, steps=1500, num_records=120)
    measured = sn.linear_rate(run.steps, run.error[0], 1e-24, 1e-6)
    assert measured == pytest.approx(sn.linearised_rate(sym, 0.1), rel=0.1)
    big = sn.make_problem(6, 2, 20_000, singular_values=(1.0, 0.5), seed=0, device="cpu")
    assert sn.linearised_rate(big, 0.1) == pytest.approx(-2 * math.log(1 - 0.1 * 2 * 0.5), rel=0.05)


def test_diverging_configurations_are_reported_not_raised(sym: sn.SensingProblem) -> None:
    run = sn.run_sweep(sym, "symmetric", 3, [0.1, 3.0], 0, lr=0.4, steps=200, num_records=30)
    assert run.diverged.tolist() == [False, True]
    assert torch.isnan(run.error[1, -1]) and torch.isfinite(run.error[0]).all()


def test_rebalancing_happens_once_and_keeps_the_error(asym: sn.SensingProblem) -> None:
    run = sn.run_sweep(asym, "asymmetric", 4, [0.05, 0.05], 0, lr=0.1, steps=800, num_records=60,
                       rebalance_once=[False, True], rebalance_below=1e-2)
    assert run.rebalanced_at[0] == -1 and run.rebalanced_at[1] > 0
    assert run.final[1] < 1e-3 * run.final[0]  # the rebalanced copy is much further along


# --------------------------------------------------------------------------- theory and fits
def test_fits_recover_known_rates_and_slopes() -> None:
    t = sn.log_grid(10_000, 200).double()
    assert sn.linear_rate(t, 3.0 * torch.exp(-0.004 * t), 1e-12, 1e-2) == pytest.approx(0.004, rel=1e-6)
    assert sn.loglog_slope(t, 5.0 / t**2, 100) == pytest.approx(-2.0, abs=1e-9)
    assert sn.redundant_error_theory(100.0, 4, 2, 0.1) == pytest.approx(2 / (16 * 0.01 * 1e4))
    with pytest.raises(ValueError, match="fewer than 3"):
        sn.linear_rate(t, torch.ones_like(t), 1e-12, 1e-2)


def test_degrees_of_freedom() -> None:
    assert sn.degrees_of_freedom(20, 20, 2, symmetric=True) == 39
    assert sn.degrees_of_freedom(20, 30, 2, symmetric=False) == 96


# --------------------------------------------------------------------------- bad inputs
def test_too_few_measurements_warn_that_the_problem_is_not_identifiable() -> None:
    with pytest.warns(sn.UnderdeterminedWarning, match="not identifiable"):
        sn.make_problem(10, 2, 15, device="cpu")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        sn.make_problem(10, 2, 200, device="cpu")


@pytest.mark.parametrize("kwargs,match", [
    (dict(n=5, r_star=6, m=50), "r_star must satisfy"),
    (dict(n=5, r_star=0, m=50), "r_star must be a positive int"),
    (dict(n=5, r_star=2, m=50, singular_values=(1.0,)), "singular_values must be r_star"),
    (dict(n=5, r_star=2, m=50, singular_values=(1.0, -1.0)), "singular_values must be r_star"),
    (dict(n=5, r_star=2, m=50, n2=4), "n2 must be None or equal to n"),
    (dict(n=5, r_star=2, m=0), "m must be a positive int"),
    (dict(n=5, r_star=2, m=50, seed=-1), "seed must be a non-negative int"),
])
def test_make_problem_rejects_bad_inputs(kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        sn.make_problem(**kwargs, device="cpu")


@pytest.mark.parametrize("kwargs,match", [
    (dict(parameterisation="symmetric", ranks=1, omegas=0.1), "r must be >= r_star = 2"),
    (dict(parameterisation="symmetric", ranks=7, omegas=0.1), r"r must be <= min\(n1, n2\) = 6"),
    (dict(parameterisation="symmetric", ranks=3, omegas=0.1, lr=0.0), "lr must be a positive finite float"),
    (dict(parameterisation="symmetric", ranks=3, omegas=0.1, lr=math.nan), "lr must be a positive finite float"),
    (dict(parameterisation="symmetric", ranks=3, omegas=-0.1), "omegas must be a positive finite float"),
    (dict(parameterisation="diagonal", ranks=3, omegas=0.1), r"parameterisation must be one of \('symmetric'"),
    (dict(parameterisation="symmetric", ranks=3, omegas=[0.1, 0.1], seeds=[0, 1, 2]), "omegas must be one value or a list of 3"),
    (dict(parameterisation="symmetric", ranks=3, omegas=0.1, rebalance_once=True), "asymmetric' only"),
])
def test_run_sweep_rejects_bad_inputs(sym: sn.SensingProblem, kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        sn.run_sweep(sym, steps=5, **kwargs)


def test_symmetric_parameterisation_needs_a_symmetric_problem(asym: sn.SensingProblem) -> None:
    with pytest.raises(ValueError, match="needs a symmetric PSD problem"):
        sn.run_sweep(asym, "symmetric", 2, 0.1, steps=5)


def test_type_errors_name_the_argument(sym: sn.SensingProblem) -> None:
    with pytest.raises(TypeError, match="lr must be a positive finite float"):
        sn.run_sweep(sym, "symmetric", 3, 0.1, lr="fast", steps=5)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="r must be an int"):
        sn.run_sweep(sym, "symmetric", 2.5, 0.1, steps=5)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="Z must be"):
        sn.measure(sym.Z, torch.zeros(5, 6, dtype=torch.float64))
    with pytest.raises(ValueError, match="z must be"):
        sn.adjoint(sym.Z, torch.zeros(7, dtype=torch.float64))




def test_the_lesson_sizes_are_in_a_visible_cell_and_consistent() -> None:
    small, full = lesson_sizes("04_matrix_sensing", "small"), lesson_sizes("04_matrix_sensing", "full")
    assert small["n"] == 20 and full["n"] == 50
    assert not hasattr(sn, "sizes")  # sizes live in the lesson, not in the library
    for S in (small, full):
        assert np.all(np.diff(S["omegas"]) > 0)
        assert len(S["singular_values"]) == S["r_star"] < S["over_rank"] <= S["n"]
        assert S["r_star"] == min(S["sym_ranks"])
        assert S["m"] >= sn.degrees_of_freedom(S["n"], S["n"], S["r_star"], symmetric=False)
