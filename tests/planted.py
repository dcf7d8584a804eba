"""Planted mistakes: for every chapter's exercises, plausible wrong answers its checks must catch.

Each entry is (graded cell, solution cell, text in the solution, plausible wrong text): the
solution cell with the text replaced must fail the graded cell's visible check, and its hidden
asserts even when every check is defeated (tests/test_exercises.py).
"""

from __future__ import annotations

Planted = list[tuple[str, str, str, str]]

PLANTED_01: Planted = [
    ("init_lora_check", "init_lora", "torch.zeros(base.out_features, rank)", "torch.randn(base.out_features, rank)"),
    ("init_lora_check", "init_lora", "torch.empty(rank, base.in_features)", "torch.empty(base.in_features, rank)"),
    ("init_lora_check", "init_lora", "a=math.sqrt(5)", "a=0"),
    ("lora_forward_check", "lora_forward", "scaling = alpha / A.shape[0]", "scaling = alpha"),
    ("lora_forward_check", "lora_forward", "(h @ A.T) @ B.T", "(h @ B) @ A"),
    ("lora_forward_check", "lora_forward", "h = dropout(x) if", "x = h = dropout(x) if"),
    ("merge_check", "merge", "W0 + (alpha / A.shape[0]) * (B @ A)", "W0 + alpha * (B @ A)"),
    ("merge_check", "merge", "W0 + (alpha / A.shape[0]) * (B @ A)", "W0 + (alpha / A.shape[0]) * (A.T @ B.T)"),
    ("merge_check", "merge", "W - (alpha / A.shape[0])", "W + (alpha / A.shape[0])"),
    ("count_check", "count_lora_params", "rank * (module.in_features + module.out_features)",
     "rank * module.in_features"),
    ("count_check", "count_lora_params", "targeted = targets is None or", "targeted = True or"),
    ("count_check", "count_lora_params", "return total", "return total + sum(p.numel() for p in model.parameters())"),
    ("lora_forward_check", "lora_forward", "h = dropout(x) if dropout is not None else x", "h = x"),
    ("equivalent_check", "equivalent_config", 'lr * ratio if optimizer == "sgd" else lr * math.sqrt(ratio)',
     "lr * ratio"),
    ("equivalent_check", "equivalent_config", "return new_lr, math.sqrt(ratio)", "return new_lr, 1.0"),
    ("equivalent_check", "equivalent_config", "ratio = s_from / s_to", "ratio = s_to / s_from"),
    ("data_rank_check", "data_rank", "delta.double() @ root", "delta.double()"),
]

PLANTED_02: Planted = [
    ("learning_time_check", "learning_time", "tau / (2 * s)", "tau / s"),
    ("learning_time_check", "learning_time", "uf * (s - u0) / (u0 * (s - uf))",
     "u0 * (s - uf) / (uf * (s - u0))"),
    ("unbalanced_rate_check", "unbalanced_rate", "torch.sqrt(c ** 2 + 4 * u ** 2)", "torch.sqrt(c ** 2 + u ** 2)"),
    ("unbalanced_rate_check", "unbalanced_rate", "torch.sqrt(c ** 2 + 4 * u ** 2) * (s - u)", "2 * u * (s - u)"),
    ("gd_lag_check", "gd_lag", "lr / 2 * (grow + slow)", "lr / 2 * grow"),
    ("gd_lag_check", "gd_lag", "grow = 0.5 * torch.log", "grow = torch.log"),
    ("truncation_loss_check", "truncation_loss", "sorted((float(v) for v in strengths), reverse=True)[width:]",
     "[float(v) for v in strengths][width:]"),
    ("truncation_loss_check", "truncation_loss", "return 0.5 * sum(v * v for v in tail)",
     "return sum(v * v for v in tail)"),
]

