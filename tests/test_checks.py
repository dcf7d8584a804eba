"""lrkit.checks: right answers pass, planted wrong answers fail with a message that teaches."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import pytest
import torch
from torch import nn

import lrkit
from lrkit import checks
from lrkit.finetune import input_weighted
from lrkit.rslora import equivalent_config
from lrkit.spectra import rank_for_energy


def failure(check: Callable[..., None], *args: Any, **kwargs: Any) -> str:
    """Run a check expected to fail; its message (a CheckFailed, which is an AssertionError)."""
    with pytest.raises(AssertionError) as info:
        check(*args, **kwargs)
    assert type(info.value).__name__ == "CheckFailed", f"a bare {type(info.value).__name__} reached the learner"
    return str(info.value)


# --------------------------------------------------------------------------- answers built from lrkit itself


def good_init(base: nn.Linear, rank: int) -> tuple[nn.Parameter, nn.Parameter]:
    layer = lrkit.LoRALinear(base, rank)
    return layer.A, layer.B


def good_forward(x: torch.Tensor, base: nn.Linear, A: torch.Tensor, B: torch.Tensor, alpha: float,
                 dropout: nn.Module | None = None) -> torch.Tensor:
    with torch.random.fork_rng(devices=[]):  # building the layer draws an init: keep the dropout mask's stream
        layer = lrkit.LoRALinear(base, A.shape[0], alpha=alpha)
    with torch.no_grad():
        layer.A.copy_(A)
        layer.B.copy_(B)
    layer.dropout = dropout if dropout is not None else nn.Identity()
    return layer(x)


def good_merge(W0: torch.Tensor, A: torch.Tensor, B: torch.Tensor, alpha: float) -> torch.Tensor:
    return W0 + lrkit.lora_scaling(alpha, A.shape[0]) * (B @ A)


def good_unmerge(W: torch.Tensor, A: torch.Tensor, B: torch.Tensor, alpha: float) -> torch.Tensor:
    return W - lrkit.lora_scaling(alpha, A.shape[0]) * (B @ A)


def good_count(model: nn.Module, rank: int, targets: list[str] | None) -> int:
    return lrkit.count_parameters(lrkit.add_lora(model, rank, targets=targets))


def good_energy(delta: torch.Tensor, frac: float = 0.9) -> int:
    return rank_for_energy(delta, frac)


CORRECT: list[tuple[Callable[..., None], tuple[Callable[..., Any], ...]]] = [
    (checks.check_lora_init, (good_init,)),
    (checks.check_lora_forward, (good_forward,)),
    (checks.check_merge, (good_merge, good_unmerge)),
    (checks.check_param_count, (good_count,)),
    (checks.check_rslora_scaling, (lrkit.lora_scaling,)),
    (checks.check_energy_rank, (good_energy,)),
    (checks.check_equivalent_config, (equivalent_config,)),
    (checks.check_data_rank, (lambda delta, inputs, frac: rank_for_energy(input_weighted(delta, inputs), frac),)),
]


@pytest.mark.parametrize("check,answers", CORRECT, ids=lambda v: getattr(v, "__name__", ""))
@pytest.mark.parametrize("seed", [0, 1])
def test_right_answers_pass_and_say_so(check: Callable[..., None], answers: tuple, seed: int,
                                       capsys: pytest.CaptureFixture[str]) -> None:
    check(*answers, seed=seed)
    assert "✓" in capsys.readouterr().out


def _stub(*args: Any, **kwargs: Any) -> Any:
    raise NotImplementedError("replace this line with your solution")


@pytest.mark.parametrize("check,answers", CORRECT, ids=lambda v: getattr(v, "__name__", ""))
def test_a_stub_reaches_the_learner_as_not_implemented(check: Callable[..., None], answers: tuple) -> None:
    with pytest.raises(NotImplementedError, match="replace this line"):
        check(*[_stub] * len(answers))


# --------------------------------------------------------------------------- planted mistakes


def init_b_nonzero(base: nn.Linear, rank: int) -> tuple[nn.Parameter, nn.Parameter]:
    A, _ = good_init(base, rank)
    return A, nn.Parameter(torch.randn(base.out_features, rank))


def init_transposed(base: nn.Linear, rank: int) -> tuple[nn.Parameter, nn.Parameter]:
    A, B = good_init(base, rank)
    return nn.Parameter(A.detach().T.clone()), nn.Parameter(B.detach().T.clone())


def init_plain_tensors(base: nn.Linear, rank: int) -> tuple[torch.Tensor, torch.Tensor]:
    A, B = good_init(base, rank)
    return A.detach(), B.detach()


def init_gaussian_a(base: nn.Linear, rank: int) -> tuple[nn.Parameter, nn.Parameter]:
    return nn.Parameter(torch.randn(rank, base.in_features)), nn.Parameter(torch.zeros(base.out_features, rank))


def init_too_narrow(base: nn.Linear, rank: int) -> tuple[nn.Parameter, nn.Parameter]:
    bound = 0.3 / math.sqrt(base.in_features)
    return (nn.Parameter(torch.empty(rank, base.in_features).uniform_(-bound, bound)),
            nn.Parameter(torch.zeros(base.out_features, rank)))


def forward_scaled_by_alpha(x, base, A, B, alpha, dropout=None):  # type: ignore[no-untyped-def]
    return base(x) + alpha * (x @ A.T) @ B.T


def forward_transposed(x, base, A, B, alpha, dropout=None):  # type: ignore[no-untyped-def]
    return base(x) + alpha / A.shape[0] * (x @ B) @ A


def forward_without_bias(x, base, A, B, alpha, dropout=None):  # type: ignore[no-untyped-def]
    return x @ base.weight.T + alpha / A.shape[0] * (x @ A.T) @ B.T


def forward_without_adapter(x, base, A, B, alpha, dropout=None):  # type: ignore[no-untyped-def]
    return base(x)


def forward_dropout_everywhere(x, base, A, B, alpha, dropout=None):  # type: ignore[no-untyped-def]
    x = dropout(x) if dropout is not None else x
    return base(x) + alpha / A.shape[0] * (x @ A.T) @ B.T


def forward_ignores_dropout(x, base, A, B, alpha, dropout=None):  # type: ignore[no-untyped-def]
    return base(x) + alpha / A.shape[0] * (nn.functional.dropout(x, 0.5) @ A.T) @ B.T


def forward_never_drops(x, base, A, B, alpha, dropout=None):  # type: ignore[no-untyped-def]
    """The review's plant: the dropout argument is accepted and ignored."""
    return base(x) + alpha / A.shape[0] * (x @ A.T) @ B.T


