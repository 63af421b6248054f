"""Several people talking in one video: the speakers' audio and their regions (fantasytalking_core/speakers.py).

FantasyTalking Speaker Regions finds the faces on the portrait (or checks the masks you give) and
shows them numbered; FantasyTalking Speakers lays up to four recordings on one timeline, encodes
each (a silent speaker hears wav2vec2's features of real silence) and gives FANTASYTALKING_SPEAKERS
to FantasyTalking Apply, the Long Video Sampler or the Dub Sampler, which route each voice to its own
region.
"""

from __future__ import annotations

import logging

import torch

from fantasytalking_core.speakers import MAX_SPEAKERS, TIMINGS, Timing, arrange_tracks, encode_speakers, find_regions, \
    given_regions

from . import _host
from .audio import FantasyTalkingAudioEncode
from .contracts import WHOLE_IN_COMFYUI, trim_comfy_audio

log = logging.getLogger("FantasyTalking")
CATEGORY = "FantasyTalking"


def _masks(kwargs: dict, count: int) -> list[torch.Tensor]:
    """The connected mask_1..mask_4 in order (a missing one in between is named)."""
    given = [kwargs.get(f"mask_{k}") for k in range(1, MAX_SPEAKERS + 1)]
    last = max((k for k, m in enumerate(given) if m is not None), default=-1)
    gaps = [f"mask_{k + 1}" for k in range(last) if given[k] is None]
    if gaps:
        raise ValueError(f"connect {', '.join(gaps)} too: masks are speakers 1, 2, ... in order")
    return [m[0] if m.dim() == 3 else m for m in given[:last + 1]]


class FantasyTalkingSpeakerRegions:
    DESCRIPTION = ("Each speaker's part of the picture, for FantasyTalking Speakers: the faces found on the portrait, "
                   "numbered left to right, grown to head and shoulders, made disjoint and feathered; or your own "
                   "masks (mask_1 for speaker 1, ...: mask editor, core's mask nodes, a segmentation node), checked. "
                   "The preview shows each region with its number.")
    RETURN_TYPES = ("MASK", "IMAGE")
    RETURN_NAMES = ("regions", "preview")
    OUTPUT_TOOLTIPS = ("One mask per speaker (a batch), for FantasyTalking Speakers' regions.",
                       "The portrait with each region tinted and numbered.")
    FUNCTION = "regions"
    CATEGORY = CATEGORY

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "image": ("IMAGE", {"tooltip": "The portrait with every speaker in it (the start image)."}),
            "speakers": ("INT", {"default": 2, "min": 1, "max": MAX_SPEAKERS,
                                 "tooltip": "How many people speak; with no masks, that many faces are found."}),
            "grow": ("FLOAT", {"default": 1.0, "min": 0.5, "max": 2.0, "step": 0.05,
                               "tooltip": "Size of the automatic head-and-shoulders region (1: about 2.6 face widths "
                                          "across). Too large and a voice moves a neighbour's mouth too."}),
            "feather": ("INT", {"default": 8, "min": 0, "max": 64,
                                "tooltip": "Soft edge of the automatic regions in pixels."}),
        }, "optional": {f"mask_{k}": ("MASK", {"tooltip": f"Speaker {k}'s region (white), at the portrait's size; "
                                                          f"leave all empty for automatic regions."})
                        for k in range(1, MAX_SPEAKERS + 1)}}

    def regions(self, image, speakers: int = 2, grow: float = 1.0, feather: int = 8, **masks):
        picture = image[0]
        given = _masks(masks, speakers)
        if given:
            found = given_regions(given, speakers, picture.shape[1], picture.shape[0])
        else:
            found = find_regions(picture, speakers, grow, feather)
        log.info("FantasyTalking Speaker Regions: %s", found.source)
        preview = torch.from_numpy(found.preview(picture)).float()[None] / 255.0
        return (found.masks.to(_host.intermediate_device()), preview)


