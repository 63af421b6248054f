"""Where model files live when no host says so: the one rule for the pack's models folder.

Everything outside ComfyUI's own folder registry reads it: the command line, evaluation,
MediaPipe's files and the node layer run without ComfyUI (nodes/_host.py)."""

from __future__ import annotations

import os
from pathlib import Path

MODELS_ENV = "FANTASYTALKING_MODELS_DIR"


PACK_DIR = Path(__file__).resolve().parents[1]  # the repository (the custom node's folder)


def default_models_root(pack_dir: Path = PACK_DIR) -> Path:
    """$FANTASYTALKING_MODELS_DIR when set, else ComfyUI/models when the pack sits in
    ComfyUI/custom_nodes (a script run from an installed pack finds the user's files), else
    ./models. Inside ComfyUI the node layer uses core's own folders instead."""
    env = os.environ.get(MODELS_ENV)
    if env:
        return Path(env).expanduser()
    if pack_dir.parent.name == "custom_nodes":
        return pack_dir.parent.parent / "models"
    return Path("models")