def merge_unscaled(W0, A, B, alpha):  # type: ignore[no-untyped-def]
    return W0 + B @ A


def merge_subtracts(W0, A, B, alpha):  # type: ignore[no-untyped-def]
    return good_unmerge(W0, A, B, alpha)


def merge_in_place(W0, A, B, alpha):  # type: ignore[no-untyped-def]
    return W0.add_(lrkit.lora_scaling(alpha, A.shape[0]) * (B @ A))


def unmerge_adds(W, A, B, alpha):  # type: ignore[no-untyped-def]
    return good_merge(W, A, B, alpha)


def count_only_a(model, rank, targets):  # type: ignore[no-untyped-def]
    return sum(rank * m.in_features for n, m in model.named_modules()
               if isinstance(m, nn.Linear) and (targets is None or n.split(".")[-1] in targets))


def count_every_layer(model, rank, targets):  # type: ignore[no-untyped-def]
    return good_count(model, rank, None)


def count_with_frozen_base(model, rank, targets):  # type: ignore[no-untyped-def]
    frozen = sum(p.numel() for p in model.parameters())
    return frozen + good_count(model, rank, targets)


def count_as_float(model, rank, targets):  # type: ignore[no-untyped-def]
    return float(good_count(model, rank, targets))


def scaling_ignores_rslora(alpha, rank, rslora=False):  # type: ignore[no-untyped-def]
    return alpha / rank


def scaling_alpha(alpha, rank, rslora=False):  # type: ignore[no-untyped-def]
    return alpha


def scaling_sqrt_of_ratio(alpha, rank, rslora=False):  # type: ignore[no-untyped-def]
    return math.sqrt(alpha / rank) if rslora else alpha / rank


def energy_unsquared(delta, frac=0.9):  # type: ignore[no-untyped-def]
    s = torch.linalg.svdvals(delta.double())
    return int((torch.cumsum(s, 0) / s.sum() < frac).sum()) + 1


def energy_off_by_one(delta, frac=0.9):  # type: ignore[no-untyped-def]
    return good_energy(delta, frac) - 1


def energy_as_tensor_fraction(delta, frac=0.9):  # type: ignore[no-untyped-def]
    return good_energy(delta, frac) / min(delta.shape)


