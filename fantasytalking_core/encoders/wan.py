"""The Wan2.1 encoders around the DiT: video VAE, UMT5 text encoder, CLIP image encoder.

Each sits behind a small duck-typed interface, so the pipeline and the tests can swap in any object
with the same contract (the tiny preset does):

- ``vae.encode(video [B, 3, T, H, W] in -1..1) -> latents [B, 16, (T-1)//4 + 1, H/8, W/8]``,
  normalised per channel with Wan's latents mean/std; ``vae.decode(latents) -> video in -1..1``;
- ``text_encoder(list[str]) -> list[Tensor [L_i, 4096]]``, each trimmed to its true token count
  (end token included), as Wan's ``T5EncoderModel`` returns them;
- ``clip_encoder(image [1, 3, H, W] in -1..1) -> [1, 257, 1280]``: CLIP ViT-H/14 penultimate
  layer after Wan's preprocessing (bicubic squash to 224x224, CLIP mean/std), i.e. Wan's
  ``CLIPModel.visual`` with ``use_31_block=True``.

Real weights are read from local files only (nothing is ever downloaded); a missing file raises
FileNotFoundError naming it, its ComfyUI folder and where to get it. Files are read and loaded by
`checkpoints` (`open_state`, `load_strict`), their key names mapped by `keymaps`. The VAE needs the
optional diffusers package (`pip install "diffusers>=0.33"`); inside ComfyUI core loads the VAE.
"""

from __future__ import annotations

import html
import json
import os
import re
from pathlib import Path
from typing import Callable, Protocol, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..checkpoints import CheckpointError, load_strict, open_state, read_tensor
from ..keymaps import clip_state, t5_names

REPACKAGED = "Comfy-Org/Wan_2.1_ComfyUI_repackaged (Hugging Face)"
WAN_REPO = "Wan-AI/Wan2.1-I2V-14B-480P (Hugging Face)"
WHERE_VAE = (f"Use wan_2.1_vae.safetensors from {REPACKAGED}, split_files/vae/, in ComfyUI/models/vae/, "
             f"or Wan2.1_VAE.pth from {WAN_REPO}, or a diffusers AutoencoderKLWan folder.")
WHERE_TEXT = (f"Use umt5_xxl_fp16.safetensors (or _fp8_e4m3fn_scaled) from {REPACKAGED}, split_files/"
              f"text_encoders/, in ComfyUI/models/text_encoders/ together with the google/umt5-xxl tokenizer "
              f"folder (--tokenizer), or the {WAN_REPO} folder (models_t5_umt5-xxl-enc-bf16.pth + google/umt5-xxl/), "
              "or a transformers UMT5 folder (config.json, weights, tokenizer files).")
WHERE_CLIP = (f"Use clip_vision_h.safetensors from {REPACKAGED}, split_files/clip_vision/, in "
              f"ComfyUI/models/clip_vision/, or models_clip_open-clip-xlm-roberta-large-vit-huge-14.pth "
              f"from {WAN_REPO}, or a transformers CLIPVisionModel folder.")
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


class VideoVAE(Protocol):
    def encode(self, video: torch.Tensor) -> torch.Tensor: ...
    def decode(self, latents: torch.Tensor) -> torch.Tensor: ...


class TextEncoder(Protocol):
    def __call__(self, texts: Sequence[str]) -> list[torch.Tensor]: ...


class ImageEncoder(Protocol):
    def __call__(self, image: torch.Tensor) -> torch.Tensor: ...


def pad_context(tokens: torch.Tensor, length: int) -> torch.Tensor:
    """Text tokens ``[L, D]`` or ``[B, L, D]`` zero-padded at the end to ``length`` rows (what Wan's
    DiT pads with itself), so prompts of different lengths batch together. Never truncates."""
    rows = tokens.shape[-2]
    if rows > length:
        raise ValueError(f"cannot pad {rows} text tokens down to {length}")
    return torch.nn.functional.pad(tokens, (0, 0, 0, length - rows)) if rows < length else tokens


