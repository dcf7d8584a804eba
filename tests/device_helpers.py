"""Device checks without a GPU, shared by the device tests of every chapter.

:func:`recording` runs code under a ``TorchDispatchMode`` that counts the operations forcing a
device -> host sync (``item``/``bool`` -> ``_local_scalar_dense``, ``nonzero``, boolean-mask
indexing) and, with ``forbid=torch.float64``, fails on any float64 result: with a module's
``float_dtype`` patched to float32 this imitates Apple's MPS, which has no float64.
"""

from __future__ import annotations

import traceback
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch.utils._python_dispatch import TorchDispatchMode

SYNC_OPS = {"aten._local_scalar_dense.default", "aten.nonzero.default", "aten.masked_select.default"}


def from_torch_optim() -> bool:
    """Reads that are host-only on an accelerator, excused here.

    torch.optim reads its step counters with ``.item()``; they live on the CPU unless the optimiser
    is ``capturable``/``fused``. ``lrkit.optim.per_config`` inspects a rate tensor only when it is on
    the CPU (a tensor on a device is never read: tests/test_bad_inputs_ch5.py checks it on ``meta``).
    """
    stack = traceback.extract_stack(limit=12)
    return any("torch/optim/" in f.filename.replace("\\", "/")
               or (f.name == "per_config" and f.filename.endswith("optim.py")) for f in stack)


class Recorder(TorchDispatchMode):
    def __init__(self, forbid: torch.dtype | None = None) -> None:
        super().__init__()
        self.syncs: Counter[str] = Counter()
        self.forbid = forbid

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # type: ignore[no-untyped-def]
        name = str(func)
        bool_index = name.startswith("aten.index") and any(
            isinstance(i, torch.Tensor) and i.dtype == torch.bool
            for a in args if isinstance(a, (list, tuple)) for i in a)
        if (name in SYNC_OPS or bool_index) and not from_torch_optim():
            self.syncs[name] += 1
        out = func(*args, **(kwargs or {}))
        if self.forbid is not None:
            for t in out if isinstance(out, (list, tuple)) else [out]:
                if isinstance(t, torch.Tensor) and t.dtype == self.forbid:
                    raise AssertionError(f"{name} produced a {self.forbid} tensor")
        return out


@contextmanager
def recording(forbid: torch.dtype | None = None) -> Iterator[Recorder]:
    rec = Recorder(forbid)
    with rec:
        yield rec
