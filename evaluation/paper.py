"""The paper's metrics (Sync-C, Sync-D, FID, FVD, IDC, aesthetics) when their weights are present.

Each is computed as its reference implementation does, so numbers compare with published tables:
- Sync-C / Sync-D: joonson/syncnet_python (see `syncnet`).
- FID: pytorch-fid (pool3 of the FID Inception, sample covariance) over frames of the generated
  and the real video(s); FVD: StyleGAN-V (I3D features of 16-frame clips, population covariance).
  Both are set-level statistics: per video they are noisy; over a folder (batch mode with
  `--real DIR`) they are what papers report.
- IDC: VBench's subject consistency with DINO: per frame i >= 1 the mean of max(0, cos(f_i,
  f_i-1)) and max(0, cos(f_i, f_0)), averaged. VBench feeds DINO 0..255 pixel values through
  ImageNet mean/std (its `dino_transform` has no /255); `vbench_scaling=True` (default) keeps that
  so the numbers match VBench-derived tables. Which exact IDC protocol the FantasyTalking paper
  used could not be verified here; the report names this one.
- Aesthetics: VBench's aesthetic quality: LAION head on unit-norm CLIP ViT-L/14 embeddings
  (bicubic resize of the short side to 224, centre crop), mean over frames; reported on the
  head's 1-10 scale (`aesthetic`) and divided by 10 as VBench prints it (`aesthetic_vbench`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from . import weights as W
from .frechet import feature_stats, frechet_distance
from .media import EvalInput, sample_indices

IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
CLIP_MEAN, CLIP_STD = (0.48145466, 0.4578275, 0.40821073), (0.26862954, 0.26130258, 0.27577711)


def resize_shorter(x: torch.Tensor, size: int, mode: str) -> torch.Tensor:
    """torchvision `Resize(size)` on a float tensor `[N,C,H,W]`: short side to `size`, long side
    `int(size * long / short)`, antialiased."""
    h, w = x.shape[-2:]
    if h <= w:
        new = (size, int(size * w / h))
    else:
        new = (int(size * h / w), size)
    if new == (h, w):
        return x
    return F.interpolate(x, size=new, mode=mode, align_corners=False, antialias=True)


def center_crop(x: torch.Tensor, size: int) -> torch.Tensor:
    h, w = x.shape[-2:]
    top, left = int(round((h - size) / 2.0)), int(round((w - size) / 2.0))
    return x[..., top:top + size, left:left + size]


def _device(model: Any) -> torch.device:
    return next(model.parameters()).device


def _normalize(x: torch.Tensor, mean: tuple, std: tuple) -> torch.Tensor:
    return (x - torch.tensor(mean).view(1, 3, 1, 1)) / torch.tensor(std).view(1, 3, 1, 1)


@torch.no_grad()
def dino_features(model: Any, frames: np.ndarray, vbench_scaling: bool = True, batch: int = 16) -> torch.Tensor:
    """Unit-norm DINO CLS features `[N,D]` of RGB uint8 frames `[N,H,W,3]`, VBench preprocessing."""
    out = []
    for i in range(0, len(frames), batch):
        x = torch.from_numpy(np.ascontiguousarray(frames[i:i + batch])).permute(0, 3, 1, 2).float()  # 0..255
        x = resize_shorter(x, 224, "bilinear")
        x = _normalize(x if vbench_scaling else x / 255.0, IMAGENET_MEAN, IMAGENET_STD)
        feats = model(pixel_values=x.to(_device(model)), interpolate_pos_encoding=True).last_hidden_state[:, 0]
        out.append(F.normalize(feats.float().cpu(), dim=-1))
    return torch.cat(out)


def subject_consistency(feats: torch.Tensor) -> float:
    """VBench: mean over i >= 1 of (max(0, cos(f_i, f_{i-1})) + max(0, cos(f_i, f_0))) / 2."""
    if len(feats) < 2:
        raise ValueError("IDC needs at least 2 frames")
    f = F.normalize(feats.double(), dim=-1)
    pre = (f[1:] * f[:-1]).sum(-1).clamp(min=0)
    first = (f[1:] @ f[0]).clamp(min=0)
    return float(((pre + first) / 2).mean())


@torch.no_grad()
def clip_embeddings(model: Any, frames: np.ndarray, batch: int = 16) -> torch.Tensor:
    """Unit-norm CLIP image embeddings `[N,768]` with VBench's `clip_transform(224)`."""
    out = []
    for i in range(0, len(frames), batch):
        x = torch.from_numpy(np.ascontiguousarray(frames[i:i + batch])).permute(0, 3, 1, 2).float()
        x = center_crop(resize_shorter(x, 224, "bicubic"), 224) / 255.0
        emb = model(pixel_values=_normalize(x, CLIP_MEAN, CLIP_STD).to(_device(model))).image_embeds
        out.append(F.normalize(emb.float().cpu(), dim=-1))
    return torch.cat(out)


