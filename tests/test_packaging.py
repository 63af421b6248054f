"""What ComfyUI's registry and Manager read: pyproject metadata in step with requirements.txt."""

import re
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _requirements() -> list[str]:
    lines = (ROOT / "requirements.txt").read_text().splitlines()
    return [re.sub(r"\s*#.*", "", line).strip() for line in lines if re.sub(r"\s*#.*", "", line).strip()]


def test_pyproject_lists_exactly_the_requirements():
    meta = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert meta["project"]["dependencies"] == _requirements()
    assert not any(r.startswith("torch") for r in _requirements())  # torch comes from ComfyUI


def test_registry_metadata_is_complete():
    meta = tomllib.loads((ROOT / "pyproject.toml").read_text())
    project, comfy = meta["project"], meta["tool"]["comfy"]
    for key in ("name", "version", "description", "license", "requires-python", "urls"):
        assert project.get(key), key
    assert re.fullmatch(r"\d+\.\d+\.\d+", project["version"])
    assert comfy["PublisherId"] and comfy["DisplayName"]
    assert {"Repository", "Documentation", "Bug Tracker"} <= set(project["urls"])
