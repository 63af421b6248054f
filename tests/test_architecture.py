"""The core's imports run one way: no circle, no import tucked into a function, no outer layer.

The graph is read from the source (every module's AST, top-level and function-level imports,
relative and absolute), so nothing is imported to check it."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
CORE = "fantasytalking_core"
OUTER = ("comfy", "comfy_extras", "folder_paths", "nodes", "training", "evaluation", "scripts", "benchmarks")
LAZY_SIBLINGS_ALLOWED = {f"{CORE}.__main__"}  # the CLI imports its commands' modules on use, for start-up speed


def _module_name(path: Path, root: Path) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _resolve(name: str, modules: set[str]) -> str | None:
    """The core module `name` is, or its nearest enclosing package (`a.b.C` -> `a.b`)."""
    while name and name not in modules:
        name = name.rpartition(".")[0]
    return name or None


def _imports(path: Path, module: str, modules: set[str]) -> list[tuple[str, str, int, bool]]:
    """(imported name, the core module it resolves to or "", line, inside a function) per import."""
    tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found = []

    def visit(node: ast.AST, in_function: bool) -> None:
        for child in ast.iter_child_nodes(node):
            inner = in_function or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda))
            names: list[str] = []
            if isinstance(child, ast.Import):
                names = [a.name for a in child.names]
            elif isinstance(child, ast.ImportFrom):
                base = child.module or ""
                if child.level:
                    anchor = package.split(".")[: len(package.split(".")) - (child.level - 1)]
                    base = ".".join(anchor + ([base] if base else []))
                # `from pkg import sub` imports the submodule pkg.sub when there is one
                names = [f"{base}.{a.name}" if f"{base}.{a.name}" in modules else base for a in child.names]
            for name in names:
                found.append((name, _resolve(name, modules) or "", child.lineno, in_function))
            visit(child, inner)

    visit(tree, False)
    return found


def import_graph(root: Path = ROOT, package: str = CORE) -> tuple[dict[str, set[str]], dict[str, list]]:
    """{core module: core modules it imports} and every import with its place, from the source."""
    files = {_module_name(p, root): p for p in sorted((root / package).rglob("*.py"))}
    modules = set(files)
    graph, every = {}, {}
    for module, path in files.items():
        every[module] = _imports(path, module, modules)
        graph[module] = {target for _, target, _, _ in every[module] if target and target != module}
    return graph, every


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One circle as [a, b, ..., a], or None (depth-first search, three colours)."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def walk(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return path[path.index(nxt):] + [nxt]
            if nxt not in state and (cycle := walk(nxt)):
                return cycle
        path.pop()
        state[node] = 2
        return None

    for start in sorted(graph):
        if start not in state and (cycle := walk(start)):
            return cycle
    return None


def test_the_core_has_no_import_circle():
    graph, _ = import_graph()
    assert len(graph) > 30 and f"{CORE}.frames" in graph and f"{CORE}.encoders.wav2vec" in graph
    cycle = find_cycle(graph)
    assert cycle is None, "import circle in the core: " + " -> ".join(cycle)


def test_a_planted_circle_is_found(tmp_path):
    pkg = tmp_path / CORE
    (pkg / "sub").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "sub" / "__init__.py").write_text("from .b import B\n")
    (pkg / "a.py").write_text("def f():\n    from .sub import b\n")  # function-level, relative, package form
    (pkg / "sub" / "b.py").write_text("import fantasytalking_core.c\nB = 1\n")  # absolute
    (pkg / "c.py").write_text("from . import a\n")
    graph, _ = import_graph(tmp_path)
    cycle = find_cycle(graph)
    assert cycle is not None and cycle[0] == cycle[-1]
    assert set(cycle) == {f"{CORE}.a", f"{CORE}.sub.b", f"{CORE}.c"}
    (pkg / "c.py").write_text("import os\n")
    assert find_cycle(import_graph(tmp_path)[0]) is None


def test_the_core_imports_no_outer_layer():
    _, every = import_graph()
    bad = [f"{module}:{line} imports {name}" for module, found in every.items() for name, _, line, _ in found
           if name.split(".")[0] in OUTER]
    assert not bad, "the core must not import ComfyUI, nodes, training, evaluation, scripts or benchmarks: " \
                    + "; ".join(bad)


def test_core_modules_are_imported_at_the_top():
    """A sibling imported inside a function hides a dependency (and is how circles get dodged)."""
    _, every = import_graph()
    lazy = [f"{module}:{line} imports {target}" for module, found in every.items() for _, target, line, inner in found
            if inner and target and module not in LAZY_SIBLINGS_ALLOWED]
    assert not lazy, "import these at the top of the module: " + "; ".join(lazy)


@pytest.mark.parametrize("source, want", [("from ..audio import x", "audio"), ("from .. import frames", "frames"),
                                          ("from . import wan", "encoders.wan"), ("from .wan import y", "encoders.wan"),
                                          ("import fantasytalking_core.audio as a", "audio"),
                                          ("from ..encoders import z", "encoders")])
def test_relative_and_absolute_imports_resolve(tmp_path, source, want):
    pkg = tmp_path / CORE
    (pkg / "encoders").mkdir(parents=True)
    for name in ("__init__.py", "audio.py", "frames.py", "encoders/__init__.py", "encoders/wan.py"):
        (pkg / name).write_text("")
    (pkg / "encoders" / "wav.py").write_text(source + "\n")
    graph, _ = import_graph(tmp_path)
    assert graph[f"{CORE}.encoders.wav"] == {f"{CORE}.{want}"}
