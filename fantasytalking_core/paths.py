"""Where model files live when no host says so: the one rule for the pack's models folder."""

from __future__ import annotations

import os
from pathlib import Path

MODELS_ENV = "FANTASYTALKING_MODELS_DIR"


def default_models_root() -> Path:
    """$FANTASYTALKING_MODELS_DIR when set, else ComfyUI/models when this pack sits in
    ComfyUI/custom_nodes, else ./models. Inside ComfyUI the node layer passes core's own folders."""
    env = os.environ.get(MODELS_ENV)
    if env:
        return Path(env).expanduser()
    repo = Path(__file__).resolve().parents[1]
    if repo.parent.name == "custom_nodes":
        return repo.parent.parent / "models"
    return Path("models")
