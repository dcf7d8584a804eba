"""Checks for Chapter 6's exercises (LoRA+); expected values come from :mod:`lrkit.optim` and :mod:`lrkit.sweep`.

* :func:`check_loraplus_groups`: ``fn(model, lr, ratio) -> groups``, LoRA+ optimiser parameter groups
  (:func:`lrkit.optim.loraplus_param_groups`);
* :func:`check_adam_step`: ``fn(param, grad, m, v, t, lr) -> (param, m, v)``, one Adam step for ``K``
  configurations with a learning rate each (:func:`lrkit.optim.batched_adam_step`, and
  ``torch.optim.Adam`` run on each configuration alone);
* :func:`check_best_ratio`: ``fn(eta_A, eta_B, score) -> rho*``, the best ratio on a grid of pairs
  (:func:`lrkit.sweep.best_pair`);
* :func:`check_predicted_ratio_exponent`: ``fn() -> p``, the predicted growth ``rho* ~ n^p``
  (Proposition ``prop-loraplus-efficient``);
* :func:`check_predicted_rate_exponents`: ``fn() -> {"eta_A": p_A, "eta_B": p_B}``, the best
  rates' predicted width exponents.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
import torch
from torch import nn

from ..lora import add_lora, lora_layers
from ..lr_scaling import best_pair
from ..optim import AdamState, batched_adam_step, loraplus_param_groups
from . import (
    as_number,
    call,
    check_close,
    check_shape,
    fail,
    known_mistake,
    matches_variant,
    passed,
    private_rng,
    to_scalar,
    toy_transformer_block,
)

__all__ = ["check_loraplus_groups", "check_adam_step", "check_best_ratio", "check_predicted_ratio_exponent",
           "check_predicted_rate_exponents"]

# Proposition prop-loraplus-efficient (lessons/06_lora_plus.ipynb): eta_A ~ 1/n, eta_B ~ 1, so rho* ~ n^1.
PREDICTED_RATIO_EXPONENT = 1.0


# --------------------------------------------------------------------------- LoRA+ groups


def _models(gen: torch.Generator) -> list[tuple[str, nn.Module]]:
    """Small models with lrkit adapters; one has a trainable bias and a trainable LayerNorm."""
    with private_rng(int(torch.randint(0, 2 ** 31 - 1, (1,), generator=gen))):  # learner's RNG kept
        mlp = add_lora(nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 4)), rank=2)
        block = add_lora(toy_transformer_block(16, 32), rank=4, targets=["q_proj", "v_proj", "down"])
    block.get_submodule("attn.k_proj").bias.requires_grad_(True)   # a bias trained alongside the adapters
    block.get_submodule("norm").weight.requires_grad_(True)         # and a norm's weight
    return [("a two-layer MLP with adapters on both layers", mlp),
            ("a transformer block with adapters on q_proj, v_proj, mlp.down, and a trainable k_proj bias "
             "and LayerNorm weight", block)]


def _rates(groups: Any, model: nn.Module, case: Mapping[str, Any], name: str) -> dict[int, float]:
    """``id(param) -> lr`` from the learner's groups, after checking their form."""
    form = "a list of dicts, each {'params': [tensors...], 'lr': float}"
    if not isinstance(groups, (list, tuple)) or not all(isinstance(g, Mapping) for g in groups):
        fail(f"{name} should return {form}", case=case, actual=groups, hint="torch optimisers accept such a list")
    rates: dict[int, float] = {}
    for g in groups:
        if "params" not in g or "lr" not in g:
            fail(f"every group needs the keys 'params' and 'lr', got {sorted(g)}", case=case, hint=form)
        params = [g["params"]] if isinstance(g["params"], torch.Tensor) else list(g["params"])
        for p in params:
            if id(p) in rates:
                fail("a parameter appears in two groups", case=case,
                     hint="each trainable parameter belongs to exactly one group (torch refuses duplicates)")
            rates[id(p)] = to_scalar(g["lr"])
    named = {id(p): n for n, p in model.named_parameters()}
    stray = [r for r in rates if r not in named]
    if stray:
        fail("a group holds a tensor that is not a parameter of the model", case=case,
             hint="put the model's own parameters in the groups (model.parameters()), not copies")
    frozen = sorted(named[i] for i in rates if not dict(model.named_parameters())[named[i]].requires_grad)
    if frozen:
        fail(f"frozen parameters are in the groups: {frozen[:4]}{' ...' if len(frozen) > 4 else ''}", case=case,
             hint="skip every parameter with requires_grad False: the base model is frozen")
    return rates


