"""lrkit.hierarchy (Chapter 2): the tree's features, its modes by level, and the level strengths."""

from __future__ import annotations

import math

import pytest
import torch

from lrkit import env, hierarchy


def test_tree_features_mark_the_items_below_each_node() -> None:
    Y = hierarchy.tree_features(2)
    assert Y.shape == (7, 4)
    assert Y[0].tolist() == [1, 1, 1, 1] and Y[1].tolist() == [1, 1, 0, 0] and Y[6].tolist() == [0, 0, 0, 1]
    assert torch.equal(Y.sum(1), torch.tensor([4.0, 2, 2, 1, 1, 1, 1], dtype=torch.float64))


def test_tree_modes_are_grouped_by_level_with_equal_strengths() -> None:
    sigma, U, V, s, level = hierarchy.tree_modes(3, scale=2.0)
    dev = env.get_device()
    assert sigma.device.type == U.device.type == V.device.type == dev.type
    assert sigma.dtype == env.float_dtype(dev) and s.device.type == level.device.type == "cpu"
    assert level.tolist() == [0, 1, 2, 2, 3, 3, 3, 3]  # 1 root mode, then 2^(l-1) modes at level l
    for l in range(4):
        s_l = s[level == l]
        assert torch.allclose(s_l, s_l[0].expand_as(s_l))
    assert bool((s[:-1] >= s[1:] - 1e-12).all())  # broader distinctions are stronger
    rebuilt = (U.cpu() * s) @ V.cpu().T
    torch.testing.assert_close(rebuilt, sigma.cpu())
    # the root mode: Y^T Y 1 = (8 + 4 + 2 + 1) 1 (each item's ancestors' sizes), so s_0 = scale sqrt(15 / P)
    assert float(s[0]) == pytest.approx(2.0 * math.sqrt(15 / 8), rel=1e-12)


def test_level_strengths_are_the_mean_mode_strength_per_level() -> None:
    sigma, U, V, s, level = hierarchy.tree_modes(3)
    per_level = hierarchy.level_strengths(sigma, U, V, level)
    want = torch.stack([s[level == l].mean() for l in range(4)])
    torch.testing.assert_close(per_level.cpu(), want.to(per_level.dtype))
    batched = hierarchy.level_strengths(torch.stack([sigma, 0.5 * sigma]), U, V, level)
    torch.testing.assert_close(batched[1], 0.5 * batched[0])


@pytest.mark.parametrize("levels", [0, 13, 2.5])
def test_bad_levels_are_refused(levels: object) -> None:
    with pytest.raises((ValueError, TypeError), match="levels"):
        hierarchy.tree_features(levels)  # type: ignore[arg-type]
