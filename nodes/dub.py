"""Dubbing in ComfyUI: FantasyTalking Dub Mask (the region to regenerate, per frame) and FantasyTalking
Dub Sampler (new speech in, only that region regenerated, everything else kept).

Core has the rest: LoadVideo + GetVideoComponents give the frames, the source's frame rate and
sound; ImageFromBatch + CLIPVisionEncode the first frame's CLIP tokens; CreateVideo + SaveVideo the
file. The sampler runs the segment loop of fantasytalking_core/dub.py (core graphs have no loops),
each segment the way core inpaints: the source frames VAE-encoded as the LATENT with a
``noise_mask`` (core's SetLatentNoiseMask idiom), so core's sampler holds the unmasked latent to the
source at every step (for flow models: the source noised to the current sigma with the run's noise)
and FantasyTalking's guider generates the masked region with the new audio. With ``speakers``
(FantasyTalking Speakers) in place of ``audio``, each new voice drives only its own region
(fantasytalking_core/dub_speakers.py); the Dub Mask's ``faces`` regenerates every speaker's mouth.
docs/dubbing.md.
"""

from __future__ import annotations

import logging
from dataclasses import replace

import torch

from fantasytalking_core.audio import read_audio
from fantasytalking_core.dub import FIT_MODES, MODEL_FPS, DubJob, dub_features, mouth_masks, plan_dub
from fantasytalking_core.dub_speakers import DubSpeakers, check_region_size
from fantasytalking_core.sampling import Guidance, composite
from fantasytalking_core.segments import SegmentPlan
from fantasytalking_core.speakers import MAX_SPEAKERS, SpeakerAudio, full_frame

