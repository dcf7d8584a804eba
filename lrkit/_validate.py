"""Argument checks shared by every module: errors name the argument and what is allowed."""

from __future__ import annotations

import math
from typing import Sequence


def positive_int(value: object, name: str) -> int:
    """``value`` if it is an int >= 1, else ``TypeError``/``ValueError`` naming ``name``."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int, got {type(value).__name__}")
    if value < 1:
        raise ValueError(f"{name} must be a positive int (>= 1), got {value}")
    return value


def positive_float(value: object, name: str) -> float:
    """``value`` as a float if it is a finite number > 0, else an error naming ``name``."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be a positive finite float, got {type(value).__name__}")
    if not math.isfinite(value) or value <= 0:
        raise ValueError(f"{name} must be a positive finite float, got {value}")
    return float(value)


def choice(value: object, name: str, allowed: Sequence[str]) -> str:
    """``value`` if it is one of ``allowed``, else a ``ValueError`` listing them."""
    if value not in allowed:
        raise ValueError(f"{name} must be one of {tuple(allowed)}, got {value!r}")
    return str(value)


def broadcast(values: object, n: int, name: str) -> list:
    """One value repeated ``n`` times, or a sequence of exactly ``n`` values (one per configuration)."""
    if isinstance(values, (str, bytes, int, float)) or values is None or not hasattr(values, "__iter__"):
        return [values] * n
    vals = list(values)  # type: ignore[call-overload]
    if len(vals) != n:
        raise ValueError(f"{name} must be one value or a list of {n} (one per configuration), got {len(vals)}")
    return vals


def check_seed(value: object, name: str = "seed") -> int:
    """``value`` if it is a non-negative int, else a ``ValueError`` naming ``name``."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"{name} must be a non-negative int, got {value!r}")
    return value
