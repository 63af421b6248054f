"""The paper metrics' weights: exact file names, where users get them, and their loaders.

All files live in one folder (`--models DIR`, default `<models>/eval`, see `config`). Nothing is
ever downloaded: a missing file raises `MissingModelError` naming the file, the folder and the
source. Pickled weights are read with `torch.load(weights_only=True)` (tensors only); the I3D
detector is a TorchScript archive, as StyleGAN-V ships it; DINO and CLIP are transformers folders
read with `local_files_only=True`.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from fantasytalking_core.checkpoints import load_strict


@dataclass(frozen=True)
class ModelFile:
    names: tuple[str, ...]  # accepted names, first preferred
    what: str
    source: str


MODEL_FILES: dict[str, ModelFile] = {
    "sync": ModelFile(("syncnet_v2.model",), "SyncNet v2 for Sync-C / Sync-D",
                      "joonson/syncnet_python (download_model.sh): "
                      "http://www.robots.ox.ac.uk/~vgg/software/lipsync/data/syncnet_v2.model"),
    "fid": ModelFile(("pt_inception-2015-12-05-6726825d.pth",), "FID Inception-v3 (pytorch-fid weights)",
                     "https://github.com/mseitzer/pytorch-fid/releases/download/fid_weights/"
                     "pt_inception-2015-12-05-6726825d.pth"),
    "fvd": ModelFile(("i3d_torchscript.pt",), "I3D (Kinetics-400) TorchScript detector for FVD, as StyleGAN-V",
                     "https://www.dropbox.com/s/ge9e5ujwgetktms/i3d_torchscript.pt (StyleGAN-V's FVD code)"),
    "idc": ModelFile(("dino-vitb16", "dino-vits16"), "DINO ViT folder (transformers format) for IDC",
                     "Hugging Face facebook/dino-vitb16 (VBench's subject-consistency model) or "
                     "facebook/dino-vits16: the folder with config.json and model.safetensors"),
    "clip": ModelFile(("clip-vit-large-patch14",), "CLIP ViT-L/14 folder (transformers format) for the aesthetic score",
                      "Hugging Face openai/clip-vit-large-patch14: the folder with config.json and the weights"),
    "aesthetic": ModelFile(("sa_0_4_vit_l_14_linear.pth", "sac+logos+ava1-l14-linearMSE.pth"),
                           "LAION aesthetic predictor head over CLIP ViT-L/14",
                           "LAION-AI/aesthetic-predictor (sa_0_4_vit_l_14_linear.pth, the head VBench uses) or "
                           "christophschuhmann/improved-aesthetic-predictor (sac+logos+ava1-l14-linearMSE.pth)"),
}


class MissingModelError(FileNotFoundError):
    """A paper metric's weights are not in the models folder."""


def find_model(key: str, folder: str | os.PathLike) -> Path:
    """The path of `MODEL_FILES[key]` in `folder` (first accepted name found) or MissingModelError."""
    spec, folder = MODEL_FILES[key], Path(folder)
    for name in spec.names:
        if (folder / name).exists():
            return folder / name
    names = " or ".join(spec.names)
    raise MissingModelError(
        f"{spec.what}: {names} not found in {folder.resolve()}. Get it from {spec.source} and put it there "
        f"(e.g. {folder / spec.names[0]}), or point --models at the folder that has it. Nothing is downloaded "
        f"automatically."
    )


def _load_tensors(path: Path, what: str) -> dict[str, torch.Tensor]:
    """The file's tensors through the core's one safe reader (a weights-only pickle or safetensors)."""
    from fantasytalking_core.checkpoints import CheckpointError, read_state_dict

    try:
        return read_state_dict(path)
    except CheckpointError as exc:
        raise ValueError(f"could not read {what} {path}: {exc}. It must be a plain state dict of tensors; "
                         f"re-download the file (a truncated download or an HTML page fails here)") from exc


def load_inception(path: str | os.PathLike) -> Any:
    """`pt_inception-2015-12-05-6726825d.pth` -> FIDInception (strict key match), eval mode."""
    from .inception import FIDInception

    p = Path(path)
    sd = _load_tensors(p, "FID Inception weights")
    model = FIDInception()
    load_strict(model, sd, p, hint="It is not pytorch-fid's FID Inception state dict (pt_inception-2015-12-05).")
    return model.eval()


