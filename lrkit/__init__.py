"""lrkit: the teaching package of the course on low-rank learning dynamics.

One module per idea; each chapter imports the modules named after it:

* :mod:`lrkit.env`            device, seeding (``LRKIT_SEED``), the ``LRKIT_SCALE`` knob, CPU threads
* :mod:`lrkit.lora`           ``LoRALinear`` (PEFT semantics; DoRA); :mod:`~lrkit.lora_model` adapters on
  whole models (``add_lora``, merge/unmerge/remove, parameter counts), re-exported by ``lora``
* :mod:`lrkit.init`           LoRA initialisation schemes: "A", "B", "gaussian", "pissa"
* :mod:`lrkit.spectra`        spectra of weight updates, energy ranks, subspace overlaps, intruder dimensions
* Chapter 1: :mod:`lrkit.finetune` (training; the student-teacher task in :mod:`~lrkit.finetune_task`),
  :mod:`lrkit.finetune_sweep` (LoRA vs full fine-tuning batched over rates), :mod:`lrkit.rslora` (rank
  scaling; its theory in :mod:`~lrkit.rslora_theory`), :mod:`lrkit.data_rank` (input-weighted rank)
* Chapter 2: :mod:`lrkit.deep_linear` (:mod:`~lrkit.deep_linear_theory`, :mod:`~lrkit.deep_linear_unbalanced`,
  :mod:`~lrkit.deep_linear_sim`, :mod:`~lrkit.deep_linear_init`), :mod:`lrkit.hierarchy` (Saxe et al.'s data)
* Chapter 3: :mod:`lrkit.ssm`, :mod:`lrkit.ssm_learning`, :mod:`lrkit.ssm_poles` (linear state-space models)
* Chapter 4: :mod:`lrkit.sensing` (problem, factors, sweep, theory: matrix sensing)
* Chapters 5, 6: :mod:`lrkit.sweep` (many LoRA configurations as one tensor program), :mod:`lrkit.lora_task`,
  :mod:`lrkit.lr_scaling` (rate readers, the per-step terms), :mod:`lrkit.optim` (batched Adam/SGD, LoRA+)
* Chapter 7: :mod:`lrkit.rf` (random-feature ridge regression: inputs, solvers, theory, simulation, ReLU)
* Chapter 8: :mod:`lrkit.transformer` (a small GPT), :mod:`lrkit.forgetting` (learning vs forgetting;
  :mod:`~lrkit.forgetting_tasks` the Markov-chain tasks, :mod:`~lrkit.forgetting_measures` intruders, fronts)
* Chapter 9: :mod:`lrkit.beyond_kernels` (:mod:`~lrkit.beyond_kernels_model`), :mod:`lrkit.spherical_sgd`,
  :mod:`lrkit.hermite` (Dayi and Chen)
* Chapter 10: :mod:`lrkit.variants` (LoRA-GA, LoRA-SB, ...), :mod:`lrkit.galore`, :mod:`lrkit.variant_bench`
* :mod:`lrkit.runs`           one convention for batched runs: divergence, freezing, results
* :mod:`lrkit.progress`       progress bars for long runs (full scale only, silent in the book build)
* :mod:`lrkit.fit`            power laws fitted in log-log space, with standard errors and grid tolerances
* :mod:`lrkit.plot`           theory as lines, experiments as markers; :mod:`lrkit.explore` static and live sliders
* :mod:`lrkit.claims`         the claims ledger: ``claim(...)`` checks, prints and records every claim
  (:mod:`~lrkit.claims_page` writes the claims page, :mod:`~lrkit.claims_runs` reruns lessons over seeds)
* :mod:`lrkit.book`           ``glue`` for the book build (a no-op on Colab)
* :mod:`lrkit.checks`         checks that exercises call (a core, then one submodule per chapter)
* :mod:`lrkit.course`         exercises from solutions, Colab editions, sandboxed grading (``python -m lrkit.course``)
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

# The names below load their module on first use (PEP 562), so `import lrkit.course` (the grader's
# worker, the command line) does not import torch: only what a name needs is imported.
_EXPORTS = {
    "claim": "claims",
    **dict.fromkeys(["by_scale", "describe_env", "get_device", "get_scale", "get_seed", "seed_everything"], "env"),
    "INIT_SCHEMES": "init",
    **dict.fromkeys(["LoRALinear", "add_lora", "count_parameters", "lora_layers", "lora_parameter_count",
                     "lora_scaling", "merge_lora", "remove_lora", "trainable_parameters", "unmerge_lora"], "lora"),
}

if TYPE_CHECKING:
    from .claims import claim
    from .env import by_scale, describe_env, get_device, get_scale, get_seed, seed_everything
    from .init import INIT_SCHEMES
    from .lora import (
        LoRALinear,
        add_lora,
        count_parameters,
        lora_layers,
        lora_parameter_count,
        lora_scaling,
        merge_lora,
        remove_lora,
        trainable_parameters,
        unmerge_lora,
    )

__version__ = "0.2.0"

__all__ = [  # the names of _EXPORTS (tests/test_lazy_import.py)
    "INIT_SCHEMES", "LoRALinear", "add_lora", "claim", "by_scale", "count_parameters", "describe_env", "get_device",
    "get_scale", "get_seed", "lora_layers", "lora_parameter_count", "lora_scaling", "merge_lora", "remove_lora",
    "seed_everything", "trainable_parameters", "unmerge_lora",
]


def __getattr__(name: str) -> Any:
    """``lrkit.<name>``: a name of ``__all__`` from its module, or a submodule, imported on first use."""
    if name in _EXPORTS:
        value = getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
        globals()[name] = value
        return value
    if not name.startswith("_"):
        try:
            return importlib.import_module(f".{name}", __name__)
        except ModuleNotFoundError as e:
            if e.name != f"{__name__}.{name}":
                raise
    raise AttributeError(f"module 'lrkit' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))
