"""Checks for Chapter 10's exercises (LoRA's relatives); expected values come from lrkit.

* :func:`check_ga_cosine`: ``fn(S, r) -> cos``, the predicted cosine of LoRA-GA's first step with
  the full gradient from its singular values (:func:`lrkit.variants.best_rank_cosine` of ``2r``);
* :func:`check_dora_forward`: ``fn(x, W0, A, B, m, scaling) -> y``, DoRA's forward pass with the
  row norm detached (``lrkit.LoRALinear(..., dora=True)``), values *and* gradients;
* :func:`check_pissa_gradient`: ``fn(W0, W_star, r) -> dL/dB`` at PiSSA's initialisation
  (``lrkit.LoRALinear(..., init="pissa")``) for ``L = ||W - W*||_F^2 / 2``.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from ..lora import LoRALinear
from .core import check_close, check_function, fail, passed

__all__ = ["check_ga_cosine", "check_dora_forward", "check_pissa_gradient"]


# --------------------------------------------------------------------------- LoRA-GA's cosine


def _ga_cos(S: torch.Tensor, r: int, k: int | None = None, power: int = 2) -> float:
    k = 2 * r if k is None else k
    s = torch.sort(S.double().abs(), descending=True).values ** power
    return float((s[:k].sum() / s.sum()).sqrt())


def check_ga_cosine(fn: Callable[..., Any], seed: int = 0) -> None:
    """``fn(S, r)`` must give ``sqrt(sum_{i<=2r} s_i^2 / sum_i s_i^2)`` (``S`` in any order)."""
    g = torch.Generator().manual_seed(seed)
    cases = [{"S": 1.0 / torch.arange(1, 33, dtype=torch.float64), "r": 4},
             {"S": torch.rand(20, generator=g, dtype=torch.float64) + 0.1, "r": 3},
             {"S": torch.tensor([0.5, 3.0, 1.0, 2.0, 0.1, 0.2], dtype=torch.float64), "r": 1}]
    mistakes = {
        "A takes V's first r directions and B U's next r: the step covers 2r singular pairs, not r":
            lambda S, r: _ga_cos(S, r, k=r),
        "the cosine compares energies: square the singular values": lambda S, r: _ga_cos(S, r, power=1),
        "a cosine is a ratio of norms, the square root of the energy fraction":
            lambda S, r: _ga_cos(S, r) ** 2,
        "sort the singular values first: the best directions are the largest":
            lambda S, r: float((S[:2 * r].double().square().sum() / S.double().square().sum()).sqrt()),
    }
    check_function(fn, _ga_cos, cases, name="ga_cosine", mistakes=mistakes, rtol=1e-6, atol=1e-9,
                   hint="by Eckart-Young the step is the best rank-2r approximation of G")


# --------------------------------------------------------------------------- DoRA's forward


def _dora_layer(W0: torch.Tensor, A: torch.Tensor, B: torch.Tensor, m: torch.Tensor,
                scaling: float) -> LoRALinear:
    base = nn.Linear(W0.shape[1], W0.shape[0], bias=False).to(W0.dtype)
    layer = LoRALinear(base, A.shape[0], alpha=scaling * A.shape[0], dora=True)
    assert layer.magnitude is not None  # dora=True gives the layer its magnitude
    with torch.no_grad():
        layer.base.weight.copy_(W0)
        layer.A.copy_(A)
        layer.B.copy_(B)
        layer.magnitude.copy_(m)
    return layer


def _dora_grads(layer: LoRALinear) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(dL/dA, dL/dB, dL/dm)`` of a DoRA layer after a backward pass."""
    dA, dB, m = layer.A.grad, layer.B.grad, layer.magnitude
    assert dA is not None and dB is not None and m is not None and m.grad is not None
    return dA, dB, m.grad


def _grads(fn: Callable[..., Any], case: dict[str, Any], name: str) -> tuple[torch.Tensor, ...]:
    c = copy.deepcopy(case)
    for k in ("A", "B", "m"):
        c[k] = c[k].clone().requires_grad_(True)
    try:
        y = fn(**c)
    except NotImplementedError:
        raise
    except Exception as e:  # the learner's code failed: show on what
        fail(f"{name} raised {type(e).__name__}: {e}", case=case)
    if not isinstance(y, torch.Tensor) or not y.requires_grad:
        fail(f"{name}(...) must return a tensor that depends on A, B and m through autograd", case=case,
             hint="build the output from torch operations on the arguments, without .detach() on them")
    torch.autograd.backward(y.square().sum())
    return tuple(c[k].grad if c[k].grad is not None else torch.zeros_like(c[k]) for k in ("A", "B", "m"))


