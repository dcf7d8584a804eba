"""Checks that exercise cells call: they say *what* is wrong, not just that something is.

* :mod:`lrkit.checks.core`: the framework every chapter shares. :func:`check_function` compares
  a learner's function with lrkit's reference on a few cases and names known mistakes; failures
  raise :class:`CheckFailed` (an ``AssertionError``) whose message shows the input, the expected
  and the actual value and a hint; a stub's ``NotImplementedError`` passes through untouched.
* one module per chapter, named like its lesson: :mod:`~lrkit.checks.lora` (Chapter 1),
  ``deep_linear`` (2), ``ssm`` (3), ``matrix_sensing`` (4), ``lora_init`` (5, with ``lora_init_terms``),
  ``lora_plus`` (6, with ``lora_plus_ratio``), ``random_features`` (7), ``lora_forgetting`` (8),
  ``beyond_kernels`` (9), ``lora_variants`` (10). A lesson or exercise imports its own, e.g.
  ``from lrkit.checks import lora as checks``.

The names below stay importable from ``lrkit.checks`` itself (earlier notebooks use them).
"""

from __future__ import annotations

from .core import (
    Case,
    CheckFailed,
    as_number,
    call,
    check_close,
    check_equal,
    check_function,
    check_shape,
    describe,
    fail,
    known_mistake,
    matches_variant,
    passed,
    private_rng,
    to_scalar,
)
from .lora import (
    check_data_rank,
    check_energy_rank,
    check_equivalent_config,
    check_lora_forward,
    check_lora_init,
    check_merge,
    check_param_count,
    check_rslora_scaling,
    toy_transformer_block,
)

__all__ = [
    "Case", "CheckFailed", "as_number", "call", "check_close", "check_equal", "check_function", "check_shape",
    "describe", "fail", "known_mistake", "passed", "private_rng", "to_scalar", "matches_variant",
    "check_lora_init", "check_lora_forward", "check_merge", "check_param_count", "check_rslora_scaling",
    "check_energy_rank", "check_equivalent_config", "check_data_rank", "toy_transformer_block",
]


_matches_variant = matches_variant  # the old private name, for notebooks saved before it was public
