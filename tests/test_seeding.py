"""Seeded draws inside lrkit touch only a private copy of the CPU stream: no GPU stream is reseeded.

``torch.manual_seed`` inside ``fork_rng(devices=[])`` also reseeds every CUDA (and MPS, XPU) stream,
which ``fork_rng`` then does not restore: a learner's GPU draws after building a model would
depend on lrkit's seed. Here any GPU reseed raises; each function also leaves the CPU stream as it was.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch

from lrkit import sweep, transformer, variants
from lrkit.sensing.factors import init_lora_factors

CASES: dict[str, Callable[[], object]] = {
    "sweep.init_factors": lambda: sweep.init_factors(["A", "B"], [1, 2], 2, 6, 1.0),
    "sensing.init_lora_factors": lambda: init_lora_factors(5, 4, 2, "A", seed=3),
    "transformer.GPT": lambda: transformer.GPT(transformer.GPTConfig(vocab_size=8, block_size=4, n_layer=1,
                                                                     n_head=1, d_model=8), seed=4),
    "variants.matrix_lora_run": lambda: variants.matrix_lora_run(torch.eye(4), 2 * torch.eye(4), 2, steps=2, seed=5),
}


@pytest.mark.parametrize("name", CASES)
def test_no_gpu_stream_is_reseeded_and_the_cpu_stream_is_restored(name: str,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(where: str) -> Callable[..., None]:
        def refused(*args: object) -> None:
            raise AssertionError(f"{name} reseeded a GPU stream ({where})")
        return refused  # one function object per attribute (torch._dynamo keeps a registry of them)

    torch.manual_seed(123)
    for module, attr in ((torch.cuda, "manual_seed_all"), (torch.mps, "manual_seed"), (torch.xpu, "manual_seed_all")):
        monkeypatch.setattr(module, attr, refuse(f"{module.__name__}.{attr}"))
    before = torch.get_rng_state()
    first = CASES[name]()
    assert torch.equal(torch.get_rng_state(), before)
    second = CASES[name]()  # the same seed gives the same draw
    flat = [t for t in (first if isinstance(first, tuple) else (first,)) if isinstance(t, torch.Tensor)]
    again = [t for t in (second if isinstance(second, tuple) else (second,)) if isinstance(t, torch.Tensor)]
    assert all(torch.equal(a, b) for a, b in zip(flat, again))
