"""Tiny random-weight model files that ComfyUI core's own loaders (and this pack's) accept.

Key layouts are written out from the published architectures (Wan2.1 vae.py, HF CLIP and wav2vec2),
not read from ComfyUI, so the loaders are exercised on the real file formats. Used by
scripts/comfyui_smoke.py; one maker per file kind, files cached by FORMAT_TAG.

GGUF versions of the tiny DiT (for city96's ComfyUI-GGUF loader) are made the way its
tools/README.md says, by its own tools from a local checkout (never copied here): ``convert.py``
writes BF16, gguf-py quantises that to Q8_0 and Q4_0, and ``fix_5d_tensors.py`` adds back the 5-D
patch embedding. It needs the ``gguf`` package, so the smoke script runs it with a ComfyUI's Python,
from the repository root:

    COMFY/.venv/bin/python -m scripts.comfy_tiny_models gguf --src DIT.safetensors --tools ComfyUI-GGUF/tools --out DIR
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Callable

FORMAT_TAG = "fantasytalking-comfyui-smoke-2"  # bump when a maker changes; cached files are remade

# Key layouts are written out from the published architectures (Wan2.1 vae.py, HF CLIP and
# wav2vec2), not read from ComfyUI, so the loaders are tested against the real file formats.


def _linear(shapes: dict, name: str, out_f: int, in_f: int, bias: bool = True) -> None:
    shapes[name + ".weight"] = (out_f, in_f)
    if bias:
        shapes[name + ".bias"] = (out_f,)


def _norm(shapes: dict, name: str, dim: int) -> None:
    shapes[name + ".weight"] = (dim,)
    shapes[name + ".bias"] = (dim,)


def wan_vae_shapes(dim: int = 96, z_dim: int = 16, dim_mult=(1, 2, 4, 4), num_res_blocks: int = 2,
                   temporal_downsample=(False, True, True)) -> dict[str, tuple[int, ...]]:
    """Key -> shape of Wan2.1's VAE file (``Wan2.1_VAE.pth`` / ``wan_2.1_vae.safetensors``)."""
    s: dict[str, tuple[int, ...]] = {}

    def conv3(name, cin, cout, k):
        s[name + ".weight"] = (cout, cin, *k)
        s[name + ".bias"] = (cout,)

    def res(name, cin, cout):
        s[name + ".residual.0.gamma"] = (cin, 1, 1, 1)
        conv3(name + ".residual.2", cin, cout, (3, 3, 3))
        s[name + ".residual.3.gamma"] = (cout, 1, 1, 1)
        conv3(name + ".residual.6", cout, cout, (3, 3, 3))
        if cin != cout:
            conv3(name + ".shortcut", cin, cout, (1, 1, 1))

    def attn(name, c):
        s[name + ".norm.gamma"] = (c, 1, 1)
        conv3(name + ".to_qkv", c, 3 * c, (1, 1))
        conv3(name + ".proj", c, c, (1, 1))

    def middle(prefix, c):
        res(prefix + ".middle.0", c, c)
        attn(prefix + ".middle.1", c)
        res(prefix + ".middle.2", c, c)

    dims = [dim * u for u in (1, *dim_mult)]  # encoder
    conv3("encoder.conv1", 3, dims[0], (3, 3, 3))
    i = 0
    for level, (cin, cout) in enumerate(zip(dims[:-1], dims[1:])):
        for _ in range(num_res_blocks):
            res(f"encoder.downsamples.{i}", cin, cout)
            cin, i = cout, i + 1
        if level != len(dim_mult) - 1:
            conv3(f"encoder.downsamples.{i}.resample.1", cout, cout, (3, 3))
            if temporal_downsample[level]:
                conv3(f"encoder.downsamples.{i}.time_conv", cout, cout, (3, 1, 1))
            i += 1
    middle("encoder", dims[-1])
    s["encoder.head.0.gamma"] = (dims[-1], 1, 1, 1)
    conv3("encoder.head.2", dims[-1], 2 * z_dim, (3, 3, 3))
    conv3("conv1", 2 * z_dim, 2 * z_dim, (1, 1, 1))
    conv3("conv2", z_dim, z_dim, (1, 1, 1))

    dims = [dim * u for u in (dim_mult[-1], *dim_mult[::-1])]  # decoder
    temporal_upsample = tuple(temporal_downsample[::-1])
    conv3("decoder.conv1", z_dim, dims[0], (3, 3, 3))
    middle("decoder", dims[0])
    i = 0
    for level, (cin, cout) in enumerate(zip(dims[:-1], dims[1:])):
        if level in (1, 2, 3):
            cin //= 2  # the previous upsample halves the channels
        for _ in range(num_res_blocks + 1):
            res(f"decoder.upsamples.{i}", cin, cout)
            cin, i = cout, i + 1
        if level != len(dim_mult) - 1:
            conv3(f"decoder.upsamples.{i}.resample.1", cout, cout // 2, (3, 3))
            if temporal_upsample[level]:
                conv3(f"decoder.upsamples.{i}.time_conv", cout, cout * 2, (3, 1, 1))
            i += 1
    s["decoder.head.0.gamma"] = (dims[-1], 1, 1, 1)
    conv3("decoder.head.2", dims[-1], 3, (3, 3, 3))
    return s


def _clip_encoder(s: dict, prefix: str, layers: int, hidden: int, ffn: int) -> None:
    for n in range(layers):
        p = f"{prefix}.encoder.layers.{n}"
        for proj in ("q_proj", "k_proj", "v_proj", "out_proj"):
            _linear(s, f"{p}.self_attn.{proj}", hidden, hidden)
        _norm(s, f"{p}.layer_norm1", hidden)
        _linear(s, f"{p}.mlp.fc1", ffn, hidden)
        _linear(s, f"{p}.mlp.fc2", hidden, ffn)
        _norm(s, f"{p}.layer_norm2", hidden)


def clip_l_text_shapes() -> dict[str, tuple[int, ...]]:
    """Key -> shape of OpenAI CLIP ViT-L/14's text tower in HF layout (``clip_l.safetensors``)."""
    s: dict[str, tuple[int, ...]] = {
        "text_model.embeddings.token_embedding.weight": (49408, 768),
        "text_model.embeddings.position_embedding.weight": (77, 768),
    }
    _clip_encoder(s, "text_model", 12, 768, 3072)
    _norm(s, "text_model.final_layer_norm", 768)
    s["text_projection.weight"] = (768, 768)
    return s


def clip_vision_h_shapes() -> dict[str, tuple[int, ...]]:
    """Key -> shape of OpenCLIP ViT-H/14's image tower in HF layout (``clip_vision_h.safetensors``)."""
    s: dict[str, tuple[int, ...]] = {
        "vision_model.embeddings.class_embedding": (1280,),
        "vision_model.embeddings.patch_embedding.weight": (1280, 3, 14, 14),
        "vision_model.embeddings.position_embedding.weight": (257, 1280),
    }
    _norm(s, "vision_model.pre_layrnorm", 1280)
    _clip_encoder(s, "vision_model", 32, 1280, 5120)
    _norm(s, "vision_model.post_layernorm", 1280)
    s["visual_projection.weight"] = (1024, 1280)
    return s


def wav2vec2_base_shapes() -> dict[str, tuple[int, ...]]:
    """Key -> shape of ``facebook/wav2vec2-base-960h``'s encoder (HF layout, no CTC head)."""
    s: dict[str, tuple[int, ...]] = {"feature_extractor.conv_layers.0.conv.weight": (512, 1, 10)}
    _norm(s, "feature_extractor.conv_layers.0.layer_norm", 512)  # group norm, first conv only
    for n, k in enumerate((3, 3, 3, 3, 2, 2), start=1):
        s[f"feature_extractor.conv_layers.{n}.conv.weight"] = (512, 512, k)
    _norm(s, "feature_projection.layer_norm", 512)
    _linear(s, "feature_projection.projection", 768, 512)
    s["masked_spec_embed"] = (768,)
    s["encoder.pos_conv_embed.conv.weight_g"] = (1, 1, 128)
    s["encoder.pos_conv_embed.conv.weight_v"] = (768, 48, 128)
    s["encoder.pos_conv_embed.conv.bias"] = (768,)
    _norm(s, "encoder.layer_norm", 768)
    for n in range(12):
        p = f"encoder.layers.{n}"
        for proj in ("q_proj", "k_proj", "v_proj", "out_proj"):
            _linear(s, f"{p}.attention.{proj}", 768, 768)
        _norm(s, f"{p}.layer_norm", 768)
        _linear(s, f"{p}.feed_forward.intermediate_dense", 3072, 768)
        _linear(s, f"{p}.feed_forward.output_dense", 768, 3072)
        _norm(s, f"{p}.final_layer_norm", 768)
    return s


def random_state(shapes: dict[str, tuple[int, ...]], seed: int, dtype=None) -> dict:
    """Seeded weights that keep activations bounded: weights ~ N(0, 1/fan_in), biases 0, and
    norm scales (1-D ``*norm*.weight``, ``gamma``, ``weight_g``) 1."""
    import torch

    gen = torch.Generator().manual_seed(seed)
    out = {}
    for key in sorted(shapes):
        shape = shapes[key]
        leaf = key.rsplit(".", 1)[-1]
        if leaf in ("gamma", "weight_g") or (leaf == "weight" and len(shape) == 1):
            t = torch.ones(shape)
        elif leaf == "bias":
            t = torch.zeros(shape)
        else:
            fan_in = max(1, int(torch.tensor(shape[1:]).prod()) if len(shape) > 1 else shape[0])
            t = torch.randn(shape, generator=gen) / fan_in ** 0.5
        out[key] = t.to(dtype or torch.float16)
    return out


def _save(state: dict, path: Path, kind: str) -> Path:
    from safetensors.torch import save_file

    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".partial")
    save_file({k: v.contiguous() for k, v in state.items()}, str(tmp), metadata={"smoke": FORMAT_TAG, "kind": kind})
    tmp.replace(path)
    return path


