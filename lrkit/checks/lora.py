"""Checks of Chapter 1's exercises (LoRA from scratch): ``from lrkit.checks import lora as checks``.

Each check compares the learner's function with :mod:`lrkit` on a few small cases and names the
usual mistakes (:func:`lrkit.checks.core.check_function`). Expected values come from ``LoRALinear``,
``add_lora``, :mod:`lrkit.rslora` and :mod:`lrkit.spectra`: a check never carries its own copy of
the algorithm it checks, and never draws from the learner's global random stream.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import nn

from ..data_rank import input_weighted
from ..lora import LoRALinear, add_lora, count_parameters, lora_scaling
from ..rslora import equivalent_config
from ..spectra import rank_for_energy
from .core import call, check_close, check_equal, check_function, check_shape, fail, known_mistake, passed, private_rng

__all__ = ["check_lora_init", "check_lora_forward", "check_merge", "check_param_count", "check_rslora_scaling",
           "check_energy_rank", "check_equivalent_config", "check_data_rank", "toy_transformer_block"]


def _linear(in_f: int, out_f: int, gen: torch.Generator, bias: bool = True) -> nn.Linear:
    with private_rng():
        layer = nn.Linear(in_f, out_f, bias=bias)
    with torch.no_grad():
        layer.weight.copy_(torch.randn(out_f, in_f, generator=gen))
        if bias:
            layer.bias.copy_(torch.randn(out_f, generator=gen))
    return layer


def _reference(base: nn.Linear, A: torch.Tensor, B: torch.Tensor, alpha: float, rslora: bool = False,
               dropout: nn.Module | None = None) -> LoRALinear:
    """``lrkit.LoRALinear`` on a copy of ``base`` with the given factors (the reference)."""
    with private_rng():
        ref = LoRALinear(copy.deepcopy(base), A.shape[0], alpha=alpha, rslora=rslora)
    with torch.no_grad():
        ref.A.copy_(A)
        ref.B.copy_(B)
    if dropout is not None:
        ref.dropout = dropout
    return ref


def _lora_case(gen: torch.Generator, in_f: int, out_f: int, rank: int, alpha: float, batch: tuple[int, ...],
               bias: bool = True) -> dict[str, Any]:
    return {"x": torch.randn(*batch, in_f, generator=gen), "base": _linear(in_f, out_f, gen, bias),
            "A": torch.randn(rank, in_f, generator=gen), "B": torch.randn(out_f, rank, generator=gen),
            "alpha": alpha}


def check_lora_init(init_fn: Callable[..., Any], seed: int = 0) -> None:
    """``init_fn(base, rank) -> (A, B)``: PEFT's default (Init[A]), A (r, in) ~ U(+-1/sqrt(in)), B (out, r) = 0."""
    gen = torch.Generator().manual_seed(seed)
    for in_f, out_f, rank in ((7, 5, 2), (256, 96, 16)):
        base = _linear(in_f, out_f, gen)
        case = {"base": base, "rank": rank}
        out = call(init_fn, case, "init_lora")
        if not (isinstance(out, tuple) and len(out) == 2):
            fail("init_lora should return a pair (A, B)", case=case, actual=out)
        A, B = out
        for name, p, shape in (("A", A, (rank, in_f)), ("B", B, (out_f, rank))):
            check_shape(p, shape, name, f"A is (r, in) = {(rank, in_f)}, B is (out, r) = {(out_f, rank)}", case)
            if not (isinstance(p, nn.Parameter) and p.requires_grad):
                fail(f"{name} should be a trainable nn.Parameter", case=case,
                     hint="wrap each factor in nn.Parameter; only A and B are trained")
        if bool(B.detach().abs().max() > 0):
            fail("B should start at zero, so that the adapted model equals the pretrained one at step 0",
                 case=case, actual=B, hint="which of the two factors must vanish for B @ A = 0?")
        bound, a = 1.0 / math.sqrt(in_f), A.detach()
        if bool((a.abs() > bound + 1e-6).any()) or (a.numel() >= 1000 and a.abs().max() < 0.5 * bound):
            fail(f"A should be uniform on (-1/sqrt(in), 1/sqrt(in)) = (-{bound:.3g}, {bound:.3g})", case=case,
                 actual=A, detail=f"your largest |A| entry is {a.abs().max().item():.3g}",
                 hint="PEFT draws A with nn.init.kaiming_uniform_ and the negative slope a = sqrt(5)")
        if a.numel() >= 1000 and abs(a.std().item() - bound / math.sqrt(3)) > 0.15 * bound / math.sqrt(3):
            fail("A's entries do not look uniformly spread over (-1/sqrt(in), 1/sqrt(in))", case=case,
                 detail=f"std of A: yours {a.std().item():.3g}, expected about {bound / math.sqrt(3):.3g}",
                 hint="a uniform draw on (-b, b) has standard deviation b / sqrt(3)")
    passed("init_lora")


