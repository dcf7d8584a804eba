"""Low-rank fine-tuning beyond kernels, the model: its settings and its outputs (Chapter 9).

The base network ``f(x) = lam . sigma(W x)``, the teacher ``f*(x) = lam . sigma((W + xi c u^T) x)``
and the student ``f_u(x) = lam . sigma((W + xi c_hat u_hat^T) x)`` (or its linearisation around the
base) of Dayi and Chen (COLT 2025), in the reduced coordinates ``g = W x``, ``a = u . x``,
``b = u_hat . x`` (:func:`outputs`). A :class:`Setting` holds what the overlap's dynamics depend on
and computes the drift coefficient ``h(m)`` and the noise ``V(m)``; :func:`aligned`, :func:`glm` and
:func:`faithful` are the course's three instances. The derivations are in :mod:`lrkit.beyond_kernels`,
which re-exports every name here.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from ._validate import choice, positive_float, positive_int
from .env import generator
from .hermite import Activation, activation, derivative_kernel

__all__ = ["MODELS", "Setting", "outputs", "aligned", "glm", "faithful"]


MODELS = ("network", "linear")


def _unit_entries(v: torch.Tensor, name: str, k: int) -> None:
    if v.shape != (k,) or not torch.allclose(v.abs(), torch.full_like(v, 1 / math.sqrt(k)), atol=1e-6):
        raise ValueError(f"{name} must have shape ({k},) with entries +-1/sqrt(k) (the paper's Assumption 3)")


@dataclass(frozen=True)
class Setting:
    """What the dynamics of the overlap depend on: ``k``, ``xi``, the activation, ``lam``, ``c``, ``c_hat``,
    and whether the base weights are present (orthonormal rows) or zero (the GLM)."""

    k: int
    xi: float
    act: Activation
    lam: torch.Tensor
    c: torch.Tensor
    c_hat: torch.Tensor
    base: bool = True

    def __post_init__(self) -> None:
        positive_int(self.k, "k")
        positive_float(self.xi, "xi")
        for name in ("lam", "c", "c_hat"):
            object.__setattr__(self, name, torch.as_tensor(getattr(self, name), dtype=torch.float64).cpu())
        if self.lam.shape != (self.k,):
            raise ValueError(f"lam must have shape ({self.k},), got {tuple(self.lam.shape)}")
        _unit_entries(self.c, "c", self.k)
        _unit_entries(self.c_hat, "c_hat", self.k)

    @property
    def var(self) -> float:
        """Variance of every pre-activation: ``|w_i|^2 + xi^2 / k``."""
        return float(self.base) + self.xi ** 2 / self.k

    def h(self, m: torch.Tensor | float) -> torch.Tensor:
        """The drift coefficient ``h(m)`` (module docstring), exact up to the Hermite series' truncation."""
        m = torch.as_tensor(m, dtype=torch.float64)
        cc = self.xi ** 2 * torch.outer(self.c, self.c_hat)  # (k, k)
        cov = float(self.base) * torch.eye(self.k, dtype=torch.float64) + cc * m[..., None, None]
        ker = derivative_kernel(self.act, cov, self.var)
        return 2 * (torch.outer(self.lam, self.lam) * cc * ker).sum((-2, -1))

    def _draw(self, m: float, n: int, gen: torch.Generator) -> tuple[torch.Tensor, ...]:
        g = torch.randn(n, self.k, generator=gen, dtype=torch.float64) * float(self.base)
        a, e = torch.randn(2, n, generator=gen, dtype=torch.float64)
        return g, a, m * a + math.sqrt(max(1 - m * m, 0.0)) * e

    def outputs(self, g: torch.Tensor, a: torch.Tensor, b: torch.Tensor, model: str = "network"
                ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Teacher output ``y``, student output ``y_hat`` and ``dL/db`` (``grad_u L = dL/db * x``).

    ``g`` ``(..., k)`` the base pre-activations ``W x``, ``a = u . x``, ``b = u_hat . x`` ``(...)``; ``lam``, ``c``,
    ``ch`` ``(k,)`` or ``(..., k)``; ``model`` "network" or "linear" (the student linearised around the base).
    """
        return outputs(self.act, self.xi, self.lam, self.c, self.c_hat, g, a, b, model)

    def noise(self, m: torch.Tensor | float, n: int = 20000, seed: int = 0) -> torch.Tensor:
        """``V(m) = E[(dL/db)^2]``: Monte Carlo with ``n`` samples on 101 overlaps in ``[-1, 1]`` (computed once per
        setting and cached), interpolated linearly at ``m``."""
        key = (n, seed)
        cache = self.__dict__.setdefault("_noise_cache", {})
        if key not in cache:
            g, a, e = self._draw(0.0, n, generator(seed))
            grid = torch.linspace(-1, 1, 101, dtype=torch.float64)[:, None]
            b = grid * a + (1 - grid ** 2).clamp(min=0).sqrt() * e
            cache[key] = self.outputs(g, a.expand_as(b), b)[2].pow(2).mean(-1).numpy()
        mm = torch.as_tensor(m, dtype=torch.float64)
        vals = np.interp(mm.reshape(-1).numpy(), np.linspace(-1, 1, 101), cache[key])
        return torch.from_numpy(vals).reshape(mm.shape)

    def loss(self, m: float, model: str = "network", n: int = 200000, seed: int = 0) -> tuple[float, float]:
        """``(E[(f* - f_u)^2], E[(f* - f)^2])`` at overlap ``m``: the student's and the base model's loss."""
        choice(model, "model", MODELS)
        g, a, b = self._draw(m, n, generator(seed))
        y, yh, _ = self.outputs(g, a, b, model)
        base = (self.lam * self.act(g)).sum(-1)
        return float((y - yh).pow(2).mean()), float((y - base).pow(2).mean())


def outputs(act: Activation, xi: float, lam: torch.Tensor, c: torch.Tensor, ch: torch.Tensor, g: torch.Tensor,
             a: torch.Tensor, b: torch.Tensor, model: str) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    y = (lam * act(g + xi * c * a[..., None])).sum(-1)
    if model == "network":
        zh = g + xi * ch * b[..., None]
        yh = (lam * act(zh)).sum(-1)
        slope = xi * (lam * ch * act.grad(zh)).sum(-1)
    else:  # the linearised student around the base model
        slope = xi * (lam * ch * act.grad(g)).sum(-1)
        yh = (lam * act(g)).sum(-1) + slope * b
    return y, yh, -2 * (y - yh) * slope


def aligned(k: int, act: str | Activation = "relu", xi: float | None = None) -> Setting:
    """Our aligned instance: ``lam = c = c_hat = 1/sqrt(k)``, ``xi = sqrt(k)`` by default (papers.md item A [C])."""
    one = torch.full((positive_int(k, "k"),), 1 / math.sqrt(k), dtype=torch.float64)
    return Setting(k, math.sqrt(k) if xi is None else xi, activation(act), one, one, one)


def glm(act: str | Activation = "relu", k: int = 1) -> Setting:
    """The GLM as the paper's special case: ``W = 0``, ``lam = 1/k``, ``c = c_hat = 1/sqrt(k)``, ``xi = sqrt(k)``,
    so ``f*(x) = sigma(u . x)``."""
    one = torch.full((positive_int(k, "k"),), 1 / math.sqrt(k), dtype=torch.float64)
    return Setting(k, math.sqrt(k), activation(act), one / math.sqrt(k), one, one, base=False)


def faithful(k: int, act: str | Activation = "relu", xi: float | None = None, seed: int = 0) -> Setting:
    """The paper's setting: ``lam = 1``, ``c`` and ``c_hat`` independent and uniform on ``{+-1/sqrt(k)}^k``."""
    gen = generator(seed)

    def sign() -> torch.Tensor:
        return torch.randint(0, 2, (k,), generator=gen).double() * 2 - 1

    c, ch = sign() / math.sqrt(k), sign() / math.sqrt(k)
    return Setting(k, 0.5 * math.sqrt(k) if xi is None else xi, activation(act), torch.ones(k, dtype=torch.float64),
                   c, ch)
