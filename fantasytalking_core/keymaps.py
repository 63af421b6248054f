"""Key-name tables for the encoders' checkpoints: each file layout users have -> the names of the
transformers model we load it into. Read by `checkpoints.py` (files, strict loading) and used by
`encoders/` (Wan2.1 encoders and wav2vec2); renames only, no numerics (except CLIP's fused qkv, split in three).

- UMT5 (text): Wan's ``models_t5_umt5-xxl-enc-bf16.pth`` (``blocks.N.attn.q``) or the
  transformers/ComfyUI layout (``encoder.block.N.layer.0.SelfAttention.q``, any prefix).
- CLIP ViT-H/14 (image): Wan's open-clip ``.pth`` (``visual.transformer.N.attn.to_qkv``) or the
  transformers/ComfyUI layout (``vision_model.embeddings.class_embedding``, any prefix).
- wav2vec2 (audio): transformers ``Wav2Vec2Model`` names, with or without the ``wav2vec2.`` prefix
  of ``Wav2Vec2ForCTC``, the positional conv's weight norm as legacy ``weight_g``/``weight_v`` or as
  ``parametrizations.weight.original0``/``original1``.
"""

from __future__ import annotations

import re
from typing import Any, Sequence

import torch

# ------------------------------------------------------------------------------------- UMT5

WAN_T5 = [  # Wan's T5Encoder names -> transformers UMT5EncoderModel names (N = block index)
    (r"token_embedding\.weight", "shared.weight"),
    (r"norm\.weight", "encoder.final_layer_norm.weight"),
    (r"blocks\.(\d+)\.norm1\.weight", r"encoder.block.\1.layer.0.layer_norm.weight"),
    (r"blocks\.(\d+)\.attn\.([qkvo])\.weight", r"encoder.block.\1.layer.0.SelfAttention.\2.weight"),
    (r"blocks\.(\d+)\.pos_embedding\.embedding\.weight",
     r"encoder.block.\1.layer.0.SelfAttention.relative_attention_bias.weight"),
    (r"blocks\.(\d+)\.norm2\.weight", r"encoder.block.\1.layer.1.layer_norm.weight"),
    (r"blocks\.(\d+)\.ffn\.gate\.0\.weight", r"encoder.block.\1.layer.1.DenseReluDense.wi_0.weight"),
    (r"blocks\.(\d+)\.ffn\.fc1\.weight", r"encoder.block.\1.layer.1.DenseReluDense.wi_1.weight"),
    (r"blocks\.(\d+)\.ffn\.fc2\.weight", r"encoder.block.\1.layer.1.DenseReluDense.wo.weight"),
]
HF_T5_PROBE = "encoder.block.0.layer.0.SelfAttention.q.weight"


def t5_names(keys: Sequence[str]) -> dict[str, str] | None:
    """{transformers name: file key} for Wan's layout or the transformers/ComfyUI one (any prefix);
    None when the keys are neither."""
    keys = list(keys)
    if "blocks.0.attn.q.weight" in keys:  # models_t5_umt5-xxl-enc-bf16.pth
        out = {}
        for k in keys:
            for pat, rep in WAN_T5:
                if re.fullmatch(pat, k):
                    out[re.sub(pat, rep, k)] = k
        return out
    probe = next((k for k in keys if k.endswith(HF_T5_PROBE)), None)
    if probe is None:
        return None
    prefix = probe[: -len(HF_T5_PROBE)]
    names = {k[len(prefix):]: k for k in keys if k.startswith(prefix)}
    return {n: k for n, k in names.items() if n == "shared.weight" or n.startswith("encoder.")}


# ------------------------------------------------------------------------------------- CLIP

