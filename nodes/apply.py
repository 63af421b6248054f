"""FantasyTalking Apply: attach the adapters to core's Wan model through object patches."""

from __future__ import annotations

from typing import Any

import torch

from fantasytalking_core.adapters.audio import AudioCondition
from fantasytalking_core.adapters.attach import Attachment, attach_adapters
from fantasytalking_core.contracts import AUDIO_MODES

from . import _host

CATEGORY = "FantasyTalking"


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


def window_audio(cond: AudioCondition, options: dict) -> AudioCondition:
    """Only the latent frames of core's current context window, when one is active."""
    window = options.get("context_window")
    if window is None or not cond.frame_level:
        return cond
    idx = list(window.index_list)
    if max(idx) >= cond.tokens.shape[1]:
        raise ValueError(f"context window reaches latent frame {max(idx)} but the audio covers "
                         f"{cond.tokens.shape[1]}; encode the audio for the whole video's frame count")
    lens = None if cond.k_lens is None else cond.k_lens[..., idx]
    return AudioCondition(cond.tokens[:, idx], lens)


class AdapterRun:
    """DIFFUSION_MODEL wrapper: sets the adapters' conditions and per-row scales for one DiT call."""

    def __init__(self, attachment: Attachment, audio: AudioCondition, audio_scale: float,
                 id_tokens: torch.Tensor | None, id_scale: float, motion: torch.Tensor | None):
        self.attachment, self.audio, self.audio_scale = attachment, audio, audio_scale
        self.id_tokens, self.id_scale, self.motion = id_tokens, id_scale, motion

    def __call__(self, executor, *args: Any, **kwargs: Any) -> Any:
        options = _options(args, kwargs)
        rows = args[0].shape[0]
        with self.attachment.conditioned(audio=window_audio(self.audio, options),
                                         audio_scale=audio_row_scales(rows, options, self.audio_scale),
                                         identity=self.id_tokens, id_scale=self.id_scale, motion=self.motion):
            return executor(*args, **kwargs)


def has_adapters(model: Any) -> bool:
    """Whether FantasyTalking Apply already patched this MODEL (its wrapper is registered)."""
    return bool(model.get_wrappers(_host.DIFFUSION_MODEL, _host.WRAPPER_KEY))


class FantasyTalkingApply:
    DESCRIPTION = ("Attaches FantasyTalking to a Wan2.1 I2V model (from core's UNETLoader: fp16, bf16 or fp8): audio "
                   "attention in every block, and identity and motion when the adapter file has them. The result is a "
                   "normal MODEL: LoRA loaders, torch compile and core samplers keep working. Use FantasyTalking Guider "
                   "or Sampler for separate text and audio guidance.")
    RETURN_TYPES = ("MODEL",)
    RETURN_NAMES = ("model",)
    OUTPUT_TOOLTIPS = ("The Wan model with FantasyTalking attached.",)
    FUNCTION = "apply"
    CATEGORY = CATEGORY

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "model": ("MODEL", {"tooltip": "Wan2.1-I2V-14B from UNETLoader (or after LoRA loaders)."}),
                "fantasytalking_model": ("FANTASYTALKING_MODEL", {"tooltip": "From FantasyTalking Model Loader."}),
                "audio_features": ("FANTASYTALKING_AUDIO", {"tooltip": "From FantasyTalking Audio Encode."}),
                "audio_scale": ("FLOAT", {"default": 1.0, "min": 0.0, "max": 3.0, "step": 0.05,
                                          "tooltip": "lambda_1: strength of the audio attention (1 as trained)."}),
                "audio_mode": (list(AUDIO_MODES), {"default": "frame",
                                                   "tooltip": "frame: each latent frame hears only its own audio "
                                                              "window (inference default). clip: every frame hears "
                                                              "the whole clip (training stage 1)."}),
            },
            "optional": {
                "face": ("FANTASYTALKING_FACE", {"tooltip": "From FantasyTalking Face Embed; needs adapter weights "
                                                            "with an identity module."}),
                "id_scale": ("FLOAT", {"default": 0.5, "min": 0.0, "max": 3.0, "step": 0.05,
                                       "tooltip": "lambda_2: strength of the identity attention (0.5 as trained)."}),
                "motion": ("FANTASYTALKING_MOTION", {"tooltip": "From FantasyTalking Motion Intensity; needs adapter "
                                                                "weights with a motion module."}),
            },
        }

    def apply(self, model, fantasytalking_model, audio_features, audio_scale: float = 1.0, audio_mode: str = "frame",
              face=None, id_scale: float = 0.5, motion=None):
        ft = fantasytalking_model
        if ft.audio is None:
            raise ValueError(f"{ft.source} has no audio adapter; load fantasytalking_model.ckpt or an adapter file with audio")
        if has_adapters(model):
            raise ValueError("this MODEL already has FantasyTalking attached: connect the model loader's MODEL to "
                             "FantasyTalking Apply, not the output of another FantasyTalking Apply")
        id_tokens = motion_in = None
        if face is not None:
            if ft.identity is None:
                raise ValueError(f"{ft.describe()} has no identity module (the released fantasytalking_model.ckpt "
                                 "carries audio only): disconnect 'face' or load adapter weights trained with identity")
            if face.embedding is None:
                raise ValueError("the face has no ArcFace embedding: choose an insightface pack in FantasyTalking Face "
                                 "Embed (models/insightface/models/antelopev2 or buffalo_l)")
            with torch.no_grad():
                id_tokens = ft.identity.condition(torch.as_tensor(face.embedding, dtype=torch.float32))
        if motion is not None:
            if ft.motion is None:
                raise ValueError(f"{ft.describe()} has no motion module: disconnect 'motion' or load adapter weights "
                                 "trained with motion intensity")
            motion_in = motion.tensor()
        with torch.no_grad():
            audio = ft.audio.condition(audio_features.features, audio_features.num_frames, mode=audio_mode)

        m = model.clone()
        dit = m.get_model_object("diffusion_model")
        attachment = attach_adapters(dit, audio=ft.audio, identity=ft.identity if face is not None else None,
                                     motion=ft.motion if motion is not None else None,
                                     resolve=lambda path: m.get_model_object("diffusion_model." + path))
        for path, module in attachment.patches().items():
            m.add_object_patch("diffusion_model." + path, module)
        m.add_wrapper_with_key(_host.DIFFUSION_MODEL, _host.WRAPPER_KEY,
                               AdapterRun(attachment, audio, audio_scale, id_tokens, id_scale, motion_in))
        if ft.patcher is not None:
            m.set_additional_models(_host.WRAPPER_KEY, [ft.patcher])
        return (m,)
