"""The built book as a reader sees it: scans _build/html (run `make book` first; skipped without it).

Fails on a figure without a number or a caption, an image without a meaningful alt text, a raw
``{glue`` / ``{cite`` / ``{prf`` / ``{numref`` role left in the text, MathJax loaded from a CDN,
and a generated page (claims, landing page) that lost its generated part.
``LRKIT_BOOK_HTML`` names another build folder.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
HTML = Path(os.environ.get("LRKIT_BOOK_HTML", ROOT / "_build" / "html"))

if not (HTML / "book" / "intro.html").is_file():
    pytest.skip(f"no built book at {HTML} (run `make book` first)", allow_module_level=True)

bs4 = pytest.importorskip("bs4", reason="beautifulsoup4 comes with the book extra")

PAGES = sorted(p for p in HTML.rglob("*.html") if "_static" not in p.parts and "_sources" not in p.parts
               and p != HTML / "index.html")  # index.html only redirects to book/intro.html
LESSONS = [p for p in PAGES if p.parent.name == "lessons"]
RAW_ROLE = re.compile(r"\{(glue|cite|prf|numref|doc|ref|eq)(:[\w-]+)?\}`")
PATH_ALT = re.compile(r"(\.(png|jpe?g|svg|gif)$)|(^[./]*_images/)|(^[\w./-]+/[\w.-]+$)")


def soup(path: Path) -> bs4.BeautifulSoup:
    return bs4.BeautifulSoup(path.read_text(encoding="utf-8"), "html.parser")


def article(page: bs4.BeautifulSoup):
    return page.find("article") or page.body or page


def test_the_build_has_lessons() -> None:
    assert LESSONS, f"no lesson pages under {HTML / 'lessons'}"


@pytest.mark.parametrize("path", LESSONS, ids=lambda p: p.stem)
def test_every_lesson_figure_is_numbered_and_captioned(path: Path) -> None:
    body = article(soup(path))
    problems = []
    for img in body.select("div.cell_output img"):
        fig = img.find_parent("figure")
        if fig is None:
            problems.append(f"an output image is not a figure (no number, no caption): {img.get('src')}")
            continue
    for fig in body.find_all("figure"):
        cap = fig.find("figcaption")
        name = fig.get("id") or (fig.find("img") or {}).get("src", "?")
        if cap is None or not cap.get_text(strip=True):
            problems.append(f"figure {name} has no caption")
        elif cap.find(class_="caption-number") is None:
            problems.append(f"figure {name} is not numbered")
        else:
            text = cap.get_text(" ", strip=True)
            if len(re.sub(r"^Fig\.?\s*[\d.]+\s*", "", text)) < 20:
                problems.append(f"figure {name} has a caption that says nothing: {text!r}")
    assert not problems, f"{path.relative_to(HTML)}:\n  " + "\n  ".join(problems)


@pytest.mark.parametrize("path", PAGES, ids=lambda p: str(p.relative_to(HTML)))
def test_images_have_meaningful_alt_text(path: Path) -> None:
    bad = []
    for img in article(soup(path)).find_all("img"):
        alt = (img.get("alt") or "").strip()
        if len(alt) < 10 or PATH_ALT.search(alt) or alt.lower() in ("image", "figure", "png", "output"):
            bad.append(f"{img.get('src')}: alt={alt!r}")
    assert not bad, f"{path.relative_to(HTML)}: images without a meaningful alt text:\n  " + "\n  ".join(bad)


@pytest.mark.parametrize("path", PAGES, ids=lambda p: str(p.relative_to(HTML)))
def test_no_raw_roles_are_left_in_the_text(path: Path) -> None:
    page = soup(path)
    for tag in page.find_all(["script", "style", "pre", "code"]):
        tag.decompose()  # code may legitimately spell a role; the prose must not
    hits = sorted({m.group(0) for m in RAW_ROLE.finditer(page.get_text(" "))})
    assert not hits, f"{path.relative_to(HTML)}: unrendered roles in the text: {hits}"


@pytest.mark.parametrize("path", PAGES, ids=lambda p: str(p.relative_to(HTML)))
def test_mathjax_is_served_by_the_book(path: Path) -> None:
    page = soup(path)
    srcs = [s.get("src", "") for s in page.find_all("script") if "mathjax" in s.get("src", "").lower()]
    remote = [s for s in srcs if re.match(r"^(https?:)?//", s)]
    assert not remote, f"{path.relative_to(HTML)} loads MathJax from a CDN: {remote}"
    for src in srcs:
        assert (path.parent / src.split("?")[0]).resolve().is_file(), f"{path.name}: {src} is missing"


def test_local_mathjax_is_there() -> None:
    assert (HTML / "_static" / "mathjax" / "tex-chtml.js").is_file()
    assert (HTML / "_static" / "mathjax" / "output" / "chtml" / "fonts" / "woff-v2").is_dir()


def test_generated_pages_were_generated() -> None:
    claims = (HTML / "book" / "claims.html").read_text(encoding="utf-8")
    assert "lrkit:claims-table" not in claims and "measured vs predicted" in claims
    assert claims.count("<table") >= 1, "the claims page has no table"
    intro = soup(HTML / "book" / "intro.html")
    assert "lrkit:chapter-list" not in intro.get_text()
    links = {a.get("href", "").split("#")[0] for a in intro.find_all("a")}
    for lesson in LESSONS:
        assert f"../lessons/{lesson.name}" in links, f"the landing page does not link {lesson.name}"
    assert any("claims.html" in h for h in links) and any("prf-prf.html" in h for h in links)


def test_bibliography_labels_are_author_year_and_unique() -> None:
    page = soup(HTML / "book" / "bibliography.html")
    labels = [s.get_text(strip=True).strip("[]") for s in page.select("span.label, dt.label, div.citation span.label")]
    if not labels:
        labels = [d.get_text(strip=True).strip("[]") for d in page.select("dt")]
    assert labels, "no bibliography entries found"
    assert all(not lab.isdigit() for lab in labels), f"numbered bibliography: {labels}"
    assert len(labels) == len(set(labels)), f"two entries share a label: {labels}"


def test_a_favicon_and_a_logo() -> None:
    page = soup(HTML / "book" / "intro.html")
    assert page.find("link", rel="icon") is not None
    assert any("logo" in (img.get("src") or "") for img in page.find_all("img"))


@pytest.mark.parametrize("path", PAGES, ids=lambda p: str(p.relative_to(HTML)))
def test_every_page_loads_the_course_css(path: Path) -> None:
    """course.css wraps code cells and hints (no sideways scrolling) and boxes wide equations."""
    hrefs = [link.get("href", "") for link in soup(path).find_all("link", rel="stylesheet")]
    assert any(h.split("?")[0].endswith("_static/course.css") for h in hrefs), path.name
