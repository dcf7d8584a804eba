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
"""

# mypy: disable-error-code="no-untyped-call"
from __future__ import annotations

import ast
import base64
import json
import posixpath
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import nbformat

COLAB_BRANCH = "colab"
EDITION_DIRS = ("lessons", "exercises")
ADMONITIONS = {"note", "tip", "hint", "warning", "important", "caution", "attention", "danger",
               "error", "seealso", "admonition", "dropdown", "margin", "sidebar", "topic", "card",
               "tab-set", "tab-item", "epigraph", "pull-quote"}
ROLE_OR_CODE = re.compile(r"(?P<role>\{(?P<name>[A-Za-z][\w:.+-]*)\}`(?P<text>[^`]*)`)"
                          r"|(?P<code>(?P<ticks>`+)[^`].*?(?P=ticks))", re.S)
FENCE = re.compile(r"^(?P<indent> {0,3})(?P<fence>`{3,}|:{3,})(?P<rest>.*)$")
LABEL_LINE = re.compile(r"^\s*\((?P<label>[^()\s]+)\)=\s*$")
MATH_LABEL = re.compile(r"\$\$\s*\((?P<label>[^()\s]+)\)\s*$")
LEFTOVER = {"role": re.compile(r"\{[A-Za-z][\w:.+-]*\}`"),
            "directive": re.compile(r"^\s*(`{3,}|:{3,})\s*\{", re.M),
            "label": re.compile(r"^\s*\([^()\s]+\)=\s*$", re.M),
            "option": re.compile(r"^\s*:[\w-]+:(\s|$)", re.M),
            "substitution": re.compile(r"\{\{[^}]*\}\}"),
            "equation label": re.compile(r"\$\$\s*\([^()\s]+\)")}


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


def github_repo(url: str) -> str:
    """``https://github.com/OWNER/REPO(.git)`` -> ``OWNER/REPO`` (ValueError otherwise)."""
    m = re.fullmatch(r"https://github\.com/([^/]+)/([^/]+?)(?:\.git)?/?", url.strip())
    if not m:
        raise ValueError(f"repository.url must be https://github.com/OWNER/REPO, got {url!r}")
    return f"{m.group(1)}/{m.group(2)}"


def edition_url(repo_url: str, path: str) -> str:
    """The Colab URL that opens the edition of ``path`` (``lessons/03_ssm.ipynb``)."""
    return f"https://colab.research.google.com/github/{github_repo(repo_url)}/blob/{COLAB_BRANCH}/{path}"


def load_book(root: Path, build: Path | None = None) -> Book:
    """Read ``_config.yml``, ``_toc.yml``, the bibliography and (when built) the glue data."""
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
                docs.append(section["file"]) if "file" in section else None
                stack += section.get("sections", [])
    sphinx_config = (config.get("sphinx", {}) or {}).get("config", {}) or {}
    book = Book(root, site.rstrip("/") + "/", repo_url, chapters, docs,
                eqref=sphinx_config.get("math_eqref_format", "({number})"))
    for bib in config.get("bibtex_bibfiles", []):
        book.cites.update(read_bib(root / bib))
    for doc in docs:
        if build is not None:
            book.glue[doc] = read_glue(build / "jupyter_execute" / f"{doc}.ipynb")
        _Converter(book, doc).convert_cells(_doc_cells(root, doc))  # pass 1: titles and labels
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
        for cell in nbformat.read(executed, as_version=4).cells:
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


def _doc_cells(root: Path, doc: str) -> list[Any]:
    path = root / f"{doc}.ipynb"
    if path.exists():
        return list(nbformat.read(path, as_version=4).cells)
    md = root / f"{doc}.md"
    text = md.read_text() if md.exists() else ""
    text = re.sub(r"\A---\n.*?\n---\n", "", text, flags=re.S)  # front matter
    return [nbformat.v4.new_markdown_cell(text)]


