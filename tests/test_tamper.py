"""The grader's tampering scan: what it flags, and the honest code it leaves alone."""

from __future__ import annotations

import pytest

from lrkit.course.tamper import tamper_findings


@pytest.mark.parametrize("source,why", [
    ("get_ipython().input_transformers_cleanup.append(f)", "get_ipython"),
    ("ip = get_ipython()\nip.events.register('pre_run_cell', f)", "get_ipython"),
    ("import sys\nsys.settrace(f)", "sys.settrace"),
    ("from sys import modules", "sys.modules"),
    ("import builtins\nbuiltins.print = f", "builtins"),
    ("import lrkit.checks\nlrkit.checks.check_x = lambda *a: None", "changes the imported module 'lrkit'"),
    ("import torch\ntorch.allclose = lambda *a, **k: True", "changes the imported module 'torch'"),
    ("exec('x = 1')", "exec"), ("eval('1')", "eval"), ("__import__('os')", "__import__"),
    ("import importlib\nimportlib.reload = lambda m: m", "importlib"),
    ("setattr(obj, name, value)", "setattr"),
    ("!echo hi", "get_ipython"), ("%load_ext something", "get_ipython"),
    ("%time exec('1')", "exec"), ("%%timeit\neval('1')", "eval"),
    ("def f(x):\n    return x.__globals__", "__globals__"),
])
def test_tampering_is_recognised(source: str, why: str) -> None:
    found = tamper_findings(source)
    assert found and any(why in f for f in found), found


@pytest.mark.parametrize("source", [
    "import math, torch\nfrom torch import nn\ndef f(x):\n    return torch.tanh(x) * math.pi",
    "total = sum(m.in_features for m in model.modules() if isinstance(m, nn.Linear))",
    "import sys\nprint('x', file=sys.stderr)\nsys.exit(0)",
    "%matplotlib inline\nimport matplotlib.pyplot as plt",
    "%time y = f(3)",
    "class Layer(nn.Module):\n    def __init__(self):\n        super().__init__()\n        self.weight = nn.Parameter(w)",
    "model.weight.data[0] = 1.0\nstate['x'] = 2",
    "def broken(:\n    pass",  # does not parse: cannot run, cannot tamper
])
def test_honest_code_is_left_alone(source: str) -> None:
    assert tamper_findings(source) == []