def check_loraplus_groups(fn: Callable[..., Any], seed: int = 0) -> None:
    """``fn(model, lr, ratio)``: optimiser groups giving every ``B`` the rate ``ratio * lr``, everything else ``lr``.

    Every trainable parameter must be in exactly one group, no frozen one in any; the rates must
    equal those of :func:`lrkit.optim.loraplus_param_groups`, and the groups must build a
    ``torch.optim.AdamW``.
    """
    gen = torch.Generator().manual_seed(seed)
    name = "loraplus_groups"
    for (what, model), (lr, ratio) in zip(_models(gen), ((1e-3, 16.0), (2e-4, 4.0 + float(torch.randint(
            0, 60, (1,), generator=gen))))):
        case = {"model": what, "lr": lr, "ratio": ratio}
        groups = call(lambda m=model, lr=lr, ratio=ratio, **_: fn(m, lr, ratio), case, name,
                      "lrkit.lora_layers(model) lists the adapters")
        rates = _rates(groups, model, case, name)
        expected = {id(p): g["lr"] for g in loraplus_param_groups(model, lr, ratio) for p in g["params"]}
        names = {id(p): n for n, p in model.named_parameters()}
        missing = sorted(names[i] for i in expected if i not in rates)
        if missing:
            fail(f"trainable parameters are missing from the groups: {missing[:4]}", case=case,
                 hint="every parameter with requires_grad True must be trained: put the ones that are "
                      "neither A nor B in a group of their own at lr")
        roles = {}
        for _, layer in lora_layers(model):
            roles[id(layer.A)], roles[id(layer.B)] = "A", "B"
        for pid, want in expected.items():
            got = rates[pid]
            if isinstance(got, (int, float)) and math.isclose(got, want, rel_tol=1e-9):
                continue
            role = roles.get(pid, "other")
            if role == "A" and math.isclose(got, lr * ratio, rel_tol=1e-9):
                hint = "the ratio is applied to A: LoRA+ speeds up B, eta_B = ratio * eta_A, and A keeps lr"
            elif role == "B" and math.isclose(got, lr / ratio, rel_tol=1e-9):
                hint = "B's rate is divided by the ratio: it is multiplied, eta_B = ratio * lr"
            elif role == "B" and math.isclose(got, lr, rel_tol=1e-9):
                hint = "B is not sped up: eta_B = ratio * lr"
            elif role == "other" and math.isclose(got, lr * ratio, rel_tol=1e-9):
                hint = ("only the adapters' B matrices are fast; a trainable bias or norm keeps lr (PEFT puts "
                        "every 1-D parameter in the fast group; lrkit and this exercise do not)")
            else:
                hint = "A and every other trainable parameter at lr, each adapter's B at ratio * lr"
            fail(f"the learning rate of {names[pid]} ({role if role != 'other' else 'not an adapter'}) is wrong",
                 case=case, expected=float(want), actual=got, hint=hint)
        try:
            torch.optim.AdamW(groups, lr=lr)
        except Exception as e:
            fail(f"torch.optim.AdamW(your groups, lr=lr) raised {type(e).__name__}: {e}", case=case,
                 hint="each group is {'params': [...], 'lr': ...} with a list of parameters")
    passed(name)


# --------------------------------------------------------------------------- batched Adam


def _adam_cases(gen: torch.Generator) -> list[dict[str, Any]]:
    def rnd(*shape: int, scale: float = 1.0) -> torch.Tensor:
        return scale * torch.randn(*shape, generator=gen)

    cases = [
        {"param": rnd(3, 4, 5), "grad": rnd(3, 4, 5), "m": torch.zeros(3, 4, 5), "v": torch.zeros(3, 4, 5),
         "t": 1, "lr": torch.tensor([1e-3, 1e-2, 1e-1])},
        {"param": rnd(2, 6), "grad": rnd(2, 6), "m": 0.1 * rnd(2, 6), "v": rnd(2, 6).square(), "t": 7,
         "lr": torch.tensor([0.5, 2e-3])},
        {"param": rnd(4, 2, 3), "grad": rnd(4, 2, 3, scale=1e-6), "m": torch.zeros(4, 2, 3),
         "v": torch.zeros(4, 2, 3), "t": 1, "lr": torch.tensor([1e-3, 1e-2, 1e-1, 1.0])},
    ]
    return cases