class _Converter:
    """One document's MyST Markdown -> plain Markdown, counting numbered items as Sphinx does."""

    def __init__(self, book: Book, doc: str) -> None:
        self.book, self.doc = book, doc
        self.problems: list[str] = []
        self.counters: dict[str, int] = {}
        self.attachments: dict[str, dict[str, str]] = {}

    def number(self, kind: str, label: str, title: str = "") -> str:
        self.counters[kind] = self.counters.get(kind, 0) + 1
        chapter = self.book.chapters.get(self.doc)
        num = f"{chapter}.{self.counters[kind]}" if chapter else str(self.counters[kind])
        if label:
            anchor = f"equation-{label}" if kind == "equation" else label
            self.book.labels.setdefault(label, Target(self.doc, anchor, kind, num, title))
        return num

    def convert_cells(self, cells: list[Any]) -> list[Any]:
        out = []
        for cell in cells:
            cell = nbformat.from_dict(json.loads(json.dumps(cell)))
            if cell.cell_type == "markdown":
                self.attachments = {}
                cell.source = self.markdown(cell.source)
                if self.attachments:
                    cell["attachments"] = self.attachments
                out.append(cell)
                continue
            out.append(cell)
            figure = (cell.metadata.get("mystnb", {}) or {}).get("figure") if cell.cell_type == "code" else None
            if figure:
                name, caption = figure.get("name", ""), self.inline(figure.get("caption", ""))
                head = f"**Fig. {self.number('figure', name, caption)}.**" if name else "**Figure.**"
                fig_cell = nbformat.v4.new_markdown_cell(f"{head} {caption}".strip())
                fig_cell.id = f"colab-{cell.get('id', len(out))}"[:64]
                out.append(fig_cell)
        return out

    def markdown(self, text: str) -> str:
        lines, out, i = text.split("\n"), [], 0
        if self.doc not in self.book.titles:
            m = re.search(r"^#\s+(.+)$", text, re.M)
            if m:
                self.book.titles[self.doc] = self.inline(m.group(1).strip())
        while i < len(lines):
            line, m = lines[i], FENCE.match(lines[i])
            if m:
                end = _closing(lines, i, m.group("fence"))
                body = lines[i + 1:end]
                rest = m.group("rest").strip()
                d = re.match(r"\{(?P<name>[^}]+)\}\s*(?P<arg>.*)$", rest)
                out.append(self.directive(d.group("name"), d.group("arg"), body) if d
                           else "\n".join(lines[i:end + 1]))
                i = end + 1
                continue
            label = LABEL_LINE.match(line)
            if label:
                heading = next((ln for ln in lines[i + 1:] if ln.strip()), "")
                title = self.inline(heading.lstrip("#").strip()) if heading.startswith("#") else ""
                self.book.labels.setdefault(label.group("label"),
                                            Target(self.doc, label.group("label"), "section", "", title))
            elif re.match(r"^\s*(%|\+\+\+)", line):
                pass  # MyST comments and block breaks
            else:
                eq = MATH_LABEL.search(line)
                if eq:
                    line = line[:eq.start()] + f"\\tag{{{self.number('equation', eq.group('label'))}}} $$"
                out.append(self.inline(line))
            i += 1
        return "\n".join(out)

    def directive(self, name: str, arg: str, body: list[str]) -> str:
        options, j = {}, 0
        if body and body[0].strip() == "---":
            end = body.index("---", 1) if "---" in body[1:] else 0
            for ln in body[1:end]:
                key, _, value = ln.partition(":")
                options[key.strip()] = value.strip()
            j = end + 1
        while j < len(body) and re.match(r"^\s*:[\w-]+:", body[j]):
            key, _, value = body[j].strip()[1:].partition(":")
            options[key] = value.strip()
            j += 1
        content = self.markdown("\n".join(body[j:])).strip()
        label, title = options.get("label") or options.get("name", ""), self.inline(arg.strip())
        if name.startswith("prf:") and name != "prf:proof":
            kind = name[4:]
            head = kind.title() if "nonumber" in options else f"{kind.title()} {self.number(kind, label, title)}"
            return f"**{head}{f' ({title})' if title else ''}.** {content}"
        if name == "prf:proof":
            return f"*Proof.* {content} $\\blacksquare$"
        if name in ADMONITIONS:
            head = title if name in {"admonition", "dropdown", "card", "tab-item", "topic", "sidebar"} else name.title()
            return f"**{head or name.title()}.** {content}" if name != "tab-set" else content
        if name == "math":
            tag = f"\n\\tag{{{self.number('equation', label)}}}" if label else ""
            return f"$$\n{content}{tag}\n$$"
        if name in ("code-block", "code", "sourcecode", "code-cell"):
            return f"```{arg.strip()}\n" + "\n".join(body[j:]) + "\n```"
        if name == "bibliography":
            return f"The references are listed on the book's [bibliography page]({self.book.url(self._bib_doc())})."
        if name in ("table", "list-table"):
            table = _list_table(content, int(options.get("header-rows", "0") or 0)) if name == "list-table" else content
            head = f"Table {self.number('table', label, title)}" if label else "Table"
            return f"**{head}.** {title}\n\n{table}" if title or label else table
        if name in ("figure", "image"):
            return self.figure(arg.strip(), options, content, name == "figure")
        if name in ("glue", "glue:any", "glue:figure", "glue:math", "glue:md"):
            return self.glue_block(arg.strip(), options, content, name)
        if name == "raw" and arg.strip() == "html":
            return "\n".join(body[j:])
        self.problems.append(f"{self.doc}: directive {{{name}}} has no Colab rendering")
        return content

    def figure(self, path: str, options: dict[str, str], caption: str, numbered: bool) -> str:
        src = (self.book.root / self.doc).parent / path
        image = self.attach(src.name, src.read_bytes(), "image/png" if src.suffix == ".png" else "image/"
                            + src.suffix.lstrip(".")) if src.exists() else path
        text = f"![{options.get('alt', caption)}]({image})"
        if numbered:
            name = options.get("name", "")
            head = f"**Fig. {self.number('figure', name, caption)}.**" if name else ""
            text += f"\n\n{head} {caption}".rstrip()
        return text

    def glue_block(self, key: str, options: dict[str, str], caption: str, name: str) -> str:
        data = self.glue_data(key)
        if data is None:
            return ""
        if "image/png" in data:
            ref = self.attach(f"{key}.png", base64.b64decode(data["image/png"]), "image/png")
            text = f"![{options.get('alt', caption or key)}]({ref})"
        elif "text/markdown" in data:
            text = data["text/markdown"]
        elif "text/latex" in data:
            text = f"$$\n{data['text/latex'].strip('$')}\n$$"
        else:
            text = format_plain_text(data.get("text/plain", ""), "")
        if name == "glue:figure":
            label = options.get("name", "")
            head = f"**Fig. {self.number('figure', label, caption)}.**" if label else ""
            text += f"\n\n{head} {caption}".rstrip()
        return text

    def attach(self, name: str, data: bytes, mime: str) -> str:
        self.attachments[name] = {mime: base64.b64encode(data).decode()}
        return f"attachment:{name}"

    def glue_data(self, key: str) -> dict[str, Any] | None:
        doc, _, k = key.rpartition("::")
        doc = posixpath.normpath(posixpath.join(posixpath.dirname(self.doc), doc)) if doc else self.doc
        data = self.book.glue.get(doc, {}).get(k)
        if data is None:
            self.problems.append(f"{self.doc}: no glued value {k!r} in the executed build of {doc}")
        return data

    def inline(self, text: str) -> str:
        return ROLE_OR_CODE.sub(lambda m: self.role(m.group("name"), m.group("text")) if m.group("role")
                                else m.group(0), text)

    def role(self, name: str, text: str) -> str:
        explicit = re.fullmatch(r"(?P<title>.*?)\s*<(?P<target>[^<>]+)>", text, re.S)
        title, target = (explicit.group("title"), explicit.group("target")) if explicit else ("", text)
        if name in ("glue", "glue:any", "glue:text", "glue:md"):
            key, spec = (text.rsplit(":", 1) + [""])[:2] if name == "glue:text" and ":" in text else (text, "")
            data = self.glue_data(key)
            try:
                return format_plain_text(data.get("text/plain", ""), spec) if data else f"`{key}`"
            except (TypeError, ValueError) as exc:
                self.problems.append(f"{self.doc}: glued value {key!r} cannot be formatted: {exc}")
                return data.get("text/plain", "") if data else f"`{key}`"
        if name == "cite" or name.startswith("cite:"):
            return self.cite(name.partition(":")[2] or "p", text)
        if name == "doc":
            doc = posixpath.normpath(posixpath.join(posixpath.dirname(self.doc), target))
            return f"[{title or self.book.titles.get(doc, doc)}]({self.book.url(doc)})"
        if name in ("ref", "numref", "prf:ref", "eq"):
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

    def cite(self, style: str, text: str) -> str:
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
            items.append(f"[{shown}]({self.book.url(self._bib_doc())})")
        joined = "; ".join(items)
        return f"({joined})" if style in ("p", "ps", "yearpar", "alp", "") else joined

    def _bib_doc(self) -> str:
        return next((d for d in self.book.docs if d.endswith("bibliography")), "book/bibliography")


