"""Unit tests of lrkit.sweep: the batched LoRA sweep, divergence handling and the analysis helpers."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from lrkit import sweep as sw


@pytest.fixture(scope="module")
def task() -> sw.LoRATask:
    return sw.lora_task(48, d=8, samples=12, teacher_rank=2, seed=3, device="cpu")


def direct_loss(task: sw.LoRATask, A: torch.Tensor, B: torch.Tensor, s: float = 1.0) -> torch.Tensor:
    """The loss as the module docstring defines it, on the full samples (no rewriting)."""
    E = s * B @ (A @ task.Z.T) - task.Y
    return 0.5 * E.square().mean()


def test_task_shapes_scales_and_reduction(task: sw.LoRATask) -> None:
    assert task.Z.shape == (12, 48) and task.Y.shape == (48, 12) and task.width == 48 and task.samples == 12
    assert torch.linalg.matrix_rank(task.teacher).item() == 2
    assert task.Zr.shape[0] == 8  # 12 samples spanning d = 8 directions
    assert torch.allclose(task.Zr.T @ task.Zr, task.Z.T @ task.Z, atol=1e-4)
    assert torch.allclose(task.Yr @ task.Zr, task.Y @ task.Z, atol=1e-4)
    assert 0.1 < task.Z.square().mean().item() < 10 and 0.1 < task.Y.square().mean().item() < 10  # O(1) entries
    with pytest.raises(ValueError, match="teacher_rank must satisfy"):
        sw.lora_task(16, d=4, teacher_rank=5)
    with pytest.raises(ValueError, match="width must be a positive int"):
        sw.lora_task(0)


def test_step_zero_is_the_pretrained_model_for_both_inits(task: sw.LoRATask) -> None:
    res = sw.run_lora_sweep(task, [1e-3, 1e-3], init=["A", "B"], seed=[0, 1], steps=3, progress=False)
    assert np.allclose(res.loss[:, 0], 1.0, atol=1e-6)
    assert res.feature_rms[1, 0] == 0.0 and res.feature_rms[0, 0] > 0  # Init[B]: A = 0


def test_one_step_matches_autograd_and_torch_adam(task: sw.LoRATask) -> None:
    """Three Adam steps of the sweep == torch.optim.Adam on the direct loss, per configuration."""
    etas_A, etas_B, inits, seeds = [0.01, 0.003], [0.05, 0.003], ["A", "B"], [4, 5]
    res = sw.run_lora_sweep(task, etas_A, etas_B, init=inits, seed=seeds, steps=3, progress=False)
    start = sw.init_factors(inits, seeds, 4, task.width, 1.0, torch.device("cpu"))
    for k in range(2):
        A = start[0][k].clone().requires_grad_(True)
        B = start[1][k].clone().requires_grad_(True)
        opt = torch.optim.Adam([{"params": [A], "lr": etas_A[k]}, {"params": [B], "lr": etas_B[k]}])
        curve = []
        for _ in range(3):
            opt.zero_grad()
            L = direct_loss(task, A, B)
            curve.append(L.item() / task.initial_loss)
            L.backward()
            opt.step()
        curve.append(direct_loss(task, A, B).item() / task.initial_loss)
        assert np.allclose(res.loss[k], curve, rtol=1e-4, atol=1e-6)
        assert torch.allclose(res.A[k], A.detach(), atol=1e-5) and torch.allclose(res.B[k], B.detach(), atol=1e-5)


def test_sgd_and_alpha_follow_the_gradient(task: sw.LoRATask) -> None:
    res = sw.run_lora_sweep(task, 0.5, 0.5, init="B", seed=2, steps=1, optimizer="sgd", alpha=8.0, progress=False)
    A0, B0 = sw.init_factors(["B"], [2], 4, task.width, 2.0, torch.device("cpu"))
    A, B = A0[0].clone().requires_grad_(True), B0[0].clone().requires_grad_(True)
    direct_loss(task, A, B, s=2.0).backward()
    assert torch.allclose(res.A[0], (A - 0.5 * A.grad).detach(), atol=1e-6)
    assert torch.allclose(res.B[0], (B - 0.5 * B.grad).detach(), atol=1e-6)


def test_batched_equals_one_by_one(task: sw.LoRATask) -> None:
    cfg = sw.grid(init=["A", "B"], eta=[1e-3, 1e-2, 1e-1], seed=[0, 1])
    batched = sw.run_lora_sweep(task, cfg["eta"], init=cfg["init"], seed=cfg["seed"], steps=20, progress=False)
    for k in range(len(batched)):
        one = sw.run_lora_sweep(task, cfg["eta"][k], init=cfg["init"][k], seed=cfg["seed"][k], steps=20,
                                progress=False)
        assert np.allclose(batched.loss[k], one.loss[0], rtol=1e-4, atol=1e-6, equal_nan=True)
        assert batched.diverged[k] == one.diverged[0]


def test_divergence_is_marked_frozen_and_contained(task: sw.LoRATask) -> None:
    res = sw.run_lora_sweep(task, [1e-3, 50.0, 1e-3], init=["A", "A", "B"], seed=0, steps=30, progress=False)
    assert list(res.diverged) == [False, True, False]
    t = res.diverged_at[1]
    assert 0 < t <= 30 and np.isnan(res.loss[1, t:]).all() and np.isfinite(res.loss[1, :t]).all()
    assert np.isnan(res.final_loss[1]) and np.isfinite(res.final_loss[[0, 2]]).all()
    assert torch.isfinite(res.A).all() and torch.isfinite(res.B).all()
    alone = sw.run_lora_sweep(task, 1e-3, init="B", seed=0, steps=30, progress=False)
    assert np.allclose(alone.loss[0], res.loss[2], rtol=1e-5)  # a diverging neighbour changes nothing
    tight = sw.run_lora_sweep(task, 0.3, init="B", seed=0, steps=30, blowup=1.0001, progress=False)
    assert tight.diverged[0]


@pytest.mark.parametrize("kwargs,match", [
    (dict(eta_A=[]), "eta_A must be"),
    (dict(eta_A=float("nan")), "eta_A must be a positive finite"),
    (dict(eta_A=-1.0), "eta_A must be a positive finite"),
    (dict(eta_A=[0.1, 0.2], eta_B=[0.1]), "eta_B must be one value or a list of 2"),
    (dict(eta_A=0.1, init="pissa"), "init must be one of"),
    (dict(eta_A=0.1, init="C"), "init must be one of"),
    (dict(eta_A=0.1, seed=-1), "seed must be a non-negative int"),
    (dict(eta_A=0.1, rank=0), "rank must be a positive int"),
    (dict(eta_A=0.1, rank=100), "rank must satisfy 1 <= rank <= width = 48"),
    (dict(eta_A=0.1, optimizer="lion"), "optimizer must be one of"),
    (dict(eta_A=0.1, blowup=1.0), "blowup must be a finite number > 1"),
    (dict(eta_A=0.1, steps=0), "steps must be a positive int"),
])
def test_bad_inputs_name_the_argument(task: sw.LoRATask, kwargs: dict, match: str) -> None:
    with pytest.raises((ValueError, TypeError), match=match):
        sw.run_lora_sweep(task, **kwargs)
    with pytest.raises(TypeError, match="task must be a LoRATask"):
        sw.run_lora_sweep("task", 0.1)  # type: ignore[arg-type]


def test_grid_and_factor2_grid() -> None:
    g = sw.grid(eta=[0.1, 0.2], seed=[0, 1])
    assert g == {"eta": [0.1, 0.1, 0.2, 0.2], "seed": [0, 1, 0, 1]}
    assert sw.factor2_grid(0.1, 1.0) == [0.125, 0.25, 0.5, 1.0]
    assert sw.factor2_grid(0.25, 0.25) == [0.25]
    with pytest.raises(ValueError, match="axis 'seed' must be a non-empty sequence"):
        sw.grid(eta=[1.0], seed=[])
    with pytest.raises(ValueError, match="low must not exceed high"):
        sw.factor2_grid(1.0, 0.5)


def test_largest_stable_lr() -> None:
    lrs = [0.125, 0.25, 0.5, 1.0]
    assert sw.largest_stable_lr(lrs, [False, False, True, True]) == 0.25
    assert sw.largest_stable_lr(lrs, [False] * 4) == 1.0
    assert math.isnan(sw.largest_stable_lr(lrs, [True, False, False, False]))
    # an isolated stable rate above the edge does not count; one diverged seed is enough
    assert sw.largest_stable_lr(lrs, [False, True, False, True]) == 0.125
    assert sw.largest_stable_lr(lrs, np.array([[0, 0], [0, 0], [0, 1], [1, 1]], bool)) == 0.25
    with pytest.raises(ValueError, match="diverged must have shape"):
        sw.largest_stable_lr(lrs, [False, True])
    with pytest.raises(ValueError, match="strictly increasing"):
        sw.largest_stable_lr([1.0, 0.5], [False, False])


def test_best_lr_best_pair_and_steps_to_reach() -> None:
    lrs = [0.1, 0.2, 0.4]
    assert sw.best_lr(lrs, np.array([[0.5, 0.7], [0.2, 0.4], [0.1, np.nan]])) == (0.2, pytest.approx(0.3))
    L = np.full((2, 3, 2), 1.0)
    L[1, 2] = [0.1, 0.3]
    L[0, 0] = [0.01, np.nan]  # a diverged seed disqualifies the pair
    assert sw.best_pair([1e-3, 1e-2], lrs, L) == (1e-2, 0.4, pytest.approx(0.2))
    assert sw.best_pair([1e-3, 1e-2], lrs, np.full((2, 3), np.nan))[2] == math.inf
    assert sw.steps_to_reach([1.0, 0.5, np.nan, 0.2, 0.1], 0.2) == 3
    assert sw.steps_to_reach([1.0, 0.5], 0.2) is None
    with pytest.raises(ValueError, match="losses must have shape"):
        sw.best_pair([1.0], [1.0, 2.0], np.ones((2, 2)))


def test_fit_exponent_is_lrkit_fit_power_law() -> None:
    from lrkit.fit import fit_power_law

    assert sw.fit_exponent is fit_power_law  # tested in tests/test_fit.py


def test_snapshots_near_optimal_centre_and_step_terms(task: sw.LoRATask) -> None:
    res = sw.run_lora_sweep(task, [0.01, 0.01], init=["A", "B"], seed=[1, 2], steps=4,
                            snapshots=[0, 3, 4], progress=False)
    assert sorted(res.snapshots) == [0, 3, 4]
    A0, B0 = sw.init_factors(["A", "B"], [1, 2], 4, task.width, 1.0)
    assert torch.equal(res.snapshots[0][0], A0) and torch.equal(res.snapshots[0][1], B0)
    assert torch.equal(res.snapshots[4][0], res.A) and torch.equal(res.snapshots[4][1], res.B)
    (A, B), (A2, B2) = res.snapshots[3], res.snapshots[4]
    d = sw.step_terms(task.Z, A, B, A2, B2)
    Zt = task.Z.T.double()
    change = (B2.double() @ A2.double() - B.double() @ A.double()) @ Zt
    parts = (B.double() @ (A2 - A).double() @ Zt, (B2 - B).double() @ A.double() @ Zt,
             (B2 - B).double() @ (A2 - A).double() @ Zt)
    assert torch.allclose(sum(parts), change, atol=1e-10)       # the three terms add up exactly
    for name, part in zip(("delta1", "delta2", "delta3"), parts):
        assert torch.allclose(d[name], part.square().mean((1, 2)).sqrt())
    assert torch.allclose(d["Z_A"], sw.feature_rms(A, task.Z))
    assert d["delta1"][0] > 0 and float(sw.feature_rms(A0, task.Z)[1]) == 0.0   # Init[B]: A0 = 0
    with pytest.raises(ValueError, match="snapshots must be steps between 0 and steps = 4"):
        sw.run_lora_sweep(task, 0.01, steps=4, snapshots=[5], progress=False)
    with pytest.raises(ValueError, match="A, A_next must be"):
        sw.step_terms(task.Z, A, B, A2[:, :2], B2)
    lrs = [0.1, 0.2, 0.4, 0.8, 1.6]
    flat = np.array([1.0, 0.52, 0.5, 0.54, 2.0])              # near-optimal: 0.2, 0.4, 0.8
    assert sw.near_optimal_centre(lrs, flat) == pytest.approx(0.4)
    assert sw.near_optimal_centre(lrs, flat, within=0.0) == pytest.approx(0.4)
    assert math.isnan(sw.near_optimal_centre(lrs, np.full(5, np.nan)))
    with pytest.raises(ValueError, match="within must be"):
        sw.near_optimal_centre(lrs, flat, within=-1)


def test_coherence_statistic_fails_on_random_signs() -> None:
    """Chapter 5's coherence claim (exponent 1 within 1/4) rejects an incoherent first step."""
    from lrkit.fit import fit_power_law

    widths = [64, 256, 1024, 4096]
    gen = torch.Generator().manual_seed(0)
    coherent, random_signs = [], []
    for n in widths:
        t = sw.lora_task(n, seed=0, device="cpu")
        one = sw.run_lora_sweep(t, 1e-3, init="B", seed=0, steps=1, snapshots=[0, 1],
                                progress=False)
        dA = one.snapshots[1][0] - one.snapshots[0][0]
        coherent.append(float(sw.feature_rms(dA, t.Z)[0]) / 1e-3)
        signs = torch.randint(0, 2, dA.shape, generator=gen).float() * 2 - 1   # planted
        random_signs.append(float(sw.feature_rms(1e-3 * signs, t.Z)[0]) / 1e-3)
    assert abs(fit_power_law(widths, coherent).exponent - 1.0) <= 0.25
    assert abs(fit_power_law(widths, random_signs).exponent - 1.0) > 0.25


