"""The values that travel between FantasyTalking nodes (``FANTASYTALKING_*`` types in ComfyUI),
and the ComfyUI AUDIO helpers that make them.

Plain dataclasses over core values, so the node layer stays thin; the core never sees them (it
takes tensors and its own configs). Scripts that drive a real host import them from the pack as the
host loaded it. Each one says what it carries and why; tensors are float32 on the CPU unless noted.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn as nn

from fantasytalking_core.adapters.registry import ADAPTERS
from fantasytalking_core.audio import SAMPLE_RATE, fit_to_frames, read_audio
from fantasytalking_core.checkpoints import load_adapters
from fantasytalking_core.frames import cut_note, plan_frames
from fantasytalking_core.motion import MotionMeasurement, MotionNormalization

# how a ComfyUI graph makes all of a recording that Audio Encode's max_frames cut
WHOLE_IN_COMFYUI = "max_frames 0 and FantasyTalking Long Video Sampler, template 03_long_audio, make the whole recording"


@dataclass(eq=False)
class FantasyTalkingModel:
    """FANTASYTALKING_MODEL: the adapter modules found in one file, and where they came from.

    ``adapters`` maps registry names (adapters.registry) to modules, read as ``model.audio``,
    ``model.identity``, ... (None when the file has none). ``audio`` is always there for the
    released weights; ``identity`` and ``motion`` only in files trained with this pack.
    ``normalization`` maps measured motion to omega (stored with trained motion weights so training
    and inference agree)."""

    adapters: dict[str, nn.Module]
    normalization: MotionNormalization | None = None
    source: str = ""
    extra: dict = field(default_factory=dict)
    patcher: Any = None  # set by the host: ComfyUI's ModelPatcher over these modules, for offloading

    def __getattr__(self, name: str) -> nn.Module | None:  # one attribute per registry entry
        if name in ADAPTERS:
            return self.__dict__.get("adapters", {}).get(name)
        raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")

    def modules(self) -> dict[str, nn.Module]:
        return {k: self.adapters[k] for k in ADAPTERS if k in self.adapters}

    def describe(self) -> str:
        parts = [f"{k} ({sum(p.numel() for p in m.parameters()) / 1e6:.1f}M params)" for k, m in self.modules().items()]
        return f"{Path(self.source).name}: " + ", ".join(parts)


def load_fantasytalking_model(path: str | os.PathLike, dtype: torch.dtype = torch.float32) -> FantasyTalkingModel:
    """Any adapter file the pack reads (official .ckpt, its safetensors repackagings, ours)."""
    modules, extra = load_adapters(path)
    norm = extra.get("motion_normalization")
    for m in modules.values():
        m.to(dtype).eval().requires_grad_(False)
    return FantasyTalkingModel(
        modules, normalization=MotionNormalization.from_dict(norm) if norm else None, source=str(path), extra=extra,
    )


@dataclass
class AudioFeatures:
    """FANTASYTALKING_AUDIO: wav2vec2 features of the audio that drives one video.

    ``features [1, L, 768]`` at 50 per second, for exactly ``num_frames`` video frames at ``fps``
    (the audio was cut to that duration first, as the official code does). The projection and the
    per-latent-frame windows come later, from the adapter weights, in FantasyTalkingApply."""

    features: torch.Tensor
    num_frames: int
    fps: float
    seconds: float
    encoder: str
    notes: list[str] = field(default_factory=list)
    cut: str = ""  # what max_frames left out of the recording ("" when nothing)


def trim_comfy_audio(audio: dict, seconds: float) -> dict:
    """A ComfyUI AUDIO cut (or silence-padded) to ``seconds`` at its own sample rate, for muxing."""
    wave, rate = audio["waveform"], int(audio["sample_rate"])
    n = int(round(seconds * rate))
    if wave.shape[-1] >= n:
        wave = wave[..., :n]
    else:
        wave = torch.nn.functional.pad(wave, (0, n - wave.shape[-1]))
    return {"waveform": wave.contiguous(), "sample_rate": rate}


def encode_comfy_audio(audio: dict, encoder: Any, fps: float, frames: int, max_frames: int) -> tuple[AudioFeatures, dict]:
    """ComfyUI AUDIO + a Wav2VecEncoder -> (FANTASYTALKING_AUDIO, the soundtrack cut to the video)."""
    wave16k = read_audio(audio).to_16k()
    seconds = wave16k.numel() / SAMPLE_RATE
    num_frames, how = plan_frames(seconds, fps, frames, max_frames)
    fitted = fit_to_frames(wave16k, num_frames, fps)
    features = encoder.encode(fitted.waveform).float().cpu()
    result = AudioFeatures(features, num_frames, fps, seconds, "wav2vec2 (FantasyTalking loader)",
                           [f"{num_frames} frames ({how}); audio {seconds:.2f} s, {fitted.action}"],
                           cut_note(seconds, num_frames, fps, max_frames, how, WHOLE_IN_COMFYUI))
    return result, trim_comfy_audio(audio, num_frames / fps)


def from_encoder_output(features: torch.Tensor, audio: dict | None, fps: float, frames: int,
                        max_frames: int) -> tuple[AudioFeatures, dict | None]:
    """Core's AUDIO_ENCODER_OUTPUT features [1, L, 768] (50/s) -> FANTASYTALKING_AUDIO, cut like
    the official code cuts the waveform: to ``num_frames / fps`` seconds of tokens."""
    seconds = features.shape[1] / 50.0
    num_frames, how = plan_frames(seconds, fps, frames, max_frames)
    keep = min(features.shape[1], max(1, int(num_frames / fps * 50)))
    out = AudioFeatures(features[:, :keep].float().cpu(), num_frames, fps, seconds,
                        "ComfyUI audio encoder (not normalised)", [f"{num_frames} frames ({how})"],
                        cut_note(seconds, num_frames, fps, max_frames, how, WHOLE_IN_COMFYUI))
    return out, (trim_comfy_audio(audio, num_frames / fps) if audio is not None else None)


@dataclass
class FaceReference:
    """FANTASYTALKING_FACE: the reference face. ``embedding [512]`` ArcFace (None without an
    insightface pack: then the identity adapter cannot run), the crop and how it was found."""

    embedding: np.ndarray | None
    crop: np.ndarray
    box: tuple[float, float, float, float]
    note: str = ""


@dataclass
class MotionIntensity:
    """FANTASYTALKING_MOTION: omega_l (face) and omega_b (body) in [0, 1], and where they came from."""

    measurement: MotionMeasurement

    def tensor(self) -> torch.Tensor:
        return self.measurement.to_tensor(1)  # [1, 2]
