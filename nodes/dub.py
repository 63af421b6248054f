"""Dubbing in ComfyUI: FantasyTalking Dub Mask (the region to regenerate, per frame) and FantasyTalking
Dub Sampler (new speech in, only that region regenerated, everything else kept).

Core has the rest: LoadVideo + GetVideoComponents give the frames, the source's frame rate and
sound; ImageFromBatch + CLIPVisionEncode the first frame's CLIP tokens; CreateVideo + SaveVideo the
file. The sampler runs the segment loop of fantasytalking_core/dub.py (core graphs have no loops),
each segment the way core inpaints: the source frames VAE-encoded as the LATENT with a
``noise_mask`` (core's SetLatentNoiseMask idiom), so core's sampler holds the unmasked latent to the
source at every step (for flow models: the source noised to the current sigma with the run's noise)
and FantasyTalking's guider generates the masked region with the new audio. docs/dubbing.md.
"""

from __future__ import annotations

import logging

import torch

from fantasytalking_core.audio import read_audio
from fantasytalking_core.dub import FIT_MODES, MODEL_FPS, DubJob, dub_wave, mouth_masks, plan_dub
from fantasytalking_core.sampling import Guidance, composite
from fantasytalking_core.segments import SegmentPlan, fill_video

from . import _host, sampling
from .apply import MOTION_TOOLTIP, require_audio
from .contracts import trim_comfy_audio
from .lipmask import tinted
from .long_video import SegmentSampler, SegmentSettings, decoded_frames, segment_inputs

CATEGORY = "FantasyTalking"
log = logging.getLogger("FantasyTalking")


class FantasyTalkingDubMask:
    DESCRIPTION = ("The region a dub regenerates, per frame: the lips from MediaPipe face-mesh landmarks and, with "
                   "jaw, the lower face from the jaw line up to the nose, grown by dilation and feathered. Frames "
                   "without a face get an empty mask (the dub leaves them untouched). Any MASK of one mask per frame "
                   "works in its place.")
    RETURN_TYPES = ("MASK", "IMAGE")
    RETURN_NAMES = ("mask", "preview")
    OUTPUT_TOOLTIPS = ("One mask per frame, 1 where the dub regenerates, soft at the edge.",
                       "The frames with the region tinted red.")
    FUNCTION = "mask"
    CATEGORY = CATEGORY

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "images": ("IMAGE", {"tooltip": "The source video's frames (GetVideoComponents)."}),
            "dilation": ("INT", {"default": 8, "min": 0, "max": 128, "step": 1,
                                 "tooltip": "Grow the region by this many pixels (room for a mouth that opens wider "
                                            "than the source's)."}),
            "jaw": ("BOOLEAN", {"default": True, "tooltip": "Regenerate the lower face from the jaw line to the nose "
                                                            "(the jaw moves with speech), not only the lips."}),
            "feather": ("INT", {"default": 8, "min": 0, "max": 128, "step": 1,
                                "tooltip": "Soft edge outside the region, in pixels."}),
        }}

    def mask(self, images: torch.Tensor, dilation: int = 8, jaw: bool = True, feather: int = 8):
        _host.check_interrupt()
        result = mouth_masks(images, dilation, jaw, feather, backend=_host.mediapipe_backend())
        for note in result.notes:
            log.info("FantasyTalking Dub Mask: %s", note)
        masks = result.soft()
        return (masks, tinted(images, masks))


