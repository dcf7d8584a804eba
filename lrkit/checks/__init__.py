"""Checks that exercise cells call: they say *what* is wrong, not just that something is.

Every failed check raises :class:`CheckFailed` (an ``AssertionError``) whose message
names the quantity, shows a small input on which the learner's code disagrees,
the expected and the actual value, and a hint. A learner's ``NotImplementedError``
(the stub of an exercise not yet done) passes through untouched, so the learner
sees "not implemented yet" rather than a confusing failure.

The expected values always come from :mod:`lrkit` itself (``LoRALinear``,
``add_lora``, :mod:`lrkit.spectra`): a check never carries its own copy of the
algorithm it checks.

Generic checks: :func:`check_shape`, :func:`check_close`, :func:`check_equal`,
:func:`check_function`. LoRA checks (Chapter 1): :func:`check_lora_init`,
:func:`check_lora_forward`, :func:`check_merge`, :func:`check_param_count`,
:func:`check_rslora_scaling`, :func:`check_energy_rank`.
"""

from __future__ import annotations

import copy
import math
from typing import Any, Callable, Mapping, NoReturn, Sequence

import numpy as np
import torch
from torch import nn

from ..lora import LoRALinear, add_lora, count_parameters
from ..spectra import rank_for_energy

Case = Mapping[str, Any]

__all__ = [
    "CheckFailed", "check_shape", "check_close", "check_equal", "check_function", "check_lora_init",
    "check_lora_forward", "check_merge", "check_param_count", "check_rslora_scaling", "check_energy_rank",
    "toy_transformer_block",
]


class CheckFailed(AssertionError):
    """A check failed; the message is written for the learner (what, input, expected, actual, hint)."""


# --------------------------------------------------------------------------- messages


def describe(value: Any, max_items: int = 6) -> str:
    """A short description of ``value``: tensors show shape, dtype and a few entries."""
    if isinstance(value, nn.Module):
        text = repr(value)
        if "\n" not in text and len(text) <= 120:
            return text + ("" if value.training else " in eval mode")
        return f"{type(value).__name__} module ({count_parameters(value, trainable_only=False)} parameters)"
    if isinstance(value, torch.Tensor):
        t = value.detach()
        head = f"tensor of shape {tuple(t.shape)}, dtype {str(t.dtype).replace('torch.', '')}"
        if t.numel() == 0:
            return head
        flat = t.flatten()[:max_items].tolist()
        more = ", ..." if t.numel() > max_items else ""
        return f"{head}: [{', '.join(_fmt_number(v) for v in flat)}{more}]"
    if isinstance(value, float):
        return _fmt_number(value)
    text = repr(value)
    return text if len(text) <= 120 else text[:117] + "..."


def _fmt_number(v: Any) -> str:
    return f"{v:.6g}" if isinstance(v, float) else repr(v)


def _describe_case(case: Case | None) -> str:
    if not case:
        return ""
    return "\n".join(f"      {k} = {describe(v)}" for k, v in case.items())


def fail(what: str, *, case: Case | None = None, expected: Any = None, actual: Any = None,
         hint: str | None = None, detail: str | None = None) -> NoReturn:
    """Raise :class:`CheckFailed` with a multi-line message; ``None`` parts are left out."""
    lines = [f"✗ {what}"]
    if case:
        lines += ["  on the input:", _describe_case(case)]
    if expected is not None:
        lines.append(f"  expected: {describe(expected)}")
    if actual is not None:
        lines.append(f"  actual:   {describe(actual)}")
    if detail:
        lines.append(f"  {detail}")
    if hint:
        lines.append(f"  hint: {hint}")
    raise CheckFailed("\n".join(lines))


def passed(name: str) -> None:
    """Tell the learner a check passed."""
    print(f"✓ {name}: all checks passed")


# --------------------------------------------------------------------------- generic checks


