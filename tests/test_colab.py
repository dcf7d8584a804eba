"""Colab editions: MyST markup becomes Markdown Colab renders, and no raw markup is left."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import nbformat
import pytest

from lrkit.course import colab
from lrkit.course.install import install_cell_source, sync_install_cells

ROOT = Path(__file__).resolve().parents[1]
BUILD = ROOT / "_build"

CONFIG = """\
title: T
repository:
  url: https://github.com/someone/course
  branch: main
bibtex_bibfiles:
  - book/references.bib
sphinx:
  config:
    math_eqref_format: "Eq. {number}"
"""
TOC = """\
format: jb-book
root: book/intro
parts:
  - caption: Chapters
    numbered: true
    chapters:
      - file: lessons/01_a
      - file: lessons/02_b
  - caption: Exercises
    chapters:
      - file: exercises/02_b
  - caption: References
    chapters:
      - file: book/bibliography
"""
BIB = """\
@inproceedings{hu2021lora, title={LoRA}, author={Hu, Edward J. and Shen, Yelong and Wallis, Phillip},
  year={2022}}
@article{roy2007effective, title={Effective rank}, author={Roy, Olivier and Vetterli, Martin}, year={2007}}
@article{smekal2024ssm, title={SSM}, author={Sm{\\'e}kal, Jakub}, year={2024}}
"""
LESSON_MD = """\
# Chapter B

(sec-setup)=
## Setup

{cite:t}`hu2021lora` and {cite:p}`roy2007effective,smekal2024ssm` measured {glue:text}`gap:.3f`
over {glue:text}`n` runs; see `{glue:text}` in code, {numref}`fig-b-curve` and {prf:ref}`prop-b-one`.

```{prf:proposition} A claim with $x^2$
:label: prop-b-one

The body, with {glue:text}`n` runs.
```

````{note}
A note citing {cite}`hu2021lora`, {ref}`sec-setup` and {eq}`eq-b`.
````

$$
y = x^2
$$ (eq-b)

```python
print("{glue:text}`not_a_role`")
```

:::{prf:proposition}
:label: prop-b-two
Untitled.
:::
% a MyST comment
Exercises: {doc}`../exercises/02_b`, and back to {prf:ref}`the first claim <prop-b-one>`.
"""


def _notebook(*cells: nbformat.NotebookNode) -> nbformat.NotebookNode:
    nb = nbformat.v4.new_notebook()
    nb.cells = list(cells)
    return nb


@pytest.fixture()
def book(tmp_path: Path) -> Path:
    """A two-chapter book with one executed lesson (its glue data), as jupyter-book leaves it."""
    (tmp_path / "book").mkdir()
    (tmp_path / "lessons").mkdir()
    (tmp_path / "exercises").mkdir()
    (tmp_path / "_config.yml").write_text(CONFIG)
    (tmp_path / "_toc.yml").write_text(TOC)
    (tmp_path / "book" / "references.bib").write_text(BIB)
    (tmp_path / "book" / "intro.md").write_text("# Intro\n")
    (tmp_path / "book" / "bibliography.md").write_text("# References\n\n```{bibliography}\n```\n")
    fig = nbformat.v4.new_code_cell("plt.plot([1, 2])\nglue('n', 3)")
    fig.metadata["mystnb"] = {"figure": {"name": "fig-b-curve", "caption": "Theory (line), {cite:p}`hu2021lora`."}}
    install = nbformat.v4.new_code_cell("# install\n", metadata={"tags": ["remove-cell", "lrkit-install"]})
    nbformat.write(_notebook(nbformat.v4.new_markdown_cell("# Chapter A\n\nText.")),
                   tmp_path / "lessons" / "01_a.ipynb")
    nbformat.write(_notebook(nbformat.v4.new_markdown_cell(LESSON_MD.split("```python")[0].split("(sec-setup)=")[0]),
                             install, nbformat.v4.new_markdown_cell(LESSON_MD), fig),
                   tmp_path / "lessons" / "02_b.ipynb")
    ex = nbformat.v4.new_code_cell("x = 1", metadata={"nbgrader": {"grade_id": "ex1", "solution": True}})
    nbformat.write(_notebook(nbformat.v4.new_markdown_cell("# Exercises B"), install, ex),
                   tmp_path / "exercises" / "02_b.ipynb")
    glue = {k: {"data": {"text/plain": v}, "metadata": {"scrapbook": {"name": k}}, "output_type": "display_data"}
            for k, v in {"gap": "0.123456", "n": "3"}.items()}
    out = tmp_path / "_build" / "jupyter_execute" / "lessons"
    out.mkdir(parents=True)
    (out / "02_b.glue.json").write_text(json.dumps(glue))
    return tmp_path


def test_an_edition_renders_every_construct_as_markdown(book: Path) -> None:
    problems = colab.write_editions(book, book / "_build")
    assert problems == []
    nb = nbformat.read(book / "_build" / "colab" / "lessons" / "02_b.ipynb", as_version=4)
    text = "\n".join(c.source for c in nb.cells if c.cell_type == "markdown")
    site = "https://someone.github.io/course/"
    assert f"[Hu et al. (2022)]({site}book/bibliography.html)" in text
    assert f"([Roy and Vetterli, 2007]({site}book/bibliography.html); [Smékal, 2024](" in text
    assert "measured 0.123\nover 3 runs" in text
    assert "see `{glue:text}` in code" in text  # inline code is left alone
    assert f"[Fig. 2.1]({site}lessons/02_b.html#fig-b-curve)" in text
    assert f"[Proposition 2.1]({site}lessons/02_b.html#prop-b-one)" in text
    assert "**Proposition 2.1 (A claim with $x^2$).** The body, with 3 runs." in text
    assert "**Proposition 2.2.** Untitled." in text
    assert f"**Note.** A note citing ([Hu et al., 2022]({site}book/bibliography.html)), [Setup]({site}lessons/02_b.html#sec-setup)" in text
    assert f"[Eq. 2.1]({site}lessons/02_b.html#equation-eq-b)" in text and "\\tag{2.1} $$" in text
    assert 'print("{glue:text}`not_a_role`")' in text  # code fences are left alone
    assert f"[Exercises B]({site}exercises/02_b.html)" in text and "[the first claim](" in text
    assert "MyST comment" not in text
    assert "**Fig. 2.1.** Theory (line), ([Hu et al., 2022](" in text
    assert colab.leftover_markup(nb) == []
    nbformat.validate(nb)
    src = nbformat.read(book / "lessons" / "02_b.ipynb", as_version=4)
    assert [c.source for c in nb.cells if c.cell_type == "code"] == [c.source for c in src.cells if c.cell_type == "code"]
    ex = nbformat.read(book / "_build" / "colab" / "exercises" / "02_b.ipynb", as_version=4)
    graded = [c for c in ex.cells if c.cell_type == "code" and "nbgrader" in c.metadata]
    assert graded and graded[0].metadata["nbgrader"]["grade_id"] == "ex1"  # grading still works
    assert ex.cells[2].id == src.cells[1].id or ex.cells[2].metadata.get("tags") == ["remove-cell", "lrkit-install"]


def test_a_missing_glue_value_unknown_role_or_citation_is_reported(book: Path) -> None:
    (book / "_build" / "jupyter_execute" / "lessons" / "02_b.glue.json").write_text("{}")
    nb = nbformat.read(book / "lessons" / "02_b.ipynb", as_version=4)
    nb.cells[0].source += "\n{unknownrole}`x` {cite:p}`nokey`\n```{mystery}\nbody\n```\n"
    nbformat.write(nb, book / "lessons" / "02_b.ipynb")
    problems = "\n".join(colab.write_editions(book, book / "_build"))
    assert "no glued value 'gap'" in problems
    assert "role {unknownrole}" in problems and "'nokey'" in problems and "directive {mystery}" in problems


@pytest.mark.parametrize("markup", ["{glue:text}`x`", "```{prf:proposition} T\nbody\n```", "(lbl)=\n# H",
                                    ":::{note}\nx\n:::", "$$ a $$ (eq-x)", "{{ subst }}", ":label: x"])
def test_the_scanner_finds_raw_myst(markup: str) -> None:
    assert colab.leftover_markup(_notebook(nbformat.v4.new_markdown_cell(f"Text\n{markup}\n")))


def test_the_scanner_ignores_code() -> None:
    cell = nbformat.v4.new_markdown_cell("Use `{glue:text}` like so:\n\n```python\nx = '{cite:p}`k`'\n```\n")
    assert colab.leftover_markup(_notebook(cell, nbformat.v4.new_code_cell("{glue:text}`x`"))) == []


@pytest.mark.slow  # a few seconds: make test runs it, make test-fast does not
def test_glue_formatting_matches_myst_nb() -> None:
    variables = pytest.importorskip("myst_nb.core.variables")
    for text, spec in [("0.123456", ".3f"), ("3", ""), ("'a, b'", "s"), ("12345.6", ".1e"), ("7", "d"),
                       ("0.25", ".0%"), ("np.float64(1.5)", "")]:
        assert colab.format_plain_text(text, spec) == variables.format_plain_text(text, spec)


@pytest.mark.slow  # a few seconds: make test runs it, make test-fast does not
def test_every_real_lesson_and_exercise_converts_without_leftover_markup() -> None:
    """The course's own markup is all handled (glue values need the build: only those may be missing)."""
    book = colab.load_book(ROOT)
    for doc in book.docs:
        if doc.split("/")[0] in colab.EDITION_DIRS:
            nb, problems = colab.edition(book, doc)
            assert [p for p in problems if "no glued value" not in p] == [], doc
            assert colab.leftover_markup(nb) == [], doc


@pytest.mark.skipif(not (BUILD / "colab").is_dir(), reason="no Colab editions built (make book writes them)")
def test_built_editions_have_no_raw_markup_and_the_book_numbers() -> None:
    editions = sorted((BUILD / "colab").rglob("*.ipynb"))
    assert {p.relative_to(BUILD / "colab").parts[0] for p in editions} == set(colab.EDITION_DIRS)
    for path in editions:
        nb = nbformat.read(path, as_version=4)
        assert colab.leftover_markup(nb) == [], path
        page = BUILD / "html" / path.relative_to(BUILD / "colab").with_suffix(".html")
        if page.exists():
            html = re.sub(r"<[^>]+>|\s+", " ", page.read_text())
            for number in re.findall(r"\*\*(Proposition \d+\.\d+)", "\n".join(c.source for c in nb.cells)):
                assert number in html, (path.name, number)


def test_launch_links_are_rewritten_to_the_colab_branch(tmp_path: Path) -> None:
    page = tmp_path / "lessons" / "03_ssm.html"
    page.parent.mkdir()
    base = "https://colab.research.google.com/github/someone/course/blob/"
    page.write_text(f'<a href="{base}main/lessons/03_ssm.ipynb">Colab</a> <a href="{base}main/book/x.ipynb">x</a>')
    assert colab.rewrite_launch_links(tmp_path, "https://github.com/someone/course") == 1
    assert f'"{base}colab/lessons/03_ssm.ipynb"' in page.read_text() and f"{base}main/book/x.ipynb" in page.read_text()
    assert colab.edition_url("https://github.com/someone/course", "lessons/03_ssm.ipynb") == f"{base}colab/lessons/03_ssm.ipynb"
    with pytest.raises(ValueError, match="repository.url"):
        colab.github_repo("https://gitlab.com/a/b")


@pytest.mark.skipif(not (BUILD / "colab").is_dir() or not (BUILD / "html").is_dir(), reason="no built book")
def test_the_built_books_colab_buttons_open_the_editions() -> None:
    links = [m for page in (BUILD / "html").rglob("*.html")
             for m in re.findall(r"https://colab\.research\.google\.com/github/[^\"']+", page.read_text())]
    assert links and all("/blob/colab/" in link for link in links), links[:3]


def test_install_cells_are_generated_from_config_and_version(tmp_path: Path) -> None:
    assert sync_install_cells(ROOT, check=True) == []
    shutil.copytree(ROOT / "lessons", tmp_path / "lessons")
    for name in ("_config.yml", "pyproject.toml"):
        shutil.copy(ROOT / name, tmp_path / name)
    path = tmp_path / "lessons" / "03_ssm.ipynb"
    nb = nbformat.read(path, as_version=4)
    before = [(c.id, c.source) for c in nb.cells]
    nb.cells[1].source = nb.cells[1].source.replace("@v", "@vOLD")
    nbformat.write(nb, path)
    assert sync_install_cells(tmp_path, check=True) == ["lessons/03_ssm.ipynb: install cell is stale"]
    assert sync_install_cells(tmp_path) == ["lessons/03_ssm.ipynb: install cell rewritten"]
    assert [(c.id, c.source) for c in nbformat.read(path, as_version=4).cells] == before
    assert '"git+https://github.com/' in install_cell_source(ROOT)


def test_check_me_needs_a_path_outside_colab(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="path is required outside Colab"):
        colab.check_me()
    with pytest.raises(ValueError, match="path must be a notebook file"):
        colab.check_me(tmp_path / "missing.ipynb")


@pytest.mark.slow
def test_check_me_reports_each_graded_check(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    ok = nbformat.v4.new_code_cell("assert 1 + 1 == 2", metadata={"nbgrader": {"grade": True, "grade_id": "good", "points": 1}})
    bad = nbformat.v4.new_code_cell("assert 1 + 1 == 3, 'not two'",
                                    metadata={"nbgrader": {"grade": True, "grade_id": "bad", "points": 2}})
    path = tmp_path / "mine.ipynb"
    nbformat.write(_notebook(ok, bad), path)
    assert colab.check_me(path) is False
    out = capsys.readouterr().out
    assert "PASS [1 pt] good" in out and "FAIL [2 pt] bad" in out and "not two" in out


def test_glued_and_file_figures_become_attachments(book: Path) -> None:
    png = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNkYPhfDwAChwGA60e6kgAAAABJRU5ErkJggg=="
    glue_file = book / "_build" / "jupyter_execute" / "lessons" / "02_b.glue.json"
    glue = json.loads(glue_file.read_text())
    glue["curve"] = {"data": {"image/png": png, "text/plain": "<Figure>"}, "output_type": "display_data"}
    glue_file.write_text(json.dumps(glue))
    (book / "lessons" / "dot.png").write_bytes(__import__("base64").b64decode(png))
    nb = nbformat.read(book / "lessons" / "02_b.ipynb", as_version=4)
    nb.cells.append(nbformat.v4.new_markdown_cell(
        "```{glue:figure} curve\n:name: fig-b-glued\n\nA glued curve.\n```\n\n"
        "```{figure} dot.png\n:name: fig-b-file\n:alt: a dot\n\nA file figure, see {numref}`fig-b-glued`.\n```"))
    nbformat.write(nb, book / "lessons" / "02_b.ipynb")
    assert colab.write_editions(book, book / "_build") == []
    cell = nbformat.read(book / "_build" / "colab" / "lessons" / "02_b.ipynb", as_version=4).cells[-1]
    assert "![A glued curve.](attachment:curve.png)" in cell.source and "**Fig. 2.2.** A glued curve." in cell.source
    assert "![a dot](attachment:dot.png)" in cell.source and "**Fig. 2.3.** A file figure, see [Fig. 2.2](" in cell.source
    assert set(cell.attachments) == {"curve.png", "dot.png"}


def test_the_readme_install_lines_name_the_pinned_release() -> None:
    from lrkit.course.install import default_source

    readme = (ROOT / "README.md").read_text()
    assert readme.count(f"lrkit @ {default_source(ROOT)}") == 1
    assert readme.count(f"lrkit[instructor] @ {default_source(ROOT)}") == 1


def test_tables_are_numbered_and_list_tables_become_pipe_tables(book: Path) -> None:
    nb = nbformat.read(book / "lessons" / "02_b.ipynb", as_version=4)
    nb.cells.append(nbformat.v4.new_markdown_cell(
        "```{table} Sizes\n:name: table-b\n\n| a | b |\n|---|---|\n| 1 | 2 |\n```\n\n"
        "```{list-table} Rates\n:header-rows: 1\n:name: table-c\n\n* - rule\n  - rate\n* - Init[A]\n  - $n^{-1/2}$\n```\n\n"
        "See {numref}`table-c`."))
    nbformat.write(nb, book / "lessons" / "02_b.ipynb")
    assert colab.write_editions(book, book / "_build") == []
    text = nbformat.read(book / "_build" / "colab" / "lessons" / "02_b.ipynb", as_version=4).cells[-1].source
    assert "**Table 2.1.** Sizes\n\n| a | b |" in text
    assert "**Table 2.2.** Rates\n\n| rule | rate |\n|---|---|\n| Init[A] | $n^{-1/2}$ |" in text
    assert "See [Table 2.2](https://someone.github.io/course/lessons/02_b.html#table-c)." in text
