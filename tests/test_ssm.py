"""lrkit.ssm: recurrence, kernel, transfer function, FFT, sufficient statistics, training, bad inputs."""

from __future__ import annotations

import math

import pytest
import torch

from lrkit import deep_linear as dl
from lrkit import ssm

F64 = dict(dtype=torch.float64)


def _model(N: int = 3, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return 0.9 * (2 * torch.rand(N, generator=g, **F64) - 1), torch.randn(N, generator=g, **F64), \
        torch.randn(N, generator=g, **F64)


@pytest.mark.parametrize("periodic", [False, True])
def test_fft_equals_the_recurrence(periodic: bool) -> None:
    A, B, C = _model()
    u = torch.randn(2, 3, 50, generator=torch.Generator().manual_seed(1), **F64)
    assert torch.allclose(ssm.ssm_fft(A, B, C, u, periodic), ssm.ssm_scan(A, B, C, u, periodic), atol=1e-10)


def test_periodic_state_is_a_fixed_point() -> None:
    A, B, C = _model()
    u = torch.randn(40, generator=torch.Generator().manual_seed(2), **F64)
    # after many periods the causal output forgets its start and equals the periodic one
    y_many = ssm.ssm_scan(A, B, C, u.repeat(30))[-40:]
    assert torch.allclose(y_many, ssm.ssm_scan(A, B, C, u, periodic=True), atol=1e-8)


def test_kernel_is_the_impulse_response_and_its_dft_matches_the_formula() -> None:
    A, B, C = _model()
    L = 32
    impulse = torch.zeros(L, **F64)
    impulse[0] = 1
    K = ssm.ssm_kernel(A, B, C, L)
    assert torch.allclose(K, ssm.ssm_scan(A, B, C, impulse))
    w = 2 * math.pi * torch.arange(L, **F64) / L
    trunc = ((C * B * (1 - A ** L)) / (1 - A * torch.exp(-1j * w)[:, None])).sum(-1)
    assert torch.allclose(torch.fft.fft(K), trunc, atol=1e-10)
    assert ssm.transfer_function(A, B, C, L).shape == (L,)


def test_statistics_parseval_and_best_product() -> None:
    u = ssm.colored_noise(256, 0.5, 3, seed=0)
    y = ssm.ssm_fft(torch.tensor([0.7], **F64), torch.ones(1, **F64), torch.tensor([1.2], **F64), u, periodic=True)
    f, t = ssm.frequency_statistics(u, y, 0.7), ssm.time_statistics(u, y, 0.7)
    assert f == pytest.approx(t, rel=1e-10)
    assert f[0] / f[1] == pytest.approx(1.2, rel=1e-10)  # same pole: the teacher's product is learned


def test_colored_noise_has_unit_variance_and_the_right_correlation() -> None:
    u = ssm.colored_noise(20000, 0.8, 4, seed=0)
    assert float(u.var()) == pytest.approx(1.0, abs=0.1)
    corr = float((u[:, 1:] * u[:, :-1]).mean() / u.var())
    assert corr == pytest.approx(0.8, abs=0.03)


def test_training_gradient_matches_autograd_through_the_recurrence() -> None:
    u = ssm.colored_noise(64, 0.0, 2, seed=3)
    A = torch.tensor([0.8, 0.8], **F64)
    y = ssm.ssm_scan(A, torch.tensor([1.0, 0.5], **F64), torch.tensor([1.0, 1.0], **F64), u, periodic=True)
    B0, C0 = torch.tensor([0.3, -0.2], **F64), torch.tensor([0.1, 0.4], **F64)
    run = ssm.train_ssm(u, y, A, B0, C0, lr=0.05, steps=1)
    B, C = B0.clone().requires_grad_(), C0.clone().requires_grad_()
    loss = 0.5 * (ssm.ssm_scan(A, B, C, u, periodic=True) - y).square().mean()
    gB, gC = torch.autograd.grad(loss, (B, C))
    assert torch.allclose(run.B[0], B0 - 0.05 * gB) and torch.allclose(run.C[0], C0 - 0.05 * gC)
    assert float(run.loss[0, 0]) == pytest.approx(float(loss.detach()))


def test_trained_product_follows_saxe() -> None:
    u = ssm.colored_noise(256, 0.0, 1, seed=4)
    y = ssm.ssm_fft(torch.tensor([0.9]), torch.ones(1), torch.tensor([1.5]), u, periodic=True)
    s_uy, s_uu = ssm.frequency_statistics(u, y, 0.9)
    run = ssm.train_ssm(u, y, torch.tensor([0.9]), torch.tensor([0.01]), torch.tensor([0.01]), 1e-3, 2000)
    theory = dl.saxe_trajectory(run.t, s_uy / s_uu, 1e-4, tau=1 / s_uu)
    assert float((run.product[0] - theory).abs().max()) < 0.02 * 1.5


def test_divergence_is_flagged() -> None:
    u = ssm.colored_noise(64, 0.0, 1, seed=0)
    y = 3 * u
    run = ssm.train_ssm(u, y, torch.tensor([[0.9], [0.9]]), torch.tensor([[1.0], [0.01]]),
                        torch.tensor([[1.0], [0.01]]), lr=5.0, steps=40)
    assert bool(run.diverged[0])


@pytest.mark.parametrize("call,exc,match", [
    (lambda: ssm.ssm_kernel(torch.tensor([1.2]), torch.ones(1), torch.ones(1), 4), ValueError, "stable"),
    (lambda: ssm.ssm_kernel(torch.ones(2) * 0.5, torch.ones(3), torch.ones(2), 4), ValueError, "same shape"),
    (lambda: ssm.ssm_kernel(torch.ones(2, 2) * 0.5, torch.ones(2, 2), torch.ones(2, 2), 4), ValueError, "A must"),
    (lambda: ssm.ssm_kernel(torch.ones(1) * 0.5, torch.ones(1), torch.ones(1), 0), ValueError, "length"),
    (lambda: ssm.ssm_kernel(torch.ones(1) * 0.5, torch.ones(1), torch.ones(1), 2.0), TypeError, "length"),
    (lambda: ssm.ssm_scan(torch.ones(1) * 0.5, torch.ones(1), torch.ones(1), [1.0, 2.0]), TypeError, "u must"),
    (lambda: ssm.frequency_statistics(torch.ones(4), torch.ones(5), 0.5), ValueError, "same shape"),
    (lambda: ssm.frequency_statistics(torch.ones(4), torch.ones(4), 1.0), ValueError, "a must"),
    (lambda: ssm.colored_noise(8, rho=1.0), ValueError, "rho"),
    (lambda: ssm.train_ssm(torch.ones(4), torch.ones(4), torch.ones(1) * 0.5, torch.ones(1), torch.ones(1),
                           lr=-1.0, steps=2), ValueError, "lr"),
    (lambda: ssm.train_ssm(torch.ones(4), torch.ones(4), torch.ones(1) * 0.5, torch.ones(2), torch.ones(1),
                           lr=0.1, steps=2), ValueError, "share one shape"),
])
def test_bad_inputs(call, exc: type, match: str) -> None:
    with pytest.raises(exc, match=match):
        call()


# --------------------------------------------------------------------------- learning: features, tied, poles
def test_feature_statistics_match_the_time_domain_and_one_pole() -> None:
    u = ssm.colored_noise(128, 0.3, 2, seed=0)
    y = ssm.ssm_fft(torch.tensor([0.5], **F64), torch.ones(1, **F64), torch.tensor([1.5], **F64), u, periodic=True)
    poles = [0.9, -0.5, 0.0]
    sig, gram = ssm.feature_statistics(u, y, poles)
    z = torch.stack([ssm.filtered_input(p, u) for p in poles])
    assert torch.allclose(sig, (z * y).mean((-1, -2)), atol=1e-10)
    assert torch.allclose(gram, torch.einsum("nml,pml->np", z, z) / z[0].numel(), atol=1e-10)
    assert float(sig[0]) == pytest.approx(ssm.frequency_statistics(u, y, 0.9)[0], rel=1e-10)


@pytest.mark.slow  # a few seconds: make test runs it, make test-fast does not
def test_train_tied_follows_the_latent_laws_and_freeze_c_freezes() -> None:
    u = ssm.colored_noise(128, 0.0, 1, seed=1)
    y = ssm.ssm_fft(torch.tensor([0.5], **F64), torch.ones(1, **F64), torch.tensor([1.5], **F64), u, periodic=True)
    suy, suu = ssm.frequency_statistics(u, y, 0.9)
    s = suy / suu
    Ns = [1, 4]
    r = ssm.train_tied(u, y, 0.9, Ns, [0.0, 0.0], [0.3, 0.3], 2e-5, 60000, freeze_c=True)
    h = dl.half_times(r.t, r.product[:, :, None], [s])[:, 0]
    assert torch.allclose(h, ssm.latent_half_time(Ns, suy, suu, "tied frozen", c0=0.3), rtol=0.01)
    assert torch.allclose(r.C, torch.full((2, 1), 0.3, **F64))
    A = torch.full((1, 3), 0.9, **F64)
    run = ssm.train_ssm(u, y, A, torch.zeros(1, 3, **F64), torch.full((1, 3), 0.2, **F64), 1e-3, 50,
                        freeze_C=True)
    assert torch.equal(run.C, torch.full((1, 3), 0.2, **F64)) and bool((run.B != 0).all())


def test_pole_gradient_is_autograd_and_curvature_is_the_second_derivative() -> None:
    u = ssm.colored_noise(64, 0.3, 2, seed=2)
    y = ssm.ssm_scan(torch.tensor([0.6], **F64), torch.ones(1, **F64), torch.tensor([1.2], **F64), u, periodic=True)
    a = torch.tensor([0.3], **F64, requires_grad=True)
    loss = 0.5 * (ssm.ssm_scan(a, torch.ones(1, **F64), torch.tensor([0.9], **F64), u, periodic=True) - y
                  ).square().mean()
    g = torch.autograd.grad(loss, a)[0]
    assert float(ssm.pole_gradient(u, y, 0.3, 0.9)[0]) == pytest.approx(float(g), rel=1e-9)
    eps = 1e-4  # at the teacher's own pole and gain the gradient's slope is lambda
    slope = (ssm.pole_gradient(u, y, 0.6 + eps, 1.2) - ssm.pole_gradient(u, y, 0.6 - eps, 1.2)) / (2 * eps)
    assert float(slope[0]) == pytest.approx(float(ssm.pole_curvature(u, 0.6, 1.2)[0]), rel=1e-6)


def test_isolated_half_times_marks_saddles_and_latent_bad_inputs() -> None:
    sig, gram = torch.tensor([1.0, 2.0], **F64), torch.eye(2, **F64)
    t = ssm.isolated_half_times(sig, gram, torch.tensor([1e-3, -1e-3], **F64), torch.tensor([1e-3, 1e-3], **F64))
    assert math.isfinite(float(t[0])) and math.isinf(float(t[1]))
    with pytest.raises(ValueError, match="scheme"):
        ssm.latent_half_time(2, 1.0, 1.0, "shared")
    with pytest.raises(ValueError, match="a0"):
        ssm.train_pole(torch.ones(4, **F64), torch.ones(4, **F64), 1.2, 1.0, 1e-3, 2)