def check_shape(actual: Any, expected_shape: Sequence[int], name: str = "result", hint: str | None = None,
                case: Case | None = None) -> None:
    """``actual`` must be a tensor of shape ``expected_shape``."""
    if not isinstance(actual, torch.Tensor):
        fail(f"{name} should be a torch.Tensor, got {type(actual).__name__}", case=case, actual=actual, hint=hint)
    if tuple(actual.shape) != tuple(expected_shape):
        fail(f"{name} has the wrong shape: expected {tuple(expected_shape)}, got {tuple(actual.shape)}",
             case=case, hint=hint)


def to_scalar(value: Any) -> Any:
    """A 1-element tensor or a NumPy scalar as a Python number; anything else unchanged."""
    if isinstance(value, torch.Tensor) and value.numel() == 1:
        return value.item()
    if isinstance(value, np.generic) and np.ndim(value) == 0:
        return value.item()
    return value


def as_number(value: Any, name: str, *, case: Case | None = None, hint: str | None = None,
              finite: bool = False) -> float:
    """``value`` as a float (1-element tensors and NumPy scalars count), or a failure that says what came back."""
    value = to_scalar(value)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        fail(f"{name} should be a number, got {type(value).__name__}", case=case, actual=value, hint=hint)
    if finite and not math.isfinite(value):
        fail(f"{name} should be a finite number, got {value}", case=case, actual=value, hint=hint)
    return float(value)


def check_close(actual: Any, expected: torch.Tensor | float, name: str = "result", hint: str | None = None, *,
                case: Case | None = None, rtol: float = 1e-5, atol: float = 1e-6) -> None:
    """``actual`` must equal ``expected`` (a tensor or a number) to ``rtol``/``atol``."""
    if not isinstance(expected, torch.Tensor):
        actual = as_number(actual, name, case=case, hint=hint)
        if not math.isclose(actual, expected, rel_tol=rtol, abs_tol=atol):
            fail(f"{name} is wrong", case=case, expected=float(expected), actual=float(actual), hint=hint)
        return
    check_shape(actual, expected.shape, name, hint, case)
    a, e = actual.detach().to(torch.float64), expected.detach().to(torch.float64)
    if not torch.isfinite(a).all():
        fail(f"{name} contains NaN or inf", case=case, actual=actual, hint=hint)
    err = (a - e).abs()
    if bool((err > atol + rtol * e.abs()).any()):
        worst = tuple(int(i) for i in torch.unravel_index(err.argmax(), err.shape))
        fail(f"{name} has the right shape but the wrong values", case=case, expected=expected, actual=actual,
             detail=f"largest difference {err.max().item():.3g} at index {worst}", hint=hint)


def check_equal(actual: Any, expected: Any, name: str = "result", hint: str | None = None,
                case: Case | None = None) -> None:
    """``actual == expected`` for plain values such as integers."""
    if isinstance(actual, torch.Tensor) and actual.numel() == 1:
        actual = actual.item()
    if type(expected) is int and (isinstance(actual, bool) or not isinstance(actual, int)):
        fail(f"{name} should be an int, got {type(actual).__name__}", case=case, actual=actual, hint=hint)
    if actual != expected:
        fail(f"{name} is wrong", case=case, expected=expected, actual=actual, hint=hint)


def call(fn: Callable[..., Any], case: Case, name: str,
         hint: str = "read the shapes in the docstring; check every matrix product's inner dimensions") -> Any:
    """Call the learner's ``fn(**case)``: ``NotImplementedError`` passes through, other errors teach."""
    try:
        return fn(**copy.deepcopy(dict(case)))
    except NotImplementedError:
        raise
    except Exception as e:  # the learner's code failed: show on what
        fail(f"{name} raised {type(e).__name__}: {e}", case=case, hint=hint)


def check_function(student_fn: Callable[..., Any], reference_fn: Callable[..., Any], cases: Sequence[Case],
                   name: str | None = None, hint: str | None = None, exact: bool = False,
                   rtol: float = 1e-5, atol: float = 1e-6) -> None:
    """``student_fn(**case)`` must agree with ``reference_fn(**case)`` on every case."""
    name = name or getattr(student_fn, "__name__", "your function")
    for case in cases:
        expected = reference_fn(**copy.deepcopy(dict(case)))
        actual = call(student_fn, case, name)
        if exact:
            check_equal(actual, expected, f"{name}(...)", hint, case)
        else:
            check_close(actual, expected, f"{name}(...)", hint, case=case, rtol=rtol, atol=atol)
    passed(name)


