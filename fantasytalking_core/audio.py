"""Audio for FantasyTalking: any audio -> wav2vec2 features -> per-latent-frame windows.

Path: a file, a ComfyUI AUDIO or an array (`read_audio`, the one
reader; files are decoded by `video.decode_audio`, so every format PyAV reads works) -> mono
float32 16 kHz (`prepare_waveform`) -> the frame count (`plan_frames`, the one rule) -> cut to the
clip (`fit_to_frames`) -> normalised like `Wav2Vec2FeatureExtractor` -> wav2vec2-base
`last_hidden_state` [1, L, 768], about 50 tokens/s (`Wav2VecEncoder.encode`) -> the caller's audio
projection -> `split_windows` -> [B, T_lat, L_win, C]. The window indices reproduce the official
code exactly: the released weights were trained on them. Long videos take the windows of each
segment's frames from one encoding (segments.segment_audio). Nothing here downloads anything.
"""

from __future__ import annotations

import math
import os
import warnings
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Mapping

import numpy as np
import torch

from .keymaps import WAV2VEC_OPTIONAL, WAV2VEC_POS_CONV, match_weight_norm, wav2vec_state

SAMPLE_RATE = 16000
WAV2VEC_DIM = 768
WAV2VEC_REPO = "facebook/wav2vec2-base-960h"
_CONV_KERNELS = (10, 3, 3, 3, 3, 2, 2)  # wav2vec2 feature encoder: 320x downsampling, 400-sample field
_CONV_STRIDES = (5, 2, 2, 2, 2, 2, 2)

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

    @property
    def seconds(self) -> float:
        return self.waveform.shape[-1] / self.sample_rate

    def to_16k(self) -> torch.Tensor:
        """Mono 16 kHz float32 [T] (`prepare_waveform`)."""
        return prepare_waveform(self.waveform, self.sample_rate)


def read_audio(audio: Any, max_channels: int | None = None) -> AudioTrack:
    """The one audio reader. `audio` is a path (any file PyAV decodes: wav, flac, ogg, mp3,
    m4a/aac, opus, the audio track of a video), a ComfyUI AUDIO dict {"waveform": [1, C, T],
    "sample_rate": int}, a (waveform, sample_rate) pair ([T], [C, T] or [1, C, T], torch or numpy,
    float or integer PCM) or an AudioTrack. More channels than `max_channels` are downmixed to mono.
    Errors say what was wrong: no file, not audio, no audio stream, no samples, NaN, a batch."""
    if isinstance(audio, AudioTrack):
        track = audio
    elif isinstance(audio, (str, os.PathLike)):
        from .video import decode_audio

        decoded = decode_audio(audio)
        x, sr = _channels(decoded.samples, decoded.sample_rate)
        track = AudioTrack(torch.from_numpy(x.astype(np.float32)), sr, str(Path(audio).expanduser()))
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
        track = AudioTrack(track.waveform.mean(0, keepdim=True), track.sample_rate, track.source)
    return track


def normalize_like_processor(wave: Any) -> torch.Tensor:
    """(x - mean) / sqrt(var + 1e-7) over the whole clip, float32: exactly what
    `Wav2Vec2FeatureExtractor(do_normalize=True)` does (numpy, population variance). Constant input
    (silence) gives zeros or tiny values, never NaN."""
    x = _to_numpy(wave, "wave").astype(np.float32)
    if x.ndim != 1 or x.size == 0:
        raise ValueError(f"wave must be a non-empty 1-D 16 kHz waveform, got shape {tuple(x.shape)}")
    return torch.from_numpy((x - x.mean()) / np.sqrt(x.var() + 1e-7))


# ------------------------------------------------------------------------------------- encoders


def wav2vec_num_tokens(num_samples: int) -> int:
    """Number of wav2vec2 tokens (L) for `num_samples` 16 kHz samples; 0 below 400 samples."""
    n = int(num_samples)
    for k, s in zip(_CONV_KERNELS, _CONV_STRIDES):
        if n < k:
            return 0
        n = (n - k) // s + 1
    return n


