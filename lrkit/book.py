"""What a lesson needs from the book build, and nothing more on Colab or a laptop.

:func:`glue` stores a value for the book's ``{glue:text}`` roles when MyST-NB is
installed (the book build), and does nothing elsewhere: a learner who runs a lesson
after a bare ``pip install lrkit`` never needs the book's tooling. The Colab
editions of the lessons replace every glued role by the number the executed
build produced (``python -m lrkit.course colab``).
"""

from __future__ import annotations

import importlib.util
from typing import Any

__all__ = ["glue", "in_book_build"]


def in_book_build() -> bool:
    """True when MyST-NB (the book's notebook reader) can be imported."""
    return importlib.util.find_spec("myst_nb") is not None


def _plain(value: Any) -> Any:
    """A NumPy scalar or a 0-d tensor as the Python number it holds (MyST-NB formats those with
    a format spec such as ``:.3f``; ``np.float64(0.5)`` it cannot)."""
    if hasattr(value, "ndim") and getattr(value, "ndim", None) == 0 and hasattr(value, "item"):
        return value.item()
    return value


def glue(name: str, value: Any, display: bool = False) -> None:
    """``myst_nb.glue(name, value, display)`` in the book build; a no-op elsewhere.

    ``name`` is the key the prose cites as ``{glue:text}`name```; ``value`` any object
    MyST-NB can display (a number, a string, a figure). With ``display=True`` the value
    is also shown in the cell's output (on Colab: shown, not glued).
    """
    if not isinstance(name, str) or not name:
        raise ValueError(f"name must be a non-empty string, got {name!r}")
    value = _plain(value)
    if in_book_build():
        from myst_nb import glue as _myst_glue

        _myst_glue(name, value, display=display)
    elif display:
        from IPython.display import display as _show

        _show(value)  # type: ignore[no-untyped-call]