def _list_table(body: str, header_rows: int) -> str:
    """A MyST ``list-table`` body (``* - a`` / ``  - b`` rows) as a Markdown pipe table."""
    rows: list[list[str]] = []
    for line in body.split("\n"):
        m = re.match(r"^(\*|-)\s+-\s+(.*)$", line) or re.match(r"^\s+-\s+(.*)$", line)
        if m and line.lstrip().startswith(("* -", "- -")):
            rows.append([m.group(2).strip()])
        elif m and rows:
            rows[-1].append(m.group(1).strip())
        elif rows and line.strip():
            rows[-1][-1] += " " + line.strip()
    width = max((len(r) for r in rows), default=0)
    rows = [r + [""] * (width - len(r)) for r in rows]
    head = rows[:header_rows] if header_rows else [[""] * width]
    body_rows = rows[header_rows:] if header_rows else rows
    lines = ["| " + " | ".join(r) + " |" for r in head[:1]] + ["|" + "---|" * width]
    return "\n".join(lines + ["| " + " | ".join(r) + " |" for r in head[1:] + body_rows])


def _closing(lines: list[str], start: int, fence: str) -> int:
    char, n = fence[0], len(fence)
    for k in range(start + 1, len(lines)):
        s = lines[k].strip()
        if len(s) >= n and set(s) == {char}:
            return k
    return len(lines) - 1


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


def edition(book: Book, doc: str) -> tuple[Any, list[str]]:
    """The Colab edition of ``doc`` (``lessons/03_ssm``) and the problems met converting it."""
    nb = nbformat.read(book.root / f"{doc}.ipynb", as_version=4)
    conv = _Converter(book, doc)
    cells = conv.convert_cells(nb.cells)
    for cell in cells:
        if cell.cell_type == "code":
            cell.outputs, cell.execution_count = [], None
    chapter = book.chapters.get(doc)
    where = f"Chapter {chapter}" if chapter else "this page"
    note = nbformat.v4.new_markdown_cell(
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
            nbformat.write(nb, out)
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
