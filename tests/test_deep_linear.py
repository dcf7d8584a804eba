"""lrkit.deep_linear: Saxe's formulas, the depth-D ODE, batched gradient descent, bad inputs."""

from __future__ import annotations

import math

import pytest
import torch

from lrkit import deep_linear as dl


def test_closed_form_solves_the_logistic_equation() -> None:
    t = torch.linspace(0, 3, 301, dtype=torch.float64)
    s, u0 = 2.0, 0.01
    u = dl.saxe_trajectory(t, s, u0)
    assert float(u[0]) == pytest.approx(u0)
    du = torch.gradient(u, spacing=(t,))[0]
    assert torch.allclose(du[1:-1], (2 * u * (s - u))[1:-1], rtol=1e-3, atol=1e-4)
    assert float(dl.saxe_trajectory(100.0, s, u0)) == pytest.approx(s)


def test_closed_form_broadcasts_over_time_and_strength() -> None:
    u = dl.saxe_trajectory(torch.linspace(0, 1, 5)[:, None], torch.tensor([1.0, 2.0, 3.0]), 1e-3, tau=2.0)
    assert u.shape == (5, 3) and u.dtype == torch.float64


def test_learning_time_inverts_the_closed_form() -> None:
    s = torch.tensor([0.5, 1.0, 4.0], dtype=torch.float64)
    t = dl.learning_time(s, 1e-3, 0.7 * s, tau=3.0)
    assert torch.allclose(dl.saxe_trajectory(t, s, 1e-3, tau=3.0), 0.7 * s)
    assert float(dl.learning_time(2.0, 1.0, 1.5)) == pytest.approx(math.log(3) / 4)


def test_deep_ode_matches_the_closed_form_at_depth_two() -> None:
    t = torch.linspace(0, 5, 51, dtype=torch.float64)
    ode = dl.deep_mode_trajectory(t, torch.tensor([1.0, 3.0]), 1e-2, depth=2)
    exact = dl.saxe_trajectory(t[:, None], torch.tensor([1.0, 3.0]), 1e-2)
    assert torch.allclose(ode, exact, atol=1e-6)


@pytest.mark.parametrize("depth", [3, 4])
def test_deep_learning_time_agrees_with_the_ode(depth: int) -> None:
    th = float(dl.deep_learning_time(1.0, 1e-2, 0.5, depth=depth))
    u = dl.deep_mode_trajectory(torch.tensor([0.0, th], dtype=torch.float64), 1.0, 1e-2, depth=depth, substeps=2000)
    assert float(u[-1]) == pytest.approx(0.5, rel=1e-5)


def test_gradient_step_is_the_negative_gradient() -> None:
    gen = torch.Generator().manual_seed(0)
    ws = [torch.randn(4, 3, generator=gen, dtype=torch.float64, requires_grad=True),
          torch.randn(5, 4, generator=gen, dtype=torch.float64, requires_grad=True),
          torch.randn(2, 5, generator=gen, dtype=torch.float64, requires_grad=True)]
    target = torch.randn(2, 3, generator=gen, dtype=torch.float64)
    loss = 0.5 * (target - ws[2] @ ws[1] @ ws[0]).square().sum()
    grads = torch.autograd.grad(loss, ws)
    new = dl.gradient_step([w.detach() for w in ws], target, 0.1)
    for w, g, n in zip(ws, grads, new):
        assert torch.allclose(n, w.detach() - 0.1 * g)


def test_decoupled_init_has_the_requested_modes_and_stays_on_the_curve() -> None:
    target, U, V = dl.mode_target([3.0, 1.0, 0.0], seed=0)
    w = dl.decoupled_init(U, V, 1e-3, depth=3, hidden=5)
    W = w[2] @ w[1] @ w[0]
    assert torch.allclose(torch.diagonal(U.T @ W @ V), torch.full((3,), 1e-3, dtype=torch.float64))
    run = dl.train_deep_linear(target, U, V, dl.decoupled_init(U, V, 1e-3), lr=1e-3, steps=4000, record_every=100)
    theory = dl.saxe_trajectory(run.t[:, None], torch.tensor([3.0, 1.0]), 1e-3)
    assert (run.modes[0, :, :2] - theory).abs().max() < 0.02
    assert run.modes.shape == (1, len(run.t), 3) and not bool(run.diverged.any())


def test_batched_runs_equal_single_runs() -> None:
    target, U, V = dl.mode_target([2.0, 1.0], seed=1)
    inits = [dl.random_init([2, 4, 2], 0.1, seed=k) for k in range(3)]
    batched = dl.train_deep_linear(target, U, V, [torch.stack([w[l] for w in inits]) for l in range(2)],
                                   lr=0.01, steps=50)
    for k, w in enumerate(inits):
        single = dl.train_deep_linear(target, U, V, w, lr=0.01, steps=50)
        assert torch.allclose(batched.modes[k], single.modes[0])