def test_progress_bar_is_optional(task: sw.LoRATask, monkeypatch: pytest.MonkeyPatch) -> None:
    import builtins

    real_import = builtins.__import__

    def no_tqdm(name: str, *args: object, **kwargs: object) -> object:
        if name.startswith("tqdm"):
            raise ImportError("no tqdm here")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_tqdm)
    res = sw.run_lora_sweep(task, 0.01, steps=3, progress=True)  # falls back silently
    assert res.loss.shape == (1, 4)


def test_best_eta_A_per_eta_B_follows_the_valley_floor() -> None:
    eta_A, eta_B = [1e-3, 1e-2, 1e-1], [0.1, 1.0]
    # a valley eta_A * eta_B = 1e-2 with a flat floor: the column minima sit on it
    L = np.array([[[0.9, 0.9], [0.2, 0.2]],
                  [[0.2, 0.2], [0.5, 0.5]],
                  [[0.6, 0.6], [0.8, 0.8]]])
    star, loss = sw.best_eta_A_per_eta_B(eta_A, eta_B, L)
    assert star.tolist() == [1e-2, 1e-3] and loss == pytest.approx([0.2, 0.2])
    L[0, 1] = [0.05, np.nan]      # a diverged seed disqualifies the pair, even with a tempting score
    L[:, 0] = np.nan              # a column where everything diverged
    star, loss = sw.best_eta_A_per_eta_B(eta_A, eta_B, L)
    assert math.isnan(star[0]) and loss[0] == math.inf
    assert star[1] == 1e-2 and loss[1] == pytest.approx(0.5)
    assert sw.best_eta_A_per_eta_B(eta_A, eta_B, L[..., 1])[0][1] == 1e-2      # (LA, LB) without seeds
    with pytest.raises(ValueError, match="losses must have shape"):
        sw.best_eta_A_per_eta_B(eta_A, eta_B, np.ones((2, 2, 1)))
    with pytest.raises(ValueError, match="eta_B must be positive"):
        sw.best_eta_A_per_eta_B(eta_A, [1.0, 0.1], L)
