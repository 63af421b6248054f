"""Independent references and tiny wav2vec2 files for tests/test_audio.py and tests/test_wav2vec.py."""

from __future__ import annotations

import json
from pathlib import Path

import torch
import torch.nn.functional as F


def encode_audio_file(path: Path, wave, sample_rate: int, codec: str, fmt: str, rate: int, layout: str) -> Path:
    """Write float32 [C, N] audio with one of PyAV's encoders (mp3, aac, opus, flac, ...) at `rate`
    and `layout`, as a phone or an editor would save it."""
    import av
    import numpy as np

    with av.open(str(path), "w", format=fmt) as out:
        stream = out.add_stream(codec, rate=rate, layout=layout)
        frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(wave, dtype=np.float32), format="fltp",
                                           layout="mono" if wave.shape[0] == 1 else "stereo")
        frame.sample_rate, frame.pts = sample_rate, 0
        resampler = av.AudioResampler(format=stream.codec_context.format.name, layout=layout, rate=rate,
                                      frame_size=stream.codec_context.frame_size or None)
        for part in resampler.resample(frame) + resampler.resample(None):
            out.mux(stream.encode(part))
        out.mux(stream.encode(None))
    return path


def official_windows(tokens: torch.Tensor, num_frames: int, expand_length: int):
    """A literal, loop-by-loop transcription of the official FantasyTalking code
    (`split_audio_sequence` + `split_tensor_with_padding`), batch 1 only, as released."""
    tokens_per_frame = tokens.shape[1] / num_frames
    tokens_per_latent_frame = tokens_per_frame * 4
    half_tokens = int(tokens_per_latent_frame / 2)
    pos_indices = []
    for i in range(int((num_frames - 1) / 4) + 1):
        if i == 0:
            pos_indices.append(0)
        else:
            start_token = tokens_per_frame * ((i - 1) * 4 + 1)
            end_token = tokens_per_frame * (i * 4 + 1)
            pos_indices.append(int((start_token + end_token) / 2) - 1)
    ranges = [[idx - half_tokens, idx + half_tokens] for idx in pos_indices]
    ranges[0] = [-(half_tokens * 2 - ranges[1][0]), ranges[1][0]]
    ranges = [[r[0] - expand_length, r[1] + expand_length] for r in ranges]
    subs, k_lens = [], []
    max_valid = tokens.size(1) - 1
    for start, end in ranges:
        pad_front = max(-start, 0)
        pad_back = max(end - max_valid, 0)
        valid_start, valid_end = max(start, 0), min(end, max_valid)
        if valid_start <= valid_end:
            part = tokens[:, valid_start:valid_end + 1, :]
        else:
            part = tokens.new_zeros((1, 0, tokens.size(2)))
        padded = F.pad(part, (0, 0, 0, pad_back + pad_front, 0, 0), mode="constant", value=0)
        k_lens.append(padded.size(-2) - pad_back - pad_front)
        subs.append(padded)
    return torch.stack(subs, dim=1), torch.tensor(k_lens, dtype=torch.long), ranges


def tiny_wav2vec(hidden: int = 768, heads: int = 12, seed: int = 0):
    """A 1-layer `Wav2Vec2Model` with the base layout (group norm, no conv bias) and random
    weights everywhere, so any wrongly mapped tensor changes the output."""
    from transformers import Wav2Vec2Config, Wav2Vec2Model

    config = Wav2Vec2Config(hidden_size=hidden, num_hidden_layers=1, num_attention_heads=heads,
                            intermediate_size=64, conv_dim=(16,) * 7, num_conv_pos_embeddings=16,
                            num_conv_pos_embedding_groups=16, vocab_size=32)
    torch.manual_seed(seed)
    model = Wav2Vec2Model(config).eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            p.copy_(torch.randn_like(p) * 0.1 + (1.0 if name.endswith("norm.weight") else 0.0))
    return model


def legacy_keys(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Current parametrization names -> the legacy weight_g/weight_v names of 2021 checkpoints."""
    out = {}
    for k, v in sd.items():
        k = k.replace("parametrizations.weight.original0", "weight_g")
        out[k.replace("parametrizations.weight.original1", "weight_v")] = v
    return out


def write_ctc_folder(model, folder: Path) -> Path:
    """The facebook/wav2vec2-base-960h folder layout: Wav2Vec2ForCTC config, pytorch_model.bin with
    `wav2vec2.`-prefixed legacy keys and an lm_head, plus processor files."""
    folder.mkdir(parents=True)
    sd = {f"wav2vec2.{k}": v.clone() for k, v in legacy_keys(model.state_dict()).items()}
    sd["lm_head.weight"] = torch.randn(32, model.config.hidden_size)
    sd["lm_head.bias"] = torch.randn(32)
    torch.save(sd, folder / "pytorch_model.bin")
    config = model.config.to_dict()
    config["architectures"] = ["Wav2Vec2ForCTC"]
    (folder / "config.json").write_text(json.dumps(config))
    (folder / "preprocessor_config.json").write_text(json.dumps(
        {"do_normalize": True, "feature_size": 1, "padding_value": 0.0, "sampling_rate": 16000}))
    (folder / "vocab.json").write_text(json.dumps({"<pad>": 0}))
    return folder