@dataclass
class Wav2VecEncoder:
    """A loaded transformers `Wav2Vec2Model`; `encode` gives FantasyTalking's audio features."""

    model: torch.nn.Module
    device: torch.device
    dtype: torch.dtype
    source: str
    chunk_tokens: int = 500  # past this many tokens (10 s) the encoder runs in pieces of a quarter of it

    @property
    def hidden_size(self) -> int:
        return int(self.model.config.hidden_size)

    @torch.no_grad()
    def encode(self, wave16k: Any) -> torch.Tensor:
        """Mono 16 kHz [T] -> `last_hidden_state` [1, L, hidden] float32 on `device`, L =
        `wav2vec_num_tokens(T)`. The input is normalised here like the official processor.

        The whole recording is one input to the transformer, however long. Its convolutional
        feature encoder (512 channels at 3200 steps per second in wav2vec2-base: ~400 MB per minute
        of audio per activation) and the feed-forward of its transformer layers run in pieces of
        `chunk_tokens // 4` tokens past `chunk_tokens`, each with exactly the inputs its tokens see, so
        the encoder's memory stays near that of 10 s (`_feature_encoder`, `_feed_forward_in_pieces`)."""
        x = normalize_like_processor(wave16k)
        if not torch.isfinite(x).all():
            raise ValueError("wave16k has NaN/inf samples; pass it through prepare_waveform first")
        if wav2vec_num_tokens(x.numel()) < 1:
            raise ValueError(f"audio has {x.numel()} samples, wav2vec2 needs at least 400 "
                             "(25 ms at 16 kHz); use longer audio")
        x = x.to(device=self.device, dtype=self.dtype)[None]  # [1, T]
        if wav2vec_num_tokens(x.shape[1]) <= self.chunk_tokens:
            return self.model(x).last_hidden_state.float()  # [1, L, hidden]
        m = self.model
        piece = max(1, self.chunk_tokens // 4)
        hidden, _ = m.feature_projection(_feature_encoder(m.feature_extractor, x, piece).transpose(1, 2))
        with _feed_forward_in_pieces(m.encoder, piece):
            hidden = m.encoder(hidden)[0]  # as Wav2Vec2Model.forward in eval: no masking, no attention mask
        if getattr(m, "adapter", None) is not None:
            hidden = m.adapter(hidden)
        return hidden.float()


@contextmanager
def _feed_forward_in_pieces(encoder: torch.nn.Module, chunk: int) -> Iterator[None]:
    """While encoding, each transformer layer's feed-forward (position-wise, so exact) runs on `chunk`
    tokens at a time: its [L, 3072] intermediate is the largest activation of a long recording. The
    model's own forward comes back afterwards."""
    patched = []
    try:
        for layer in encoder.layers:
            ff = layer.feed_forward
            run = ff.forward
            ff.forward = lambda h, run=run: torch.cat([run(h[:, i:i + chunk]) for i in range(0, h.shape[1], chunk)], 1)
            patched.append(ff)
        yield
    finally:
        for ff in patched:
            del ff.forward  # the class's forward again


def _feature_encoder(encoder: torch.nn.Module, x: torch.Tensor, chunk: int) -> torch.Tensor:
    """wav2vec2's convolutional feature encoder on [1, T] samples -> [1, C, L], `chunk` tokens at a time.

    The convolutions are local (token j sees samples 320 j .. 320 j + 399), so each piece of tokens
    is computed from exactly the samples it needs. The one whole-recording operation, the GroupNorm
    of the first layer in wav2vec2-base (one group per channel: each channel normalised over all
    time steps), gets its statistics from a first pass over the recording in pieces (float64 sums)."""
    layers = list(encoder.conv_layers)
    first, total = layers[0], wav2vec_num_tokens(x.shape[1])
    norm = getattr(first, "layer_norm", None)
    stats = None
    if isinstance(norm, torch.nn.GroupNorm):
        k, st = first.conv.kernel_size[0], first.conv.stride[0]
        n0, step = (x.shape[1] - k) // st + 1, chunk * 64  # first-layer outputs: 64 per token
        acc = torch.zeros(2, first.conv.out_channels, dtype=torch.float64, device=x.device)
        for a in range(0, n0, step):
            h = first.conv(x[:, None, a * st:(min(a + step, n0) - 1) * st + k])[0]  # [C, n]
            acc[0] += h.sum(1, dtype=torch.float64)
            acc[1] += h.square_().sum(1, dtype=torch.float64)
        mean = acc[0] / n0
        var = (acc[1] / n0 - mean * mean).clamp_min(0)
        stats = (mean, torch.rsqrt(var + norm.eps) * norm.weight.double())  # h -> (h - mean) * scale + bias
    pieces = []
    for t0 in range(0, total, chunk):
        t1 = min(total, t0 + chunk)
        h = x[:, None, 320 * t0: 320 * (t1 - 1) + 400]
        if stats is None:
            h = first(h)
        else:
            mean, scale = (v.to(x.dtype)[None, :, None] for v in stats)
            h = first.conv(h).sub_(mean).mul_(scale).add_(norm.bias[None, :, None])
            h = first.activation(h)
        for layer in layers[1:]:
            h = layer(h)
        pieces.append(h)  # [1, C, t1 - t0]
    return torch.cat(pieces, dim=2)


def _missing_model_message(p: Path) -> str:
    return (f"wav2vec2 model not found: {p}. Put the single .safetensors file in "
            "ComfyUI/models/audio_encoders/, or pass a transformers folder (config.json + "
            f"model.safetensors); get it from the Hugging Face repo {WAV2VEC_REPO}.")


def _infer_config(sd: Mapping[str, torch.Tensor]) -> Any:
    """A `Wav2Vec2Config` from tensor shapes, for single files that carry no config.json."""
    from transformers import Wav2Vec2Config

    hidden = sd["encoder.layer_norm.bias"].shape[0]
    convs = [sd[f"feature_extractor.conv_layers.{i}.conv.weight"] for i in range(len(_CONV_KERNELS))
             if f"feature_extractor.conv_layers.{i}.conv.weight" in sd]
    layers = {int(k.split(".")[2]) for k in sd if k.startswith("encoder.layers.")}
    pos = sd.get(WAV2VEC_POS_CONV + "weight_v", sd.get(WAV2VEC_POS_CONV + "parametrizations.weight.original1"))
    if len(convs) != len(_CONV_KERNELS) or not layers or pos is None:
        raise ValueError("wav2vec2 state dict is incomplete: expected 7 feature_extractor conv layers, "
                         f"encoder.layers.* and {WAV2VEC_POS_CONV}weight_v/original1")
    layer_norm_convs = "feature_extractor.conv_layers.1.layer_norm.weight" in sd
    return Wav2Vec2Config(
        hidden_size=hidden, num_hidden_layers=max(layers) + 1,
        num_attention_heads={768: 12, 1024: 16}.get(hidden, max(1, hidden // 64)),
        intermediate_size=sd["encoder.layers.0.feed_forward.intermediate_dense.weight"].shape[0],
        conv_dim=tuple(w.shape[0] for w in convs), conv_kernel=tuple(w.shape[2] for w in convs),
        conv_stride=_CONV_STRIDES, conv_bias="feature_extractor.conv_layers.0.conv.bias" in sd,
        feat_extract_norm="layer" if layer_norm_convs else "group",
        do_stable_layer_norm=layer_norm_convs,  # as ComfyUI core: large = layer norm + stable
        num_conv_pos_embeddings=pos.shape[2], num_conv_pos_embedding_groups=hidden // pos.shape[1])


def load_wav2vec(path: str | Path, device: str | torch.device = "cpu",
                 dtype: torch.dtype = torch.float32, expected_dim: int = WAV2VEC_DIM) -> Wav2VecEncoder:
    """Load wav2vec2-base from a transformers folder or a ComfyUI `audio_encoders` single file.

    Folder: config.json (optional) + model.safetensors, else pytorch_model.bin (read with
    weights_only=True); Wav2Vec2ForCTC checkpoints (`wav2vec2.` prefix, `lm_head`) are accepted.
    A single file without config gets a config inferred from its shapes. Never downloads."""
    from transformers import Wav2Vec2Config, Wav2Vec2Model

    from .checkpoints import load_strict, read_state_dict

    p = Path(path).expanduser()
    if not p.exists():
        raise FileNotFoundError(_missing_model_message(p))
    config = None
    weights = p
    if p.is_dir():
        found = [p / n for n in ("model.safetensors", "pytorch_model.bin") if (p / n).is_file()]
        if not found:
            listing = sorted(c.name for c in p.iterdir())[:10]
            raise FileNotFoundError(f"no model.safetensors or pytorch_model.bin in {p} (it holds "
                                    f"{listing}). " + _missing_model_message(p))
        weights = found[0]
        if (p / "config.json").is_file():
            config = Wav2Vec2Config.from_json_file(str(p / "config.json"))
    sd = wav2vec_state(read_state_dict(weights))
    if "encoder.layer_norm.bias" not in sd:
        raise ValueError(f"{weights} is not a wav2vec2 checkpoint (no 'encoder.layer_norm.bias'; "
                         f"first keys {sorted(sd)[:3]}); FantasyTalking needs {WAV2VEC_REPO}")
    dim = int(sd["encoder.layer_norm.bias"].shape[0])
    if dim != expected_dim:
        raise ValueError(f"{weights} is a {dim}-d wav2vec2 model; FantasyTalking's audio projection "
                         f"takes {expected_dim}-d features from {WAV2VEC_REPO} (wav2vec2-base). "
                         "Large (1024-d) models such as those for Wan S2V do not fit.")
    if config is None:
        config = _infer_config(sd)
    model = Wav2Vec2Model(config).eval()
    match_weight_norm(sd, list(model.state_dict()))
    load_strict(model, sd, weights, optional=WAV2VEC_OPTIONAL, hint=f"It is not {WAV2VEC_REPO} or does not fit "
                "its config.json.")
    model.to(device=device, dtype=dtype)
    return Wav2VecEncoder(model=model, device=torch.device(device), dtype=dtype, source=str(weights))


def from_comfy_encoder_output(output: Mapping[str, Any], expected_dim: int = WAV2VEC_DIM) -> torch.Tensor:
    """ComfyUI core's AUDIO_ENCODER_OUTPUT -> features [1, L, 768] float32.

    Core's `encoded_audio` is [B, L, D], the last hidden state. For 768-d (base) models core runs
    wav2vec2 *without* input normalisation (comfy/audio_encoders/audio_encoders.py sets
    do_normalize=False for base), while FantasyTalking was trained on normalised input, so these
    features differ from the official ones and lip sync can be weaker; `load_wav2vec` +
    `Wav2VecEncoder.encode` gives the exact features. Core also resamples with its own filter."""
    if not isinstance(output, Mapping) or "encoded_audio" not in output:
        got = sorted(output) if isinstance(output, Mapping) else type(output).__name__
        raise ValueError(f"expected ComfyUI AUDIO_ENCODER_OUTPUT with 'encoded_audio', got {got}")
    feats = output["encoded_audio"]
    if not isinstance(feats, torch.Tensor) or feats.ndim != 3:
        desc = tuple(feats.shape) if isinstance(feats, torch.Tensor) else type(feats).__name__
        raise ValueError(f"encoded_audio must be a [1, L, {expected_dim}] tensor, got {desc}")
    if feats.shape[0] != 1:
        raise ValueError(f"encoded_audio has batch {feats.shape[0]}; encode one audio per video")
    if feats.shape[-1] != expected_dim:
        raise ValueError(f"encoded_audio is {feats.shape[-1]}-d; FantasyTalking needs {expected_dim}-d "
                         f"features from {WAV2VEC_REPO} (load it with AudioEncoderLoader), not a "
                         "large wav2vec2 or whisper encoder")
    warnings.warn("ComfyUI core encodes wav2vec2-base audio without normalising it; FantasyTalking "
                  "was trained on normalised audio, so lip sync may be weaker than with "
                  "FantasyTalking's own wav2vec2 loader", UserWarning, stacklevel=2)
    return feats.float()


# ------------------------------------------------------------------------------------ alignment


def _check_num_frames(num_frames: Any, name: str = "num_frames") -> int:
    if isinstance(num_frames, bool) or not isinstance(num_frames, (int, np.integer)) \
            or num_frames < 5 or (num_frames - 1) % 4:
        try:
            below = (int(num_frames) - 1) // 4 * 4 + 1
        except (TypeError, ValueError, OverflowError):
            below = 1
        near = [v for v in (below, below + 4) if v >= 5] or [5]
        raise ValueError(f"{name} must be 4k+1 and at least 5 (Wan's VAE packs 4 frames per latent "
                         f"frame after the first), got {num_frames!r}; nearest valid: {near}")
    return int(num_frames)


def total_frames_for_audio(seconds: float, fps: float = 23) -> int:
    """The official formula without a cap: int(fps * seconds // 4) * 4 + 5, always 4k+1."""
    if not (math.isfinite(seconds) and seconds >= 0):
        raise ValueError(f"seconds must be finite and >= 0, got {seconds!r}")
    if not (math.isfinite(fps) and fps > 0):
        raise ValueError(f"fps must be > 0, got {fps!r}")
    return int(fps * seconds // 4) * 4 + 5


_CAPPED = "capped at max_frames"  # how `plan_frames` says it capped (what `cut_note` looks for)


def plan_frames(seconds: float, fps: float = 23, frames: int = 0, max_frames: int = 81) -> tuple[int, str]:
    """The one frame-count rule (nodes, command line, pipeline): -> (num_frames, how it was chosen).

    `frames` > 0 is taken as given (4k+1); 0 follows the audio with the official
    `int(fps * seconds // 4) * 4 + 5`, capped at `max_frames` (4k+1) as the official code caps it;
    `max_frames` 0 = no cap (the whole audio, segment after segment)."""
    for name, value in (("frames", frames), ("max_frames", max_frames)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 0:
            raise ValueError(f"{name} must be an int >= 0 (0 = {'follow the audio' if name == 'frames' else 'no cap'}), "
                             f"got {value!r}")
        if value and (value < 5 or (value - 1) % 4):
            near = [v for v in ((value - 1) // 4 * 4 + 1, (value - 1) // 4 * 4 + 5) if v >= 5] or [5]
            zero = "follow the audio's length" if name == "frames" else "have no cap"
            raise ValueError(f"{name} = {value} is not 4k+1 and at least 5 (Wan's VAE packs 4 frames per latent frame "
                             f"after the first): use {' or '.join(map(str, near))}, or 0 to {zero}")
    if frames:
        return int(frames), "fixed"
    need = total_frames_for_audio(seconds, fps)
    if max_frames and need > max_frames:
        return int(max_frames), f"audio needs {need} frames; {_CAPPED} {max_frames}"
    return need, "from audio length"


def cut_note(seconds: float, frames: int, fps: float, max_frames: int, how: str,
             whole: str = "max_frames 0 makes the whole recording") -> str:
    """What a `max_frames` cap left out of a recording ("" when `plan_frames`' `how` says it did not
    cap): said wherever it cuts, so a video is never silently shorter than its audio. `whole`: how to
    make all of it, where the caller is."""
    if _CAPPED not in how:
        return ""
    return (f"max_frames {max_frames} cut the video to {frames / fps:.2f} s: the last {seconds - frames / fps:.2f} s "
            f"of the {seconds:.2f} s recording are left out ({whole})")


def seconds_for_frames(num_frames: int, fps: float) -> float:
    """Duration of `num_frames` video frames at `fps`, in seconds."""
    if not (math.isfinite(fps) and fps > 0):
        raise ValueError(f"fps must be > 0, got {fps!r}")
    return num_frames / fps


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
    num_frames = _check_num_frames(num_frames)
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
    num_frames = _check_num_frames(num_frames)
    if num_tokens < 1:
        raise ValueError(f"num_tokens must be >= 1, got {num_tokens}")
    tokens_per_frame = num_tokens / num_frames
    half = int(tokens_per_frame * 4 / 2)
    centres = [0]
    for i in range(1, (num_frames - 1) // 4 + 1):
        start = tokens_per_frame * ((i - 1) * 4 + 1)
        end = tokens_per_frame * (i * 4 + 1)
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

    def key_mask(self) -> torch.Tensor:
        """[T_lat, L_win] bool, True on real tokens."""
        pos = torch.arange(self.tokens.shape[2], device=self.k_lens.device)
        return pos[None, :] < self.k_lens[:, None]


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
    num_frames = _check_num_frames(num_frames)
    if length < 1:
        raise ValueError(f"audio too short for {num_frames} frames: 0 tokens")
    ranges = widened_ranges(length, num_frames, expand_length)
    for t, (s, e) in enumerate(ranges):
        if min(e, length - 1) < max(s, 0):
            raise ValueError(f"audio too short for {num_frames} frames: {length} tokens leave latent "
                             f"frame {t} (tokens {ranges[t]}) without audio; use longer audio or fewer frames")
    return gather_windows(tokens, ranges, length)


def timeline_tokens(num_frames: int, fps: float) -> int:
    """Tokens wav2vec2 gives for `num_frames / fps` seconds (the official cut, `int(num_frames / fps *
    16000)` samples): the token count whose window positions keep token j at 0.02 j s for a video of
    `num_frames` frames (segments.segment_audio)."""
    return wav2vec_num_tokens(int(seconds_for_frames(num_frames, fps) * SAMPLE_RATE))
