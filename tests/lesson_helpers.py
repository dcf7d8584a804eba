"""Reading a lesson's visible sizes cell from the tests."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace
from typing import Any

LESSONS = Path(__file__).resolve().parents[1] / "lessons"


def lesson_sizes(lesson: str, scale: str) -> dict[str, Any]:
    """The sizes cell (``S = lrkit.by_scale(small=..., full=...)``) of ``lessons/<lesson>.ipynb`` at ``scale``."""
    nb = json.loads((LESSONS / f"{lesson}.ipynb").read_text())
    [src] = ["".join(c["source"]) for c in nb["cells"] if "S = lrkit.by_scale(" in "".join(c["source"])]
    ns: dict[str, Any] = {"lrkit": SimpleNamespace(by_scale=lambda small, full: {"small": small, "full": full}[scale]),
                          "print": lambda *a: None}
    exec(src, ns)
    sizes: dict[str, Any] = ns["S"]
    return sizes
