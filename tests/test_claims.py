"""The claims ledger (lrkit.claims), the generated claims page (lrkit.claims_page) and the seed table."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

import lrkit
from lrkit import claims as cl
from lrkit.claims_page import BookIndex, ClaimsPage, claim_keys, format_value, load_registry, render
from lrkit.claims_runs import parse_seeds, seed_table, summarise


@pytest.fixture(autouse=True)
def _no_ledger(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("LRKIT_LEDGER", raising=False)
    monkeypatch.delenv("LRKIT_SEED", raising=False)


def check(measured, predicted=None, **kw):
    kw.setdefault("statement", "a test claim")
    return cl.claim("prop-test", measured, predicted, quiet=True, **kw)


# --- kinds and margins ---------------------------------------------------------------------

@pytest.mark.parametrize("kind, m, p, kw, margin", [
    ("abs", 1.0, 1.0, {"tol": 0.1}, 1.0),
    ("abs", 1.1, 1.0, {"tol": 0.1}, 0.0),
    ("abs", 0.95, 1.0, {"tol": 0.1}, 0.5),
    ("rel", 2.0, 2.0, {"tol": 0.1}, 1.0),
    ("rel", 2.2, 2.0, {"tol": 0.1}, 0.0),  # at the edge up to round-off: passes
    ("rel", -1.9, -2.0, {"tol": 0.1}, 0.5),
    ("interval", 0.5, None, {"interval": (0.0, 1.0)}, 1.0),
    ("interval", 1.0, None, {"interval": (0.0, 1.0)}, 0.0),
    ("interval", 0.75, None, {"interval": (0.0, 1.0)}, 0.5),
    ("ge", 5.0, 1.0, {}, 1.0),            # capped at 1
    ("ge", 1.0, 1.0, {}, 0.0),            # at the bound
    ("ge", 1.5, 1.0, {"tol": 1.0}, 0.5),  # tol sets the scale
    ("ge", 0.5, 0.0, {}, 0.5),            # p = 0: scale 1
    ("le", 0.5, 1.0, {}, 0.5),
    ("le", 1.0, 1.0, {}, 0.0),
    ("equal", 3, 3, {}, 1.0),
    ("equal", [1, 2], [1, 2], {}, 1.0),
])
def test_every_kind_passes_with_its_margin(kind, m, p, kw, margin) -> None:
    rec = check(m, p, kind=kind, **kw)
    assert rec.passed is True and rec.status == "checked"
    assert rec.margin == pytest.approx(margin, abs=1e-9)


@pytest.mark.parametrize("kind, m, p, kw", [
    ("abs", 1.2, 1.0, {"tol": 0.1}),
    ("rel", 2.5, 2.0, {"tol": 0.1}),
    ("interval", 1.5, None, {"interval": (0.0, 1.0)}),
    ("ge", 0.9, 1.0, {}),
    ("le", 1.1, 1.0, {}),
    ("equal", 3, 4, {}),
    ("equal", "a", "b", {}),
])
def test_a_failing_claim_raises_naming_it_with_a_negative_margin(kind, m, p, kw) -> None:
    with pytest.raises(AssertionError, match=r"Claim 'prop-test' failed: a test claim"):
        check(m, p, kind=kind, **kw)


def test_failed_margin_is_negative_and_proportional() -> None:
    with pytest.raises(AssertionError, match=r"margin -1\.00"):
        check(1.2, 1.0, kind="abs", tol=0.1)


def test_arrays_keep_the_smallest_margin_and_broadcast() -> None:
    rec = check(np.array([1.0, 1.05, 0.92]), 1.0, kind="abs", tol=0.1)
    assert rec.margin == pytest.approx(0.2) and rec.measured == [1.0, 1.05, 0.92]
    rec = check(torch.tensor([2.0, 4.0]), torch.tensor([2.0, 4.0]), kind="rel", tol=0.01)
    assert rec.margin == pytest.approx(1.0) and rec.predicted == [2.0, 4.0]
    with pytest.raises(AssertionError):
        check([1.0, 1.5], [1.0, 1.0], kind="abs", tol=0.1)
    with pytest.raises(ValueError, match="shape"):
        check([1.0, 2.0, 3.0], [1.0, 2.0], kind="abs", tol=0.1)


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
def test_non_finite_measured_fails_whatever_the_kind(bad) -> None:
    for kind, kw in [("abs", {"tol": 1e9}), ("rel", {"tol": 1e9}), ("ge", {}), ("le", {}),
                     ("interval", {"interval": (-1e9, 1e9)})]:
        with pytest.raises(AssertionError, match="prop-test"):
            check(bad, None if kind == "interval" else 0.5, kind=kind, **kw)
    with pytest.raises(AssertionError):
        check([1.0, bad], 1.0, kind="abs", tol=0.1)


def test_non_finite_margin_is_recorded_as_text_and_read_back(tmp_path, monkeypatch) -> None:
    ledger = tmp_path / "l.jsonl"
    monkeypatch.setenv("LRKIT_LEDGER", str(ledger))
    with pytest.raises(AssertionError):
        check(math.nan, 1.0, kind="abs", tol=0.1)
    line = json.loads(ledger.read_text())
    assert line["margin"] == "-inf" and line["measured"] == "nan" and line["passed"] is False
    (rec,) = cl.read_ledger(ledger)
    assert rec.margin == -math.inf and rec.passed is False


# --- the record and the ledger ------------------------------------------------------------

def test_the_record_has_every_field(monkeypatch) -> None:
    monkeypatch.setenv("LRKIT_SEED", "3")
    cl.set_chapter(7)
    rec = cl.claim("prop-x", 0.98, 1.0, statement="slope is one", tol=0.1, source="saxe2014exact",
                   exercises=["exercises/02_deep_linear"], quiet=True)
    data = json.loads(rec.to_json())
    for key in ("label", "chapter", "statement", "measured", "predicted", "tolerance", "kind", "passed",
                "margin", "scale", "seed", "device", "version", "status", "reason", "source",
                "exercises", "time", "run"):
        assert key in data, key
    assert (data["label"], data["chapter"], data["seed"], data["version"]) == ("prop-x", 7, 3, lrkit.__version__)
    assert data["scale"] in ("small", "full") and data["device"] in ("cpu", "cuda", "mps")
    assert data["exercises"] == ["exercises/02_deep_linear"] and data["tolerance"] == 0.1


def test_claim_prints_measured_against_predicted(capsys) -> None:
    cl.claim("prop-x", 0.98, 1.0, statement="s", tol=0.1)
    out = capsys.readouterr().out
    assert "[PASS] prop-x: measured 0.98 against predicted 1 (tolerance 0.1, abs), margin 0.80" in out


def test_ledger_is_written_only_when_lrkit_ledger_is_set(tmp_path, monkeypatch) -> None:
    ledger = tmp_path / "sub" / "ledger.jsonl"
    check(1.0, 1.0, tol=0.1)
    assert not ledger.exists()
    monkeypatch.setenv("LRKIT_LEDGER", str(ledger))
    check(1.0, 1.0, tol=0.1)
    check(2.0, status="measured", reason="too small a model")
    records = cl.read_ledger(ledger)
    assert [r.status for r in records] == ["checked", "measured"]
    assert records[1].reason == "too small a model" and records[1].passed is None


@pytest.mark.parametrize("status", ["measured", "not reproduced"])
def test_statuses_that_are_not_asserted_never_raise(status) -> None:
    rec = check(5.0, 1.0, kind="abs", tol=0.1, status=status, reason="shown, not asserted")
    assert rec.passed is None and rec.margin == pytest.approx(-39.0)  # informative margin
    rec = check(math.nan, 1.0, kind="rel", tol=0.1, status=status, reason="r")
    assert rec.passed is None
    rec = check("a curve", status=status, reason="no number")  # nothing to compare: no margin
    assert rec.margin is None


@pytest.mark.parametrize("kw, match", [
    ({"kind": "approx", "tol": 0.1}, r"kind must be one of \('abs', 'rel', 'interval', 'ge', 'le', 'equal'\)"),
    ({"kind": "abs"}, "kind 'abs' needs a finite tol > 0"),
    ({"kind": "rel", "tol": 0.0}, "tol must be a finite number > 0"),
    ({"kind": "abs", "tol": -1.0}, "tol must be a finite number > 0"),
    ({"kind": "abs", "tol": math.inf}, "tol must be a finite number > 0"),
    ({"kind": "abs", "tol": math.nan}, "tol must be a finite number > 0"),
    ({"kind": "ge", "tol": 0}, "tol must be a finite number > 0"),
    ({"kind": "interval"}, r"needs interval=\(lo, hi\)"),
    ({"kind": "interval", "interval": (1.0, 0.0)}, "lo < hi"),
    ({"kind": "interval", "interval": (0.0, math.inf)}, "finite"),
    ({"status": "tested by unit tests", "tol": 0.1}, "status must be one of"),
    ({"status": "passed", "tol": 0.1}, "status must be one of"),
])
def test_bad_kinds_tolerances_and_statuses_are_value_errors(kw, match) -> None:
    with pytest.raises(ValueError, match=match):
        check(1.0, 1.0, **kw)


def test_other_bad_inputs() -> None:
    with pytest.raises(ValueError, match="label must be"):
        cl.claim("", 1.0, 1.0, statement="s", tol=0.1)
    with pytest.raises(ValueError, match="needs a predicted value"):
        check(1.0, None, kind="ge")
    with pytest.raises(ValueError, match="non-zero predicted"):
        check(0.0, 0.0, kind="rel", tol=0.1)
    with pytest.raises(ValueError, match="statement"):
        cl.claim("prop-x", 1.0, 1.0, statement=" ", tol=0.1)
    with pytest.raises(TypeError, match="exercises must be a list"):
        check(1.0, 1.0, tol=0.1, exercises="exercises/01_lora")
    with pytest.raises(TypeError, match="measured must be a number"):
        check("x", 1.0, tol=0.1)
    with pytest.raises(TypeError, match="chapter must be"):
        cl.set_chapter(None)  # type: ignore[arg-type]


def test_latest_runs_keeps_each_chapters_last_execution(tmp_path, monkeypatch) -> None:
    ledger = tmp_path / "l.jsonl"
    monkeypatch.setenv("LRKIT_LEDGER", str(ledger))
    cl.set_chapter(1)
    check(1.0, 1.0, tol=0.1)
    check(1.0, 1.0, tol=0.1, statement="second check of the same proposition")
    cl.set_chapter(2)
    check(1.0, 1.0, tol=0.1, statement="chapter 2")
    cl.set_chapter(1)  # chapter 1 executed again: replaces its two records by one
    check(1.0, 1.05, tol=0.1, statement="rerun")
    kept = cl.latest_runs(cl.read_ledger(ledger))
    assert sorted((r.chapter, r.statement) for r in kept) == [(1, "rerun"), (2, "chapter 2")]


# --- the claims page -----------------------------------------------------------------------

def _record(**kw) -> cl.ClaimRecord:
    base = dict(label="prop-a", chapter=1, statement="a is one", measured=0.99, predicted=1.0,
                tolerance=0.1, kind="abs", status="checked", passed=True, margin=0.9, scale="small",
                seed=0, device="cpu", version="0.2.0",
                source="hu2021lora", exercises=["exercises/01_lora"], run="r1")
    base.update(kw)
    return cl.ClaimRecord(**base)


@pytest.fixture
def index() -> BookIndex:
    return BookIndex(docs=["book/intro", "lessons/01_lora", "exercises/01_lora", "lessons/02_dln"],
                     labels={"prop-a", "prop-b", "ex-lora-1"}, bibkeys={"hu2021lora", "peft"},
                     titles={"lessons/01_lora": "LoRA from scratch", "lessons/02_dln": "Deep linear"},
                     texts={"exercises/01_lora": "def param_count(d_in, d_out, r): ..."})


def test_page_links_what_exists_and_warns_about_the_rest(index) -> None:
    records = [
        _record(),
        _record(label="prop-b", statement="b is small", kind="le", measured=0.1, predicted=1.0,
                tolerance=None, margin=0.1, exercises=["ex-lora-1"]),
        _record(label="prop-missing", statement="c", source="nobody2099x", exercises=["exercises/09_x"]),
        _record(label="prop-a", statement="by name", exercises=["param_count", "no_such_exercise"]),
        _record(label="prop-b", statement="not shown", status="not reproduced", passed=None, margin=None,
                reason="the toy is too small", source="derived"),
    ]
    registry = [{"chapter": 1, "statement": "parity with PEFT", "source": "peft",
                 "status": "tested by unit tests", "tests": ["tests/test_peft_parity.py"]},
                {"chapter": "later", "statement": "intruders", "source": "peft", "status": "planned"}]
    page = ClaimsPage(index)
    text = page.render(records, registry)
    assert "## 1. LoRA from scratch" in text and "{doc}`/lessons/01_lora`" in text
    assert "exercises: {doc}`/exercises/01_lora`" in text
    assert "{prf:ref}`prop-a`: a is one" in text and "{cite:p}`hu2021lora`" in text
    assert "checked, **fragile**" in text                      # margin 0.1 < 0.2
    assert "{ref}`ex-lora-1`" in text
    assert "{doc}`param_count </exercises/01_lora>`" in text  # an exercise of the chapter, by name
    assert "`prop-missing`" in text and "{prf:ref}`prop-missing`" not in text
    assert "nobody2099x" in text and "{cite:p}`nobody2099x`" not in text
    assert "*(the toy is too small)*" in text and "  - derived\n" in text
    assert "  - tested by unit tests\n  - `tests/test_peft_parity.py`" in text
    assert "at scale **small**, seed 0, on cpu" in text
    assert "## Planned chapters" in text
    assert "## 2. Deep linear" in text and "No claim records yet" in text
    warned = "\n".join(page.warnings)
    assert "param_count" not in warned
    for bit in ("prop-missing", "nobody2099x", "exercises/09_x", "chapter 2", "no_such_exercise"):
        assert bit in warned


def test_a_planned_claim_goes_when_a_lesson_records_its_source(index) -> None:
    planned = [{"chapter": "later", "statement": "intruders", "source": "peft", "status": "planned"}]
    page = ClaimsPage(index)
    assert "intruders" in page.render([_record()], planned)
    text = page.render([_record(), _record(chapter=2, source="peft")], planned)
    assert "intruders" not in text and any("dropped" in w for w in page.warnings)


def test_a_measurement_without_prediction_shows_alone(index) -> None:
    rec = _record(predicted=None, tolerance=None, status="measured", passed=None, margin=None, measured=[1.0, 2.0])
    assert "  - [1, 2]\n" in ClaimsPage(index).render([rec], [])


def test_page_shows_failures_and_seeds(index) -> None:
    seeds = {(1, "prop-a", 1): {"passed": 4, "runs": 5, "min_margin": -0.3}}
    text = ClaimsPage(index, seeds).render([_record(passed=False, margin=-0.5)], [])
    assert "**FAILED**" in text and "  - 4/5, min -0.30\n" in text and "seeds passed, min margin" in text


def test_render_from_files_and_registry_validation(tmp_path) -> None:
    (tmp_path / "_toc.yml").write_text("root: book/intro\nparts:\n- caption: Chapters\n  chapters:\n"
                                       "  - file: lessons/01_lora\n")
    (tmp_path / "lessons").mkdir()
    (tmp_path / "book").mkdir()
    nb = {"cells": [{"cell_type": "markdown", "source": "# LoRA\n```{prf:proposition} P\n:label: prop-a\n```"}]}
    (tmp_path / "lessons" / "01_lora.ipynb").write_text(json.dumps(nb))
    (tmp_path / "book" / "references.bib").write_text("@misc{hu2021lora,\n title={x}}\n")
    ledger = tmp_path / "ledger.jsonl"
    ledger.write_text(_record().to_json() + "\n" + _record(margin=0.5, run="r2").to_json() + "\n")
    text, warnings = render(ledger, None, tmp_path)
    assert text.count("{prf:ref}`prop-a`") == 1 and "  - 0.50\n" in text  # the last run wins
    assert warnings == ["exercise 'exercises/01_lora' is neither a page of the book nor a label"]
    reg = tmp_path / "reg.yml"
    reg.write_text("claims:\n- chapter: 1\n  statement: s\n  status: done\n")
    with pytest.raises(ValueError, match="status must be one of"):
        load_registry(reg)


def test_the_courses_registry_is_valid() -> None:
    root = Path(__file__).resolve().parents[1]
    entries = load_registry(root / "book" / "claims_registry.yml")
    assert entries and all(e["status"] in ("tested by unit tests", "planned") for e in entries)
    for e in entries:
        for t in e.get("tests", []):
            assert (root / t.split("::")[0]).is_file(), t


def test_format_value() -> None:
    assert format_value(0.123456) == "0.1235" and format_value(3) == "3"
    assert format_value([1.0, 2.0]) == "[1, 2]"
    assert format_value([[1.0, 2.0], [3.0, 4.0], [5.0, 6.0]]) == "[1, 2, 3, 4, …] (6 values)"


# --- seed runs -----------------------------------------------------------------------------

def test_parse_seeds() -> None:
    assert parse_seeds("0-4") == [0, 1, 2, 3, 4] and parse_seeds("0,3,7") == [0, 3, 7]
    with pytest.raises(ValueError, match="seeds must"):
        parse_seeds("a-b")


def test_seed_table_pass_rate_and_smallest_margin(tmp_path) -> None:
    for seed, (m1, ok1) in enumerate([(0.9, True), (0.1, True), (-0.2, False)]):
        lines = [_record(seed=seed, margin=m1, passed=ok1, run=f"s{seed}").to_json(),
                 _record(seed=seed, statement="second", margin=0.7, run=f"s{seed}").to_json()]
        (tmp_path / f"ledger-seed{seed}.jsonl").write_text("\n".join(lines) + "\n")
    rows = summarise(tmp_path, [0, 1, 2])
    first, second = rows
    assert (first["index"], first["passed"], first["runs"]) == (1, 2, 3)
    assert first["min_margin"] == pytest.approx(-0.2) and first["worst_seed"] == 2
    assert (second["index"], second["passed"], second["min_margin"]) == (2, 3, 0.7)
    assert (tmp_path / "claims.md").is_file() and (tmp_path / "claims.csv").is_file()
    assert json.loads((tmp_path / "summary.json").read_text())[0]["label"] == "prop-a"
    assert claim_keys([_record(), _record(), _record(chapter=2)]) == [(1, "prop-a", 1), (1, "prop-a", 2),
                                                                     (2, "prop-a", 1)]
    assert seed_table({}) == []


# --- the book's Sphinx glue (book/_ext/lrkit_book.py), without a build -----------------------

def _book_ext():
    import importlib
    import sys

    pytest.importorskip("sphinx", reason="the book extra")
    path = str(Path(__file__).resolve().parents[1] / "book" / "_ext")
    if path not in sys.path:
        sys.path.insert(0, path)
    return importlib.import_module("lrkit_book")


@pytest.mark.slow  # a few seconds: make test runs it, make test-fast does not
def test_bibliography_labels_are_author_year_and_unique() -> None:
    ext = _book_ext()
    pybtex = pytest.importorskip("pybtex.database")
    from pybtex.plugin import find_plugin

    ext._register_author_year_labels()
    bib = pybtex.parse_file(str(Path(__file__).resolve().parents[1] / "book" / "references.bib"))
    style = find_plugin("pybtex.style.formatting", "lrkit_author_year")()
    labels = {e.key: e.label for e in style.format_entries(bib.entries.values())}
    assert len(set(labels.values())) == len(labels), labels
    assert labels["hu2021lora"] == "Hu et al., 2022"
    assert labels["kalajdzievski2023rslora"] == "Kalajdzievski, 2023"
    assert labels["dayi2025lowrank"] == "Dayi and Chen, 2025"
    assert {labels["hayou2024loraplus"], labels["hayou2024impact"]} == {"Hayou et al., 2024a",
                                                                         "Hayou et al., 2024b"}
    assert labels["smekal2024ssm"].startswith("Smékal et al.")


def test_proposition_titles_lose_their_tex_in_the_index() -> None:
    ext = _book_ext()
    assert ext._plain_tex(r"removes the dependence on $\omega$") == "removes the dependence on ω"
    assert ext._plain_tex(r"scale $\alpha/\sqrt{r}$") == "scale α/√r"


@pytest.mark.slow
def test_seed_runs_execute_a_notebook_per_seed_and_go_on_after_a_failure(tmp_path) -> None:
    pytest.importorskip("nbclient")
    import nbformat

    from lrkit.claims_runs import run_lessons

    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell("import lrkit, lrkit.claims\nlrkit.claims.set_chapter(42)"),
                nbformat.v4.new_code_cell("lrkit.claim('prop-x', 1 + 0.05 * lrkit.get_seed(), 1.0, statement='x', "
                                          "tol=0.1)"),
                nbformat.v4.new_code_cell("lrkit.claim('prop-z', 0.5, 1.0, statement='z', kind='le')")]
    path = tmp_path / "42_fake.ipynb"
    nbformat.write(nb, path)
    results = run_lessons([path], [0, 3], "small", tmp_path / "out", jobs=2, timeout=120)
    assert sorted(r["seed"] for r in results) == [0, 3]
    assert [r["errors"] for r in results if r["seed"] == 3][0][0].startswith("cell 1: AssertionError")
    rows = {row["label"]: row for row in summarise(tmp_path / "out", [0, 3])}
    assert (rows["prop-x"]["passed"], rows["prop-x"]["worst_seed"]) == (1, 3)   # seed 3: 1.15, fails
    assert rows["prop-x"]["min_margin"] == pytest.approx(-0.5)
    assert (rows["prop-z"]["passed"], rows["prop-z"]["runs"]) == (2, 2)        # ran after the failure
    assert (tmp_path / "out" / "lessons.md").is_file()
