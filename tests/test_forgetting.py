"""Chapter 8's tasks and batched fine-tuning: the sweep is exactly add_lora + Adam, and full FT + Adam."""

from __future__ import annotations

import copy
import math

import pytest
import torch
from forgetting_helpers import tiny_task

from lrkit import add_lora, lora_layers, spectra
from lrkit import forgetting as fg
from lrkit.env import generator
from lrkit.transformer import ALL_TARGETS, next_token_loss


@pytest.fixture(scope="module")
def setup() -> dict:
    return tiny_task(pretrain_steps=30)


def test_chains_are_sparse_stochastic_matrices() -> None:
    P = fg.random_chains(2, 10, 3, seed=0)
    assert P.shape == (2, 10, 10) and torch.allclose(P.sum(-1), torch.ones(2, 10, dtype=P.dtype))
    assert bool(((P > 0).sum(-1) == 3).all())
    with pytest.raises(ValueError, match="support"):
        fg.random_chains(1, 4, 5, seed=0)


def test_entropy_rate_of_known_chains() -> None:
    V = 6
    perm = torch.eye(V, dtype=torch.float64)[torch.arange(V).roll(1)]
    uniform = torch.full((V, V), 1.0 / V, dtype=torch.float64)
    assert fg.entropy_rate(perm).item() == pytest.approx(0.0, abs=1e-12)
    assert fg.entropy_rate(uniform).item() == pytest.approx(math.log(V))


def test_sequences_follow_their_chain_and_the_bayes_loss_of_one_chain_is_its_log_likelihood() -> None:
    P = fg.random_chains(1, 10, 2, seed=4)
    x = fg.sample_sequences(P, 200, 12, seed=5)
    steps = P[0, x[:, :-1], x[:, 1:]]
    assert bool((steps > 0).all())
    assert fg.bayes_loss(P, x) == pytest.approx(-steps.log().mean().item(), rel=1e-9)
    assert abs(fg.bayes_loss(P, x) - fg.entropy_rate(P).item()) < 0.1      # the empirical loss near the rate


def test_pretraining_lowers_the_source_loss(setup: dict) -> None:
    assert setup["losses"][-1] < setup["losses"][0] - 0.2
    assert not any(p.requires_grad for p in setup["model"].parameters())


def _batches(seed: int, n: int, batch: int, steps: int) -> list[torch.Tensor]:
    order = torch.randperm(n, generator=generator(seed))
    per_epoch = n // batch
    return [order[(s % per_epoch) * batch:(s % per_epoch + 1) * batch] for s in range(steps)]


def test_lora_sweep_equals_add_lora_trained_by_adam(setup: dict) -> None:
    model, train, steps, batch, lr = setup["model"], setup["train"], 4, 8, 3e-3
    sweep = fg.finetune_sweep(model, train, setup["evals"], "lora", lrs=[lr, lr], seeds=[0, 1], steps=steps,
                              batch=batch, eval_every=2, ranks=[2, 4])     # rank 2 is padded to 4
    ref = add_lora(copy.deepcopy(model), 2, alpha=4.0, targets=list(ALL_TARGETS))
    for name, layer in lora_layers(ref):
        with torch.no_grad():
            layer.A.copy_(_initial_A(model, name, 0, 4)[:2])
    opt = torch.optim.Adam([p for p in ref.parameters() if p.requires_grad], lr=lr)
    for idx in _batches(0, train.shape[0], batch, steps):
        x = train[idx]
        loss = next_token_loss(ref(x), x)
        opt.zero_grad()
        loss.backward()
        opt.step()
    for name, layer in lora_layers(ref):
        expected = layer.base.weight + layer.delta_weight()
        assert torch.allclose(sweep.weights[0][name + ".weight"], expected.detach(), atol=1e-5), name
    with torch.no_grad():
        assert sweep.target_loss[0, -1].item() == pytest.approx(
            next_token_loss(ref(setup["evals"]["target"]), setup["evals"]["target"]).item(), rel=1e-4)


def _initial_A(model: torch.nn.Module, name: str, seed: int, r_max: int) -> torch.Tensor:
    """The sweep's A for one configuration: drawn layer after layer from generator(seed)."""
    g = generator(seed)
    names = [n[:-len(".weight")] for n, _ in model.named_parameters()
             if n.endswith(".weight") and n.split(".")[-2] in ALL_TARGETS]
    for n in names:
        in_f = model.get_submodule(n).in_features
        A = (2 * torch.rand(r_max, in_f, generator=g) - 1) / math.sqrt(in_f)
        if n == name:
            return A
    raise KeyError(name)