PLANTED_03: Planted = [
    ("statistics_check", "sufficient_statistics", "(Y * GU.conj())", "(Y * GU)"),
    ("statistics_check", "sufficient_statistics", "(GU.abs() ** 2).sum() / (M * L * L)",
     "(GU.abs() ** 2).sum() / (M * L)"),
    ("statistics_check", "sufficient_statistics", "(GU.abs() ** 2)", "(GU.abs())"),
    ("half_time_check", "half_time", "/ (2 * sigma_uy)", "/ (2 * sigma_uu)"),
    ("half_time_check", "half_time", "math.log((s - w0) / w0)", "math.log(s / w0)"),
    ("latent_half_time_check", "latent_half_time", "(n ** 2 * c0 ** 2 * sigma_uu)", "(n * c0 ** 2 * sigma_uu)"),
    ("latent_half_time_check", "latent_half_time", "/ (2 * n * sigma_uy)", "/ (2 * sigma_uy)"),
    ("first_pole_check", "first_pole", "return int(torch.stack(times).argmin())", "return int(sigma.abs().argmax())"),
    ("first_pole_check", "first_pole", "return int(torch.stack(times).argmin())", "return int(d.argmax())"),
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
    ("rate_check", "predict_rate", "2 * lr * scale**2 * compressed", "2 * lr * scale * compressed"),
    ("rate_check", "predict_rate", "Q.T @ delta0 @ Q", "delta0"),
    ("rate_check", "predict_rate", ".abs().min()", ".abs().max()"),
    ("rate_check", "predict_rate", "float(2 * lr * scale", "float(lr * scale"),
]

# Chapters 5 and 6 share some texts
CH5, CH6 = "05_lora_init", "06_lora_plus"
KAIMING_B = "nn.init.kaiming_uniform_(B, a=math.sqrt(5))"
NOT_FROZEN = "        if not p.requires_grad:\n            continue\n"
POLYFIT = "np.polyfit(np.log(np.asarray(widths, dtype=float)), np.log(np.asarray(values, dtype=float)), 1)"

_PLANTED_05_06: list[tuple[str, str, str, str, str]] = [
    # Init[A] / Init[B]
    (CH5, "init_pair_check", "init_pair", KAIMING_B, "nn.init.kaiming_uniform_(A, a=math.sqrt(5))"),  # B = Init[A]
    (CH5, "init_pair_check", "init_pair", KAIMING_B, "B.zero_()"),                          # Init[B] with B zero
    (CH5, "init_pair_check", "init_pair", KAIMING_B,                                        # B's fan from out
     "nn.init.uniform_(B, -1 / math.sqrt(out_features), 1 / math.sqrt(out_features))"),
    (CH5, "init_pair_check", "init_pair", "nn.init.kaiming_uniform_(A, a=math.sqrt(5))",
     "nn.init.normal_(A, std=1 / math.sqrt(in_features))"),
    # the largest stable rate
    (CH5, "largest_stable_check", "largest_stable", ".any(axis=1)", ".all(axis=1)"),
    (CH5, "largest_stable_check", "largest_stable", "return float(lrs[k])", "return float(lrs[stable].max())"),
    (CH5, "largest_stable_check", "largest_stable", 'return float("nan")', "return float(lrs[0])"),
    # the exponent
    (CH5, "stability_exponent_check", "stability_exponent", "np.log(np.asarray(values, dtype=float))",
     "np.asarray(values, dtype=float)"),                                                    # fitted on lr, not log lr
    (CH5, "stability_exponent_check", "stability_exponent", POLYFIT,
     "np.polyfit(np.log(np.asarray(values, dtype=float)), np.log(np.asarray(widths, dtype=float)), 1)"),
    (CH5, "predicted_exponents_check", "predicted_exponents", '{"A": -0.5, "B": -1.0}', '{"A": -1.0, "B": -0.5}'),
    (CH5, "predicted_exponents_check", "predicted_exponents", '{"A": -0.5, "B": -1.0}', '{"A": 0.5, "B": 1.0}'),
    # the three terms of a step
    (CH5, "delta_terms_check", "delta_terms", "dB @ A.double() @ Zt", "dB @ A_next.double() @ Zt"),
    (CH5, "delta_terms_check", "delta_terms", "B.double() @ dA @ Zt", "B_next.double() @ dA @ Zt"),
    (CH5, "delta_terms_check", "delta_terms", "x.square().mean().sqrt()", "x.square().sum().sqrt()"),
    (CH5, "predicted_term_exponents_check", "predicted_term_exponents", '"Z_A": 0.5', '"Z_A": 0.0'),
    (CH5, "predicted_term_exponents_check", "predicted_term_exponents", '"delta2": 0.0', '"delta2": -0.5'),
    # LoRA+ groups
    (CH6, "loraplus_groups_check", "loraplus_groups", '{"A": lr, "B": lr * ratio, "other": lr}',
     '{"A": lr * ratio, "B": lr, "other": lr}'),                                            # ratio applied to A
    (CH6, "loraplus_groups_check", "loraplus_groups", '"B": lr * ratio', '"B": lr / ratio'),
    (CH6, "loraplus_groups_check", "loraplus_groups", '"other": lr}', '"other": lr * ratio}'),  # PEFT's bias rule
    (CH6, "loraplus_groups_check", "loraplus_groups", NOT_FROZEN, ""),                      # frozen params included
    # batched Adam
    (CH6, "adam_step_check", "adam_step", "m_hat = m / (1 - b1 ** t)\n    v_hat = v / (1 - b2 ** t)",
     "m_hat = m\n    v_hat = v"),
    (CH6, "adam_step_check", "adam_step", "rate = lr.reshape((-1,) + (1,) * (param.ndim - 1))", "rate = lr.mean()"),
    (CH6, "adam_step_check", "adam_step", "(v_hat.sqrt() + eps)", "(v_hat + eps).sqrt()"),
    # the best ratio
    (CH6, "best_ratio_check", "best_ratio", "float(eta_B[j] / eta_A[i])", "float(eta_A[i] / eta_B[j])"),
    (CH6, "best_ratio_check", "best_ratio", "np.where(np.isnan(score), np.inf, np.asarray(score, dtype=float))"
     ".mean(axis=-1)", "np.nanmean(np.asarray(score, dtype=float), axis=-1)"),
    (CH6, "predicted_rate_exponents_check", "predicted_rate_exponents", '"eta_B": 0.0', '"eta_B": -0.5'),
    (CH6, "predicted_rate_exponents_check", "predicted_rate_exponents", '{"eta_A": -1.0, "eta_B": 0.0}',
     '{"eta_A": -0.5, "eta_B": -0.5}'),                                                      # one rate
    (CH6, "predicted_rate_exponents_check", "predicted_rate_exponents", '{"eta_A": -1.0, "eta_B": 0.0}',
     '{"eta_A": 0.0, "eta_B": -1.0}'),                                                       # swapped
]
PLANTED_05: Planted = [p[1:] for p in _PLANTED_05_06 if p[0] == CH5]
PLANTED_06: Planted = [p[1:] for p in _PLANTED_05_06 if p[0] == CH6]

