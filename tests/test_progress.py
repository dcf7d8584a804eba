"""lrkit.progress: one rule for progress bars (full scale only, never in an executed build)."""

from __future__ import annotations

import sys

import numpy as np
import pytest

from lrkit import progress as pg


@pytest.fixture
def env(monkeypatch):
    """A clean environment: no ledger, small scale unless a test says otherwise."""
    monkeypatch.delenv("LRKIT_LEDGER", raising=False)
    monkeypatch.setenv("LRKIT_SCALE", "small")
    return monkeypatch


def test_default_is_off_at_small_scale(env) -> None:
    assert pg.progress_enabled() is False
    assert isinstance(pg.progress_bar(10), pg.SilentBar)


def test_default_is_on_at_full_scale(env) -> None:
    pytest.importorskip("tqdm")
    env.setenv("LRKIT_SCALE", "full")
    assert pg.progress_enabled() is True
    bar = pg.progress_bar(3, desc="test")
    try:
        assert not isinstance(bar, pg.SilentBar) and bar.total == 3
    finally:
        bar.close()


def test_default_is_off_in_the_book_build_even_at_full_scale(env) -> None:
    env.setenv("LRKIT_SCALE", "full")
    env.setenv("LRKIT_LEDGER", "/tmp/ledger.jsonl")  # what the book build and claims runs set
    assert pg.in_executed_build()
    assert pg.progress_enabled() is False
    assert isinstance(pg.progress_bar(10), pg.SilentBar)


@pytest.mark.parametrize("scale", ["small", "full"])
@pytest.mark.parametrize("ledger", [None, "/tmp/ledger.jsonl"])
def test_an_explicit_choice_wins(env, scale, ledger) -> None:
    env.setenv("LRKIT_SCALE", scale)
    if ledger:
        env.setenv("LRKIT_LEDGER", ledger)
    assert pg.progress_enabled(True) is True
    assert pg.progress_enabled(False) is False
    assert pg.progress_enabled(np.bool_(True)) is True


def test_an_empty_ledger_variable_is_not_a_build(env) -> None:
    env.setenv("LRKIT_LEDGER", "  ")
    env.setenv("LRKIT_SCALE", "full")
    assert not pg.in_executed_build() and pg.progress_enabled() is True


def test_bad_choice_is_named(env) -> None:
    with pytest.raises(TypeError, match="progress must be True, False or None"):
        pg.progress_enabled("yes")


def test_without_tqdm_every_bar_is_silent(env) -> None:
    env.setitem(sys.modules, "tqdm.auto", None)  # import fails as if tqdm were not installed
    assert isinstance(pg.progress_bar(5, True), pg.SilentBar)


def test_silent_bar_has_tqdms_methods() -> None:
    with pg.SilentBar() as bar:
        bar.update(3)
        bar.set_postfix(loss=1.0)
        bar.set_description("x")


def test_track_yields_every_item_and_closes(env) -> None:
    assert list(pg.track(range(4))) == [0, 1, 2, 3]
    assert list(pg.track((x for x in "ab"), True)) == ["a", "b"]  # no len: a bar without total


def test_track_advances_a_shown_bar_once_per_item(env) -> None:
    seen: list = []

    class Bar(pg.SilentBar):
        def update(self, n: int = 1) -> None:
            seen.append(n)

        def close(self) -> None:
            seen.append("closed")

    env.setattr(pg, "progress_bar", lambda total, enabled=None, desc="": Bar())
    assert list(pg.track([5, 6, 7], True)) == [5, 6, 7]
    assert seen == [1, 1, 1, "closed"]


@pytest.mark.parametrize("run", ["pretrain", "spherical_sgd", "sweep"])
def test_the_long_loops_show_a_bar_when_asked_and_are_silent_by_default(run: str, capsys) -> None:
    pytest.importorskip("tqdm")
    from lrkit import beyond_kernels as bk
    from lrkit import forgetting as fg
    from lrkit import sweep
    from lrkit.spherical_sgd import simulate
    from lrkit.transformer import GPTConfig

    def go(progress: bool | None) -> None:
        if run == "pretrain":
            cfg = GPTConfig(vocab_size=8, block_size=4, n_layer=1, n_head=1, d_model=8)
            fg.pretrain(cfg, fg.random_chains(2, 8, 2, seed=0), steps=3, lr=1e-2, batch=2, seed=0, progress=progress)
        elif run == "spherical_sgd":
            simulate(bk.aligned(3, "relu"), [8], [0], 0.01, 5, device="cpu", progress=progress)
        else:
            sweep.run_lora_sweep(sweep.lora_task(8, 4, 8, seed=0), [1e-3], steps=3, progress=progress)

    go(None)  # small scale (the tests' default): silent
    assert capsys.readouterr().err == ""
    go(True)
    err = capsys.readouterr().err
    assert "it/s" in err or "it]" in err, err
