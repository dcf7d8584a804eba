"""One convention for running ``K`` configurations at once: divergence, freezing, results.

Every batched training loop of the course (learning rates, seeds, widths, ratios as one
tensor program, DESIGN.md section 5) follows the same three rules:

* **The configuration axis is ``K``** and comes first: parameters ``(K, ...)``, per-step
  losses ``(K,)``, curves ``(K, steps + 1)``. (Chapter 3's convolution kernel is called
  ``kernel``, never ``K``.)
* **One divergence rule.** Configuration ``k`` diverges at the first step ``t`` where its
  loss is non-finite or exceeds ``blowup`` times its starting loss (``start[k]``, by default
  the loss passed at the first :meth:`Divergence.update`). From that step it is *frozen*:
  its parameters and optimiser state are zeroed (:meth:`Divergence.freeze`), its learning
  rate is multiplied by ``alive`` (so it stays put), its curves read NaN
  (:meth:`Divergence.mask`), and ``diverged_at[k] = t`` is recorded (``-1``: never).
  A diverged configuration is excluded, never a crash.
* **No host synchronisation per step.** :meth:`Divergence.update` and friends use
  ``torch.where`` on masks that stay on the configurations' device; nothing calls
  ``.item()``, ``bool(...)`` or ``.cpu()`` inside the loop. Curves are written into
  device tensors and moved to the CPU once, after the loop (:meth:`Divergence.result`).

Every run result is a dataclass with at least ``final`` (the last value of the quantity
the run reports, per configuration, NaN when diverged), ``diverged`` ``(K,)`` bool and
``diverged_at`` ``(K,)`` int: the :class:`RunResult` protocol.

Used by :mod:`lrkit.sweep` (Chapters 5 and 6) and :mod:`lrkit.spherical_sgd` (Chapter 9)::

    div = Divergence(K, blowup=10.0, device=dev)
    for t in range(steps + 1):
        loss = ...                                   # (K,), on the device
        alive = div.update(loss, t)                  # no host sync
        A, B = div.freeze(A, B)
        curve[:, t] = div.mask(loss)
        ... step with learning rates lr * alive ...
"""

from __future__ import annotations

import math
from typing import Any, Protocol, runtime_checkable

import numpy as np
import torch

__all__ = ["CONFIG_AXIS", "Divergence", "RunResult"]

CONFIG_AXIS = "K"  # the name of the leading configuration axis, in code and in docstrings


@runtime_checkable
class RunResult(Protocol):
    """What every batched run returns (a dataclass): per configuration, on the CPU."""

    @property
    def final(self) -> Any: ...        # (K,): the last value reported, NaN when diverged

    @property
    def diverged(self) -> Any: ...     # (K,) bool

    @property
    def diverged_at(self) -> Any: ...  # (K,) int: the step it was detected, -1 if never


class Divergence:
    """The divergence tracker of a batched loop over ``K`` configurations (see the module docstring).

    ``blowup``: a loss above ``blowup * start`` diverges (``math.inf``: only non-finite losses do);
    ``start``: the reference loss, a number or ``(K,)`` (default: the first loss passed to
    :meth:`update`). ``alive`` ``(K,)`` bool and ``diverged_at`` ``(K,)`` long live on ``device``.
    """

    def __init__(self, K: int, blowup: float = 10.0, device: torch.device | str = "cpu",
                 start: float | torch.Tensor | None = None) -> None:
        if isinstance(K, bool) or not isinstance(K, int) or K < 1:
            raise ValueError(f"K (the number of configurations) must be an int >= 1, got {K!r}")
        if isinstance(blowup, bool) or not isinstance(blowup, (int, float)) or math.isnan(blowup) or blowup <= 1:
            raise ValueError(f"blowup must be a number > 1 (math.inf: only non-finite losses), got {blowup!r}")
        self.K, self.blowup = K, float(blowup)
        self.alive = torch.ones(K, dtype=torch.bool, device=device)
        self.diverged_at = torch.full((K,), -1, dtype=torch.long, device=device)
        self.start = None if start is None else torch.as_tensor(start, device=device)

    def update(self, loss: torch.Tensor, t: int) -> torch.Tensor:
        """Apply the rule to this step's ``loss`` ``(K,)``; record ``t`` for the newly diverged; return ``alive``."""
        if self.start is None:
            self.start = loss.detach().clone()
        bad = ~torch.isfinite(loss)
        if math.isfinite(self.blowup):
            bad = bad | (loss > self.blowup * self.start)
        bad = self.alive & bad
        self.diverged_at = torch.where(bad, torch.full_like(self.diverged_at, t), self.diverged_at)
        self.alive = self.alive & ~bad
        return self.alive

    def _ok(self, x: torch.Tensor) -> torch.Tensor:
        return self.alive.view(self.K, *([1] * (x.dim() - 1)))

    def freeze(self, *tensors: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """Each ``(K, ...)`` tensor with the diverged configurations' entries set to zero."""
        return tuple(torch.where(self._ok(x), x, torch.zeros((), dtype=x.dtype, device=x.device))
                     for x in tensors)

    def keep(self, new: torch.Tensor, old: torch.Tensor) -> torch.Tensor:
        """``new`` for live configurations, ``old`` for diverged ones (freeze at the last value)."""
        return torch.where(self._ok(new), new, old)

    def mask(self, values: torch.Tensor) -> torch.Tensor:
        """``values`` ``(K, ...)`` with NaN for diverged configurations (for curves)."""
        return torch.where(self._ok(values), values, torch.full((), math.nan, dtype=values.dtype,
                                                                 device=values.device))

    def result(self) -> tuple[np.ndarray, np.ndarray]:
        """``(diverged, diverged_at)`` as CPU arrays: the one host transfer, after the loop."""
        at = self.diverged_at.cpu().numpy()
        return at >= 0, at
