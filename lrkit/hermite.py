"""Activations with a chosen information exponent, and their Hermite expansions (Chapter 9).

**Hermite expansion.** With the orthonormal (probabilists') Hermite polynomials
``h_p = He_p / sqrt(p!)`` and ``z ~ N(0, 1)``, an activation expands as
``sigma(z) = sum_p mu_p h_p(z)`` with ``mu_p = E[sigma(z) h_p(z)]``
(:func:`hermite_coefficients`, by Gauss-Hermite quadrature: exact for polynomials of degree
below twice the number of nodes, and accurate for smooth or piecewise-linear activations).
The **information exponent** is the first ``p >= 1`` with ``mu_p != 0``
(:func:`information_exponent`): 1 for ReLU, tanh and sigmoid, 2 for ``He_2``, 3 for ``He_3``
and for the tapered ``He_3`` of the calibration.

**Mehler's formula** gives the correlation of the derivative at two jointly Gaussian points,
the quantity that drives the fine-tuning dynamics (:func:`derivative_kernel`): for ``X, Y``
with ``Var X = Var Y = v`` and ``Cov(X, Y) = c``, write ``sigma_v(t) = sigma(sqrt(v) t)`` and
``rho = c / v``; then ``sigma'(X) = sigma_v'(X / sqrt v) / sqrt v`` and, since
``sigma_v' = sum_p sqrt(p + 1) mu_{p+1}(sigma_v) h_p``,

    E[sigma'(X) sigma'(Y)] = (1 / v) sum_{p >= 0} (p + 1) mu_{p+1}(sigma_v)^2 rho^p .

Every coefficient enters with weight ``rho^p``: at ``rho`` of order one (a neuron of the base
model seen at two nearby weights) all of them count; at ``rho`` near zero (a GLM started at a
random direction) only the first non-zero one does. ReLU's series converges slowly at
``rho -> 1``, so ReLU uses the closed form ``1/4 + arcsin(rho) / (2 pi)`` (the series is
checked against it in the tests).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import torch

from ._validate import positive_float, positive_int

Fn = Callable[[torch.Tensor], torch.Tensor]

__all__ = ["Activation", "ACTIVATIONS", "activation", "hermite_coefficients", "information_exponent",
           "derivative_kernel"]


@lru_cache(maxsize=8)
def _nodes(n: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Golub-Welsch: the nodes are the eigenvalues of the Jacobi matrix of the He_p (off-diagonal
    sqrt(p)); its eigenvectors hold ``vec[p, i] = sqrt(w_i) h_p(z_i)`` (up to one sign per column), so
    ``w_i h_p(z_i) = vec[0, i] vec[p, i]`` without overflow (the weights w_i sum to 1: E over N(0, 1))."""
    off = np.sqrt(np.arange(1, n, dtype=float))
    z, vec = np.linalg.eigh(np.diag(off, 1) + np.diag(off, -1))
    return torch.from_numpy(z), torch.from_numpy(vec[0] * vec)


def hermite_coefficients(fn: Fn, n: int = 12, scale: float = 1.0, nodes: int = 400) -> torch.Tensor:
    """``mu_0, ..., mu_{n-1}`` of ``t -> fn(scale * t)`` in the orthonormal Hermite basis, float64 ``(n,)``.

    ``mu_p = E[fn(scale z) h_p(z)]``, ``z ~ N(0, 1)``, by Gauss-Hermite quadrature with ``nodes`` points.
    """
    positive_int(n, "n")
    positive_int(nodes, "nodes")
    positive_float(scale, "scale")
    if n > nodes // 2:
        raise ValueError(f"n must be at most nodes // 2 = {nodes // 2} for an accurate quadrature, got n={n}")
    z, wh = _nodes(nodes)  # wh[p, i] = w_i h_p(z_i)
    return wh[:n] @ fn(scale * z).to(torch.float64)


def information_exponent(coeffs: torch.Tensor, tol: float = 1e-6) -> int:
    """The first ``p >= 1`` with ``|mu_p| > tol`` (``coeffs`` from :func:`hermite_coefficients`)."""
    c = torch.as_tensor(coeffs, dtype=torch.float64)
    if c.ndim != 1 or c.numel() < 2:
        raise ValueError(f"coeffs must be a 1-D tensor (mu_0, mu_1, ...) with at least 2 entries, got {tuple(c.shape)}")
    positive_float(tol, "tol")
    big = (c[1:].abs() > tol).nonzero()
    if big.numel() == 0:
        raise ValueError(f"no Hermite coefficient above tol={tol} among mu_1..mu_{c.numel() - 1}: pass more")
    return int(big[0]) + 1


