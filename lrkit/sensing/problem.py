"""Matrix sensing, the problem (Chapter 4, after Xiong, Ding and Du, ICLR 2024).

An unknown matrix ``M*`` (``n1 x n2``, rank ``r*``) is seen only through ``m`` linear
measurements ``y_i = <Z_i, M*> = sum_jk (Z_i)_jk (M*)_jk`` with Gaussian sensing matrices
``Z_i`` (the paper calls them ``A_i``; here ``A`` is a factor, see the notation page). The
measurement operator and its adjoint are

    Z(M)   = (<Z_1, M>, ..., <Z_m, M>)        (n1, n2) -> (m,)         :func:`measure`
    Z*(z)  = sum_i z_i Z_i                     (m,)     -> (n1, n2)     :func:`adjoint`

and the loss of a candidate ``M`` is ``L(M) = (1/2m) ||Z(M) - y||^2``, whose gradient is
``grad L(M) = (1/m) Z*(Z(M) - y)``. With i.i.d. ``N(0, 1)`` entries ``E[(1/m) Z* Z] = I``: the
loss is ``1/2 ||M - M*||_F^2`` up to the fluctuations that the restricted isometry property
(RIP) bounds on low-rank matrices. The loss enters gradient descent only through
``(1/m) Z* Z``, so :class:`SensingProblem` keeps its ``(n1 n2) x (n1 n2)`` Gram matrix
(exactly ``adjoint(measure(.))/m``, cheaper when ``m > n1 n2 / 2``). Draws come from explicit
CPU generators, in float64 (``DTYPE``); the problem then lives on :func:`lrkit.get_device` in
:func:`lrkit.env.float_dtype` (float64, or float32 on MPS, which has no float64).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch

from .._validate import check_device, positive_int
from ..env import float_dtype, generator, to_device_dtype

DTYPE = torch.float64

__all__ = ["DTYPE", "UnderdeterminedWarning", "degrees_of_freedom", "SensingProblem", "make_problem",
           "measure", "adjoint"]


# --------------------------------------------------------------------------- checks
class UnderdeterminedWarning(UserWarning):
    """Fewer measurements than the degrees of freedom of a rank-``r*`` matrix: not identifiable."""


def degrees_of_freedom(n1: int, n2: int, r_star: int, symmetric: bool) -> int:
    """Dimension of the set of rank-``r*`` matrices: ``r*(n1 + n2 - r*)``, or ``r* n - r*(r* - 1)/2``
    for symmetric ``n x n`` ones. Fewer measurements than this cannot determine ``M*``."""
    if symmetric:
        return r_star * n1 - r_star * (r_star - 1) // 2
    return r_star * (n1 + n2 - r_star)


# --------------------------------------------------------------------------- the problem
def measure(Z: torch.Tensor, M: torch.Tensor) -> torch.Tensor:
    """``Z(M)_i = <Z_i, M>``: ``Z (m, n1, n2)``, ``M (..., n1, n2)`` -> ``(..., m)``. No loop over ``i``."""
    if Z.ndim != 3 or M.ndim < 2 or tuple(M.shape[-2:]) != tuple(Z.shape[1:]):
        raise ValueError(f"Z must be (m, n1, n2) and M (..., n1, n2) with the same (n1, n2), "
                         f"got Z {tuple(Z.shape)} and M {tuple(M.shape)}")
    if Z.dtype != M.dtype:
        raise TypeError(f"Z and M must share one dtype, got Z {Z.dtype} and M {M.dtype}")
    return M.flatten(-2) @ Z.flatten(1).T


def adjoint(Z: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
    """``Z*(z) = sum_i z_i Z_i``: ``Z (m, n1, n2)``, ``z (..., m)`` -> ``(..., n1, n2)``.

    The adjoint of :func:`measure`: ``<Z(M), z> = <M, Z*(z)>`` for every ``M`` and ``z``.
    """
    if Z.ndim != 3 or z.ndim < 1 or z.shape[-1] != Z.shape[0]:
        raise ValueError(f"z must be (..., m) and Z (m, n1, n2) with the same m, "
                         f"got z {tuple(z.shape)} and Z {tuple(Z.shape)}")
    out: torch.Tensor = (z @ Z.flatten(1)).reshape(*z.shape[:-1], *Z.shape[1:])
    return out


@dataclass
class SensingProblem:
    """Ground truth ``M_star (n1, n2)`` of rank ``r_star``, sensing matrices ``Z (m, n1, n2)``,
    measurements ``y = Z(M_star) (m,)``. ``symmetric``: ``M_star`` is symmetric PSD.

    ``gram = Zf^T Zf / m``, ``zy = Zf^T y / m`` (``Zf = Z`` flattened to ``(m, n1 n2)``) and
    ``yy = |y|^2 / m`` are computed once, so that :meth:`gradient` and :meth:`training_loss`
    cost one ``(n1 n2) x (n1 n2)`` product.
    """

    M_star: torch.Tensor
    Z: torch.Tensor
    y: torch.Tensor
    r_star: int
    symmetric: bool
    gram: torch.Tensor = field(init=False, repr=False)
    zy: torch.Tensor = field(init=False, repr=False)
    yy: float = field(init=False, repr=False)

    def __post_init__(self) -> None:
        measure(self.Z, self.M_star)  # validates the shapes
        if tuple(self.y.shape) != (self.Z.shape[0],):
            raise ValueError(f"y must have shape (m,) = ({self.Z.shape[0]},), got {tuple(self.y.shape)}")
        Zf = self.Z.flatten(1)
        self.gram = Zf.T @ Zf / self.m
        self.zy = Zf.T @ self.y / self.m
        self.yy = float(self.y.square().mean())

    @property
    def m(self) -> int:
        return int(self.Z.shape[0])

    @property
    def n1(self) -> int:
        return int(self.M_star.shape[0])

    @property
    def n2(self) -> int:
        return int(self.M_star.shape[1])

    def loss(self, M: torch.Tensor) -> torch.Tensor:
        """``(1/2m) ||Z(M) - y||^2`` for ``M (..., n1, n2)`` -> ``(...)``."""
        return 0.5 * (measure(self.Z, M) - self.y).square().mean(-1)

    def training_loss(self, M: torch.Tensor) -> torch.Tensor:
        """The same loss through the Gram matrix, ``(1/2)(vec M^T gram vec M - 2 vec M . zy + |y|^2/m)``.

        The observable a practitioner has (no ``M*`` in it); ``(...)`` for ``M (..., n1, n2)``.
        """
        f = M.flatten(-2)
        return 0.5 * ((f @ self.gram) * f).sum(-1) - (f * self.zy).sum(-1) + 0.5 * self.yy

    def gradient(self, M: torch.Tensor) -> torch.Tensor:
        """``grad L(M) = (1/m) Z*(Z(M) - y)``, shape of ``M``; via the Gram matrix (same numbers)."""
        out: torch.Tensor = (M.flatten(-2) @ self.gram - self.zy).reshape(*M.shape[:-2], self.n1, self.n2)
        return out

    def error(self, M: torch.Tensor) -> torch.Tensor:
        """``||M - M*||_F^2`` for ``M (..., n1, n2)`` -> ``(...)``."""
        return (M - self.M_star).square().sum((-2, -1))


def make_problem(n: int, r_star: int, m: int, *, n2: int | None = None,
                 singular_values: Sequence[float] | None = None, symmetric: bool = True,
                 symmetric_sensing: bool = False, seed: int = 0,
                 device: torch.device | str | None = None) -> SensingProblem:
    """A sensing problem: ``M* = U diag(s) U^T`` (symmetric PSD, ``n x n``) or ``U diag(s) V^T``
    (``n x n2``), random orthonormal ``U, V``; ``m`` sensing matrices with i.i.d. ``N(0, 1)``
    entries.

    ``singular_values`` (length ``r_star``, positive) default to ``linspace(1, 0.5, r_star)``.
    ``symmetric_sensing=True`` symmetrises each ``Z_i`` (``(Z + Z^T)/sqrt 2``): then the
    antisymmetric part of an asymmetric ``B A`` is invisible to the measurements, a trap.
    Warns (:class:`UnderdeterminedWarning`) when ``m`` is below the degrees of freedom.
    """
    positive_int(n, "n")
    n2 = n if n2 is None else positive_int(n2, "n2")
    if symmetric and n2 != n:
        raise ValueError(f"a symmetric problem is square: n2 must be None or equal to n = {n}, got {n2}")
    positive_int(r_star, "r_star")
    if r_star > min(n, n2):
        raise ValueError(f"r_star must satisfy 1 <= r_star <= min(n, n2) = {min(n, n2)}, got {r_star}")
    positive_int(m, "m")
    s = torch.linspace(1.0, 0.5, r_star, dtype=DTYPE) if singular_values is None else \
        torch.as_tensor(list(singular_values), dtype=DTYPE)
    if s.shape != (r_star,) or not bool(torch.isfinite(s).all()) or bool((s <= 0).any()):
        raise ValueError(f"singular_values must be r_star = {r_star} positive finite numbers, "
                         f"got {s.tolist() if s.ndim else s.item()}")
    dof = degrees_of_freedom(n, n2, r_star, symmetric)
    if m < dof:
        warnings.warn(f"m = {m} measurements are fewer than the {dof} degrees of freedom of a rank-{r_star} "
                      f"{'symmetric ' if symmetric else ''}{n}x{n2} matrix: M* is not identifiable (and RIP "
                      f"needs several times more)", UnderdeterminedWarning, stacklevel=2)
    g = generator(seed)
    U, _ = torch.linalg.qr(torch.randn(n, r_star, generator=g, dtype=DTYPE))
    V = U if symmetric else torch.linalg.qr(torch.randn(n2, r_star, generator=g, dtype=DTYPE))[0]
    M_star = (U * s) @ V.T
    Z = torch.randn(m, n, n2, generator=g, dtype=DTYPE)
    if symmetric_sensing:
        if n2 != n:
            raise ValueError("symmetric_sensing needs square sensing matrices (n2 = n)")
        Z = (Z + Z.transpose(1, 2)) / math.sqrt(2.0)
    dev = check_device(device)
    wide = float_dtype(dev)
    M_star, Z = to_device_dtype(M_star, dev, wide), to_device_dtype(Z, dev, wide)
    return SensingProblem(M_star, Z, measure(Z, M_star), r_star, symmetric)