# --------------------------------------------------------------------------- LoRA helpers


def _linear(in_features: int, out_features: int, gen: torch.Generator, bias: bool = True) -> nn.Linear:
    layer = nn.Linear(in_features, out_features, bias=bias)
    with torch.no_grad():
        layer.weight.copy_(torch.randn(out_features, in_features, generator=gen))
        if bias:
            layer.bias.copy_(torch.randn(out_features, generator=gen))
    return layer


def _reference_layer(base: nn.Linear, A: torch.Tensor, B: torch.Tensor, alpha: float,
                     rslora: bool = False) -> LoRALinear:
    """``lrkit.LoRALinear`` on a copy of ``base`` with the given factors (the reference)."""
    ref = LoRALinear(copy.deepcopy(base), A.shape[0], alpha=alpha, rslora=rslora)
    with torch.no_grad():
        ref.A.copy_(A)
        ref.B.copy_(B)
    return ref.eval()


def _lora_case(gen: torch.Generator, in_f: int, out_f: int, rank: int, alpha: float, batch: tuple[int, ...],
               bias: bool = True) -> dict[str, Any]:
    return {"x": torch.randn(*batch, in_f, generator=gen), "base": _linear(in_f, out_f, gen, bias),
            "A": torch.randn(rank, in_f, generator=gen), "B": torch.randn(out_f, rank, generator=gen),
            "alpha": alpha}


def _matches_variant(actual: Any, variants: Mapping[str, torch.Tensor]) -> str | None:
    """The hint of the first known mistake whose output ``actual`` reproduces, if any."""
    if not isinstance(actual, torch.Tensor):
        return None
    for hint, value in variants.items():
        if actual.shape == value.shape and torch.allclose(actual.detach().double(), value.double(), atol=1e-5):
            return hint
    return None


# --------------------------------------------------------------------------- LoRA checks


def check_lora_init(init_fn: Callable[..., Any], seed: int = 0) -> None:
    """``init_fn(base, rank) -> (A, B)`` must follow PEFT's default (Init[A]).

    ``A``: shape ``(r, in)``, Kaiming-uniform with ``a = sqrt(5)``, i.e. ``U(-1/sqrt(in), 1/sqrt(in))``;
    ``B``: shape ``(out, r)``, zero; both trainable ``nn.Parameter``s.
    """
    gen = torch.Generator().manual_seed(seed)
    for in_f, out_f, rank in ((7, 5, 2), (256, 96, 16)):
        base = _linear(in_f, out_f, gen)
        ref = LoRALinear(copy.deepcopy(base), rank)  # the PEFT-default reference
        case = {"base": base, "rank": rank}
        out = call(init_fn, case, "init_lora")
        if not (isinstance(out, tuple) and len(out) == 2):
            fail("init_lora should return a pair (A, B)", case=case, actual=out)
        A, B = out
        for name, p, shape in (("A", A, ref.A.shape), ("B", B, ref.B.shape)):
            check_shape(p, shape, name, f"A is (r, in) = {tuple(ref.A.shape)}, B is (out, r) = "
                                        f"{tuple(ref.B.shape)}", case)
            if not (isinstance(p, nn.Parameter) and p.requires_grad):
                fail(f"{name} should be a trainable nn.Parameter", case=case,
                     hint=f"wrap it: {name} = nn.Parameter(tensor); only A and B are trained")
        if not torch.equal(B.detach(), ref.B.detach()):
            fail("B should start at zero, so that the adapted model equals the pretrained one at step 0",
                 case=case, expected=ref.B, actual=B, hint="B = nn.Parameter(torch.zeros(out, r))")
        bound = 1.0 / math.sqrt(in_f)  # Kaiming-uniform with a = sqrt(5): gain sqrt(1/3) * sqrt(3 / in)
        a = A.detach()
        if bool((a.abs() > bound + 1e-6).any()) or (a.numel() >= 1000 and a.abs().max() < 0.5 * bound):
            fail(f"A should be uniform on (-1/sqrt(in), 1/sqrt(in)) = (-{bound:.3g}, {bound:.3g})", case=case,
                 actual=A, detail=f"your largest |A| entry is {a.abs().max().item():.3g}",
                 hint="nn.init.kaiming_uniform_(A, a=math.sqrt(5)), as PEFT (and LoRALinear) do")
        if a.numel() >= 1000 and abs(a.std().item() - ref.A.detach().std().item()) > 0.15 * bound / math.sqrt(3):
            fail("A's entries do not look uniformly spread over (-1/sqrt(in), 1/sqrt(in))", case=case,
                 detail=f"std of A: yours {a.std().item():.3g}, expected about {bound / math.sqrt(3):.3g}",
                 hint="nn.init.kaiming_uniform_(A, a=math.sqrt(5))")
    passed("init_lora")


