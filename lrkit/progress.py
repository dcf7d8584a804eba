"""Progress bars for long runs: one rule decides when a loop shows one.

**The rule** (:func:`progress_enabled`), for a loop that takes ``progress: bool | None``:

1. ``True`` or ``False`` given by the caller wins;
2. otherwise (``None``, the default) a bar is shown at full scale only
   (:func:`lrkit.get_scale` is ``"full"``: ``LRKIT_SCALE=full``, or unset on a CUDA machine)
   **and** not in an executed build: the book build and the claims runs
   (:mod:`lrkit.claims_runs`) set ``LRKIT_LEDGER``, and their pages and logs stay silent.

So a learner running a lesson at full scale sees a bar for each long loop; at small scale
(a laptop, nbval, the default CPU run) and in the built book nothing is printed. The bar is
``tqdm.auto`` (a widget in Jupyter, text elsewhere; tqdm is one of lrkit's dependencies, and
where it is missing anyway every bar is silent).

Use :func:`progress_bar` around a loop you drive (``bar.update(1)`` per step, ``bar.close()``
at the end, or a ``with`` block), or :func:`track` to wrap an iterable::

    for step in track(range(steps), progress, desc="pretrain"):
        ...
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from typing import Any, TypeVar

from .env import get_scale

__all__ = ["progress_enabled", "progress_bar", "track", "in_executed_build", "SilentBar"]

T = TypeVar("T")

LEDGER_VARIABLE = "LRKIT_LEDGER"  # set by the book build (book/_ext/lrkit_book.py) and lrkit.claims_runs


def in_executed_build() -> bool:
    """True when the lessons run as part of the book build or the claims runs (``LRKIT_LEDGER`` set)."""
    return bool(os.environ.get(LEDGER_VARIABLE, "").strip())


def progress_enabled(enabled: bool | None = None) -> bool:
    """The course's one rule: ``enabled`` if given, else full scale and not an executed build.

    See the module docstring. ``enabled`` must be ``True``, ``False`` or ``None``.
    """
    if enabled is not None:
        if enabled not in (True, False):  # also NumPy bools, 0 and 1
            raise TypeError(f"progress must be True, False or None (the default rule), got {enabled!r}")
        return bool(enabled)
    return get_scale() == "full" and not in_executed_build()


class SilentBar:
    """The stand-in when no bar is shown: tqdm's ``update``, ``close``, ``set_postfix``, ``with``."""

    def update(self, n: int = 1) -> None:
        pass

    def set_postfix(self, *args: Any, **kwargs: Any) -> None:
        pass

    def set_description(self, *args: Any, **kwargs: Any) -> None:
        pass

    def close(self) -> None:
        pass

    def __enter__(self) -> SilentBar:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _tqdm() -> Any:
    try:
        from tqdm.auto import tqdm  # a dependency; a missing one only silences the bars
    except ImportError:
        return None
    return tqdm


def progress_bar(total: int | None, enabled: bool | None = None, desc: str = "") -> Any:
    """A ``tqdm`` bar of ``total`` steps when :func:`progress_enabled` says so, else a :class:`SilentBar`.

    The bar is not left on screen when it closes (``leave=False``).
    """
    tqdm = _tqdm() if progress_enabled(enabled) else None
    if tqdm is None:
        return SilentBar()
    return tqdm(total=total, desc=desc or None, leave=False)


def track(iterable: Iterable[T], enabled: bool | None = None, desc: str = "",
          total: int | None = None) -> Iterator[T]:
    """``iterable``, with a bar (same rule as :func:`progress_bar`) advanced once per item."""
    if total is None and hasattr(iterable, "__len__"):
        total = len(iterable)  # type: ignore[arg-type]
    bar = progress_bar(total, enabled, desc)
    try:
        for item in iterable:
            yield item
            bar.update(1)
    finally:
        bar.close()
