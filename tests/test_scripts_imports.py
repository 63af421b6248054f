"""How the repo's code finds its modules: no module edits the import path, and the scripts and
benchmarks import each other as packages, one way, with no circle (scripts/__init__.py)."""

from __future__ import annotations

import ast
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
CHECKED = ("scripts", "benchmarks", "tests", "nodes", "fantasytalking_core", "training", "evaluation")
PACKAGES = ("scripts", "benchmarks")  # the tool packages whose import graph must have no circle
REPO_PACKAGES = {"scripts", "benchmarks", "fantasytalking_core", "nodes", "training", "evaluation", "tests"}
PATH = "sys." + "path"  # spelled in two pieces so this file's own text has no edit to find
# an insertion, append or extension, an item or slice assignment, `+=` or a plain rebinding
EDIT = re.compile(re.escape(PATH) + r"\s*(?:\.\s*(?:insert|append|extend)\s*\(|\[[^\]]*\]\s*=(?!=)|\+=|=(?!=))")


def path_edits(text: str) -> list[str]:
    """The lines of ``text`` that change sys.path, in code or in code held in a string (``-c``)."""
    return [line.strip() for line in text.splitlines() if EDIT.search(line)]


def test_the_edit_finder_sees_every_form_and_only_edits():
    for edit in (f"{PATH}.insert(0, str(ROOT))", f"{PATH}.append(here)", f"{PATH}[:0] = [a, b]",
                 f"{PATH} += [a]", f"{PATH}.extend(paths)", f"{PATH} = [a] + {PATH}",
                 f'code = "import sys; {PATH}.insert(0, root)"'):
        assert path_edits(f"import sys\n{edit}\n") == [edit], edit
    for fine in (f"# ComfyUI puts these on {PATH}", f"print({PATH})", f"first = {PATH}[0]", f"if {PATH}[0] == x:",
                 f"if x in {PATH}:"):
        assert path_edits(fine) == [], fine


def test_no_module_edits_sys_path():
    found = [f"{p.relative_to(ROOT)}: {line}" for folder in CHECKED for p in sorted((ROOT / folder).rglob("*.py"))
             for line in path_edits(p.read_text())]
    assert not found, "sys.path edits (import the package instead; scripts/__init__.py):\n" + "\n".join(found)


# ----------------------------------------------------------------------------- import graph
def _imported(tree: ast.Module, package: str, module: str) -> set[str]:
    """Dotted names of the repo modules ``module`` (in ``package``) imports, anywhere in it."""
    out = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: from . import x / from .x import y
                base = ".".join([package] + ([base] if base else []))
            out.add(base)
            out.update(f"{base}.{a.name}" for a in node.names)
    return out


def import_graph(root: Path, packages=PACKAGES) -> dict[str, set[str]]:
    """{module: the modules of ``packages`` it imports}, read from the source (nothing is run)."""
    modules = {f"{pkg}.{p.stem}": p for pkg in packages for p in sorted((root / pkg).glob("*.py")) if p.stem != "__init__"}
    graph = {}
    for name, path in modules.items():
        package = name.split(".")[0]
        graph[name] = {m for m in _imported(ast.parse(path.read_text()), package, name) if m in modules and m != name}
    return graph


def circles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Every circle found by a depth-first walk, each as the modules along it (first repeated last)."""
    found, state = [], {}

    def visit(node: str, stack: list[str]) -> None:
        state[node] = "open"
        for nxt in sorted(graph[node]):
            if state.get(nxt) == "open":
                found.append(stack[stack.index(nxt):] + [nxt])
            elif nxt not in state:
                visit(nxt, stack + [nxt])
        state[node] = "done"

    for node in sorted(graph):
        if node not in state:
            visit(node, [node])
    return found


def test_the_scripts_and_benchmarks_import_each_other_without_a_circle():
    graph = import_graph(ROOT)
    assert "scripts.comfy_host" in graph and "benchmarks.dit_step" in graph["scripts.gpu_check"]
    assert graph["scripts.comfy_host"] == set() and graph["scripts.workflow_ui"] == set()  # the leaves
    assert not circles(graph), circles(graph)


def test_a_planted_circle_is_found(tmp_path):
    """The smoke's old circle, planted again in a copy: the example workflows importing the smoke."""
    for pkg in PACKAGES:
        shutil.copytree(ROOT / pkg, tmp_path / pkg, ignore=shutil.ignore_patterns("__pycache__"))
    ew = tmp_path / "scripts" / "example_workflows.py"
    ew.write_text(ew.read_text().replace("from scripts import workflow_ui as ui\n",
                                         "from scripts import workflow_ui as ui\nfrom scripts.comfyui_smoke import run\n"))
    found = circles(import_graph(tmp_path))
    assert ["scripts.comfy_smoke_workflows", "scripts.example_workflows", "scripts.comfyui_smoke",
            "scripts.comfy_smoke_workflows"] in found, found


def test_siblings_are_imported_through_their_package():
    """``import workflow_ui`` only works when scripts/ itself is on sys.path: always ``from scripts import``."""
    bare = {p.stem for pkg in PACKAGES for p in (ROOT / pkg).glob("*.py")} - {"__init__"}
    found = [f"{p.relative_to(ROOT)}: {name}" for pkg in PACKAGES for p in sorted((ROOT / pkg).glob("*.py"))
             for name in _imported(ast.parse(p.read_text()), pkg, p.stem) if name.split(".")[0] in bare]
    assert not found, found


# ----------------------------------------------------------------------------- run by path
def _guard_line(tree: ast.Module) -> int | None:
    """The line of ``if __name__ == "__main__" and not __package__:`` (the by-path rerun), if any."""
    for node in tree.body:
        if isinstance(node, ast.If) and "__package__" in ast.unparse(node.test):
            return node.lineno
    return None


@pytest.mark.parametrize("path", sorted(p for pkg in PACKAGES for p in (ROOT / pkg).glob("*.py")), ids=lambda p: p.name)
def test_a_runnable_module_run_by_path_reruns_as_a_module_before_its_package_imports(path):
    tree = ast.parse(path.read_text())
    runnable = any(isinstance(n, ast.If) and ast.unparse(n.test) == "__name__ == '__main__'" for n in tree.body)
    first = min((n.lineno for n in tree.body if isinstance(n, (ast.Import, ast.ImportFrom))
                 and (n.module if isinstance(n, ast.ImportFrom) else n.names[0].name).split(".")[0] in REPO_PACKAGES),
                default=None)
    if not runnable or first is None:
        return  # imported only, or needs nothing of the repo at import time (comfy_tiny_models gguf)
    guard = _guard_line(tree)
    assert guard is not None and guard < first, f"{path.name}: no by-path rerun above line {first}"


def test_the_documented_by_path_form_still_runs_from_another_folder(tmp_path):
    run = subprocess.run([sys.executable, str(ROOT / "scripts" / "comfyui_smoke.py"), "--list"], cwd=tmp_path,
                         capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    assert run.stdout.startswith("core_wan_i2v: needs ") and "pack_01_portrait_audio_to_talking_video" in run.stdout
