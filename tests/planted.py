"""Planted mistakes: for every chapter's exercises, plausible wrong answers its checks must catch.

Each entry is (graded cell, solution cell, text in the solution, plausible wrong text): the
solution cell with the text replaced must fail the graded cell's visible check, and its hidden
asserts even when every check is defeated (tests/test_exercises.py).
"""

from __future__ import annotations

from course_helpers import PLANTED as PLANTED_01

Planted = list[tuple[str, str, str, str]]

PLANTED_02: Planted = [
    ("saxe_u_check", "saxe_u", "torch.exp(2 * s * t / tau)", "torch.exp(s * t / tau)"),
    ("saxe_u_check", "saxe_u", "e - 1 + s / u0", "e - 1 + u0 / s"),
    ("learning_time_check", "learning_time", "tau / (2 * s)", "tau / s"),
    ("learning_time_check", "learning_time", "uf * (s - u0) / (u0 * (s - uf))",
     "u0 * (s - uf) / (uf * (s - u0))"),
    ("gd_step_check", "gd_step", "W1 + lr * W2.T @ E", "W1 - lr * W2.T @ E"),
    ("gd_step_check", "gd_step", "W2 + lr * E @ W1.T",
     "W2 + lr * (target - W2 @ W1_new) @ W1_new.T"),
]

PLANTED_03: Planted = [
    ("kernel_check", "ssm_kernel", "A ** l", "A ** (l + 1)"),
    ("kernel_check", "ssm_kernel", "(C * B * A ** l)", "(B * A ** l)"),
    ("fft_check", "ssm_output_fft", "n = 2 * L", "n = L"),
    ("statistics_check", "sufficient_statistics", "(Y * GU.conj())", "(Y * GU)"),
    ("statistics_check", "sufficient_statistics", "(GU.abs() ** 2).sum() / (M * L * L)",
     "(GU.abs() ** 2).sum() / (M * L)"),
    ("statistics_check", "sufficient_statistics", "(GU.abs() ** 2)", "(GU.abs())"),
]

PLANTED_04: Planted = [
    ("measure_check", "measure", "(Z * M.unsqueeze(-3))", "(Z * M.transpose(-2, -1).unsqueeze(-3))"),
    ("measure_check", "measure", "* Z).sum(-3)", "* Z).mean(-3)"),
    ("symmetric_step_check", "symmetric_step", "(G + G.T) @ X", "2 * G @ X"),
    ("symmetric_step_check", "symmetric_step", "G = adjoint(Z, measure(Z, X @ X.T) - y) / m",
     "G = adjoint(Z, measure(Z, X @ X.T) - y)"),
    ("asymmetric_step_check", "asymmetric_step", "return B - lr * G @ A.T, A - lr * B.T @ G",
     "return B - lr * G @ A.T, A - lr * (B - lr * G @ A.T).T @ G"),
    ("asymmetric_step_check", "asymmetric_step", "A - lr * B.T @ G", "A - lr * B.T @ G.T"),
    ("fit_rate_check", "fit_rate", "np.log(e[keep])", "np.log10(e[keep])"),
    ("fit_rate_check", "fit_rate", "keep = np.isfinite(e) & (e >= lo) & (e <= hi)", "keep = np.isfinite(e)"),
    ("exponent_check", "prediction", "return 2", "return 1"),
    ("exponent_check", "prediction", "np.polyfit(np.log(omegas), np.log(rates), 1)[0]",
     "np.polyfit(omegas, rates, 1)[0]"),
]

PLANTED_07: Planted = [
    ("kappa_check", "solve_kappa_bisect", "if lhs(mid) > n:", "if lhs(mid) < n:"),
    ("kappa_check", "solve_kappa_bisect", "+ ridge / kappa", "+ ridge * kappa"),
    ("kappa_check", "solve_kappa_bisect", "return math.sqrt(lo * hi)", "return (lo + hi) / 2 * 1.01"),
    ("krr_check", "krr_theory", "return eigvals / (eigvals + kappa)", "return kappa / (eigvals + kappa)"),
    ("krr_check", "krr_theory", "return e0 * (float(", "return (float("),
    ("krr_check", "krr_theory", "(1 - L) ** 2 * coeffs", "(1 - L) * coeffs"),
    ("krr_check", "krr_theory", "n / (n - float((L ** 2).sum()))", "n / (n + float((L ** 2).sum()))"),
    ("optimal_check", "optimal_risk_vs_k", "nan=math.inf).min(-1).values", "nan=math.inf)[:, 0]"),
    ("optimal_check", "optimal_risk_vs_k", "nan=math.inf).min(-1).values", "nan=-math.inf).max(-1).values"),
]

# chapter -> (its checks submodule, total points, planted mistakes)
CHAPTERS: dict[str, tuple[str, int, Planted]] = {
    "01_lora": ("lrkit.checks", 12, PLANTED_01),
    "02_deep_linear": ("lrkit.checks.deep_linear", 7, PLANTED_02),
    "03_ssm": ("lrkit.checks.ssm", 8, PLANTED_03),
    "04_matrix_sensing": ("lrkit.checks.sensing", 12, PLANTED_04),
    "07_random_features": ("lrkit.checks.rf", 10, PLANTED_07),
}
