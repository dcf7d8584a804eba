"""lrkit installs on a fresh machine (Colab): the notebooks' install cell and the wheel's contents."""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import pytest
import tomllib

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


# --- A bare install runs a lesson from an empty folder (what a learner on Colab does) ---------------

# Cached between runs, rebuilt when its recipe changes; under _build (gitignored, and excluded
# from the book: a venv at the top would put its packages' .md files in the book's sources).
BARE = ROOT / "_build" / "venv-bare"
TORCH = "torch==2.13.0"  # Colab preinstalls torch; here it comes from the local wheel
COLAB_LIKE = ["ipywidgets>=7.6,<8", "ipykernel"]  # Colab ships ipywidgets 7 and a kernel
# Book and test tools must not be needed. (nbformat/nbclient come with ipywidgets 7's notebook
# dependency, as on Colab.)
NOT_RUNTIME = ("myst_nb", "peft", "nbval", "sphinx", "jupyter_book", "pytest")
BARE_LESSONS = os.environ.get("LRKIT_BARE_LESSONS", "03_ssm")  # "all" for every lesson (slow)


def _runtime_requirements() -> list[str]:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]


def _present(python: Path, modules: tuple[str, ...]) -> list[str]:
    code = f"import importlib.util as u; print(' '.join(m for m in {modules!r} if u.find_spec(m)))"
    return subprocess.run([str(python), "-c", code], capture_output=True, text=True, check=True,
                          cwd=python.parent).stdout.split()  # not the checkout: its lrkit/ would be found


def bare_python() -> Path:
    """A venv with torch and lrkit's runtime dependencies only (no lrkit, no book or test tools)."""
    python = BARE / "bin" / "python"
    recipe = json.dumps([TORCH, *_runtime_requirements(), *COLAB_LIKE])
    stamp = BARE / ".recipe"
    if not (python.exists() and stamp.exists() and stamp.read_text() == recipe
            and not _present(python, NOT_RUNTIME)):
        shutil.rmtree(BARE, ignore_errors=True)
        subprocess.run([sys.executable, "-m", "venv", str(BARE)], check=True)
        pip = [str(python), "-m", "pip", "install", "-q"]
        subprocess.run([*pip, TORCH], check=True, timeout=900)
        others = [r for r in _runtime_requirements() if not r.startswith("torch")]
        subprocess.run([*pip, *others, *COLAB_LIKE], check=True, timeout=900)
        stamp.write_text(recipe)
    subprocess.run([str(python), "-m", "pip", "uninstall", "-q", "-y", "lrkit"], capture_output=True)
    return python


def run_in_bare_env(notebook: Path, workdir: Path, python: Path, env: dict[str, str]) -> dict[str, float]:
    """Execute ``notebook`` in a kernel of ``python`` with cwd ``workdir``; seconds (total, install)."""
    import nbformat
    from nbclient import NotebookClient

    spec = workdir.parent / "kernels" / "kernels" / "lrkit-bare"
    spec.mkdir(parents=True, exist_ok=True)
    (spec / "kernel.json").write_text(json.dumps({
        "argv": [str(python), "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "bare", "language": "python", "env": env}))
    os.environ["JUPYTER_PATH"] = str(spec.parent.parent)
    nb = nbformat.read(notebook, as_version=4)
    start, cpu = time.monotonic(), _children_cpu()
    NotebookClient(nb, timeout=900, kernel_name="lrkit-bare",
                   resources={"metadata": {"path": str(workdir)}}).execute()
    total, cpu = time.monotonic() - start, _children_cpu() - cpu
    ex = next(c for c in nb.cells if c.cell_type == "code").metadata.get("execution", {})
    install = 0.0
    if "shell.execute_reply" in ex and "iopub.execute_input" in ex:
        from datetime import datetime

        stamps = [datetime.fromisoformat(ex[k].replace("Z", "+00:00")) for k in ("iopub.execute_input",
                                                                                "shell.execute_reply")]
        install = (stamps[1] - stamps[0]).total_seconds()
    return {"total": total, "install": install, "cpu": cpu}


def _children_cpu() -> float:
    """CPU seconds of finished child processes (the kernel and its pip): a load-independent time."""
    import resource

    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


LESSONS = sorted((ROOT / "lessons").glob("*.ipynb"))


@pytest.mark.slow
@pytest.mark.parametrize("lesson", [p for p in LESSONS if BARE_LESSONS == "all" or p.stem in BARE_LESSONS.split(",")],
                         ids=lambda p: p.stem)
def test_a_lesson_runs_after_a_bare_install_from_an_empty_folder(lesson: Path, tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    import nbformat

    python = bare_python()
    assert _present(python, ("lrkit", *NOT_RUNTIME)) == [], "the bare venv must hold runtime dependencies only"
    shutil.rmtree(ROOT / "build", ignore_errors=True)  # setuptools' in-tree build/ keeps deleted modules
    content = tmp_path / "content"  # Colab's /content: no repository files
    content.mkdir()
    env = {"LRKIT_INSTALL_SOURCE": str(ROOT), "LRKIT_SCALE": "small", "LRKIT_DEVICE": "cpu",
           "OMP_NUM_THREADS": "1", "LRKIT_LEDGER": str(tmp_path / "ledger.jsonl"), "PYTHONPATH": "",
           "PATH": f"{python.parent}:{os.environ.get('PATH', '')}"}
    monkeypatch.setenv("JUPYTER_PATH", "")
    from lrkit.course import colab  # run its Colab edition, as the launch button opens it

    edition, _ = colab.edition(colab.load_book(ROOT), f"lessons/{lesson.stem}")  # glue: needs the build
    assert colab.leftover_markup(edition) == []
    opened = tmp_path / "edition" / lesson.name
    opened.parent.mkdir()
    nbformat.write(edition, opened)
    seconds = run_in_bare_env(opened, content, python, env)
    print(f"{lesson.stem}: {seconds['total']:.1f} s wall in the bare venv (install cell {seconds['install']:.1f} s), "
          f"{seconds['cpu']:.1f} CPU s (kernel + install)")
    where = subprocess.run([str(python), "-c", "import lrkit; print(lrkit.__file__)"], capture_output=True,
                           text=True, cwd=content)
    assert where.returncode == 0, f"import lrkit fails after the install cell:\n{where.stderr[-2000:]}"
    assert str(BARE) in where.stdout, f"lrkit should come from the install cell, found {where.stdout}"
    assert _present(python, ("myst_nb", "peft")) == [], "the lesson must not need myst-nb or peft"