PLANTED: list[tuple[Callable[..., None], tuple[Callable[..., Any], ...], str]] = [
    (checks.check_lora_init, (init_b_nonzero,), "B should start at zero"),
    (checks.check_lora_init, (init_transposed,), "A has the wrong shape: expected (2, 7), got (7, 2)"),
    (checks.check_lora_init, (init_plain_tensors,), "trainable nn.Parameter"),
    (checks.check_lora_init, (init_gaussian_a,), "kaiming_uniform_"),
    (checks.check_lora_init, (init_too_narrow,), "uniform"),
    (checks.check_lora_forward, (forward_scaled_by_alpha,), "PEFT scales the adapter by alpha / r"),
    (checks.check_lora_forward, (forward_transposed,), "raised RuntimeError"),
    (checks.check_lora_forward, (forward_without_bias,), "bias is missing"),
    (checks.check_lora_forward, (forward_without_adapter,), "the adapter term is missing"),
    (checks.check_lora_forward, (forward_dropout_everywhere,), "the adapter's input only"),
    (checks.check_lora_forward, (forward_never_drops,), "dropout module is never applied"),
    (checks.check_lora_forward, (forward_ignores_dropout,), "the wrong values"),
    (checks.check_merge, (merge_unscaled, good_unmerge), "missing its scaling alpha / r"),
    (checks.check_merge, (merge_subtracts, good_unmerge), "merging adds it"),
    (checks.check_merge, (merge_in_place, good_unmerge), "modified W0 in place"),
    (checks.check_merge, (good_merge, unmerge_adds), "unmerging subtracts"),
    (checks.check_param_count, (count_only_a,), "A is (r, in) and B is (out, r)"),
    (checks.check_param_count, (count_every_layer,), "named in targets"),
    (checks.check_param_count, (count_with_frozen_base,), "the base model is frozen"),
    (checks.check_param_count, (count_as_float,), "should be an int"),
    (checks.check_rslora_scaling, (scaling_ignores_rslora,), "sqrt(r)"),
    (checks.check_rslora_scaling, (scaling_alpha,), "divides alpha by r"),
    (checks.check_rslora_scaling, (scaling_sqrt_of_ratio,), "rsLoRA"),
    (checks.check_energy_rank, (energy_unsquared,), "*squared* singular values"),
    (checks.check_energy_rank, (energy_off_by_one,), "expected: 2"),
    (checks.check_energy_rank, (energy_as_tensor_fraction,), "should be an int"),
]


@pytest.mark.parametrize("check,answers,phrase", PLANTED, ids=[a[0].__name__ for _, a, _ in PLANTED])
def test_planted_mistakes_are_caught_with_a_hint(check: Callable[..., None], answers: tuple, phrase: str) -> None:
    message = failure(check, *answers)
    assert phrase in message, message
    assert message.startswith("✗ ") and "hint:" in message, message


def test_a_failure_shows_the_input_expected_and_actual() -> None:
    message = failure(checks.check_lora_forward, forward_scaled_by_alpha)
    for part in ("on the input:", "x = tensor of shape (4, 5)", "A = tensor of shape (2, 5)",
                 "expected: tensor of shape (4, 3)", "actual:   tensor of shape (4, 3)", "largest difference"):
        assert part in message, message


def test_other_exceptions_are_explained_with_the_failing_input() -> None:
    def broken(**kwargs: Any) -> Any:
        raise KeyError("oops")

    message = failure(checks.check_param_count, broken)
    assert "count_lora_params raised KeyError" in message and "rank = " in message, message


# --------------------------------------------------------------------------- generic checks


def test_check_shape() -> None:
    checks.check_shape(torch.zeros(2, 3), (2, 3))
    assert "expected (3, 2), got (2, 3)" in failure(checks.check_shape, torch.zeros(2, 3), (3, 2), "A")
    assert "should be a torch.Tensor, got list" in failure(checks.check_shape, [1, 2], (2,), "v")


def test_check_close_names_the_worst_entry() -> None:
    expected = torch.zeros(2, 3)
    actual = expected.clone()
    actual[1, 2] = 0.5
    message = failure(checks.check_close, actual, expected, "y", "think again")
    assert "largest difference 0.5 at index (1, 2)" in message and "hint: think again" in message
    assert "NaN or inf" in failure(checks.check_close, torch.full((2, 3), math.nan), expected)
    checks.check_close(torch.tensor(2.0), 2.0)
    assert "expected: 2" in failure(checks.check_close, 2.5, 2.0, "s")
    assert "should be a number, got str" in failure(checks.check_close, "2", 2.0, "s")


def test_check_equal_wants_an_int_for_an_int() -> None:
    checks.check_equal(3, 3)
    checks.check_equal(torch.tensor(3), 3)
    assert "should be an int, got float" in failure(checks.check_equal, 3.0, 3, "k")
    assert "should be an int, got bool" in failure(checks.check_equal, True, 1, "k")


