"""FantasyTalking Apply: attach the adapters to core's Wan model through object patches.

The patches change the class of core's own modules (see fantasytalking_core/adapters/attach.py), a
DIFFUSION_MODEL wrapper (:class:`AdapterRun`) sets the conditions for each DiT call, and an
APPLY_MODEL wrapper (:func:`check_context_window`) stops hosts whose context windows cannot cut
Wan I2V's start image with a message that names the version needed.

Context windows (core's WanContextWindowsManual and friends): core puts the window object in
``transformer_options["context_window"]`` and slices the latent with it. The audio is sliced by the
same object (``window.get_tensor``), so it follows whatever the host does: the causal anchor frame
ComfyUI 0.33 puts in front of every window after the first, any schedule, any fuse method (fusing
acts on the outputs). ``retain_first_frame`` keeps the start image in the window's *conditioning*;
the latent frames, and so their audio, stay the window's own.
"""

from __future__ import annotations

import logging
from typing import Any

import torch

from fantasytalking_core.adapters.attach import Attachment, attach_adapters
from fantasytalking_core.adapters.audio import AUDIO_MODES, OLD_AUDIO_MODES, AudioCondition
from fantasytalking_core.adapters.routing import RoutedAudio
from fantasytalking_core.frames import video_frames
from fantasytalking_core.motion_control import TRAINING_FREE, TrainingFreeControls, amplify_concat
from fantasytalking_core.speakers import RegionalGuidance, RegionAudio

from . import _host

CATEGORY = "FantasyTalking"
log = logging.getLogger("FantasyTalking")
WINDOWS_NEEDED = ("ComfyUI released after November 2025 (Comfy-Org/ComfyUI pull request #10975 'Context windows fixes "
                  "and features' cuts the I2V start image per window; tested on 0.33.0)")
MULTI_GPU_REFUSED = ("FantasyTalking does not run under ComfyUI's multi-GPU model copies yet (MultiGPU CFG Split, or "
                     "Select Model Device moving the model to another GPU): its adapter weights and patches are not "
                     "copied per device. Remove that node (FantasyTalking's guidance passes still batch on one GPU).")


def refuse_multigpu(*_args: Any, **_kwargs: Any) -> Any:
    """What core calls to copy the adapter weights to another device (``cached_patcher_init``)."""
    raise RuntimeError(MULTI_GPU_REFUSED)


def _options(args: tuple, kwargs: dict) -> dict:
    """The call's transformer_options (keyword, or the dict among core's positional arguments)."""
    if isinstance(kwargs.get("transformer_options"), dict):
        return kwargs["transformer_options"]
    return next((a for a in reversed(args) if isinstance(a, dict)), {})


def audio_row_scales(rows: int, options: dict, scale: float) -> float | torch.Tensor:
    """Per batch row: ``scale``, or 0 for rows whose cond uuid the guider marked audio-off.

    Core stacks the conds of one call chunk after chunk and lists their ``uuids`` in
    transformer_options, so this holds however core batches or splits the passes."""
    off, uuids = options.get(_host.AUDIO_OFF), options.get("uuids")
    if not off or not uuids:
        return scale
    if rows % len(uuids):
        raise RuntimeError(f"{rows} batch rows do not split into {len(uuids)} conds; cannot tell audio rows apart")
    per = rows // len(uuids)
    return torch.tensor([0.0 if u in off else float(scale) for u in uuids]).repeat_interleave(per)


