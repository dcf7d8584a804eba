"""Hostile submissions, one per category of the reliability review (shared/reviews/reliability.md, §4).

Each submission gives a wrong answer and tries to score anyway, or attacks the grader, a
classmate or the machine. The grader runs them in the strongest sandbox here (namespaces as root,
else bubblewrap); every test asserts the secure outcome. Nothing is written outside temporary
folders; every process a submission starts is bounded by its own timer.
"""

from __future__ import annotations

import csv
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import nbformat
import pytest
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

from lrkit.course import grade_folder
from lrkit.course.sandbox import Limits, detect
from lrkit.course.sandbox_mounts import SHARED

pytestmark = pytest.mark.slow

BOX = detect()
if not BOX.isolated:
    pytest.skip("no sandbox on this machine (needs root on Linux, or bubblewrap): " + BOX.warning(),
                allow_module_level=True)

MARK = "lrkit-hostile-7f3a"  # names every process and file a hostile submission makes


def _grade_meta(grade_id: str, points: float = 0, solution: bool = False, grade: bool = False) -> dict:
    return {"nbgrader": {"grade_id": grade_id, "solution": solution, "grade": grade, "locked": not solution,
                         "points": points, "schema_version": 3}}


def solution_notebook() -> nbformat.NotebookNode:
    """Two exercises: answer() must return 42, twice() must double its input."""
    return new_notebook(cells=[
        new_markdown_cell("# Tiny assignment"),
        new_code_cell("def answer():\n    ### BEGIN SOLUTION\n    return 42\n    ### END SOLUTION",
                      metadata=_grade_meta("answer", solution=True), id="answer"),
        new_code_cell("assert answer() == 42, 'answer() must be 42'\n### BEGIN HIDDEN TESTS\n"
                      "assert answer() + 0 == 42\n### END HIDDEN TESTS",
                      metadata=_grade_meta("answer_check", 1, grade=True), id="answer_check"),
        new_code_cell("def twice(x):\n    ### BEGIN SOLUTION\n    return 2 * x\n    ### END SOLUTION",
                      metadata=_grade_meta("twice", solution=True), id="twice"),
        new_code_cell("assert twice(3) == 6, 'twice(3) must be 6'",
                      metadata=_grade_meta("twice_check", 1, grade=True), id="twice_check"),
    ], metadata={"kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"}})


def submission(answer_body: str, twice_body: str = "return 2 * x") -> nbformat.NotebookNode:
    nb = solution_notebook()
    nb.cells[1].source = "def answer():\n" + "\n".join("    " + ln for ln in answer_body.split("\n"))
    nb.cells[2].source = "assert answer() == 42, 'answer() must be 42'"
    nb.cells[3].source = "def twice(x):\n    " + twice_body
    return nb


def attack(code: str) -> nbformat.NotebookNode:
    """A wrong answer (0), preceded by ``code`` run at the top of the answer cell."""
    nb = submission("return 0")
    nb.cells[1].source = code + "\n\n" + nb.cells[1].source
    return nb


