"""The single bridge to ComfyUI's services; plain equivalents when ComfyUI is not there.

Only this module imports ``comfy``/``folder_paths``/``latent_preview``. Inside ComfyUI it uses
core's model management (devices, offloading, additional models), progress bar with latent
previews, interruption, folder_paths and its samplers/guiders. Outside (tests, scripts) it gives
the same calls on our own Wan DiT: ``PlainModelPatcher`` stands in for core's ModelPatcher
(object patches, wrappers, ``get_model_object``) and ``PlainGuider`` for a GUIDER, running the
guidance passes batched with the same per-row ``uuids`` core puts in ``transformer_options``.
"""

from __future__ import annotations

import copy
import functools
import os
import uuid
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterator

import torch
import torch.nn as nn

from fantasytalking_core.sampling import Guidance, flow_sigmas, initial_noise, sample_euler, sample_unipc, step_index

try:  # ComfyUI puts these on sys.path; outside it they are absent.
    import comfy.model_management as _mm
    import comfy.utils as _cutils
    import folder_paths as _fp
except ImportError:
    _mm = _cutils = _fp = None

IN_COMFY = _fp is not None
AUDIO_OFF = "fantasytalking_audio_off"  # transformer_options key: cond uuids whose rows run without audio
WRAPPER_KEY = "fantasytalking"
DIFFUSION_MODEL = "diffusion_model"  # = comfy.patcher_extension.WrappersMP.DIFFUSION_MODEL

# Model folders the pack reads, relative to ComfyUI/models (core registers the first two itself).
FOLDERS = {
    "model_patches": "fantasytalking_model.ckpt or adapter .safetensors (also read from diffusion_models)",
    "audio_encoders": "wav2vec2-base-960h: a transformers folder or one .safetensors file",
    "insightface": "insightface/models/<pack>/ with the ArcFace and detector .onnx files (antelopev2, buffalo_l)",
    "mediapipe": ".task/.tflite files for mediapipe versions without bundled models",
}
MODEL_EXTENSIONS = (".safetensors", ".ckpt", ".pt", ".pth", ".bin", ".sft")


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
    if IN_COMFY:
        return _mm.get_torch_device()
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def offload_device() -> torch.device:
    return _mm.unet_offload_device() if IN_COMFY else torch.device("cpu")


def intermediate_device() -> torch.device:
    return _mm.intermediate_device() if IN_COMFY else torch.device("cpu")


def managed(module: nn.Module) -> Any:
    """Wrap adapter weights so core's model management loads/offloads them with the DiT."""
    if not IN_COMFY:
        return module
    import comfy.model_patcher

    return comfy.model_patcher.ModelPatcher(module, load_device=torch_device(), offload_device=offload_device())


def mediapipe_backend() -> Any:
    """MediaPipe: the bundled models of mediapipe 0.10.14, else Tasks files from models/mediapipe/
    (plus $FANTASYTALKING_MEDIAPIPE_DIR); the error names both fixes when neither is there."""
    from fantasytalking_core.mediapipe_backend import get_backend, resolve_models_dirs

    return get_backend("auto", [*folder_paths("mediapipe"), *resolve_models_dirs(None)])


def check_interrupt() -> None:
    if IN_COMFY:
        _mm.throw_exception_if_processing_interrupted()


# ------------------------------------------------------------------------------------ plain model
class _PlainBase(nn.Module):
    def __init__(self, dit: nn.Module):
        super().__init__()
        self.diffusion_model = dit


class PlainModelPatcher:
    """What our nodes use of core's ModelPatcher, over our own Wan DiT (tests and scripts)."""

    def __init__(self, dit: nn.Module):
        self.model = _PlainBase(dit)
        self.object_patches: dict[str, Any] = {}
        self.model_options: dict[str, Any] = {"transformer_options": {}}
        self.wrappers: dict[str, dict[str, list]] = {}  # kept apart and merged at sampling, as core does
        self.additional_models: dict[str, list] = {}

    def clone(self) -> "PlainModelPatcher":
        n = copy.copy(self)
        n.object_patches = dict(self.object_patches)
        n.model_options = copy.deepcopy({k: v for k, v in self.model_options.items() if k != "transformer_options"})
        n.model_options["transformer_options"] = dict(self.model_options.get("transformer_options", {}))
        n.wrappers = {t: {k: list(v) for k, v in d.items()} for t, d in self.wrappers.items()}
        n.additional_models = dict(self.additional_models)
        return n

    def sampling_options(self) -> dict:
        """transformer_options for a sampling run: the model's, with its wrappers merged in."""
        options = dict(self.model_options.get("transformer_options", {}))
        options["wrappers"] = {t: {k: list(v) for k, v in d.items()} for t, d in self.wrappers.items()}
        return options

    def add_object_patch(self, name: str, obj: Any) -> None:
        self.object_patches[name] = obj

    def get_model_object(self, name: str) -> Any:
        if name in self.object_patches:
            return self.object_patches[name]
        return self.model.get_submodule(name)

    def add_wrapper_with_key(self, wrapper_type: str, key: str, fn: Callable) -> None:
        self.wrappers.setdefault(wrapper_type, {}).setdefault(key, []).append(fn)

    def get_wrappers(self, wrapper_type: str, key: str) -> list:
        return self.wrappers.get(wrapper_type, {}).get(key, [])

    def set_additional_models(self, key: str, models: list) -> None:
        self.additional_models[key] = models

    @contextmanager
    def patched(self) -> Iterator[nn.Module]:
        """Apply the object patches for the duration of a sampling run, then restore."""
        saved = {}
        for path, obj in self.object_patches.items():
            parent, _, leaf = path.rpartition(".")
            owner = self.model.get_submodule(parent)
            saved[path] = getattr(owner, leaf)
            setattr(owner, leaf, obj)
        try:
            yield self.model.diffusion_model
        finally:
            for path, obj in saved.items():
                parent, _, leaf = path.rpartition(".")
                setattr(self.model.get_submodule(parent), leaf, obj)