def test_divergence_is_flagged_not_raised() -> None:
    target, U, V = dl.mode_target([5.0, 4.0], seed=0)
    big = [torch.stack([w, w]) for w in dl.random_init([2, 2, 2], 1.0, seed=0)]
    run = dl.train_deep_linear(target, U, V, big, lr=5.0, steps=50)
    assert bool(run.diverged.all()) and torch.isnan(run.loss[:, -1]).all()


def test_half_times_interpolate() -> None:
    t = torch.tensor([0.0, 1.0, 2.0])
    modes = torch.tensor([[0.0, 0.0], [0.4, 1.0], [1.0, 1.0]], dtype=torch.float64)
    h = dl.half_times(t, modes, [1.0, 4.0])
    assert float(h[0]) == pytest.approx(1 + 0.1 / 0.6) and math.isnan(float(h[1]))


@pytest.mark.parametrize("call,match", [
    (lambda: dl.saxe_trajectory(1.0, -1.0, 0.1), "s"),
    (lambda: dl.saxe_trajectory(1.0, 1.0, 1.5), "u0"),
    (lambda: dl.saxe_trajectory(1.0, 1.0, 0.0), "u0"),
    (lambda: dl.saxe_trajectory(1.0, 1.0, 0.1, tau=0.0), "tau"),
    (lambda: dl.saxe_trajectory(1.0, 1.0, 0.1, tau=float("nan")), "tau"),
    (lambda: dl.learning_time(1.0, 0.1, 1.0), "uf"),
    (lambda: dl.saxe_trajectory(1.0, torch.ones(3), torch.full((2,), 0.1)), "broadcast"),
    (lambda: dl.deep_mode_trajectory([0.0, 1.0], 1.0, 0.1, depth=1), "depth"),
    (lambda: dl.deep_mode_trajectory([1.0, 0.0], 1.0, 0.1), "t must"),
    (lambda: dl.mode_target([1.0, -2.0]), "strengths"),
    (lambda: dl.random_init([2, 2], 0.1), "dims"),
    (lambda: dl.gradient_step([torch.ones(2, 2), torch.ones(3, 2)], torch.ones(2, 2), 0.1), "target"),
])
def test_bad_inputs_raise_value_errors_naming_the_argument(call, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        call()


def test_bad_types_and_shapes_in_training() -> None:
    target, U, V = dl.mode_target([1.0, 0.5], seed=0)
    w = dl.decoupled_init(U, V, 0.01)
    with pytest.raises(TypeError, match="steps"):
        dl.train_deep_linear(target, U, V, w, lr=0.1, steps=2.5)
    with pytest.raises(ValueError, match="lr"):
        dl.train_deep_linear(target, U, V, w, lr=float("inf"), steps=2)
    with pytest.raises(ValueError, match="compose"):
        dl.train_deep_linear(target, U, V, [w[0], torch.ones(2, 3, dtype=torch.float64)], lr=0.1, steps=2)
    with pytest.raises(TypeError, match="depth"):
        dl.deep_learning_time(1.0, 0.1, 0.5, depth=2.0)


# --------------------------------------------------------------------------- unbalanced modes, GD lag, hierarchy
def _rk4(s: float, c: float, u0: float, T: float, n: int = 2000) -> torch.Tensor:
    h, u = T / n, torch.tensor(u0, dtype=torch.float64)
    out = [u.clone()]
    for _ in range(n):
        k1 = dl.unbalanced_rate(u, s, c)
        k2 = dl.unbalanced_rate(u + h / 2 * k1, s, c)
        k3 = dl.unbalanced_rate(u + h / 2 * k2, s, c)
        k4 = dl.unbalanced_rate(u + h * k3, s, c)
        u = u + h / 6 * (k1 + 2 * k2 + 2 * k3 + k4)
        out.append(u.clone())
    return torch.stack(out)


@pytest.mark.parametrize("s,c,u0", [(2.0, 0.5, 0.0), (2.0, -3.0, -0.5), (1.0, 10.0, 0.0), (3.0, 0.3, 4.0),
                                    (-2.0, 1.0, 0.1), (2.0, 0.0, 1e-3)])
def test_unbalanced_trajectory_solves_the_ode(s: float, c: float, u0: float) -> None:
    t = torch.linspace(0, 4, 2001, dtype=torch.float64)
    assert torch.allclose(dl.unbalanced_trajectory(t, s, c, u0), _rk4(s, c, u0, 4.0), atol=1e-9)


def test_unbalanced_limits_and_vectorisation() -> None:
    t = torch.linspace(0, 3, 50, dtype=torch.float64)
    assert torch.allclose(dl.unbalanced_trajectory(t, 2.0, 0.0, 1e-3), dl.saxe_trajectory(t, 2.0, 1e-3), atol=1e-12)
    lazy = dl.unbalanced_trajectory(t, 1.0, 1e4, 0.0, tau=1e4)       # |c| >> s: u = s (1 - e^{-|c| t / tau})
    assert torch.allclose(lazy, 1 - torch.exp(-t), atol=1e-3)
    u = dl.unbalanced_trajectory(t[:, None, None], torch.tensor([1.0, 2.0]), torch.tensor([[0.1], [-1.0]]), 0.0)
    assert u.shape == (50, 2, 2)
    T = dl.unbalanced_time(0.0, 0.7, 1.0, 0.3, tau=2.0)
    assert float(dl.unbalanced_trajectory(T, 1.0, 0.3, 0.0, tau=2.0)) == pytest.approx(0.7, rel=1e-10)


def test_mode_pair_gd_follows_the_hyperbola_and_the_flow() -> None:
    a, b = dl.mode_pair_gd(20000, 1.5, 0.5, 0.0, 1e-4)
    assert float(((a ** 2 - b ** 2) - 0.25).abs().max()) < 1e-4
    t = torch.arange(20001, dtype=torch.float64) * 1e-4
    assert float((a * b - dl.unbalanced_trajectory(t, 1.5, 0.25, 0.0)).abs().max()) < 1e-3


@pytest.mark.slow  # a few seconds: make test runs it, make test-fast does not
@pytest.mark.parametrize("depth", [2, 3])
def test_full_matrix_gd_is_the_scalar_recursion_and_lags_as_predicted(depth: int) -> None:
    s = torch.tensor([3.0, 1.0], dtype=torch.float64)
    target, U, V = dl.mode_target(s.tolist(), seed=0)
    run = dl.train_deep_linear(target, U, V, dl.decoupled_init(U, V, 1e-2, depth=depth), lr=2e-3, steps=6000,
                               record_every=1)
    rec = dl.discrete_mode_trajectory(6000, s, 1e-2, 2e-3, depth=depth)
    assert float((run.modes[0] - rec).abs().max()) < 1e-10
    lag = dl.half_times(run.t, run.modes[0], s) - dl.deep_learning_time(s, 1e-2, s / 2, depth=depth)
    assert torch.allclose(lag, dl.gd_lag(2e-3, s, 1e-2, s / 2, depth=depth), rtol=0.01)


def test_tree_modes_are_levels_and_truncation_loss_is_eckart_young() -> None:
    sigma, U, V, s, level = dl.tree_modes(3)
    assert level.tolist() == [0, 1, 2, 2, 3, 3, 3, 3]
    assert all(float(s[level == l].min()) > float(s[level == l + 1].max()) for l in range(3))
    assert torch.allclose(U @ torch.diag(s) @ V.T, sigma.cpu(), atol=1e-12)
    assert dl.truncation_loss([1.0, 3.0, 2.0], 1) == pytest.approx(2.5)
    assert float(dl.level_strengths(sigma, U, V, level)[0]) == pytest.approx(float(s[0]))


@pytest.mark.parametrize("call,exc,match", [
    (lambda: dl.unbalanced_trajectory(1.0, 0.0, 1.0, 0.1), ValueError, "s"),
    (lambda: dl.unbalanced_trajectory(1.0, 1.0, 0.0, -0.1), ValueError, "saddle"),
    (lambda: dl.unbalanced_trajectory(-1.0, 1.0, 0.5, 0.1), ValueError, "t must"),
    (lambda: dl.unbalanced_trajectory(1.0, 1.0, float("nan"), 0.1), ValueError, "c"),
    (lambda: dl.unbalanced_time(0.0, 2.0, 1.0, 0.5), ValueError, "uf"),
    (lambda: dl.gd_lag(0.0, 1.0, 0.1, 0.5), ValueError, "lr"),
    (lambda: dl.gd_lag(1e-3, 1.0, 0.5, 0.1), ValueError, "uf"),
    (lambda: dl.discrete_mode_trajectory(0, 1.0, 0.1, 1e-3), ValueError, "steps"),
    (lambda: dl.tree_modes(0), ValueError, "levels"),
    (lambda: dl.truncation_loss([1.0, -1.0], 1), ValueError, "strengths"),
    (lambda: dl.truncation_loss([1.0], 1.5), TypeError, "rank"),
])
def test_new_bad_inputs(call, exc: type, match: str) -> None:
    with pytest.raises(exc, match=match):
        call()