from . import _host, sampling
from .apply import MOTION_TOOLTIP, one_source, require_audio
from .contracts import trim_comfy_audio
from .lipmask import tinted
from .long_video import IMAGE_MEMORY, SegmentSampler, SegmentSettings, SegmentVideo, decoded_frames, segment_inputs

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
        }, "optional": {
            "faces": ("INT", {"default": 1, "min": 1, "max": MAX_SPEAKERS, "step": 1,
                              "tooltip": "How many faces' mouths to regenerate: 1 the most prominent face; for a dub "
                                         "with several speakers, the number of speakers (every speaker's mouth)."}),
        }}

    def mask(self, images: torch.Tensor, dilation: int = 8, jaw: bool = True, feather: int = 8, faces: int = 1):
        _host.check_interrupt()
        result = mouth_masks(images, dilation, jaw, feather, backend=_host.mediapipe_backend(), faces=faces)
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
    NAME = "FantasyTalking Dub Sampler"  # what its messages call it (the (to file) node: its own name)
    RETURN_TYPES = ("IMAGE", "AUDIO")
    RETURN_NAMES = ("images", "audio")
    OUTPUT_TOOLTIPS = ("The dubbed frames, the source's size and frame rate. " + IMAGE_MEMORY,
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
            "audio": ("AUDIO", {"tooltip": "The new speech (Load Audio); or connect speakers."}),
            "clip_vision_output": ("CLIP_VISION_OUTPUT", {"tooltip": "CLIPVisionEncode of the source's first frame "
                                                                     "(ImageFromBatch index 0)."}),
            "paste_back": ("BOOLEAN", {"default": True,
                                       "tooltip": "Outside the mask keep the source's own pixels. Off: the model's "
                                                  "frames everywhere (the VAE round trip outside the mask)."}),
            **sampling.optional_inputs(),
            "motion": ("FANTASYTALKING_MOTION", {"tooltip": "Off unless connected: a dub keeps the source's motion. "
                                                            + MOTION_TOOLTIP}),
            "speakers": ("FANTASYTALKING_SPEAKERS", {"tooltip": "From FantasyTalking Speakers: several people, each new "
                                                                "voice driving only its own region (instead of audio; "
                                                                "regions drawn on a frame of this video, which hold for "
                                                                "every frame). The new sound is their mix. Make the Dub "
                                                                "Mask with faces = the number of speakers."}),
        }}

    def dub(self, *args, **kwargs):
        video = self.video(*args, **kwargs)
        return (video.tensor(), video.audio)

    def video(self, model, fantasytalking_model, wav2vec, audio=None, positive=None, negative=None, vae=None,
              images=None, fps=25.0, mask=None, fit="cut", size=512, segment_frames=81, motion_frames=1,
              audio_scale=1.0, seed=1111, steps=30, cfg_text=sampling.DEFAULTS.cfg_text,
              cfg_audio=sampling.DEFAULTS.cfg_audio, audio_guidance_start=sampling.DEFAULTS.audio_start,
              audio_guidance_end=sampling.DEFAULTS.audio_end, sampler_name=sampling.OFFICIAL_SAMPLER,
              scheduler="simple", shift=5.0, clip_vision_output=None, paste_back=True,
              two_pass_shortcut=sampling.DEFAULTS.two_pass_shortcut, motion=None, speakers=None) -> SegmentVideo:
        """The dubbed video these inputs make, segment by segment as its chunks are taken."""
        ft = fantasytalking_model
        require_audio(ft)
        one_source(audio, speakers, self.NAME, "audio (Load Audio)")
        if mask.ndim == 2:
            mask = mask[None]
        if mask.shape[0] == 1 and images.shape[0] > 1:  # one mask for every frame, as core's mask nodes allow
            mask = mask.expand(images.shape[0], -1, -1)
        voices = None if speakers is None else speaker_voices(speakers, images.shape[2], images.shape[1])
        if voices is None:
            new_audio = read_audio(audio).to_16k()
            seconds = new_audio.numel() / 16000
        else:
            new_audio, seconds, mix = voices, voices.tracks.seconds, voices.tracks.soundtrack
            audio = {"waveform": mix.waveform[None], "sample_rate": mix.sample_rate}  # the new sound: the mix
        plan = plan_dub(images.shape[0], float(fps), seconds, fit, segment_frames, motion_frames)
        job = DubJob(images.cpu(), mask.cpu(), plan, size, paste_back)
        log.info("FantasyTalking %s", plan.describe())
        for note in plan.notes:
            log.warning("FantasyTalking Dub: %s", note)
        settings = SegmentSettings(audio_scale, seed, steps, Guidance(cfg_text, cfg_audio, audio_guidance_start,
                                                                      audio_guidance_end, two_pass_shortcut),
                                   sampler_name, scheduler, shift)
        with torch.no_grad():
            features = dub_features(wav2vec, new_audio, plan).float().cpu()
        step = SegmentSampler(self.NAME, model, ft,
                              features if voices is None else replace(speakers, features=features), plan.generated,
                              MODEL_FPS, len(plan.plans), positive, negative, vae, clip_vision_output, settings,
                              motion=motion)

        def sample_segment(seg: SegmentPlan, held: torch.Tensor, source: torch.Tensor,
                           latent_mask: torch.Tensor) -> torch.Tensor:
            src = vae.encode(source).to(_host.intermediate_device())  # [1, 16, T_lat, h, w]
            keep = latent_mask[None, None].to(src)  # latent-sized: core's reshape leaves it as it is
            regions = None if voices is None else voices.segment(job.source_index(seg), job.width, job.height)
            samples = step(seg, held, {"samples": src, "noise_mask": keep}, regions)
            return decoded_frames(vae.decode(composite(samples.to(src), src, keep)))  # exactly the source outside

        return SegmentVideo(job.frames(sample_segment), plan.frames, float(fps), images.shape[1], images.shape[2],
                            trim_comfy_audio(audio, plan.seconds), len(plan.plans))


def speaker_voices(speakers: SpeakerAudio, width: int, height: int) -> DubSpeakers:
    """FantasyTalking Speakers' voices for a dub of a ``width x height`` video: their whole tracks (the dub fits
    and encodes them itself) and their regions, which must be drawn at the video's size (one full-frame
    speaker fits any) and hold for every frame."""
    if speakers.timeline is None:
        raise ValueError("the Dub Sampler's speakers need their recordings: connect FantasyTalking Speakers' speakers "
                         "output")
    regions = full_frame(width, height) if speakers.regions.whole else speakers.regions
    check_region_size(regions.size, width, height)
    return DubSpeakers(speakers.timeline, regions, None, speakers.region_guidance)
