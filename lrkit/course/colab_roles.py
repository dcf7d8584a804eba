"""MyST roles in one line of Markdown -> Markdown Colab renders (the inline half of the converter).

* ``{glue:text}`key:.3f``` becomes the value the book's build glued, formatted as myst-nb does;
* ``{cite:p}`` / ``{cite:t}`` become "(Hu et al., 2022)" / "Hu et al. (2022)", linked to the
  book's bibliography page;
* ``{numref}``, ``{ref}``, ``{prf:ref}``, ``{eq}``, ``{doc}`` become links to the book's pages;
* inline code spans are left alone. What has no rendering is added to ``problems``.
"""

from __future__ import annotations

import posixpath
import re
from typing import Any

from .colab_book import Book, format_plain_text

__all__ = ["ROLE_OR_CODE", "InlineRenderer"]

ROLE_OR_CODE = re.compile(r"(?P<role>\{(?P<name>[A-Za-z][\w:.+-]*)\}`(?P<text>[^`]*)`)"
                          r"|(?P<code>(?P<ticks>`+)[^`].*?(?P=ticks))", re.S)
CITE_PARENTHESES = ("p", "ps", "yearpar", "alp", "")


class InlineRenderer:
    """One document's roles as Markdown; what cannot be rendered is collected in ``problems``."""

    def __init__(self, book: Book, doc: str) -> None:
        self.book, self.doc = book, doc
        self.problems: list[str] = []

    def inline(self, text: str) -> str:
        return ROLE_OR_CODE.sub(lambda m: self.role(m.group("name"), m.group("text")) if m.group("role")
                                else m.group(0), text)

    def glue_data(self, key: str) -> dict[str, Any] | None:
        """The glued MIME bundle of ``key`` (``doc::key`` for another page's), None when missing."""
        doc, _, k = key.rpartition("::")
        doc = posixpath.normpath(posixpath.join(posixpath.dirname(self.doc), doc)) if doc else self.doc
        data: dict[str, Any] | None = self.book.glue.get(doc, {}).get(k)
        if data is None:
            self.problems.append(f"{self.doc}: no glued value {k!r} in the executed build of {doc}")
        return data

    def role(self, name: str, text: str) -> str:
        explicit = re.fullmatch(r"(?P<title>.*?)\s*<(?P<target>[^<>]+)>", text, re.S)
        title, target = (explicit.group("title"), explicit.group("target")) if explicit else ("", text)
        if name in ("glue", "glue:any", "glue:text", "glue:md"):
            return self.glued(name, text)
        if name == "cite" or name.startswith("cite:"):
            return self.cite(name.partition(":")[2] or "p", text)
        if name == "doc":
            doc = posixpath.normpath(posixpath.join(posixpath.dirname(self.doc), target))
            return f"[{title or self.book.titles.get(doc, doc)}]({self.book.url(doc)})"
        if name in ("ref", "numref", "prf:ref", "eq"):
            return self.reference(name, title, target)
        if name == "math":
            return f"${text}$"
        if name in ("code", "literal", "command", "file", "samp", "kbd", "envvar"):
            return f"`{text}`"
        if name in ("sub", "sup"):
            return f"<{name}>{text}</{name}>"
        if name in ("term", "abbr", "index", "dfn", "strong", "emphasis", "guilabel", "menuselection"):
            return title or re.sub(r"\s*\(.*\)$", "", target) if name == "abbr" else (title or target)
        self.problems.append(f"{self.doc}: role {{{name}}} has no Colab rendering")
        return title or target

    def glued(self, name: str, text: str) -> str:
        """``{glue:text}`key:spec``` and friends: the glued ``text/plain``, formatted."""
        key, spec = (text.rsplit(":", 1) + [""])[:2] if name == "glue:text" and ":" in text else (text, "")
        data = self.glue_data(key)
        try:
            return format_plain_text(data.get("text/plain", ""), spec) if data else f"`{key}`"
        except (TypeError, ValueError) as exc:
            self.problems.append(f"{self.doc}: glued value {key!r} cannot be formatted: {exc}")
            return str(data.get("text/plain", "")) if data else f"`{key}`"

    def reference(self, name: str, title: str, target: str) -> str:
        """``{ref}``, ``{numref}``, ``{prf:ref}``, ``{eq}``: a link to the labelled thing's page."""
        t = self.book.labels.get(target)
        if t is None:
            self.problems.append(f"{self.doc}: {{{name}}} target {target!r} not found")
            return title or target
        if name == "eq":
            shown = title or self.book.eqref.replace("{number}", t.number)
        elif name == "ref":
            shown = title or t.title or target
        else:
            kind = "Fig." if t.kind == "figure" and name == "numref" else t.kind.title()
            shown = (title.replace("%s", t.number).replace("{number}", t.number)
                     .replace("{name}", t.title) if title else f"{kind} {t.number}".strip())
        return f"[{shown}]({self.book.url(t.docname, t.anchor)})"

    def cite(self, style: str, text: str) -> str:
        """Author-year citations of the comma-separated keys, each linked to the bibliography."""
        items = []
        for key in (k.strip() for k in text.split(",")):
            names, year = self.book.cites.get(key, ([key], "?"))
            if key not in self.book.cites:
                self.problems.append(f"{self.doc}: citation key {key!r} is not in the bibliography")
            full = style.endswith("s")
            who = (names[0] if len(names) == 1 else " and ".join(names) if len(names) == 2 and not full
                   else ", ".join(names[:-1]) + ", and " + names[-1] if full else f"{names[0]} et al.")
            shown = {"p": f"{who}, {year}", "ps": f"{who}, {year}", "t": f"{who} ({year})",
                     "ts": f"{who} ({year})", "year": year, "yearpar": year, "author": who,
                     "authors": who, "alp": f"{who}, {year}", "alt": f"{who} {year}"}.get(style)
            if shown is None:
                self.problems.append(f"{self.doc}: citation style cite:{style} has no Colab rendering")
                shown = f"{who}, {year}"
            items.append(f"[{shown}]({self.book.url(self.book.bibliography())})")
        joined = "; ".join(items)
        return f"({joined})" if style in CITE_PARENTHESES else joined
