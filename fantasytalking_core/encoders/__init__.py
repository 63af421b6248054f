"""The encoders around the DiT, loaded from local files only (nothing is ever downloaded):

- `encoders.wan`: Wan2.1's own encoders, video VAE, UMT5 text encoder, CLIP image encoder;
- `encoders.wav2vec`: wav2vec2-base, FantasyTalking's audio encoder.

Import from here (`from fantasytalking_core.encoders import load_vae, load_wav2vec`).
"""

from .wan import (CLIP_MEAN, CLIP_STD, REPACKAGED, WAN_REPO, WHERE_CLIP, WHERE_TEXT, WHERE_VAE, ClipImageEncoder,
                  ImageEncoder, TextEncoder, UMT5TextEncoder, VideoVAE, WanVAE, clean_prompt, hf_tokenize,
                  load_clip_vision, load_text_encoder, load_vae, pad_context, require)
from .wav2vec import (WAV2VEC_DIM, WAV2VEC_REPO, WHERE_WAV2VEC, Wav2VecEncoder, from_comfy_encoder_output, load_wav2vec,
                      timeline_tokens, wav2vec_num_tokens)

__all__ = ["CLIP_MEAN", "CLIP_STD", "REPACKAGED", "WAN_REPO", "WHERE_CLIP", "WHERE_TEXT", "WHERE_VAE",
           "ClipImageEncoder", "ImageEncoder", "TextEncoder", "UMT5TextEncoder", "VideoVAE", "WanVAE", "clean_prompt",
           "hf_tokenize", "load_clip_vision", "load_text_encoder", "load_vae", "pad_context", "require",
           "WAV2VEC_DIM", "WAV2VEC_REPO", "WHERE_WAV2VEC", "Wav2VecEncoder", "from_comfy_encoder_output", "load_wav2vec",
           "timeline_tokens", "wav2vec_num_tokens"]