def make_wan_dit(path: Path, seed: int = 0) -> Path:
    """Wan2.1 I2V DiT single file (official keys) for UNETLoader: our ``tiny`` preset with the two
    widths core fixes (text_dim 4096, CLIP 1280); core infers dim, ffn, layers, in/out dims and
    heads = dim // 128 from the weights."""
    import torch

    from fantasytalking_core.wan import WanConfig, WanModel, init_random_

    cfg = WanConfig.tiny().with_(text_dim=4096, clip_dim=1280)
    model = init_random_(WanModel(cfg), seed=seed)
    return _save({k: v.to(torch.bfloat16) for k, v in model.state_dict().items()}, path, "wan21_i2v_dit")


def make_wan_vae(path: Path, seed: int = 1) -> Path:
    """Wan2.1 VAE for VAELoader (core fixes its width: 96 channels, 127M parameters)."""
    import torch

    return _save(random_state(wan_vae_shapes(), seed, torch.bfloat16), path, "wan21_vae")


def make_clip_l_text(path: Path, seed: int = 2) -> Path:
    """CLIP-L text encoder for CLIPLoader type "sd3" (CONDITIONING [1, 77, 4096], zero-padded)."""
    return _save(random_state(clip_l_text_shapes(), seed), path, "clip_l")


