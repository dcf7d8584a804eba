"""Unit tests of lrkit.finetune: tasks, LoRA vs full fine-tuning, the batched linear sweep."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from lrkit import finetune as ft
from lrkit import spectra
from lrkit.lora import LoRALinear

D_IN, WIDTH, D_OUT = 6, 16, 4


@pytest.fixture(scope="module")
def setup() -> tuple[torch.nn.Module, ft.RegressionData, dict[str, torch.Tensor]]:
    base = ft.make_mlp(D_IN, WIDTH, D_OUT, seed=0, device="cpu")
    for p in base.parameters():
        p.requires_grad_(False)
    teacher, shift = ft.perturb(base, ["fc2"], relative_norm=0.5, decay=0.5, rank=4, seed=1)
    data = ft.sample_data(teacher, D_IN, 256, 128, seed=2, device="cpu")
    return base, data, shift


def test_sizes_for_both_scales() -> None:
    for scale in ("small", "full"):
        s = ft.sizes(scale)
        assert max(s["mlp_ranks"]) <= s["width"] and max(s["linear_ranks"]) <= s["linear_n"]
    with pytest.raises(ValueError, match="scale must be one of"):
        ft.sizes("huge")


def test_make_mlp_layout_and_seeding() -> None:
    a = ft.make_mlp(3, 8, 2, depth=2, seed=5, device="cpu")
    b = ft.make_mlp(3, 8, 2, depth=2, seed=5, device="cpu")
    assert [n for n, m in a.named_modules() if isinstance(m, torch.nn.Linear)] == ["fc1", "fc2", "fc3"]
    assert torch.equal(a.fc2.weight, b.fc2.weight)
    g = ft.make_mlp(3, 8, 2, seed=5, gain=2.0, device="cpu")
    assert torch.allclose(g.fc2.weight, 2 * a.fc2.weight)
    with pytest.raises(ValueError, match="activation must be one of"):
        ft.make_mlp(3, 8, 2, activation="swish")
    with pytest.raises(ValueError, match="width must be a positive int"):
        ft.make_mlp(3, 0, 2)
    with pytest.raises(ValueError, match="gain must be a positive"):
        ft.make_mlp(3, 8, 2, gain=-1.0)


def test_power_law_matrix_spectrum() -> None:
    M = ft.power_law_matrix(10, 7, decay=1.0, rank=3, seed=0, device="cpu")
    s = spectra.singular_values(M)
    expected = torch.tensor([1.0, 1 / 2, 1 / 3], dtype=torch.float64)
    assert torch.allclose(s[:3], expected / expected.norm(), atol=1e-6)
    assert torch.all(s[3:] < 1e-6)
    with pytest.raises(ValueError, match=r"rank must satisfy 1 <= rank <= min\(out, in\) = 7"):
        ft.power_law_matrix(10, 7, rank=8)


def test_perturb_shifts_only_named_layers(setup) -> None:
    base, _, shift = setup
    teacher, _ = ft.perturb(base, ["fc2"], relative_norm=0.5, decay=0.5, rank=4, seed=1)
    assert torch.equal(teacher.fc1.weight, base.fc1.weight)
    assert torch.allclose(teacher.fc2.weight - base.fc2.weight, shift["fc2"])
    assert shift["fc2"].norm().item() == pytest.approx(0.5 * base.fc2.weight.norm().item(), rel=1e-5)
    assert spectra.rank_for_energy(shift["fc2"], 1.0) == 4
    with pytest.raises(ValueError, match="layers must name nn.Linear modules"):
        ft.perturb(base, ["fc9"])


def test_full_finetuning_reduces_loss_and_leaves_base_untouched(setup) -> None:
    base, data, _ = setup
    before = base.fc2.weight.clone()
    res = ft.finetune(base, data, method="full", steps=60, lr=1e-2)
    assert torch.equal(base.fc2.weight, before)
    assert not res.diverged and res.final_loss < 0.5 * float(res.log.loss[0])
    assert res.trainable == sum(p.numel() for p in base.parameters())
    assert math.isfinite(res.test_loss)


def test_lora_finetuning_starts_at_base_and_has_rank_r_update(setup) -> None:
    base, data, _ = setup
    res = ft.finetune(base, data, method="lora", rank=2, targets=["fc2"], steps=40, lr=1e-2, seed=3)
    assert float(res.log.loss[0]) == pytest.approx(ft.mse(base, data.x_train, data.y_train), rel=1e-6)
    assert res.trainable == 2 * (WIDTH + WIDTH)
    assert isinstance(res.model.fc2, LoRALinear)
    ups = ft.weight_updates(base, res.model)
    assert torch.all(ups["fc1"] == 0) and torch.all(ups["fc3"] == 0)
    assert spectra.rank_for_energy(ups["fc2"], 1.0) <= 2
    assert torch.allclose(ups["fc2"], res.model.fc2.delta_weight().detach())
    # seeded: the same seed gives the same run
    again = ft.finetune(base, data, method="lora", rank=2, targets=["fc2"], steps=40, lr=1e-2, seed=3)
    assert torch.equal(res.log.loss, again.log.loss)


def test_finetune_best_lr_skips_diverged(setup) -> None:
    base, data, _ = setup
    res, lr = ft.finetune_best_lr(base, data, [1e6, 1e-2], method="full", steps=20, optimizer="sgd")
    assert lr == 1e-2 and not res.diverged


def test_divergence_is_flagged_not_raised(setup) -> None:
    base, data, _ = setup
    res = ft.finetune(base, data, method="full", steps=30, lr=1e6, optimizer="sgd")
    assert res.diverged
    assert math.isnan(res.final_loss) and math.isnan(res.test_loss)
    assert math.isfinite(float(res.log.loss[0]))


def test_finetune_bad_inputs(setup) -> None:
    base, data, _ = setup
    with pytest.raises(ValueError, match=r"method must be one of \('lora', 'full'\)"):
        ft.finetune(base, data, method="half")
    with pytest.raises(ValueError, match="rank is required"):
        ft.finetune(base, data, method="lora")
    with pytest.raises(ValueError, match="rank and targets must be None"):
        ft.finetune(base, data, method="full", rank=2)
    with pytest.raises(ValueError, match="rank and targets must be None"):
        ft.finetune(base, data, method="full", targets=["fc2"])
    with pytest.raises(ValueError, match=r"optimizer must be one of \('sgd', 'adam'\)"):
        ft.finetune(base, data, method="full", optimizer="lion")  # type: ignore[arg-type]
    for bad in (float("nan"), float("inf"), 0.0, -1.0):
        with pytest.raises(ValueError, match="lr must be a positive finite float"):
            ft.finetune(base, data, method="full", lr=bad)
    with pytest.raises(ValueError, match="steps must be a positive int"):
        ft.finetune(base, data, method="full", steps=0)
    with pytest.raises(ValueError, match="rank must satisfy"):
        ft.finetune(base, data, method="lora", rank=WIDTH + 1, targets=["fc2"])
    with pytest.raises(ValueError, match="x_train must be"):
        ft.RegressionData(torch.zeros(3, 2), torch.zeros(4, 1), torch.zeros(1, 2), torch.zeros(1, 1))


# ------------------------------------------------------------------ the batched linear sweep
def _loop_reference(T: torch.Tensor, rank: int, rslora: bool, alpha: float, lr: float, steps: int,
                    optimizer: str, A0: torch.Tensor) -> list[float]:
    """The same experiment, one configuration, with autograd and torch.optim."""
    s = alpha / math.sqrt(rank) if rslora else alpha / rank
    A = A0.clone().requires_grad_()
    B = torch.zeros(T.shape[0], rank, requires_grad=True)
    opt = torch.optim.SGD([A, B], lr=lr) if optimizer == "sgd" else torch.optim.Adam([A, B], lr=lr)
    L0 = 0.5 * T.square().sum()
    out = []
    for t in range(steps + 1):
        L = 0.5 * (s * B @ A - T).square().sum()
        out.append((L / L0).item())
        if t == steps:
            break
        opt.zero_grad()
        L.backward()
        opt.step()
    return out


@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
def test_sweep_matches_one_by_one_training(optimizer: str) -> None:
    n, ranks, flags = 24, [2, 5, 8], [False, True, False]
    T = ft.power_law_teacher(n, seed=0, device="cpu")
    lr = 0.005 if optimizer == "sgd" else 0.002
    sweep = ft.lora_linear_sweep(T, ranks, flags, alpha=4.0, lr=lr, steps=25, optimizer=optimizer, seed=7)
    # reconstruct the initial A of each configuration from the same generator
    g = torch.Generator().manual_seed(7)
    A_all = (torch.rand(len(ranks), max(ranks), n, generator=g) * 2 - 1) / math.sqrt(n)
    for c, (r, f) in enumerate(zip(ranks, flags)):
        ref = _loop_reference(T, r, f, 4.0, lr, 25, optimizer, A_all[c, :r])
        np.testing.assert_allclose(sweep.loss[c].numpy(), ref, rtol=2e-4, atol=1e-6)
    assert sweep.scaling.tolist() == pytest.approx([2.0, 4 / math.sqrt(5), 0.5])


def test_sweep_flags_divergence_per_configuration() -> None:
    T = ft.power_law_teacher(32, seed=0, device="cpu")
    sweep = ft.lora_linear_sweep(T, [4, 4], [False, False], alpha=8.0, lr=[0.005, 5.0], steps=30)
    assert sweep.diverged.tolist() == [False, True]
    assert math.isfinite(sweep.final[0].item()) and math.isnan(sweep.final[1].item())


def test_eckart_young_floor_power_law() -> None:
    n = 64
    T = ft.power_law_teacher(n, decay=0.5, seed=0, device="cpu")
    H = np.cumsum(1.0 / np.arange(1, n + 1))
    floor = ft.eckart_young_floor(T, [1, 8, 64]).numpy()
    np.testing.assert_allclose(floor, [(H[-1] - H[0]) / H[-1], (H[-1] - H[7]) / H[-1], 0.0], atol=1e-5)
    s = spectra.singular_values(T).numpy()
    np.testing.assert_allclose(s, np.sqrt(n / np.arange(1, n + 1)), rtol=1e-4)


def test_first_gd_step_matches_derivation() -> None:
    """(L0 - L1)/L0 ~ 2 lr s^2 r / (3n) for plain gradient descent from Init[A]."""
    n, lr, alpha = 128, 0.005, 8.0
    T = ft.power_law_teacher(n, seed=0, device="cpu")
    sweep = ft.lora_linear_sweep(T, [32, 64], [True, True], alpha=alpha, lr=lr, steps=1)
    measured = 1 - sweep.loss[:, 1].numpy()
    predicted = 2 * lr * alpha**2 / (3 * n)
    np.testing.assert_allclose(measured, predicted, rtol=0.25)


def test_sweep_bad_inputs() -> None:
    T = ft.power_law_teacher(16, seed=0, device="cpu")
    with pytest.raises(ValueError, match=r"ranks must satisfy 1 <= r <= min\(out, in\) = 16"):
        ft.lora_linear_sweep(T, [32], False)
    with pytest.raises(ValueError, match="ranks must be a non-empty"):
        ft.lora_linear_sweep(T, [], False)
    with pytest.raises(ValueError, match="rslora must be a bool or one bool per rank"):
        ft.lora_linear_sweep(T, [2, 4], [True])
    with pytest.raises(ValueError, match="lr must be a positive finite float"):
        ft.lora_linear_sweep(T, [2], False, lr=float("nan"))
    with pytest.raises(ValueError, match="alpha must be a positive finite number"):
        ft.lora_linear_sweep(T, [2], False, alpha=0.0)
    with pytest.raises(ValueError, match=r"optimizer must be one of"):
        ft.lora_linear_sweep(T, [2], False, optimizer="rmsprop")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="teacher must be a 2-D tensor"):
        ft.lora_linear_sweep(torch.zeros(3), [1], False)
