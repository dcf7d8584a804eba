"""Explore sections that work in the static book and, live, in a running notebook.

A lesson's Explore section lets a reader change a knob (a rank, a ratio, a width)
and watch one figure change. Two views share one drawing function
``draw(ax, **values)`` (``ax`` is a single :class:`~matplotlib.axes.Axes`, or the
flat array of axes when ``ncols > 1``), which draws one state of the figure (and does not call ``plt.show``):

* :func:`explore` precomputes the figure over a small grid of control values,
  ``controls = {"rank": [1, 2, 4, 8], "rule": ["alpha/r", "alpha/sqrt(r)"]}``,
  one frame per point of the grid (the Cartesian product, last control fastest),
  and returns an :class:`IPython.display.HTML` object holding matplotlib's
  ``to_jshtml`` player: PNG frames and a slider that need no kernel, so the slider
  changes the figure in the built book, online or offline. Each frame is titled
  with its control values; with ``same_limits=True`` every frame shares the axis
  limits of the union of all frames, so that moving the slider compares like with
  like. Size: about ``frames x (10-30 kB)`` at the default ``dpi=80``.
* :func:`explore_live` builds the ipywidgets version for a reader who runs the
  notebook: one control per name (a list of values gives a selection slider or a
  dropdown; an ipywidgets control is used as it is, e.g. a continuous slider), a
  "Draw" button, and an output area that is redrawn when a control changes. It
  draws nothing until asked, so a headless run (the book build, nbval) shows no
  second copy of the figure; a line above the controls says they need a running
  kernel. It works with ipywidgets 7 and 8 and returns ``None`` (after a
  printed note) when ipywidgets is not installed.

Only matplotlib, numpy and ipywidgets/IPython (ipywidgets' own dependency) are used.
"""

from __future__ import annotations

import html
import inspect
import itertools
import math
import re
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from tempfile import TemporaryDirectory
from typing import Any

import matplotlib.pyplot as plt
import numpy as np
from matplotlib import animation
from matplotlib.axes import Axes

from ._validate import positive_float, positive_int
from .plot import STYLE, new_figure

RC: Any = STYLE  # the course style, as rc_context wants it

__all__ = ["explore", "explore_live", "grid_points", "MAX_FRAMES"]

MAX_FRAMES = 32  # a bigger grid makes the page heavy; pick fewer values per control
LIVE_NOTE = ("<b>Live controls:</b> they recompute the figure only in a running notebook "
             "(Colab or local). In the book, use the precomputed slider above.")

Draw = Callable[..., Any]


def _check_draw(draw: object) -> Draw:
    if not callable(draw):
        raise TypeError(f"draw must be a callable draw(ax, **values), got {type(draw).__name__}")
    return draw


def _check_names(controls: object) -> Mapping[str, Any]:
    if not isinstance(controls, Mapping) or not controls:
        raise ValueError("controls must be a non-empty dict {name: values}, "
                         f"got {controls!r}")
    for name in controls:
        if not isinstance(name, str) or not name.isidentifier():
            raise ValueError(f"controls: every name must be a keyword of draw (an identifier), "
                             f"got {name!r}")
    return controls


def _values(name: str, values: object) -> list[Any]:
    if isinstance(values, (str, bytes)) or not isinstance(values, (Sequence, np.ndarray)):
        raise TypeError(f"controls[{name!r}] must be a list of values, got {values!r}")
    out = list(values)
    if not out:
        raise ValueError(f"controls[{name!r}] must list at least one value, got []")
    return out


def grid_points(controls: Mapping[str, Sequence[Any]]) -> list[dict[str, Any]]:
    """The grid of :func:`explore`: one ``{name: value}`` per frame, last name fastest."""
    controls = _check_names(controls)
    lists = {name: _values(name, v) for name, v in controls.items()}
    n = math.prod(len(v) for v in lists.values())
    if n > MAX_FRAMES:
        sizes = " x ".join(f"{len(v)} {k}" for k, v in lists.items())
        raise ValueError(f"controls: the grid has {n} frames ({sizes}), more than "
                         f"MAX_FRAMES = {MAX_FRAMES}; give fewer values per control")
    return [dict(zip(lists, combo)) for combo in itertools.product(*lists.values())]


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.3g}"
    return str(value)