def require(path: str | os.PathLike, what: str, where: str) -> Path:
    """The path if it exists, else FileNotFoundError naming the file and where it comes from."""
    p = Path(path).expanduser()
    if not p.exists():
        raise FileNotFoundError(f"{what} not found: {p}. {where}")
    return p


def _param(module: nn.Module) -> torch.Tensor:
    return next(module.parameters())


# ------------------------------------------------------------------------------------- VAE


class WanVAE:
    """diffusers ``AutoencoderKLWan`` with Wan's latent normalisation ``(mu - mean) / std``.

    Wan encodes with the posterior mean (no sampling) and clamps decoded video to [-1, 1]. The
    encode is never tiled, as the official pipeline's (tiles would change the first frame's
    latents); ``tiled_decode`` tiles the decode spatially (diffusers' tiles, not DiffSynth's), which
    bounds the decoder's memory at a small cost in exactness, as the official ``tiled=True`` decode.
    """

    def __init__(self, model: nn.Module, tiled_decode: bool = False):
        self.model = model.eval().requires_grad_(False)
        self.tiled_decode = tiled_decode
        cfg = model.config
        self.mean = torch.tensor(cfg.latents_mean, dtype=torch.float32).view(1, -1, 1, 1, 1)
        self.std = torch.tensor(cfg.latents_std, dtype=torch.float32).view(1, -1, 1, 1, 1)

    @torch.no_grad()
    def encode(self, video: torch.Tensor) -> torch.Tensor:
        p = _param(self.model)
        self.model.disable_tiling()
        mu = self.model.encode(video.to(p.device, p.dtype)).latent_dist.mode().float()
        return (mu - self.mean.to(mu.device)) / self.std.to(mu.device)

    @torch.no_grad()
    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        p = _param(self.model)
        if self.tiled_decode:
            self.model.enable_tiling()
        else:
            self.model.disable_tiling()
        z = latents.float() * self.std.to(latents.device) + self.mean.to(latents.device)
        return self.model.decode(z.to(p.device, p.dtype)).sample.float().clamp(-1.0, 1.0)


