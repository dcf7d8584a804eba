"""The book a Colab edition is made from: its pages, chapter numbers, bibliography and glued values.

:func:`read_book` reads ``_config.yml``, ``_toc.yml``, the bibliography (``references.bib``, with
pybtex, as the book does) and, when the book is built, the values its executed notebooks glued
(myst-nb writes them to ``_build/jupyter_execute/<doc>.glue.json``). The labels and page titles a
cross-reference needs are filled in by the converter's first pass over every page
(:func:`lrkit.course.colab.load_book`).
"""

from __future__ import annotations

import ast
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import nbformat
from nbformat import NotebookNode

from .markup import read_notebook

__all__ = ["COLAB_BRANCH", "EDITION_DIRS", "Book", "Target", "doc_cells", "edition_url", "format_plain_text",
           "github_repo", "read_bib", "read_book", "read_glue"]

COLAB_BRANCH = "colab"
EDITION_DIRS = ("lessons", "exercises")


@dataclass
class Target:
    """A numbered or titled thing a cross-reference can point at."""

    docname: str
    anchor: str
    kind: str
    number: str = ""
    title: str = ""


@dataclass
class Book:
    """What resolving references needs: the site URL, chapter numbers, labels, glue, citations."""

    root: Path
    site: str
    repo: str
    chapters: dict[str, int]
    docs: list[str]
    titles: dict[str, str] = field(default_factory=dict)
    labels: dict[str, Target] = field(default_factory=dict)
    glue: dict[str, dict[str, Any]] = field(default_factory=dict)
    cites: dict[str, tuple[list[str], str]] = field(default_factory=dict)
    eqref: str = "({number})"

    def url(self, docname: str, anchor: str = "") -> str:
        return f"{self.site}{docname}.html" + (f"#{anchor}" if anchor else "")

    def bibliography(self) -> str:
        """The page that lists the references (the toc's ``.../bibliography``)."""
        return next((d for d in self.docs if d.endswith("bibliography")), "book/bibliography")


def github_repo(url: str) -> str:
    """``https://github.com/OWNER/REPO(.git)`` -> ``OWNER/REPO`` (ValueError otherwise)."""
    m = re.fullmatch(r"https://github\.com/([^/]+)/([^/]+?)(?:\.git)?/?", url.strip())
    if not m:
        raise ValueError(f"repository.url must be https://github.com/OWNER/REPO, got {url!r}")
    return f"{m.group(1)}/{m.group(2)}"


def edition_url(repo_url: str, path: str) -> str:
    """The Colab URL that opens the edition of ``path`` (``lessons/03_ssm.ipynb``)."""
    return f"https://colab.research.google.com/github/{github_repo(repo_url)}/blob/{COLAB_BRANCH}/{path}"


def read_book(root: Path, build: Path | None = None) -> Book:
    """The book's pages, chapter numbers, bibliography and (when built) glue; no labels yet."""
    import yaml  # the book's tooling (pyyaml comes with jupyter-book)

    config = yaml.safe_load((root / "_config.yml").read_text())
    toc = yaml.safe_load((root / "_toc.yml").read_text())
    repo_url = config["repository"]["url"]
    owner, name = github_repo(repo_url).split("/")
    site = (config.get("html", {}) or {}).get("baseurl") or f"https://{owner}.github.io/{name}/"
    docs, chapters, number = [toc["root"]], {}, 0
    for part in toc.get("parts", [{"chapters": toc.get("chapters", [])}]):
        for chapter in part.get("chapters", []):
            docs.append(chapter["file"])
            if part.get("numbered"):
                number += 1
                chapters[chapter["file"]] = number
            stack = list(chapter.get("sections", []))
            while stack:  # sub-pages: their labels are indexed, not numbered here
                section = stack.pop(0)
                if "file" in section:
                    docs.append(section["file"])
                stack += section.get("sections", [])
    sphinx_config = (config.get("sphinx", {}) or {}).get("config", {}) or {}
    book = Book(root, site.rstrip("/") + "/", repo_url, chapters, docs,
                eqref=sphinx_config.get("math_eqref_format", "({number})"))
    for bib in config.get("bibtex_bibfiles", []):
        book.cites.update(read_bib(root / bib))
    if build is not None:
        for doc in docs:
            book.glue[doc] = read_glue(build / "jupyter_execute" / f"{doc}.ipynb")
    return book


def read_bib(path: Path) -> dict[str, tuple[list[str], str]]:
    """``{key: (last names, year)}`` as sphinxcontrib-bibtex's author_year style reads them."""
    from pybtex.database import parse_file
    from pybtex.richtext import Text

    out = {}
    for key, entry in parse_file(str(path)).entries.items():
        persons = entry.persons.get("author") or entry.persons.get("editor") or []
        names = [Text.from_latex(" ".join(p.prelast_names + p.last_names)).render_as("text")
                 for p in persons]
        out[key] = (names or [entry.fields.get("title", key)], entry.fields.get("year", "n.d."))
    return out


def read_glue(executed: Path) -> dict[str, Any]:
    """The glued outputs of an executed notebook: ``<doc>.glue.json`` beside it, else its outputs."""
    side = executed.with_name(executed.stem + ".glue.json")
    if side.exists():
        return {k: v.get("data", {}) for k, v in json.loads(side.read_text()).items()}
    glue: dict[str, Any] = {}
    if executed.exists():
        for cell in read_notebook(executed).cells:
            for out in cell.get("outputs", []):
                scrap = out.get("metadata", {}).get("scrapbook")
                if scrap:
                    cut = len(scrap.get("mime_prefix", ""))
                    glue[scrap["name"]] = {k[cut:]: v for k, v in out.get("data", {}).items()}
    return glue


def format_plain_text(text: str, spec: str) -> str:
    """myst-nb's formatting of a glued ``text/plain`` value with a format spec."""
    try:
        value: Any = ast.literal_eval(text)
    except (SyntaxError, ValueError):
        value = text
    if spec == "":
        return str(value)
    kind = spec[-1]
    value = str(value) if kind == "s" else int(value) if kind in "bcdoxX" else (
        float(value) if kind in "eEfFgGn%" else value)
    return format(value, spec)


def doc_cells(root: Path, doc: str) -> list[NotebookNode]:
    """The cells of a page: a notebook's, or one Markdown cell for a ``.md`` page (front matter cut)."""
    path = root / f"{doc}.ipynb"
    if path.exists():
        return list(read_notebook(path).cells)
    md = root / f"{doc}.md"
    text = md.read_text() if md.exists() else ""
    text = re.sub(r"\A---\n.*?\n---\n", "", text, flags=re.S)  # front matter
    cell: NotebookNode = nbformat.v4.new_markdown_cell(text)  # type: ignore[no-untyped-call]
    return [cell]
