"""Guidance with separate text and audio scales: a GUIDER, and a one-node sampler."""

from __future__ import annotations

from fantasytalking_core.sampling import Guidance

from . import _host
from .apply import has_adapters

CATEGORY = "FantasyTalking"


def _model_inputs() -> dict:
    return {
        "model": ("MODEL", {"tooltip": "From FantasyTalking Apply."}),
        "positive": ("CONDITIONING", {"tooltip": "Prompt (with the start image, e.g. from WanImageToVideo)."}),
        "negative": ("CONDITIONING", {"tooltip": "Negative prompt (with the start image)."}),
    }


def _guidance_inputs() -> dict:
    return {
        "cfg_text": ("FLOAT", {"default": 5.0, "min": 1.0, "max": 30.0, "step": 0.1, "round": 0.01,
                               "tooltip": "Text guidance (official 5). 1 turns the negative prompt off."}),
        "cfg_audio": ("FLOAT", {"default": 4.5, "min": 1.0, "max": 30.0, "step": 0.1, "round": 0.01,
                                "tooltip": "Audio guidance (paper 4.5, official code 5). 1 = no audio guidance: "
                                           "one pass fewer per step."}),
        "audio_guidance_start": ("FLOAT", {"default": 0.0, "min": 0.0, "max": 1.0, "step": 0.01,
                                           "tooltip": "Audio guidance from this fraction of the steps..."}),
        "audio_guidance_end": ("FLOAT", {"default": 1.0, "min": 0.0, "max": 1.0, "step": 0.01,
                                         "tooltip": "...up to this fraction (exclusive); outside it no extra pass."}),
    }


def _guider(model, positive, negative, cfg_text, cfg_audio, start, end):
    if cfg_audio != 1.0 and not has_adapters(model):
        raise ValueError("cfg_audio needs a MODEL from FantasyTalking Apply (audio guidance compares passes with "
                         "and without the audio); connect it, or set cfg_audio to 1")
    return _host.make_guider(model, positive, negative, Guidance(cfg_text, cfg_audio, start, end))


class FantasyTalkingGuider:
    DESCRIPTION = ("FantasyTalking guidance for SamplerCustomAdvanced: up to three passes per step, "
                   "out = neg + cfg_text * (pos - neg) + cfg_audio * (pos_audio - pos), the passes batched through "
                   "core's cond batching (and spread over GPUs where core does that).")
    RETURN_TYPES = ("GUIDER",)
    RETURN_NAMES = ("guider",)
    OUTPUT_TOOLTIPS = ("For SamplerCustomAdvanced.",)
    FUNCTION = "get_guider"
    CATEGORY = CATEGORY

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {**_model_inputs(), **_guidance_inputs()}}

    def get_guider(self, model, positive, negative, cfg_text=5.0, cfg_audio=4.5, audio_guidance_start=0.0,
                   audio_guidance_end=1.0):
        return (_guider(model, positive, negative, cfg_text, cfg_audio, audio_guidance_start, audio_guidance_end),)


class FantasyTalkingSampler:
    DESCRIPTION = ("One node for the whole sampling: flow-matching shift, FantasyTalking's text and audio guidance, "
                   "steps, seed, sampler and scheduler. Same result as FantasyTalking Guider + SamplerCustomAdvanced.")
    RETURN_TYPES = ("LATENT",)
    RETURN_NAMES = ("latent",)
    OUTPUT_TOOLTIPS = ("The video latent, for VAEDecode.",)
    FUNCTION = "sample"
    CATEGORY = CATEGORY

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            **_model_inputs(),
            "latent_image": ("LATENT", {"tooltip": "The empty video latent (WanImageToVideo's latent)."}),
            "seed": ("INT", {"default": 1111, "min": 0, "max": 0xFFFFFFFFFFFFFFFF, "control_after_generate": True,
                             "tooltip": "Noise seed (official 1111)."}),
            "steps": ("INT", {"default": 30, "min": 1, "max": 200, "tooltip": "Sampling steps (official 30)."}),
            **_guidance_inputs(),
            "sampler_name": (_host.sampler_names(), {"default": "uni_pc", "tooltip": "Solver (official: UniPC)."}),
            "scheduler": (_host.scheduler_names(), {"default": "simple", "tooltip": "Sigma schedule."}),
            "shift": ("FLOAT", {"default": 5.0, "min": 0.0, "max": 100.0, "step": 0.1,
                                "tooltip": "Flow-matching shift (official 5 at 512 px). 0 keeps the model's own."}),
            "denoise": ("FLOAT", {"default": 1.0, "min": 0.01, "max": 1.0, "step": 0.01,
                                  "tooltip": "1 starts from pure noise."}),
        }}

    def sample(self, model, positive, negative, latent_image, seed=1111, steps=30, cfg_text=5.0, cfg_audio=4.5,
               audio_guidance_start=0.0, audio_guidance_end=1.0, sampler_name="uni_pc", scheduler="simple",
               shift=5.0, denoise=1.0):
        if shift > 0:
            model = _host.with_shift(model, shift)
        guider = _guider(model, positive, negative, cfg_text, cfg_audio, audio_guidance_start, audio_guidance_end)
        return (_host.sample(model, guider, latent_image, seed, steps, sampler_name, scheduler, denoise),)
