"""Packaging: pyproject in step with the requirement files, and the requirements resolve on every
Python and platform ComfyUI runs on (a pip dry-run per combination against the package index)."""

from __future__ import annotations

import re
import subprocess
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor
from functools import lru_cache
from pathlib import Path

import pytest
from packaging.requirements import Requirement

try:
    import tomllib
except ImportError:  # Python 3.10
    import tomli as tomllib

ROOT = Path(__file__).resolve().parents[1]
PYTHONS = ("3.10", "3.11", "3.12", "3.13", "3.14")
_LINUX = lambda arch: [f"manylinux_2_{m}_{arch}" for m in range(31, 16, -1)] + [f"manylinux2014_{arch}"]  # noqa: E731
# name -> (wheel tags a pip on that machine accepts, the marker values of that machine)
PLATFORMS = {
    "linux_x86_64": (_LINUX("x86_64"), {"sys_platform": "linux", "platform_system": "Linux",
                                        "platform_machine": "x86_64", "os_name": "posix"}),
    "linux_aarch64": (_LINUX("aarch64"), {"sys_platform": "linux", "platform_system": "Linux",
                                          "platform_machine": "aarch64", "os_name": "posix"}),
    "win_amd64": (["win_amd64"], {"sys_platform": "win32", "platform_system": "Windows", "platform_machine": "AMD64",
                                  "os_name": "nt"}),
    "macos_arm64": ([f"macosx_{v}_0_{a}" for v in range(14, 10, -1) for a in ("arm64", "universal2")],
                    {"sys_platform": "darwin", "platform_system": "Darwin", "platform_machine": "arm64",
                     "os_name": "posix"}),
}


def _lines(name: str) -> list[str]:
    lines = (ROOT / name).read_text().splitlines()
    return [s for line in lines if (s := re.sub(r"\s+#.*|^#.*", "", line).strip())]


def _same(a: list[str], b: list[str]) -> bool:
    return [str(Requirement(x)) for x in a] == [str(Requirement(x)) for x in b]


def _meta() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())


def test_pyproject_lists_exactly_the_requirements():
    project = _meta()["project"]
    assert _same(project["dependencies"], _lines("requirements.txt"))
    assert not any(Requirement(r).name == "torch" for r in _lines("requirements.txt"))  # torch comes from ComfyUI
    extras = project["optional-dependencies"]
    # CI installs requirements-test.txt: the extras whose code the tests run, then the test tools
    assert _same(extras["vae"] + extras["eval"] + extras["test"], _lines("requirements-test.txt"))


def test_python_versions_agree():
    project = _meta()["project"]
    assert project["requires-python"] == f">={PYTHONS[0]}"
    listed = sorted(c.rsplit(" ", 1)[1] for c in project["classifiers"]
                    if re.fullmatch(r"Programming Language :: Python :: 3\.\d+", c))
    assert listed == sorted(PYTHONS)


def test_mediapipe_marker_splits_at_313():
    pins = {str(r.marker): str(r.specifier) for r in map(Requirement, _lines("requirements.txt"))
            if r.name == "mediapipe"}
    assert pins == {'python_version < "3.13"': "==0.10.14", 'python_version >= "3.13"': "~=1.2.3"}


def test_registry_metadata_is_complete():
    meta = _meta()
    project, comfy = meta["project"], meta["tool"]["comfy"]
    for key in ("name", "version", "description", "license", "requires-python", "urls"):
        assert project.get(key), key
    assert re.fullmatch(r"\d+\.\d+\.\d+", project["version"])
    assert comfy["PublisherId"] and comfy["DisplayName"]
    assert {"Repository", "Documentation", "Bug Tracker"} <= set(project["urls"])


# ------------------------------------------------------------------------- resolving (pip dry-run)


def _for_target(python: str, markers: dict) -> list[str]:
    """requirements.txt + the vae/eval extras with markers evaluated for the target (pip evaluates
    them for the Python running it, not for --python-version)."""
    env = {"python_version": python, "python_full_version": python + ".0", "implementation_name": "cpython",
           "platform_python_implementation": "CPython", **markers}
    extras = _meta()["project"]["optional-dependencies"]
    out = []
    for line in _lines("requirements.txt") + extras["vae"] + extras["eval"]:
        req = Requirement(line)
        if req.marker is None or req.marker.evaluate(env):
            req.marker = None
            out.append(str(req))
    return out


def _dry_run(python: str, platform: str) -> subprocess.CompletedProcess:
    tags, markers = PLATFORMS[platform]
    cmd = [sys.executable, "-m", "pip", "install", "--dry-run", "--ignore-installed", "--only-binary=:all:",
           "--python-version", python, "--implementation", "cp", "--target", str(Path(tempfile.gettempdir()) / "ft-pip-dry-run"), "-q"]
    for tag in tags:
        cmd += ["--platform", tag]
    return subprocess.run(cmd + _for_target(python, markers), capture_output=True, text=True, timeout=600)