def video_clips(frames: np.ndarray, length: int) -> np.ndarray:
    """Non-overlapping clips of `length` consecutive frames `[K,length,H,W,3]` (the tail dropped)."""
    k = len(frames) // length
    if k == 0:
        raise ValueError(f"FVD clips need {length} frames; the video has {len(frames)}")
    return frames[: k * length].reshape(k, length, *frames.shape[1:])


@torch.no_grad()
def i3d_features(detector: Any, clips: np.ndarray, batch: int = 4, device: str = "cpu") -> np.ndarray:
    """StyleGAN-V's call on uint8 clips `[K,T,H,W,3]` -> float64 features `[K,400]`."""
    out = []
    for i in range(0, len(clips), batch):
        x = torch.from_numpy(np.ascontiguousarray(clips[i:i + batch])).permute(0, 4, 1, 2, 3)  # [B,3,T,H,W] uint8
        out.append(detector(x.to(device), rescale=True, resize=True, return_features=True).double().cpu().numpy())
    return np.concatenate(out)


def boxes_from_landmarks(landmarks: np.ndarray, found: np.ndarray) -> np.ndarray:
    """Per-frame face boxes `[T,4]` from face-mesh landmarks, linearly interpolated over frames
    without a face (held at the ends), as syncnet_python's tracker fills gaps."""
    idx = np.flatnonzero(found)
    if len(idx) == 0:
        raise ValueError("no face found in any frame")
    boxes = np.concatenate([np.nanmin(landmarks[idx], 1), np.nanmax(landmarks[idx], 1)], axis=1)  # [K,4]
    t = np.arange(len(found))
    return np.stack([np.interp(t, idx, boxes[:, j]) for j in range(4)], axis=1)


class PaperModels:
    """The paper-metric networks, loaded on first use from one folder and kept by the caller
    (one instance serves a whole batch)."""

    def __init__(self, folder: str | Path, device: str = "cpu") -> None:
        self.folder, self.device, self._loaded = Path(folder), device, {}

    def get(self, key: str) -> Any:
        if key not in self._loaded:
            from .syncnet import load_syncnet

            loaders = {"sync": load_syncnet, "fid": W.load_inception, "fvd": W.load_i3d, "idc": W.load_dino,
                       "clip": W.load_clip_vit_l14, "aesthetic": W.load_aesthetic_head}
            model = loaders[key](W.find_model(key, self.folder))
            self._loaded[key] = model.to(self.device) if hasattr(model, "to") else model
        return self._loaded[key]

    def describe(self, key: str) -> str:
        return str(W.find_model(key, self.folder))


def fid_features(models: PaperModels, frames: np.ndarray, max_frames: int) -> np.ndarray:
    from .inception import inception_features

    sel = frames[sample_indices(len(frames), max_frames)]
    return inception_features(models.get("fid"), sel, device=models.device).numpy()