def check_dora_forward(fn: Callable[..., Any], seed: int = 0) -> None:
    """``fn(x, W0, A, B, m, scaling)`` (shapes (n, in), (out, in), (r, in), (out, r), (out,)) must be
    DoRA's output, with the same gradients for ``A``, ``B``, ``m`` as PEFT's (norm detached)."""
    g = torch.Generator().manual_seed(seed)
    cases = []
    for n, d_in, d_out, r, s in ((5, 6, 4, 2, 1.0), (3, 8, 10, 3, 2.0)):
        W0 = torch.randn(d_out, d_in, generator=g, dtype=torch.float64)
        A = torch.randn(r, d_in, generator=g, dtype=torch.float64)
        B = torch.randn(d_out, r, generator=g, dtype=torch.float64)
        m = (W0 + s * B @ A).norm(dim=1) * (1 + 0.3 * torch.rand(d_out, generator=g, dtype=torch.float64))
        cases.append({"x": torch.randn(n, d_in, generator=g, dtype=torch.float64), "W0": W0, "A": A, "B": B,
                      "m": m, "scaling": s})

    def reference(x: torch.Tensor, W0: torch.Tensor, A: torch.Tensor, B: torch.Tensor, m: torch.Tensor,
                  scaling: float) -> torch.Tensor:
        y: torch.Tensor = _dora_layer(W0, A, B, m, scaling)(x)
        return y

    def base_norm(x: torch.Tensor, W0: torch.Tensor, A: torch.Tensor, B: torch.Tensor, m: torch.Tensor,
                  scaling: float) -> torch.Tensor:
        y: torch.Tensor = x @ ((m / W0.norm(dim=1)).view(-1, 1) * (W0 + scaling * B @ A)).T
        return y

    mistakes = {"the norm is taken of the adapted weight W0 + s B A, not of W0 alone": base_norm}
    check_function(fn, reference, cases, name="dora_forward", mistakes=mistakes, rtol=1e-9, atol=1e-10,
                   quiet=True, hint="W' = diag(m / n) (W0 + s B A); y = x W'^T")
    for case in cases:
        ref_layer = _dora_layer(case["W0"], case["A"], case["B"], case["m"], case["scaling"])
        torch.autograd.backward(ref_layer(case["x"]).square().sum())
        expected = _dora_grads(ref_layer)
        actual = _grads(fn, case, "dora_forward")
        for name, a, e in zip(("dL/dA", "dL/dB", "dL/dm"), actual, expected):
            check_close(a, e, name, case=case, rtol=1e-8, atol=1e-10,
                        hint="DoRA treats n = ||W0 + s B A||_row as a constant: no gradient flows "
                             "through the norm (compute it on detached tensors)")
    passed("dora_forward")


# --------------------------------------------------------------------------- PiSSA's first gradient


def _pissa_grad(W0: torch.Tensor, W_star: torch.Tensor, r: int) -> torch.Tensor:
    base = nn.Linear(W0.shape[1], W0.shape[0], bias=False).to(W0.dtype)
    with torch.no_grad():
        base.weight.copy_(W0)
    layer = LoRALinear(base, r, init="pissa")
    torch.autograd.backward(0.5 * (layer.base.weight + layer.delta_weight() - W_star).square().sum())
    assert layer.B.grad is not None
    return layer.B.grad


def check_pissa_gradient(fn: Callable[..., Any], seed: int = 0) -> None:
    """``fn(W0, W_star, r)`` must give ``dL/dB`` (out, r) at PiSSA's initialisation (``s = 1``)."""
    g = torch.Generator().manual_seed(seed)
    cases = [{"W0": torch.randn(6, 5, generator=g, dtype=torch.float64),
              "W_star": torch.randn(6, 5, generator=g, dtype=torch.float64), "r": 2},
             {"W0": torch.randn(4, 7, generator=g, dtype=torch.float64),
              "W_star": torch.randn(4, 7, generator=g, dtype=torch.float64), "r": 3}]

    def left(W0: torch.Tensor, W_star: torch.Tensor, r: int) -> torch.Tensor:  # A built from U instead of V
        U, S, Vh = torch.linalg.svd(W0, full_matrices=False)
        A = S[:r].sqrt()[:, None] * U[:, :r].T
        return (W0 - W_star) @ A.T if A.shape[1] == W0.shape[1] else torch.zeros(W0.shape[0], r,
                                                                                dtype=W0.dtype)

    def no_root(W0: torch.Tensor, W_star: torch.Tensor, r: int) -> torch.Tensor:
        U, S, Vh = torch.linalg.svd(W0, full_matrices=False)
        grad: torch.Tensor = (W0 - W_star) @ (S[:r, None] * Vh[:r]).T
        return grad

    def sign(W0: torch.Tensor, W_star: torch.Tensor, r: int) -> torch.Tensor:
        return -_pissa_grad(W0, W_star, r)

    mistakes = {"A = sqrt(S_r) V_r^T lives on the input side (V), not the output side (U)": left,
                "PiSSA splits S_r between A and B: each gets sqrt(S_r)": no_root,
                "the gradient of ||W - W*||^2 / 2 is (W - W*), not (W* - W)": sign}
    check_function(fn, _pissa_grad, cases, name="pissa_gradient", mistakes=mistakes, rtol=1e-8, atol=1e-10,
                   hint="dL/dB = s (W - W*) A^T, and at step 0 W = W0")
