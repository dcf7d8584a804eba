"""lrkit.explore: the static player (frames + slider, no kernel) and the live widgets."""

from __future__ import annotations

import base64
import json
import re
from pathlib import Path

import numpy as np
import pytest

from lrkit.explore import MAX_FRAMES, explore, explore_live, grid_points

CONTROLS = {"rank": [1, 2, 4], "rule": ["alpha/r", "alpha/sqrt(r)"]}


def draw(ax, rank=1, rule="alpha/r", calls=None):
    t = np.arange(50)
    ax.plot(t, np.exp(-t / (5.0 * rank)) * (2.0 if rule == "alpha/r" else 1.0), label=f"r={rank}")
    ax.set_yscale("log")
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    if calls is not None:
        calls.append((rank, rule))


def frames(html: str) -> list[bytes]:
    found = re.findall(r'data:image/png;base64,([^"]*)"', html)
    return [base64.b64decode(f.replace("\\n", "")) for f in found]


def test_grid_is_the_product_last_name_fastest() -> None:
    pts = grid_points(CONTROLS)
    assert len(pts) == 6
    assert pts[0] == {"rank": 1, "rule": "alpha/r"} and pts[1] == {"rank": 1, "rule": "alpha/sqrt(r)"}


def test_static_player_holds_one_png_frame_per_grid_point_and_a_slider() -> None:
    out = explore(draw, CONTROLS, alt="Loss curves of a toy run for three ranks and two rules.")
    html = out.data
    pngs = frames(html)
    assert len(pngs) == 6 and all(p.startswith(b"\x89PNG") for p in pngs)
    assert len(set(pngs)) == 6, "every grid point must give a different frame"
    assert 'type="range"' in html and 'class="anim-slider"' in html
    assert "Animation(frames" in html  # the JavaScript player: no kernel needed
    assert 'alt="Loss curves of a toy run' in html
    assert "font-awesome" not in html and "fa fa-" not in html  # no CDN: readable offline
    assert len(html) < 1_500_000


def test_static_player_default_alt_names_the_controls() -> None:
    html = explore(draw, {"rank": [1, 2]}).data
    alt = re.search(r'<img alt="([^"]*)"', html).group(1)
    assert "rank (1, 2)" in alt and "slider" in alt


def test_static_player_passes_every_value_to_draw_and_closes_its_figure() -> None:
    import matplotlib.pyplot as plt

    calls: list = []
    before = plt.get_fignums()
    explore(lambda ax, **v: draw(ax, calls=calls, **v), CONTROLS, same_limits=False)
    assert sorted(set(calls)) == sorted((p["rank"], p["rule"]) for p in grid_points(CONTROLS))
    assert plt.get_fignums() == before


def test_two_panels_get_the_array_of_axes() -> None:
    seen = []

    def draw2(axes, k=1):
        seen.append(len(axes))
        for ax in axes:
            ax.plot([0, 1], [0, k])

    assert len(frames(explore(draw2, {"k": [1, 2]}, ncols=2).data)) == 2
    assert set(seen) == {2}


@pytest.mark.parametrize(
    ("args", "kwargs", "error", "words"),
    [
        ((None, CONTROLS), {}, TypeError, "draw"),
        ((draw, {}), {}, ValueError, "controls"),
        ((draw, ["rank"]), {}, ValueError, "controls"),
        ((draw, {"rank": 3}), {}, TypeError, "controls['rank']"),
        ((draw, {"rank": "124"}), {}, TypeError, "controls['rank']"),
        ((draw, {"rank": []}), {}, ValueError, "controls['rank']"),
        ((draw, {"not a name": [1]}), {}, ValueError, "identifier"),
        ((draw, {"a": list(range(6)), "b": list(range(6))}), {}, ValueError, "MAX_FRAMES"),
        ((draw, CONTROLS), {"dpi": 0}, ValueError, "dpi"),
        ((draw, CONTROLS), {"ncols": 0}, ValueError, "ncols"),
        ((draw, CONTROLS), {"alt": "x"}, ValueError, "alt"),
    ],
)
def test_bad_inputs_are_named(args, kwargs, error, words) -> None:
    with pytest.raises(error, match=re.escape(words)):
        explore(*args, **kwargs)


def test_max_frames_is_small() -> None:
    assert MAX_FRAMES <= 32