def make_clip_vision_h(path: Path, seed: int = 3) -> Path:
    """CLIP ViT-H/14 image encoder for CLIPVisionLoader (penultimate states [1, 257, 1280])."""
    return _save(random_state(clip_vision_h_shapes(), seed), path, "clip_vision_h")


def make_wav2vec2_base(path: Path, seed: int = 4) -> Path:
    """wav2vec2-base encoder for core's AudioEncoderLoader (768-d, 12 layers, 50 vectors/s)."""
    return _save(random_state(wav2vec2_base_shapes(), seed), path, "wav2vec2_base")


def _pack_config():
    from fantasytalking_core.wan import WanConfig

    return WanConfig.tiny().with_(text_dim=4096, clip_dim=1280)


def _tiny_adapters(seed: int) -> dict:
    """Audio, identity and motion adapters sized for make_wan_dit's DiT, random (they act)."""
    from fantasytalking_core.adapters import (AudioAdapterConfig, AudioAdapter, IdentityAdapter,
                                              MotionAdapter, IdentityAdapterConfig, MotionAdapterConfig)
    from fantasytalking_core.wan import init_random_

    cfg = _pack_config()
    return {
        "audio": init_random_(AudioAdapter(AudioAdapterConfig.for_wan(cfg, proj_dim=64)), seed=seed, std=0.2),
        "identity": init_random_(IdentityAdapter(IdentityAdapterConfig.for_wan(cfg)), seed=seed + 1, std=0.2),
        "motion": init_random_(MotionAdapter(MotionAdapterConfig.for_wan(cfg)), seed=seed + 2, std=0.2),
    }