@lru_cache(maxsize=1)
def _all_dry_runs() -> dict[tuple[str, str], subprocess.CompletedProcess] | str:
    """Every combination, four at a time (each waits mostly on the index); or why none can run."""
    # a wheel only a real index serves (a local mirror of this machine's packages lacks it)
    probe = subprocess.run([sys.executable, "-m", "pip", "install", "--dry-run", "--no-deps", "--ignore-installed",
                            "--only-binary=:all:", "--python-version", "3.13", "--platform", "win_amd64",
                            "--target", str(Path(tempfile.gettempdir()) / "ft-pip-dry-run"), "-q", "mediapipe==1.2.3"],
                           capture_output=True, text=True, timeout=120)
    if probe.returncode != 0:
        return ("no package index answered (a dry-run install of mediapipe 1.2.3 for Windows failed), so the "
                "resolve check cannot run here; it runs in CI: "
                f"{(probe.stderr.strip().splitlines() or ['no output'])[-1]}")
    combos = [(py, plat) for py in PYTHONS for plat in PLATFORMS]
    with ThreadPoolExecutor(4) as pool:
        return dict(zip(combos, pool.map(lambda c: _dry_run(*c), combos)))


@pytest.mark.parametrize("platform", list(PLATFORMS))
@pytest.mark.parametrize("python", PYTHONS)
def test_requirements_resolve(python, platform):
    runs = _all_dry_runs()
    if isinstance(runs, str):
        pytest.skip(runs)
    run = runs[(python, platform)]
    errors = [line for line in run.stderr.splitlines() if line.startswith("ERROR")]
    assert run.returncode == 0, f"pip cannot install the requirements on Python {python} {platform}: {errors}"


def test_markers_pick_one_mediapipe_per_python():
    for python in PYTHONS:
        for _, markers in PLATFORMS.values():
            pins = [r for r in _for_target(python, markers) if r.startswith("mediapipe")]
            assert pins == (["mediapipe==0.10.14"] if tuple(map(int, python.split("."))) < (3, 13) else ["mediapipe~=1.2.3"]), python


def test_the_suite_runs_in_a_clone_named_like_the_pack(tmp_path):
    """Users and ComfyUI-Manager clone into ComfyUI-FantasyTalking, which is no Python package name: pytest
    then imports the root __init__.py alone, and it must not fail (it did: every test errored at setup)."""
    import shutil

    clone = tmp_path / "ComfyUI-FantasyTalking"
    shutil.copytree(ROOT, clone, ignore=shutil.ignore_patterns(".git", ".venv*", "outputs", "__pycache__", "*.mp4"))
    run = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests/test_devices.py"],
                         cwd=clone, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0 and " error" not in run.stdout.lower(), run.stdout[-3000:] + run.stderr[-2000:]


def test_ci_installs_what_the_readme_says_and_runs_its_test_command():
    """.ci/run is README's test command from scratch: every `pip install` of README's second command (and
    the first's requirements.txt) in a fresh venv, then exactly its test command."""
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    block = readme.split("```bash", 1)[1].split("```", 1)[0]
    commands = [line for line in block.splitlines() if line and not line.startswith("#")]
    assert len(commands) == 2, commands
    steps = [s.strip() for s in commands[1].split("&&")]
    test_command = steps[-1]
    assert test_command == "python -m pytest"
    ci = [line.strip() for line in (ROOT / ".ci/run").read_text().splitlines() if line.strip() and line[0] != "#"]
    assert "python3 -m venv .venv-ci" in ci and ci[-1] == test_command
    installs = [line.split("pip install", 1)[1].split() for line in ci if "pip install" in line]
    for step in steps[:-1] + [commands[0].split("&&")[0].strip()]:  # README's pip lines, requirements.txt included
        args = step.split("pip install", 1)[1].split()  # options and packages: all on one .ci/run line
        assert any(all(a in line for a in args) for line in installs), f"README runs `{step}`; .ci/run does not"


def _imported_packages(path: Path) -> set[str]:
    """The top-level names a module imports, at any depth (imports inside functions count too)."""
    import ast

    names = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.split(".")[0])
    return names


HOST = {"comfy", "comfy_extras", "folder_paths", "latent_preview", "comfyui_version", "server"}


@pytest.mark.parametrize("package,forbidden", [
    ("nodes", {"training", "evaluation", "scripts", "benchmarks"}),
    ("training", {"nodes", "scripts", "benchmarks"} | HOST),
    ("evaluation", {"nodes", "training", "scripts", "benchmarks"} | HOST),
])
def test_imports_run_one_way(package, forbidden):
    # the layers of docs/architecture.md: nodes, training and evaluation import the core, never the
    # reverse (the core's own rule: tests/test_architecture.py); within nodes/ only _host.py imports
    # ComfyUI itself
    bad = {}
    for path in sorted((ROOT / package).rglob("*.py")):
        wrong = _imported_packages(path) & (forbidden | (HOST if path.name != "_host.py" else set()))
        if wrong:
            bad[str(path.relative_to(ROOT))] = sorted(wrong)
    assert not bad, f"imports against the layering: {bad}"
