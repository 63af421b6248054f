"""Guidance with separate text and audio scales: a GUIDER for SamplerCustomAdvanced, and a one-node sampler.

The guider is core's CFGGuider with FantasyTalking's passes (fantasytalking_core.sampling.Guidance)
run through core's cond batching: the passes batch on one GPU, and audio is switched off per cond by
the cond's uuid (see nodes/apply.py), so it holds however core batches or splits them.
:func:`make_guider`, :func:`with_shift` and :func:`sample` are the host side of these nodes (core's
classes behind nodes/_host.py); the tests replace them with a plain host on our own DiT
(tests/_plain_host.py).
"""

from __future__ import annotations

from typing import Any

from fantasytalking_core.sampling import SOLVERS, Guidance

from . import _host
from .apply import adapter_run

CATEGORY = "FantasyTalking"
DEFAULTS = Guidance()  # the official infer.py values: cfg_text 5, cfg_audio 5, the three-pass formula
OFFICIAL_SAMPLER = "euler"  # DiffSynth's FlowMatchScheduler step, as the official infer.py samples


# ------------------------------------------------------------------------------------ host side
def pass_conds(positive: list, negative: list) -> dict[str, list]:
    """The four guidance passes' conds: audio on/off is carried per cond (by uuid), not by text."""
    return {"pos_audio": positive, "pos_noaudio": positive, "neg_noaudio": negative, "neg_audio": negative}


def make_guider(model: Any, positive: list, negative: list, guidance: Guidance) -> Any:
    """A GUIDER running FantasyTalking's guidance: core's CFGGuider subclass."""
    return _host.make_guider(model, pass_conds(positive, negative), guidance)


def sampler_names() -> list[str]:
    """Core's samplers; outside ComfyUI (template generator) the core's solvers, which carry
    ComfyUI's names ("euler", "uni_pc")."""
    return _host.sampler_names() if _host.IN_COMFY else list(SOLVERS)


def scheduler_names() -> list[str]:
    names = _host.scheduler_names() if _host.IN_COMFY else []
    return ["simple"] + [n for n in names if n != "simple"]


def with_shift(model: Any, shift: float) -> Any:
    """The model with flow-matching shift ``shift`` (core's ModelSamplingSD3 does the same)."""
    return _host.with_shift(model, shift)


def sample(model: Any, guider: Any, latent: dict, seed: int, steps: int, sampler_name: str, scheduler: str,
           denoise: float = 1.0, part: tuple[int, int] = (0, 1)) -> dict:
    """Run ``guider`` from noise to a LATENT, with progress, previews and interruption. ``part`` =
    (i, n): this run is the i-th of n (segments of one video): the progress bar shows all n."""
    return _host.sample(model, guider, latent, seed, steps, sampler_name, scheduler, denoise, part)


# ------------------------------------------------------------------------------------ nodes
def _model_inputs() -> dict:
    return {
        "model": ("MODEL", {"tooltip": "From FantasyTalking Apply."}),
        "positive": ("CONDITIONING", {"tooltip": "Prompt (with the start image, e.g. from WanImageToVideo)."}),
        "negative": ("CONDITIONING", {"tooltip": "Negative prompt (with the start image)."}),
    }


def guidance_inputs() -> dict:
    return {
        "cfg_text": ("FLOAT", {"default": DEFAULTS.cfg_text, "min": 1.0, "max": 30.0, "step": 0.1, "round": 0.01,
                               "tooltip": f"Text guidance ({DEFAULTS.cfg_text:g} as in the official code). 1 turns "
                                          "the negative prompt off: one pass fewer per step."}),
        "cfg_audio": ("FLOAT", {"default": DEFAULTS.cfg_audio, "min": 1.0, "max": 30.0, "step": 0.1, "round": 0.01,
                                "tooltip": f"Audio guidance ({DEFAULTS.cfg_audio:g} as in the official infer.py; the "
                                           "paper reports 4.5). Any value, 1 included, keeps the official three "
                                           "passes per step: neg + cfg_text*(pos - neg) + cfg_audio*(pos_audio - pos). "
                                           "omega_l of Motion Intensity, with weights without a motion module, "
                                           "scales cfg_audio - 1 (docs/motion.md)."}),
        "audio_guidance_start": ("FLOAT", {"default": DEFAULTS.audio_start, "min": 0.0, "max": 1.0, "step": 0.01,
                                           "tooltip": "Audio guidance from this fraction of the steps..."}),
        "audio_guidance_end": ("FLOAT", {"default": DEFAULTS.audio_end, "min": 0.0, "max": 1.0, "step": 0.01,
                                         "tooltip": "...up to this fraction (exclusive); outside it cfg_audio counts "
                                                    "as 1 (official: the whole run)."}),
    }


