"""Checks for Chapter 3's exercises (linear state-space models); expected values come from :mod:`lrkit.ssm`.

* :func:`check_statistics`: ``fn(u, y, a) -> (sigma_uy, sigma_uu)``, the frequency-domain sufficient statistics;
* :func:`check_half_time`: ``fn(sigma_uy, sigma_uu, w0) -> t``, a fixed-pole SSM's half-learning time;
* :func:`check_latent_half_time`: ``fn(N, sigma_uy, sigma_uu, scheme, w0, c0) -> t``, the same with ``N`` states;
* :func:`check_first_pole`: ``fn(u, y, poles, B0, C0) -> n``, which of several distinct poles is learned first.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch

from ..deep_linear import learning_time
from ..ssm import colored_noise, frequency_statistics, ssm_fft
from ..ssm_learning import SCHEMES, feature_statistics, isolated_half_times, latent_half_time
from .core import call, check_close, check_function, fail, passed

__all__ = ["check_statistics", "check_half_time", "check_latent_half_time", "check_first_pole"]

F64 = torch.float64


def _flipped_sigma_uy(u: torch.Tensor, y: torch.Tensor, a: float) -> float:
    """sigma_uy computed with the time-reversed filter 1/(1 - a e^{+iw}) (a common sign slip)."""
    L = u.shape[-1]
    M = u.numel() // L
    w = 2 * math.pi * torch.arange(L, dtype=F64) / L
    GU = torch.fft.fft(u.to(F64)) / (1 - a * torch.exp(1j * w))
    return float((torch.fft.fft(y.to(F64)) * GU.conj()).real.sum() / (M * L * L))


def check_statistics(fn: Callable[..., Any], seed: int = 0) -> None:
    """``fn(u, y, a) -> (sigma_uy, sigma_uu)``, the frequency sums of :func:`lrkit.ssm.frequency_statistics`:
    ``sigma_uy = 1/(M L^2) sum Re[Y conj(G U)]``, ``sigma_uu = 1/(M L^2) sum |G U|^2``, ``G = 1/(1 - a e^{-iw})``."""
    gen = torch.Generator().manual_seed(seed)
    name = "sufficient_statistics"
    cases: list[dict[str, Any]] = []
    for L, M, a in ((16, 1, 0.5), (64, 3, 0.9), (32, 2, -0.7)):
        u = torch.randn(M, L, generator=gen, dtype=torch.float64)
        teacher = torch.tensor([float(torch.rand(1, generator=gen)) * 1.8 - 0.9], dtype=torch.float64)
        y = ssm_fft(teacher, torch.ones(1, dtype=torch.float64), torch.tensor([1.3], dtype=torch.float64), u,
                    periodic=True) + 0.1 * torch.randn(M, L, generator=gen, dtype=torch.float64)
        cases.append({"u": u.squeeze(0) if M == 1 else u, "y": y.squeeze(0) if M == 1 else y, "a": a})
    for case in cases:
        exp_uy, exp_uu = frequency_statistics(**case)
        out = call(fn, case, name, "torch.fft.fft gives complex spectra; .conj(), .real and .abs() act on them")
        if not (isinstance(out, tuple) and len(out) == 2):
            fail(f"{name} should return a pair (sigma_uy, sigma_uu)", case=case, actual=out)
        s_uy, s_uu = (float(v) if isinstance(v, torch.Tensor) and v.numel() == 1 else v for v in out)
        L = case["u"].shape[-1]
        M = case["u"].numel() // L
        if isinstance(s_uu, float) and abs(s_uu - exp_uu * L) < 1e-6 * abs(exp_uu * L):
            hint = "normalise by M L^2: Parseval gives sum_t z_t^2 = (1/L) sum_k |Z_k|^2, and the loss is a mean over L"
        elif isinstance(s_uu, float) and M > 1 and abs(s_uu - exp_uu * M) < 1e-6 * abs(exp_uu * M):
            hint = "average over the M sequences as well as over time"
        else:
            hint = "sigma_uu = sum |G_k|^2 |U_k|^2 / (M L^2), with the *squared* modulus of G = 1/(1 - a e^{-iw})"
        check_close(s_uu, exp_uu, f"{name}(...)[1] (sigma_uu)", hint, case=case, rtol=1e-6, atol=1e-9)
        flipped = _flipped_sigma_uy(case["u"], case["y"], case["a"])
        if isinstance(s_uy, float) and math.isclose(s_uy, flipped, rel_tol=1e-6, abs_tol=1e-9):
            hint_uy = ("the filter of x_t = a x_{t-1} + u_t is G = 1/(1 - a e^{-i w}), with a minus sign in the "
                       "exponent: e^{+i w} gives the time-reversed filter (same |G|, so sigma_uu still agrees)")
        else:
            hint_uy = "sigma_uy = sum_k Re[Y_k conj(G_k U_k)] / (M L^2): a correlation needs the complex conjugate"
        check_close(s_uy, exp_uy, f"{name}(...)[0] (sigma_uy)", hint_uy, case=case, rtol=1e-6, atol=1e-9)
    passed(name)


def check_half_time(fn: Callable[..., Any], seed: int = 0) -> None:
    """``fn(sigma_uy, sigma_uu, w0)``: ``ln((s - w0)/w0) / (2 sigma_uy)`` with ``s = sigma_uy / sigma_uu``
    (:func:`lrkit.deep_linear.learning_time` with ``tau = 1/sigma_uu``)."""
    gen = torch.Generator().manual_seed(seed)
    cases = [{"sigma_uy": 2.0, "sigma_uu": 1.0, "w0": 0.5}, {"sigma_uy": 3.0, "sigma_uu": 6.0, "w0": 0.05}]
    cases += [{"sigma_uy": float(1 + 4 * torch.rand(1, generator=gen)), "sigma_uu": float(0.5 + 5 * torch.rand(1,
              generator=gen)), "w0": 1e-3}]

    def ref(sigma_uy: float, sigma_uu: float, w0: float) -> float:
        s = sigma_uy / sigma_uu
        return float(learning_time(s, w0, s / 2, tau=1 / sigma_uu))

    check_function(fn, ref, cases, name="half_time", rtol=1e-6, atol=1e-12,
                   hint="the flow is w' = 2 w (sigma_uy - sigma_uu w) = 2 sigma_uu w (s - w); separate variables "
                        "from w0 to s/2",
                   mistakes={
                       "the escape rate of a small w is 2 sigma_uy (sigma_uu times s), not 2 sigma_uu":
                           lambda sigma_uy, sigma_uu, w0: ref(sigma_uy, sigma_uu, w0) * sigma_uy / sigma_uu,
                       "the logistic equation has the factor 2: w' = 2 w (sigma_uy - sigma_uu w)":
                           lambda sigma_uy, sigma_uu, w0: 2 * ref(sigma_uy, sigma_uu, w0),
                       "keep the exact logarithm ln((s - w0)/w0), not its small-w0 form ln(s/w0)":
                           lambda sigma_uy, sigma_uu, w0: math.log(sigma_uy / sigma_uu / w0) / (2 * sigma_uy),
                   })


def check_latent_half_time(fn: Callable[..., Any], seed: int = 0) -> None:
    """``fn(N, sigma_uy, sigma_uu, scheme, w0, c0)`` must equal :func:`lrkit.ssm_learning.latent_half_time`."""
    gen = torch.Generator().manual_seed(seed)
    N = torch.tensor([1.0, 2.0, 4.0, 16.0], dtype=F64)
    suy, suu = float(1 + 2 * torch.rand(1, generator=gen)), float(2 + 4 * torch.rand(1, generator=gen))
    cases = [{"N": N, "sigma_uy": suy, "sigma_uu": suu, "scheme": sch, "w0": 1e-3, "c0": 0.3} for sch in SCHEMES]

    check_function(fn, lambda **c: latent_half_time(**c), cases, name="latent_half_time", rtol=1e-6, atol=1e-12,
                   hint="write the flow of the trained parameters for each scheme; a tied scalar's gradient sums "
                        "over the N states it feeds",
                   mistakes={
                       "with C tied and frozen, the gain N b c0 moves at N c0 times b's speed, and b's gradient "
                       "carries another N c0: the rate has N^2": lambda N, sigma_uy, sigma_uu, scheme, w0, c0:
                           latent_half_time(N, sigma_uy, sigma_uu, "untied frozen", w0=w0, c0=c0)
                           if scheme == "tied frozen" else latent_half_time(N, sigma_uy, sigma_uu, scheme, w0=w0,
                                                                            c0=c0),
                       "tied, balanced at fixed w0: the rate of w is 2 N sigma_uy, not 2 sigma_uy":
                           lambda N, sigma_uy, sigma_uu, scheme, w0, c0:
                           latent_half_time(torch.ones_like(torch.as_tensor(N, dtype=F64)), sigma_uy, sigma_uu,
                                            scheme, w0=w0, c0=c0) if scheme == "tied balanced"
                           else latent_half_time(N, sigma_uy, sigma_uu, scheme, w0=w0, c0=c0),
                   })


def _pole_cases(seed: int) -> list[dict[str, Any]]:
    gen = torch.Generator().manual_seed(seed)
    poles = torch.tensor([-0.7, 0.0, 0.5, 0.9], dtype=F64)
    two = ((0.9, -0.7), (0.3, 1.0))
    cases = []
    # (input colour, teacher (poles, gains), index of a state started large or None)
    for rho, (tp, tg), big in ((0.8, two, None), (-0.8, two, None), (0.8, two, 2), (-0.5, ((0.9,), (1.0,)), None)):
        u = colored_noise(128, rho, 1, seed=int(torch.randint(0, 1000, (1,), generator=gen)))
        teacher = (torch.tensor(tp, dtype=F64), torch.ones(len(tp), dtype=F64), torch.tensor(tg, dtype=F64))
        y = ssm_fft(*teacher, u, periodic=True)
        B0 = 1e-3 * torch.randn(4, generator=gen, dtype=F64)
        C0 = 1e-3 * torch.randn(4, generator=gen, dtype=F64)
        if big is not None:  # one state starts far larger: the start matters, not only sigma
            B0[big], C0[big] = 0.3, 0.3
        cases.append({"u": u.cpu(), "y": y.cpu(), "poles": poles, "B0": B0, "C0": C0})
    return cases


def _first(u: torch.Tensor, y: torch.Tensor, poles: torch.Tensor, B0: torch.Tensor, C0: torch.Tensor) -> int:
    sigma, gram = feature_statistics(u, y, poles)
    return int(isolated_half_times(sigma, gram, B0, C0).argmin())


def check_first_pole(fn: Callable[..., Any], seed: int = 0) -> None:
    """``fn(u, y, poles, B0, C0)`` must name (an int index) the state whose isolated mode is learned first."""
    def by_sigma(u: Any, y: Any, poles: Any, B0: Any, C0: Any) -> int:
        return int(feature_statistics(u, y, poles)[0].abs().argmax())

    def by_power(u: Any, y: Any, poles: Any, B0: Any, C0: Any) -> int:
        return int(torch.diagonal(feature_statistics(u, y, poles)[1]).argmax())

    check_function(fn, _first, _pole_cases(seed), name="first_pole", exact=True,
                   hint="treat each state as an isolated unbalanced mode: s_n = sigma_n / Gram_nn, tau = 1/Gram_nn, "
                        "c_n = B_n^2 - C_n^2, start B_n C_n; the shortest half-learning time goes first",
                   mistakes={
                       "the start matters too: a state that starts with a large product has less far to go":
                           by_sigma,
                       "the most filtered power (Gram_nn) is not what drives a state: its correlation with the "
                       "output, sigma_n, is": by_power,
                   })