class FantasyTalkingDubSampler:
    DESCRIPTION = ("Dubs a video: new speech in, only the masked region (FantasyTalking Dub Mask) regenerated, "
                   "everything else kept. Each segment's source frames are VAE-encoded and held outside the mask at "
                   "every step (core's denoise mask); the first frame is the source's own; segments of "
                   "segment_frames at 23 fps as the model runs, retimed to the source's frame rate. Outputs the frames "
                   "at the source's size and frame rate and the new audio fitted to them, for CreateVideo (fps from "
                   "GetVideoComponents).")
    RETURN_TYPES = ("IMAGE", "AUDIO")
    RETURN_NAMES = ("images", "audio")
    OUTPUT_TOOLTIPS = ("The dubbed frames, the source's size and frame rate.",
                       "The new audio cut or padded to the frames, for CreateVideo.")
    FUNCTION = "dub"
    CATEGORY = CATEGORY

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "model": ("MODEL", {"tooltip": "Wan2.1-I2V-14B from UNETLoader (not from FantasyTalking Apply)."}),
            "fantasytalking_model": ("FANTASYTALKING_MODEL", {"tooltip": "From FantasyTalking Model Loader."}),
            "wav2vec": ("FANTASYTALKING_WAV2VEC", {"tooltip": "From FantasyTalking Wav2Vec Loader: the new audio is "
                                                              "fitted to the video first, then encoded here."}),
            "audio": ("AUDIO", {"tooltip": "The new speech (Load Audio)."}),
            "positive": ("CONDITIONING", {"tooltip": "Prompt (CLIPTextEncode)."}),
            "negative": ("CONDITIONING", {"tooltip": "Negative prompt (CLIPTextEncode)."}),
            "vae": ("VAE", {"tooltip": "Wan2.1 VAE."}),
            "images": ("IMAGE", {"tooltip": "The source video's frames (GetVideoComponents)."}),
            "fps": ("FLOAT", {"default": 25.0, "min": 1.0, "max": 240.0, "step": 0.001,
                              "tooltip": "The source's frame rate (GetVideoComponents' fps); the output keeps it."}),
            "mask": ("MASK", {"tooltip": "One mask per source frame, 1 where to regenerate (FantasyTalking Dub Mask)."}),
            "fit": (list(FIT_MODES), {"default": "cut",
                                      "tooltip": "When the new audio and the video differ in length: cut (the video's "
                                                 "length; the audio cut, or padded with silence), loop (the audio's "
                                                 "length, the video looped), hold (the audio's length, the last frame "
                                                 "held). loop and hold cut the video to a shorter audio."}),
            "size": ("INT", {"default": 512, "min": 16, "max": 4096, "step": 16,
                             "tooltip": "The model's longest edge (multiple of 16); the frames are stretched to it and "
                                        "the regenerated region back to the source's size."}),
            **segment_inputs(),
        }, "optional": {
            "clip_vision_output": ("CLIP_VISION_OUTPUT", {"tooltip": "CLIPVisionEncode of the source's first frame "
                                                                     "(ImageFromBatch index 0)."}),
            "paste_back": ("BOOLEAN", {"default": True,
                                       "tooltip": "Outside the mask keep the source's own pixels. Off: the model's "
                                                  "frames everywhere (the VAE round trip outside the mask)."}),
            **sampling.optional_inputs(),
            "motion": ("FANTASYTALKING_MOTION", {"tooltip": "Off unless connected: a dub keeps the source's motion. "
                                                            + MOTION_TOOLTIP}),
        }}

    def dub(self, model, fantasytalking_model, wav2vec, audio, positive, negative, vae, images, fps, mask, fit="cut",
            size=512, segment_frames=81, motion_frames=1, audio_scale=1.0, seed=1111, steps=30,
            cfg_text=sampling.DEFAULTS.cfg_text, cfg_audio=sampling.DEFAULTS.cfg_audio,
            audio_guidance_start=sampling.DEFAULTS.audio_start, audio_guidance_end=sampling.DEFAULTS.audio_end,
            sampler_name=sampling.OFFICIAL_SAMPLER, scheduler="simple", shift=5.0, clip_vision_output=None,
            paste_back=True, two_pass_shortcut=sampling.DEFAULTS.two_pass_shortcut, motion=None):
        ft = fantasytalking_model
        require_audio(ft)
        if mask.ndim == 2:
            mask = mask[None]
        if mask.shape[0] == 1 and images.shape[0] > 1:  # one mask for every frame, as core's mask nodes allow
            mask = mask.expand(images.shape[0], -1, -1)
        wave16k = read_audio(audio).to_16k()
        plan = plan_dub(images.shape[0], float(fps), wave16k.numel() / 16000, fit, segment_frames, motion_frames)
        job = DubJob(images.cpu(), mask.cpu(), plan, size, paste_back)
        log.info("FantasyTalking %s", plan.describe())
        for note in plan.notes:
            log.warning("FantasyTalking Dub: %s", note)
        settings = SegmentSettings(audio_scale, seed, steps, Guidance(cfg_text, cfg_audio, audio_guidance_start,
                                                                      audio_guidance_end, two_pass_shortcut),
                                   sampler_name, scheduler, shift)
        with torch.no_grad():
            features = wav2vec.encode(dub_wave(wave16k, plan)).float().cpu()
        step = SegmentSampler("FantasyTalking Dub Sampler", model, ft, features, plan.generated, MODEL_FPS,
                              len(plan.plans), positive, negative, vae, clip_vision_output, settings, motion=motion)

        def sample_segment(seg: SegmentPlan, held: torch.Tensor, source: torch.Tensor,
                           latent_mask: torch.Tensor) -> torch.Tensor:
            src = vae.encode(source).to(_host.intermediate_device())  # [1, 16, T_lat, h, w]
            keep = latent_mask[None, None].to(src)  # latent-sized: core's reshape leaves it as it is
            samples = step(seg, held, {"samples": src, "noise_mask": keep})
            return decoded_frames(vae.decode(composite(samples.to(src), src, keep)))  # exactly the source outside

        frames = torch.empty(plan.frames, *images.shape[1:3], 3, device=_host.intermediate_device())
        return (fill_video(frames, job.frames(sample_segment)), trim_comfy_audio(audio, plan.seconds))