PLANTED_07: Planted = [
    ("kappa_check", "solve_kappa_bisect", "if lhs(mid) > n:", "if lhs(mid) < n:"),
    ("kappa_check", "solve_kappa_bisect", "+ ridge / kappa", "+ ridge * kappa"),
    ("kappa_check", "solve_kappa_bisect", "return math.sqrt(lo * hi)", "return (lo + hi) / 2 * 1.01"),
    ("rf_pair_check", "solve_rf_pair", "return kappa_of(gamma), gamma", "return gamma, kappa_of(gamma)"),
    ("rf_pair_check", "solve_rf_pair", "(lam / (lam + gamma)).sum()) / k)", "(lam / (lam + gamma)).sum()) / n)"),
    ("rf_pair_check", "solve_rf_pair", "+ ridge / kap - n", "+ ridge * kap - n"),
    ("double_descent_check", "rf_simulation", "Phi = (X * eigvals.sqrt()) @ W.T", "Phi = X @ W.T"),
    ("double_descent_check", "rf_simulation", "return float(((beta - coeffs) ** 2).sum())",
     "return float(((Phi @ theta - y) ** 2).mean())"),
    ("double_descent_check", "rf_simulation", "    return n", "    return 2 * n"),
]

PLANTED_08: Planted = [
    ("intruders_check", "intruders", "torch.linalg.svd(W.double(), full_matrices=False)[0]",
     "torch.linalg.svd(W.double(), full_matrices=False)[2].T"),                      # right vectors
    ("intruders_check", "intruders", "(U.T @ U0).abs().max(dim=1)", "(U.T @ U0).max(dim=1)"),  # no |cos|
    ("intruders_check", "intruders", "(U.T @ U0)", "(U.T @ U0[:, :k])"),              # only the base's top k
    ("intruders_check", "intruders", 'return "full"', 'return "lora"'),
    ("weighted_rank_check", "weighted_rank", "evals.clamp(min=0).sqrt()", "evals.clamp(min=0)"),  # Sigma
    ("weighted_rank_check", "weighted_rank", "evals.clamp(min=0).sqrt()", "evals.sqrt()"),   # no clamp
    ("weighted_rank_check", "weighted_rank", "torch.cumsum(s ** 2, 0) / (s ** 2).sum()",
     "torch.cumsum(s, 0) / s.sum()"),                                                # sigma convention
    ("weighted_rank_check", "weighted_rank", 'return "smaller"', 'return "larger"'),
    ("mitigation_check", "mitigation", "idx = torch.nonzero(max_cos < eps).flatten()",
     "idx = torch.arange(len(max_cos))"),                                             # every top-k
    ("mitigation_check", "mitigation", "(lam - 1) * (U[:, idx]", "lam * (U[:, idx]"),
    ("mitigation_check", "mitigation", '{"source": "down", "target": "up"}', '{"source": "up", "target": "up"}'),
]