def check_lora_forward(forward_fn: Callable[..., Any], seed: int = 0) -> None:
    """``forward_fn(x, base, A, B, alpha, dropout=None)`` must compute PEFT's LoRA output.

    ``y = base(x) + (alpha / r) * dropout(x) A^T B^T`` with ``r = A.shape[0]``; checked against
    ``lrkit.LoRALinear`` on the same weights, with and without bias, for batched inputs, and
    with dropout applied to the adapter's input only.
    """
    gen = torch.Generator().manual_seed(seed)
    name = "lora_forward"
    cases = [_lora_case(gen, 5, 3, 2, 4.0, (4,)), _lora_case(gen, 6, 9, 3, 1.5, (2, 3), bias=False),
             _lora_case(gen, 8, 8, 4, 16.0, (5,))]
    for case in cases:
        ref = _reference_layer(case["base"], case["A"], case["B"], case["alpha"])
        r = case["A"].shape[0]
        with torch.no_grad():
            expected = ref(case["x"])
            variants = {
                "the output is scaled by alpha; PEFT scales the adapter by alpha / r":
                    _reference_layer(case["base"], case["A"], case["B"], case["alpha"] * r)(case["x"]),
                "the adapter term is missing: add (alpha / r) * x A^T B^T to base(x)": case["base"](case["x"]),
            }
            if case["base"].bias is not None:
                variants["the base layer's bias is missing: start from base(x), which includes it"] = \
                    expected - case["base"].bias
        actual = call(forward_fn, case, name, "A is (r, in) and B is (out, r): the adapter term is "
                                              "x @ A.T @ B.T (read it right to left: B A x)")
        check_shape(actual, expected.shape, f"{name}(...)", "the output has the base layer's shape (..., out)", case)
        check_close(actual, expected, f"{name}(...)",
                    _matches_variant(actual, variants) or "y = base(x) + (alpha / r) * (x @ A.T) @ B.T", case=case)
    _check_dropout_placement(forward_fn, gen)
    passed(name)


def _check_dropout_placement(forward_fn: Callable[..., Any], gen: torch.Generator) -> None:
    """Dropout acts on the adapter's input only: with ``B = 0`` the output is exactly ``base(x)``."""
    case = _lora_case(gen, 6, 4, 2, 2.0, (8,))
    case["B"] = torch.zeros_like(case["B"])
    case["dropout"] = nn.Dropout(0.5).train()
    actual = call(forward_fn, case, "lora_forward")
    with torch.no_grad():
        expected = case["base"](case["x"])
    check_close(actual, expected, "lora_forward(...) with dropout in training mode and B = 0",
                "PEFT applies dropout to the adapter's input only: base(x) + s * dropout(x) A^T B^T", case=case)
    case = _lora_case(gen, 6, 4, 2, 2.0, (8,))
    case["dropout"] = nn.Dropout(0.5).eval()
    expected = _reference_layer(case["base"], case["A"], case["B"], case["alpha"])(case["x"]).detach()
    check_close(call(forward_fn, case, "lora_forward"), expected, "lora_forward(...) with dropout in eval mode",
                "call dropout(x) when a dropout module is given (in eval mode it is the identity)", case=case)