@pytest.fixture(scope="module")
def graded(tmp_path_factory: pytest.TempPathFactory) -> dict:
    root = tmp_path_factory.mktemp("hostile")
    sol = root / "instructor" / "solution.ipynb"
    sol.parent.mkdir()
    nbformat.write(solution_notebook(), sol)
    subs = root / "submissions"
    subs.mkdir()
    out = root / "out" / "grades.csv"
    victim = subs / "zz_classmate.ipynb"
    spy = root / "spy.txt"
    attacks = {
        "reads_solution": attack(f"src = open({str(sol)!r}).read()\nexec(src.split('### BEGIN SOLUTION')[0])"),
        "reads_solution_quietly": submission(f"import json\nnb = json.load(open({str(sol)!r}))\n"
                                             "return int(nb['cells'][1]['source'].split('return ')[1][:2])"),
        "forges_records": attack("import os\nfor p in os.listdir('/proc'):\n    try:\n"
                                 "        for fd in os.listdir(f'/proc/{p}/fd'):\n"
                                 "            try:\n                open(f'/proc/{p}/fd/{fd}', 'w').write("
                                 "'{\"done\": true, \"records\": []}\\n')\n"
                                 "            except OSError:\n                pass\n    except OSError:\n        pass"),
        "transformer": attack("ip = get_ipython()\nip.input_transformers_cleanup.append(lambda lines: ['pass\\n'])"),
        "rewrites_csv_later": attack(
            "import subprocess\nsubprocess.Popen(['sh', '-c', 'sleep 4; for f in "
            f"{out.parent}/*.csv; do echo {MARK} > $f; done'], start_new_session=True)"),
        "writes_outside": attack(f"for target in [{str(victim)!r}, {str(sol)!r}, {str(spy)!r}]:\n    try:\n"
                                 "        open(target, 'w').write('{}')\n    except OSError:\n        pass"),
        "forks": attack("import subprocess\nfor _ in range(30):\n    try:\n"
                        f"        subprocess.Popen(['sleep', '30', '{MARK}'], start_new_session=True)\n"
                        "    except OSError:\n        break"),
        "memory": submission("blob = bytearray(8 * 2**30)\nreturn 42"),
        # '..' of its scratch folder is /tmp; /tmp, /var/tmp, /dev/shm and /run/lock are world-writable
        "plants_package": attack("import os\nfor where in ['.', '..', os.path.expanduser('~'), "
                                 + ", ".join(map(repr, SHARED)) + "]:\n"
                                 "    try:\n        os.makedirs(os.path.join(where, 'lrkit'), exist_ok=True)\n"
                                 "        open(os.path.join(where, 'lrkit', '__init__.py'), 'w').write("
                                 f"'raise SystemExit(0)  # {MARK}')\n    except OSError:\n        pass"),
    }
    for name, nb in attacks.items():
        nbformat.write(nb, subs / f"{name}.ipynb")
    nbformat.write(submission("return 42"), victim)
    victim_text = victim.read_text()
    start = time.monotonic()
    grades = grade_folder(sol, subs, out, timeout=60, cell_timeout=20, jobs=2,
                          limits=Limits(memory=3 * 2**30, cpu_seconds=60, processes=40, file_size=2**20))
    wall = time.monotonic() - start
    time.sleep(6)  # give a surviving process time to rewrite the CSV
    with out.open() as f:
        rows = {r["student"]: r for r in csv.DictReader(f)}
    return {"grades": {g.student: g for g in grades}, "rows": rows, "out": out, "victim": victim,
            "victim_text": victim_text, "sol": sol, "spy": spy, "wall": wall}


def test_the_classmate_is_graded_on_their_own_work(graded: dict) -> None:
    assert graded["rows"]["zz_classmate"]["total"] == "2"
    assert graded["victim"].read_text() == graded["victim_text"]


@pytest.mark.parametrize("student", ["reads_solution", "reads_solution_quietly", "forges_records", "transformer",
                                     "rewrites_csv_later", "writes_outside", "forks", "plants_package"])
def test_a_wrong_answer_never_scores(graded: dict, student: str) -> None:
    row = graded["rows"][student]
    assert row["answer_check"] == "0", row
    # the honest part still counts, except after code that tampers with the interpreter (exec, get_ipython)
    assert row["twice_check"] == ("0" if student in ("transformer", "reads_solution") else "1"), row


def test_tampering_is_named_in_the_feedback(graded: dict) -> None:
    reasons = " ".join(s.reason for s in graded["grades"]["transformer"].scores)
    assert "tamper" in reasons and "get_ipython" in reasons


def test_nothing_outside_the_sandbox_was_written(graded: dict) -> None:
    assert not graded["spy"].exists()
    assert "BEGIN SOLUTION" in graded["sol"].read_text()
    assert MARK not in graded["out"].read_text()
    # the planted package: not next to the scores, in this checkout, the grader's home or any world-writable folder
    places = [graded["out"].parent, Path.cwd(), Path.home(), Path(tempfile.gettempdir()), *map(Path, SHARED)]
    planted = [p / "lrkit" / "__init__.py" for p in places]
    assert [p for p in planted if p.is_file() and MARK in p.read_text()] == []


