"""The install cell every notebook starts with, generated from ``_config.yml`` and the version.

The first code cell of each notebook in ``lessons/``, ``exercises/`` and ``solutions/`` (tags
``remove-cell``, ``lrkit-install``) installs the lrkit the book was built from,
``git+<repository.url>@v<version>``, when lrkit is missing (Colab, a bare Python), from
``$LRKIT_INSTALL_SOURCE`` when set; it fails with one sentence naming that variable.

``python -m lrkit.course sync-install-cells [--check]`` rewrites that cell (and only that cell)
in every notebook from :func:`install_cell_source`; ``--check`` reports stale ones (exit 1).
"""

# mypy: disable-error-code="no-untyped-call"
from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import nbformat

INSTALL_TAGS = ["remove-cell", "lrkit-install"]
NOTEBOOK_DIRS = ("lessons", "exercises", "solutions")
TEMPLATE = '''\
# Colab or a bare Python: install the lrkit this book was built from (LRKIT_INSTALL_SOURCE overrides).
import importlib.util, os, subprocess, sys
if importlib.util.find_spec("lrkit") is None:
    source = os.environ.get("LRKIT_INSTALL_SOURCE", "{default}")
    try:
        subprocess.check_call([sys.executable, "-m", "pip", "install", "-q", source])
    except (subprocess.CalledProcessError, OSError):
        raise RuntimeError(f"Could not install lrkit from {{source!r}}: check the connection, or set "
                           "LRKIT_INSTALL_SOURCE to a source pip can reach (a folder, a wheel or a git URL).") from None'''  # noqa: E501


def project_version(root: Path) -> str:
    """``[project] version`` of ``root/pyproject.toml`` (else the installed ``lrkit.__version__``)."""
    pyproject = root / "pyproject.toml"
    if pyproject.exists():
        import tomllib

        version = tomllib.loads(pyproject.read_text()).get("project", {}).get("version")
        if version:
            return str(version)
    from lrkit import __version__

    return __version__


def default_source(root: Path) -> str:
    """``git+<repository.url>@v<version>``: the lrkit release the book at ``root`` was built from."""
    text = (root / "_config.yml").read_text()
    m = re.search(r"^repository:\s*\n(?:[ \t]+.*\n)*?[ \t]+url:\s*(\S+)", text, re.M)
    if not m:
        raise ValueError(f"{root / '_config.yml'} has no repository.url")
    return f"git+{m.group(1).strip(chr(34) + chr(39))}@v{project_version(root)}"


def install_cell_source(root: Path) -> str:
    """The install cell's text for the book at ``root``."""
    return TEMPLATE.format(default=default_source(root))


def notebooks(root: Path) -> list[Path]:
    return sorted(p for d in NOTEBOOK_DIRS for p in (root / d).glob("*.ipynb"))


def sync_install_cells(root: Path, check: bool = False) -> list[str]:
    """Rewrite (or with ``check`` only report) every notebook whose install cell is stale."""
    expected, messages = install_cell_source(root), []
    for path in notebooks(root):
        nb = nbformat.read(path, as_version=4)
        code = [c for c in nb.cells if c.cell_type == "code"]
        if not code:
            messages.append(f"{path.relative_to(root)}: no code cell")
            continue
        cell = code[0]
        tags = cell.metadata.get("tags", [])
        if cell.source == expected and all(t in tags for t in INSTALL_TAGS):
            continue
        if "lrkit-install" not in tags:
            messages.append(f"{path.relative_to(root)}: the first code cell is not the install cell "
                            "(tag lrkit-install); add one by hand")
            continue
        messages.append(f"{path.relative_to(root)}: install cell {'is stale' if check else 'rewritten'}")
        if not check:
            cell.source = expected
            cell.metadata["tags"] = INSTALL_TAGS + [t for t in tags if t not in INSTALL_TAGS]
            nbformat.write(nb, path)
    return messages


def add_install_command(sub: Any) -> None:
    """Register ``sync-install-cells [--root .] [--check]`` on the course command line."""
    p = sub.add_parser("sync-install-cells",
                       help="rewrite every notebook's install cell from _config.yml and the version")
    p.add_argument("--root", default=".", help="the book's folder (with _config.yml)")
    p.add_argument("--check", action="store_true", help="only report stale install cells (exit 1)")
    p.set_defaults(run=_cmd_sync)


def _cmd_sync(args: Any) -> int:
    messages = sync_install_cells(Path(args.root), check=args.check)
    print("\n".join(messages) or "install cells are up to date")
    return 1 if any(not m.endswith("rewritten") for m in messages) else 0
