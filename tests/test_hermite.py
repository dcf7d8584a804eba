"""Unit tests of lrkit.hermite: quadrature coefficients, information exponents, Mehler's kernel, bad inputs."""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch

from lrkit import hermite


def test_polynomials_have_exact_coefficients() -> None:
    mu = hermite.hermite_coefficients(lambda z: z ** 3 + z ** 2, 6)   # z^3 = He3 + 3 He1, z^2 = He2 + 1
    expected = torch.tensor([1.0, 3.0, math.sqrt(2), math.sqrt(6), 0.0, 0.0], dtype=torch.float64)
    assert torch.allclose(mu, expected, atol=1e-10)


def test_relu_coefficients_match_the_closed_form() -> None:
    mu = hermite.activation("relu").coefficients(5)
    exact = [1 / math.sqrt(2 * math.pi), 0.5, 1 / math.sqrt(4 * math.pi), 0.0, -1 / math.sqrt(2 * math.pi) / math.sqrt(24)]
    assert torch.allclose(mu, torch.tensor(exact, dtype=torch.float64), atol=1e-3)


@pytest.mark.parametrize("name,ie", [("relu", 1), ("tanh", 1), ("sigmoid", 1), ("he2", 2), ("he3", 3),
                                     ("he3_tapered", 3)])
def test_information_exponents(name: str, ie: int) -> None:
    assert hermite.information_exponent(hermite.activation(name).coefficients(8)) == ie


def test_tapered_he3_has_mu3_one_half_and_linear_tails() -> None:
    mu = hermite.activation("he3_tapered").coefficients(6)
    assert abs(float(mu[1])) < 1e-10 and abs(float(mu[3]) - 0.50) < 0.01     # review's calibration: mu_3 = 0.50
    z = torch.tensor([50.0, 100.0], dtype=torch.float64)
    slope = hermite.activation("he3_tapered")(z) / z
    assert abs(float(slope[0] - slope[1])) < 1e-12 and abs(float(slope[0])) > 0.1


@pytest.mark.parametrize("name", ["relu", "tanh", "he3_tapered", "sigmoid"])
def test_derivative_kernel_matches_monte_carlo(name: str) -> None:
    gen = torch.Generator().manual_seed(0)
    n, v, c = 400_000, 1.7, 0.6
    z1, z2 = torch.randn(2, n, generator=gen, dtype=torch.float64)
    rho = c / v
    x, y = math.sqrt(v) * z1, math.sqrt(v) * (rho * z1 + math.sqrt(1 - rho ** 2) * z2)
    act = hermite.activation(name)
    prod = act.grad(x) * act.grad(y)
    assert abs(float(hermite.derivative_kernel(name, c, v)) - prod.mean().item()) < 4 * prod.std().item() / math.sqrt(n)


def test_relu_series_agrees_with_the_arcsine_closed_form_away_from_one() -> None:
    series = dataclasses.replace(hermite.activation("relu"), kernel=None, name="relu-series")
    rho = torch.linspace(-0.9, 0.9, 7, dtype=torch.float64)
    assert torch.allclose(hermite.derivative_kernel(series, rho, 1.0, terms=150),
                          hermite.derivative_kernel("relu", rho, 1.0), atol=2e-3)


def test_bad_inputs_name_the_argument() -> None:
    with pytest.raises(ValueError, match="activation must be one of"):
        hermite.activation("gelu")
    with pytest.raises(ValueError, match="n must be at most"):
        hermite.hermite_coefficients(torch.tanh, 300, nodes=400)
    with pytest.raises(ValueError, match="positive int"):
        hermite.hermite_coefficients(torch.tanh, 0)
    with pytest.raises(ValueError, match=r"\|cov\| must be at most var"):
        hermite.derivative_kernel("tanh", 2.0, 1.0)
    with pytest.raises(ValueError, match="no Hermite coefficient above"):
        hermite.information_exponent(torch.tensor([1.0, 0.0, 0.0]))
