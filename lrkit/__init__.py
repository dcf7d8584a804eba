"""lrkit: the teaching package of the course on low-rank learning dynamics.

One module per idea; each chapter imports the module named after it:

* :mod:`lrkit.env`         device, seeding, the ``LRKIT_SCALE`` knob, CPU threads
* :mod:`lrkit.lora`        ``LoRALinear`` and adapters on whole models (PEFT semantics)
* :mod:`lrkit.init`        LoRA initialisation schemes: "A", "B", "gaussian", "pissa"
* :mod:`lrkit.spectra`     spectra of weight updates, rank for a share of energy
* :mod:`lrkit.finetune`    student-teacher fine-tuning tasks, rsLoRA sweeps (Chapter 1)
* :mod:`lrkit.deep_linear` Saxe et al.'s exact mode dynamics and simulations (Chapter 2)
* :mod:`lrkit.ssm`         linear state-space models in the frequency domain (Chapter 3)
* :mod:`lrkit.sensing`     matrix sensing and factorised gradient descent (Chapter 4)
* :mod:`lrkit.sweep`       many LoRA configurations as one tensor program (Chapters 5, 6)
* :mod:`lrkit.optim`       batched Adam/SGD steps and LoRA+ parameter groups (Chapters 5, 6)
* :mod:`lrkit.rf`          random-feature ridge regression: theory and simulation (Chapter 7)
* :mod:`lrkit.fit`         power laws fitted in log-log space, with standard errors
* :mod:`lrkit.plot`        theory as lines, experiments as markers
* :mod:`lrkit.claims`      the claims ledger: ``claim(...)`` checks, prints and records every claim
* :mod:`lrkit.book`        ``glue`` for the book build (a no-op on Colab)
* :mod:`lrkit.checks`      checks that exercises call (one submodule per chapter)
* :mod:`lrkit.course`      exercises from solutions, grading (``python -m lrkit.course``)
"""

from .claims import claim
from .env import by_scale, describe_env, get_device, get_scale, get_seed, seed_everything
from .init import INIT_SCHEMES
from .lora import (LoRALinear, add_lora, count_parameters, lora_layers, lora_parameter_count, lora_scaling,
                   merge_lora, remove_lora, trainable_parameters, unmerge_lora)

__version__ = "0.2.0"

__all__ = [
    "INIT_SCHEMES", "LoRALinear", "add_lora", "claim", "by_scale", "count_parameters", "describe_env", "get_device",
    "get_scale", "get_seed", "lora_layers", "lora_parameter_count", "lora_scaling", "merge_lora", "remove_lora",
    "seed_everything", "trainable_parameters", "unmerge_lora",
]
