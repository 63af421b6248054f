"""FantasyTalking Long Video Sampler: a recording of any length -> one video, segment after segment.

Core graphs have no loops, so this node runs the segment loop itself, in the idiom of core's
audio-driven Wan nodes (WanInfiniteTalkToVideo's previous frames and motion frames,
WanSoundImageToVideoExtend's continuation): a Wan2.1 I2V MODEL from UNETLoader (+ LoRA loaders), the
FantasyTalking adapters, the audio features of the whole recording (Audio Encode with max_frames 0),
the text conditioning, the VAE, the portrait and its CLIP vision output -> IMAGE frames and the
AUDIO cut to them, for CreateVideo.

The machinery is the core's (fantasytalking_core/segments.py), the same the command line runs: the
plan, each segment's audio windows from the one encoding, the held frames as known frames of Wan's
I2V conditioning (core's ``concat_latent_image`` / ``concat_mask``), colour matching. Per segment the
node attaches nothing new: FantasyTalking Apply's attach path makes one patched clone, whose audio
condition is set per segment, and FantasyTalking's guider runs core's sampler on it (progress over
all segments, previews, interruption). Nothing is kept between prompts.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Iterator

import torch

from fantasytalking_core.frames import plan_frames
from fantasytalking_core.images import fit_frames
from fantasytalking_core.sampling import Guidance
from fantasytalking_core.segments import (SegmentPlan, fill_video, held_video, i2v_y, output_frames, plan_segments,
                                          run_segments, segment_audio, segment_seed)
from fantasytalking_core.speakers import SpeakerAudio, region_audio

from . import _host, sampling
from .apply import FACE_TOOLTIP, MOTION_TOOLTIP, attach, one_source, require_audio
from .contracts import trim_comfy_audio

CATEGORY = "FantasyTalking"
log = logging.getLogger("FantasyTalking")


def _with(conditioning: list, **values) -> list:
    """CONDITIONING with these entries set on every item (as core's conditioning_set_values)."""
    return [[t, {**d, **values}] for t, d in conditioning]


def i2v_conds(vae, held: torch.Tensor, num_frames: int, positive: list, negative: list,
              extra: dict) -> tuple[list, list, torch.Tensor]:
    """A segment's Wan I2V conditioning, as core's nodes pass it: the held frames [K, H, W, 3] then grey,
    VAE-encoded, as ``concat_latent_image``, and ``concat_mask`` 0 on exactly the held frames (given
    explicitly, so a sampler's denoise mask never stands in for it) -> (positive, negative, latent)."""
    latent = vae.encode(held_video(held, num_frames)[..., :3])  # [1, 16, T_lat, h, w]
    y = i2v_y(latent, known=held.shape[0])  # core builds its own y from these two: the same tensor
    cond = {"concat_latent_image": latent, "concat_mask": 1.0 - y[:, :4], **extra}
    return _with(positive, **cond), _with(negative, **cond), latent


def decoded_frames(images: torch.Tensor) -> torch.Tensor:
    """A VAE decode ([B, T, H, W, 3] for video VAEs, or [T, H, W, 3]) -> frames [T, H, W, 3] on the CPU."""
    return images.reshape(-1, *images.shape[-3:]).float().to(_host.intermediate_device())


@dataclass
class SegmentSettings:
    """The sampling widgets the Long Video and Dub samplers share (official defaults in the nodes)."""

    audio_scale: float
    seed: int
    steps: int
    guidance: Guidance
    sampler_name: str
    scheduler: str
    shift: float


@dataclass
class SegmentVideo:
    """A video the segment loop makes as its chunks are taken (one chunk of new frames [N, H, W, 3] per
    segment): its frame count, rate and size, and the audio (AUDIO) cut to it."""

    chunks: Iterator[torch.Tensor]
    frames: int
    fps: float
    height: int
    width: int
    audio: dict
    segments: int

    def tensor(self) -> torch.Tensor:
        """Every frame in one IMAGE (float32 on the CPU: what the IMAGE outputs hold)."""
        return fill_video(torch.empty(self.frames, self.height, self.width, 3, device=_host.intermediate_device()),
                          self.chunks)


IMAGE_MEMORY = ("Every frame in memory as one float32 IMAGE (12 bytes a pixel: 60 s at 512x512 is 4.3 GiB, held in "
                "ComfyUI's cache after the prompt): for short clips and post-processing. For long videos use the "
                "(to file) node, whose VIDEO is the file; Get Video Components on it decodes every frame into the "
                "same IMAGE again.")


class SegmentSampler:
    """The segment step of the Long Video and Dub samplers: one patched clone of the MODEL (FantasyTalking
    Apply's attach path, made once; the audio is set per segment), each segment its own audio windows
    from the one encoding, its held frames as Wan I2V's known frames, FantasyTalking's guider on core's
    sampler; interruption before each segment, progress over all of them. ``features``: the recording's
    wav2vec2 features, or several speakers' (a ``SpeakerAudio``: each segment's audio routed by region)."""

    def __init__(self, node: str, model: Any, ft: Any, features: torch.Tensor | SpeakerAudio, total: int, fps: float,
                 count: int,
                 positive: list, negative: list, vae: Any, clip_vision_output: Any, settings: SegmentSettings,
                 face: Any = None, id_scale: float = 0.5, motion: Any = None):
        patched, self.run = attach(model, ft, None, settings.audio_scale, face, id_scale, motion, node=node)
        self.model = sampling.with_shift(patched, settings.shift) if settings.shift > 0 else patched
        self.node, self.audio, self.features, self.total, self.fps, self.count = node, ft.audio, features, total, fps, count
        self.positive, self.negative, self.vae, self.settings = positive, negative, vae, settings
        self.extra = {} if clip_vision_output is None else {"clip_vision_output": clip_vision_output}

    def __call__(self, plan: SegmentPlan, held: torch.Tensor, latent: dict | None = None,
                 regions: Any = None) -> torch.Tensor:
        """The segment's sampled latent, from `latent` (e.g. the source with a noise_mask) or from an empty one.
        `regions`: several speakers' regions for this segment only (a dub's, per source frame), in place of
        the speakers' own."""
        _host.check_interrupt()
        log.info("%s: segment %d/%d, frames %d-%d", self.node, plan.index + 1, self.count, plan.start_frame,
                 plan.end_frame - 1)
        f = self.features
        if isinstance(f, SpeakerAudio):  # under no_grad, as the rest
            regions = f.regions if regions is None else regions
            self.run.audio = region_audio(self.audio, f.features, plan, self.total, self.fps, regions)
            if f.region_guidance:
                self.run.guidance_regions = regions
        else:
            self.run.audio = segment_audio(self.audio, f, plan, self.total, self.fps)
        pos, neg, concat = i2v_conds(self.vae, held, plan.num_frames, self.positive, self.negative, self.extra)
        if latent is None:
            latent = {"samples": torch.zeros([1, 16, *concat.shape[2:]], device=_host.intermediate_device())}
        s = self.settings
        guider = sampling.make_guider(self.model, pos, neg, self.run.guidance(s.guidance))  # omega_l's, regions
        out = sampling.sample(self.model, guider, latent,
                              segment_seed(s.seed, plan.index), s.steps, s.sampler_name, s.scheduler,
                              part=(plan.index, self.count))
        return out["samples"]


def segment_inputs() -> dict:
    """The segment and sampling widgets of the Long Video and Dub samplers (official defaults), in order."""
    return {
        "segment_frames": ("INT", {"default": 81, "min": 5, "max": 1001, "step": 4,
                                   "tooltip": "Most frames one segment samples (4k+1; 81 as trained). Memory and "
                                              "time per segment grow with it; the number of segments does not "
                                              "change memory."}),
        "motion_frames": ("INT", {"default": 1, "min": 1, "max": 33, "step": 4,
                                  "tooltip": "Frames each segment holds from the end of the one before (4j+1): 1 the "
                                             "last frame (Wan's I2V as trained); 5 or 9 give more motion context "
                                             "(InfiniteTalk style) at the cost of fewer new frames per segment."}),
        "audio_scale": ("FLOAT", {"default": 1.0, "min": 0.0, "max": 3.0, "step": 0.05,
                                  "tooltip": "lambda_1: strength of the audio attention (1 as trained)."}),
        "seed": ("INT", {"default": 1111, "min": 0, "max": 0xFFFFFFFFFFFFFFFF, "control_after_generate": True,
                         "tooltip": "Noise seed of the first segment; segment i uses seed + i (official 1111)."}),
        "steps": ("INT", {"default": 30, "min": 1, "max": 200, "tooltip": "Sampling steps per segment (official 30)."}),
        **sampling.guidance_inputs(),
        "sampler_name": (sampling.sampler_names(), {"default": sampling.OFFICIAL_SAMPLER,
                                                    "tooltip": "Solver (euler: the official sampler)."}),
        "scheduler": (sampling.scheduler_names(), {"default": "simple",
                                                   "tooltip": "Sigma schedule (simple: the official one)."}),
        "shift": ("FLOAT", {"default": 5.0, "min": 0.0, "max": 100.0, "step": 0.1,
                            "tooltip": "Flow-matching shift (official 5 at 512 px). 0 keeps the model's own."}),
    }


class FantasyTalkingLongVideoSampler:
    DESCRIPTION = ("A recording of any length becomes one talking video: the frames are made in segments of "
                   "segment_frames (81 as Wan2.1 was trained), each starting from the end of the one before "
                   "(motion_frames held frames), each with the audio windows of its own frames from the one encoding, "
                   "all with the portrait's identity (CLIP vision output) and colours. Connect FantasyTalking Audio "
                   "Encode with max_frames 0. Outputs the frames and the audio cut to them, for CreateVideo.")
    NAME = "FantasyTalking Long Video Sampler"  # what its messages call it (the (to file) node: its own name)
    RETURN_TYPES = ("IMAGE", "AUDIO")
    RETURN_NAMES = ("images", "audio")
    OUTPUT_TOOLTIPS = ("Every frame of the video (the whole recording), for CreateVideo. " + IMAGE_MEMORY,
                       "The recording cut to the frames, for CreateVideo.")
    FUNCTION = "sample"
    CATEGORY = CATEGORY

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "model": ("MODEL", {"tooltip": "Wan2.1-I2V-14B from UNETLoader (or after LoRA loaders); not from "
                                           "FantasyTalking Apply: this node attaches the adapters itself."}),
            "fantasytalking_model": ("FANTASYTALKING_MODEL", {"tooltip": "From FantasyTalking Model Loader."}),
            "positive": ("CONDITIONING", {"tooltip": "Prompt (CLIPTextEncode)."}),
            "negative": ("CONDITIONING", {"tooltip": "Negative prompt (CLIPTextEncode)."}),
            "vae": ("VAE", {"tooltip": "Wan2.1 VAE."}),
            "start_image": ("IMAGE", {"tooltip": "The portrait: the first frame, and the colours every segment is "
                                                 "eased back to."}),
            "width": ("INT", {"default": 512, "min": 16, "max": 4096, "step": 16,
                              "tooltip": "Video width (multiple of 16); the portrait is centre-cut and resized to it."}),
            "height": ("INT", {"default": 512, "min": 16, "max": 4096, "step": 16, "tooltip": "Video height."}),
            **segment_inputs(),
            "color_match": ("BOOLEAN", {"default": True,
                                        "tooltip": "Match each later segment to the frames it holds and ease it to the "
                                                   "portrait's colours, so colours neither jump at seams nor drift."}),
        }, "optional": {
            "audio_features": ("FANTASYTALKING_AUDIO", {"tooltip": "From FantasyTalking Audio Encode with max_frames 0 "
                                                                   "(the whole recording, encoded once); or connect "
                                                                   "speakers."}),
            "audio": ("AUDIO", {"tooltip": "The same recording (Load Audio), cut here to the video's frames (with "
                                           "speakers: their mix, FantasyTalking Speakers' audio)."}),
            "clip_vision_output": ("CLIP_VISION_OUTPUT", {"tooltip": "CLIPVisionEncode of the portrait (Wan2.1 I2V's "
                                                                     "image tokens; the same for every segment)."}),
            "face": ("FANTASYTALKING_FACE", {"tooltip": FACE_TOOLTIP}),
            "id_scale": ("FLOAT", {"default": 0.5, "min": 0.0, "max": 3.0, "step": 0.05,
                                   "tooltip": "lambda_2: strength of the identity attention (0.5 as trained)."}),
            "motion": ("FANTASYTALKING_MOTION", {"tooltip": MOTION_TOOLTIP + " Every segment gets it; held frames "
                                                            "stay exact."}),
            **sampling.optional_inputs(),
            "speakers": ("FANTASYTALKING_SPEAKERS", {"tooltip": "From FantasyTalking Speakers with max_frames 0: "
                                                                "several people, each voice driving only its own "
                                                                "region (instead of audio_features)."}),
        }}

    def sample(self, *args, **kwargs):
        video = self.video(*args, **kwargs)
        return (video.tensor(), video.audio)

    def video(self, model, fantasytalking_model, audio_features=None, audio=None, positive=None, negative=None,
              vae=None, start_image=None,
              width=512, height=512, segment_frames=81, motion_frames=1, audio_scale=1.0, seed=1111, steps=30,
              cfg_text=sampling.DEFAULTS.cfg_text, cfg_audio=sampling.DEFAULTS.cfg_audio,
              audio_guidance_start=sampling.DEFAULTS.audio_start, audio_guidance_end=sampling.DEFAULTS.audio_end,
              sampler_name=sampling.OFFICIAL_SAMPLER, scheduler="simple", shift=5.0, color_match=True,
              clip_vision_output=None, face=None, id_scale=0.5, motion=None,
              two_pass_shortcut=sampling.DEFAULTS.two_pass_shortcut, speakers=None) -> SegmentVideo:
        """The video these inputs make, segment by segment as its chunks are taken."""
        ft = fantasytalking_model
        one_source(audio_features, speakers, self.NAME)
        if audio is None:
            raise ValueError(f"{self.NAME} needs 'audio' for the video's sound: Load Audio's "
                             "recording, or FantasyTalking Speakers' audio (the mix)")
        feats = audio_features if speakers is None else speakers
        require_audio(ft)
        fps, total = feats.fps, feats.num_frames
        need, _ = plan_frames(feats.seconds, fps, 0, 0)  # the whole recording
        if total < need:
            raise ValueError(
                f"audio_features covers {total} frames ({total / fps:.2f} s) of the {feats.seconds:.2f} s recording: "
                f"set FantasyTalking Audio Encode's max_frames (and frames) to 0 so the whole recording becomes video. "
                f"To make part of it, cut the audio before Audio Encode.")
        if width % 16 or height % 16:
            raise ValueError(f"width and height must be multiples of 16 (Wan's VAE and patches), got {width}x{height}")
        plans = plan_segments(total, segment_frames, motion_frames)
        keep = min(total, output_frames(feats.seconds, fps))
        settings = SegmentSettings(audio_scale, seed, steps, Guidance(cfg_text, cfg_audio, audio_guidance_start,
                                                                      audio_guidance_end, two_pass_shortcut),
                                   sampler_name, scheduler, shift)
        step = SegmentSampler(self.NAME, model, ft, feats.features if speakers is None else
                              speakers, total, fps, len(plans),
                              positive, negative, vae, clip_vision_output, settings, face, id_scale, motion)
        portrait = fit_frames(start_image[:1].cpu(), width, height)  # [1, H, W, 3]
        log.info("FantasyTalking Long Video: %.2f s of audio -> %d frames at %g fps in %d segment(s) of up to %d frames",
                 feats.seconds, keep, fps, len(plans), segment_frames)
        chunks = run_segments(plans, portrait, lambda plan, held: decoded_frames(vae.decode(step(plan, held))), portrait,
                              color_match, keep=keep)
        return SegmentVideo(chunks, keep, fps, height, width, trim_comfy_audio(audio, keep / fps), len(plans))
