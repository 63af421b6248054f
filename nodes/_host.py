"""The single bridge to ComfyUI's services: folders, devices, memory, interruption, MediaPipe.

Only this module and nodes/sampling.py import ``comfy``/``folder_paths``. Outside ComfyUI (tests,
scripts) the folders are ``$FANTASYTALKING_MODELS_DIR`` (else ./models) with ComfyUI's
sub-folders, devices follow fantasytalking_core.devices, and memory management is a no-op.
Stand-ins for core's ModelPatcher and samplers live in tests/, never here.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Callable

import torch
import torch.nn as nn

from fantasytalking_core.devices import pick_device

try:  # ComfyUI puts these on sys.path; outside it they are absent.
    import comfy.model_management as _mm
    import comfy.patcher_extension as _ext
    import folder_paths as _fp
except ImportError:
    _mm = _ext = _fp = None

IN_COMFY = _fp is not None
AUDIO_OFF = "fantasytalking_audio_off"  # transformer_options key: cond uuids whose rows run without audio
WRAPPER_KEY = "fantasytalking"
# Core's wrapper types (comfy.patcher_extension.WrappersMP); the same strings outside ComfyUI.
DIFFUSION_MODEL = _ext.WrappersMP.DIFFUSION_MODEL if _ext else "diffusion_model"
APPLY_MODEL = _ext.WrappersMP.APPLY_MODEL if _ext else "apply_model"
OUTER_SAMPLE = _ext.WrappersMP.OUTER_SAMPLE if _ext else "outer_sample"

# Model folders the pack reads, relative to ComfyUI/models (core registers the first two itself).
FOLDERS = {
    "model_patches": "fantasytalking_model.ckpt or adapter .safetensors (also read from diffusion_models)",
    "audio_encoders": "wav2vec2-base-960h: a transformers folder or one .safetensors file",
    "insightface": "insightface/models/<pack>/ with the ArcFace and detector .onnx files (antelopev2, buffalo_l)",
    "mediapipe": ".task/.tflite files for mediapipe versions without bundled models",
}
MODEL_EXTENSIONS = (".safetensors", ".ckpt", ".pt", ".pth", ".bin", ".sft")


def host_name() -> str:
    """"ComfyUI 0.33.0" inside ComfyUI (named in errors that depend on the host's version)."""
    if not IN_COMFY:
        return "this host (no ComfyUI)"
    try:
        import comfyui_version

        return f"ComfyUI {comfyui_version.__version__}"
    except ImportError:
        return "ComfyUI (version unknown)"


# ------------------------------------------------------------------------------------ folders
def plain_models_dir() -> Path:
    """Outside ComfyUI: $FANTASYTALKING_MODELS_DIR, else ./models (same sub-folders as ComfyUI)."""
    return Path(os.environ.get("FANTASYTALKING_MODELS_DIR", "models")).expanduser()


def register_folders() -> None:
    """Make ComfyUI know our folders (idempotent); core already has model_patches and audio_encoders."""
    if not IN_COMFY:
        return
    for name in FOLDERS:
        if name not in _fp.folder_names_and_paths:
            _fp.add_model_folder_path(name, os.path.join(_fp.models_dir, name), is_default=True)


def folder_paths(folder: str) -> list[Path]:
    if IN_COMFY:
        try:
            return [Path(p) for p in _fp.get_folder_paths(folder)]
        except KeyError:
            return [Path(_fp.models_dir) / folder]
    return [plain_models_dir() / folder]


def list_files(*folders: str, extensions: tuple[str, ...] = MODEL_EXTENSIONS) -> list[str]:
    """Relative names of model files in the folders (first folder first), for a combo widget."""
    names: list[str] = []
    for folder in folders:
        if IN_COMFY and folder in _fp.folder_names_and_paths:
            found = [n for n in _fp.get_filename_list(folder) if n.lower().endswith(extensions)]
        else:
            found = [str(p.relative_to(root)).replace(os.sep, "/") for root in folder_paths(folder) if root.is_dir()
                     for p in sorted(root.rglob("*")) if p.is_file() and p.name.lower().endswith(extensions)]
        names += [n for n in found if n not in names]
    return names


def list_dirs(folder: str, sub: str = "", must_contain: str | tuple[str, ...] = ()) -> list[str]:
    """Sub-folders of ``folder/sub`` holding a file matching any of ``must_contain`` (glob patterns)."""
    needs = (must_contain,) if isinstance(must_contain, str) else must_contain
    out = []
    for root in folder_paths(folder):
        base = root / sub
        if base.is_dir():
            for d in sorted(p for p in base.iterdir() if p.is_dir()):
                if (not needs or any(any(d.glob(pattern)) for pattern in needs)) and d.name not in out:
                    out.append(d.name)
    return out


def full_path(name: str, *folders: str, sub: str = "") -> Path:
    """The file or folder ``name`` in the first folder that has it; a clear error otherwise."""
    for folder in folders:
        for root in folder_paths(folder):
            p = root / sub / name
            if p.exists():
                return p
    where = " or ".join(str(r / sub) for f in folders for r in folder_paths(f))
    help_ = "; ".join(f"{f}/: {FOLDERS[f]}" for f in folders if f in FOLDERS)
    raise FileNotFoundError(f"{name!r} not found in {where}. Put it there ({help_}) and refresh the node list.")


# ------------------------------------------------------------------------------------ devices
def torch_device() -> torch.device:
    return _mm.get_torch_device() if IN_COMFY else pick_device("auto")


def offload_device() -> torch.device:
    return _mm.unet_offload_device() if IN_COMFY else torch.device("cpu")


def intermediate_device() -> torch.device:
    return _mm.intermediate_device() if IN_COMFY else torch.device("cpu")


def check_interrupt() -> None:
    if IN_COMFY:
        _mm.throw_exception_if_processing_interrupted()


# ------------------------------------------------------------------------------------ memory
def managed(module: nn.Module, on_deepclone: Callable[[], Any]) -> Any:
    """Adapter weights as core loads its own model patches (comfy_extras/nodes_model_patch.py):
    layers with core's manual-cast ops, under core's model patcher (the dynamic-VRAM one where core
    made it the default), so core loads, offloads, casts and pages them with the DiT (``--lowvram``,
    ``--cpu`` and dynamic VRAM included). ``on_deepclone`` is what core calls to make a fresh copy
    for another device (multi-GPU nodes). Outside ComfyUI: None (nothing manages memory)."""
    if not IN_COMFY:
        return None
    import comfy.model_patcher
    import comfy.ops

    ops = comfy.ops.manual_cast
    swaps = {nn.Linear: ops.Linear, nn.LayerNorm: ops.LayerNorm, nn.Conv1d: ops.Conv1d, nn.Conv2d: ops.Conv2d,
             nn.GroupNorm: ops.GroupNorm}
    for m in module.modules():
        if type(m) in swaps:
            m.__class__ = swaps[type(m)]  # same parameters; the forward casts them to the input's device/dtype
    patcher_cls = getattr(comfy.model_patcher, "CoreModelPatcher", comfy.model_patcher.ModelPatcher)
    patcher = patcher_cls(module, load_device=torch_device(), offload_device=offload_device())
    patcher.cached_patcher_init = (on_deepclone, ())
    return patcher


def mediapipe_backend() -> Any:
    """MediaPipe: the bundled models of mediapipe 0.10.14, else Tasks files from models/mediapipe/
    (plus $FANTASYTALKING_MEDIAPIPE_DIR); the error names both fixes when neither is there."""
    from fantasytalking_core.mediapipe_backend import get_backend, resolve_models_dirs

    return get_backend("auto", [*folder_paths("mediapipe"), *resolve_models_dirs(None)])
