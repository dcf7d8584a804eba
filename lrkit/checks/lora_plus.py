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

The last three live in :mod:`lrkit.checks.lora_plus_ratio` and are re-exported here.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Any

import torch
from torch import nn

from ..lora import add_lora, lora_layers
from ..optim import AdamState, batched_adam_step, loraplus_param_groups
from . import matches_variant
from .core import call, check_close, check_shape, fail, passed, private_rng, to_scalar
from .lora import toy_transformer_block
from .lora_plus_ratio import (
    PREDICTED_RATE_EXPONENTS,
    PREDICTED_RATIO_EXPONENT,
    check_best_ratio,
    check_predicted_rate_exponents,
    check_predicted_ratio_exponent,
)

__all__ = ["check_loraplus_groups", "check_adam_step", "check_best_ratio", "check_predicted_ratio_exponent",
           "check_predicted_rate_exponents", "PREDICTED_RATE_EXPONENTS", "PREDICTED_RATIO_EXPONENT"]

# Proposition prop-loraplus-efficient (lessons/06_lora_plus.ipynb): eta_A ~ 1/n, eta_B ~ 1, so rho* ~ n^1.


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
