"""MyST blocks -> Markdown Colab renders: directives, labels, numbered equations and figures.

``{prf:proposition}`` and admonition fences become bold blocks, "**Proposition 3.1 (Title).**",
numbered per chapter in order of appearance as sphinx-proof numbers them; labelled equations get
``\\tag{3.1}``; code-cell figures get a "**Fig. 3.1.** caption" cell; images are attached to the
cell. Roles inside are rendered by :class:`lrkit.course.colab_roles.InlineRenderer`.
"""

from __future__ import annotations

import base64
import json
import re

import nbformat
from nbformat import NotebookNode

from .colab_book import Book, Target, format_plain_text
from .colab_roles import InlineRenderer

__all__ = ["ADMONITIONS", "Converter", "list_table"]

ADMONITIONS = {"note", "tip", "hint", "warning", "important", "caution", "attention", "danger",
               "error", "seealso", "admonition", "dropdown", "margin", "sidebar", "topic", "card",
               "tab-set", "tab-item", "epigraph", "pull-quote"}
TITLED = {"admonition", "dropdown", "card", "tab-item", "topic", "sidebar"}  # the argument is the title
FENCE = re.compile(r"^(?P<indent> {0,3})(?P<fence>`{3,}|:{3,})(?P<rest>.*)$")
LABEL_LINE = re.compile(r"^\s*\((?P<label>[^()\s]+)\)=\s*$")
MATH_LABEL = re.compile(r"\$\$\s*\((?P<label>[^()\s]+)\)\s*$")


def markdown_cell(source: str) -> NotebookNode:
    cell: NotebookNode = nbformat.v4.new_markdown_cell(source)  # type: ignore[no-untyped-call]
    return cell


class Converter(InlineRenderer):
    """One document's MyST Markdown -> plain Markdown, counting numbered items as Sphinx does."""

    def __init__(self, book: Book, doc: str) -> None:
        super().__init__(book, doc)
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

    def convert_cells(self, cells: list[NotebookNode]) -> list[NotebookNode]:
        out = []
        for original in cells:
            cell: NotebookNode = nbformat.from_dict(json.loads(json.dumps(original)))  # type: ignore[no-untyped-call]
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
                fig_cell = markdown_cell(f"{head} {caption}".strip())
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
            line, fence = lines[i], FENCE.match(lines[i])
            if fence:
                end = closing_line(lines, i, fence.group("fence"))
                d = re.match(r"\{(?P<name>[^}]+)\}\s*(?P<arg>.*)$", fence.group("rest").strip())
                out.append(self.directive(d.group("name"), d.group("arg"), lines[i + 1:end]) if d
                           else "\n".join(lines[i:end + 1]))
                i = end + 1
                continue
            label = LABEL_LINE.match(line)
            if label:
                heading = next((ln for ln in lines[i + 1:] if ln.strip()), "")
                title = self.inline(heading.lstrip("#").strip()) if heading.startswith("#") else ""
                self.book.labels.setdefault(label.group("label"),
                                            Target(self.doc, label.group("label"), "section", "", title))
            elif not re.match(r"^\s*(%|\+\+\+)", line):  # MyST comments and block breaks go
                eq = MATH_LABEL.search(line)
                if eq:
                    line = line[:eq.start()] + f"\\tag{{{self.number('equation', eq.group('label'))}}} $$"
                out.append(self.inline(line))
            i += 1
        return "\n".join(out)

    def directive(self, name: str, arg: str, body: list[str]) -> str:
        options, j = directive_options(body)
        content = self.markdown("\n".join(body[j:])).strip()
        label, title = options.get("label") or options.get("name", ""), self.inline(arg.strip())
        if name.startswith("prf:") and name != "prf:proof":
            kind = name[4:]
            head = kind.title() if "nonumber" in options else f"{kind.title()} {self.number(kind, label, title)}"
            return f"**{head}{f' ({title})' if title else ''}.** {content}"
        if name == "prf:proof":
            return f"*Proof.* {content} $\\blacksquare$"
        if name in ADMONITIONS:
            head = title if name in TITLED else name.title()
            return f"**{head or name.title()}.** {content}" if name != "tab-set" else content
        if name == "math":
            tag = f"\n\\tag{{{self.number('equation', label)}}}" if label else ""
            return f"$$\n{content}{tag}\n$$"
        if name in ("code-block", "code", "sourcecode", "code-cell"):
            return f"```{arg.strip()}\n" + "\n".join(body[j:]) + "\n```"
        if name == "bibliography":
            bibliography = self.book.url(self.book.bibliography())
            return f"The references are listed on the book's [bibliography page]({bibliography})."
        if name in ("table", "list-table"):
            table = list_table(content, int(options.get("header-rows", "0") or 0)) if name == "list-table" else content
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
        mime = "image/png" if src.suffix == ".png" else "image/" + src.suffix.lstrip(".")
        image = self.attach(src.name, src.read_bytes(), mime) if src.exists() else path
        return f"![{options.get('alt', caption)}]({image})" + (
            self.caption(options, caption) if numbered else "")

    def glue_block(self, key: str, options: dict[str, str], caption: str, name: str) -> str:
        data = self.glue_data(key)
        if data is None:
            return ""
        if "image/png" in data:
            ref = self.attach(f"{key}.png", base64.b64decode(data["image/png"]), "image/png")
            text = f"![{options.get('alt', caption or key)}]({ref})"
        elif "text/markdown" in data:
            text = str(data["text/markdown"])
        elif "text/latex" in data:
            text = f"$$\n{data['text/latex'].strip('$')}\n$$"
        else:
            text = format_plain_text(data.get("text/plain", ""), "")
        return text + (self.caption(options, caption) if name == "glue:figure" else "")

    def caption(self, options: dict[str, str], caption: str) -> str:
        """A numbered figure's caption paragraph ("**Fig. 3.1.** ..."), unnumbered without a name."""
        name = options.get("name", "")
        head = f"**Fig. {self.number('figure', name, caption)}.**" if name else ""
        return f"\n\n{head} {caption}".rstrip()

    def attach(self, name: str, data: bytes, mime: str) -> str:
        self.attachments[name] = {mime: base64.b64encode(data).decode()}
        return f"attachment:{name}"


def directive_options(body: list[str]) -> tuple[dict[str, str], int]:
    """A directive's options (a ``---`` YAML block or ``:key: value`` lines) and where its content starts."""
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
    return options, j


def list_table(body: str, header_rows: int) -> str:
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


def closing_line(lines: list[str], start: int, fence: str) -> int:
    """The index of the line that closes the fence opened at ``start`` (the last line if none)."""
    char, n = fence[0], len(fence)
    for k in range(start + 1, len(lines)):
        s = lines[k].strip()
        if len(s) >= n and set(s) == {char}:
            return k
    return len(lines) - 1
