"""Audio for FantasyTalking: any audio in -> 16 kHz waveform -> per-latent-frame windows out.

Path: a file, a ComfyUI AUDIO or an array (`read_audio`, the one reader; files are decoded by
`video.decode_audio`, so every format PyAV reads works) -> mono float32 16 kHz (`prepare_waveform`)
-> cut to the clip of `frames.plan_frames`' count (`fit_to_frames`) -> normalised like
`Wav2Vec2FeatureExtractor` (`normalize_like_processor`) -> wav2vec2 (`encoders.wav2vec`) -> the
caller's audio projection -> `split_windows` -> [B, T_lat, L_win, C]. The window indices reproduce
the official code exactly: the released weights were trained on them. Long videos take the windows
of each segment's frames from one encoding (segments.segment_audio). Nothing here downloads anything.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import torch

from .frames import check_frames, latent_frames, seconds_for_frames, video_frames
from .video import decode_audio

SAMPLE_RATE = 16000

# ---------------------------------------------------------------------------------------- input


def _to_numpy(waveform: Any, name: str = "waveform") -> np.ndarray:
    if isinstance(waveform, torch.Tensor):
        t = waveform.detach().cpu()
        return (t.float() if t.dtype in (torch.float16, torch.bfloat16) else t).numpy()
    if isinstance(waveform, np.ndarray):
        return waveform
    raise TypeError(f"{name} must be a torch.Tensor or numpy.ndarray, got {type(waveform).__name__}")


def _pcm_to_float(x: np.ndarray) -> np.ndarray:
    """Integer PCM -> float64 in [-1, 1]; floats pass through as float64."""
    if x.dtype == np.uint8:
        return (x.astype(np.float64) - 128.0) / 128.0
    if x.dtype in (np.int8, np.int16, np.int32):
        return x.astype(np.float64) / float(2 ** (8 * x.dtype.itemsize - 1))
    if np.issubdtype(x.dtype, np.floating):
        return x.astype(np.float64)
    raise TypeError(f"waveform dtype {x.dtype} is not audio: use float, int16, int32, int8 or uint8 PCM")


def _check_rate(sample_rate: Any) -> int:
    try:
        sr = float(sample_rate)
    except (TypeError, ValueError):
        sr = float("nan")
    if not (math.isfinite(sr) and sr > 0 and sr == int(sr)):
        raise ValueError(f"sample_rate must be a positive integer in Hz, got {sample_rate!r}")
    return int(sr)


def _channels(waveform: Any, sample_rate: Any) -> tuple[np.ndarray, int]:
    """[T], [C, T] or [1, C, T] (ComfyUI AUDIO), torch or numpy, float or integer PCM -> float64
    [C, T] and the rate, checked: one item, samples present, channels first, all finite."""
    x = _pcm_to_float(_to_numpy(waveform))
    shape = tuple(x.shape)
    if x.ndim == 3:
        if shape[0] != 1:
            raise ValueError(f"waveform batch has {shape[0]} items (shape {shape}); one video takes "
                             "one audio: pass a single item, e.g. waveform[i:i+1]")
        x = x[0]
    elif x.ndim == 1:
        x = x[None]
    if x.ndim != 2:
        raise ValueError(f"waveform must be [T], [C, T] or [1, C, T], got shape {shape}")
    channels, samples = x.shape
    if channels == 0 or samples == 0:
        raise ValueError(f"audio has 0 samples: waveform shape {shape}; use a non-empty audio file")
    if channels > samples:
        raise ValueError(f"waveform shape {shape} has more channels ({channels}) than samples "
                         f"({samples}); is it [T, C]? transpose it to [C, T]")
    sr = _check_rate(sample_rate)
    bad = ~np.isfinite(x)
    if bad.any():
        ch, idx = np.argwhere(bad)[0]
        raise ValueError(f"audio has {int(bad.sum())} NaN/inf samples (first at channel {ch}, sample "
                         f"{idx}, {idx / sr:.3f} s); re-export or clean the audio")
    return x, sr


def prepare_waveform(waveform: Any, sample_rate: int) -> torch.Tensor:
    """Any audio -> float32 mono 16 kHz [T] on the CPU.

    Accepts torch or numpy shaped [T], [C, T] or [1, C, T] (ComfyUI AUDIO). Channels are downmixed
    by their mean (as `librosa.load(mono=True)` in the official code); integer PCM is scaled to
    [-1, 1]; other rates are resampled with a band-limited polyphase filter. Silence is valid.
    """
    x, sr = _channels(waveform, sample_rate)
    mono = x.mean(axis=0)
    if sr != SAMPLE_RATE:
        from scipy.signal import resample_poly

        g = math.gcd(SAMPLE_RATE, sr)
        mono = resample_poly(mono, SAMPLE_RATE // g, sr // g)
    return torch.from_numpy(np.ascontiguousarray(mono, dtype=np.float32))


@dataclass
class AudioTrack:
    """Audio as it came: `waveform` float32 [C, N] in [-1, 1] at its own `sample_rate` (the
    soundtrack a video keeps) and where it came from. `to_16k()` is what wav2vec2 takes."""

    waveform: torch.Tensor
    sample_rate: int
    source: str = ""
    offset: float = 0.0  # seconds from a video's first frame to the first sample (`video.decode_audio`)

    @property
    def seconds(self) -> float:
        return self.waveform.shape[-1] / self.sample_rate

    def to_16k(self, align_to_video: bool = False) -> torch.Tensor:
        """Mono 16 kHz float32 [T] (`prepare_waveform`). ``align_to_video``: sample 0 at the video's
        first frame (silence before a late start, the part before the first frame dropped)."""
        wave = prepare_waveform(self.waveform, self.sample_rate)
        shift = int(round(self.offset * SAMPLE_RATE)) if align_to_video else 0
        if shift > 0:
            wave = torch.cat([wave.new_zeros(shift), wave])
        elif shift < 0:
            wave = wave[-shift:]
        return wave


def read_audio(audio: Any, max_channels: int | None = None) -> AudioTrack:
    """The one audio reader. `audio` is a path (any file PyAV decodes: wav, flac, ogg, mp3,
    m4a/aac, opus, the audio track of a video), a ComfyUI AUDIO dict {"waveform": [1, C, T],
    "sample_rate": int}, a (waveform, sample_rate) pair ([T], [C, T] or [1, C, T], torch or numpy,
    float or integer PCM) or an AudioTrack. More channels than `max_channels` are downmixed to mono.
    Errors say what was wrong: no file, not audio, no audio stream, no samples, NaN, a batch."""
    if isinstance(audio, AudioTrack):
        track = audio
    elif isinstance(audio, (str, os.PathLike)):
        decoded = decode_audio(audio)
        x, sr = _channels(decoded.samples, decoded.sample_rate)
        track = AudioTrack(torch.from_numpy(x.astype(np.float32)), sr, str(Path(audio).expanduser()), decoded.offset)
    elif isinstance(audio, Mapping):
        if "waveform" not in audio or "sample_rate" not in audio:
            raise ValueError(f"expected a ComfyUI AUDIO dict with 'waveform' and 'sample_rate', got {sorted(audio)}")
        x, sr = _channels(audio["waveform"], audio["sample_rate"])
        track = AudioTrack(torch.from_numpy(x.astype(np.float32)), sr, "ComfyUI AUDIO")
    elif isinstance(audio, tuple) and len(audio) == 2:
        x, sr = _channels(*audio)
        track = AudioTrack(torch.from_numpy(x.astype(np.float32)), sr, "waveform")
    else:
        raise TypeError(f"audio must be a file path, a ComfyUI AUDIO dict, (waveform, sample_rate) or an "
                        f"AudioTrack, got {type(audio).__name__}")
    if max_channels is not None and track.waveform.shape[0] > max_channels:
        track = AudioTrack(track.waveform.mean(0, keepdim=True), track.sample_rate, track.source, track.offset)
    return track


def normalize_like_processor(wave: Any) -> torch.Tensor:
    """(x - mean) / sqrt(var + 1e-7) over the whole clip, float32: exactly what
    `Wav2Vec2FeatureExtractor(do_normalize=True)` does (numpy, population variance). Constant input
    (silence) gives zeros or tiny values, never NaN."""
    x = _to_numpy(wave, "wave").astype(np.float32)
    if x.ndim != 1 or x.size == 0:
        raise ValueError(f"wave must be a non-empty 1-D 16 kHz waveform, got shape {tuple(x.shape)}")
    return torch.from_numpy((x - x.mean()) / np.sqrt(x.var() + 1e-7))


# ------------------------------------------------------------------------------------ alignment


@dataclass
class FittedAudio:
    """A waveform cut (or padded) to a clip. action: trimmed | exact | shorter | padded."""

    waveform: torch.Tensor  # [T] float32 16 kHz
    action: str
    source_samples: int
    target_samples: int


def fit_to_frames(wave16k: torch.Tensor, num_frames: int, fps: float = 23, pad: bool = False) -> FittedAudio:
    """Cut audio to `int(num_frames / fps * 16000)` samples, as the official code does.

    Default: trim only; shorter audio is kept as is ("shorter"), and `split_windows` then spreads
    its tokens over all frames (official behaviour: `plan_frames` rounds up, so audio is
    usually slightly short). pad=True appends silence instead, keeping audio and video in time.
    Audio shorter than one latent frame (4 / fps s) without pad is an error."""
    num_frames = check_frames(num_frames)
    if not isinstance(wave16k, torch.Tensor) or wave16k.ndim != 1:
        raise ValueError("wave16k must be a 1-D tensor from prepare_waveform")
    target = int(seconds_for_frames(num_frames, fps) * SAMPLE_RATE)
    n = wave16k.numel()
    if n > target:
        return FittedAudio(wave16k[:target], "trimmed", n, target)
    if n == target:
        return FittedAudio(wave16k, "exact", n, target)
    if pad:
        return FittedAudio(torch.nn.functional.pad(wave16k, (0, target - n)), "padded", n, target)
    if n < int(4 / fps * SAMPLE_RATE):
        raise ValueError(f"audio is {n / SAMPLE_RATE:.3f} s, shorter than one latent frame "
                         f"({4 / fps:.3f} s at {fps} fps); use longer audio or pad=True")
    return FittedAudio(wave16k, "shorter", n, target)


def window_ranges(num_tokens: int, num_frames: int) -> list[tuple[int, int]]:
    """Official per-latent-frame token ranges, inclusive, before `expand_length` widening.

    Latent frame 0 is video frame 0; latent frame i >= 1 covers video frames 4(i-1)+1 .. 4i and is
    centred on them. Example: 173 tokens, 81 frames -> [(-7, 1), (1, 9), (9, 17), ...]."""
    num_frames = check_frames(num_frames)
    if num_tokens < 1:
        raise ValueError(f"num_tokens must be >= 1, got {num_tokens}")
    tokens_per_frame = num_tokens / num_frames
    half = int(tokens_per_frame * 4 / 2)
    centres = [0]
    for i in range(1, latent_frames(num_frames)):
        start = tokens_per_frame * video_frames(i)  # latent frame i: video frames 4(i-1)+1 .. 4i
        end = tokens_per_frame * video_frames(i + 1)
        centres.append(int((start + end) / 2) - 1)
    ranges = [(c - half, c + half) for c in centres]
    ranges[0] = (-(half * 2 - ranges[1][0]), ranges[1][0])
    return ranges


@dataclass
class AudioWindows:
    """Per-latent-frame audio for frame-level attention: video tokens of latent frame t attend to
    `tokens[:, t, :k_lens[t]]`; rows from `k_lens[t]` on are zero padding (front padding included)."""

    tokens: torch.Tensor  # [B, T_lat, L_win, C]
    k_lens: torch.Tensor  # [T_lat] long, on the CPU
    ranges: list[tuple[int, int]]  # inclusive token ranges after widening


def widened_ranges(num_tokens: int, num_frames: int, expand_length: int = 4) -> list[tuple[int, int]]:
    """`window_ranges` widened by `expand_length` tokens on each side (inclusive, may pass either end)."""
    if expand_length < 0:
        raise ValueError(f"expand_length must be >= 0, got {expand_length}")
    return [(s - expand_length, e + expand_length) for s, e in window_ranges(num_tokens, num_frames)]


def gather_windows(tokens: torch.Tensor, ranges: list[tuple[int, int]], length: int, offset: int = 0) -> AudioWindows:
    """The windows `ranges` (inclusive positions in a sequence of `length` tokens) cut from `tokens`
    [B, L', C], which holds positions offset .. offset + L' - 1 of that sequence. As the official
    `split_tensor_with_padding`: the part inside 0 .. length-1 first, zeros after it, `k_lens` the
    true lengths. A window wholly past the last token gets that token alone (k_len 1): only frames
    after the end of the recording can have one (see segments.segment_audio)."""
    starts, lens = [], []
    for s, e in ranges:
        lo, k = max(s, 0), min(e, length - 1) - max(s, 0) + 1
        if k < 1:
            lo, k = (length - 1 if s > length - 1 else 0), 1
        starts.append(lo)
        lens.append(k)
    width = ranges[0][1] - ranges[0][0] + 1  # equal for every window by construction
    if min(starts) < offset or max(s + k for s, k in zip(starts, lens)) > offset + tokens.shape[1]:
        raise ValueError(f"tokens hold positions {offset}..{offset + tokens.shape[1] - 1}, the windows need "
                         f"{min(starts)}..{max(s + k for s, k in zip(starts, lens)) - 1}")
    k_lens = torch.tensor(lens, dtype=torch.long)
    pos = torch.arange(width)
    index = (torch.tensor(starts)[:, None] - offset + pos[None, :]).clamp(max=tokens.shape[1] - 1)  # [T_lat, W]
    keep = (pos[None, :] < k_lens[:, None]).to(tokens.device)
    out = tokens[:, index.to(tokens.device)]  # [B, T_lat, W, C]
    out = torch.where(keep[None, :, :, None], out, out.new_zeros(()))
    return AudioWindows(tokens=out, k_lens=k_lens, ranges=list(ranges))  # k_lens: host values, on the CPU


def split_windows(tokens: torch.Tensor, num_frames: int, expand_length: int = 4) -> AudioWindows:
    """[B, L, C] tokens (any C, e.g. projected 2048) -> `AudioWindows`, index for index as the
    official `split_tensor_with_padding`: valid part first, all padding zeros at the end."""
    if not isinstance(tokens, torch.Tensor) or tokens.ndim != 3:
        desc = tuple(tokens.shape) if isinstance(tokens, torch.Tensor) else type(tokens).__name__
        raise ValueError(f"tokens must be [B, L, C], got {desc}")
    length = tokens.shape[1]
    num_frames = check_frames(num_frames)
    if length < 1:
        raise ValueError(f"audio too short for {num_frames} frames: 0 tokens")
    ranges = widened_ranges(length, num_frames, expand_length)
    for t, (s, e) in enumerate(ranges):
        if min(e, length - 1) < max(s, 0):
            raise ValueError(f"audio too short for {num_frames} frames: {length} tokens leave latent "
                             f"frame {t} (tokens {ranges[t]}) without audio; use longer audio or fewer frames")
    return gather_windows(tokens, ranges, length)
