"""Chapter 10 variants: LoRA-GA equals PEFT's ``lora_ga_init``; the mechanisms' algebra."""

from __future__ import annotations

import copy

import pytest
import torch

# PEFT is a test-only dependency (the "test" extra): a missing PEFT fails here, it is never skipped.
from peft import LoraConfig, LoraGAConfig, get_peft_model, preprocess_loraga
from torch import nn

from lrkit import add_lora, lora_layers
from lrkit.variants import (
    best_rank_cosine,
    cosine,
    first_step_change,
    lora_ga_factors,
    lora_ga_init_,
    matrix_galore_run,
    matrix_lora_run,
    truncate,
)


class MLP(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc1 = nn.Linear(12, 12)
        self.act = nn.Tanh()
        self.fc2 = nn.Linear(12, 7)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


def test_lora_ga_matches_peft(monkeypatch: pytest.MonkeyPatch) -> None:
    real = torch.svd_lowrank

    def seeded(*args, **kwargs):  # the same random sketch for PEFT and for us
        torch.manual_seed(123)
        return real(*args, **kwargs)

    monkeypatch.setattr(torch, "svd_lowrank", seeded)
    torch.manual_seed(0)
    base = MLP()
    x = torch.randn(16, 12, generator=torch.Generator().manual_seed(1))
    y = torch.randn(16, 7, generator=torch.Generator().manual_seed(2))
    rank, alpha = 3, 6.0

    def loss_of(model: nn.Module) -> torch.Tensor:
        return (model(x) - y).square().mean()

    theirs = copy.deepcopy(base)
    cfg = LoraConfig(r=rank, lora_alpha=alpha, target_modules=["fc1", "fc2"], init_lora_weights="lora_ga",
                     lora_ga_config=LoraGAConfig())
    preprocess_loraga(theirs, cfg, lambda: loss_of(theirs).backward())
    theirs = get_peft_model(theirs, cfg)

    probe = copy.deepcopy(base)
    loss_of(probe).backward()
    grads = {n: m.weight.grad.clone() for n, m in probe.named_modules() if isinstance(m, nn.Linear)}
    ours = add_lora(copy.deepcopy(base), rank, alpha=alpha, targets=["fc1", "fc2"])
    for name, layer in lora_layers(ours):
        lora_ga_init_(layer, grads[name])
        p = theirs.get_submodule(f"base_model.model.{name}")
        torch.testing.assert_close(layer.A, p.lora_A["default"].weight, rtol=1e-6, atol=1e-6)
        torch.testing.assert_close(layer.B, p.lora_B["default"].weight, rtol=1e-6, atol=1e-6)
        torch.testing.assert_close(layer.base.weight, p.base_layer.weight, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(ours(x), base(x), rtol=1e-5, atol=1e-5)  # unchanged at step 0
    torch.testing.assert_close(theirs(x), ours(x), rtol=1e-6, atol=1e-6)


def test_authors_form_first_step_is_rank_2r_truncation() -> None:
    g = torch.Generator().manual_seed(0)
    U, _ = torch.linalg.qr(torch.randn(40, 40, generator=g, dtype=torch.float64))
    V, _ = torch.linalg.qr(torch.randn(30, 30, generator=g, dtype=torch.float64))
    G = (U[:, :30] * (1.0 / torch.arange(1, 31, dtype=torch.float64))) @ V.T
    r = 3
    A, B = lora_ga_factors(G, r, form="authors", svd="exact")
    step = first_step_change(A, B, G, scaling=1.0)
    assert cosine(step, -truncate(G, 2 * r)) == pytest.approx(1.0, abs=1e-12)
    assert cosine(step, -G) == pytest.approx(best_rank_cosine(G, 2 * r), abs=1e-12)
    # planted wrong mechanism: the PEFT form (singular values in B) is not the truncation
    A2, B2 = lora_ga_factors(G, r, form="peft", svd="exact")
    assert cosine(first_step_change(A2, B2, G.float(), 1.0).double(), -truncate(G, 2 * r)) < 0.99
    # planted wrong mechanism: only the top r directions (A = V_r, B = U_r) reach the rank-r cosine
    Ur, _, Vhr = torch.linalg.svd(G, full_matrices=False)
    wrong = first_step_change(Vhr[:r], Ur[:, :r], G, 1.0)
    assert cosine(wrong, -G) < best_rank_cosine(G, 2 * r) - 0.01


def test_pissa_zero_gradient_off_subspace_and_galore_beats_lora_floor() -> None:
    g = torch.Generator().manual_seed(0)
    n, r = 16, 2
    U, _ = torch.linalg.qr(torch.randn(n, n, generator=g, dtype=torch.float64))
    V, _ = torch.linalg.qr(torch.randn(n, n, generator=g, dtype=torch.float64))
    W0 = (U * torch.linspace(2, 0.2, n, dtype=torch.float64)) @ V.T
    bottom = 0.5 * U[:, -r:] @ V[:, -r:].T
    losses = matrix_lora_run(W0, W0 + bottom, r, init="pissa", steps=50, lr=0.1)
    assert float(losses[-1]) == pytest.approx(float(losses[0]), rel=1e-9)  # PiSSA cannot move off its subspace
    losses = matrix_lora_run(W0, W0 + bottom, r, init="A", steps=400, lr=0.5)
    assert float(losses[-1]) < 0.1 * float(losses[0])
    target = W0 + (U * (1.0 / torch.arange(1, n + 1, dtype=torch.float64))) @ V.T
    floor = 0.5 * float((1.0 / torch.arange(r + 1, n + 1, dtype=torch.float64)).square().sum())
    galore = matrix_galore_run(W0, target, r, steps=600, lr=0.02, update_proj_gap=20)
    assert float(galore[-1]) < 0.05 * floor


def test_bad_inputs() -> None:
    G = torch.randn(8, 6)
    with pytest.raises(ValueError, match="form"):
        lora_ga_factors(G, 2, form="paper")
    with pytest.raises(ValueError, match="rank"):
        lora_ga_factors(G, 4)
    with pytest.raises(ValueError, match="svd"):
        lora_ga_factors(G, 2, svd="qr")
    with pytest.raises(TypeError, match="layer"):
        lora_ga_init_(nn.Linear(6, 8), G)
    with pytest.raises(ValueError, match="init"):
        matrix_lora_run(torch.eye(4), torch.eye(4), 1, init="olora", steps=2)


@pytest.mark.parametrize("method", ["full", "galore", "pissa", "loraga"])
def test_batched_bench_equals_module_training(method: str) -> None:
    """The bench's batched code gives what lrkit's modules and optimisers give, one config at a time."""
    from lrkit import LoRALinear
    from lrkit.galore import GaLoreAdamW
    from lrkit.variant_bench import make_task, run_method

    task = make_task([7], base_seed=3, d=8, h=8, o=4, n_train=32, n_test=16)
    lr, steps = 0.03, 12
    res = run_method(task, method, [lr], rank=2, steps=steps, gap=5)
    layers = []
    for w in task.W0:
        lin = nn.Linear(w.shape[1], w.shape[0], bias=False)
        with torch.no_grad():
            lin.weight.copy_(w)
        layers.append(lin)
    X, Y = task.X[0], task.Y[0]

    def forward(x: torch.Tensor) -> torch.Tensor:
        return layers[1](torch.tanh(layers[0](x)))

    if method in ("pissa", "loraga"):
        if method == "loraga":
            ((forward(X) - Y).square().mean()).backward()
            grads = [lin.weight.grad.clone() for lin in layers]
        layers = [LoRALinear(lin, 2, init="pissa" if method == "pissa" else "A") for lin in layers]
        if method == "loraga":
            for layer, g in zip(layers, grads):
                lora_ga_init_(layer, g, svd="exact")
        params = [p for layer in layers for p in (layer.A, layer.B)]
        opt = torch.optim.Adam(params, lr=lr)
    elif method == "galore":
        opt = GaLoreAdamW([{"params": [lin.weight for lin in layers], "rank": 2, "update_proj_gap": 5,
                            "scale": 1.0, "proj_type": "std"}], lr=lr)
    else:
        opt = torch.optim.Adam([lin.weight for lin in layers], lr=lr)
    for _ in range(steps):
        opt.zero_grad()
        ((forward(X) - Y).square().mean()).backward()
        opt.step()
    with torch.no_grad():
        target = float((forward(task.Xt[0]) - task.Yt[0]).square().mean())
    assert float(res["target"][0, 0]) == pytest.approx(target, rel=1e-4)


def test_claim_statistics_fail_on_planted_wrong_mechanisms() -> None:
    """Chapter 10's GaLore and PiSSA checks, computed from a wrong mechanism, fall outside their tolerances."""
    g = torch.Generator().manual_seed(1)
    n, r = 16, 2
    U, _ = torch.linalg.qr(torch.randn(n, n, generator=g, dtype=torch.float64))
    V, _ = torch.linalg.qr(torch.randn(n, n, generator=g, dtype=torch.float64))
    sig = 1.0 / torch.arange(1, n + 1, dtype=torch.float64)
    W0 = torch.randn(n, n, generator=g, dtype=torch.float64) / n ** 0.5
    target = W0 + (U * sig) @ V.T
    floor = 0.5 * float(sig[r:].square().sum())
    # a projector that is never renewed: GaLore is then LoRA-like and cannot pass the floor by 1e3
    frozen = matrix_galore_run(W0, target, r, steps=300, lr=0.02, update_proj_gap=10_000)
    assert float(frozen[-1]) / floor > 1e-3
    # an adapter of full rank is not held by the rank-r floor: the "LoRA stops at the floor" check fails
    full = matrix_lora_run(W0, target, n, init="A", steps=300, lr=0.02, optimizer="adam")
    assert abs(float(full[-1]) / floor - 1) > 0.01
    # PiSSA's zero gradient needs the change off its subspace: a top-subspace change moves it at once
    P, _, Qh = torch.linalg.svd(W0)
    top = matrix_lora_run(W0, W0 + 0.3 * P[:, :r] @ Qh[:r], r, init="pissa", steps=5, lr=0.1)
    assert abs(float(top[-1]) / float(top[0]) - 1) > 1e-6


def test_matrix_lora_run_leaves_the_global_random_stream_alone() -> None:
    W0, W_star = torch.randn(6, 5, dtype=torch.float64), torch.randn(6, 5, dtype=torch.float64)
    torch.manual_seed(123)
    want = torch.rand(3)
    torch.manual_seed(123)
    first = matrix_lora_run(W0, W_star, rank=2, steps=3, lr=0.01, seed=7)
    assert torch.equal(torch.rand(3), want)
    assert torch.equal(first, matrix_lora_run(W0, W_star, rank=2, steps=3, lr=0.01, seed=7))  # the seed decides A
    assert not torch.equal(first, matrix_lora_run(W0, W_star, rank=2, steps=3, lr=0.01, seed=8))