def load_vae(path: str | os.PathLike, device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32,
             tiling: bool = False) -> WanVAE:
    """Wan2.1 VAE from Wan's ``Wan2.1_VAE.pth``, ComfyUI's ``wan_2.1_vae.safetensors`` (same keys)
    or a diffusers folder (``config.json`` + ``diffusion_pytorch_model.safetensors``). ``tiling``
    tiles the decode only (see :class:`WanVAE`)."""
    p = require(path, "Wan VAE", WHERE_VAE)
    AutoencoderKLWan, convert_wan_vae_to_diffusers = _diffusers_wan_vae()
    if p.is_dir():
        if (p / "Wan2.1_VAE.pth").is_file():
            p = p / "Wan2.1_VAE.pth"
        elif (p / "config.json").is_file():
            model = AutoencoderKLWan.from_pretrained(str(p), local_files_only=True)
            return WanVAE(_to(model, device, dtype), tiled_decode=tiling)
        else:
            raise FileNotFoundError(f"{p} holds neither Wan2.1_VAE.pth nor a diffusers config.json. {WHERE_VAE}")
    src = open_state(p)
    if "encoder.conv1.weight" not in src.shapes or "decoder.middle.0.residual.0.gamma" not in src.shapes:
        raise CheckpointError(f"{p} is not a Wan2.1 VAE in Wan's own layout (no encoder.conv1.weight / "
                              f"decoder.middle.0.residual.0.gamma; first keys {sorted(src.shapes)[:4]}). {WHERE_VAE}")
    z2 = src.shapes["conv1.weight"][0]
    if z2 != 32:
        raise CheckpointError(f"{p} has {z2 // 2} latent channels; Wan2.1 uses 16 (is it the Wan2.2 VAE?). {WHERE_VAE}")
    state = convert_wan_vae_to_diffusers(src.tensors())
    model = AutoencoderKLWan(base_dim=src.shapes["encoder.conv1.weight"][0], z_dim=z2 // 2)
    load_strict(model, state, p, hint=WHERE_VAE)
    return WanVAE(_to(model, device, dtype), tiled_decode=tiling)


def _to(model: nn.Module, device, dtype: torch.dtype) -> nn.Module:
    return model.to(device) if dtype == _param(model).dtype else model.to(device=device, dtype=dtype)


def _diffusers_wan_vae():
    """diffusers' AutoencoderKLWan and its converter for Wan's own file layout (optional package)."""
    try:
        from diffusers import AutoencoderKLWan
        from diffusers.loaders.single_file_utils import convert_wan_vae_to_diffusers
    except ImportError as err:
        raise ImportError(f"the Wan VAE outside ComfyUI needs the diffusers package ({err}): pip install "
                          "\"diffusers>=0.33\" (inside ComfyUI, core's VAELoader loads the VAE instead)") from err
    return AutoencoderKLWan, convert_wan_vae_to_diffusers


# ------------------------------------------------------------------------------------- text


def clean_prompt(text: str) -> str:
    """The official prompter's ``whitespace_clean(basic_clean(text))`` (`wan_prompter.py`): ftfy's
    ``fix_text`` (which, for one, turns the full-width commas of Wan's Chinese negative prompt into
    ASCII commas, so the tokens differ without it), HTML entities unescaped twice, runs of
    whitespace made one space."""
    try:
        import ftfy
    except ImportError:
        raise ImportError("prompt cleaning needs ftfy, as the official code: pip install ftfy "
                          "(it is in requirements.txt)") from None
    text = html.unescape(html.unescape(ftfy.fix_text(text))).strip()
    return re.sub(r"\s+", " ", text).strip()


class UMT5TextEncoder:
    """A UMT5 encoder and a tokenizer; each prompt is encoded alone, so no padding is involved and the
    outputs equal Wan's padded-and-masked ones on the true tokens."""

    def __init__(self, model: nn.Module, tokenize: Callable[[str], list[int]], text_len: int = 512):
        self.model = model.eval().requires_grad_(False)
        self.tokenize = tokenize
        self.text_len = text_len

    @torch.no_grad()
    def __call__(self, texts: Sequence[str]) -> list[torch.Tensor]:
        if isinstance(texts, str):
            raise TypeError("text_encoder takes a list of prompts, not one string: pass [prompt]")
        device = _param(self.model).device
        out = []
        for text in texts:
            ids = list(self.tokenize(clean_prompt(text)))[: self.text_len]
            x = torch.tensor([ids], dtype=torch.long, device=device)
            # no attention mask: one prompt, no padding (a mask of ones only makes transformers read it back)
            out.append(self.model(input_ids=x).last_hidden_state[0].float())
        return out


def hf_tokenize(folder: Path, text_len: int = 512) -> Callable[[str], list[int]]:
    """A transformers tokenizer from a local folder (the google/umt5-xxl layout), end token appended."""
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(folder), local_files_only=True)
    return lambda text: tok(text, add_special_tokens=True, truncation=True, max_length=text_len)["input_ids"]


def _umt5_config(shapes: dict[str, tuple[int, ...]]):
    from transformers import UMT5Config

    vocab, d_model = shapes["shared.weight"]
    inner = shapes["encoder.block.0.layer.0.SelfAttention.q.weight"][0]
    heads = shapes["encoder.block.0.layer.0.SelfAttention.relative_attention_bias.weight"][1]
    layers = 1 + max(int(m.group(1)) for k in shapes if (m := re.match(r"encoder\.block\.(\d+)\.", k)))
    return UMT5Config(vocab_size=vocab, d_model=d_model, d_kv=inner // heads, num_heads=heads, num_layers=layers,
                      d_ff=shapes["encoder.block.0.layer.1.DenseReluDense.wi_0.weight"][0],
                      relative_attention_num_buckets=shapes[
                          "encoder.block.0.layer.0.SelfAttention.relative_attention_bias.weight"][0],
                      feed_forward_proj="gated-gelu", tie_word_embeddings=False)