@dataclass(frozen=True)
class Activation:
    """A scalar activation ``fn`` with its derivative ``grad`` (both elementwise on tensors)."""

    name: str
    fn: Fn
    grad: Fn
    note: str
    kernel: Callable[[torch.Tensor], torch.Tensor] | None = None  # closed form of E[s'(X)s'(Y)] at rho, v = 1

    def __call__(self, z: torch.Tensor) -> torch.Tensor:
        return self.fn(z)

    def coefficients(self, n: int = 12, scale: float = 1.0) -> torch.Tensor:
        """Hermite coefficients of ``t -> fn(scale t)`` (see :func:`hermite_coefficients`)."""
        return hermite_coefficients(self.fn, n, scale)


_S6 = math.sqrt(6.0)


def _taper(z: torch.Tensor) -> torch.Tensor:
    return (z ** 3 - 3 * z) * torch.exp(-z * z / 8) / _S6


def _taper_grad(z: torch.Tensor) -> torch.Tensor:
    return (3 * z * z - 3 - z * (z ** 3 - 3 * z) / 4) * torch.exp(-z * z / 8) / _S6


# mu_1 of the taper, removed so that the tapered He3 has information exponent 3
_C1 = float(hermite_coefficients(_taper, 2)[1])

ACTIVATIONS: dict[str, Activation] = {
    "relu": Activation("relu", lambda z: z.clamp(min=0), lambda z: (z > 0).to(z.dtype),
                       "max(z, 0); information exponent 1",
                       kernel=lambda rho: 0.25 + torch.asin(rho.clamp(-1, 1)) / (2 * math.pi)),
    "tanh": Activation("tanh", torch.tanh, lambda z: 1 - torch.tanh(z) ** 2, "information exponent 1"),
    "sigmoid": Activation("sigmoid", torch.sigmoid, lambda z: torch.sigmoid(z) * (1 - torch.sigmoid(z)),
                          "information exponent 1"),
    "he2": Activation("he2", lambda z: (z * z - 1) / math.sqrt(2), lambda z: math.sqrt(2) * z,
                      "He_2(z)/sqrt(2) (the quadratic); information exponent 2"),
    "he3": Activation("he3", lambda z: (z ** 3 - 3 * z) / _S6, lambda z: (3 * z * z - 3) / _S6,
                      "He_3(z)/sqrt(6); information exponent 3, cubic tails"),
    "he3_tapered": Activation("he3_tapered", lambda z: _taper(z) - _C1 * z, lambda z: _taper_grad(z) - _C1,
                              "He_3(z) exp(-z^2/8)/sqrt(6) - c1 z with mu_1 = 0; information exponent 3, "
                              "linear tails"),
}


def activation(name: str | Activation) -> Activation:
    """The activation called ``name`` (one of ``ACTIVATIONS``), or ``name`` itself if it is one."""
    if isinstance(name, Activation):
        return name
    if name not in ACTIVATIONS:
        raise ValueError(f"activation must be one of {tuple(ACTIVATIONS)}, got {name!r}")
    return ACTIVATIONS[name]


def derivative_kernel(act: str | Activation, cov: torch.Tensor | float, var: float,
                      terms: int = 120) -> torch.Tensor:
    """``E[sigma'(X) sigma'(Y)]`` for ``Var X = Var Y = var`` and ``Cov(X, Y) = cov`` (any shape of ``cov``).

    Mehler's series (module docstring) with ``terms`` terms, or the activation's closed form.
    """
    act = activation(act)
    v = positive_float(var, "var")
    rho = torch.as_tensor(cov, dtype=torch.float64) / v
    if bool((rho.abs() > 1 + 1e-9).any()):
        raise ValueError(f"|cov| must be at most var = {v}, got max |cov| = {float(rho.abs().max()) * v:.4g}")
    if act.kernel is not None and act.name == "relu":  # scale-free: sigma'(sqrt(v) t) = sigma'(t)
        return act.kernel(rho)
    mu = hermite_coefficients(act.fn, terms + 1, scale=math.sqrt(v), nodes=max(400, 2 * terms + 40))
    p = torch.arange(terms, dtype=torch.float64)
    weights = (p + 1) * mu[1:] ** 2 / v
    return (weights * rho.clamp(-1, 1)[..., None] ** p).sum(-1)