def window_audio(cond: AudioCondition, options: dict, frames: int) -> AudioCondition:
    """The audio of the latent frames the DiT gets in this call (``frames`` of them): all of it, or
    the current context window's, cut by core's own window object (anchor frame included). Several
    speakers: each source's, and the routing weights of the same frames."""
    if isinstance(cond, RoutedAudio):
        window = options.get("context_window")
        weights = cond.weights if window is None or cond.weights.shape[1] == 1 else window.get_tensor(cond.weights, dim=1)
        return RoutedAudio([window_audio(s, options, frames) for s in cond.sources], weights)
    if not cond.frame_level:
        return cond
    total = cond.tokens.shape[1]
    window = options.get("context_window")
    if window is None:
        if frames != total:
            raise ValueError(
                f"the sampler's latent has {frames} latent frames ({video_frames(frames)} video frames) but the audio "
                f"was encoded for {video_frames(total)} video frames ({total} latent): connect FantasyTalking Audio "
                f"Encode's num_frames to the video length (WanImageToVideo's length)"
                + (". If a node cuts the video into windows, use ComfyUI's own context-window nodes (Wan Context "
                   "Windows): they tell the model which frames each window holds" if frames < total else ""))
        return cond
    indices = list(window.index_list)
    if max(indices) >= total:
        raise ValueError(
            f"a context window reaches latent frame {max(indices)} but the audio covers {total} latent frames "
            f"({video_frames(total)} video frames): connect FantasyTalking Audio Encode's num_frames to the video "
            f"length, so the audio covers the whole video")
    tokens = window.get_tensor(cond.tokens, dim=1)  # [B, frames, L_win, C]
    lens = None if cond.k_lens is None else window.get_tensor(cond.k_lens, dim=cond.k_lens.dim() - 1)
    if tokens.shape[1] != frames:
        raise RuntimeError(
            f"{_host.host_name()} gave the model {frames} latent frames for the context window over frames "
            f"{indices[0]}-{indices[-1]}, but the window object selects {tokens.shape[1]}: this version slices context "
            f"windows in a way FantasyTalking does not know, so it cannot tell which audio belongs to which frame. "
            f"Use a ComfyUI version listed in the pack's docs/comfyui.md, or generate without context windows")
    return AudioCondition(tokens, lens)


def check_context_window(executor, x, t, c_concat=None, *args: Any, **kwargs: Any) -> Any:
    """APPLY_MODEL wrapper: a host that cuts the latent into context windows but not the I2V start
    image (ComfyUI 0.3.64) would fail inside torch.cat; say what is needed instead."""
    options = _options(args, kwargs)
    if (options.get("context_window") is not None and isinstance(c_concat, torch.Tensor) and c_concat.dim() == 5
            and c_concat.shape[2] != x.shape[2]):
        raise RuntimeError(
            f"{_host.host_name()} cuts the video into context windows ({x.shape[2]} latent frames) but not Wan I2V's "
            f"start image ({c_concat.shape[2]}), so no Wan I2V model runs under its context windows. FantasyTalking "
            f"with context windows needs a {WINDOWS_NEEDED}. Update ComfyUI, or make the whole audio with FantasyTalking "
            f"Long Video Sampler instead (template 03_long_audio)")
    return executor(x, t, c_concat, *args, **kwargs)