def make_fantasytalking_ckpt(path: Path, seed: int = 5) -> Path:
    """The released fantasytalking_model.ckpt layout (a torch pickle of two state dicts), tiny."""
    import torch

    sd = _tiny_adapters(seed)["audio"].state_dict()
    parts = {p: {k[len(p) + 1:]: v.clone() for k, v in sd.items() if k.startswith(p + ".")}
             for p in ("proj_model", "audio_processor")}
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(parts, path)
    return path


def make_fantasytalking_adapters(path: Path, seed: int = 5) -> Path:
    """Our adapter file with audio, identity and motion (what training/ exports)."""
    from fantasytalking_core.checkpoints import save_adapters

    path.unlink(missing_ok=True)
    return save_adapters(path, _tiny_adapters(seed), extra={"smoke": FORMAT_TAG})


def make_arcface_pack(path: Path, seed: int = 6) -> Path:
    """An insightface pack folder holding one tiny ArcFace-signature ONNX model (112x112 -> 512)."""
    from tests._media_helpers import tiny_arcface

    path.parent.mkdir(parents=True, exist_ok=True)
    path.unlink(missing_ok=True)
    return tiny_arcface(path, seed=seed)


def make_lora(path: Path, seed: int = 7, rank: int = 4) -> Path:
    """A LoRA for make_wan_dit's DiT in core's generic format (``diffusion_model.<module>.lora_up/
    lora_down.weight``) on modules FantasyTalking patches (cross_attn.o) and one it does not (self_attn.q)."""
    import torch

    g = torch.Generator().manual_seed(seed)
    dim = _pack_config().dim
    state = {}
    for module in ("blocks.0.cross_attn.o", "blocks.1.cross_attn.o", "blocks.0.self_attn.q"):
        state[f"diffusion_model.{module}.lora_up.weight"] = torch.randn(dim, rank, generator=g) * 0.5
        state[f"diffusion_model.{module}.lora_down.weight"] = torch.randn(rank, dim, generator=g) * 0.5
    return _save(state, path, "lora")


# kind -> (models/ sub-folder, file name, maker)
MODEL_FILES: dict[str, tuple[str, str, Callable[[Path], Path]]] = {
    "wan_dit": ("diffusion_models", "smoke_wan21_i2v_tiny.safetensors", make_wan_dit),
    "wan_vae": ("vae", "smoke_wan21_vae.safetensors", make_wan_vae),
    "clip_l": ("text_encoders", "smoke_clip_l.safetensors", make_clip_l_text),
    "clip_vision_h": ("clip_vision", "smoke_clip_vision_h.safetensors", make_clip_vision_h),
    "wav2vec2": ("audio_encoders", "smoke_wav2vec2_base.safetensors", make_wav2vec2_base),
    "ft_ckpt": ("model_patches", "smoke_fantasytalking.ckpt", make_fantasytalking_ckpt),
    "ft_adapters": ("model_patches", "smoke_ft_adapters.safetensors", make_fantasytalking_adapters),
    "arcface": ("insightface", "models/smoke_pack/arcface_tiny.onnx", make_arcface_pack),
    "lora": ("loras", "smoke_wan_lora.safetensors", make_lora),
}


