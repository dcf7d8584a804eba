"""Unit tests of lrkit.beyond_kernels and lrkit.spherical_sgd (Chapter 9): the model in full and reduced
coordinates, the drift h(m) against Monte Carlo and the paper's series, the ODE, bad inputs, and the plants
of the chapter's claims (each claim's statistic computed from a wrong mechanism falls outside its tolerance)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from lrkit import beyond_kernels as bk
from lrkit.checks.beyond_kernels import sign_cases
from lrkit.hermite import Activation, activation, hermite_coefficients
from lrkit.spherical_sgd import simulate


def mc_drift(setting: bk.Setting, m: float, n: int = 200_000, seed: int = 0) -> tuple[float, float]:
    gen = torch.Generator().manual_seed(seed)
    g = torch.randn(n, setting.k, generator=gen, dtype=torch.float64) * float(setting.base)
    a, e = torch.randn(2, n, generator=gen, dtype=torch.float64)
    b = m * a + math.sqrt(1 - m * m) * e
    v = -setting.outputs(g, a, b)[2] * (a - m * b) / (1 - m * m)
    return v.mean().item(), v.std().item() / math.sqrt(n)


@pytest.mark.parametrize("setting", [bk.aligned(3, "he3_tapered"), bk.faithful(5, "tanh", seed=3), bk.glm("relu"),
                                     bk.faithful(4, "relu", xi=1.0, seed=1)])
def test_drift_matches_monte_carlo(setting: bk.Setting) -> None:
    for m in (-0.6, 0.0, 0.4):
        mean, se = mc_drift(setting, m)
        assert abs(float(setting.h(m)) - mean) < 4 * se + 1e-3


def test_drift_matches_the_papers_series_for_normalised_preactivations() -> None:
    """Prop. 4's series (papers.md item A) with sigma's own coefficients equals our closed form for the model
    with pre-activations divided by sqrt(1 + xi^2/k) (orthonormal W)."""
    k, xi = 3, 1.3
    gen = torch.Generator().manual_seed(2)
    lam = torch.randn(k, generator=gen, dtype=torch.float64)
    c = torch.tensor([1.0, -1.0, 1.0], dtype=torch.float64) / math.sqrt(k)
    ch = torch.tensor([1.0, 1.0, -1.0], dtype=torch.float64) / math.sqrt(k)
    v = 1 + xi ** 2 / k
    scaled = Activation("tanh_normalised", lambda z: torch.tanh(z / math.sqrt(v)),
                        lambda z: (1 - torch.tanh(z / math.sqrt(v)) ** 2) / math.sqrt(v), "test")
    ours = bk.Setting(k, xi, scaled, lam, c, ch)
    mu = hermite_coefficients(torch.tanh, 61)
    r = xi ** 2 / k
    for m in (-0.7, 0.0, 0.3, 0.8):
        total = 0.0
        for l in range(40):
            inner = 0.0
            for s in range(0, 60 - l):
                p = l + s + 1
                if l % 2:   # T(l, s) = ||sum_i lam_i w_i^(x)s||^2
                    T = float(lam.sum() ** 2) if s == 0 else float((lam ** 2).sum())
                else:       # k <sum_i lam_i c_i w_i^(x)s, sum_i lam_i c_hat_i w_i^(x)s>
                    T = k * (float((lam * c).sum() * (lam * ch).sum()) if s == 0 else float((lam ** 2 * c * ch).sum()))
                inner += math.comb(l + s, l) * p * float(mu[p]) ** 2 * (1 + r) ** (-p) * T
            total += r ** (l + 1) * inner * m ** l
        assert abs(2 * total - float(ours.h(m))) < 1e-6 * max(1.0, abs(total))


def test_with_base_weights_there_is_no_saddle_and_the_glm_has_one() -> None:
    assert float(bk.aligned(4, "he3_tapered").h(0.0)) > 1.0
    assert float(bk.aligned(4, "he3").h(0.0)) > 1.0
    assert abs(float(bk.glm("he3_tapered").h(0.0))) < 1e-12
    m = torch.tensor([0.01, 0.02], dtype=torch.float64)     # GLM IE 3: h ~ 2 * 3 mu_3^2 m^2
    mu3 = float(activation("he3_tapered").coefficients(4)[3])
    assert torch.allclose(bk.glm("he3_tapered").h(m), 6 * mu3 ** 2 * m ** 2, rtol=1e-2)


def test_full_coordinates_agree_with_the_reduced_model_and_autograd() -> None:
    setting = bk.faithful(4, "tanh", seed=5)
    task, u0 = bk.make_task(setting, 11, seed=5)
    x = torch.randn(7, 11, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    u_hat = u0.repeat(7, 1)
    g, a, b = x @ task.W.T, x @ task.u, x @ u0
    y, yh, dldb = setting.outputs(g, a, b)
    assert torch.allclose(task.forward(x), y) and torch.allclose(task.forward(x, u_hat), yh)
    uu = u_hat.clone().requires_grad_(True)
    ((task.forward(x) - task.forward(x, uu)) ** 2).sum().backward()
    assert torch.allclose(uu.grad, dldb[:, None] * x, atol=1e-10)
    lr = 0.3
    grad = task.project(uu.grad)
    grad = grad - (grad * u_hat).sum(-1, keepdim=True) * u_hat
    new = (u_hat - lr * grad) / (u_hat - lr * grad).norm(dim=-1, keepdim=True)
    step = bk.sgd_step(task, u_hat, x, lr)
    assert torch.allclose(step, new, atol=1e-12)
    assert torch.allclose(step.norm(dim=-1), torch.ones(7, dtype=torch.float64))
    assert float((step @ task.W.T).abs().max()) < 1e-12       # stays in span(W)^perp


@pytest.mark.slow  # a few seconds: make test runs it, make test-fast does not
def test_simulation_follows_the_overlap_ode_for_fine_tuning() -> None:
    st = bk.aligned(4, "relu")
    dims = [32, 64]
    lrs = [bk.safe_lr(st, d) for d in dims]
    run = simulate(st, dims, list(range(8)), lrs, 4000, device="cpu")
    for d, lr in zip(dims, lrs):
        pred = np.median(bk.steps_theory(st, d, lr, run.m0[run.d == d]))
        assert abs(np.median(run.steps_to[run.d == d]) / pred - 1) < 0.2
    assert run.m.shape == (16, len(run.t)) and np.all(np.isfinite(run.steps_to))


@pytest.mark.slow  # a few seconds: make test runs it, make test-fast does not
def test_steps_theory_and_safe_lr() -> None:
    st = bk.aligned(4, "he3_tapered")
    t64, t128 = bk.steps_theory(st, 64, 0.09 / 64), bk.steps_theory(st, 128, 0.09 / 128)
    assert 1.8 < t128 / t64 < 2.3                              # linear in d at eta = eta0 / d
    assert bk.steps_theory(bk.glm("he3_tapered"), 64, 1e-4) == math.inf   # starts on the saddle
    assert 0.05 < bk.safe_lr(st, 128) * 128 < 0.15
    lr16, lr64 = (bk.safe_lr(bk.glm("he3_tapered"), d, m_start=1 / math.sqrt(d)) for d in (16, 64))
    assert 6 < lr16 / lr64 < 10                                # about d^(3/2) for IE 3
    t, m = bk.overlap_ode(st, 64, 0.09 / 64, 0.0, 2000, records=20)
    assert t[0] == 0 and t[-1] == 2000 and np.all(np.diff(m) > 0) and 0.8 < m[-1] < 1.0


def test_drift_limit_and_faithful_instances() -> None:
    for case in sign_cases(0):
        lim = bk.drift_limit(**case)
        assert abs(lim) in (0.0, 1.0) or abs(abs(lim) - 1) < 1e-9
        assert np.sign(lim) == np.sign(float(case["setting"].h(case["m0"])))
    s = bk.faithful(8, seed=805)
    assert float(s.h(0.0)) == 0.0 and bk.drift_limit(s, 0.0) == 0.0


def test_bad_inputs_name_the_argument() -> None:
    st = bk.aligned(3, "relu")
    task, u0 = bk.make_task(st, 8)
    with pytest.raises(ValueError, match="u must be orthogonal to every row of W"):
        bk.Task(st, task.W, (task.u + task.W[0]) / (task.u + task.W[0]).norm())
    with pytest.raises(ValueError, match="u must be a unit vector"):
        bk.Task(st, task.W, 2 * task.u)
    with pytest.raises(ValueError, match="u_hat must hold unit vectors"):
        bk.sgd_step(task, 2 * u0[None], torch.randn(1, 8, dtype=torch.float64), 0.1)
    with pytest.raises(ValueError, match="positive finite float"):
        bk.sgd_step(task, u0[None], torch.randn(1, 8, dtype=torch.float64), 0.0)
    with pytest.raises(ValueError, match="model must be one of"):
        bk.sgd_step(task, u0[None], torch.randn(1, 8, dtype=torch.float64), 0.1, model="kernel")
    with pytest.raises(ValueError, match="k must be a positive int"):
        bk.aligned(0)
    with pytest.raises(ValueError, match="d must be a positive int"):
        bk.make_task(st, 0)
    with pytest.raises(ValueError, match="d must exceed k"):
        bk.make_task(st, 3)
    with pytest.raises(ValueError, match=r"c must have shape \(3,\) with entries \+-1/sqrt\(k\)"):
        bk.Setting(3, 1.0, activation("relu"), torch.ones(3), torch.ones(3), torch.ones(3) / math.sqrt(3))
    with pytest.raises(ValueError, match="xi must be a positive finite float"):
        bk.aligned(3, xi=-1.0)
    with pytest.raises(ValueError, match="need -1 < m0 < threshold < 1"):
        bk.steps_theory(st, 16, 0.01, m0=0.95)
    with pytest.raises(ValueError, match="lr must be a positive finite float"):
        simulate(st, [16], [0], -0.1, 10, device="cpu")
    with pytest.raises(ValueError, match="share k, xi"):
        simulate([st, bk.aligned(3, "tanh")], [16], [0, 1], 0.01, 10, device="cpu")
    with pytest.raises(ValueError, match="stop_fraction"):
        simulate(st, [16], [0], 0.01, 10, stop_fraction=0.0, device="cpu")


# ------------------------------------------------------------------ plants: wrong mechanisms fail the claims


def test_plant_drift_without_the_variance_rescaling_fails_the_monte_carlo_check() -> None:
    """prop-bk-drift: Mehler's series with sigma's own coefficients (ignoring that the pre-activations have
    variance 1 + xi^2/k) is off by many standard errors."""
    st = bk.aligned(4, "he3_tapered")
    mu = hermite_coefficients(st.act.fn, 41)
    p = torch.arange(40, dtype=torch.float64)

    def wrong_h(m: float) -> float:
        cc = st.xi ** 2 * torch.outer(st.c, st.c_hat)
        rho = (torch.eye(st.k, dtype=torch.float64) + cc * m) / st.var
        ker = ((p + 1) * mu[1:] ** 2 * rho[..., None] ** p).sum(-1)
        return float(2 * (torch.outer(st.lam, st.lam) * cc * ker).sum())

    z = max(abs(wrong_h(m) - mc_drift(st, m)[0]) / mc_drift(st, m)[1] for m in (-0.5, 0.0, 0.5))
    assert z > 4.0


def test_plant_glm_drift_for_fine_tuning_fails_the_no_saddle_check() -> None:
    """prop-bk-drift: if fine-tuning had the GLM's drift, h(0) of an IE-3 activation would be 0, not at least
    half of ReLU's (the lesson's check)."""
    assert float(bk.glm("he3_tapered").h(0.0)) / float(bk.aligned(4, "relu").h(0.0)) < 0.5


@pytest.mark.slow  # a few seconds: make test runs it, make test-fast does not
def test_plant_ode_without_the_noise_pull_fails_the_steps_check() -> None:
    """prop-bk-linear-d: dropping the sphere's noise pull predicts far fewer steps than SGD takes (IE 3)."""
    st = bk.aligned(4, "he3_tapered")
    d = 64
    lr = bk.safe_lr(st, d)
    run = simulate(st, [d], list(range(8)), lr, 3000, device="cpu")
    m = torch.linspace(0, 0.9, 400, dtype=torch.float64)
    no_noise = float(torch.trapezoid(1 / (lr * st.h(m) * (1 - m ** 2)), m))
    ratio = np.median(run.steps_to) / no_noise
    assert ratio > 1.3    # far outside 1 +- 3 s.e. (s.e. about 0.02-0.03 in the lesson)