class AdapterRun:
    """DIFFUSION_MODEL wrapper: the adapters' conditions, per-row scales and token layout for one DiT call.

    ``controls``: the training-free meaning of the motion sliders when the adapter weights have no
    motion module (fantasytalking_core/motion_control.py), None otherwise; ``status`` says what the
    identity and motion inputs do (the Apply node's second output)."""

    def __init__(self, attachment: Attachment, audio: AudioCondition | RegionAudio | None, audio_scale: float,
                 id_tokens: torch.Tensor | None, id_scale: float, motion: torch.Tensor | None,
                 controls: TrainingFreeControls | None = None, status: str = ""):
        self.attachment, self.audio, self.audio_scale = attachment, audio, audio_scale
        self.id_tokens, self.id_scale, self.motion = id_tokens, id_scale, motion
        self.controls, self.status = controls, status
        self.guidance_regions = None  # several speakers with region_guidance: their SpeakerRegions

    def guidance(self, guidance: Any) -> Any:
        """The guidance FantasyTalking's guider runs with: ``guidance`` with omega_l's audio guidance
        gain when the training-free controls act, and with several speakers' region_guidance its
        cfg_audio kept to their regions (the same object otherwise)."""
        guidance = guidance if self.controls is None else self.controls.guidance(guidance)
        return guidance if self.guidance_regions is None else RegionalGuidance(guidance, self.guidance_regions)

    def __call__(self, executor, x: torch.Tensor, *args: Any, **kwargs: Any) -> Any:
        options = _options(args, kwargs)
        frames = x.shape[2]  # the video's own latent frames, before any frames the host appends
        att = self.attachment
        audio = self.audio
        if isinstance(audio, RegionAudio):  # several speakers: routed on this video's token grid (2x2 patches)
            audio = audio.on_grid(x.shape[-2] // 2, x.shape[-1] // 2)
        with att.forward_scope(frames, options), \
                att.conditioned(audio=window_audio(audio, options, frames),
                                audio_scale=audio_row_scales(x.shape[0], options, self.audio_scale),
                                identity=self.id_tokens, id_scale=self.id_scale, motion=self.motion):
            return executor(x, *args, **kwargs)


class MotionAmplitude:
    """OUTER_SAMPLE wrapper: sets the motion amplitude of Wan I2V's conditioning (omega_b with weights
    that have no motion module) on the conds of this sampling run, before core builds the model's
    input from them. So every sampler (FantasyTalking's guider, core's KSampler) and core's context
    windows, which cut the conditioning made here, get it; the user's CONDITIONING is not changed
    (core samples from copies of its conds)."""

    def __init__(self, amplitude: float):
        self.amplitude = amplitude

    def __call__(self, executor, *args: Any, **kwargs: Any) -> Any:
        guider = executor.class_obj
        model = getattr(guider.model_patcher, "model", None)
        to_model, from_model = getattr(model, "process_latent_in", None), getattr(model, "process_latent_out", None)
        done: dict[tuple[int, int], torch.Tensor] = {}  # the passes share one start image
        for conds in guider.conds.values():
            for cond in conds:
                image, mask = cond.get("concat_latent_image"), cond.get("concat_mask")
                if isinstance(image, torch.Tensor) and image.dim() == 5:
                    key = (id(image), id(mask))
                    if key not in done:
                        done[key] = amplify_concat(image, mask, self.amplitude, to_model, from_model)
                    cond["concat_latent_image"] = done[key]
        return executor(*args, **kwargs)


def adapter_run(model: Any) -> AdapterRun | None:
    """The FantasyTalking wrapper registered on this MODEL (None before FantasyTalking Apply)."""
    runs = model.get_wrappers(_host.DIFFUSION_MODEL, _host.WRAPPER_KEY)
    return runs[0] if runs else None


def has_adapters(model: Any) -> bool:
    """Whether FantasyTalking Apply already patched this MODEL (its wrapper is registered)."""
    return adapter_run(model) is not None


MOTION_TOOLTIP = ("From FantasyTalking Motion Intensity. With adapter weights that have a motion module, the "
                  "sliders drive it (as the paper). With weights that do not (the released fantasytalking_model.ckpt), "
                  "training-free controls: " + TRAINING_FREE + "; 0.5 changes nothing. The status output says which "
                  "acted (docs/motion.md).")
FACE_TOOLTIP = ("From FantasyTalking Face Embed. Acts with adapter weights that have an identity module; with "
                "weights that do not (the released fantasytalking_model.ckpt) identity is off and the status output "
                "says so.")


class FantasyTalkingApply:
    DESCRIPTION = ("Attaches FantasyTalking to a Wan2.1 I2V model (from core's UNETLoader: fp16, bf16 or fp8, or a "
                   "GGUF loader): audio attention in every block, and identity and motion when the adapter file has "
                   "them; without a motion module the motion sliders drive training-free controls (audio strength, "
                   "I2V motion amplitude). The result is a normal MODEL: LoRA loaders, core samplers and core's Wan "
                   "context windows keep working. Use FantasyTalking Guider or Sampler for separate text and audio "
                   "guidance.")
    RETURN_TYPES = ("MODEL", "STRING")
    RETURN_NAMES = ("model", "status")
    OUTPUT_TOOLTIPS = ("The Wan model with FantasyTalking attached.",
                       "What the identity and motion inputs do with these adapter weights: the learned modules, the "
                       "training-free controls (and their values), or nothing.")
    FUNCTION = "apply"
    CATEGORY = CATEGORY

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "model": ("MODEL", {"tooltip": "Wan2.1-I2V-14B from UNETLoader (or after LoRA loaders)."}),
                "fantasytalking_model": ("FANTASYTALKING_MODEL", {"tooltip": "From FantasyTalking Model Loader."}),
                "audio_scale": ("FLOAT", {"default": 1.0, "min": 0.0, "max": 3.0, "step": 0.05,
                                          "tooltip": "lambda_1: strength of the audio attention (1 as trained and in "
                                                     "the official code)."}),
                "audio_mode": (list(AUDIO_MODES) + list(OLD_AUDIO_MODES), {
                    "default": "frame",
                    "tooltip": "frame: each latent frame hears only its own audio window (inference default). "
                               "global: every frame hears the whole recording (training stage 1). clip: the old "
                               "name of global, kept so saved workflows load."}),
            },
            "optional": {
                "audio_features": ("FANTASYTALKING_AUDIO", {"tooltip": "From FantasyTalking Audio Encode (one "
                                                                       "speaker; or connect speakers)."}),
                "speakers": ("FANTASYTALKING_SPEAKERS", {"tooltip": "From FantasyTalking Speakers: several people, "
                                                                    "each voice driving only its own region "
                                                                    "(instead of audio_features)."}),
                "face": ("FANTASYTALKING_FACE", {"tooltip": FACE_TOOLTIP}),
                "id_scale": ("FLOAT", {"default": 0.5, "min": 0.0, "max": 3.0, "step": 0.05,
                                       "tooltip": "lambda_2: strength of the identity attention (0.5 as trained); "
                                                  "only with an identity module."}),
                "motion": ("FANTASYTALKING_MOTION", {"tooltip": MOTION_TOOLTIP}),
            },
        }

    def apply(self, model, fantasytalking_model, audio_features=None, audio_scale: float = 1.0,
              audio_mode: str = "frame", face=None, id_scale: float = 0.5, motion=None, speakers=None):
        require_audio(fantasytalking_model)
        one_source(audio_features, speakers, "FantasyTalking Apply")
        with torch.no_grad():
            if speakers is not None:
                audio = speakers.conditions(fantasytalking_model.audio, audio_mode)
            else:
                audio = fantasytalking_model.audio.condition(audio_features.features, audio_features.num_frames,
                                                             mode=audio_mode)
        m, run = attach(model, fantasytalking_model, audio, audio_scale, face, id_scale, motion)
        if speakers is not None and speakers.region_guidance:
            run.guidance_regions = speakers.regions
        return (m, run.status)