def _caption(point: Mapping[str, Any]) -> str:
    return ",  ".join(f"{k} = {_fmt(v)}" for k, v in point.items())


def _target(axes: np.ndarray, ncols: int) -> Axes | np.ndarray:
    return axes[0] if ncols == 1 else axes


def _draw_frame(fig: Any, axes: np.ndarray, draw: Draw, point: Mapping[str, Any],
                ncols: int) -> None:
    for ax in axes:
        ax.clear()
        ax.grid(True, alpha=0.3)
    with plt.rc_context(RC):
        draw(_target(axes, ncols), **point)
    fig.suptitle(_caption(point), fontsize=9)


def explore(draw: Draw, controls: Mapping[str, Sequence[Any]], *, alt: str | None = None,
            ncols: int = 1, width: float = 5.0, height: float = 3.4, dpi: int = 80,
            fps: int = 2, same_limits: bool = True) -> Any:
    """The static explorer: ``draw`` over the grid ``controls``, as a ``to_jshtml`` player.

    ``draw(ax, **values)`` draws one state into a cleared axes (``ax`` is the flat
    array of axes when ``ncols > 1``); ``controls`` maps each keyword of ``draw`` to
    the few values to precompute (at most ``MAX_FRAMES`` frames in all). ``alt`` is
    the player image's alternative text (a default names the controls). Returns an
    ``IPython.display.HTML`` whose frames are base64 PNGs at ``dpi``; the slider and
    buttons are plain JavaScript, so no kernel is needed to use them.
    """
    draw = _check_draw(draw)
    points = grid_points(controls)
    ncols = positive_int(ncols, "ncols")
    width, height = positive_float(width, "width"), positive_float(height, "height")
    dpi, fps = positive_int(dpi, "dpi"), positive_int(fps, "fps")
    if alt is not None and (not isinstance(alt, str) or len(alt.strip()) < 10):
        raise ValueError(f"alt must describe the figure in at least 10 characters, got {alt!r}")
    from IPython.display import HTML

    fig, axes = new_figure(ncols=ncols, width=width, height=height)
    fig.set_dpi(dpi)
    try:
        limits = _union_limits(fig, axes, draw, points, ncols) if same_limits else None
        with plt.rc_context({"animation.frame_format": "png"}), TemporaryDirectory() as tmp:
            # the writer behind Animation.to_jshtml, fed one savefig per frame
            writer = animation.HTMLWriter(fps=fps, embed_frames=True, default_mode="once")
            path = Path(tmp, "explore.html")
            with writer.saving(fig, path, dpi):
                for point in points:
                    _draw_frame(fig, axes, draw, point, ncols)
                    for ax, (xl, yl) in zip(axes, limits or []):
                        ax.set_xlim(xl)
                        ax.set_ylim(yl)
                    writer.grab_frame()  # type: ignore[no-untyped-call]
                    if limits is not None:  # same ticks in every frame: keep the first layout
                        fig.set_layout_engine("none")
            player = path.read_text(encoding="utf-8")
    finally:
        plt.close(fig)
    player = _offline_buttons(player)
    names = ", ".join(f"{k} ({', '.join(_fmt(v) for v in _values(k, vs))})"
                      for k, vs in controls.items())
    text = alt or f"Precomputed figure, one frame per value of {names}; the slider picks the frame."
    player = player.replace("<img id=", f'<img alt="{html.escape(text)}" id=', 1)
    return HTML(player)  # type: ignore[no-untyped-call]


_GLYPHS = {"minus": "&minus;", "fast-backward": "|&#9664;&#9664;", "step-backward": "|&#9664;",
           "play fa-flip-horizontal": "&#9664;", "pause": "||", "play": "&#9654;",
           "step-forward": "&#9654;|", "fast-forward": "&#9654;&#9654;|", "plus": "+"}


def _offline_buttons(player: str) -> str:
    """The player without its font-awesome stylesheet (a CDN): buttons as plain text."""
    player = re.sub(r'<link rel="stylesheet"\s+href="[^"]*font-awesome[^"]*">', "", player)
    return re.sub(r'<i class="fa fa-([\w -]+)"></i>',
                  lambda m: _GLYPHS.get(m.group(1), m.group(1)), player)


