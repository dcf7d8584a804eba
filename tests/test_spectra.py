"""Unit tests of lrkit.spectra: energy fractions, ranks, overlaps, bad inputs."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from lrkit import spectra


def _matrix_with_spectrum(s: list[float], n: int = 12, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    U, _ = torch.linalg.qr(torch.randn(n, len(s), generator=g, dtype=torch.float64))
    V, _ = torch.linalg.qr(torch.randn(n + 3, len(s), generator=g, dtype=torch.float64))
    return (U * torch.tensor(s, dtype=torch.float64)) @ V.T


def test_singular_values_sorted_and_match_construction() -> None:
    M = _matrix_with_spectrum([3.0, 2.0, 1.0])
    s = spectra.singular_values(M)
    assert s.shape == (12,)
    assert torch.allclose(s[:3], torch.tensor([3.0, 2.0, 1.0], dtype=torch.float64))
    assert torch.all(s[3:] < 1e-12)


def test_energy_fraction_is_cumulative_share_of_squares() -> None:
    e = spectra.energy_fraction([2.0, 1.0, 1.0])  # energies 4, 1, 1 of total 6
    assert torch.allclose(e, torch.tensor([4 / 6, 5 / 6, 1.0], dtype=torch.float64))
    assert spectra.energy_fraction([1.0, 3.0])[0] == pytest.approx(0.9)  # sorted first


def test_rank_for_energy_definition() -> None:
    s = [2.0, 1.0, 1.0]  # E = 0.667, 0.833, 1
    assert spectra.rank_for_energy(s, 0.5) == 1
    assert spectra.rank_for_energy(s, 2 / 3) == 1  # boundary counts as reached
    assert spectra.rank_for_energy(s, 0.8) == 2
    assert spectra.rank_for_energy(s, 0.9) == 3
    assert spectra.rank_for_energy(s, 1.0) == 3


def test_rank_for_energy_on_matrix_of_known_rank() -> None:
    M = _matrix_with_spectrum([1.0] * 5, n=20)
    assert spectra.rank_for_energy(M, 1.0) == 5
    assert spectra.rank_for_energy(M, 0.9) == 5  # 4/5 = 0.8 < 0.9
    assert spectra.rank_for_energy(M, 0.8) == 4


def test_rank_for_energy_power_law_matches_harmonic_numbers() -> None:
    n = 256
    s = np.arange(1, n + 1) ** -0.5  # energies 1/i: E_k = H_k / H_n
    H = np.cumsum(1.0 / np.arange(1, n + 1))
    expected = int(np.argmax(H / H[-1] >= 0.9)) + 1
    assert spectra.rank_for_energy(s, 0.9) == expected


def test_effective_rank_limits() -> None:
    assert spectra.effective_rank([5.0, 0.0, 0.0]) == pytest.approx(1.0)
    assert spectra.effective_rank([1.0] * 7) == pytest.approx(7.0)
    M = _matrix_with_spectrum([3.0, 2.0, 1.0])
    p = np.array([3.0, 2.0, 1.0]) / 6
    assert spectra.effective_rank(M) == pytest.approx(math.exp(-(p * np.log(p)).sum()), rel=1e-9)


def test_stable_rank() -> None:
    assert spectra.stable_rank([2.0, 1.0, 1.0]) == pytest.approx(6 / 4)


def test_subspace_overlap_values() -> None:
    eye = torch.eye(6, dtype=torch.float64)
    assert spectra.subspace_overlap(eye[:, :2], eye[:, :2]) == pytest.approx(1.0)
    assert spectra.subspace_overlap(eye[:, :2], eye[:, 2:4]) == pytest.approx(0.0)
    assert spectra.subspace_overlap(eye[:, :1], eye[:, :3]) == pytest.approx(1.0)  # contained
    # spans, not bases: a non-orthonormal basis of the same plane overlaps fully
    B = eye[:, :2] @ torch.tensor([[2.0, 1.0], [0.0, 3.0]], dtype=torch.float64)
    assert spectra.subspace_overlap(eye[:, :2], B) == pytest.approx(1.0)
    # 45 degrees: cos^2 = 1/2
    v = (eye[:, 0] + eye[:, 1])[:, None]
    assert spectra.subspace_overlap(eye[:, :1], v) == pytest.approx(0.5)


def test_subspace_overlap_random_is_small() -> None:
    g = torch.Generator().manual_seed(0)
    n, k = 400, 4
    vals = [spectra.subspace_overlap(torch.randn(n, k, generator=g), torch.randn(n, k, generator=g))
            for _ in range(20)]
    assert np.mean(vals) == pytest.approx(k / n, rel=0.3)


def test_top_subspace_shapes_and_content() -> None:
    M = _matrix_with_spectrum([3.0, 2.0, 1.0])
    U2 = spectra.top_subspace(M, 2)
    V2 = spectra.top_subspace(M, 2, side="right")
    assert U2.shape == (12, 2) and V2.shape == (15, 2)
    assert torch.allclose(U2.T @ U2, torch.eye(2, dtype=torch.float64), atol=1e-12)
    # projecting M onto the top-2 subspaces keeps energy 9 + 4
    assert (U2.T @ M @ V2).square().sum().item() == pytest.approx(13.0)


def test_accepts_numpy_and_float32() -> None:
    M = np.diag([3.0, 1.0]).astype(np.float32)
    assert spectra.rank_for_energy(M, 0.9) == 1
    assert spectra.rank_for_energy(torch.tensor(M), 0.95) == 2


@pytest.mark.parametrize("frac", [0.0, -0.1, 1.5, float("nan")])
def test_bad_frac(frac: float) -> None:
    with pytest.raises(ValueError, match=r"frac must be in \(0, 1\]"):
        spectra.rank_for_energy([1.0, 1.0], frac)


def test_bad_inputs_name_the_argument() -> None:
    with pytest.raises(TypeError, match="frac"):
        spectra.rank_for_energy([1.0], "0.9")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="2-D matrix or a 1-D vector"):
        spectra.rank_for_energy(torch.zeros(2, 2, 2))
    with pytest.raises(ValueError, match="finite"):
        spectra.energy_fraction([1.0, float("nan")])
    with pytest.raises(ValueError, match=">= 0"):
        spectra.energy_fraction([1.0, -1.0])
    with pytest.raises(ValueError, match="zero"):
        spectra.energy_fraction(torch.zeros(3, 3))
    with pytest.raises(ValueError, match="zero"):
        spectra.effective_rank([0.0, 0.0])
    with pytest.raises(ValueError, match="empty"):
        spectra.energy_fraction([])
    with pytest.raises(ValueError, match="2-D matrix"):
        spectra.singular_values([1.0, 2.0])
    with pytest.raises(ValueError, match=r"1 <= k <= min\(out, in\)"):
        spectra.top_subspace(torch.eye(3), 4)
    with pytest.raises(ValueError, match="side must be one of"):
        spectra.top_subspace(torch.eye(3), 1, side="up")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="same number of rows"):
        spectra.subspace_overlap(torch.eye(3), torch.eye(4))
    with pytest.raises(ValueError, match="linearly dependent"):
        spectra.subspace_overlap(torch.ones(4, 2), torch.eye(4)[:, :2])
    with pytest.raises(TypeError, match="complex"):
        spectra.singular_values(torch.eye(2, dtype=torch.complex64))