def test_check_function_compares_with_the_reference_on_each_case(capsys: pytest.CaptureFixture[str]) -> None:
    cases = [{"a": torch.ones(2), "b": torch.ones(2)}, {"a": torch.zeros(3), "b": torch.ones(3)}]
    checks.check_function(lambda a, b: a + b, lambda a, b: b + a, cases, name="add")
    assert "✓ add" in capsys.readouterr().out
    message = failure(checks.check_function, lambda a, b: a * b, lambda a, b: a + b, cases, "add", "add them")
    assert "a = tensor of shape (2,)" in message and "hint: add them" in message
    checks.check_function(lambda n: n * 2, lambda n: 2 * n, [{"n": 3}], exact=True)
    assert "expected: 8" in failure(checks.check_function, lambda n: n + 2, lambda n: 2 * n, [{"n": 4}], exact=True)


def test_describe_is_short() -> None:
    assert checks.describe(torch.arange(100.0)).endswith("...]")
    assert checks.describe(nn.Linear(2, 3)) == "Linear(in_features=2, out_features=3, bias=True)"
    assert "in eval mode" in checks.describe(nn.Dropout(0.5).eval())
    assert len(checks.describe("x" * 1000)) <= 120


def test_as_number_accepts_scalars_and_says_what_came_back() -> None:
    import numpy as np

    assert checks.as_number(torch.tensor([2.5]), "x") == 2.5 and checks.as_number(np.float32(1.5), "x") == 1.5
    assert checks.to_scalar("text") == "text"
    assert "x should be a number, got list" in failure(checks.as_number, [1.0, 2.0], "x")
    assert "x should be a finite number, got nan" in failure(checks.as_number, float("nan"), "x", finite=True)


# --------------------------------------------------------------------------- Chapter 1: the new exercises


def good_equivalent(s_from, s_to, lr, optimizer):  # type: ignore[no-untyped-def]
    return equivalent_config(s_from, s_to, lr, optimizer)


def equivalent_rate_only(s_from, s_to, lr, optimizer):  # type: ignore[no-untyped-def]
    return good_equivalent(s_from, s_to, lr, optimizer)[0], 1.0


def equivalent_gd_rule_for_adam(s_from, s_to, lr, optimizer):  # type: ignore[no-untyped-def]
    return lr * s_from / s_to, math.sqrt(s_from / s_to)


def good_data_rank(delta, inputs, frac):  # type: ignore[no-untyped-def]
    return rank_for_energy(input_weighted(delta, inputs), frac)


def data_rank_raw(delta, inputs, frac):  # type: ignore[no-untyped-def]
    return rank_for_energy(delta, frac)


@pytest.mark.parametrize("seed", [0, 3])
def test_new_chapter_1_checks_pass_the_reference(seed: int, capsys: pytest.CaptureFixture[str]) -> None:
    checks.check_equivalent_config(good_equivalent, seed=seed)
    checks.check_data_rank(good_data_rank, seed=seed)
    assert capsys.readouterr().out.count("✓") == 2


@pytest.mark.parametrize("check,answer,phrase", [
    (checks.check_equivalent_config, equivalent_rate_only, "rescale A0 too"),
    (checks.check_equivalent_config, equivalent_gd_rule_for_adam, "Adam ignores a gradient's scale"),
    (checks.check_data_rank, data_rank_raw, "raw rank of delta"),
])
def test_new_chapter_1_checks_name_the_mistake(check: Callable[..., None], answer: Callable[..., Any],
                                                phrase: str) -> None:
    assert phrase in failure(check, answer)


def test_checks_leave_the_global_random_stream_alone() -> None:
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    for check, answers in CORRECT:
        check(*answers)
    checks.toy_transformer_block(8, 16)
    assert torch.equal(torch.rand(3), expected)


def test_chapter_1_checks_live_in_their_module_and_the_old_names_still_import() -> None:
    from lrkit.checks import core, lora

    assert checks.check_lora_forward is lora.check_lora_forward and checks.fail is core.fail
    for name in ("_matches_variant", "matches_variant", "as_number", "to_scalar", "toy_transformer_block"):
        assert hasattr(checks, name), name


def test_known_mistake_handles_tensors_numbers_and_tuples() -> None:
    assert checks.known_mistake(torch.ones(2), {"a": torch.zeros(2), "b": torch.ones(2)}) == "b"
    assert checks.known_mistake(2.0, {"x": 3.0, "y": 2.0 + 1e-9}) == "y"
    assert checks.known_mistake((1.0, 2.0), {"t": (1.0, 2.0)}) == "t"
    assert checks.known_mistake("s", {"t": torch.ones(1)}) is None


def test_check_function_names_a_known_mistake() -> None:
    message = failure(checks.check_function, lambda n: n + 1, lambda n: 2 * n, [{"n": 3}], "double",
                      mistakes={"you added one": lambda n: n + 1}, exact=True)
    assert "hint: you added one" in message