def test_no_process_outlives_the_grading(graded: dict) -> None:
    survivors = subprocess.run(["pgrep", "-f", MARK], capture_output=True, text=True).stdout.split()
    assert survivors == [], f"processes left behind: {survivors}"


def test_memory_is_bounded_and_the_rest_still_graded(graded: dict) -> None:
    row = graded["rows"]["memory"]
    assert row["answer_check"] == "0" and row["twice_check"] == "1"
    assert "MemoryError" in " ".join(s.reason for s in graded["grades"]["memory"].scores)


def test_every_row_says_the_grading_was_isolated(graded: dict) -> None:
    assert all("WARNING: no sandbox" not in r["notes"] for r in graded["rows"].values())
    assert graded["wall"] < 300


def test_without_a_sandbox_grading_goes_on_with_a_warning(tmp_path: Path) -> None:
    sol = tmp_path / "solution.ipynb"
    nbformat.write(solution_notebook(), sol)
    (tmp_path / "subs").mkdir()
    nbformat.write(submission("return 42"), tmp_path / "subs" / "ok.ipynb")
    proc = subprocess.run([sys.executable, "-c", "import sys; from pathlib import Path; from lrkit.course import "
                           "grade_folder; g = grade_folder(Path(sys.argv[1]), Path(sys.argv[2]), Path(sys.argv[3]), "
                           "timeout=60, cell_timeout=20, sandbox_modes=['none']); print(g[0].total)",
                           str(sol), str(tmp_path / "subs"), str(tmp_path / "g.csv")],
                          capture_output=True, text=True, timeout=200, env=dict(os.environ))
    assert proc.stdout.strip() == "2.0", proc.stderr[-2000:]
    assert "WARNING: no sandbox" in proc.stderr and "WARNING: no sandbox" in (tmp_path / "g.csv").read_text()


@pytest.mark.skipif(BOX.mode != "namespace", reason="the private world-writable folders are the namespace mode's")
@pytest.mark.parametrize("where", ["open", "closed", "behind a closed folder"])
def test_a_kernel_reaches_a_checkout_in_tmp_but_not_its_hidden_folder_and_writes_only_a_private_tmp(
        monkeypatch: pytest.MonkeyPatch, where: str) -> None:
    """A checkout under /tmp (covered in the sandbox): open (0755), closed (0700, as `mktemp -d`
    makes it) or inside a closed folder (a checkout in /root). A file beside it stays unseen."""
    from lrkit.course import sandbox

    outer = Path(tempfile.mkdtemp(prefix="lrkit-outer-"))
    checkout = outer / "course"
    try:
        os.chmod(outer, 0o700 if where == "behind a closed folder" else 0o755)
        checkout.mkdir(mode=0o700 if where == "closed" else 0o755)
        (outer / "secret.txt").write_text("secret")
        (checkout / "module.py").write_text("VALUE = 7\n")
        (checkout / "solutions").mkdir(mode=0o755)
        (checkout / "solutions" / "answer.txt").write_text("42")
        needed = sandbox._needed()
        monkeypatch.setattr(sandbox, "_needed", lambda: [*needed, checkout])
        box = detect(hidden=[checkout / "solutions"]).prepare(0)
        code = ("import os, sys\nsys.path.insert(0, sys.argv[1])\nimport module\nprint('module', module.VALUE)\n"
                "for p in (os.path.join(sys.argv[1], 'solutions'), os.path.join(sys.argv[2], 'secret.txt')):\n"
                "    try:\n        print('read', p, os.listdir(p) if os.path.isdir(p) else open(p).read())\n"
                "    except OSError as e:\n        print('refused', type(e).__name__)\n"
                f"open('/tmp/{MARK}', 'w').write('x')\nprint('tmp', os.listdir('/tmp'))")
        try:
            out = subprocess.run(box.command([sys.executable, "-c", code, str(checkout), str(outer)]),
                                 capture_output=True, text=True, timeout=60, preexec_fn=box.preexec()).stdout
        finally:
            box.cleanup()
        assert "module 7" in out and "read" not in out and out.count("refused") == 2, out
        assert MARK in out and not (Path("/tmp") / MARK).exists()  # written, but to the kernel's own /tmp
    finally:
        shutil.rmtree(outer)
