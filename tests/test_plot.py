from __future__ import annotations

import matplotlib

matplotlib.use("Agg")
import numpy as np
import pytest
import torch

from lrkit import plot


def test_theory_is_a_line_experiment_is_markers_and_nan_is_dropped() -> None:
    fig, axes = plot.new_figure(ncols=2)
    assert axes.shape == (2,)
    x = np.linspace(0, 1, 11)
    plot.theory_vs_experiment(axes[0], x, x ** 2, exp_x=torch.tensor([0.1, 0.5, 0.9]),
                              exp_y=torch.tensor([0.01, float("nan"), 0.8]), label="u")
    line, markers = axes[0].get_lines()
    assert line.get_linestyle() == "-" and markers.get_linestyle() == "None"
    assert line.get_color() == markers.get_color()
    assert len(markers.get_xdata()) == 2  # the NaN point is not drawn
    plot.label(axes[0], "step", "loss")
    assert axes[0].get_xlabel() == "step" and axes[0].get_legend() is not None
    with pytest.raises(ValueError, match="xlabel and ylabel"):
        plot.label(axes[1], "", "loss")
    with pytest.raises(ValueError, match="same shape"):
        plot.theory_vs_experiment(axes[1], x, x[:3])
    matplotlib.pyplot.close(fig)
