"""The single bridge to ComfyUI's services: folders, devices, memory, interruption, MediaPipe.

Only this module imports ``comfy``/``folder_paths``/``latent_preview`` (core's sampling classes
included: nodes/sampling.py calls them through here). Outside ComfyUI (tests, scripts) the folders
are ComfyUI's sub-folders of ``fantasytalking_core.paths.default_models_root()`` (the one rule),
devices follow fantasytalking_core.devices, and memory management is a no-op.
Stand-ins for core's ModelPatcher and samplers live in tests/, never here.
"""

from __future__ import annotations

import functools
import os
from pathlib import Path
from typing import Any, Callable

import torch
import torch.nn as nn

from fantasytalking_core.devices import pick_device
from fantasytalking_core.paths import default_models_root
from fantasytalking_core.sampling import Guidance, step_index

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
    return [default_models_root() / folder]


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


# ------------------------------------------------------------------------------------ sampling
def make_guider(model: Any, conds: dict[str, list], guidance: Guidance) -> Any:
    """Core's CFGGuider running FantasyTalking's passes; ``conds`` = pass name -> conditioning."""
    guider = _guider_class()(model, guidance)
    guider.inner_set_conds(conds)  # each list gets its own uuids
    return guider


@functools.lru_cache(maxsize=None)
def _guider_class() -> type:
    """Core's CFGGuider subclass, built on first use (core must be importable then)."""
    import comfy.model_patcher
    import comfy.samplers

    class FantasyTalkingCFGGuider(comfy.samplers.CFGGuider):
        """Text and audio guidance through core's cond batching, audio off by cond uuid."""

        def __init__(self, model_patcher, guidance: Guidance):
            super().__init__(model_patcher)
            self.guidance = guidance

        def predict_noise(self, x, timestep, model_options={}, seed=None):
            sigmas = model_options["transformer_options"]["sample_sigmas"]
            total = sigmas.numel() - 1
            i = step_index(timestep, sigmas.detach().cpu())
            passes = self.guidance.passes(i, total)
            options = comfy.model_patcher.create_model_options_clone(model_options)
            off = {c["uuid"] for p in ("pos_noaudio", "neg_noaudio") for c in self.conds.get(p, [])}
            options.setdefault("transformer_options", {})[AUDIO_OFF] = off
            out = comfy.samplers.calc_cond_batch(self.inner_model, [self.conds[p] for p in passes], x, timestep, options)
            return self.guidance.combine(dict(zip(passes, out)), i, total)

    return FantasyTalkingCFGGuider


def sampler_names() -> list[str]:
    import comfy.samplers

    return list(comfy.samplers.KSampler.SAMPLERS)


def scheduler_names() -> list[str]:
    import comfy.samplers

    return list(comfy.samplers.KSampler.SCHEDULERS)


def with_shift(model: Any, shift: float) -> Any:
    """A clone of ``model`` with flow-matching shift ``shift`` (as core's ModelSamplingSD3)."""
    import comfy.model_sampling

    class ModelSamplingShift(comfy.model_sampling.ModelSamplingDiscreteFlow, comfy.model_sampling.CONST):
        pass

    m = model.clone()
    sampling = ModelSamplingShift(model.model.model_config)
    sampling.set_parameters(shift=shift, multiplier=1000)
    m.add_object_patch("model_sampling", sampling)
    return m


def sample(model: Any, guider: Any, latent: dict, seed: int, steps: int, sampler_name: str, scheduler: str,
           denoise: float, part: tuple[int, int]) -> dict:
    """Core's sampling of ``guider`` from noise to a LATENT (see nodes.sampling.sample)."""
    import comfy.sample
    import comfy.samplers
    import comfy.utils
    import latent_preview

    samples = comfy.sample.fix_empty_latent_channels(model, latent["samples"])
    noise = comfy.sample.prepare_noise(samples, seed, latent.get("batch_index"))
    total = int(steps / denoise) if 0 < denoise < 1 else steps
    sigmas = comfy.samplers.calculate_sigmas(model.get_model_object("model_sampling"), scheduler, total).cpu()
    sigmas = sigmas[-(steps + 1):]
    index, count = part
    run_steps = sigmas.shape[-1] - 1
    preview = latent_preview.prepare_callback(model, run_steps * count)
    callback = preview if count == 1 else (
        lambda step, x0, x, total: preview(index * run_steps + step, x0, x, run_steps * count))
    out = guider.sample(noise, samples, comfy.samplers.sampler_object(sampler_name), sigmas,
                        denoise_mask=latent.get("noise_mask"), callback=callback,
                        disable_pbar=not comfy.utils.PROGRESS_BAR_ENABLED, seed=seed)
    result = latent.copy()
    result["samples"] = out.to(intermediate_device())
    return result
