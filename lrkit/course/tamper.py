"""Recognising a submission that tampers with the interpreter the checks run in.

Locked check cells and hidden tests run in the student's kernel after the student's code (as in
nbgrader), so code that rewrites later cells (IPython input or AST transformers, event hooks),
traces or patches the interpreter (``sys.settrace``, ``builtins``, ``sys.modules``), replaces a
function of an imported module (``lrkit.checks.check_x = ...``, ``torch.allclose = ...``) or hides
what it runs (``exec``, ``eval``, ``compile``, ``__import__``, ``importlib``) could make a failing
check pass. No exercise of the course needs any of these, so the grader reads every cell the
student wrote (magics translated to Python first) and scores the exercises from the first such
cell onwards 0, with the reason. What the scan cannot see is said on the instructor page.
"""

from __future__ import annotations

import ast

__all__ = ["tamper_findings"]

FORBIDDEN_NAMES = {
    "exec": "exec() runs hidden code", "eval": "eval() runs hidden code", "compile": "compile() builds hidden code",
    "__import__": "__import__() imports by a computed name", "get_ipython": "get_ipython() reaches the kernel",
    "globals": "globals() edits the namespace by name", "vars": "vars() edits a namespace by name",
    "setattr": "setattr() replaces attributes by name", "delattr": "delattr() removes attributes by name",
    "__builtins__": "__builtins__ patches the interpreter",
}
FORBIDDEN_MODULES = {
    "builtins", "importlib", "ctypes", "gc", "inspect", "IPython", "ipykernel", "types", "marshal",
    "pickle", "dill", "code", "codeop", "runpy",
}
SYS_ATTRIBUTES = {  # sys itself is fine (sys.exit, sys.stderr); these reach into the interpreter
    "modules", "settrace", "setprofile", "meta_path", "path_hooks", "path_importer_cache", "addaudithook",
    "excepthook", "displayhook", "_getframe", "monitoring", "builtin_module_names",
}
FORBIDDEN_ATTRIBUTES = {
    "input_transformers_cleanup", "input_transformers_post", "ast_transformers", "register_magic_function",
    "settrace", "setprofile", "addaudithook", "meta_path", "path_hooks", "excepthook", "__code__",
    "__globals__", "__builtins__", "__dict__", "__class__", "__subclasses__", "f_globals", "f_locals",
    "f_back", "tb_frame", "gi_frame", "events",
}


def _to_python(source: str) -> str:
    """The cell's source with IPython magics and shell escapes as Python (``get_ipython()...``);
    the harmless magics (``%matplotlib``, ``%time``, ``%timeit``) are dropped first."""
    lines = source.split("\n")
    if lines[0].strip().split(" ")[0] in ("%%time", "%%timeit"):
        lines[0] = ""  # a timed cell: the code below still counts
    kept = []
    for ln in lines:
        word, _, rest = ln.strip().partition(" ")
        if word == "%matplotlib":
            ln = ""
        elif word in ("%time", "%timeit"):
            ln = rest  # the timed statement still counts
        kept.append(ln)
    source = "\n".join(kept)
    try:
        from IPython.core.inputtransformer2 import TransformerManager

        return str(TransformerManager().transform_cell(source))  # type: ignore[no-untyped-call]
    except Exception:  # IPython missing or a broken cell: scan the raw text
        return source


def tamper_findings(source: str) -> list[str]:
    """Why the code in ``source`` may tamper with the checks (empty when nothing is found).

    A cell that does not parse cannot run, so it cannot tamper: it yields nothing.
    """
    try:
        tree = ast.parse(_to_python(source))
    except SyntaxError:
        return []
    imported: set[str] = set()
    sys_names: set[str] = {"sys"}
    found: list[str] = []
    for node in ast.walk(tree):
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else [node.module or ""]
            for name in names:
                if name.split(".")[0] in FORBIDDEN_MODULES:
                    found.append(f"imports {name}")
            if isinstance(node, ast.ImportFrom) and node.module == "sys":
                found += [f"imports sys.{a.name}" for a in node.names if a.name in SYS_ATTRIBUTES or a.name == "*"]
            for alias in node.names:
                imported.add((alias.asname or alias.name).split(".")[0])
                if alias.name == "sys":
                    sys_names.add(alias.asname or "sys")
        elif isinstance(node, ast.Name) and node.id in FORBIDDEN_NAMES:
            found.append(FORBIDDEN_NAMES[node.id])
        elif isinstance(node, ast.Attribute) and node.attr in FORBIDDEN_ATTRIBUTES:
            found.append(f"uses .{node.attr}")
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and node.attr in SYS_ATTRIBUTES and isinstance(node.value, ast.Name) \
                and node.value.id in sys_names:
            found.append(f"uses sys.{node.attr}")
    for node in ast.walk(tree):  # replacing what an imported module holds: lrkit.checks.f = ...
        targets = node.targets if isinstance(node, ast.Assign) else (
            [node.target] if isinstance(node, (ast.AugAssign, ast.AnnAssign)) else [])
        if isinstance(node, ast.Delete):
            targets = node.targets
        for target in targets:
            base = target
            while isinstance(base, (ast.Attribute, ast.Subscript)):
                base = base.value
            if base is not target and isinstance(base, ast.Name) and base.id in imported:
                found.append(f"changes the imported module {base.id!r}")
    return list(dict.fromkeys(found))
