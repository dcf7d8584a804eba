"""lrkit installs on a fresh machine (Colab): the notebooks' install cell and the wheel's contents."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted(p for d in ("lessons", "exercises", "solutions") for p in (ROOT / d).glob("*.ipynb"))


def _install_cell(path: Path) -> str:
    nb = json.loads(path.read_text())
    return "".join(next(c for c in nb["cells"] if c["cell_type"] == "code")["source"])


def _run_install_cell(source: str, lrkit_present: bool, monkeypatch: pytest.MonkeyPatch) -> list[list[str]]:
    calls: list[list[str]] = []
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: (real(name, *a) if lrkit_present or name != "lrkit" else None))
    monkeypatch.setattr(subprocess, "check_call", lambda cmd, *a, **k: calls.append(list(cmd)) or 0)
    lines = [ln for ln in source.split("\n") if not ln.lstrip().startswith("%")]  # IPython magics
    exec(compile("\n".join(lines), "<install cell>", "exec"), {"__name__": "__install__"})
    return calls


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_install_cell_installs_from_lrkit_install_source_only_when_missing(path: Path,
                                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    source = _install_cell(path)
    assert _run_install_cell(source, lrkit_present=True, monkeypatch=monkeypatch) == []  # locally: nothing
    monkeypatch.setenv("LRKIT_INSTALL_SOURCE", "/some/local/checkout")
    calls = _run_install_cell(source, lrkit_present=False, monkeypatch=monkeypatch)
    assert calls == [[sys.executable, "-m", "pip", "install", "-q", "/some/local/checkout"]]


@pytest.mark.slow
def test_the_wheel_ships_every_module(tmp_path: Path) -> None:
    proc = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
                           "-w", str(tmp_path), str(ROOT)], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    (wheel,) = tmp_path.glob("lrkit-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    expected = {str(p.relative_to(ROOT)) for p in (ROOT / "lrkit").rglob("*.py")}
    assert expected <= names, f"missing from the wheel: {sorted(expected - names)}"


def test_install_cells_default_to_the_repository_named_in_config() -> None:
    import yaml

    url = yaml.safe_load((ROOT / "_config.yml").read_text())["repository"]["url"]
    for path in NOTEBOOKS:
        assert f'"git+{url}@v{__import__("lrkit").__version__}"' in _install_cell(path), f"{path.name}: the install cell's default must be git+{url}@v<version>"
