"""The reliability review's bad inputs in lrkit.sensing (Chapter 4) and lrkit.rf (Chapter 7): one line per row."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from lrkit import rf, sensing, ssm

NO_SUCH_DEVICE = "bogus" if torch.cuda.is_available() else "cuda"


def problem() -> sensing.SensingProblem:
    return sensing.make_problem(6, 2, 120, symmetric=True, seed=0, device="cpu")


@pytest.mark.parametrize("call,err,msg", [
    (lambda: sensing.run_sweep(problem(), "symmetric", 2, steps=5, blowup=-1), ValueError, "blowup must be a finite number > 1"),  # 261
    (lambda: sensing.run_sweep(problem(), "symmetric", 2, steps=5, num_records=0), ValueError, "num_records must be"),            # 259
    (lambda: sensing.run_sweep({"n": 6}, "symmetric", 2), TypeError, "problem must be a SensingProblem"),                         # 262
    (lambda: rf.simulate([1.0, 0.5], [1.0, 1.0], [4], [8], [0.1], trials=1, seed=-1, device="cpu"), ValueError, "seed must be"),  # 289
    (lambda: rf.simulate([1.0, 0.5], [1.0, 1.0], [4], [8], [0.1], trials=1, memory_mb="big", device="cpu"), TypeError, "memory_mb must be"),  # 290
    (lambda: rf.simulate([1.0, 0.5], [1.0, 1.0], [4], [8], [0.1], trials=1, device=NO_SUCH_DEVICE), ValueError, "device"),      # 291
])
def test_bad_input_gets_a_clear_error(call, err, msg) -> None:
    with pytest.raises(err, match=msg):
        call()


@pytest.mark.parametrize("call,err,msg", [
    (lambda: sensing.make_problem(4, 2, 60, singular_values=np.array([1, -0.5])), ValueError, r"got \[1.0, -0.5\]"),  # 248
    (lambda: sensing.make_problem(4, 2, 60, singular_values=torch.tensor([1, math.nan])), ValueError, "singular_values must be"),  # 249
    (lambda: rf.default_ridges(num=-1), ValueError, "num must be a positive int"),                                         # 303
])
def test_more_bad_inputs_get_a_clear_error(call, err, msg) -> None:
    with pytest.raises(err, match=msg):
        call()


@pytest.mark.parametrize("fn", [ssm.ssm_scan, ssm.ssm_fft])                                                               # 227, 228
def test_an_integer_signal_is_filtered_as_a_float(fn) -> None:
    y = fn(torch.tensor([0.5]), torch.tensor([1.0]), torch.tensor([1.0]), torch.tensor([[1, 0, 0]]))
    torch.testing.assert_close(y.double(), torch.tensor([[1.0, 0.5, 0.25]], dtype=torch.float64), rtol=1e-6, atol=1e-6)


def test_learnabilities_name_kappa() -> None:                                                                           # 282
    with pytest.raises(TypeError, match="kappa must be"):
        rf.learnabilities([1.0, 0.5], kappa="x")


def test_fit_power_law_names_its_inputs() -> None:                                                                      # 306
    from lrkit.fit import fit_power_law
    with pytest.raises(TypeError, match="widths and values must be numbers"):
        fit_power_law([8, 16], ["a", "b"])


@pytest.mark.parametrize("call,msg", [
    (lambda: sensing.redundant_error_theory(0.0, 4, 2, 0.1), "t must hold finite steps > 0"),                          # 266
    (lambda: sensing.redundant_error_theory(10.0, 1, 2, 0.1), "r must be >= r_star"),                                   # 267
    (lambda: rf.eigenstructure(torch.full((3, 3), math.nan), torch.ones(3)), "K and y must be finite"),                # 298
])
def test_theory_inputs_out_of_range_are_refused(call, msg) -> None:
    with pytest.raises(ValueError, match=msg):
        call()


@pytest.mark.parametrize("call,err,msg", [
    (lambda: ssm.filtered_input("x", torch.ones(1, 8)), TypeError, "a must be a real number"),                         # 231
    (lambda: ssm.filtered_input(1.0, torch.ones(1, 8)), ValueError, r"a must be a real number with \|a\| < 1"),      # 230
    (lambda: sensing.measure(torch.ones(5, 3, 3, dtype=torch.float64), torch.ones(3, 3)), TypeError, "share one dtype"),  # 253
])
def test_named_arguments_in_ssm_and_sensing(call, err, msg) -> None:
    with pytest.raises(err, match=msg):
        call()