def one_source(audio_features: Any, speakers: Any, node: str,
               single: str = "audio_features (FantasyTalking Audio Encode)") -> None:
    """Exactly one of the one-speaker input (``single`` names it) and speakers (FantasyTalking Speakers) is connected."""
    if (audio_features is None) == (speakers is None):
        raise ValueError(f"{node} needs one audio input: connect {single} for one "
                         f"speaker, or speakers (FantasyTalking Speakers) for several"
                         + (", not both" if speakers is not None else ""))


def require_audio(ft) -> None:
    if ft.audio is None:
        raise ValueError(f"{ft.source} has no audio adapter; load fantasytalking_model.ckpt or an adapter file with audio")


def _identity(ft, face, id_scale: float) -> tuple[torch.Tensor | None, str]:
    """The identity tokens (None when identity is off) and the status line."""
    if face is None:
        return None, "identity: not connected"
    if ft.identity is None:
        return None, (f"identity: off ({ft.describe()} has no identity module: the released "
                      "fantasytalking_model.ckpt carries audio only; the face is not used)")
    if face.embedding is None:
        raise ValueError("the face has no ArcFace embedding: choose an insightface pack in FantasyTalking Face "
                         "Embed (models/insightface/models/antelopev2 or buffalo_l)")
    with torch.no_grad():
        tokens = ft.identity.condition(torch.as_tensor(face.embedding, dtype=torch.float32))
    return tokens, f"identity: learned module, id_scale {id_scale:g}"


