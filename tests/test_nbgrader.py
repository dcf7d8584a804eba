"""nbgrader itself can grade our solution notebooks: "nbgrader-compatible" is a tested promise.

A real round trip in a temporary course folder: ``nbgrader generate_assignment`` on a solution
notebook, then ``nbgrader autograde`` of two submissions: the solution itself (full marks) and the
released student copy untouched (zero, every stub raises ``NotImplementedError``).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from lrkit import course

ROOT = Path(__file__).resolve().parents[1]
CHAPTER = "01_lora"

pytestmark = pytest.mark.slow


def _nbgrader(args: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}")
    return subprocess.run([sys.executable, "-m", "nbgrader", *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=600)


def test_nbgrader_generates_and_autogrades_a_solution_notebook(tmp_path: Path) -> None:
    pytest.importorskip("nbgrader", reason="nbgrader is in the [test] extra")
    from nbgrader.api import Gradebook

    (tmp_path / "source" / "ps1").mkdir(parents=True)
    shutil.copy(ROOT / "solutions" / f"{CHAPTER}.ipynb", tmp_path / "source" / "ps1")
    (tmp_path / "nbgrader_config.py").write_text(
        "c = get_config()\nc.CourseDirectory.course_id = 'lrkit'\n"
        f"c.CourseDirectory.root = {str(tmp_path)!r}\nc.ExecutePreprocessor.timeout = 300\n")
    proc = _nbgrader(["generate_assignment", "ps1", "--force"], tmp_path)
    released = tmp_path / "release" / "ps1" / f"{CHAPTER}.ipynb"
    assert released.is_file(), proc.stderr[-3000:]

    for student, notebook in (("solved", tmp_path / "source" / "ps1" / f"{CHAPTER}.ipynb"), ("stub", released)):
        (tmp_path / "submitted" / student / "ps1").mkdir(parents=True)
        shutil.copy(notebook, tmp_path / "submitted" / student / "ps1")
        _nbgrader(["db", "student", "add", student], tmp_path)
    proc = _nbgrader(["autograde", "ps1", "--force"], tmp_path)

    points = sum(course.nbgrader(c)["points"] for c in course.read_notebook(released).cells
                 if course.is_graded_cell(c))
    with Gradebook(f"sqlite:///{tmp_path / 'gradebook.db'}") as gb:
        solved = gb.find_submission("ps1", "solved")
        stub = gb.find_submission("ps1", "stub")
        assert (solved.score, solved.max_score) == (points, points), proc.stderr[-3000:]
        assert stub.score == 0 and stub.max_score == points
