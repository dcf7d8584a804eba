"""One figure style for the whole course: theory as a line, experiment as markers.

Every chapter draws its claims the same way so a reader learns the code once:
a solid line is what the theory predicts, markers are what the experiment
measured, and both share a colour when they describe the same quantity.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import matplotlib.pyplot as plt
import numpy as np
import torch
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from ._validate import as_int, positive_float

if TYPE_CHECKING:
    from matplotlib.typing import ColorType, RcKeyType

__all__ = ["STYLE", "label", "new_figure", "theory_vs_experiment"]

ArrayLike = Sequence[float] | np.ndarray | torch.Tensor

STYLE: dict[RcKeyType, Any] = {
    "figure.dpi": 110,
    "axes.grid": True,
    "grid.alpha": 0.3,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "legend.frameon": False,
    "font.size": 10,
}


def _np(x: ArrayLike) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        return x.detach().cpu().double().numpy()
    return np.asarray(x, dtype=float)


def _same_shape(x: ArrayLike | None, y: ArrayLike, message: str) -> tuple[np.ndarray, np.ndarray]:
    xs, ys = (None if x is None else _np(x)), _np(y)
    if xs is None or xs.shape != ys.shape:
        raise ValueError(message)
    return xs, ys


def new_figure(ncols: int = 1, nrows: int = 1, width: float = 4.2, height: float = 3.2
               ) -> tuple[Figure, np.ndarray]:
    """A figure in the course style; ``axes`` is always a flat array."""
    ncols, nrows = as_int(ncols, "ncols"), as_int(nrows, "nrows")
    width, height = positive_float(width, "width"), positive_float(height, "height")
    if ncols < 1 or nrows < 1:
        raise ValueError(f"ncols and nrows must be >= 1, got ncols={ncols}, nrows={nrows}")
    with plt.rc_context(STYLE):
        fig, axes = plt.subplots(nrows, ncols, figsize=(width * ncols, height * nrows),
                                 squeeze=False, constrained_layout=True)
    for ax in axes.flat:
        ax.grid(True, alpha=0.3)
        ax.spines[["top", "right"]].set_visible(False)
    return fig, axes.ravel()


def theory_vs_experiment(ax: Axes, x: ArrayLike | None = None, theory_y: ArrayLike | None = None,
                         exp_x: ArrayLike | None = None, exp_y: ArrayLike | None = None,
                         label: str = "", color: str | None = None, marker: str = "o",
                         theory_label: str | None = None, exp_label: str | None = None) -> None:
    """Draw ``theory_y(x)`` as a line and ``exp_y(exp_x)`` as markers, in one colour.

    Either part may be omitted. Non-finite experimental points (diverged runs) are
    dropped, never drawn. Legend entries read "<label> (theory)" / "<label> (experiment)".
    """
    shared: ColorType | None = color  # the experiment takes the theory line's colour
    if theory_y is not None:
        xs, ys = _same_shape(x, theory_y, "x and theory_y must be given together with the same shape")
        (line,) = ax.plot(xs, ys, "-", color=shared, lw=1.6,
                          label=theory_label if theory_label is not None else f"{label} (theory)".strip())
        shared = line.get_color()
    if exp_y is not None:
        ex, ey = _same_shape(exp_x if exp_x is not None else x, exp_y,
                             "exp_x (or x) and exp_y must have the same shape")
        ok = np.isfinite(ex) & np.isfinite(ey)
        ax.plot(ex[ok], ey[ok], linestyle="none", marker=marker, ms=5, mfc="none", mew=1.3, color=shared,
                label=exp_label if exp_label is not None else f"{label} (experiment)".strip())


def label(ax: Axes, xlabel: str, ylabel: str, title: str | None = None, legend: bool = True) -> None:
    """Label both axes (with units where there are any), optionally title and legend."""
    if not xlabel or not ylabel:
        raise ValueError("every figure needs both axis labels: xlabel and ylabel must be non-empty")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    if title:
        ax.set_title(title)
    if legend and ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=8)