def _motion(ft, motion, audio_scale: float) -> tuple[torch.Tensor | None, TrainingFreeControls | None, str]:
    """(the motion module's input, the training-free controls, the status line): the learned module
    when the weights have one, else the training-free controls (motion_control.py)."""
    if motion is None:
        return None, None, "motion: not connected (official result)"
    m = motion.measurement
    if ft.motion is not None:
        return motion.tensor(), None, f"motion: learned module, omega_l {m.omega_l:.2f}, omega_b {m.omega_b:.2f}"
    controls = TrainingFreeControls(m.omega_l, m.omega_b, source="video" if m.source == "video" else "sliders")
    return None, controls, "motion: " + controls.describe(audio_scale)


def attach(model, ft, audio: AudioCondition | None, audio_scale: float = 1.0, face=None, id_scale: float = 0.5, motion=None,
           node: str = "FantasyTalking Apply") -> tuple[Any, AdapterRun]:
    """A clone of ``model`` with the adapters of ``ft`` attached (object patches + wrappers), and the
    wrapper whose conditions each DiT call gets: a caller may set its ``audio`` between sampling runs
    (the Long Video and Dub samplers do, per segment, and give None here). Motion without a motion
    module: omega_l scales ``audio_scale`` here and the guidance in FantasyTalking's guider
    (``AdapterRun.guidance``), omega_b the I2V conditioning (:class:`MotionAmplitude`)."""
    require_audio(ft)
    if has_adapters(model):
        raise ValueError(f"this MODEL already has FantasyTalking attached: connect the model loader's MODEL to {node}, "
                         "not the output of FantasyTalking Apply")
    if model.get_additional_models_with_key("multigpu"):
        raise ValueError(MULTI_GPU_REFUSED)
    id_tokens, id_status = _identity(ft, face, id_scale)
    motion_in, controls, motion_status = _motion(ft, motion, audio_scale)
    m = model.clone()
    attachment = attach_adapters(m.get_model_object("diffusion_model"), audio=ft.audio,
                                 identity=ft.identity if id_tokens is not None else None,
                                 motion=ft.motion if motion_in is not None else None,
                                 resolve=lambda path: m.get_model_object("diffusion_model." + path),
                                 host=_host.host_name())
    for path, cls in attachment.patches().items():
        m.add_object_patch("diffusion_model." + path, cls)
    scale = audio_scale if controls is None else controls.audio_scale(audio_scale)
    status = f"{node}: {id_status}; {motion_status}"
    log.info("%s", status)
    run = AdapterRun(attachment, audio, scale, id_tokens, id_scale, motion_in, controls, status)
    m.add_wrapper_with_key(_host.DIFFUSION_MODEL, _host.WRAPPER_KEY, run)
    m.add_wrapper_with_key(_host.APPLY_MODEL, _host.WRAPPER_KEY, check_context_window)
    if controls is not None and controls.amplitude != 1.0:
        m.add_wrapper_with_key(_host.OUTER_SAMPLE, _host.WRAPPER_KEY, MotionAmplitude(controls.amplitude))
    if ft.patcher is not None:
        m.set_additional_models(_host.WRAPPER_KEY, [ft.patcher])
    return m, run