def fid_from_features(gen: np.ndarray, real: np.ndarray) -> float:
    return frechet_distance(*feature_stats(gen, ddof=1), *feature_stats(real, ddof=1))


def fvd_features(models: PaperModels, frames: np.ndarray, clip_frames: int) -> np.ndarray:
    return i3d_features(models.get("fvd"), video_clips(frames, clip_frames), device=models.device)


def fvd_from_features(gen: np.ndarray, real: np.ndarray) -> float:
    return frechet_distance(*feature_stats(gen, ddof=0), *feature_stats(real, ddof=0))


def _one(name: str, inp: EvalInput, track: Any, models: PaperModels, cfg: Any, real: EvalInput | None) -> dict:
    frames = inp.frames
    if name == "sync":
        if inp.audio is None:
            return {"available": False, "reason": f"no audio ({inp.audio_source})"}
        from .syncnet import indices_at_25fps, syncnet_crops, syncnet_scores

        model = models.get("sync")
        idx = indices_at_25fps(len(frames), inp.fps)
        crops = syncnet_crops(frames[idx], boxes_from_landmarks(track.landmarks, track.found)[idx])
        res = syncnet_scores(model, crops, inp.audio, cfg.syncnet_vshift, device=models.device)
        return {"available": True, "value": res["sync_c"], "sync_c": res["sync_c"], "sync_d": res["sync_d"],
                "offset": res["offset"], "windows": res["windows"], "mean_dists": res["mean_dists"]}
    if name == "idc":
        feats = dino_features(models.get("idc"), frames[sample_indices(len(frames), cfg.paper_max_frames)])
        return {"available": True, "value": subject_consistency(feats), "protocol": "VBench subject consistency"}
    if name == "aesthetic":
        head = models.get("aesthetic")
        emb = clip_embeddings(models.get("clip"), frames[sample_indices(len(frames), cfg.paper_max_frames)])
        with torch.no_grad():
            score = float(head(emb.to(_device(head))).mean())
        return {"available": True, "value": score, "aesthetic_vbench": score / 10, "head": head.kind}
    if real is None:
        return {"available": False, "reason": f"{name.upper()} compares with real video: pass --real REAL.mp4 "
                                              "(or --real DIR in batch mode)"}
    if name == "fid":
        gen = fid_features(models, frames, cfg.paper_max_frames)
        ref = fid_features(models, real.frames, cfg.paper_max_frames)
        return {"available": True, "value": fid_from_features(gen, ref), "frames": [len(gen), len(ref)],
                "note": "FID of one video's frames; papers report it over a whole test set"}
    gen = fvd_features(models, frames, cfg.fvd_clip_frames)
    ref = fvd_features(models, real.frames, cfg.fvd_clip_frames)
    return {"available": True, "value": fvd_from_features(gen, ref), "clips": [len(gen), len(ref)],
            "note": "FVD of one video's clips; papers report it over a whole test set"}


def evaluate_paper(inp: EvalInput, track: Any, models: PaperModels, cfg: Any, real: EvalInput | None = None) -> dict:
    """{metric: {"available", "value" | "reason", ...}} for every metric in `cfg.paper_metrics`.
    Missing or unreadable weights make that metric unavailable with the loader's message."""
    out = {}
    for name in cfg.paper_metrics:
        try:
            out[name] = _one(name, inp, track, models, cfg, real)
        except (W.MissingModelError, ValueError) as exc:
            out[name] = {"available": False, "reason": str(exc)}
    return out


def paper_headline(paper: dict) -> dict[str, Any]:
    get = lambda k, f="value": paper.get(k, {}).get(f) if paper.get(k, {}).get("available") else None  # noqa: E731
    return {"sync_c": get("sync", "sync_c"), "sync_d": get("sync", "sync_d"), "sync_offset": get("sync", "offset"),
            "fid": get("fid"), "fvd": get("fvd"), "idc": get("idc"), "aesthetic": get("aesthetic")}