def check_lora_forward(forward_fn: Callable[..., Any], seed: int = 0) -> None:
    """``forward_fn(x, base, A, B, alpha, dropout=None)``: ``base(x) + (alpha / r) dropout(x) A^T B^T``.

    Checked against ``lrkit.LoRALinear`` with and without bias, batched inputs, and dropout in
    eval and in training mode (``B != 0``, the same seeded mask for learner and reference).
    """
    gen = torch.Generator().manual_seed(seed)
    cases = [_lora_case(gen, 5, 3, 2, 4.0, (4,)), _lora_case(gen, 6, 9, 3, 1.5, (2, 3), bias=False),
             _lora_case(gen, 8, 8, 4, 16.0, (5,))]
    for p, train in ((0.5, False), (0.5, True)):
        case = _lora_case(gen, 6, 4, 2, 2.0, (8,))
        case["dropout"] = nn.Dropout(p).train(train)
        cases.append(case)

    def reference(x: torch.Tensor, base: nn.Linear, A: torch.Tensor, B: torch.Tensor, alpha: float,
                  dropout: nn.Module | None = None) -> torch.Tensor:
        out: torch.Tensor = _reference(base, A, B, alpha, dropout=dropout)(x).detach()
        return out

    def scaled_by_alpha(x, base, A, B, alpha, dropout=None):  # type: ignore[no-untyped-def]
        return reference(x, base, A, B, alpha * A.shape[0], dropout)

    def no_adapter(x, base, A, B, alpha, dropout=None):  # type: ignore[no-untyped-def]
        return base(x).detach()

    def no_bias(x, base, A, B, alpha, dropout=None):  # type: ignore[no-untyped-def]
        out = reference(x, base, A, B, alpha, dropout)
        return out if base.bias is None else out - base.bias.detach()

    def ignores_dropout(x, base, A, B, alpha, dropout=None):  # type: ignore[no-untyped-def]
        return reference(x, base, A, B, alpha)

    def dropout_everywhere(x, base, A, B, alpha, dropout=None):  # type: ignore[no-untyped-def]
        h = dropout(x) if dropout is not None else x
        return (base(h) + alpha / A.shape[0] * (h @ A.T) @ B.T).detach()

    mistakes = {
        "the output is scaled by alpha; PEFT scales the adapter by alpha / r": scaled_by_alpha,
        "the adapter term is missing: add (alpha / r) * (adapter output) to base(x)": no_adapter,
        "the base layer's bias is missing: start from base(x), which includes it": no_bias,
        "the dropout module is never applied: in training mode it must act on the adapter's input":
            ignores_dropout,
        "dropout reached the frozen path: PEFT applies it to the adapter's input only": dropout_everywhere,
    }
    check_function(forward_fn, reference, cases, name="lora_forward",
                   hint="y = base(x) + (alpha / r) * (h @ A.T) @ B.T with h the (dropped-out) input",
                   mistakes=mistakes, seed=seed + 1000)


def check_merge(merge_fn: Callable[..., Any], unmerge_fn: Callable[..., Any], seed: int = 0) -> None:
    """``merge_fn(W0, A, B, alpha) -> W0 + (alpha/r) B A`` (as ``LoRALinear.merge()``); ``unmerge_fn`` undoes it."""
    gen = torch.Generator().manual_seed(seed)
    for in_f, out_f, rank, alpha in ((5, 3, 2, 4.0), (7, 10, 3, 1.0)):
        base = _linear(in_f, out_f, gen)
        A, B = torch.randn(rank, in_f, generator=gen), torch.randn(out_f, rank, generator=gen)
        ref = _reference(base, A, B, alpha)
        ref.merge()
        expected = ref.base.weight.detach().clone()
        W0 = base.weight.detach().clone()
        case = {"W0": W0, "A": A, "B": B, "alpha": alpha}
        merged = call(merge_fn, case, "merge_weight")
        hint = known_mistake(merged, {
            "the update is missing its scaling alpha / r": W0 + B @ A,
            "the update is subtracted; merging adds it": 2 * W0 - expected,
        }) or "the merged weight is W0 plus the adapter's update, scaled as in the forward pass"
        check_close(merged, expected, "merge_weight(...)", hint, case=case)
        w0 = W0.clone()
        merge_fn(w0, A.clone(), B.clone(), alpha)
        if not torch.equal(w0, W0):
            fail("merge_weight modified W0 in place", case=case, hint="return a new tensor (W0 + ...), not W0 += ...")
        back_case = {"W": expected, "A": A, "B": B, "alpha": alpha}
        check_close(call(unmerge_fn, back_case, "unmerge_weight"), W0, "unmerge_weight(merge_weight(W0, ...))",
                    "unmerging subtracts the same (alpha / r) * B @ A that merging added", case=back_case)
    passed("merge_weight and unmerge_weight")