class FantasyTalkingSpeakers:
    DESCRIPTION = ("Up to four voices on one timeline, each driving only its own region of the picture: together "
                   "(overlaps allowed), in turns (audio_1, then audio_2, ... with a gap), a stereo recording split by "
                   "channel, or one recording with who speaks when. A silent speaker hears wav2vec2's features of real "
                   "silence. Connect speakers to FantasyTalking Apply (or the Long Video or Dub Sampler), num_frames to "
                   "the video length, audio (the mix) to CreateVideo.")
    RETURN_TYPES = ("FANTASYTALKING_SPEAKERS", "INT", "AUDIO")
    RETURN_NAMES = ("speakers", "num_frames", "audio")
    OUTPUT_TOOLTIPS = ("For FantasyTalking Apply or the Long Video Sampler (instead of audio_features), or the Dub "
                       "Sampler (instead of audio).",
                       "Video frames (4k+1) for the latent length.",
                       "The mix of the voices cut to the video, for CreateVideo.")
    FUNCTION = "encode"
    CATEGORY = CATEGORY

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "wav2vec": ("FANTASYTALKING_WAV2VEC", {"tooltip": "From FantasyTalking Wav2Vec Loader."}),
            "audio_1": ("AUDIO", {"tooltip": "Speaker 1's recording (or the one recording for channels and schedule)."}),
            "timing": (list(TIMINGS), {"default": "turns",
                                       "tooltip": "together: every recording from the start (overlaps allowed); turns: "
                                                  "audio_1, then audio_2, ...; channels: audio_1 is stereo, channel 1 "
                                                  "is speaker 1; schedule: audio_1 is one recording, split by the "
                                                  "schedule."}),
            "gap": ("FLOAT", {"default": 0.0, "min": 0.0, "max": 10.0, "step": 0.05,
                              "tooltip": "Seconds of silence between turns (timing turns)."}),
            "schedule": ("STRING", {"default": "0-3.2:1, 3.2-7.5:2",
                                    "tooltip": "Who speaks when (timing schedule): start-end:speaker in seconds."}),
            **{k: FantasyTalkingAudioEncode.INPUT_TYPES()["required"][k] for k in ("fps", "frames", "max_frames")},
        }, "optional": {
            **{f"audio_{k}": ("AUDIO", {"tooltip": f"Speaker {k}'s recording (timing together or turns)."})
               for k in range(2, MAX_SPEAKERS + 1)},
            "regions": ("MASK", {"tooltip": "One mask per speaker, from FantasyTalking Speaker Regions (needed for "
                                            "more than one speaker)."}),
            "region_guidance": ("BOOLEAN", {"default": False,
                                            "tooltip": "Apply cfg_audio only inside the speakers' regions, so motion "
                                                       "leaking elsewhere is not amplified."}),
        }}

    def encode(self, wav2vec, audio_1, timing="turns", gap=0.0, schedule="", fps=23.0, frames=0, max_frames=81,
               audio_2=None, audio_3=None, audio_4=None, regions=None, region_guidance=False):
        _host.check_interrupt()
        audios = [a for a in (audio_1, audio_2, audio_3, audio_4) if a is not None]
        tracks = arrange_tracks(audios, Timing(timing, gap, schedule if timing == "schedule" else ""))
        masks = None if regions is None else list(regions if regions.dim() == 3 else regions[None])
        speakers = encode_speakers(tracks, wav2vec, masks, fps, frames, max_frames, region_guidance, WHOLE_IN_COMFYUI)
        if speakers.cut:
            log.warning("FantasyTalking Speakers: %s", speakers.cut)
        log.info("FantasyTalking Speakers: %s", "; ".join(speakers.notes))
        sound = tracks.soundtrack
        mix = trim_comfy_audio({"waveform": sound.waveform[None], "sample_rate": sound.sample_rate},
                               speakers.num_frames / fps)
        return (speakers, speakers.num_frames, mix)