def _torch_adam_loop(param: torch.Tensor, grads: list[torch.Tensor], lr: torch.Tensor) -> torch.Tensor:
    """Configuration ``k`` trained alone by ``torch.optim.Adam(lr=lr[k])`` on the gradient sequence."""
    out = []
    for k in range(param.shape[0]):
        p = nn.Parameter(param[k].clone())
        opt = torch.optim.Adam([p], lr=float(lr[k]))
        for g in grads:
            p.grad = g[k].clone()
            opt.step()
        out.append(p.detach())
    return torch.stack(out)


def check_adam_step(fn: Callable[..., Any], seed: int = 0) -> None:
    """``fn(param, grad, m, v, t, lr)`` -> ``(param, m, v)`` after one Adam step, configuration ``k`` at ``lr[k]``.

    Shapes ``(K, ...)`` for ``param``, ``grad``, ``m``, ``v``; ``lr`` (K,); ``t`` the number of this step
    (1 for the first). Expected: :func:`lrkit.optim.batched_adam_step` with ``betas = (0.9, 0.999)``,
    ``eps = 1e-8``; then three steps in a row must match ``torch.optim.Adam`` run on each configuration.
    """
    gen = torch.Generator().manual_seed(seed)
    name = "adam_step"
    b1, b2, eps = 0.9, 0.999, 1e-8
    for case in _adam_cases(gen):
        state = AdamState(case["param"])
        state.m, state.v, state.step = case["m"].clone(), case["v"].clone(), case["t"] - 1
        expected = batched_adam_step(case["param"], case["grad"], state, case["lr"])
        out = call(fn, case, name, "lr has shape (K,): reshape it to (K, 1, ..., 1) to broadcast against param")
        if not (isinstance(out, tuple) and len(out) == 3):
            fail(f"{name} should return a triple (param, m, v)", case=case, actual=out)
        new_p, new_m, new_v = out
        for label, got, want in (("m", new_m, state.m), ("v", new_v, state.v)):
            check_shape(got, want.shape, f"{name}(...) {label}", "m and v have the shape of param", case)
            hint = ("m <- b1 m + (1 - b1) g" if label == "m" else "v <- b2 v + (1 - b2) g^2") + \
                " with the *new* gradient; return the updated moments"
            check_close(got, want, f"{name}(...) {label}", hint, case=case, rtol=1e-5, atol=1e-12)
        check_shape(new_p, expected.shape, f"{name}(...) param", "the new param has the shape of param", case)
        t, m, v, lr = case["t"], state.m, state.v, case["lr"]
        rate = lr.reshape((-1,) + (1,) * (case["param"].ndim - 1))
        m_hat, v_hat = m / (1 - b1 ** t), v / (1 - b2 ** t)
        hint = matches_variant(new_p, {
            "no bias correction: divide m by (1 - b1^t) and v by (1 - b2^t) (at t = 1 they are tiny)":
                case["param"] - rate * m / (v.sqrt() + eps),
            "each configuration has its own rate: lr[k] multiplies the update of param[k] only":
                case["param"] - lr.mean() * m_hat / (v_hat.sqrt() + eps),
            "eps is added to sqrt(v_hat), not inside the square root: with tiny gradients the difference "
            "is the whole update": case["param"] - rate * m_hat / (v_hat + eps).sqrt(),
        }) or "p <- p - lr[k] * m_hat / (sqrt(v_hat) + eps), m_hat = m / (1 - b1^t), v_hat = v / (1 - b2^t)"
        check_close(new_p, expected, f"{name}(...) param", hint, case=case, rtol=1e-5, atol=1e-7)
    # three steps in a row against torch.optim.Adam, one configuration at a time
    K = 3
    param = torch.randn(K, 5, 4, generator=gen)
    grads = [torch.randn(K, 5, 4, generator=gen) for _ in range(3)]
    lr = torch.tensor([1e-3, 3e-2, 0.3])
    p, m, v = param.clone(), torch.zeros_like(param), torch.zeros_like(param)
    for t, g in enumerate(grads, start=1):
        p, m, v = call(fn, {"param": p, "grad": g, "m": m, "v": v, "t": t, "lr": lr}, name)
    check_close(p, _torch_adam_loop(param, grads, lr), f"{name} after three steps (t = 1, 2, 3)",
                "each configuration must follow torch.optim.Adam(lr=lr[k]) run on it alone",
                case={"param": param, "lr": lr}, rtol=1e-5, atol=1e-6)
    passed(name)