def toy_transformer_block(d_model: int = 16, d_ff: int = 64, seed: int = 0) -> nn.Module:
    """A small model with PEFT-style names: ``attn.{q,k,v,o}_proj``, ``mlp.{up,down}``, a norm (seeded)."""
    with private_rng(seed):
        attn = nn.ModuleDict({n: nn.Linear(d_model, d_model) for n in ("q_proj", "k_proj", "v_proj", "o_proj")})
        mlp = nn.ModuleDict({"up": nn.Linear(d_model, d_ff), "down": nn.Linear(d_ff, d_model)})
        return nn.ModuleDict({"norm": nn.LayerNorm(d_model), "attn": attn, "mlp": mlp})


def _reference_count(model: nn.Module, rank: int, targets: Sequence[str] | None) -> int:
    with private_rng():
        return count_parameters(add_lora(copy.deepcopy(model), rank, targets=targets))


def check_param_count(count_fn: Callable[..., Any], seed: int = 0) -> None:
    """``count_fn(model, rank, targets) -> int``: ``sum over targeted nn.Linear of r (in + out)``."""
    gen = torch.Generator().manual_seed(seed)
    d_model, d_ff = [(16, 64), (8, 24), (12, 40)][int(torch.randint(3, (1,), generator=gen))]
    model = toy_transformer_block(d_model, d_ff, seed=seed)
    frozen = count_parameters(model, trainable_only=False)
    for rank, targets in ((4, ["q_proj", "v_proj"]), (1, None), (2, ["up", "down"]), (8, ["o_proj"])):
        case = {"model": model, "rank": rank, "targets": targets}
        expected = _reference_count(model, rank, targets)
        actual = call(count_fn, case, "count_lora_params")
        hint = known_mistake(actual, {
            "one adapter has A (r, in) and B (out, r): r * (in + out) parameters, counted once": 2 * expected,
            "count both factors: A is (r, in) and B is (out, r)": expected // 2,
            "count only the adapters: the base model is frozen, its parameters are not trainable": expected + frozen,
            "only the nn.Linear layers named in targets (exact name or '.'-suffix) get an adapter":
                _reference_count(model, rank, None) if targets is not None else -1,
        }) if isinstance(actual, int) and not isinstance(actual, bool) else None
        check_equal(actual, expected, "count_lora_params(...)",
                    hint or "sum r * (in_features + out_features) over the targeted nn.Linear layers", case)
    passed("count_lora_params")


def check_rslora_scaling(scaling_fn: Callable[..., Any], seed: int = 0) -> None:
    """``scaling_fn(alpha, rank, rslora=False)``: ``alpha / r``, or ``alpha / sqrt(r)`` (``lrkit.lora_scaling``)."""
    gen = torch.Generator().manual_seed(seed)
    ranks = [1, 4, 16, 64, int(torch.randint(2, 64, (1,), generator=gen))]
    cases = [{"alpha": a, "rank": r, "rslora": f} for r in ranks for a in (float(r), 16.0) for f in (False, True)]
    check_function(scaling_fn, lora_scaling, cases, name="lora_scaling", hint=(
        "standard LoRA divides alpha by r; rsLoRA (Kalajdzievski 2023) divides by sqrt(r)"), mistakes={
        "rslora=True is ignored: rsLoRA divides alpha by sqrt(r)": lambda alpha, rank, rslora: alpha / rank,
        "standard LoRA divides alpha by r": lambda alpha, rank, rslora: alpha,
        "rsLoRA takes the square root of r only, not of alpha / r":
            lambda alpha, rank, rslora: math.sqrt(alpha / rank) if rslora else alpha / rank})


def _diag(values: Sequence[float], shape: tuple[int, int]) -> torch.Tensor:
    m = torch.zeros(shape, dtype=torch.float64)
    m[range(len(values)), range(len(values))] = torch.tensor(values, dtype=torch.float64)
    return m