@pytest.mark.slow  # a few seconds: make test runs it, make test-fast does not
def test_plant_no_saddle_in_the_glm_fails_the_scratch_ratio() -> None:
    """prop-bk-scratch: a from-scratch learner without a saddle (IE 1) is not 4x slower than fine-tuning."""
    d = 64
    st_ft, st_glm = bk.aligned(4, "he3_tapered"), bk.glm("relu")
    ft = simulate(st_ft, [d], list(range(8)), bk.safe_lr(st_ft, d), 3000, device="cpu")
    gl = simulate(st_glm, [d], list(range(8)), bk.safe_lr(st_glm, d, m_start=1 / math.sqrt(d)), 3000, device="cpu")
    assert np.median(gl.steps_to) / np.median(ft.steps_to) < 4.0


def test_plant_exact_linearisation_fails_the_beyond_kernels_gap() -> None:
    """prop-bk-kernel: if the network were its linearisation, the error gap at xi = sqrt(k) would be 1, not >= 5;
    and at xi = sqrt(k) the linearised model's floor is far above the network's zero."""
    st = bk.aligned(4, "relu")
    lin, base = st.loss(1.0, "linear", n=50_000)
    assert lin / lin < 5.0 and lin / base > 0.2 and st.loss(1.0, "network", n=50_000)[0] < 1e-20
