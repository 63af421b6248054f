"""wav2vec2-base, FantasyTalking's audio encoder: loaded from local files (a transformers folder or
ComfyUI's `audio_encoders` single file), run on a 16 kHz waveform -> `last_hidden_state`
[1, L, 768], about 50 tokens per second (`Wav2VecEncoder.encode`), long recordings in pieces with
the same result. ComfyUI core's own encoder output is taken too (`from_comfy_encoder_output`).
Nothing here downloads anything.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Mapping

import torch

from ..audio import SAMPLE_RATE, normalize_like_processor
from ..checkpoints import load_strict, read_state_dict
from ..frames import seconds_for_frames
from ..keymaps import WAV2VEC_OPTIONAL, WAV2VEC_POS_CONV, match_weight_norm, wav2vec_state

WAV2VEC_DIM = 768
WAV2VEC_REPO = "facebook/wav2vec2-base-960h"
WHERE_WAV2VEC = ("Use wav2vec2-base-960h (a transformers folder, or one .safetensors file in ComfyUI/models/"
                 f"audio_encoders/) from {WAV2VEC_REPO} (Hugging Face).")
_CONV_KERNELS = (10, 3, 3, 3, 3, 2, 2)  # wav2vec2 feature encoder: 320x downsampling, 400-sample field
_CONV_STRIDES = (5, 2, 2, 2, 2, 2, 2)


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

        The whole recording is one input to the transformer, however long (every token attends to
        every other, as in the official code). Up to `chunk_tokens` the model's own forward runs.
        Past it, the same computation runs in an order whose memory grows by about 0.4 MiB per second
        of audio (the result, one buffer of its size, the waveform), not the ~16 MiB/s of the model's
        own forward: the convolutional feature encoder piece by piece (`_feature_encoder`), then
        each transformer layer one attention head at a time, queries in pieces against the head's
        whole keys and values, writing back in place (`_transformer_in_pieces`)."""
        x = normalize_like_processor(wave16k)
        if not torch.isfinite(x).all():
            raise ValueError("wave16k has NaN/inf samples; pass it through prepare_waveform first")
        if wav2vec_num_tokens(x.numel()) < 1:
            raise ValueError(f"audio has {x.numel()} samples, wav2vec2 needs at least 400 "
                             "(25 ms at 16 kHz); use longer audio")
        x = x.to(device=self.device, dtype=self.dtype)[None]  # [1, T]
        total = wav2vec_num_tokens(x.shape[1])
        if total <= self.chunk_tokens or getattr(self.model.config, "adapter_attn_dim", None) is not None:
            return self.model(x).last_hidden_state.float()  # [1, L, hidden]; MMS adapters: not in pieces
        m = self.model
        piece = max(1, self.chunk_tokens // 4)
        hidden = x.new_empty(1, total, self.hidden_size)
        for t0, feats in _feature_encoder(m.feature_extractor, x, piece):
            hidden[:, t0:t0 + feats.shape[2]] = m.feature_projection(feats.transpose(1, 2))[0]
        del x
        hidden = _transformer_in_pieces(m.encoder, hidden, piece, stable=bool(m.config.do_stable_layer_norm))
        if getattr(m, "adapter", None) is not None:
            hidden = m.adapter(hidden)
        return hidden.float()


def _rows(length: int, chunk: int) -> Iterator[slice]:
    return (slice(a, min(a + chunk, length)) for a in range(0, length, chunk))


def _transformer_in_pieces(encoder: torch.nn.Module, hidden: torch.Tensor, chunk: int, stable: bool) -> torch.Tensor:
    """transformers' `Wav2Vec2Encoder` (post-norm, wav2vec2-base) or `...StableLayerNorm` (pre-norm)
    in eval on [1, L, D], in place, as its forward computes it, with one [L, D] buffer beyond it.

    The positional convolution (kernel 128) runs on pieces with their halo; each layer's attention
    runs one head at a time (that head's keys and values for all L tokens, its queries 4 `chunk` at
    a time: every token still attends to all L), into one [L, D] buffer; then the output projection,
    the norms and the feed-forward, all position-wise, run `chunk` tokens at a time and write the
    layer's output over its input, which no one needs any more."""
    import torch.nn.functional as F

    x = hidden[0]  # [L, D], overwritten layer after layer
    _add_positions(encoder.pos_conv_embed, x, chunk, None if stable else encoder.layer_norm)
    attn = torch.empty_like(x)
    normed = torch.empty_like(x) if stable else None
    for layer in encoder.layers:
        src = x
        if stable:  # pre-norm: attention reads layer_norm(x)
            for r in _rows(len(x), chunk):
                normed[r] = layer.layer_norm(x[r])
            src = normed
        att = layer.attention
        for h in range(att.num_heads):
            s = slice(h * att.head_dim, (h + 1) * att.head_dim)
            k = F.linear(src, att.k_proj.weight[s], att.k_proj.bias[s])[None, None]  # [1, 1, L, head_dim]
            v = F.linear(src, att.v_proj.weight[s], att.v_proj.bias[s])[None, None]  # (4-d: CPU flash kernel)
            for r in _rows(len(x), 4 * chunk):
                q = F.linear(src[r], att.q_proj.weight[s], att.q_proj.bias[s])[None, None]
                attn[r, s] = F.scaled_dot_product_attention(q, k, v, scale=att.scaling)[0, 0]
            del k, v
        for r in _rows(len(x), chunk):
            y = x[r] + att.out_proj(attn[r])
            if stable:
                x[r] = y + layer.feed_forward(layer.final_layer_norm(y))
            else:
                y = layer.layer_norm(y)
                x[r] = layer.final_layer_norm(y + layer.feed_forward(y))
    if stable:
        for r in _rows(len(x), chunk):
            x[r] = encoder.layer_norm(x[r])
    return x[None]


def _add_positions(pos_conv: torch.nn.Module, h: torch.Tensor, chunk: int, norm: torch.nn.Module | None) -> None:
    """h <- norm(h + `Wav2Vec2PositionalConvEmbedding`(h)) in place for h [L, D], `chunk` tokens at a
    time, each from exactly the inputs (and zero padding) the whole-sequence convolution gives it: the
    original rows a piece reads behind it, already overwritten, are kept aside (`pad` of them)."""
    import torch.nn.functional as F

    conv = pos_conv.conv
    weight, bias = conv.weight, conv.bias  # weight norm computed once
    k, pad, n = conv.kernel_size[0], conv.padding[0], len(h)
    behind = h[:0].clone()  # original rows max(0, start - pad) .. start
    for r in _rows(n, chunk):  # output t reads inputs t - pad .. t - pad + k - 1
        a, b = r.start - pad, r.stop - pad + k - 1
        piece = torch.cat([behind, h[r.start:min(n, b)]]).T[None]  # [1, D, <= chunk + k - 1]
        piece = F.pad(piece, (max(0, -a), max(0, b - n)))
        pos = pos_conv.activation(F.conv1d(piece, weight, bias, groups=conv.groups))[0].T  # [chunk, D]
        behind = torch.cat([behind, h[r]])
        behind = behind[max(0, len(behind) - pad):].clone()
        y = h[r] + pos
        h[r] = y if norm is None else norm(y)


def _feature_encoder(encoder: torch.nn.Module, x: torch.Tensor, chunk: int) -> Iterator[tuple[int, torch.Tensor]]:
    """wav2vec2's convolutional feature encoder on [1, T] samples, `chunk` tokens at a time: (first
    token, features [1, C, n]) per piece, so the caller keeps only what it makes of them.

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
        yield t0, h  # [1, C, t1 - t0]


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
                 dtype: torch.dtype = torch.float32) -> Wav2VecEncoder:
    """Load wav2vec2-base from a transformers folder or a ComfyUI `audio_encoders` single file.

    Folder: config.json (optional) + model.safetensors, else pytorch_model.bin (read with
    weights_only=True); Wav2Vec2ForCTC checkpoints (`wav2vec2.` prefix, `lm_head`) are accepted.
    A single file without config gets a config inferred from its shapes. Never downloads."""
    from transformers import Wav2Vec2Config, Wav2Vec2Model

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
    if dim != WAV2VEC_DIM:
        raise ValueError(f"{weights} is a {dim}-d wav2vec2 model; FantasyTalking's audio projection "
                         f"takes {WAV2VEC_DIM}-d features from {WAV2VEC_REPO} (wav2vec2-base). "
                         "Large (1024-d) models such as those for Wan S2V do not fit.")
    if config is None:
        config = _infer_config(sd)
    model = Wav2Vec2Model(config).eval()
    match_weight_norm(sd, list(model.state_dict()))
    load_strict(model, sd, weights, optional=WAV2VEC_OPTIONAL, hint=f"It is not {WAV2VEC_REPO} or does not fit "
                "its config.json.")
    model.to(device=device, dtype=dtype)
    return Wav2VecEncoder(model=model, device=torch.device(device), dtype=dtype, source=str(weights))


def from_comfy_encoder_output(output: Mapping[str, Any]) -> torch.Tensor:
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
        raise ValueError(f"encoded_audio must be a [1, L, {WAV2VEC_DIM}] tensor, got {desc}")
    if feats.shape[0] != 1:
        raise ValueError(f"encoded_audio has batch {feats.shape[0]}; encode one audio per video")
    if feats.shape[-1] != WAV2VEC_DIM:
        raise ValueError(f"encoded_audio is {feats.shape[-1]}-d; FantasyTalking needs {WAV2VEC_DIM}-d "
                         f"features from {WAV2VEC_REPO} (load it with AudioEncoderLoader), not a "
                         "large wav2vec2 or whisper encoder")
    warnings.warn("ComfyUI core encodes wav2vec2-base audio without normalising it; FantasyTalking "
                  "was trained on normalised audio, so lip sync may be weaker than with "
                  "FantasyTalking's own wav2vec2 loader", UserWarning, stacklevel=2)
    return feats.float()


def timeline_tokens(num_frames: int, fps: float) -> int:
    """Tokens wav2vec2 gives for `num_frames / fps` seconds (the official cut, `int(num_frames / fps *
    16000)` samples): the token count whose window positions keep token j at 0.02 j s for a video of
    `num_frames` frames (segments.segment_audio)."""
    return wav2vec_num_tokens(int(seconds_for_frames(num_frames, fps) * SAMPLE_RATE))