def _union_limits(fig: Any, axes: np.ndarray, draw: Draw, points: list[dict[str, Any]],
                  ncols: int) -> list[tuple[tuple[float, float], tuple[float, float]]]:
    """Per axes, the x and y limits that hold every frame (a dry run of all frames)."""
    lims: list[list[tuple[float, float, float, float]]] = [[] for _ in axes]
    for point in points:
        _draw_frame(fig, axes, draw, point, ncols)
        for k, ax in enumerate(axes):
            (x0, x1), (y0, y1) = ax.get_xlim(), ax.get_ylim()
            lims[k].append((x0, x1, y0, y1))
    out = []
    for per_ax in lims:
        a = np.array(per_ax)
        xr = (a[:, 0].min(), a[:, 1].max()) if a[0, 0] <= a[0, 1] else (a[:, 0].max(), a[:, 1].min())
        yr = (a[:, 2].min(), a[:, 3].max()) if a[0, 2] <= a[0, 3] else (a[:, 2].max(), a[:, 3].min())
        out.append((xr, yr))
    return out


def _control(widgets: Any, name: str, spec: Any, default: Any) -> Any:
    """An ipywidgets control for ``spec``: a widget as it is, or a list of values.

    A list starts at ``default`` (draw's own default for that keyword) when it holds it.
    """
    if isinstance(spec, widgets.ValueWidget):
        return spec
    values = _values(name, spec)
    start = default if any(default is v or default == v for v in values) else values[0]
    style = {"description_width": "initial"}
    if all(isinstance(v, (int, float, np.number)) and not isinstance(v, bool) for v in values):
        return widgets.SelectionSlider(options=values, value=start, description=name,
                                       continuous_update=False, style=style)
    return widgets.Dropdown(options=values, value=start, description=name, style=style)


def _defaults(draw: Draw) -> dict[str, Any]:
    try:
        params = inspect.signature(draw).parameters.values()
    except (TypeError, ValueError):
        return {}
    return {p.name: p.default for p in params if p.default is not inspect.Parameter.empty}


def explore_live(draw: Draw, controls: Mapping[str, Any], *, ncols: int = 1,
                 width: float = 5.0, height: float = 3.4) -> Any:
    """The live explorer: ipywidgets controls that call ``draw(ax, **values)`` on change.

    ``controls`` maps each keyword of ``draw`` to a list of values (the control
    starts at ``draw``'s default for it when the list holds it, else at the first
    value) or to an ipywidgets control (e.g. ``widgets.IntSlider(...)``). Nothing is drawn until the
    "Draw" button is pressed or a control changes, so the book shows the controls
    (with a note that they need a kernel) and no second figure. Returns the
    ``ipywidgets.VBox`` (display it as a cell's last expression), or ``None`` with a
    printed note when ipywidgets is not installed.
    """
    draw = _check_draw(draw)
    controls = _check_names(controls)
    ncols = positive_int(ncols, "ncols")
    width, height = positive_float(width, "width"), positive_float(height, "height")
    try:
        import ipywidgets as widgets
    except ImportError:
        print("ipywidgets is not installed: the precomputed slider above shows the same figure")
        return None
    from IPython.display import display

    defaults = _defaults(draw)
    boxes = {name: _control(widgets, name, spec, defaults.get(name)) for name, spec in controls.items()}
    out = widgets.Output()
    button = widgets.Button(description="Draw")

    def redraw(*_: Any) -> None:
        values = {name: box.value for name, box in boxes.items()}
        out.clear_output(wait=True)
        with out:
            fig, axes = new_figure(ncols=ncols, width=width, height=height)
            try:
                with plt.rc_context(RC):
                    draw(_target(axes, ncols), **values)
                if plt.fignum_exists(fig.number):  # unless draw already showed it
                    display(fig)  # type: ignore[no-untyped-call]
            finally:
                plt.close(fig)

    for box in boxes.values():
        box.observe(redraw, names="value")
    button.on_click(redraw)
    panel = widgets.VBox([widgets.HTML(value=LIVE_NOTE), *boxes.values(), button, out])
    panel.redraw = redraw  # for tests and scripts: draw the current state now
    return panel