def load_i3d(path: str | os.PathLike) -> Any:
    """StyleGAN-V's `i3d_torchscript.pt`: called as `detector(videos, rescale=True, resize=True,
    return_features=True)` on uint8 `[B,3,T,H,W]`, giving `[B,400]`."""
    import warnings

    p = Path(path)
    try:
        with warnings.catch_warnings():  # TorchScript is deprecated in new torch; the file exists only as one
            warnings.filterwarnings("ignore", message=".*torch.jit.load.*is deprecated", category=DeprecationWarning)
            return torch.jit.load(str(p), map_location="cpu").eval()
    except Exception as exc:
        raise ValueError(f"could not load the I3D TorchScript archive {p}: {exc}; re-download i3d_torchscript.pt") from exc


def load_dino(folder: str | os.PathLike) -> Any:
    """A transformers DINO ViT folder (facebook/dino-vitb16 layout) -> ViTModel, eval mode."""
    from transformers import ViTModel

    help_ = "Expected the facebook/dino-vitb16 folder (config.json + model.safetensors or pytorch_model.bin)"
    try:
        model, info = ViTModel.from_pretrained(str(folder), add_pooling_layer=False, local_files_only=True,
                                               output_loading_info=True)
    except Exception as exc:
        raise ValueError(f"could not load a DINO ViT from {folder}: {exc}. {help_}") from exc
    return _checked(model, info, folder, help_)


def _checked(model: Any, info: dict, folder: Any, help_: str) -> Any:
    """Refuse a transformers model whose weights were not all in the folder (transformers would
    otherwise start them from random values and say so only in a log line)."""
    bad = list(info.get("missing_keys", [])) + [str(m[0]) if isinstance(m, tuple) else str(m)
                                                 for m in info.get("mismatched_keys", [])]
    if bad:
        raise ValueError(f"{folder} does not hold all weights of {type(model).__name__}: missing or mismatched "
                         f"{bad[:5]}. {help_}")
    return model.eval()


def load_clip_vit_l14(folder: str | os.PathLike) -> Any:
    """A transformers CLIP folder (openai/clip-vit-large-patch14) -> CLIPVisionModelWithProjection."""
    import json

    from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection

    help_ = "Expected the openai/clip-vit-large-patch14 folder (config.json + weights)"
    cfg_path = Path(folder) / "config.json"
    try:
        raw = json.loads(cfg_path.read_text(encoding="utf-8"))
        # a full CLIP folder: the projection size is the top-level one (the vision part's default is 512)
        config = None
        if raw.get("model_type") == "clip":
            config = CLIPVisionConfig(**{**raw.get("vision_config", {}), "projection_dim": raw.get("projection_dim", 512)})
        model, info = CLIPVisionModelWithProjection.from_pretrained(str(folder), config=config, local_files_only=True,
                                                                    output_loading_info=True)
    except Exception as exc:
        raise ValueError(f"could not load CLIP from {folder}: {exc}. {help_}") from exc
    return _checked(model, info, folder, help_)


class AestheticHead(torch.nn.Module):
    """The LAION aesthetic heads over unit-norm CLIP ViT-L/14 image embeddings `[N,768]`:
    v1 `Linear(768, 1)` (keys weight, bias); v2 (improved-aesthetic-predictor) an MLP
    768-1024-128-64-16-1 whose Linear layers sit at `layers.0/2/4/6/7` (dropouts between)."""

    def __init__(self, kind: str, dim: int = 768) -> None:
        super().__init__()
        self.kind = kind
        if kind == "linear":
            self.head = torch.nn.Linear(dim, 1)
        else:
            d = torch.nn.Dropout
            self.layers = torch.nn.Sequential(torch.nn.Linear(dim, 1024), d(0.2), torch.nn.Linear(1024, 128), d(0.2),
                                              torch.nn.Linear(128, 64), d(0.1), torch.nn.Linear(64, 16),
                                              torch.nn.Linear(16, 1))

    def forward(self, emb: torch.Tensor) -> torch.Tensor:
        return (self.head(emb) if self.kind == "linear" else self.layers(emb)).squeeze(-1)  # [N]


def load_aesthetic_head(path: str | os.PathLike) -> AestheticHead:
    p = Path(path)
    sd = _load_tensors(p, "LAION aesthetic head")
    if set(sd) == {"weight", "bias"}:
        head = AestheticHead("linear", sd["weight"].shape[1])
        load_strict(head.head, sd, p)
    elif "layers.0.weight" in sd:
        head = AestheticHead("mlp", sd["layers.0.weight"].shape[1])
        load_strict(head, sd, p, hint="It does not match the improved-aesthetic-predictor MLP.")
    else:
        raise ValueError(f"{p} is not a LAION aesthetic head: keys {sorted(sd)[:6]}; expected 'weight'/'bias' "
                         "(sa_0_4_vit_l_14_linear.pth) or 'layers.N.*' (sac+logos+ava1-l14-linearMSE.pth)")
    return head.eval()