# --------------------------------------------------------------------------- the best ratio


def _ratio_cases(gen: torch.Generator) -> list[dict[str, Any]]:
    grid = [10.0 ** (k / 2) for k in range(-6, 1)]                  # 1e-3 ... 1, steps of 10^(1/2)

    def bowl(eta_A: list[float], eta_B: list[float], a0: float, b0: float, seeds: int, noise: float) -> np.ndarray:
        la, lb = np.meshgrid(np.log10(eta_A), np.log10(eta_B), indexing="ij")
        base = 0.05 + (la - a0) ** 2 + 0.5 * (lb - b0) ** 2
        eps = noise * torch.rand(len(eta_A), len(eta_B), seeds, generator=gen, dtype=torch.float64).numpy()
        return base[..., None] * (1 + eps)

    L = len(grid)
    one = bowl(grid, grid, -2.0, -0.5, 1, 0.0)                        # eta_A* = 1e-2, eta_B* = 10^-0.5
    two = bowl(grid, grid, -2.5, -1.0, 2, 0.05)
    two[L - 1, :, 1] = np.nan                                         # the largest eta_A diverges for seed 1
    trap = bowl(grid, grid, -1.5, -0.5, 2, 0.0)
    trap[grid.index(10.0 ** -1.5), grid.index(10.0 ** -0.5)] = [0.01, np.nan]   # the best-looking pair diverged
    eta_A = [2.0 ** k for k in range(-12, -2)]                        # two different grids, eta_B a single value
    a0 = float(torch.empty(1).uniform_(-3, -1.5, generator=gen))
    rect = bowl(eta_A, [0.5, 1.0], a0, 0.0, 3, 0.1)
    column = bowl(eta_A, [0.3], a0 - 0.5, -0.5, 2, 0.1)
    return [{"eta_A": grid, "eta_B": grid, "score": one}, {"eta_A": grid, "eta_B": grid, "score": two},
            {"eta_A": grid, "eta_B": grid, "score": trap}, {"eta_A": eta_A, "eta_B": [0.5, 1.0], "score": rect},
            {"eta_A": eta_A, "eta_B": [0.3], "score": column}]


def _check_ratio(actual: Any, expected: float, name: str, hint: str, case: Mapping[str, Any]) -> None:
    """``actual`` must be a number equal to ``expected`` (relative 1e-9)."""
    actual = as_number(actual, name, case=case, hint=hint)
    if not math.isclose(actual, expected, rel_tol=1e-9, abs_tol=1e-12):
        fail(f"{name} is wrong", case=case, expected=float(expected), actual=float(actual), hint=hint)


def check_best_ratio(fn: Callable[..., Any], seed: int = 0) -> None:
    """``fn(eta_A, eta_B, score)``: ``eta_B* / eta_A*`` for the pair with the lowest seed-mean score.

    ``score[i, j, s]`` is seed ``s``'s score at ``eta_A[i]``, ``eta_B[j]``; NaN = diverged, and a pair
    where any seed diverged is excluded. Expected: from :func:`lrkit.sweep.best_pair`.
    """
    gen = torch.Generator().manual_seed(seed)
    name = "best_ratio"
    for case in _ratio_cases(gen):
        eta_A, eta_B, score = np.asarray(case["eta_A"]), np.asarray(case["eta_B"]), case["score"]
        a, b, _ = best_pair(eta_A, eta_B, score)
        expected = b / a
        actual = to_scalar(call(fn, case, name, "score has shape (len(eta_A), len(eta_B), seeds): "
                                                "axis 0 is eta_A, axis 1 is eta_B"))
        nan_mean = np.nanmean(score, axis=-1)
        i, j = np.unravel_index(int(np.nanargmin(nan_mean)), nan_mean.shape)
        variants = {
            "the ratio is inverted: rho = eta_B / eta_A, and B is the fast factor": a / b,
            "a pair where any seed diverged (NaN) must be excluded, not averaged over the seeds that survived: "
            "np.nanmean hides the divergence": float(eta_B[j] / eta_A[i]),
        }
        variants = {h: x for h, x in variants.items() if not math.isclose(x, expected, rel_tol=1e-9)}
        hint = known_mistake(actual, variants, rtol=1e-9, atol=1e-12) or (
            "average over seeds (axis -1), treat NaN as +inf, take the argmin over (i, j) and return "
            "eta_B[j] / eta_A[i]")
        _check_ratio(actual, expected, f"{name}(...)", hint, case)
    passed(name)