def optional_inputs() -> dict:
    """Added after the inputs existing workflows store, so their saved widget values keep their places."""
    return {
        "two_pass_shortcut": ("BOOLEAN", {"default": DEFAULTS.two_pass_shortcut,
                                          "tooltip": "Not the official formula: where audio guidance is off (cfg_audio "
                                                     "1 or outside its window) run two passes, neg_audio + cfg_text*"
                                                     "(pos_audio - neg_audio), instead of three. Faster; meant for "
                                                     "step-distilled LoRAs. Off follows the official code."}),
    }


def _guider(model, positive, negative, guidance: Guidance):
    run = adapter_run(model)
    if run is None:
        raise ValueError("FantasyTalking guidance needs a MODEL from FantasyTalking Apply (the audio passes compare "
                         "the model with and without the audio): connect it")
    return make_guider(model, positive, negative, run.guidance(guidance))  # omega_l's, the speakers' regions


class FantasyTalkingGuider:
    DESCRIPTION = ("FantasyTalking guidance for SamplerCustomAdvanced, as the official code combines it: "
                   "out = neg + cfg_text * (pos - neg) + cfg_audio * (pos_audio - pos), up to three passes per step batched "
                   "through core's cond batching.")
    RETURN_TYPES = ("GUIDER",)
    RETURN_NAMES = ("guider",)
    OUTPUT_TOOLTIPS = ("For SamplerCustomAdvanced.",)
    FUNCTION = "get_guider"
    CATEGORY = CATEGORY

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {**_model_inputs(), **guidance_inputs()}, "optional": optional_inputs()}

    def get_guider(self, model, positive, negative, cfg_text=DEFAULTS.cfg_text, cfg_audio=DEFAULTS.cfg_audio,
                   audio_guidance_start=DEFAULTS.audio_start, audio_guidance_end=DEFAULTS.audio_end,
                   two_pass_shortcut=DEFAULTS.two_pass_shortcut):
        guidance = Guidance(cfg_text, cfg_audio, audio_guidance_start, audio_guidance_end, two_pass_shortcut)
        return (_guider(model, positive, negative, guidance),)


class FantasyTalkingSampler:
    DESCRIPTION = ("One node for the whole sampling: flow-matching shift, FantasyTalking's text and audio guidance, "
                   "steps, seed, sampler and scheduler; the defaults follow the official code. Same result as "
                   "FantasyTalking Guider + SamplerCustomAdvanced.")
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
            **guidance_inputs(),
            "sampler_name": (sampler_names(), {"default": OFFICIAL_SAMPLER,
                                               "tooltip": "Solver. euler follows the official code (DiffSynth's flow-"
                                                          "matching step); uni_pc is Wan's own default solver."}),
            "scheduler": (scheduler_names(), {"default": "simple", "tooltip": "Sigma schedule (simple: the "
                                                                              "official evenly spaced, shifted one)."}),
            "shift": ("FLOAT", {"default": 5.0, "min": 0.0, "max": 100.0, "step": 0.1,
                                "tooltip": "Flow-matching shift (official 5 at 512 px). 0 keeps the model's own."}),
            "denoise": ("FLOAT", {"default": 1.0, "min": 0.01, "max": 1.0, "step": 0.01,
                                  "tooltip": "1 starts from pure noise."}),
        }, "optional": optional_inputs()}

    def sample(self, model, positive, negative, latent_image, seed=1111, steps=30, cfg_text=DEFAULTS.cfg_text,
               cfg_audio=DEFAULTS.cfg_audio, audio_guidance_start=DEFAULTS.audio_start, audio_guidance_end=DEFAULTS.audio_end,
               sampler_name=OFFICIAL_SAMPLER, scheduler="simple", shift=5.0, denoise=1.0,
               two_pass_shortcut=DEFAULTS.two_pass_shortcut):
        if shift > 0:
            model = with_shift(model, shift)
        guidance = Guidance(cfg_text, cfg_audio, audio_guidance_start, audio_guidance_end, two_pass_shortcut)
        guider = _guider(model, positive, negative, guidance)
        return (sample(model, guider, latent_image, seed, steps, sampler_name, scheduler, denoise),)
