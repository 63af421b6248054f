"""Loaders: FantasyTalking adapter weights and the wav2vec2 audio encoder (local files only)."""

from __future__ import annotations

import torch

from fantasytalking_core.encoders import load_wav2vec

from . import _host
from .apply import refuse_multigpu
from .contracts import load_fantasytalking_model

CATEGORY = "FantasyTalking"
PRECISIONS = ["auto", "bf16", "fp16", "fp32"]
_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}


def _dtype(precision: str) -> torch.dtype:
    """auto: bf16 where the DiT runs on a GPU, fp32 on the CPU (CPU bf16 matmuls are slow)."""
    if precision == "auto":
        return torch.float32 if _host.torch_device().type == "cpu" else torch.bfloat16
    if precision not in _DTYPES:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    return _DTYPES[precision]


class FantasyTalkingModelLoader:
    DESCRIPTION = ("Loads FantasyTalking adapter weights: the released fantasytalking_model.ckpt (read without "
                   "running any code in it), its safetensors repackagings, or an adapter file trained with this "
                   "pack (audio, identity and motion modules). Put files in models/model_patches "
                   "(models/diffusion_models also works).")
    RETURN_TYPES = ("FANTASYTALKING_MODEL",)
    RETURN_NAMES = ("fantasytalking_model",)
    OUTPUT_TOOLTIPS = ("The adapter modules, for FantasyTalking Apply.",)
    FUNCTION = "load"
    CATEGORY = CATEGORY

    @classmethod
    def INPUT_TYPES(cls):
        _host.register_folders()
        return {"required": {
            "model_name": (_host.list_files("model_patches", "diffusion_models"),
                           {"tooltip": "fantasytalking_model.ckpt or an adapter .safetensors from models/model_patches "
                                       "or models/diffusion_models."}),
            "precision": (PRECISIONS, {"default": "auto",
                                       "tooltip": "Weight dtype. auto: bf16 on a GPU, fp32 on the CPU."}),
        }}

    def load(self, model_name: str, precision: str = "auto"):
        path = _host.full_path(model_name, "model_patches", "diffusion_models")
        model = load_fantasytalking_model(path, _dtype(precision))
        model.patcher = _host.managed(_AdapterBundle(model), on_deepclone=refuse_multigpu)
        return (model,)


class _AdapterBundle(torch.nn.Module):
    """All adapter modules under one root, so core's model management moves them together."""

    def __init__(self, model):
        super().__init__()
        for name, module in model.modules().items():
            self.add_module(name, module)


def wav2vec_choices() -> list[str]:
    _host.register_folders()
    folders = _host.list_dirs("audio_encoders", must_contain=("*.safetensors", "*.bin"))
    files = _host.list_files("audio_encoders", extensions=(".safetensors", ".bin", ".pt", ".pth"))
    files = [f for f in files if "/" not in f]  # files inside a model folder belong to that folder
    return folders + files


class FantasyTalkingWav2VecLoader:
    DESCRIPTION = ("Loads wav2vec2-base-960h from models/audio_encoders: a transformers folder (config.json + "
                   "model.safetensors or pytorch_model.bin) or one .safetensors file. Never downloads.")
    RETURN_TYPES = ("FANTASYTALKING_WAV2VEC",)
    RETURN_NAMES = ("wav2vec",)
    OUTPUT_TOOLTIPS = ("The audio encoder, for FantasyTalking Audio Encode.",)
    FUNCTION = "load"
    CATEGORY = CATEGORY

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "model_name": (wav2vec_choices(), {"tooltip": "A wav2vec2-base-960h folder or file in models/audio_encoders "
                                                          "(from huggingface.co/facebook/wav2vec2-base-960h)."}),
            "device": (["auto", "cpu"], {"default": "auto",
                                          "tooltip": "auto: the GPU when there is one. wav2vec2-base is small; cpu "
                                                     "keeps GPU memory for the DiT."}),
        }}

    def load(self, model_name: str, device: str = "auto"):
        path = _host.full_path(model_name, "audio_encoders")
        dev = _host.torch_device() if device == "auto" else torch.device("cpu")
        return (load_wav2vec(path, device=dev),)