def _find_tokenizer(weights: Path, tokenizer: str | os.PathLike | None) -> Path:
    if tokenizer is not None:
        return require(tokenizer, "UMT5 tokenizer folder", WHERE_TEXT)
    base = weights if weights.is_dir() else weights.parent
    for cand in (base, base / "google" / "umt5-xxl", base / "tokenizer", base.parent / "tokenizer"):
        if (cand / "tokenizer.json").is_file() or (cand / "spiece.model").is_file():
            return cand
    raise FileNotFoundError(
        f"no UMT5 tokenizer found for {weights} (looked for tokenizer.json or spiece.model in {base}, "
        f"{base / 'google' / 'umt5-xxl'}, {base / 'tokenizer'}). A ComfyUI umt5_xxl_*.safetensors file carries "
        f"its tokenizer in a form only ComfyUI reads; pass the google/umt5-xxl tokenizer folder (from the "
        f"google/umt5-xxl or {WAN_REPO} repository) with --tokenizer. {WHERE_TEXT}")


def load_text_encoder(path: str | os.PathLike, tokenizer: str | os.PathLike | None = None,
                      device: str | torch.device = "cpu", dtype: torch.dtype = torch.bfloat16) -> UMT5TextEncoder:
    """UMT5-XXL encoder from: Wan's ``models_t5_umt5-xxl-enc-bf16.pth`` (or the Wan-AI folder holding
    it), a ComfyUI ``umt5_xxl_*.safetensors`` (fp16/bf16/fp8 scaled), or a transformers folder
    (``config.json`` + ``model.safetensors`` or a sharded index). The tokenizer is a local folder."""
    from transformers import UMT5Config, UMT5EncoderModel

    p = require(path, "UMT5 text encoder", WHERE_TEXT)
    config = None
    weights = p
    if p.is_dir():
        if (p / "models_t5_umt5-xxl-enc-bf16.pth").is_file():
            weights = p / "models_t5_umt5-xxl-enc-bf16.pth"
        else:
            if (p / "config.json").is_file():
                config = UMT5Config.from_json_file(str(p / "config.json"))
                config.tie_word_embeddings = False
            found = sorted(p.glob("*.safetensors.index.json")) or sorted(p.glob("*.safetensors"))
            if not found:
                raise FileNotFoundError(f"no UMT5 weights in {p} (expected models_t5_umt5-xxl-enc-bf16.pth, "
                                        f"model.safetensors or a *.safetensors.index.json). {WHERE_TEXT}")
            weights = p if found[0].name.endswith(".index.json") else found[0]
    tok_dir = _find_tokenizer(weights, tokenizer)
    src = open_state(weights)
    names = t5_names(src.keys())
    if names is None:
        raise CheckpointError(f"{weights} is not a UMT5 encoder (no encoder.block.0.layer.0.SelfAttention.q.weight or "
                              f"Wan's blocks.0.attn.q.weight; first keys {sorted(src.keys())[:4]}). {WHERE_TEXT}")
    shapes = {n: src.shapes[k] for n, k in names.items()}
    config = config or _umt5_config(shapes)
    with torch.device("meta"):
        model = UMT5EncoderModel(config)
    expected = model.state_dict()
    state = {n: read_tensor(src, k, dtype) for n, k in names.items() if n in expected}
    if "encoder.embed_tokens.weight" in expected:  # tied to shared.weight
        state.setdefault("encoder.embed_tokens.weight", state.get("shared.weight"))
    load_strict(model, {k: v for k, v in state.items() if v is not None}, weights, assign=True, hint=WHERE_TEXT)
    return UMT5TextEncoder(model.to(device), hf_tokenize(tok_dir))


