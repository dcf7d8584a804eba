"""Chapters 5 and 6's checks accept lrkit's own answers on several seeds (no seed-dependent false alarm).

The exercise protocol itself (stubs fail, solutions pass, planted mistakes caught) runs for every
chapter in tests/test_exercises.py; the planted mistakes are in tests/planted.py.
"""

from __future__ import annotations

import pytest

import lrkit.checks.lora_init
import lrkit.checks.lora_plus

CH5, CH6 = "05_lora_init", "06_lora_plus"
CHAPTERS = (CH5, CH6)


@pytest.mark.parametrize("chapter", CHAPTERS)
def test_the_checks_pass_lrkit_itself_on_several_seeds(chapter: str) -> None:
    """The references accept their own answers whatever the seed: no seed-dependent false alarm."""
    import numpy as np
    import torch

    from lrkit import init, optim, sweep

    def init_pair(rank: int, in_features: int, out_features: int, init_name: str):
        A, B = torch.empty(rank, in_features), torch.empty(out_features, rank)
        init.init_lora_(A, B, torch.empty(0), 1.0, init_name)
        return A, B

    def adam(param, grad, m, v, t, lr):
        state = optim.AdamState(param)
        state.m, state.v, state.step = m.clone(), v.clone(), t - 1
        return optim.batched_adam_step(param, grad, state, lr), state.m, state.v

    def ratio(eta_A, eta_B, score):
        a, b, _ = sweep.best_pair(eta_A, eta_B, score)
        return b / a

    for seed in range(6):
        if chapter == CH5:
            c = lrkit.checks.lora_init
            c.check_init_pair(lambda rank, in_features, out_features, init: init_pair(
                rank, in_features, out_features, init), seed=seed)
            c.check_largest_stable_lr(lambda lrs, diverged: sweep.largest_stable_lr(lrs, np.asarray(diverged)), seed)
            c.check_fit_exponent(lambda widths, values: sweep.fit_exponent(widths, values).exponent, seed)
            c.check_predicted_exponents(lambda: {"A": -0.5, "B": -1.0}, seed)

            def terms(Z, A, B, A_next, B_next):
                d = sweep.step_terms(Z, A[None], B[None], A_next[None], B_next[None])
                return tuple(float(d[k][0]) for k in ("delta1", "delta2", "delta3"))

            c.check_delta_terms(terms, seed)
            c.check_predicted_term_exponents(lambda c=c: dict(c.PREDICTED_TERM_EXPONENTS), seed)
        else:
            c = lrkit.checks.lora_plus
            c.check_loraplus_groups(optim.loraplus_param_groups, seed)
            c.check_adam_step(adam, seed)
            c.check_best_ratio(ratio, seed)
            c.check_predicted_ratio_exponent(lambda: 1.0, seed)
            c.check_predicted_rate_exponents(lambda: {"eta_A": -1.0, "eta_B": 0.0}, seed)
