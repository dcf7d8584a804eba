"""Sphinx glue of the course's book (loaded from _config.yml as a local extension).

* The claims page: lessons run with ``LRKIT_LEDGER`` set (default
  ``_build/claims/ledger.jsonl``, kept between builds so that notebooks the execution
  cache skips keep their records). ``book/claims`` is read after every other page, so
  the ledger is complete when its table is generated (:mod:`lrkit.claims_page`) in place
  of the line ``% lrkit:claims-table``; it is re-read on every build.
* The landing page: the line ``% lrkit:chapter-list`` becomes the list of chapters of
  ``_toc.yml``'s "Chapters" part, each with its exercises and the works it cites.
* Author-year citations: in the text "Hu et al. (2022)" / "(Hu et al., 2022)" (reference
  style ``lrkit_author_year``), and the same "Hu et al., 2022" as the bibliography's labels
  (pybtex style ``lrkit_author_year``), so a reader finds a citation by its text.
* The proposition index (``prf-prf.html``) lists "Proposition 1.2: title" by chapter,
  not raw labels.
* MathJax served locally: sphinx-mathjax-offline copies all of MathJax 3.2.2 (24 MB) into
  ``_static/mathjax``; we keep what ``tex-chtml.js`` loads (its fonts, the TeX extensions
  it autoloads, the menu and accessibility parts), about 5 MB.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

from sphinx.application import Sphinx
from sphinx.util import logging

logger = logging.getLogger(__name__)

CLAIMS_DOC, CLAIMS_MARK = "book/claims", "% lrkit:claims-table"
INTRO_MARK = "% lrkit:chapter-list"
_CITE = re.compile(r"\{cite(?::\w+)?\}`([^`]+)`")


def _ledger(app: Sphinx) -> Path:
    return Path(os.environ.setdefault(
        "LRKIT_LEDGER", str(Path(app.outdir).parent / "claims" / "ledger.jsonl"))).resolve()


def _toc(app: Sphinx) -> dict[str, Any]:
    import yaml

    return yaml.safe_load((Path(app.srcdir) / "_toc.yml").read_text(encoding="utf-8"))


def _read_last(app: Sphinx, env: Any, docnames: list[str]) -> None:
    for doc in (app.config.root_doc, CLAIMS_DOC):
        if doc in docnames:
            docnames.remove(doc)
            docnames.append(doc)


def _always_outdated(app: Sphinx, env: Any, added: set, changed: set, removed: set) -> list[str]:
    return [d for d in (CLAIMS_DOC, app.config.root_doc) if d in env.found_docs]


def _source_read(app: Sphinx, docname: str, source: list[str]) -> None:
    if docname == CLAIMS_DOC and CLAIMS_MARK in source[0]:
        source[0] = source[0].replace(CLAIMS_MARK, _claims_table(app))
    elif docname == app.config.root_doc and INTRO_MARK in source[0]:
        source[0] = source[0].replace(INTRO_MARK, _chapter_list(app))


def _claims_table(app: Sphinx) -> str:
    from lrkit.claims_page import render

    root = Path(app.srcdir)
    seeds = root / "_build" / "claims" / "seeds" / "summary.json"
    text, warnings = render(_ledger(app), root / "book" / "claims_registry.yml", root, seeds)
    out = _ledger(app).parent / "claims_table.md"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text, encoding="utf-8")
    for w in warnings:  # console notes, not Sphinx warnings: a missing label must not fail -W
        logger.info(f"[lrkit claims page] {w}")
    logger.info(f"[lrkit claims page] generated from {_ledger(app)} ({out})")
    return text


def _chapter_list(app: Sphinx) -> str:
    parts = _toc(app).get("parts", [])
    docs = [re.sub(r"\.(md|ipynb)$", "", c["file"]) for p in parts for c in p.get("chapters", [])
            if "file" in c]
    lessons = [d for p in parts if p.get("caption") == "Chapters" for d in
               (re.sub(r"\.(md|ipynb)$", "", c["file"]) for c in p.get("chapters", []) if "file" in c)]
    lines = []
    for n, lesson in enumerate(lessons, 1):
        line = f"{n}. {{doc}}`/{lesson}`"
        ex = "exercises/" + lesson.split("/", 1)[1]
        if ex in docs:
            line += f"; exercises: {{doc}}`/{ex}`"
        keys = _cited(Path(app.srcdir) / (lesson + ".ipynb"))
        if keys:
            line += f"; sources: {{cite:t}}`{','.join(keys)}`"
        lines.append(line + ".")
    return "\n".join(lines) + "\n"


def _cited(path: Path) -> list[str]:
    import json

    if not path.is_file():
        return []
    cells = json.loads(path.read_text(encoding="utf-8")).get("cells", [])
    text = "\n".join("".join(c.get("source", "")) for c in cells if c.get("cell_type") == "markdown")
    keys: list[str] = []
    for group in _CITE.findall(text):
        keys += [k.strip() for k in group.split(",") if k.strip() and k.strip() not in keys]
    return list(dict.fromkeys(keys))


def _register_author_year_labels() -> None:
    import pybtex.plugin
    from pybtex.richtext import Text
    from pybtex.style.formatting.plain import Style as Plain
    from pybtex.style.labels import BaseLabelStyle

    def last(person: Any) -> str:
        return Text.from_latex(" ".join(person.prelast_names + person.last_names)).render_as("text")

    class AuthorYearLabels(BaseLabelStyle):
        """"Hu et al., 2022", "Dayi and Chen, 2025", "Kalajdzievski, 2023" (the in-text form)."""

        def format_labels(self, sorted_entries: Any) -> Any:
            for entry in sorted_entries:
                people = entry.persons.get("author") or entry.persons.get("editor") or []
                names = [last(p) for p in people]
                who = (names[0] if len(names) == 1 else " and ".join(names) if len(names) == 2
                       else f"{names[0]} et al." if names else entry.fields.get("title", entry.key))
                yield f"{who}, {entry.fields.get('year', 'n.d.')}"

    class AuthorYearStyle(Plain):
        default_label_style = AuthorYearLabels

    pybtex.plugin.register_plugin("pybtex.style.formatting", "lrkit_author_year", AuthorYearStyle)


def _register_round_brackets() -> None:
    """In-text citations as "Hu et al. (2022)" and "(Hu et al., 2022)" (the default uses [ ])."""
    from dataclasses import dataclass, field

    import sphinxcontrib.bibtex.plugin
    from sphinxcontrib.bibtex.style.referencing import BracketStyle
    from sphinxcontrib.bibtex.style.referencing.author_year import AuthorYearReferenceStyle

    def round_brackets() -> BracketStyle:
        return BracketStyle(left="(", right=")")

    @dataclass
    class RoundAuthorYear(AuthorYearReferenceStyle):
        bracket_parenthetical: BracketStyle = field(default_factory=round_brackets)
        bracket_textual: BracketStyle = field(default_factory=round_brackets)
        bracket_author: BracketStyle = field(default_factory=round_brackets)
        bracket_label: BracketStyle = field(default_factory=round_brackets)
        bracket_year: BracketStyle = field(default_factory=round_brackets)

    sphinxcontrib.bibtex.plugin.register_plugin(
        "sphinxcontrib.bibtex.style.referencing", "lrkit_author_year", RoundAuthorYear)


def _proof_titles(app: Sphinx, doctree: Any) -> None:
    env = app.env
    titles = env.__dict__.setdefault("lrkit_proof_titles", {})
    for node in doctree.traverse(lambda n: "realtype" in getattr(n, "attributes", {})):
        label = node.get("label")
        if label:
            fmt = app.config.proof_title_format  # " (%t)": keep what %t stands for
            title = node.get("title", "")
            head, _, tail = fmt.partition("%t")
            if title.startswith(head) and title.endswith(tail):
                title = title[len(head):len(title) - len(tail)]
            titles[label] = _plain_tex(title.strip())


_TEX = {r"\omega": "ω", r"\alpha": "α", r"\eta": "η", r"\rho": "ρ", r"\sigma": "σ", r"\lambda": "λ",
        r"\sqrt": "√", r"\star": "⋆", r"\infty": "∞", r"\times": "×", r"\le": "≤", r"\ge": "≥"}


def _plain_tex(text: str) -> str:
    """Inline ``$...$`` as plain text for the index (which MathJax does not typeset)."""
    def plain(m: re.Match[str]) -> str:
        out = m.group(1)
        for tex, uni in _TEX.items():
            out = re.sub(re.escape(tex) + r"(?![A-Za-z])", uni, out)
        return re.sub(r"[\\{}]", "", out)
    return re.sub(r"\$([^$]+)\$", plain, text)


def _patch_proof_index() -> None:
    from sphinx_proof.domain import ProofIndex

    def generate(self: Any, docnames: Any = None) -> tuple[list[Any], bool]:
        env = self.domain.env
        proofs = getattr(env, "proof_list", {})
        titles = getattr(env, "lrkit_proof_titles", {})
        groups: dict[str, list[tuple[Any, ...]]] = {}
        for anchor, v in proofs.items():
            doc = v["docname"]
            number = env.toc_fignumbers.get(doc, {}).get(v["countertype"], {}).get(anchor, ())
            num = ".".join(map(str, number))
            name = f"{v['realtype'].title()} {num}".strip()
            if titles.get(anchor):
                name += f": {titles[anchor]}"
            group = env.titles[doc].astext() if doc in env.titles else doc
            groups.setdefault(group, []).append((number, (name, 0, doc, anchor, "", "", "")))
        content = [(g, [e for _, e in sorted(items, key=lambda t: t[0])])
                   for g, items in sorted(groups.items(), key=lambda kv: min(t[0] for t in kv[1]) or (0,))]
        return content, False

    ProofIndex.generate = generate  # type: ignore[method-assign]
    ProofIndex.localname = "Index of propositions"


_MATHJAX_KEEP = ("tex-chtml.js", "output/chtml", "input/tex/extensions", "a11y", "ui", "adaptors",
                 "latest.js", "loader.js", "startup.js", "core.js")


def _trim_mathjax(app: Sphinx, exc: Exception | None) -> None:
    import shutil

    root = Path(app.outdir) / "_static" / "mathjax"
    if exc is not None or not root.is_dir():
        return
    for path in sorted(root.rglob("*"), key=lambda p: -len(p.parts)):
        rel = path.relative_to(root).as_posix()
        keep = any(rel == k or rel.startswith(k + "/") or k.startswith(rel + "/") for k in _MATHJAX_KEEP)
        if not keep:
            shutil.rmtree(path) if path.is_dir() else path.unlink()


def setup(app: Sphinx) -> dict[str, Any]:
    _register_author_year_labels()
    _register_round_brackets()
    _patch_proof_index()
    app.connect("builder-inited", lambda app: logger.info(f"[lrkit] claims ledger: {_ledger(app)}"))
    app.connect("env-before-read-docs", _read_last)
    app.connect("env-get-outdated", _always_outdated)
    app.connect("source-read", _source_read)
    app.connect("doctree-read", _proof_titles)
    app.connect("build-finished", _trim_mathjax, priority=900)  # after sphinx-mathjax-offline's copy
    return {"version": "1.0", "parallel_read_safe": False, "parallel_write_safe": True}