def test_full_sweep_equals_full_fine_tuning_by_adam(setup: dict) -> None:
    model, train, steps, batch, lr = setup["model"], setup["train"], 3, 8, 1e-3
    sweep = fg.finetune_sweep(model, train, setup["evals"], "full", lrs=[lr], seeds=[2], steps=steps,
                              batch=batch, eval_every=3)
    ref = copy.deepcopy(model)
    for p in ref.parameters():
        p.requires_grad_(True)
    opt = torch.optim.Adam(ref.parameters(), lr=lr)
    for idx in _batches(2, train.shape[0], batch, steps):
        x = train[idx]
        loss = next_token_loss(ref(x), x)
        opt.zero_grad()
        loss.backward()
        opt.step()
    for name, p in ref.named_parameters():
        assert torch.allclose(sweep.weights[0][name], p.detach(), atol=1e-5), name


def _max_update_rank(sweep: fg.Sweep, model: torch.nn.Module, k: int) -> int:
    return max(spectra.rank_for_energy(d, 0.999) for d in sweep.updates(model, k).values())


def test_plant_the_rank_check_fails_when_lora_is_replaced_by_full_fine_tuning(setup: dict) -> None:
    """The chapter's check 'a rank-r adapter's update has rank <= r' holds for the LoRA sweep and
    fails when the LoRA runs are swapped for full fine-tuning (the mistake it must catch)."""
    model, train = setup["model"], setup["train"]
    kw = dict(lrs=[1e-2], seeds=[0], steps=5, batch=8, eval_every=5)
    lora = fg.finetune_sweep(model, train, setup["evals"], "lora", ranks=[2], **kw)
    full = fg.finetune_sweep(model, train, setup["evals"], "full", **kw)
    assert _max_update_rank(lora, model, 0) <= 2
    assert _max_update_rank(full, model, 0) > 2


def test_pareto_excess_measures_the_distance_above_the_front() -> None:
    front_t = torch.tensor([3.0, 2.0, 1.0])
    front_s = torch.tensor([1.0, 2.0, 3.0])
    got = fg.pareto_excess(front_t, front_s, torch.tensor([2.0, 2.5, 0.5]), torch.tensor([2.5, 1.0, 1.0]))
    assert got[0].item() == pytest.approx(0.5) and got[1].item() == pytest.approx(-1.0) and math.isnan(got[2])


def test_sweep_arguments_are_checked(setup: dict) -> None:
    with pytest.raises(ValueError, match="method"):
        fg.finetune_sweep(setup["model"], setup["train"], setup["evals"], "prefix", [1e-3], [0], 2, 8, 1)
    with pytest.raises(ValueError, match="ranks"):
        fg.finetune_sweep(setup["model"], setup["train"], setup["evals"], "lora", [1e-3], [0], 2, 8, 1)
    with pytest.raises(ValueError, match="rank 32"):
        fg.finetune_sweep(setup["model"], setup["train"], setup["evals"], "lora", [1e-3], [0], 2, 8, 1, ranks=[32])


def test_input_weighting_measures_the_output_change_on_the_data() -> None:
    g = torch.Generator().manual_seed(0)
    delta = torch.randn(5, 7, generator=g, dtype=torch.float64)
    h = torch.randn(300, 3, generator=g, dtype=torch.float64) @ torch.randn(3, 7, generator=g, dtype=torch.float64)
    weighted = fg.input_weighted(delta, h.T @ h / 300)
    assert weighted.square().sum().item() == pytest.approx((h @ delta.T).square().sum(1).mean().item(), rel=1e-8)
    # inputs in a 3-dim subspace: numerical rank 3 (sqrt of round-off eigenvalues is ~1e-8)
    assert torch.linalg.matrix_rank(weighted, rtol=1e-6).item() == 3


def test_an_unchanged_model_has_no_intruders_and_mitigation_with_lambda_one_changes_nothing(setup: dict) -> None:
    model = setup["model"]
    weights = {n: p.detach().clone() for n, p in model.named_parameters()}
    count, alignment = fg.intruder_summary(model, weights)
    assert count == 0 and alignment == pytest.approx(1.0)
    sweep = fg.finetune_sweep(model, setup["train"], setup["evals"], "lora", lrs=[1e-2], seeds=[0], steps=3,
                              batch=8, eval_every=3, ranks=[2])
    same = fg.mitigate(model, sweep.weights[0], rank=None, lam=1.0)
    assert all(torch.allclose(same[n], sweep.weights[0][n], atol=1e-6) for n in fg.projection_names(model))


def test_layer_second_moments_are_the_inputs_gram_matrices(setup: dict) -> None:
    model, x = setup["model"], setup["evals"]["target"]
    moments = fg.layer_second_moments(model, {}, x)
    assert set(moments) == set(fg.projection_names(model))
    for m in moments.values():
        assert torch.allclose(m, m.T) and torch.linalg.eigvalsh(m).min() > -1e-8
