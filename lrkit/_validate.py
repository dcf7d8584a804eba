"""Argument checks shared by every module: errors name the argument and what is allowed.

One validation path for the whole package. Integers and reals are accepted in every form a
learner may hold them: Python numbers, NumPy scalars and 0-d tensors (``numbers.Integral`` /
``numbers.Real``); booleans are refused where a number is meant.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Sequence
from typing import Any

import torch

__all__ = ["as_int", "as_real", "blowup_factor", "broadcast", "check_device", "check_seed", "choice",
           "finite_float", "positive_float", "positive_int"]

SEED_LIMIT = 2**63  # torch.manual_seed takes a signed 64-bit seed


def _scalar(value: object) -> object:
    """A 0-d tensor or NumPy scalar as the Python number it holds; anything else unchanged."""
    if isinstance(value, torch.Tensor) and value.ndim == 0 and not value.is_complex():
        return value.item()
    item = getattr(value, "item", None)
    if item is not None and getattr(value, "shape", None) == () and not isinstance(value, (str, bytes)):
        return item()
    return value


def as_int(value: object, name: str) -> int:
    """``value`` as an int (Python, NumPy or 0-d tensor integer), else ``TypeError`` naming ``name``."""
    v = _scalar(value)
    if isinstance(v, bool) or not isinstance(v, numbers.Integral):
        raise TypeError(f"{name} must be an int, got {type(value).__name__}")
    return int(v)


def as_real(value: object, name: str, what: str = "a number") -> float:
    """``value`` as a float (any real number type), else ``TypeError`` naming ``name``."""
    v = _scalar(value)
    if isinstance(v, bool) or not isinstance(v, numbers.Real):
        raise TypeError(f"{name} must be {what}, got {type(value).__name__}")
    return float(v)


def positive_int(value: object, name: str) -> int:
    """``value`` if it is an int >= 1, else ``TypeError``/``ValueError`` naming ``name``."""
    v = as_int(value, name)
    if v < 1:
        raise ValueError(f"{name} must be a positive int (>= 1), got {v}")
    return v


def positive_float(value: object, name: str) -> float:
    """``value`` as a float if it is a finite number > 0, else an error naming ``name``."""
    v = as_real(value, name, "a positive finite float")
    if not math.isfinite(v) or v <= 0:
        raise ValueError(f"{name} must be a positive finite float, got {v}")
    return v


def finite_float(value: object, name: str, minimum: float | None = None) -> float:
    """``value`` as a finite float (``>= minimum`` when given), else an error naming ``name``."""
    v = as_real(value, name, "a finite number")
    if not math.isfinite(v) or (minimum is not None and v < minimum):
        bound = "" if minimum is None else f" >= {minimum:g}"
        raise ValueError(f"{name} must be a finite number{bound}, got {v}")
    return v


def blowup_factor(value: object, name: str = "blowup") -> float:
    """A divergence threshold: a finite factor > 1 (a run diverges when its loss exceeds ``value``
    times its initial loss)."""
    v = as_real(value, name, "a finite number > 1")
    if not math.isfinite(v) or v <= 1:
        raise ValueError(f"{name} must be a finite number > 1 (loss / initial loss that counts as "
                         f"diverged), got {v}")
    return v


def choice(value: object, name: str, allowed: Sequence[str]) -> str:
    """``value`` if it is one of ``allowed``, else a ``ValueError`` listing them."""
    if value not in allowed:
        raise ValueError(f"{name} must be one of {tuple(allowed)}, got {value!r}")
    return str(value)


def broadcast(values: object, n: int, name: str) -> list[Any]:
    """One value repeated ``n`` times, or a sequence of exactly ``n`` values (one per configuration).

    A NumPy scalar or a 0-d tensor counts as one value.
    """
    values = _scalar(values)
    if isinstance(values, (str, bytes, numbers.Number)) or values is None or not hasattr(values, "__iter__"):
        return [values] * n
    vals = [_scalar(v) for v in values]  # type: ignore[attr-defined,unused-ignore]
    if len(vals) != n:
        raise ValueError(f"{name} must be one value or a list of {n} (one per configuration), got {len(vals)}")
    return vals


def check_seed(value: object, name: str = "seed") -> int:
    """``value`` as an int if it is a non-negative integer below 2**63, else a ``ValueError`` naming ``name``."""
    v = _scalar(value)
    if isinstance(v, bool) or not isinstance(v, numbers.Integral) or not 0 <= int(v) < SEED_LIMIT:
        raise ValueError(f"{name} must be a non-negative int below 2**63, got {value!r}")
    return int(v)


def check_device(device: object, name: str = "device") -> torch.device:
    """``device`` (a string or ``torch.device``) checked to be usable here, else a ``ValueError``
    that names the argument and the allowed devices (torch itself says "Torch not compiled with
    CUDA enabled"). ``None`` means :func:`lrkit.get_device`. ``'meta'`` is refused: every lrkit
    function that takes a device computes numbers (losses, divergence, eigenvalues), which a
    meta tensor does not have; a shape-only pass would fail later, deep inside, with torch's
    message instead of this one."""
    if device is None:
        from .env import get_device

        found: torch.device = get_device()
        return found
    try:
        dev: torch.device = torch.device(device)  # type: ignore[call-overload]
    except (RuntimeError, TypeError) as err:
        raise ValueError(f"{name} must be a torch device such as 'cpu', 'cuda' or 'mps', got {device!r}") from err
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"{name}={device!r} but torch.cuda.is_available() is False on this machine: "
                         f"use 'cpu', or None for lrkit.get_device()")
    if dev.type == "mps" and not (hasattr(torch.backends, "mps") and torch.backends.mps.is_available()):
        raise ValueError(f"{name}={device!r} but the MPS backend is not available on this machine: "
                         f"use 'cpu', or None for lrkit.get_device()")
    if dev.type not in ("cpu", "cuda", "mps"):
        why = " (a 'meta' tensor has shapes but no numbers to compute with)" if dev.type == "meta" else ""
        raise ValueError(f"{name} must be 'cpu', 'cuda' (or 'cuda:N') or 'mps', got {device!r}{why}")
    return dev
