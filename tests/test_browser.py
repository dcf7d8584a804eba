"""The book in a headless browser, offline (tools/browser_check.py).

The check is first shown to fail on planted defects (a tiny synthetic page: an unnumbered figure
with a file-path alt text, a raw ``{glue`` role, a cut-off exercise hint, raw TeX, a slider that
does not change its frame, MathJax from a CDN). The built book itself is checked by ``make browser``
(CI runs it after ``make book``), not here: with a book built, ``make test`` re-ran that same 70 s
check on whatever book was last built. The test needs the ``browser`` extra (playwright) and a
Chromium (``/usr/bin/chromium``, or ``LRKIT_CHROMIUM``); without them it skips and says why.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import sys
from pathlib import Path
from types import ModuleType

import pytest

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM = os.environ.get("LRKIT_CHROMIUM", "/usr/bin/chromium")


def load_tool() -> ModuleType:
    if importlib.util.find_spec("playwright") is None:
        pytest.skip("playwright is not installed (pip install -e .[browser])")
    if shutil.which(CHROMIUM) is None:
        pytest.skip(f"no Chromium at {CHROMIUM} (set LRKIT_CHROMIUM)")
    spec = importlib.util.spec_from_file_location("browser_check", ROOT / "tools" / "browser_check.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules["browser_check"] = module  # its dataclass looks its module up there
    spec.loader.exec_module(module)
    return module


PLAYER = """<div class="animation"><img alt="A loss curve" src="data:image/png;base64,AAAA">
<input type="range" class="anim-slider" min="0" max="1" step="1" value="0" {handler}></div>"""
MOVES = PLAYER.format(handler="oninput=\"this.previousElementSibling.src='data:,frame' + this.value\"")
STUCK = PLAYER.format(handler="")

GOOD = f"""<!DOCTYPE html><html><body><article class="bd-article" style="width: 500px">
<p>A glued value <strong>0.42</strong> and no raw role.</p>
<figure id="fig-a"><img alt="A loss curve falling" src="data:image/png;base64,AAAA">
<figcaption><p><span class="caption-number">Fig. 1.1 </span><span class="caption-text">Loss.</span></p></figcaption>
</figure>
<figure id="fig-explore">{MOVES}
<figcaption><span class="caption-number">Fig. 1.2 </span><span class="caption-text">Explorer.</span></figcaption>
</figure>
<pre style="white-space: pre-wrap">raise NotImplementedError("Hint: a short hint")</pre>
</article></body></html>"""

BAD = f"""<!DOCTYPE html><html><head>
<script defer src="https://cdn.jsdelivr.net/npm/mathjax@3/es5/tex-mml-chtml.js"></script></head><body><article class="bd-article" style="width: 500px">
<p>A value left raw: {{glue:text}}`n_params` and math <span class="math">\\(\\alpha/r\\)</span>.</p>
<div class="cell_output"><img alt="../_images/e04b.png" src="data:image/png;base64,AAAA"></div>
<figure id="fig-explore">{STUCK}</figure>
<div style="width: 300px"><pre style="white-space: pre; overflow-x: auto">raise NotImplementedError("replace this \
line with your solution. Hint: the part of the hint that a reader never sees")</pre></div>
</article></body></html>"""


def test_the_check_fails_on_planted_defects(tmp_path: Path) -> None:
    tool = load_tool()
    (tmp_path / "lessons").mkdir()
    (tmp_path / "lessons" / "good.html").write_text(GOOD)
    (tmp_path / "lessons" / "bad.html").write_text(BAD)
    good, bad = sorted(tool.run(tmp_path, tmp_path / "shots", ["lessons/*.html"], chromium=CHROMIUM),
                       key=lambda r: r.page != "lessons/good.html")
    assert good.failures == [], good.failures
    assert (good.figures, good.numbered, good.captioned, good.sliders_ok, good.sliders) == (2, 2, 2, 1, 1)
    text = "\n".join(bad.failures)
    for planted in ["figures without number/caption", "images without a real alt text", "raw roles",
                    "overflow: hint cut", "raw TeX", "MathJax requested from the network", "math not rendered", "slider 1: frame unchanged"]:
        assert planted in text, f"{planted!r} not flagged in:\n{text}"
    assert (tmp_path / "shots" / "summary.md").is_file() and (tmp_path / "shots" / "lessons__bad.jpg").is_file()
    assert tool.main([str(tmp_path), "--out", str(tmp_path / "shots2"), "--pages", "lessons/bad.html"]) == 1
