"""Unit tests of lrkit.finetune and lrkit.finetune_sweep: tasks, LoRA vs full fine-tuning, batched learning rates."""

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


# ------------------------------------------------------------------ several learning rates at once
@pytest.mark.parametrize("kwargs", [dict(method="lora", rank=3, targets=["fc2"], optimizer="adam"),
                                    dict(method="full", optimizer="adam"),
                                    dict(method="lora", rank=2, optimizer="sgd", alpha=4.0, rslora=True)])
def test_batched_learning_rates_match_one_run_per_rate(setup, kwargs) -> None:
    base, data, _ = setup
    lrs = [3e-3, 1e-2, 3e-2]
    runs = ft.finetune_lrs(base, data, lrs, steps=25, seed=4, **kwargs)
    for lr, run in zip(lrs, runs):
        ref = ft.finetune(base, data, lr=lr, steps=25, seed=4, **kwargs)
        np.testing.assert_allclose(run.log.loss.numpy(), ref.log.loss.numpy(), rtol=1e-5, atol=1e-8)
        assert run.test_loss == pytest.approx(ref.test_loss, rel=1e-4) and run.trainable == ref.trainable
        for name, dw in ft.weight_updates(base, ref.model).items():
            assert torch.allclose(ft.weight_updates(base, run.model)[name], dw, atol=1e-5)


def test_batched_learning_rates_flag_divergence_per_rate(setup) -> None:
    base, data, _ = setup
    runs = ft.finetune_lrs(base, data, [1e6, 1e-2], method="full", steps=20, optimizer="sgd")
    assert [r.diverged for r in runs] == [True, False]
    assert runs[0].diverged_at > 0 and runs[1].diverged_at == -1
    assert runs[0].diverged_at == ft.finetune(base, data, method="full", steps=20, lr=1e6,
                                              optimizer="sgd").diverged_at
    assert math.isnan(runs[0].final_loss) and math.isfinite(runs[1].final_loss)
    with pytest.raises(TypeError, match="model must be an nn.Sequential"):
        ft.finetune_lrs(torch.nn.ModuleDict({"a": torch.nn.Linear(2, 2)}), data, [0.1], method="full")
    with pytest.raises(ValueError, match="lrs must be a non-empty"):
        ft.finetune_lrs(base, data, [], method="full")


def test_input_weighted_update_counts_only_directions_the_data_excite() -> None:
    g = torch.Generator().manual_seed(0)
    basis = torch.linalg.qr(torch.randn(12, 3, generator=g, dtype=torch.float64))[0]
    inputs = torch.randn(4000, 3, generator=g, dtype=torch.float64) @ basis.T
    delta = torch.randn(8, 12, generator=g, dtype=torch.float64)
    weighted = ft.input_weighted(delta, inputs)
    assert spectra.rank_for_energy(delta, 0.99) > 3 and spectra.rank_for_energy(weighted, 1.0) <= 3
    # ||dW Sigma^(1/2)||_F^2 = E ||dW h||^2
    assert weighted.square().sum().item() == pytest.approx((inputs @ delta.T).square().sum(1).mean().item(), rel=1e-9)
    with pytest.raises(ValueError, match="delta must be"):
        ft.input_weighted(delta, inputs[:, :5])


def test_layer_inputs_are_what_the_layer_reads(setup) -> None:
    base, data, _ = setup
    h = ft.layer_inputs(base, "fc2", data.x_test)
    assert h.shape == (data.x_test.shape[0], WIDTH)
    assert torch.allclose(h, torch.tanh(base.fc1(data.x_test)))
    with pytest.raises(ValueError, match="layer must name a module"):
        ft.layer_inputs(base, "fc9", data.x_test)
