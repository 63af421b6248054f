"""Tiny models and weight files with the real key layout, made on the spot (nothing is downloaded)."""

from __future__ import annotations

import torch

from fantasytalking_core.adapters import AudioAdapterConfig, AudioAdapter
from fantasytalking_core.wan import WanConfig, WanModel, init_random_


def official_wan_shapes(cfg: WanConfig) -> dict[str, tuple[int, ...]]:
    """Key -> shape of an official Wan2.1 checkpoint, written out from Wan's module definitions
    (wan/modules/model.py), independently of our model code."""
    d, f = cfg.dim, cfg.ffn_dim
    shapes = {
        "patch_embedding.weight": (d, cfg.in_dim, *cfg.patch_size),
        "patch_embedding.bias": (d,),
        "text_embedding.0.weight": (d, cfg.text_dim), "text_embedding.0.bias": (d,),
        "text_embedding.2.weight": (d, d), "text_embedding.2.bias": (d,),
        "time_embedding.0.weight": (d, cfg.freq_dim), "time_embedding.0.bias": (d,),
        "time_embedding.2.weight": (d, d), "time_embedding.2.bias": (d,),
        "time_projection.1.weight": (6 * d, d), "time_projection.1.bias": (6 * d,),
        "head.head.weight": (cfg.out_dim * 4, d), "head.head.bias": (cfg.out_dim * 4,),
        "head.modulation": (1, 2, d),
    }
    for n in range(cfg.num_layers):
        p = f"blocks.{n}."
        shapes[p + "modulation"] = (1, 6, d)
        shapes[p + "norm3.weight"] = (d,)
        shapes[p + "norm3.bias"] = (d,)
        attns = {"self_attn": ["q", "k", "v", "o"], "cross_attn": ["q", "k", "v", "o"]}
        if cfg.model_type == "i2v":
            attns["cross_attn"] += ["k_img", "v_img"]
        for attn, linears in attns.items():
            for lin in linears:
                shapes[f"{p}{attn}.{lin}.weight"] = (d, d)
                shapes[f"{p}{attn}.{lin}.bias"] = (d,)
            shapes[f"{p}{attn}.norm_q.weight"] = (d,)
            shapes[f"{p}{attn}.norm_k.weight"] = (d,)
        if cfg.model_type == "i2v":
            shapes[p + "cross_attn.norm_k_img.weight"] = (d,)
        shapes[p + "ffn.0.weight"] = (f, d)
        shapes[p + "ffn.0.bias"] = (f,)
        shapes[p + "ffn.2.weight"] = (d, f)
        shapes[p + "ffn.2.bias"] = (d,)
    if cfg.model_type == "i2v":
        c = cfg.clip_dim
        shapes.update({
            "img_emb.proj.0.weight": (c,), "img_emb.proj.0.bias": (c,),
            "img_emb.proj.1.weight": (c, c), "img_emb.proj.1.bias": (c,),
            "img_emb.proj.3.weight": (d, c), "img_emb.proj.3.bias": (d,),
            "img_emb.proj.4.weight": (d,), "img_emb.proj.4.bias": (d,),
        })
    return shapes


def tiny_wan(seed: int = 0, model_type: str = "i2v", **changes) -> WanModel:
    cfg = WanConfig.tiny(model_type).with_(**changes) if changes else WanConfig.tiny(model_type)
    return init_random_(WanModel(cfg), seed=seed).eval()


def tiny_audio(cfg: WanConfig, seed: int = 1, proj_dim: int = 32, audio_dim: int = 768) -> AudioAdapter:
    module = AudioAdapter(AudioAdapterConfig.for_wan(cfg, audio_dim=audio_dim, proj_dim=proj_dim))
    return init_random_(module, seed=seed, std=0.2).eval()


def official_ckpt_dict(audio: AudioAdapter) -> dict:
    """The released fantasytalking_model.ckpt structure: two nested state dicts."""
    sd = audio.state_dict()
    return {
        "proj_model": {k[len("proj_model."):]: v.clone() for k, v in sd.items() if k.startswith("proj_model.")},
        "audio_processor": {k[len("audio_processor."):]: v.clone() for k, v in sd.items() if k.startswith("audio_processor.")},
    }


def wan_inputs(cfg: WanConfig, batch: int = 1, frames: int = 3, h: int = 4, w: int = 6, seed: int = 0) -> dict:
    g = torch.Generator().manual_seed(seed)
    out = {
        "x": torch.randn(batch, 16, frames, h, w, generator=g),
        "t": torch.full((batch,), 700.0),
        "context": torch.randn(batch, 7, cfg.text_dim, generator=g),
    }
    if cfg.model_type == "i2v":
        out["clip_fea"] = torch.randn(batch, 257, cfg.clip_dim, generator=g)
        out["y"] = torch.randn(batch, cfg.in_dim - 16, frames, h, w, generator=g)
    return out