def check_energy_rank(rank_fn: Callable[..., Any], seed: int = 0) -> None:
    """``rank_fn(delta, frac)``: smallest ``k`` with ``sum_{i<=k} s_i^2 >= frac sum_i s_i^2`` (``rank_for_energy``)."""
    gen = torch.Generator().manual_seed(seed)
    cases = [
        {"delta": _diag([3.0, 2.0, 1.0], (3, 3)), "frac": 0.9},
        {"delta": _diag([1.0, 1.0, 1.0, 1.0], (4, 6)), "frac": 0.5},
        {"delta": _diag([4.0, 3.0, 1.0, 0.5], (5, 4)), "frac": 0.9},
        {"delta": torch.randn(12, 1, generator=gen) @ torch.randn(1, 9, generator=gen), "frac": 0.99},
        {"delta": torch.randn(10, 7, generator=gen) @ torch.diag(0.6 ** torch.arange(7.0)), "frac": 0.9},
    ]
    check_function(rank_fn, lambda delta, frac: rank_for_energy(delta, frac), cases, name="energy_rank", exact=True,
                   hint="k counts singular values (k >= 1); energy is the sum of *squared* singular values")


def check_equivalent_config(fn: Callable[..., Any], seed: int = 0) -> None:
    """``fn(s_from, s_to, lr, optimizer) -> (lr', c)``: the exact reparametrisation (``rslora.equivalent_config``)."""
    gen = torch.Generator().manual_seed(seed)
    cases = [{"s_from": sf, "s_to": st, "lr": lr, "optimizer": opt}
             for sf, st in ((2.0, 0.5), (1.0, 8.0), (float(torch.rand(1, generator=gen)) + 0.1, 3.0))
             for lr, opt in ((0.01, "sgd"), (0.002, "adam"))]

    def rate_only(s_from, s_to, lr, optimizer):  # type: ignore[no-untyped-def]
        return equivalent_config(s_from, s_to, lr, optimizer)[0], 1.0

    def adam_like_gd(s_from, s_to, lr, optimizer):  # type: ignore[no-untyped-def]
        return lr * s_from / s_to, math.sqrt(s_from / s_to)

    def inverted(s_from, s_to, lr, optimizer):  # type: ignore[no-untyped-def]
        return equivalent_config(s_to, s_from, lr, optimizer)

    check_function(fn, equivalent_config, cases, name="equivalent_config", rtol=1e-6, mistakes={
        "the rate is right but the start is not: B' = sqrt(s) B and A' = sqrt(s) A rescale A0 too": rate_only,
        "Adam ignores a gradient's scale: only one factor sqrt(s) reaches its step, not s": adam_like_gd,
        "the ratio is upside down: a smaller scale needs a larger rate": inverted,
    }, hint="write one step on (A, B) as a step on A' = sqrt(s) A, B' = sqrt(s) B")


def check_data_rank(fn: Callable[..., Any], seed: int = 0) -> None:
    """``fn(delta, inputs, frac) -> int``: ``rank_for_energy(delta Sigma^(1/2), frac)``.

    ``Sigma = inputs^T inputs / N``, the second moment of the layer's inputs (N, in).
    """
    gen = torch.Generator().manual_seed(seed)
    cases = []
    for out_f, in_f, span, frac in ((6, 8, 3, 0.9), (10, 12, 5, 0.99), (7, 7, 7, 0.9)):
        basis = torch.randn(in_f, span, generator=gen, dtype=torch.float64)
        inputs = torch.randn(200, span, generator=gen, dtype=torch.float64) @ basis.T
        cases.append({"delta": torch.randn(out_f, in_f, generator=gen, dtype=torch.float64), "inputs": inputs,
                      "frac": frac})

    def reference(delta, inputs, frac):  # type: ignore[no-untyped-def]
        return rank_for_energy(input_weighted(delta, inputs), frac)

    def raw(delta, inputs, frac):  # type: ignore[no-untyped-def]
        return rank_for_energy(delta, frac)

    def full_sigma(delta, inputs, frac):  # type: ignore[no-untyped-def]
        return rank_for_energy(delta @ (inputs.T @ inputs / inputs.shape[0]), frac)

    check_function(fn, reference, cases, name="data_rank", exact=True, mistakes={
        "this is the raw rank of delta: weigh it by the inputs first (delta @ Sigma^(1/2))": raw,
        "Sigma weighs the energy twice: E||delta h||^2 needs its square root": full_sigma,
    }, hint="E ||delta h||^2 = ||delta Sigma^(1/2)||_F^2: take the energy rank of delta Sigma^(1/2)")
