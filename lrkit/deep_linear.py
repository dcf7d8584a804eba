"""Deep linear networks: Saxe's exact mode dynamics and their simulation (Chapter 2).

Setting (Saxe, McClelland & Ganguli 2014). A depth-``D`` linear network ``y = W_D ... W_1 x``
trained by full-batch gradient descent on the squared loss with whitened inputs sees the loss
``1/2 ||Sigma31 - W_D ... W_1||_F^2 + const``, ``Sigma31 = U S V^T``. From decoupled initial
conditions each mode ``u = a b`` evolves on its own; with learning rate ``lr`` a step is an Euler
step of the flow in ``t = lr * step``.

This module gathers the chapter's public names:

* the theory (:mod:`lrkit.deep_linear_theory`): :func:`saxe_trajectory`, :func:`learning_time`,
  :func:`deep_mode_trajectory`, :func:`deep_learning_time`, the unbalanced mode
  (:func:`unbalanced_trajectory`, :func:`unbalanced_time`, :func:`unbalanced_rate`), the exact
  gradient-descent recursion :func:`discrete_mode_trajectory` and its lag :func:`gd_lag`;
* the simulation (:mod:`lrkit.deep_linear_sim`): :func:`mode_target`, :func:`decoupled_init`,
  :func:`decoupled_pair`, :func:`random_init`, :func:`gradient_step`, :func:`train_deep_linear`,
  :func:`half_times`, :func:`crossing_times`, :func:`mode_pair_gd`, :func:`truncation_loss`;
* hierarchical data (:mod:`lrkit.hierarchy`): :func:`tree_features`, :func:`tree_modes`,
  :func:`level_strengths`;
* :func:`sizes`, the chapter's experiment sizes.
"""

from __future__ import annotations

from .deep_linear_sim import (
    DeepLinearRun,
    crossing_times,
    decoupled_init,
    decoupled_pair,
    gradient_step,
    half_times,
    mode_pair_gd,
    mode_target,
    random_init,
    train_deep_linear,
    truncation_loss,
)
from .deep_linear_theory import (
    deep_learning_time,
    deep_mode_trajectory,
    discrete_mode_trajectory,
    gd_lag,
    learning_time,
    saxe_trajectory,
    unbalanced_rate,
    unbalanced_time,
    unbalanced_trajectory,
)
from .env import resolve_scale
from .hierarchy import level_strengths, tree_features, tree_modes

__all__ = [
    "sizes", "saxe_trajectory", "learning_time", "deep_mode_trajectory", "deep_learning_time", "unbalanced_rate",
    "unbalanced_time", "unbalanced_trajectory", "discrete_mode_trajectory", "gd_lag", "DeepLinearRun",
    "mode_target", "decoupled_init", "decoupled_pair", "random_init", "train_deep_linear", "half_times",
    "crossing_times", "mode_pair_gd", "truncation_loss", "gradient_step", "tree_features", "tree_modes",
    "level_strengths",
]


def sizes(scale: str | None = None) -> dict[str, object]:
    """Experiment sizes of Chapter 2 for ``scale`` (default :func:`lrkit.get_scale`).

    ``small``: an 8-8-8 network (the CPU calibration of the claims notes), a few seconds per
    experiment; a 3-level tree (8 items). ``full``: Saxe et al.'s regime on a GPU: 32 hidden
    units, 1000-dimensional outputs, ``u0 = 1e-6``, 16 seeds, a 5-level tree (32 items).
    """
    scale = resolve_scale(scale)
    if scale == "small":
        return dict(n_in=8, hidden=8, n_out=8, strengths=(5.0, 4.0, 3.0, 2.0, 1.0, 0.5, 0.0, 0.0), lr=1e-3,
                    steps=15000, u0=1e-3, seeds=4, random_scale=3e-3, random_steps=16000, lazy_hidden=1024,
                    lazy_scales=(1e-3, 1.0), lazy_lr=1e-2, lazy_steps=1600, depths=(2, 3, 4), depth_u0=1e-2,
                    depth_steps=10000, lora_dim=64, lora_rank=8, lora_steps=4000, tree_levels=3,
                    tree_scale=4.0, tree_u0=1e-4, tree_steps=12000, bottleneck=4)
    ladder = tuple(float(5.0 * 0.8 ** i) for i in range(12)) + (0.0,) * 4
    return dict(n_in=32, hidden=32, n_out=1000, strengths=ladder, lr=1e-3, steps=60000, u0=1e-6, seeds=16,
                random_scale=1e-3, random_steps=60000, lazy_hidden=4096, lazy_scales=(1e-3, 1.0), lazy_lr=1e-2,
                lazy_steps=6000, depths=(2, 3, 4, 6), depth_u0=1e-2, depth_steps=40000, lora_dim=1024,
                lora_rank=8, lora_steps=8000, tree_levels=5, tree_scale=4.0, tree_u0=1e-6, tree_steps=30000,
                bottleneck=8)
