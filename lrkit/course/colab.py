"""Colab editions: every lesson and exercise with its MyST markup turned into Markdown Colab renders.

``python -m lrkit.course colab [_build]`` runs after the book build. For each notebook of
``_toc.yml`` under ``lessons/`` or ``exercises/`` it writes ``_build/colab/<same path>``:

* ``{glue:text}`key:.3f``` becomes the value the book's build glued (myst-nb writes it to
  ``_build/jupyter_execute/<doc>.glue.json``), formatted as myst-nb formats it;
* ``{cite:p}`` / ``{cite:t}`` become "(Hu et al., 2022)" / "Hu et al. (2022)", linked to the
  book's bibliography page (names read from ``references.bib`` with pybtex, as the book does);
* ``{prf:proposition}`` and admonition fences become bold blocks, "**Proposition 3.1 (Title).**",
  numbered per chapter in order of appearance as sphinx-proof numbers them; labelled
  equations get ``\\tag{3.1}``; code-cell figures get a "**Fig. 3.1.** caption" cell;
* ``{numref}``, ``{ref}``, ``{prf:ref}``, ``{eq}``, ``{doc}`` become links to the book's pages;
* code cells are the notebook's own (outputs cleared; ids and nbgrader metadata kept).

Unknown roles or directives, missing glue keys or citations are reported (exit 1), and
:func:`leftover_markup` scans every edition for raw MyST. :func:`rewrite_launch_links` points the
book's Colab buttons at the editions, published on the ``colab`` branch of the repository
(``https://colab.research.google.com/github/OWNER/REPO/blob/colab/lessons/03_ssm.ipynb``).

The parts: :mod:`lrkit.course.colab_book` reads the book (pages, bibliography, glue),
:mod:`lrkit.course.colab_roles` renders roles and :mod:`lrkit.course.colab_blocks` directives;
this module writes the editions and holds the command.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import nbformat
from nbformat import NotebookNode

from .colab_blocks import Converter, markdown_cell
from .colab_book import (
    COLAB_BRANCH,
    EDITION_DIRS,
    Book,
    Target,
    doc_cells,
    edition_url,
    format_plain_text,
    github_repo,
    read_bib,
    read_book,
    read_glue,
)
from .markup import read_notebook

__all__ = ["COLAB_BRANCH", "EDITION_DIRS", "LEFTOVER", "Book", "Converter", "Target", "add_colab_command",
           "check_me", "edition", "edition_url", "format_plain_text", "github_repo", "leftover_markup",
           "load_book", "read_bib", "read_glue", "rewrite_launch_links", "write_editions"]

LEFTOVER = {"role": re.compile(r"\{[A-Za-z][\w:.+-]*\}`"),
            "directive": re.compile(r"^\s*(`{3,}|:{3,})\s*\{", re.M),
            "label": re.compile(r"^\s*\([^()\s]+\)=\s*$", re.M),
            "option": re.compile(r"^\s*:[\w-]+:(\s|$)", re.M),
            "substitution": re.compile(r"\{\{[^}]*\}\}"),
            "equation label": re.compile(r"\$\$\s*\([^()\s]+\)")}


def load_book(root: Path, build: Path | None = None) -> Book:
    """Read ``_config.yml``, ``_toc.yml``, the bibliography and (when built) the glue data, then
    every page once to index its labels, numbers and title (what cross-references need)."""
    book = read_book(root, build)
    for doc in book.docs:
        Converter(book, doc).convert_cells(doc_cells(root, doc))
    return book


def leftover_markup(nb: Any) -> list[str]:
    """Every raw MyST construct left in the notebook's Markdown cells ("cell 3: role: {cite:p}`")."""
    found = []
    for index, cell in enumerate(nb.cells if hasattr(nb, "cells") else nb["cells"]):
        if cell["cell_type"] != "markdown":
            continue
        text = "".join(cell["source"])
        text = re.sub(r"^(`{3,}|~{3,})(?![^\n]*\{)[^\n]*\n.*?^\1\s*$", "", text, flags=re.S | re.M)
        spans = re.sub(r"(?<!\})(`+)[^`\n].*?\1", "", text, flags=re.S)  # inline code spans
        for kind, pattern in LEFTOVER.items():
            line_level = kind in ("directive", "label", "option")
            for m in pattern.finditer(text if line_level else spans):
                found.append(f"cell {index}: {kind}: {m.group(0).strip()[:60]}")
    return found


