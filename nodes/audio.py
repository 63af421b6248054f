"""Audio: a ComfyUI AUDIO (or core's audio-encoder output) -> FantasyTalking's audio features."""

from __future__ import annotations

import logging

from fantasytalking_core.encoders import from_comfy_encoder_output

from . import _host
from .contracts import encode_comfy_audio, from_encoder_output

log = logging.getLogger("FantasyTalking")

CATEGORY = "FantasyTalking"


class FantasyTalkingAudioEncode:
    DESCRIPTION = ("Encodes the driving audio with wav2vec2 for FantasyTalking and decides the video length. "
                   "frames 0 follows the audio (the official rule, 4k+1 frames at fps), capped at max_frames. "
                   "Connect num_frames to the latent length (e.g. WanImageToVideo length) and the trimmed audio "
                   "to CreateVideo, so picture and sound stay in step.")
    RETURN_TYPES = ("FANTASYTALKING_AUDIO", "INT", "AUDIO")
    RETURN_NAMES = ("audio_features", "num_frames", "audio")
    OUTPUT_TOOLTIPS = ("wav2vec2 features for FantasyTalking Apply.",
                       "Video frames (4k+1) for the latent length.",
                       "The audio cut to the video's duration, for CreateVideo.")
    FUNCTION = "encode"
    CATEGORY = CATEGORY

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "audio": ("AUDIO", {"tooltip": "The voice recording (e.g. from LoadAudio)."}),
                "fps": ("FLOAT", {"default": 23.0, "min": 1.0, "max": 60.0, "step": 0.01,
                                  "tooltip": "Video frame rate. FantasyTalking was trained at 23 fps."}),
                "frames": ("INT", {"default": 0, "min": 0, "max": 10001, "step": 1,
                                   "tooltip": "Video frames, 4k+1 (e.g. 81). 0 = follow the audio's length."}),
                "max_frames": ("INT", {"default": 81, "min": 0, "max": 10001, "step": 1,
                                       "tooltip": "Cap when frames is 0 (81 = 3.5 s at 23 fps, as trained). "
                                                  "0 = no cap: the whole recording (for FantasyTalking Long Video "
                                                  "Sampler, which makes it in segments; one pass of a long video "
                                                  "needs much memory)."}),
            },
            "optional": {
                "wav2vec": ("FANTASYTALKING_WAV2VEC", {"tooltip": "From FantasyTalking Wav2Vec Loader: the exact "
                                                                 "features the released weights were trained on."}),
                "audio_encoder_output": ("AUDIO_ENCODER_OUTPUT", {
                    "tooltip": "Instead of wav2vec: core's AudioEncoderEncode output of wav2vec2-base (core does not "
                               "normalise the audio, so lip sync can be a little weaker)."}),
            },
        }

    def encode(self, audio, fps: float = 23.0, frames: int = 0, max_frames: int = 81, wav2vec=None,
               audio_encoder_output=None):
        _host.check_interrupt()
        if wav2vec is not None:
            features, trimmed = encode_comfy_audio(audio, wav2vec, fps, frames, max_frames)
        elif audio_encoder_output is not None:
            feats = from_comfy_encoder_output(audio_encoder_output)
            features, trimmed = from_encoder_output(feats, audio, fps, frames, max_frames)
        else:
            raise ValueError("FantasyTalking Audio Encode needs an encoder: connect 'wav2vec' (FantasyTalking Wav2Vec "
                             "Loader) or 'audio_encoder_output' (core AudioEncoderEncode with wav2vec2-base).")
        if features.cut:  # never a silently shorter video
            log.warning("FantasyTalking Audio Encode: %s", features.cut)
        return (features, features.num_frames, trimmed)
