"""ComfyUI entry point for ComfyUI-FantasyTalking.

ComfyUI imports this folder as a package. Node modules are imported here with relative imports
(ComfyUI has a top-level module called ``nodes`` of its own); model code lives in
``fantasytalking_core``. Importing the pack takes ~0.1 s: transformers, diffusers, mediapipe,
onnxruntime and PyAV are imported only when a node that needs them runs.
"""

import os
import sys

_here = os.path.dirname(os.path.abspath(__file__))
# Appended, never prepended: the core package must be importable by name, but nothing of ours may
# shadow a ComfyUI module.
if _here not in sys.path:
    sys.path.append(_here)

if __package__:  # ComfyUI loads this folder as a package named after the folder
    from .nodes import NODE_CLASS_MAPPINGS, NODE_DISPLAY_NAME_MAPPINGS  # noqa: E402
else:  # pytest imports this file alone when the clone's folder name is no package name
    NODE_CLASS_MAPPINGS, NODE_DISPLAY_NAME_MAPPINGS = {}, {}  # (e.g. ComfyUI-FantasyTalking): nothing to register

WEB_DIRECTORY = None
__all__ = ["NODE_CLASS_MAPPINGS", "NODE_DISPLAY_NAME_MAPPINGS"]