def edition(book: Book, doc: str) -> tuple[NotebookNode, list[str]]:
    """The Colab edition of ``doc`` (``lessons/03_ssm``) and the problems met converting it."""
    nb = read_notebook(book.root / f"{doc}.ipynb")
    conv = Converter(book, doc)
    cells = conv.convert_cells(nb.cells)
    for cell in cells:
        if cell.cell_type == "code":
            cell.outputs, cell.execution_count = [], None
    chapter = book.chapters.get(doc)
    where = f"Chapter {chapter}" if chapter else "this page"
    note = markdown_cell(
        f"*Colab edition of {where} of the book: [read it there]({book.url(doc)}).* The numbers quoted "
        "in the text are those of the book's executed build; your run prints its own. Run all cells "
        "(**Runtime > Run all**): the first one installs `lrkit`.")
    note.id = "colab-edition-note"
    cells.insert(1 if cells and cells[0].cell_type == "markdown" else 0, note)
    nb.cells = cells
    nb.metadata["kernelspec"] = {"display_name": "Python 3", "language": "python", "name": "python3"}
    nb.metadata["colab"] = {"provenance": [], "toc_visible": True}
    return nb, conv.problems + [f"{doc}: {p}" for p in leftover_markup(nb)]


def write_editions(root: Path, build: Path) -> list[str]:
    """Write ``build/colab/<doc>.ipynb`` for every lesson and exercise; return the problems."""
    book = load_book(root, build)
    problems: list[str] = []
    for doc in book.docs:
        if doc.split("/")[0] in EDITION_DIRS and (root / f"{doc}.ipynb").exists():
            nb, found = edition(book, doc)
            problems += found
            out = build / "colab" / f"{doc}.ipynb"
            out.parent.mkdir(parents=True, exist_ok=True)
            nbformat.write(nb, out)  # type: ignore[no-untyped-call]
    return problems


def rewrite_launch_links(html: Path, repo_url: str) -> int:
    """Point every Colab launch link of the built site at the edition on the colab branch."""
    repo = re.escape(github_repo(repo_url))
    pattern = re.compile(rf"(https://colab\.research\.google\.com/github/{repo}/blob/)[^/\"']+/"
                         rf"(?:[^\"']*?/)?(({'|'.join(EDITION_DIRS)})/[^\"'/]+\.ipynb)")
    count = 0
    for page in html.rglob("*.html"):
        text = page.read_text(encoding="utf-8")
        new, n = pattern.subn(lambda m: f"{m.group(1)}{COLAB_BRANCH}/{m.group(2)}", text)
        if n:
            page.write_text(new, encoding="utf-8")
            count += n
    return count


def check_me(path: str | Path | None = None, timeout: float = 300, cell_timeout: float = 60) -> bool:
    """Check your exercise notebook: run it, as saved, in a fresh kernel; PASS/FAIL per exercise.

    ``path``: the notebook file. On Colab leave it out: the notebook open in this tab is used
    (save it first, Ctrl+S). Prints one line per graded check and returns True when all pass.
    """
    import tempfile

    from .cli import main

    if path is None:
        try:
            from google.colab import _message
        except ImportError:
            raise ValueError("path is required outside Colab: check_me('exercises/01_lora.ipynb')") from None
        nb = _message.blocking_request("get_ipynb", request="", timeout_sec=60)["ipynb"]
        with tempfile.TemporaryDirectory() as tmp:
            target = Path(tmp) / "notebook.ipynb"
            target.write_text(json.dumps(nb))
            return main(["check", str(target), "--timeout", str(timeout),
                         "--cell-timeout", str(cell_timeout)]) == 0
    if not Path(path).is_file():
        raise ValueError(f"path must be a notebook file, got {str(path)!r}")
    return main(["check", str(path), "--timeout", str(timeout), "--cell-timeout", str(cell_timeout)]) == 0


def add_colab_command(sub: Any) -> None:
    """Register ``colab [BUILD] [--root .]`` on the course command line."""
    p = sub.add_parser("colab", help="write the Colab editions (BUILD/colab) and point the book's "
                                     "Colab buttons at them (after jupyter-book build)")
    p.add_argument("build", nargs="?", default="_build", help="the book's build folder")
    p.add_argument("--root", default=".", help="the book's folder (with _config.yml)")
    p.set_defaults(run=_cmd_colab)


def _cmd_colab(args: Any) -> int:
    root, build = Path(args.root), Path(args.build)
    problems = write_editions(root, build)
    if (root / "solutions").is_dir():
        from .leaks import check_leaks

        problems += [f"leak: {line}" for line in check_leaks([build / "colab"], root / "solutions")]
    print("\n".join(problems) or f"Colab editions written to {build / 'colab'}")
    if (build / "html").is_dir():
        import yaml

        url = yaml.safe_load((root / "_config.yml").read_text())["repository"]["url"]
        print(f"{rewrite_launch_links(build / 'html', url)} Colab launch link(s) now open the editions")
    return 1 if problems else 0
