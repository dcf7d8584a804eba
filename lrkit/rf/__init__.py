"""Random-feature ridge regression and its eigenstructure theory (Chapter 7).

Follows Simon, Karkada, Ghosh and Belkin, "More is better in modern machine learning"
(ICLR 2024). A task is a kernel's eigenvalues ``lambda_i`` and the target's coefficients
``v_i`` (a power-law task has ``lambda_i = i^-p``, ``v_i^2 ∝ i^-q``; the paper's ``alpha, beta``
are our ``p, q``) plus label noise ``sigma^2``. One room per idea, all re-exported here so a
lesson reads ``rf.rf_theory``, ``rf.simulate``:

* :mod:`lrkit.rf.inputs`    power-law tasks, argument checks;
* :mod:`lrkit.rf.solvers`   ``kappa`` of kernel ridge regression, learnabilities, the solver;
* :mod:`lrkit.rf.theory`    test and train MSE of kernel and random-feature ridge regression
  (the ``(kappa, gamma)`` pair), the optimal ridge;
* :mod:`lrkit.rf.simulate`  ridge regression on Gaussian data and Gaussian random features
  (exact test error), measured learnabilities;
* :mod:`lrkit.rf.relu`      ReLU features on real inputs and a kernel's eigenstructure on a pool.
"""

from .inputs import ArrayLike, Number, power_law_task
from .relu import eigenstructure, pool_task, relu_features, relu_kernel, simulate_pool
from .simulate import SimResult, familywise_z, fit_random_features, measured_learnabilities, ridge_path, simulate
from .solvers import learnabilities, solve_kappa
from .theory import KRRTheory, OptimalRidge, RFTheory, default_ridges, krr_theory, optimal_ridge, rf_theory

__all__ = [
    "ArrayLike", "Number", "power_law_task", "solve_kappa", "learnabilities", "KRRTheory", "krr_theory",
    "RFTheory", "rf_theory", "OptimalRidge", "optimal_ridge", "default_ridges", "SimResult", "ridge_path",
    "simulate", "measured_learnabilities", "familywise_z", "fit_random_features", "relu_features", "relu_kernel",
    "eigenstructure", "pool_task", "simulate_pool",
]