def check_merge(merge_fn: Callable[..., Any], unmerge_fn: Callable[..., Any], seed: int = 0) -> None:
    """``merge_fn(W0, A, B, alpha) -> W0 + (alpha/r) B A`` and ``unmerge_fn(W, A, B, alpha) -> W0``.

    The merged weight must equal what ``LoRALinear.merge()`` leaves in the base layer, give the
    same outputs as the unmerged adapter, and unmerging must recover ``W0``; inputs are not modified.
    """
    gen = torch.Generator().manual_seed(seed)
    for in_f, out_f, rank, alpha in ((5, 3, 2, 4.0), (7, 10, 3, 1.0)):
        base = _linear(in_f, out_f, gen)
        A, B = torch.randn(rank, in_f, generator=gen), torch.randn(out_f, rank, generator=gen)
        ref = _reference_layer(base, A, B, alpha)
        ref.merge()
        expected = ref.base.weight.detach().clone()
        case = {"W0": base.weight.detach().clone(), "A": A, "B": B, "alpha": alpha}
        merged = call(merge_fn, case, "merge_weight")
        hint = "W = W0 + (alpha / r) * B @ A, with B (out, r) and A (r, in)"
        if isinstance(merged, torch.Tensor) and merged.shape == expected.shape:
            hint = _matches_variant(merged, {
                "the update is missing its scaling alpha / r": base.weight.detach() + B @ A,
                "the update is subtracted; merging adds it": 2 * base.weight.detach() - expected,
            }) or hint
        check_close(merged, expected, "merge_weight(...)", hint, case=case)
        w0 = case["W0"].clone()
        merge_fn(w0, A.clone(), B.clone(), alpha)
        if not torch.equal(w0, case["W0"]):
            fail("merge_weight modified W0 in place", case=case, hint="return a new tensor: W0 + ..., not W0 += ...")
        back = call(unmerge_fn, {"W": expected, "A": A, "B": B, "alpha": alpha}, "unmerge_weight")
        check_close(back, base.weight.detach(), "unmerge_weight(merge_weight(W0, ...))",
                    "unmerging subtracts the same (alpha / r) * B @ A that merging added",
                    case={"W": expected, "A": A, "B": B, "alpha": alpha})
    passed("merge_weight and unmerge_weight")


def toy_transformer_block(d_model: int = 16, d_ff: int = 64) -> nn.Module:
    """A small model with PEFT-style module names: ``attn.{q,k,v,o}_proj``, ``mlp.{up,down}``, a norm."""
    attn = nn.ModuleDict({n: nn.Linear(d_model, d_model) for n in ("q_proj", "k_proj", "v_proj", "o_proj")})
    mlp = nn.ModuleDict({"up": nn.Linear(d_model, d_ff), "down": nn.Linear(d_ff, d_model)})
    return nn.ModuleDict({"norm": nn.LayerNorm(d_model), "attn": attn, "mlp": mlp})


def _reference_count(model: nn.Module, rank: int, targets: Sequence[str] | None) -> int:
    return count_parameters(add_lora(copy.deepcopy(model), rank, targets=targets))


def check_param_count(count_fn: Callable[..., Any], seed: int = 0) -> None:
    """``count_fn(model, rank, targets) -> int``: trainable parameters once LoRA is added.

    Expected: ``lrkit.count_parameters(lrkit.add_lora(model, rank, targets=targets))``, i.e.
    ``sum over targeted nn.Linear of r * (in + out)``; the frozen base counts for nothing.
    """
    gen = torch.Generator().manual_seed(seed)
    sizes = [(16, 64), (8, 24), (12, 40)]
    d_model, d_ff = sizes[int(torch.randint(len(sizes), (1,), generator=gen))]
    model = toy_transformer_block(d_model, d_ff)
    for rank, targets in ((4, ["q_proj", "v_proj"]), (1, None), (2, ["up", "down"]), (8, ["o_proj"])):
        case = {"model": model, "rank": rank, "targets": targets}
        expected = _reference_count(model, rank, targets)
        actual = call(count_fn, case, "count_lora_params")
        check_equal(actual, expected, "count_lora_params(...)",
                    _count_hint(actual, model, rank, targets, expected), case)
    passed("count_lora_params")


