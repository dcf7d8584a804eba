"""lrkit's GaLoreAdamW equals the authors' galore-torch, step for step."""

from __future__ import annotations

import copy
import warnings

import pytest
import torch
from torch import nn

from lrkit.galore import GaLoreAdamW, optimizer_state_numel


def _authors_adamw() -> type:
    """galore-torch's AdamW without its package __init__ (which imports bitsandbytes for the 8-bit
    optimiser, a CUDA package we do not need). galore-torch is a test-only dependency (the "test"
    extra): a missing package fails here, it is never skipped."""
    import importlib
    import importlib.util
    import sys
    import types

    spec = importlib.util.find_spec("galore_torch")
    if spec is None or spec.submodule_search_locations is None:
        raise ImportError("galore-torch is not installed: pip install --no-deps galore-torch")
    if "galore_torch" not in sys.modules:
        pkg = types.ModuleType("galore_torch")
        pkg.__path__ = list(spec.submodule_search_locations)
        sys.modules["galore_torch"] = pkg
    return importlib.import_module("galore_torch.adamw").AdamW


AuthorsGaLoreAdamW = _authors_adamw()


def _model(dtype: torch.dtype) -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(20, 12), nn.Tanh(), nn.Linear(12, 30), nn.Tanh(), nn.Linear(30, 5)).to(dtype)


def _groups(model: nn.Module, **galore):
    mats = [p for p in model.parameters() if p.ndim == 2]
    rest = [p for p in model.parameters() if p.ndim != 2]
    return [{"params": rest}, {"params": mats, **galore}]


@pytest.mark.parametrize("proj_type", ["std", "reverse_std", "left", "right", "full"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_steps_equal_galore_torch(proj_type: str, dtype: torch.dtype) -> None:
    ours = _model(dtype)
    theirs = copy.deepcopy(ours)
    galore = {"rank": 3, "update_proj_gap": 4, "scale": 0.5, "proj_type": proj_type}
    opt_o = GaLoreAdamW(_groups(ours, **galore), lr=1e-2, weight_decay=0.01)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        opt_t = AuthorsGaLoreAdamW(_groups(theirs, **galore), lr=1e-2, weight_decay=0.01)
    g = torch.Generator().manual_seed(1)
    for _ in range(11):  # crosses two projector updates
        x = torch.randn(16, 20, generator=g, dtype=dtype)
        for m, opt in ((ours, opt_o), (theirs, opt_t)):
            opt.zero_grad()
            (m(x) ** 2).mean().backward()
            opt.step()
    for po, pt in zip(ours.parameters(), theirs.parameters()):
        assert torch.equal(po, pt)


def test_state_is_low_rank_and_bad_input() -> None:
    model = _model(torch.float32)
    opt = GaLoreAdamW(_groups(model, rank=2, update_proj_gap=10, scale=1.0, proj_type="std"), lr=1e-2)
    (model(torch.randn(4, 20)) ** 2).sum().backward()
    opt.step()
    # moments: 2 * r * max(m, n) per matrix + 2 per bias entry; projector r * min(m, n)
    mats = [(12, 20), (30, 12), (5, 30)]
    expected = sum(2 * 2 * max(a, b) + 2 * min(a, b) for a, b in mats) + 2 * (12 + 30 + 5)
    assert optimizer_state_numel(opt) == expected
    with pytest.raises(ValueError, match="rank"):
        GaLoreAdamW([{"params": [nn.Parameter(torch.ones(3, 3))], "rank": 0}], lr=0.1)
    with pytest.raises(ValueError, match="proj_type"):
        GaLoreAdamW([{"params": [nn.Parameter(torch.ones(3, 3))], "rank": 1, "proj_type": "x"}], lr=0.1)
    with pytest.raises(ValueError, match="lr"):
        GaLoreAdamW([nn.Parameter(torch.ones(3))], lr=float("nan"))
    with pytest.raises(ValueError, match="matrices"):
        GaLoreAdamW([{"params": [nn.Parameter(torch.ones(3))], "rank": 1}], lr=0.1)