def check_predicted_ratio_exponent(fn: Callable[..., Any], seed: int = 0) -> None:
    """``fn()`` must return ``p`` in ``rho* ~ n^p`` as the efficiency argument of Chapter 6 predicts.

    ``seed`` is unused (every check takes one).
    """
    name = "predicted_ratio_exponent"
    value = as_number(call(fn, {}, name, "return a number"), f"{name}()")
    if math.isclose(value, PREDICTED_RATIO_EXPONENT, abs_tol=1e-9):
        passed(name)
        return
    if math.isclose(value, -PREDICTED_RATIO_EXPONENT, abs_tol=1e-9):
        hint = "eta_A shrinks like 1/n, but the ratio is eta_B / eta_A: it *grows* with width"
    elif math.isclose(value, 0.5, abs_tol=1e-9):
        hint = ("n^(-1/2) is Chapter 5's single stable rate; LoRA+ asks eta_B = Theta(1) and eta_A n = Theta(1) "
                "(both output terms of order 1): what is eta_B / eta_A then?")
    else:
        hint = ("efficient learning asks Delta B A_0 z ~ t eta_B and Delta B Delta A z ~ t eta_B * t eta_A n to "
                "be of order 1: solve for eta_A and eta_B as powers of n")
    fail(f"{name}() is not what the efficiency argument predicts", actual=value, hint=hint)


# Proposition prop-loraplus-efficient: eta_A* ~ n^-1 and eta_B* ~ n^0
PREDICTED_RATE_EXPONENTS: dict[str, float] = {"eta_A": -1.0, "eta_B": 0.0}


def check_predicted_rate_exponents(fn: Callable[..., Any], seed: int = 0) -> None:
    """``fn()`` -> ``{"eta_A": p_A, "eta_B": p_B}``: the best rates' width exponents under
    LoRA+'s efficiency conditions (Adam, Init[A]). ``seed`` is unused (every check takes one)."""
    name = "predicted_rate_exponents"
    out = call(fn, {}, name, "return a dict such as {'eta_A': ..., 'eta_B': ...}")
    if not (isinstance(out, Mapping) and set(out) == set(PREDICTED_RATE_EXPONENTS)):
        fail(f"{name}() should return a dict with the keys 'eta_A' and 'eta_B'", actual=out)
    got = {k: as_number(to_scalar(out[k]), f"{name}()[{k!r}]") for k in PREDICTED_RATE_EXPONENTS}
    if all(math.isclose(got[k], v, abs_tol=1e-9) for k, v in PREDICTED_RATE_EXPONENTS.items()):
        passed(name)
        return
    if all(math.isclose(v, -0.5, abs_tol=1e-9) for v in got.values()):
        hint = ("n^(-1/2) for both is Chapter 5's single stable rate, the compromise LoRA+ "
                "removes: which rate must keep delta2 = dB (A z) of order 1?")
    elif math.isclose(got["eta_A"], 0.0, abs_tol=1e-9) and math.isclose(got["eta_B"], -1.0,
                                                                        abs_tol=1e-9):
        hint = "the two are swapped: B is the fast factor, A reads the n-dimensional input"
    elif not math.isclose(got["eta_B"], 0.0, abs_tol=1e-9):
        hint = ("delta2 = dB (A z) with A z of order 1 is of order eta_B: for B to keep "
                "contributing at every width, eta_B must not shrink")
    else:
        hint = ("A's update moves A z by about eta_A n (coherent Adam steps); Z_A and "
                "delta1 stay of order 1 only if eta_A n does")
    fail(f"{name}() is not what the efficiency argument predicts", actual=out, hint=hint)