def _wrapped_call(options: dict, base: Callable, *args: Any, **kwargs: Any) -> Any:
    """Call ``base`` through the DIFFUSION_MODEL wrappers, outermost first, as core's executor does."""
    fns = [f for fs in options.get("wrappers", {}).get(DIFFUSION_MODEL, {}).values() for f in fs]

    def run(i: int, *a: Any, **kw: Any) -> Any:
        if i == len(fns):
            return base(*a, **kw)
        return fns[i](lambda *aa, **kk: run(i + 1, *aa, **kk), *a, **kw)

    return run(0, *args, **kwargs)


def _plain_i2v(cond: dict, like: torch.Tensor) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    """y (mask 4 ch + first-frame latent 16 ch) and clip tokens from a CONDITIONING entry, as core's WAN21 builds them."""
    image = cond.get("concat_latent_image")
    y = None
    if image is not None:
        mask = cond.get("concat_mask")
        mask = torch.zeros_like(image[:, :1]) if mask is None else 1.0 - mask
        mask = mask.expand(-1, 4, -1, -1, -1) if mask.shape[1] == 1 else mask
        y = torch.cat([mask, image], dim=1).to(like)
    clip = cond.get("clip_vision_output")
    clip_fea = None if clip is None else clip.penultimate_hidden_states.to(like)
    return y, clip_fea