PLANTED_09: Planted = [
    ("hermite_check", "hermite_coefficients", " / math.sqrt(math.factorial(p))", ""),       # He_p not normalised
    ("hermite_check", "hermite_coefficients", "w = w / math.sqrt(2 * math.pi)", "w = w"),   # weights sum to sqrt(2 pi)
    ("ie_check", "predicted_ie", '"cube": 1', '"cube": 3'),
    ("ie_check", "predicted_ie", '"abs": 2', '"abs": 1'),
    ("ie_check", "predicted_ie", '"tanh_minus_linear": 3', '"tanh_minus_linear": 1'),
    ("sign_check", "predicted_sign", "h = float(setting.h(m0))", "h = float(setting.h(0.0))"),   # h(0), not h(m0)
    ("sign_check", "predicted_sign", "h = float(setting.h(m0))", "h = m0"),                      # the start's sign
    ("sign_check", "predicted_sign", "return 1 if h > 0 else -1", "return 1 if h < 0 else -1"),
    ("step_check", "sgd_step", "    grad = grad - (grad @ task.W.T) @ task.W\n", ""),              # no Pi_perp
    ("step_check", "sgd_step", "    grad = grad - (grad * u_hat).sum(-1, keepdim=True) * u_hat\n", ""),  # not tangent
    ("step_check", "sgd_step", "return new / new.norm(dim=-1, keepdim=True)", "return new"),     # off the sphere
    ("step_check", "sgd_step", "new = u_hat - lr * grad", "new = u_hat + lr * grad"),
    ("step_check", "sgd_step", "dldb = -2 * r", "dldb = -r"),
]

PLANTED_10: Planted = [
    ("ga_cosine_check", "ga_cosine", "energy[: 2 * r]", "energy[:r]"),                      # r, not 2r
    ("ga_cosine_check", "ga_cosine", "descending=True).values.square()", "descending=True).values"),  # no squares
    ("ga_cosine_check", "ga_cosine", "energy.sum()).sqrt())", "energy.sum()))"),            # no square root
    ("dora_forward_check", "dora_forward", "n = W.detach().norm(dim=1)", "n = W.norm(dim=1)"),   # not detached
    ("dora_forward_check", "dora_forward", "n = W.detach().norm(dim=1)", "n = W0.norm(dim=1)"),  # W0's norm
    ("dora_forward_check", "dora_forward", "n = W.detach().norm(dim=1)", "n = W.detach().norm(dim=0)"),
    ("pissa_gradient_check", "pissa_gradient", "A = S[:r].sqrt()[:, None] * Vh[:r]", "A = S[:r, None] * Vh[:r]"),
    ("pissa_gradient_check", "pissa_gradient", "return (W0 - W_star) @ A.T", "return (W_star - W0) @ A.T"),
    ("pissa_gradient_check", "pissa_gradient", "A = S[:r].sqrt()[:, None] * Vh[:r]",
     "A = S[:r].sqrt()[:, None] * U[:, :r].T"),
]

# chapter -> (its checks submodule, total points, planted mistakes)
CHAPTERS: dict[str, tuple[str, int, Planted]] = {
    "01_lora": ("lrkit.checks.lora", 14, PLANTED_01),
    "02_deep_linear": ("lrkit.checks.deep_linear", 9, PLANTED_02),
    "03_ssm": ("lrkit.checks.ssm", 10, PLANTED_03),
    "04_matrix_sensing": ("lrkit.checks.matrix_sensing", 12, PLANTED_04),
    "05_lora_init": ("lrkit.checks.lora_init", 11, PLANTED_05),
    "06_lora_plus": ("lrkit.checks.lora_plus", 9, PLANTED_06),
    "07_random_features": ("lrkit.checks.random_features", 10, PLANTED_07),
    "08_lora_forgetting": ("lrkit.checks.lora_forgetting", 10, PLANTED_08),
    "09_beyond_kernels": ("lrkit.checks.beyond_kernels", 12, PLANTED_09),
    "10_lora_variants": ("lrkit.checks.lora_variants", 9, PLANTED_10),
}
