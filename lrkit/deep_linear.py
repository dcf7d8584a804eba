"""Deep linear networks: Saxe's exact mode dynamics and their simulation (Chapter 2).

Setting (Saxe, McClelland & Ganguli 2014). A depth-``D`` linear network ``y = W_D ... W_1 x``
trained by full-batch gradient descent on the squared loss with whitened inputs sees the loss
``1/2 ||Sigma31 - W_D ... W_1||_F^2 + const``, ``Sigma31 = U S V^T``. From decoupled initial
conditions each mode ``u = a b`` evolves on its own; with learning rate ``lr`` a step is an Euler
step of the flow in ``t = lr * step``.

This module gathers the chapter's public names:

* the theory (:mod:`lrkit.deep_linear_theory`): :func:`saxe_trajectory`, :func:`learning_time`,
  :func:`deep_mode_trajectory`, :func:`deep_learning_time`, the exact gradient-descent recursion
  :func:`discrete_mode_trajectory` and its lag :func:`gd_lag`;
* the unbalanced mode (:mod:`lrkit.deep_linear_unbalanced`): :func:`unbalanced_trajectory`,
  :func:`unbalanced_time`, :func:`unbalanced_rate`;
* targets and initial weights (:mod:`lrkit.deep_linear_init`): :func:`mode_target`,
  :func:`decoupled_init`, :func:`decoupled_pair`, :func:`random_init`;
* the simulation (:mod:`lrkit.deep_linear_sim`): :func:`gradient_step`, :func:`train_deep_linear`,
  :func:`half_times`, :func:`crossing_times`, :func:`mode_pair_gd`, :func:`truncation_loss`;
* hierarchical data (:mod:`lrkit.hierarchy`): :func:`tree_features`, :func:`tree_modes`,
  :func:`level_strengths`.

The experiment sizes live in the lesson, in a visible cell (``lrkit.by_scale``).
"""

from __future__ import annotations

from .deep_linear_init import decoupled_init, decoupled_pair, mode_target, random_init
from .deep_linear_sim import (
    DeepLinearRun,
    crossing_times,
    gradient_step,
    half_times,
    mode_pair_gd,
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
)
from .deep_linear_unbalanced import unbalanced_rate, unbalanced_time, unbalanced_trajectory
from .hierarchy import level_strengths, tree_features, tree_modes

__all__ = [
    "saxe_trajectory", "learning_time", "deep_mode_trajectory", "deep_learning_time", "unbalanced_rate",
    "unbalanced_time", "unbalanced_trajectory", "discrete_mode_trajectory", "gd_lag", "DeepLinearRun",
    "mode_target", "decoupled_init", "decoupled_pair", "random_init", "train_deep_linear", "half_times",
    "crossing_times", "mode_pair_gd", "truncation_loss", "gradient_step", "tree_features", "tree_modes",
    "level_strengths",
]