GGUF_TYPES = ("BF16", "Q8_0", "Q4_0")


def gguf_names(dit_name: str) -> dict[str, str]:
    """``{type: file name}`` of the GGUF versions of the DiT file ``dit_name``."""
    stem = dit_name.rsplit(".", 1)[0]
    return {t: f"{stem}-{t}.gguf" for t in GGUF_TYPES}


def make_gguf(src: Path, tools: Path, out: Path) -> dict[str, Path]:
    """BF16, Q8_0 and Q4_0 GGUF files of the DiT ``src`` in ``out`` (needs ``gguf``; see the module doc).

    ``convert.py`` leaves the 5-D patch embedding out (a fix file beside it); it is added back as
    F32, as ``fix_5d_tensors.py`` does (that script does not run with current gguf-py/numpy)."""
    import subprocess
    import tempfile

    import gguf
    from safetensors.numpy import load_file

    paths = {t: out / n for t, n in gguf_names(src.name).items()}
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="ft_gguf_") as tmp:
        work = Path(tmp)  # convert.py writes its 5-D fix file into the working directory
        subprocess.run([sys.executable, str(tools / "convert.py"), "--src", str(src), "--dst", str(work / "raw.gguf")],
                       cwd=work, check=True, capture_output=True)
        reader = gguf.GGUFReader(str(work / "raw.gguf"))
        extra = load_file(str(work / "fix_5d_tensors_wan.safetensors"))
        bf16 = gguf.GGMLQuantizationType.BF16
        for name, path in paths.items():
            qtype = getattr(gguf.GGMLQuantizationType, name)
            writer = gguf.GGUFWriter(path=None, arch="wan")
            writer.add_quantization_version(gguf.GGML_QUANT_VERSION)
            writer.add_file_type(getattr(gguf.LlamaFileType, f"MOSTLY_{name}"))
            for t in reader.tensors:  # the BF16 matrices quantised, the rest (F32 norms, biases) kept
                data, kind = t.data, t.tensor_type
                if kind == bf16 and qtype != bf16:
                    data, kind = gguf.quants.quantize(gguf.quants.dequantize(data, kind), qtype), qtype
                writer.add_tensor(t.name, data, raw_dtype=kind)
            for key, data in extra.items():
                f32 = gguf.GGMLQuantizationType.F32
                writer.add_tensor(key, gguf.quants.quantize(data.astype("float32"), f32), raw_dtype=f32)
            writer.write_header_to_file(path=str(path))
            writer.write_kv_data_to_file()
            writer.write_tensors_to_file()
            writer.close()
    return paths


def ensure_model(kind: str, models_dir: Path) -> Path:
    """The file for ``kind`` under ``models_dir`` (kept when it was made by this script version)."""
    from safetensors import safe_open

    folder, name, maker = MODEL_FILES[kind]
    path = models_dir / folder / name
    if path.is_file() and path.suffix == ".safetensors":
        try:
            with safe_open(str(path), "pt") as f:
                if (f.metadata() or {}).get("smoke") == FORMAT_TAG:
                    return path
        except Exception:  # a broken leftover: make it again
            pass
    return maker(path)


if __name__ == "__main__":
    import argparse

    ap = argparse.ArgumentParser(description="Make the GGUF versions of the tiny DiT (run with a Python that has gguf)")
    ap.add_argument("what", choices=["gguf"])
    ap.add_argument("--src", type=Path, required=True)
    ap.add_argument("--tools", type=Path, required=True, help="ComfyUI-GGUF's tools/ folder")
    ap.add_argument("--out", type=Path, required=True)
    a = ap.parse_args()
    for t, p in make_gguf(a.src, a.tools, a.out).items():
        print(f"{t} {p}")
