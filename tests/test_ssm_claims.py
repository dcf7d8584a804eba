"""Chapter 3's claim checks fail on their planted wrong mechanisms (and pass on the right one)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

import lrkit
from lrkit import deep_linear as dl
from lrkit import ssm
from lrkit.fit import fit_power_law

pytestmark = pytest.mark.ch03  # tests/conftest.py marks by file name; this file is Chapter 3's too

F64 = dict(dtype=torch.float64)
TEACHER = (torch.tensor([0.5], **F64), torch.ones(1, **F64), torch.tensor([1.5], **F64))


def test_spectrum_claim_catches_sigma_uu_as_the_speed() -> None:
    b0, lr = 0.01, 1e-3
    meas, right, wrong = [], [], []
    for rho in (-0.8, 0.8):
        u = ssm.colored_noise(256, rho, 1, seed=2)
        y = ssm.ssm_fft(*TEACHER, u, periodic=True)
        suy, suu = ssm.frequency_statistics(u, y, 0.9)
        s = suy / suu
        b = torch.tensor([b0], **F64)
        r = ssm.train_ssm(u, y, torch.tensor([0.9], **F64), b, b.clone(), lr, 8000)
        meas.append(float(dl.half_times(r.t, r.product[0][:, None], [s])[0]))
        lag = float(dl.gd_lag(lr * suu, s, b0 ** 2, s / 2)) / suu
        right.append(math.log((s - b0 ** 2) / b0 ** 2) / (2 * suy) + lag)
        wrong.append(math.log((s - b0 ** 2) / b0 ** 2) / (2 * suu) + lag)   # "the speed is sigma_uu"
    kw = dict(kind="rel", tol=0.01, statement="half-times", quiet=True)
    lrkit.claim("prop-ssm-spectrum", meas, right, **kw)
    with pytest.raises(AssertionError):
        lrkit.claim("prop-ssm-spectrum", meas, wrong, **kw)


@pytest.mark.slow  # a few seconds: make test runs it, make test-fast does not
def test_latent_claims_catch_wrong_exponents() -> None:
    u = ssm.colored_noise(128, 0.0, 1, seed=7)
    y = ssm.ssm_fft(*TEACHER, u, periodic=True)
    suy, suu = ssm.frequency_statistics(u, y, 0.9)
    Ns = [1, 2, 4, 8, 16]
    r = ssm.train_tied(u, y, 0.9, Ns, [0.0] * 5, [0.5] * 5, 2e-5, 60000, freeze_c=True, record_every=5)
    h = dl.half_times(r.t, r.product[:, :, None], [suy / suu])[:, 0]
    kw = dict(kind="rel", tol=0.03, statement="tied frozen", quiet=True)
    lrkit.claim("prop-ssm-latent", h, ssm.latent_half_time(Ns, suy, suu, "tied frozen", c0=0.5), **kw)
    with pytest.raises(AssertionError):  # an untied (1/N) law for the tied parameters
        lrkit.claim("prop-ssm-latent", h, ssm.latent_half_time(Ns, suy, suu, "untied frozen", c0=0.5), **kw)
    slope = fit_power_law(Ns, h.numpy()).exponent
    lrkit.claim("prop-ssm-latent", slope, -2.0, kind="abs", tol=0.05, statement="exponent", quiet=True)
    with pytest.raises(AssertionError):
        lrkit.claim("prop-ssm-latent", slope, -1.0, kind="abs", tol=0.05, statement="exponent", quiet=True)


def test_first_pole_claim_catches_the_slowest_filter_and_the_pole_rate_catches_unweighted_power() -> None:
    poles = torch.tensor([-0.7, 0.0, 0.5, 0.9], **F64)
    teacher = (torch.tensor([0.9, -0.7], **F64), torch.ones(2, **F64), torch.tensor([0.3, 1.0], **F64))
    gen = torch.Generator().manual_seed(5)
    B0, C0 = (1e-2 * torch.randn(4, generator=gen, **F64) for _ in range(2))
    u = ssm.colored_noise(256, -0.8, 1, seed=3)
    y = ssm.ssm_fft(*teacher, u, periodic=True)
    sig, gram = ssm.feature_statistics(u, y, poles)
    r = ssm.train_ssm(u, y, poles, B0, C0, 1e-3, 2500, record_every=2)
    t = dl.crossing_times(r.t, r.products[0] * torch.sign(sig / torch.diagonal(gram)),
                          (sig / torch.diagonal(gram)).abs() / 2)
    first = int(torch.nan_to_num(t, nan=math.inf).argmin())
    lrkit.claim("prop-ssm-poles", first, int(ssm.isolated_half_times(sig, gram, B0, C0).argmin()), kind="equal",
                statement="first", quiet=True)
    with pytest.raises(AssertionError):  # "the slowest filter (largest pole) always goes first"
        lrkit.claim("prop-ssm-poles", first, int(poles.argmax()), kind="equal", statement="first", quiet=True)
    rates, right, wrong = [], [], []
    for rho in (0.8, -0.8):
        u = ssm.colored_noise(256, rho, 1, seed=4)
        y = ssm.ssm_fft(torch.tensor([0.5], **F64), torch.ones(1, **F64), torch.tensor([1.5], **F64), u,
                        periodic=True)
        lam = float(ssm.pole_curvature(u, 0.5, 1.5)[0])
        pr = ssm.train_pole(u, y, 0.45, 1.5, 4e-3, math.ceil(min(40, 16 / lam) / 4e-3), record_every=1)
        d = (pr.a[0] - 0.5).abs()
        win = (d < 1e-2) & (d > 1e-6)
        rates.append(-float(np.polyfit(pr.t[win].numpy(), np.log(d[win].numpy()), 1)[0]))
        right.append(-math.log(1 - 4e-3 * lam) / 4e-3)
        wrong.append(1.5 ** 2 * float(u.square().mean()))   # input power without the |dG/da|^2 weight
    kw = dict(kind="rel", tol=0.05, statement="pole rate", quiet=True)
    lrkit.claim("prop-ssm-pole", rates, right, **kw)
    with pytest.raises(AssertionError):
        lrkit.claim("prop-ssm-pole", rates, wrong, **kw)


def test_scalar_recursion_claim_catches_the_wrong_time_constant() -> None:
    u = ssm.colored_noise(128, 0.0, 1, seed=8)
    y = ssm.ssm_fft(*TEACHER, u, periodic=True)
    suy, suu = ssm.frequency_statistics(u, y, 0.9)
    b = torch.tensor([0.01], **F64)
    r = ssm.train_ssm(u, y, torch.tensor([0.9], **F64), b, b.clone(), 1e-3, 500, record_every=1)
    kw = dict(kind="abs", tol=1e-9, statement="recursion", quiet=True)
    rec = dl.discrete_mode_trajectory(500, suy / suu, 1e-4, 1e-3 * suu)
    lrkit.claim("prop-ssm-saxe", float((r.product[0] - rec).abs().max()) / (suy / suu), 0.0, **kw)
    bad = dl.discrete_mode_trajectory(500, suy / suu, 1e-4, 1e-3 * suy)  # time constant 1/sigma_uy
    with pytest.raises(AssertionError):
        lrkit.claim("prop-ssm-saxe", float((r.product[0] - bad).abs().max()) / (suy / suu), 0.0, **kw)