class PlainGuider:
    """A GUIDER over a PlainModelPatcher: FantasyTalking's three-pass guidance, batched rows."""

    def __init__(self, model: PlainModelPatcher, guidance: Guidance):
        self.model_patcher, self.guidance = model, guidance
        self.conds: dict[str, list[dict]] = {}

    def set_conds(self, positive: list, negative: list) -> None:
        self.conds = {name: [dict(c[1], context=c[0], uuid=uuid.uuid4()) for c in conditioning]
                      for name, conditioning in _pass_conds(positive, negative).items()}

    def sample(self, noise: torch.Tensor, latent_image: torch.Tensor, sampler: str, sigmas: torch.Tensor,
               denoise_mask=None, callback=None, disable_pbar: bool = False, seed: int | None = None) -> torch.Tensor:
        mp, total = self.model_patcher, sigmas.numel() - 1
        dit = mp.model.diffusion_model
        param = next(dit.parameters())
        x0 = latent_image.to(param.device, torch.float32)
        x = noise.to(x0) * sigmas[0] + x0 * (1 - sigmas[0]) if float(sigmas[0]) < 1 else noise.to(x0)
        options = mp.sampling_options()
        options["sample_sigmas"] = sigmas
        off = {c["uuid"] for name in ("pos_noaudio", "neg_noaudio") for c in self.conds.get(name, [])}
        options[AUDIO_OFF] = off

        def base(x, timestep, context, clip_fea, time_dim_concat, transformer_options, y=None):
            return dit(x.to(param.dtype), timestep, context, clip_fea, y).float()

        def model_fn(x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
            i = step_index(sigma, sigmas)
            passes = self.guidance.passes(i, total)
            conds = [self.conds[p][0] for p in passes]
            rows = torch.cat([x] * len(passes))
            context = torch.cat([_pad_context(c["context"], max(cc["context"].shape[1] for cc in conds)) for c in conds]).to(param)
            y, clip = zip(*(_plain_i2v(c, param) for c in conds))
            y = None if y[0] is None else torch.cat(y)
            clip = None if clip[0] is None else torch.cat(clip)
            t = (sigma.reshape(-1)[:1] * 1000).expand(rows.shape[0]).to(param.device)
            opts = dict(options, cond_or_uncond=list(range(len(passes))), uuids=[c["uuid"] for c in conds])
            out = _wrapped_call(opts, base, rows, t, context, clip, None, opts, y=y)
            return self.guidance.combine(dict(zip(passes, out.split(x.shape[0]))), i, total)

        solver = sample_unipc if sampler in ("uni_pc", "uni_pc_bh2", "unipc") else sample_euler

        def cb(i, n, x, denoised):  # core's callback order: (step, x0, x, total_steps)
            if callback is not None:
                callback(i, denoised, x, n)

        with mp.patched(), torch.no_grad():
            return solver(model_fn, x, sigmas.to(x.device), callback=cb)


def _pad_context(ctx: torch.Tensor, length: int) -> torch.Tensor:
    return torch.nn.functional.pad(ctx, (0, 0, 0, length - ctx.shape[1])) if ctx.shape[1] < length else ctx


def _pass_conds(positive: list, negative: list) -> dict[str, list]:
    """The four guidance passes' conds: audio on/off is carried per cond (by uuid), not by text."""
    return {"pos_audio": positive, "pos_noaudio": positive, "neg_noaudio": negative, "neg_audio": negative}


# ------------------------------------------------------------------------------------ sampling
def make_guider(model: Any, positive: list, negative: list, guidance: Guidance) -> Any:
    """A GUIDER running FantasyTalking's guidance: core's CFGGuider subclass, or PlainGuider."""
    if isinstance(model, PlainModelPatcher):
        guider = PlainGuider(model, guidance)
    elif IN_COMFY:
        guider = _comfy_guider_class()(model, guidance)
    else:
        raise TypeError(f"MODEL must be a ComfyUI model or a PlainModelPatcher, got {type(model).__name__}")
    guider.set_conds(positive, negative)
    return guider


@functools.lru_cache(maxsize=None)
def _comfy_guider_class() -> type:
    """Core's CFGGuider subclass, built on first use (core must be importable then)."""
    import comfy.model_patcher
    import comfy.samplers

    class FantasyTalkingCFGGuider(comfy.samplers.CFGGuider):
        """Text and audio guidance (see fantasytalking_core.sampling.Guidance) through core's cond
        batching: the passes batch on one GPU (or spread over several), audio off by cond uuid."""

        def __init__(self, model_patcher, guidance: Guidance):
            super().__init__(model_patcher)
            self.guidance = guidance

        def set_conds(self, positive, negative):
            self.inner_set_conds(_pass_conds(positive, negative))  # each list gets its own uuids

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
    if IN_COMFY:
        import comfy.samplers

        names = list(comfy.samplers.KSampler.SAMPLERS)
        return ["uni_pc"] + [n for n in names if n != "uni_pc"]
    return ["uni_pc", "euler"]


def scheduler_names() -> list[str]:
    if IN_COMFY:
        import comfy.samplers

        names = list(comfy.samplers.KSampler.SCHEDULERS)
        return ["simple"] + [n for n in names if n != "simple"]
    return ["simple"]


def with_shift(model: Any, shift: float) -> Any:
    """The model with flow-matching shift ``shift`` (core's ModelSamplingSD3 does the same)."""
    if isinstance(model, PlainModelPatcher):
        m = model.clone()
        m.model_options["fantasytalking_shift"] = shift
        return m
    import comfy.model_sampling

    class ModelSamplingShift(comfy.model_sampling.ModelSamplingDiscreteFlow, comfy.model_sampling.CONST):
        pass

    m = model.clone()
    sampling = ModelSamplingShift(model.model.model_config)
    sampling.set_parameters(shift=shift, multiplier=1000)
    m.add_object_patch("model_sampling", sampling)
    return m


def sample(model: Any, guider: Any, latent: dict, seed: int, steps: int, sampler_name: str, scheduler: str,
           denoise: float = 1.0) -> dict:
    """Run ``guider`` from noise to a LATENT, with progress, previews and interruption."""
    samples = latent["samples"]
    if isinstance(model, PlainModelPatcher):
        shift = model.model_options.get("fantasytalking_shift", 5.0)
        sigmas = flow_sigmas(steps, shift)
        if denoise < 1.0:
            sigmas = flow_sigmas(int(steps / denoise), shift)[-(steps + 1):]
        noise = initial_noise(samples.shape, seed)
        out = guider.sample(noise, samples, sampler_name, sigmas, seed=seed)
        return {"samples": out.cpu()}
    import comfy.sample
    import comfy.samplers
    import latent_preview

    samples = comfy.sample.fix_empty_latent_channels(model, samples)
    noise = comfy.sample.prepare_noise(samples, seed, latent.get("batch_index"))
    total = int(steps / denoise) if 0 < denoise < 1 else steps
    sigmas = comfy.samplers.calculate_sigmas(model.get_model_object("model_sampling"), scheduler, total).cpu()
    sigmas = sigmas[-(steps + 1):]
    callback = latent_preview.prepare_callback(model, sigmas.shape[-1] - 1)
    out = guider.sample(noise, samples, comfy.samplers.sampler_object(sampler_name), sigmas,
                        denoise_mask=latent.get("noise_mask"), callback=callback,
                        disable_pbar=not _cutils.PROGRESS_BAR_ENABLED, seed=seed)
    result = latent.copy()
    result["samples"] = out.to(intermediate_device())
    return result
