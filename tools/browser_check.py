"""The built book as a reader sees it, offline: a headless-browser check of ``_build/html``.

Usage: ``python tools/browser_check.py _build/html --out _build/screenshots [--pages 'lessons/*']``
(needs the ``browser`` extra, ``pip install -e .[browser]``, and a Chromium at ``/usr/bin/chromium``
or ``--chromium PATH``; ``playwright install`` is not needed).

Each page is opened from ``file://`` in Chromium (1400 px viewport) with every request that is not
``file:``/``data:``/``blob:`` aborted: a book that needs the internet shows it here. Per page:

* **math**: MathJax must be requested from the book itself (a blocked MathJax URL fails), a page
  with ``.math`` nodes must end with ``mjx-container`` elements, no ``mjx-merror``, and no raw
  ``\\(``, ``\\[`` or ``$$`` left in visible text (code blocks excepted);
* **figures**: every ``<figure>`` in the article has a "Fig. N" number and a caption text, every
  image sits in such a figure and has an alt text that is not a file path;
* **overflow**: the document is not wider than the viewport, and no prose paragraph, admonition
  or proof box, or display equation is wider than its box; no ``Hint`` in a code block ends past its
  right edge (other code blocks that scroll sideways are counted, not failed);
* **sliders**: each matplotlib ``to_jshtml`` player (``.animation input[type=range]``) is moved to
  another frame with ``input``/``change`` events, and its frame image's ``src`` must change; a page
  with live ipywidgets (empty offline, dead without a kernel) must also have such a player;
* **raw roles**: no ``{glue``, ``{cite``, ``{numref``, ``{eq}``, ``{prf:`` left in visible text;
* **missing files**: no ``file://`` request fails.

Console errors and blocked requests are reported, not failed. A full-page screenshot per page goes
to ``--out`` with ``summary.json`` and ``summary.md``; the exit code is 1 when any page fails, with
one line per failure.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

CHROMIUM = "/usr/bin/chromium"
VIEWPORT: Any = {"width": 1400, "height": 1000}
DEFAULT_PAGES = ("book/*.html", "lessons/*.html", "exercises/*.html")
RAW_ROLES = ["{glue", "{cite", "{numref", "{eq}", "{prf:", "{ref}", "{doc}"]
LOCAL = ("file:", "data:", "blob:", "about:")

MATHJAX_JS = """async () => { const M = window.MathJax;  // typeset done, or 30 s
  if (M && M.startup && M.startup.promise) await Promise.race([M.startup.promise, new Promise(r => setTimeout(r, 3e4))])
}"""

MEASURE_JS = r"""(roles) => {
  const art = document.querySelector('article.bd-article') || document.querySelector('main') || document.body;
  const cut = (s, n = 48) => (s || '').trim().replace(/\s+/g, ' ').slice(0, n);
  const name = (el) => {
    const id = el.id || (el.closest('[id]') || {}).id || '';
    const c = typeof el.className === 'string' ? el.className.trim().split(/\s+/)[0] : '', cls = c ? '.' + c : '';
    return `${el.tagName.toLowerCase()}${cls}${id ? ' #' + id : ''} "${cut(el.textContent)}"`;
  };
  const over = (el) => el.scrollWidth > el.clientWidth + 1 || el.getBoundingClientRect().right > artRight + 1;
  const artRight = art.getBoundingClientRect().right;
  const rawMath = [], rawRoles = [];
  const walker = document.createTreeWalker(document.body, NodeFilter.SHOW_TEXT);
  for (let n = walker.nextNode(); n; n = walker.nextNode()) {
    const p = n.parentElement;
    if (!p || p.closest('pre, code, script, style, noscript, textarea, mjx-container')) continue;
    if (!p.getClientRects().length) continue;  // not displayed
    const t = n.textContent;
    if (/\\\(|\\\[|\$\$/.test(t)) rawMath.push(cut(t));
    if (roles.some(r => t.includes(r))) rawRoles.push(cut(t));
  }
  const figures = [];
  for (const f of art.querySelectorAll('figure')) {
    const num = (f.querySelector('figcaption .caption-number') || {}).textContent || '';
    const cap = (f.querySelector('figcaption .caption-text') || f.querySelector('figcaption') || {}).textContent || '';
    figures.push({where: f.id || name(f), numbered: /Fig\.\s*\d+/.test(num), captioned: cut(cap).length > 0});
  }
  const badAlt = [];
  for (const img of art.querySelectorAll('img')) {
    const alt = (img.getAttribute('alt') || '').trim(), src = (img.getAttribute('src') || '').slice(-40);
    if (!img.closest('figure')) figures.push({where: 'img ' + src, numbered: false, captioned: false});
    const path = /\.(png|jpe?g|svg|gif|webp)$/i.test(alt) || /_images\//.test(alt);
    if (!alt || path) badAlt.push(`img ${src} alt="${cut(alt)}"`);
  }
  const overflow = [];
  for (const p of art.querySelectorAll('p')) if (!p.closest('pre, table') && over(p)) overflow.push('p ' + name(p));
  for (const a of art.querySelectorAll('.admonition, div.proof, aside')) if (over(a)) overflow.push('box ' + name(a));
  for (const c of art.querySelectorAll('mjx-container[display="true"]')) {
    const m = c.querySelector('mjx-math');
    const w = m ? m.getBoundingClientRect().width : 0;
    if (over(c) || w > c.clientWidth + 1) {
      const tex = c.parentElement && c.parentElement.closest('[id]');
      overflow.push(`equation ${Math.round(w)}>${c.clientWidth}px in #${tex ? tex.id : '?'}`);
    }
  }
  const pres = [...art.querySelectorAll('pre')];
  let scrolling = 0;
  for (const pre of pres) {
    if (pre.scrollWidth > pre.clientWidth + 1) scrolling++;
    const right = pre.getBoundingClientRect().right;
    const w2 = document.createTreeWalker(pre, NodeFilter.SHOW_TEXT);
    for (let n = w2.nextNode(); n; n = w2.nextNode()) {
      const i = n.textContent.indexOf('Hint');
      if (i < 0) continue;
      const end = n.textContent.indexOf('\n', i);
      const r = document.createRange();
      r.setStart(n, i); r.setEnd(n, end < 0 ? n.textContent.length : end);
      if (r.getBoundingClientRect().right > right + 1) overflow.push('hint cut ' + cut(n.textContent.slice(i), 40));
    }
  }
  const root = document.documentElement;
  return {hasMath: document.querySelectorAll('.math').length > 0,
          mathNodes: document.querySelectorAll('mjx-container').length,
          mathErrors: document.querySelectorAll('mjx-merror').length,
          widgets: document.querySelectorAll('script[type="application/vnd.jupyter.widget-view+json"]').length,
          players: document.querySelectorAll('.animation').length,
          rawMath, rawRoles, figures, badAlt, overflow, pres: pres.length, scrolling,
          docOverflow: root.scrollWidth - root.clientWidth};
}"""

SLIDERS_JS = """async () => {
  const out = [];
  for (const s of new Set(document.querySelectorAll('.animation input[type=range], input.anim-slider'))) {
    const img = (s.closest('.animation') || document).querySelector('img');
    const before = img ? img.getAttribute('src') || '' : '';
    const lo = +s.min, hi = +s.max, v = +s.value;
    const broken = !img ? 'no frame image' : !before ? 'no frame shown' : hi <= lo ? 'one frame' : '';
    if (broken) { out.push(broken); continue; }
    s.value = String(v !== hi ? hi : lo);
    for (const e of ['input', 'change']) s.dispatchEvent(new Event(e, {bubbles: true}));
    await new Promise(r => setTimeout(r, 100));
    out.push(img.getAttribute('src') !== before ? '' : 'frame unchanged');
  }
  return out;
}"""


@dataclass
class PageReport:
    """What one page shows; ``failures`` holds one line per failed check."""

    page: str
    math_nodes: int = 0
    raw_math: list[str] = field(default_factory=list)
    figures: int = 0
    numbered: int = 0
    captioned: int = 0
    bad_alt: list[str] = field(default_factory=list)
    overflow: list[str] = field(default_factory=list)
    doc_overflow_px: int = 0
    code_scrolling: str = "0/0"
    sliders_ok: int = 0
    sliders: int = 0
    live_widgets: int = 0
    raw_roles: list[str] = field(default_factory=list)
    console_errors: list[str] = field(default_factory=list)
    blocked: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    screenshot: str = ""
    failures: list[str] = field(default_factory=list)


def judge(r: PageReport, m: dict[str, Any], slider_why: list[str]) -> list[str]:
    """One line per failed check of page report ``r`` (``m``: the DOM measures)."""
    fails = [f"MathJax requested from the network: {u}" for u in r.blocked if "mathjax" in u.lower()]
    if m["hasMath"] and r.math_nodes == 0:
        fails.append("math not rendered (no mjx-container)")
    if m["mathErrors"]:
        fails.append(f"{m['mathErrors']} MathJax errors (mjx-merror)")
    if r.raw_math:
        fails.append(f"{len(r.raw_math)} raw TeX spans, e.g. '{r.raw_math[0]}'")
    unnumbered = [f["where"] for f in m["figures"] if not (f["numbered"] and f["captioned"])]
    if unnumbered:
        fails.append(f"{len(unnumbered)} figures without number/caption, e.g. {unnumbered[0]}")
    if r.bad_alt:
        fails.append(f"{len(r.bad_alt)} images without a real alt text, e.g. {r.bad_alt[0]}")
    if r.doc_overflow_px > 0:
        fails.append(f"page {r.doc_overflow_px}px wider than the viewport")
    fails += [f"overflow: {o}" for o in r.overflow]
    fails += [f"slider {i + 1}: {why}" for i, why in enumerate(slider_why) if why]
    if r.live_widgets and not m["players"]:
        fails.append(f"{r.live_widgets} live widgets (blank offline, dead without a kernel) and no precomputed player")
    if r.raw_roles:
        fails.append(f"{len(r.raw_roles)} raw roles, e.g. '{r.raw_roles[0]}'")
    fails += [f"missing file {u}" for u in r.missing]
    return fails


def check_page(context: Any, root: Path, rel: str, out: Path, fmt: str) -> PageReport:
    """Open ``root/rel`` offline in ``context``, measure it, screenshot it to ``out``."""
    r = PageReport(page=rel)
    page = context.new_page()

    def console(msg: Any) -> None:  # our own aborts log net::ERR_FAILED: counted as blocked instead
        if msg.type == "error" and "net::ERR_FAILED" not in msg.text:
            r.console_errors.append(msg.text[:160])

    def failed(req: Any) -> None:
        if req.url.startswith("file:"):
            r.missing.append(req.url)

    def route(rt: Any) -> None:
        if rt.request.url.startswith(LOCAL):
            rt.continue_()
        else:
            r.blocked.append(rt.request.url)
            rt.abort()

    page.on("console", console)
    page.on("pageerror", lambda exc: r.console_errors.append(str(exc)[:160]))
    page.on("requestfailed", failed)
    page.route("**/*", route)
    page.goto((root / rel).resolve().as_uri(), wait_until="load")
    page.evaluate(MATHJAX_JS)
    page.evaluate("document.fonts.ready.then(() => new Promise(r => setTimeout(r, 200)))")
    m = page.evaluate(MEASURE_JS, RAW_ROLES)
    r.math_nodes, r.raw_math, r.raw_roles = m["mathNodes"], m["rawMath"], m["rawRoles"]
    r.figures = len(m["figures"])
    r.numbered = sum(f["numbered"] for f in m["figures"])
    r.captioned = sum(f["captioned"] for f in m["figures"])
    r.bad_alt, r.overflow, r.doc_overflow_px = m["badAlt"], m["overflow"], m["docOverflow"]
    r.code_scrolling, r.live_widgets = f"{m['scrolling']}/{m['pres']}", m["widgets"]
    shot = out / (rel.removesuffix(".html").replace("/", "__") + (".png" if fmt == "png" else ".jpg"))
    page.screenshot(path=str(shot), full_page=True, **({"type": "jpeg", "quality": 50} if fmt == "jpeg" else {}))
    r.screenshot = shot.name
    why = page.evaluate(SLIDERS_JS)
    r.sliders, r.sliders_ok = len(why), sum(not w for w in why)
    page.close()
    r.failures = judge(r, m, why)
    return r


def summary_md(reports: list[PageReport], seconds: float) -> str:
    """The Markdown table of ``reports``."""
    rows = ["| page | math nodes | figures numbered/captioned | overflow offenders | code scrolling "
            "| sliders ok | live widgets | raw roles | console errors | blocked | result |", "|" + "---|" * 11]
    for r in reports:
        rows.append(f"| {r.page} | {r.math_nodes} (raw {len(r.raw_math)}) | {r.numbered}/{r.captioned} of {r.figures} "
                    f"| {len(r.overflow) + (r.doc_overflow_px > 0)} | {r.code_scrolling} | {r.sliders_ok}/{r.sliders} "
                    f"| {r.live_widgets} | {len(r.raw_roles)} | {len(r.console_errors)} | {len(r.blocked)} "
                    f"| {'FAIL' if r.failures else 'ok'} |")
    lines = [f"- {r.page}: {f}" for r in reports for f in r.failures]
    errs = sorted({e for r in reports for e in r.console_errors})
    hosts = sorted({u.split("/")[2] for r in reports for u in r.blocked if u.count("/") >= 2})
    return "\n".join([f"# Browser check: {len(reports)} pages, {seconds:.0f} s, "
                      f"{sum(bool(r.failures) for r in reports)} failing", "", *rows, "", "## Failures", "",
                      *(lines or ["none"]), "", "## Console errors (not failed)", "",
                      *[f"- {e}" for e in errs], "", f"Blocked hosts (offline): {', '.join(hosts) or 'none'}", ""])


def run(root: Path, out: Path, patterns: list[str], fmt: str = "jpeg", chromium: str = CHROMIUM) -> list[PageReport]:
    """Check every page of ``root`` matching ``patterns``; write screenshots and summaries to ``out``."""
    from playwright.sync_api import sync_playwright

    rels = sorted({p.relative_to(root).as_posix() for pat in patterns for p in root.glob(pat)
                   if p.suffix == ".html"})
    if not rels:
        raise SystemExit(f"no page matches {patterns} under {root}")
    out.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=chromium, args=["--disable-gpu"])
        context = browser.new_context(viewport=VIEWPORT, device_scale_factor=1)
        context.set_default_timeout(60_000)
        reports = []
        for rel in rels:
            try:
                reports.append(check_page(context, root, rel, out, fmt))
            except Exception as exc:  # a page that hangs or crashes fails, the others still run
                reports.append(PageReport(page=rel, failures=[f"check crashed: {str(exc)[:160]}"]))
        browser.close()
    seconds = time.perf_counter() - start
    (out / "summary.json").write_text(json.dumps([asdict(r) for r in reports], indent=1))
    (out / "summary.md").write_text(summary_md(reports, seconds))
    return reports


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("html", type=Path, help="the built book, e.g. _build/html")
    parser.add_argument("--out", type=Path, default=Path("_build/screenshots"))
    parser.add_argument("--pages", nargs="+", default=list(DEFAULT_PAGES), help="globs under html")
    parser.add_argument("--format", choices=["jpeg", "png"], default="jpeg")
    parser.add_argument("--chromium", default=CHROMIUM)
    args = parser.parse_args(argv)
    pats = [p if p.endswith(".html") else p.rstrip("*") + "*.html" for p in args.pages]
    reports = run(args.html, args.out, pats, args.format, args.chromium)
    for r in reports:
        for f in r.failures:
            print(f"FAIL {r.page}: {f}")
    failing = sum(bool(r.failures) for r in reports)
    print(f"{len(reports)} pages, {failing} failing; summary in {args.out / 'summary.md'}")
    return 1 if failing else 0


if __name__ == "__main__":
    sys.exit(main())