# ------------------------------------------------------------------------------------- CLIP


class ClipImageEncoder:
    """transformers ``CLIPVisionModel``; returns the penultimate hidden state, as Wan does."""

    def __init__(self, model: nn.Module):
        self.model = model.eval().requires_grad_(False)
        self.image_size = int(model.config.image_size)

    @torch.no_grad()
    def __call__(self, image: torch.Tensor) -> torch.Tensor:
        p = _param(self.model)
        s = self.image_size
        x = F.interpolate(image.float().to(p.device), size=(s, s), mode="bicubic", align_corners=False)
        mean = torch.tensor(CLIP_MEAN, device=x.device).view(1, 3, 1, 1)
        std = torch.tensor(CLIP_STD, device=x.device).view(1, 3, 1, 1)
        x = (x.mul(0.5).add(0.5) - mean) / std
        out = self.model(pixel_values=x.to(p.dtype), output_hidden_states=True)
        return out.hidden_states[-2].float()  # [1, 257, hidden]: after block 31 of 32, no post-norm


def _clip_config(state: dict[str, torch.Tensor]):
    from transformers import CLIPVisionConfig

    hidden = state["embeddings.class_embedding"].shape[0]
    patch = state["embeddings.patch_embedding.weight"].shape[-1]
    positions = state["embeddings.position_embedding.weight"].shape[0]
    layers = 1 + max(int(m.group(1)) for k in state if (m := re.match(r"encoder\.layers\.(\d+)\.", k)))
    # head counts cannot be read from shapes: the known CLIP widths, else 64-wide heads
    heads = {1280: 16, 1024: 16, 1664: 16, 768: 12}.get(hidden, max(1, hidden // 64))
    return CLIPVisionConfig(hidden_size=hidden, intermediate_size=state["encoder.layers.0.mlp.fc1.weight"].shape[0],
                            num_hidden_layers=layers, num_attention_heads=heads, patch_size=patch,
                            image_size=round((positions - 1) ** 0.5) * patch, hidden_act="gelu", layer_norm_eps=1e-5)


def load_clip_vision(path: str | os.PathLike, device: str | torch.device = "cpu",
                     dtype: torch.dtype = torch.float16) -> ClipImageEncoder:
    """CLIP ViT-H/14 from ComfyUI's ``clip_vision_h.safetensors`` (transformers names, ``vision_model.``
    prefix), Wan's open-clip ``.pth`` (visual tower only) or a transformers folder."""
    from transformers import CLIPVisionConfig, CLIPVisionModel

    p = require(path, "CLIP vision model", WHERE_CLIP)
    config = None
    if p.is_dir():
        wan = p / "models_clip_open-clip-xlm-roberta-large-vit-huge-14.pth"
        if wan.is_file():
            p = wan
        else:
            if (p / "config.json").is_file():
                cfg = json.loads((p / "config.json").read_text())
                config = CLIPVisionConfig(**cfg.get("vision_config", cfg))
            found = sorted(p.glob("*.safetensors"))
            if not found:
                raise FileNotFoundError(f"no CLIP vision weights (*.safetensors) in {p}. {WHERE_CLIP}")
            p = found[0]
    src = open_state(p)
    state = clip_state(src)
    if state is None:
        raise CheckpointError(f"{p} is not a CLIP vision model (no vision_model.embeddings.class_embedding or "
                              f"visual.cls_embedding; first keys {sorted(src.keys())[:4]}). {WHERE_CLIP}")
    model = CLIPVisionModel(config or _clip_config(state))
    if next(iter(model.state_dict())).startswith("vision_model."):  # transformers 4.x naming
        state = {"vision_model." + k: v for k, v in state.items()}
    optional = [k for k in model.state_dict() if k.endswith("position_ids")]  # a buffer some files carry
    load_strict(model, state, p, optional=optional, hint=WHERE_CLIP)
    return ClipImageEncoder(model.to(device=device, dtype=dtype))