WAN_CLIP = [  # Wan's open-clip ViT (visual.*) -> CLIPVisionModel names without the vision_model. prefix
    (r"visual\.patch_embedding\.weight", "embeddings.patch_embedding.weight"),
    (r"visual\.pre_norm\.(weight|bias)", r"pre_layrnorm.\1"),
    (r"visual\.post_norm\.(weight|bias)", r"post_layernorm.\1"),
    (r"visual\.transformer\.(\d+)\.norm1\.(weight|bias)", r"encoder.layers.\1.layer_norm1.\2"),
    (r"visual\.transformer\.(\d+)\.norm2\.(weight|bias)", r"encoder.layers.\1.layer_norm2.\2"),
    (r"visual\.transformer\.(\d+)\.attn\.proj\.(weight|bias)", r"encoder.layers.\1.self_attn.out_proj.\2"),
    (r"visual\.transformer\.(\d+)\.mlp\.0\.(weight|bias)", r"encoder.layers.\1.mlp.fc1.\2"),
    (r"visual\.transformer\.(\d+)\.mlp\.2\.(weight|bias)", r"encoder.layers.\1.mlp.fc2.\2"),
]
CLIP_PARTS = ("embeddings.", "pre_layrnorm.", "encoder.", "post_layernorm.")


def clip_state(src: Any) -> dict[str, torch.Tensor] | None:
    """A CLIP vision checkpoint (a `checkpoints.StateSource`) -> CLIPVisionModel names without the
    ``vision_model.`` prefix, the vision tower only; None when it is no CLIP vision model."""
    keys = src.keys()
    if "visual.cls_embedding" in src.shapes:  # Wan's models_clip_open-clip-xlm-roberta-large-vit-huge-14.pth
        state = {"embeddings.class_embedding": src.get("visual.cls_embedding").reshape(-1),
                 "embeddings.position_embedding.weight": src.get("visual.pos_embedding")[0]}
        for k in keys:
            m = re.fullmatch(r"visual\.transformer\.(\d+)\.attn\.to_qkv\.(weight|bias)", k)
            if m:
                for name, part in zip("qkv", src.get(k).chunk(3, dim=0)):
                    state[f"encoder.layers.{m.group(1)}.self_attn.{name}_proj.{m.group(2)}"] = part
                continue
            for pat, rep in WAN_CLIP:
                if re.fullmatch(pat, k):
                    state[re.sub(pat, rep, k)] = src.get(k)
        return state
    probe = next((k for k in keys if k.endswith("embeddings.class_embedding")), None)
    if probe is None:
        return None
    prefix = probe[: -len("embeddings.class_embedding")]
    state = {k[len(prefix):]: src.get(k) for k in keys if k.startswith(prefix)}
    return {k: v for k, v in state.items() if k.startswith(CLIP_PARTS) and not k.endswith("position_ids")}


# ------------------------------------------------------------------------------------- wav2vec2

WAV2VEC_POS_CONV = "encoder.pos_conv_embed.conv."
WAV2VEC_DROPPED = ("lm_head.", "quantizer.", "project_q.", "project_hid.", "masked_spec_embed")
WAV2VEC_OPTIONAL = ("masked_spec_embed",)  # a training-time vector, unused at inference


def wav2vec_state(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Any known wav2vec2 layout -> transformers ``Wav2Vec2Model`` names (weight norm still either
    form: `match_weight_norm` picks the model's). CTC head, pre-training heads and the masking
    vector are dropped."""
    out = {}
    for k, v in sd.items():
        k = k[len("wav2vec2."):] if k.startswith("wav2vec2.") else k
        if not k.startswith(WAV2VEC_DROPPED):
            out[k] = v
    return out


def match_weight_norm(sd: dict[str, torch.Tensor], model_keys: Sequence[str]) -> None:
    """Rename the positional conv's weight-norm tensors in place to the form `model_keys` use."""
    pairs = (("weight_g", "parametrizations.weight.original0"), ("weight_v", "parametrizations.weight.original1"))
    for legacy, param in pairs:
        a, b = WAV2VEC_POS_CONV + legacy, WAV2VEC_POS_CONV + param
        if a in sd and b in model_keys:
            sd[b] = sd.pop(a)
        elif b in sd and a in model_keys:
            sd[a] = sd.pop(b)