def test_live_widget_builds_headless_and_draws_only_when_asked() -> None:
    widgets = pytest.importorskip("ipywidgets")
    calls: list = []
    live = {"rank": [1, 2, 4], "rule": ["alpha/r", "alpha/sqrt(r)"]}
    panel = explore_live(lambda ax, **v: draw(ax, calls=calls, **v), live)
    assert isinstance(panel, widgets.VBox)
    kinds = [type(c).__name__ for c in panel.children]
    assert kinds[0] == "HTML" and "running notebook" in panel.children[0].value
    assert kinds[1:] == ["SelectionSlider", "Dropdown", "Button", "Output"]
    assert calls == []  # a headless run shows no second figure
    panel.children[1].value = 4  # moving a control redraws with the new values
    assert calls[-1] == (4, "alpha/r")
    panel.children[2].value = "alpha/sqrt(r)"
    assert calls[-1] == (4, "alpha/sqrt(r)")


def test_live_widget_takes_ready_made_controls() -> None:
    widgets = pytest.importorskip("ipywidgets")
    calls: list = []
    slider = widgets.IntSlider(value=3, min=1, max=8)
    panel = explore_live(lambda ax, **v: draw(ax, calls=calls, **v), {"rank": slider})
    assert panel.children[1] is slider
    panel.redraw()
    assert calls == [(3, "alpha/r")]


def test_live_bad_inputs_are_named() -> None:
    with pytest.raises(TypeError, match="draw"):
        explore_live("draw", CONTROLS)
    with pytest.raises(ValueError, match="controls"):
        explore_live(draw, {})
    with pytest.raises(TypeError, match=re.escape("controls['rank']")):
        explore_live(draw, {"rank": 3})


def test_live_controls_start_at_draws_defaults() -> None:
    pytest.importorskip("ipywidgets")

    def draw_d(ax, rank=4, rule="alpha/sqrt(r)"):
        ax.plot([0, 1], [0, rank])

    panel = explore_live(draw_d, {"rank": [1, 2, 4, 8], "rule": ["alpha/r", "alpha/sqrt(r)"]})
    assert panel.children[1].value == 4 and panel.children[2].value == "alpha/sqrt(r)"


# --------------------------------------------------------------------------- the lessons' Explore sections

LESSONS = sorted((Path(__file__).resolve().parents[1] / "lessons").glob("*.ipynb"))


def _cells(path: Path) -> list[dict]:
    return json.loads(path.read_text(encoding="utf-8"))["cells"]


def _src(cell: dict) -> str:
    return "".join(cell["source"])


@pytest.mark.parametrize("path", LESSONS, ids=lambda p: p.stem)
def test_every_lesson_explores_with_a_static_player_then_live_controls(path: Path) -> None:
    """The pattern of issue 19: prose with a numref and the kernel line, the precomputed player
    (a numbered, captioned figure with alt text), then the live panel in its own cell."""
    cells = _cells(path)
    static = [i for i, c in enumerate(cells)
              if c["cell_type"] == "code" and re.search(r"^explore\(", _src(c), re.M)]
    live = [i for i, c in enumerate(cells)
            if c["cell_type"] == "code" and re.search(r"^explore_live\(", _src(c), re.M)]
    assert len(static) == 1 and live == [static[0] + 1], \
        f"{path.name}: one explore(...) cell, then one explore_live(...) cell (got {static}, {live})"
    meta = cells[static[0]]["metadata"]
    figure = meta.get("mystnb", {}).get("figure", {})
    assert re.fullmatch(r"fig-0?\d+-explore", figure.get("name", "")), figure
    assert "slider needs no kernel" in figure.get("caption", ""), figure
    assert len(meta.get("image", {}).get("alt", "")) >= 10
    assert "mystnb" not in cells[live[0]]["metadata"], "the live cell must not carry the figure label"
    prose = _src(cells[static[0] - 1])
    assert "## Explore" in prose and f"{{numref}}`{figure['name']}`" in prose
    assert "running kernel" in prose, f"{path.name}: say that the live controls need a running kernel"


@pytest.mark.parametrize("path", LESSONS, ids=lambda p: p.stem)
def test_no_lesson_draws_with_interact(path: Path) -> None:
    """widgets.interact draws on creation: a second, unlabelled figure in the built book."""
    for i, c in enumerate(_cells(path)):
        if c["cell_type"] == "code":
            assert not re.search(r"\binteract(_manual)?\(", _src(c)), f"{path.name}, cell {i}"