def _count_hint(actual: Any, model: nn.Module, rank: int, targets: Sequence[str] | None, expected: int) -> str:
    """Name the usual counting mistakes when ``actual`` reproduces one of them."""
    generic = "add r * (in_features + out_features) for every targeted nn.Linear; nothing else is trainable"
    if not isinstance(actual, int):
        return generic
    if actual in (2 * expected, expected // 2):
        return "one adapter has A (r, in) and B (out, r): r * (in + out) parameters, counted once"
    if actual == expected + count_parameters(model, trainable_only=False):
        return "count only the adapters: the base model is frozen, its parameters are not trainable"
    if targets is not None and actual == _reference_count(model, rank, None):
        return "only the nn.Linear layers named in targets (exact name or '.'-suffix) get an adapter"
    return generic


def check_rslora_scaling(scaling_fn: Callable[..., Any], seed: int = 0) -> None:
    """``scaling_fn(alpha, rank, rslora=False)``: ``alpha / r``, or ``alpha / sqrt(r)`` when rank-stabilised.

    Expected: ``lrkit.LoRALinear(..., rank, alpha, rslora=...).scaling``.
    """
    gen = torch.Generator().manual_seed(seed)
    ranks = [1, 4, 16, 64, int(torch.randint(2, 64, (1,), generator=gen))]
    for rank in ranks:
        for alpha in (float(rank), 16.0):
            for rslora in (False, True):
                case = {"alpha": alpha, "rank": rank, "rslora": rslora}
                expected = LoRALinear(nn.Linear(64, 64), rank, alpha=alpha, rslora=rslora).scaling
                hint = ("rsLoRA (Kalajdzievski 2023) divides by sqrt(r) so that the update's size does not "
                        "shrink as r grows" if rslora else "standard LoRA divides alpha by r")
                check_close(call(scaling_fn, case, "lora_scaling"), expected, "lora_scaling(...)", hint, case=case)
    passed("lora_scaling")


def _diag(values: Sequence[float], shape: tuple[int, int]) -> torch.Tensor:
    m = torch.zeros(shape, dtype=torch.float64)
    m[range(len(values)), range(len(values))] = torch.tensor(values, dtype=torch.float64)
    return m


def check_energy_rank(rank_fn: Callable[..., Any], seed: int = 0) -> None:
    """``rank_fn(delta, frac)``: the smallest ``k`` with ``sum_{i<=k} s_i^2 >= frac * sum_i s_i^2``.

    Expected: ``lrkit.spectra.rank_for_energy(delta, frac)``.
    """
    gen = torch.Generator().manual_seed(seed)
    cases = [
        {"delta": _diag([3.0, 2.0, 1.0], (3, 3)), "frac": 0.9},
        {"delta": _diag([1.0, 1.0, 1.0, 1.0], (4, 6)), "frac": 0.5},
        {"delta": _diag([4.0, 3.0, 1.0, 0.5], (5, 4)), "frac": 0.9},
        {"delta": torch.randn(12, 1, generator=gen) @ torch.randn(1, 9, generator=gen), "frac": 0.99},
        {"delta": torch.randn(10, 7, generator=gen) @ torch.diag(0.6 ** torch.arange(7.0)), "frac": 0.9},
    ]
    for case in cases:
        expected = rank_for_energy(case["delta"], case["frac"])
        actual = call(rank_fn, case, "energy_rank")
        hint = "k counts singular values (k >= 1); energy is the sum of *squared* singular values"
        check_equal(actual, expected, "energy_rank(...)", hint, case)
    passed("energy_rank")
