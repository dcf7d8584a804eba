"""Checks for Chapter 3's exercises (linear state-space models); expected values come from :mod:`lrkit.ssm`.

* :func:`check_kernel`: ``fn(A, B, C, length) -> K``, the convolution kernel ``K_l = sum_n C_n A_n^l B_n``;
* :func:`check_fft_output`: ``fn(A, B, C, u) -> y``, the causal output computed by FFT;
* :func:`check_statistics`: ``fn(u, y, a) -> (sigma_uy, sigma_uu)``, the frequency-domain sufficient statistics.
"""

from __future__ import annotations

from typing import Any, Callable

import torch

from ..ssm import frequency_statistics, ssm_fft, ssm_kernel, ssm_scan
from . import _matches_variant, call, check_close, check_shape, fail, passed

__all__ = ["check_kernel", "check_fft_output", "check_statistics"]


def _diag_ssm(gen: torch.Generator, N: int) -> dict[str, torch.Tensor]:
    A = (0.95 * (2 * torch.rand(N, generator=gen, dtype=torch.float64) - 1))
    return {"A": A, "B": torch.randn(N, generator=gen, dtype=torch.float64),
            "C": torch.randn(N, generator=gen, dtype=torch.float64)}


def check_kernel(fn: Callable[..., Any], seed: int = 0) -> None:
    """``fn(A, B, C, length)``: ``K_l = sum_n C_n A_n^l B_n`` for ``l = 0..length-1``; :func:`lrkit.ssm.ssm_kernel`."""
    gen = torch.Generator().manual_seed(seed)
    name = "ssm_kernel"
    cases = [{**_diag_ssm(gen, 1), "length": 6}, {**_diag_ssm(gen, 4), "length": 10},
             {**_diag_ssm(gen, 3), "length": 1}]
    for case in cases:
        expected = ssm_kernel(**case)
        actual = call(fn, case, name, "A, B, C are vectors of shape (N,); the kernel has shape (length,)")
        check_shape(actual, expected.shape, f"{name}(...)", "sum over the N states: one number per lag l", case)
        A, B, C = case["A"], case["B"], case["C"]
        l = torch.arange(case["length"], dtype=torch.float64).unsqueeze(-1)
        hint = _matches_variant(actual, {
            "the kernel starts at lag 0 with K_0 = C B (the input enters the state before it is read out)":
                (C * B * A ** (l + 1)).sum(-1),
            "K_l multiplies C, A^l and B: the product C_n B_n is missing a factor": (B * A ** l).sum(-1),
        }) or "K_l = sum_n C_n A_n^l B_n: unroll x_t = A x_{t-1} + B u_t from x_{-1} = 0"
        check_close(actual, expected, f"{name}(...)", hint, case=case, rtol=1e-6, atol=1e-9)
    passed(name)


def check_fft_output(fn: Callable[..., Any], seed: int = 0) -> None:
    """``fn(A, B, C, u)``: the causal output (zero initial state) by FFT; must equal the recurrence
    :func:`lrkit.ssm.ssm_scan` (and :func:`lrkit.ssm.ssm_fft`) for inputs of shape ``(L,)`` and ``(M, L)``."""
    gen = torch.Generator().manual_seed(seed)
    name = "ssm_output_fft"
    cases = [{**_diag_ssm(gen, 1), "u": torch.randn(16, generator=gen, dtype=torch.float64)},
             {**_diag_ssm(gen, 3), "u": torch.randn(2, 33, generator=gen, dtype=torch.float64)}]
    impulse = torch.zeros(8, dtype=torch.float64)
    impulse[-1] = 1.0
    cases.append({"A": torch.tensor([0.8], dtype=torch.float64), "B": torch.tensor([1.0], dtype=torch.float64),
                  "C": torch.tensor([1.0], dtype=torch.float64), "u": impulse})
    for case in cases:
        expected = ssm_scan(case["A"], case["B"], case["C"], case["u"])
        actual = call(fn, case, name, "torch.fft.rfft(x, n=...) pads with zeros; irfft(..., n=...) inverts it")
        check_shape(actual, expected.shape, f"{name}(...)", "the output has the input's shape (..., L)", case)
        hint = _matches_variant(actual, {
            "without zero padding the FFT computes a *circular* convolution, which wraps the end of the input "
            "around to the start: pad kernel and input to 2L and keep the first L outputs":
                torch.fft.irfft(torch.fft.rfft(ssm_kernel(case["A"], case["B"], case["C"], case["u"].shape[-1]))
                                * torch.fft.rfft(case["u"]), n=case["u"].shape[-1]),
            "that is the periodic steady state, not the causal output from a zero initial state":
                ssm_fft(case["A"], case["B"], case["C"], case["u"], periodic=True),
        }) or "y = irfft(rfft(K, n=2L) * rfft(u, n=2L), n=2L)[..., :L] with K = the kernel of length L"
        check_close(actual, expected, f"{name}(...)", hint, case=case, rtol=1e-6, atol=1e-8)
    passed(name)


def check_statistics(fn: Callable[..., Any], seed: int = 0) -> None:
    """``fn(u, y, a) -> (sigma_uy, sigma_uu)``, the frequency sums of :func:`lrkit.ssm.frequency_statistics`:
    ``sigma_uy = 1/(M L^2) sum Re[Y conj(G U)]``, ``sigma_uu = 1/(M L^2) sum |G U|^2``, ``G = 1/(1 - a e^{-iw})``."""
    gen = torch.Generator().manual_seed(seed)
    name = "sufficient_statistics"
    cases = []
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
        check_close(s_uy, exp_uy, f"{name}(...)[0] (sigma_uy)",
                    "sigma_uy = sum_k Re[Y_k conj(G_k U_k)] / (M L^2): the correlation needs the complex conjugate",
                    case=case, rtol=1e-6, atol=1e-9)
    passed(name)
