"""Matrix sensing and factorised gradient descent (Chapter 4, after Xiong, Ding and Du, ICLR 2024).

One room per idea, all re-exported here so that a lesson reads ``sn.make_problem``,
``sn.run_sweep``, ``sn.linear_rate``:

* :mod:`lrkit.sensing.problem`  the measurements ``y_i = <Z_i, M*>``, the loss and its gradient;
* :mod:`lrkit.sensing.factors`  initial factors (the paper's and LoRA's), one GD step of
  ``X X^T`` and of ``s B A``, the conserved imbalance ``B^T B - A A^T``, the redundant subspace
  and the rate it predicts, the one-step rebalancing (ours);
* :mod:`lrkit.sensing.sweep`    many configurations as one batched tensor program;
* :mod:`lrkit.sensing.theory`   the symmetric ``1/t^2`` law, the exact-rank rate, fits.
"""

from .factors import (
                      A_RATIO,
                      LORA_INITS,
                      asymmetric_step,
                      check_rank,
                      compressed_imbalance,
                      imbalance,
                      init_asymmetric,
                      init_lora_factors,
                      init_symmetric,
                      rebalance,
                      redundant_rate,
                      redundant_subspace,
                      symmetric_step,
)
from .problem import (
                      DTYPE,
                      SensingProblem,
                      UnderdeterminedWarning,
                      adjoint,
                      degrees_of_freedom,
                      make_problem,
                      measure,
)
from .sweep import INITS, PARAMETERISATIONS, SensingRun, log_grid, run_sweep
from .theory import (
                      InverseSqrtFit,
                      inverse_sqrt_fit,
                      inverse_sqrt_slope_theory,
                      linear_rate,
                      linearised_rate,
                      loglog_slope,
                      redundant_block_curvature,
                      redundant_error_theory,
)

__all__ = [
    "A_RATIO", "DTYPE", "INITS", "LORA_INITS", "PARAMETERISATIONS", "InverseSqrtFit", "SensingProblem", "SensingRun",
    "UnderdeterminedWarning", "adjoint", "asymmetric_step", "check_rank", "compressed_imbalance",
    "degrees_of_freedom", "imbalance", "init_asymmetric", "init_lora_factors", "init_symmetric",
    "inverse_sqrt_fit", "inverse_sqrt_slope_theory", "linear_rate", "linearised_rate", "log_grid", "loglog_slope",
    "make_problem", "measure", "rebalance", "redundant_block_curvature", "redundant_error_theory", "redundant_rate",
    "redundant_subspace", "run_sweep", "symmetric_step",
]
