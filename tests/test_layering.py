"""The package's shape, checked from the source: imports run one way, no cycles, only cli/ draws.

Layers, lowest first: ``errors`` ← ``model`` ← ``eval`` ← ``study`` ← ``report`` ← ``cli``. ``export`` sits beside
``eval`` on top of ``model`` (it writes frankenmodels, it never scores them). A module may import its own layer or
lower ones — never a higher one — and the module-level import graph (function-level imports included) has no
cycle. Only ``cli/`` prints or imports rich.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src" / "frankenlm"

# what each top-level part of the package may import (besides itself)
ALLOWED = {
    "errors": set(),
    "model": {"errors"},
    "eval": {"errors", "model"},
    "export": {"errors", "model"},
    "study": {"errors", "model", "eval"},
    "report": {"errors", "model", "eval", "study"},
    "cli": {"errors", "model", "eval", "export", "study", "report"},
}
TOP = {"__init__", "__main__"}  # the package root may import anything (version, entry point)


def _module_name(path: Path) -> str:
    rel = path.relative_to(SRC.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def _modules() -> dict[str, Path]:
    return {_module_name(p): p for p in SRC.rglob("*.py")}


def _imports(name: str, path: Path) -> set[str]:
    """Every frankenlm module `path` imports, at any depth of the file (resolving relative imports)."""
    tree = ast.parse(path.read_text(), filename=str(path))
    pkg = name if path.name == "__init__.py" else name.rpartition(".")[0]
    out: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names if a.name.split(".")[0] == "frankenlm")
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = pkg.split(".")
                base = base[: len(base) - (node.level - 1)]
                mod = ".".join(base + ([node.module] if node.module else []))
            else:
                mod = node.module or ""
            if mod.split(".")[0] != "frankenlm":
                continue
            out.add(mod)
            out.update(f"{mod}.{a.name}" for a in node.names)  # `from pkg import module`
    return out


def _graph() -> dict[str, set[str]]:
    mods = _modules()
    return {n: {m for m in _imports(n, p) if m in mods and m != n} for n, p in mods.items()}


def _part(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def test_the_layout_has_the_expected_parts():
    parts = {_part(m) for m in _modules()}
    assert set(ALLOWED) <= parts | {"errors"}, parts


def test_imports_run_one_way():
    bad = []
    for mod, deps in _graph().items():
        src = _part(mod)
        if src in TOP:
            continue
        for d in deps:
            dst = _part(d)
            if dst == src or dst in TOP and d == "frankenlm":
                continue
            if dst not in ALLOWED.get(src, set()):
                bad.append(f"{mod} imports {d} ({src} may import {sorted(ALLOWED.get(src, set()))})")
    assert not bad, "\n".join(sorted(bad))


def _package_parents(module: str) -> set[str]:
    parts = module.split(".")
    return {".".join(parts[:k]) for k in range(1, len(parts))}


def test_no_import_cycles():
    graph = _graph()
    # a package's __init__ re-exporting its own submodules is not a cycle of the code's logic
    for mod in graph:
        graph[mod] = {d for d in graph[mod] if mod not in _package_parents(d)}
    state: dict[str, int] = {}
    stack: list[str] = []
    cycles: list[list[str]] = []

    def visit(n: str) -> None:
        state[n] = 1
        stack.append(n)
        for d in sorted(graph[n]):
            if state.get(d) == 1:
                cycles.append(stack[stack.index(d) :] + [d])
            elif d not in state:
                visit(d)
        stack.pop()
        state[n] = 2

    for n in sorted(graph):
        if n not in state:
            visit(n)
    assert not cycles, "import cycles:\n" + "\n".join(" -> ".join(c) for c in cycles)


@pytest.mark.parametrize("what", ["print", "rich"])
def test_only_the_cli_draws(what):
    bad = []
    for mod, path in _modules().items():
        if _part(mod) in {"cli", "__main__"}:
            continue
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if what == "print" and isinstance(node, ast.Call) and getattr(node.func, "id", None) == "print":
                bad.append(f"{mod}:{node.lineno} calls print")
            if what == "rich" and isinstance(node, (ast.Import, ast.ImportFrom)):
                names = [a.name for a in node.names] if isinstance(node, ast.Import) else [node.module or ""]
                if any(n.split(".")[0] == "rich" for n in names):
                    bad.append(f"{mod}:{node.lineno} imports rich")
    assert not bad, "\n".join(bad)


def test_the_checks_see_a_reverse_import(tmp_path):
    """The checker itself: a model module importing study is caught (so the tests above can fail)."""
    p = tmp_path / "x.py"
    p.write_text("from frankenlm.study import runner\nfrom ..eval import scorer\n")
    got = _imports("frankenlm.model.x", p)
    assert "frankenlm.study.runner" in got and "frankenlm.eval.scorer" in got
