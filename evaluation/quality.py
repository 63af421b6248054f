"""Frame quality without weights: temporal flicker and sharpness.

- `flicker_luma`: mean |change of the frame's mean luma| between consecutive frames, in 8-bit
  levels (0-255). Global brightness pumping; motion barely moves it. Lower is better.
- `flicker_warp`: mean |luma(t) - luma(t+1) warped back to t by the Farneback flow|, in 8-bit
  levels, over pixels whose flow stays inside the frame. What motion does not explain: flicker,
  boiling texture, and also occlusions and flow errors. Lower is better; compare like with like.
- `sharpness`: variance of the 3x3 Laplacian of the grey frame (OpenCV `Laplacian`, ksize 1),
  at the video's own resolution, mean over sampled frames; `sharpness_face` the same inside the
  face-mesh box (+10%). Higher is sharper. It grows with resolution and texture: compare videos
  of the same size and content (e.g. settings of one generation).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from .media import sample_indices

LUMA = np.array([0.299, 0.587, 0.114])  # BT.601


def luma(frames: np.ndarray) -> np.ndarray:
    """BT.601 luma float32 `[T,H,W]` in 0..255 from RGB uint8 `[T,H,W,3]`."""
    return (np.asarray(frames, np.float32) @ LUMA.astype(np.float32)).astype(np.float32)


def flicker_luma(frames: np.ndarray) -> np.ndarray:
    """|mean luma(t+1) - mean luma(t)| per pair `[T-1]`, 8-bit levels."""
    means = np.asarray(frames).mean(axis=(1, 2), dtype=np.float64) @ LUMA  # luma is linear: mean of luma
    return np.abs(np.diff(means))


def warp_residual(frames: np.ndarray, flows: np.ndarray) -> np.ndarray:
    """Per pair `[T-1]`: mean |luma(t) - luma(t+1) sampled at (x + dx, y + dy)| over pixels
    that land inside frame t+1 (bilinear), 8-bit levels. `flows` `[T-1,H,W,2]` from t to t+1."""
    import cv2

    y = luma(frames)
    h, w = y.shape[1:]
    yy, xx = np.mgrid[:h, :w].astype(np.float32)
    out = np.zeros(len(flows))
    for t, f in enumerate(flows):
        mx, my = xx + f[..., 0], yy + f[..., 1]
        warped = cv2.remap(y[t + 1], mx, my, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
        inside = (mx >= 0) & (mx <= w - 1) & (my >= 0) & (my <= h - 1)
        out[t] = float(np.abs(y[t] - warped)[inside].mean()) if inside.any() else np.nan
    return out


def laplacian_variance(grey: np.ndarray) -> float:
    """Variance of the 3x3 Laplacian (OpenCV ksize=1, reflect-101 borders) of a grey image."""
    import cv2

    return float(cv2.Laplacian(np.asarray(grey, np.float64), cv2.CV_64F, ksize=1).var())


def face_box(landmarks: np.ndarray, h: int, w: int, margin: float = 0.1) -> tuple[int, int, int, int] | None:
    """Pixel box (x0, y0, x1, y1) around face-mesh landmarks `[N,2]`, grown by `margin` per side."""
    if not np.isfinite(landmarks).all():
        return None
    (x0, y0), (x1, y1) = landmarks.min(0), landmarks.max(0)
    mx, my = margin * (x1 - x0), margin * (y1 - y0)
    box = (max(int(x0 - mx), 0), max(int(y0 - my), 0), min(int(np.ceil(x1 + mx)), w), min(int(np.ceil(y1 + my)), h))
    return box if box[2] - box[0] >= 8 and box[3] - box[1] >= 8 else None


@dataclass
class QualityResult:
    flicker_luma: np.ndarray  # [T-1]
    flicker_warp: np.ndarray | None  # [T-1] at analysis size, None without flows
    sharpness: np.ndarray  # [K] sampled frames
    sharpness_face: np.ndarray  # [K] NaN where no face
    sharpness_frames: list[int]

    def headline(self) -> dict[str, Any]:
        mean = lambda x: None if x is None or not np.isfinite(x).any() else float(np.nanmean(x))  # noqa: E731
        return {"flicker_luma": mean(self.flicker_luma), "flicker_warp": mean(self.flicker_warp),
                "sharpness": mean(self.sharpness), "sharpness_face": mean(self.sharpness_face)}

    def to_dict(self) -> dict[str, Any]:
        return {"units": {"flicker_luma": "8-bit luma levels per frame", "flicker_warp": "8-bit luma levels",
                          "sharpness": "variance of the Laplacian of 8-bit grey, at the video's resolution"},
                "sharpness_frames": self.sharpness_frames, **self.headline()}


def measure_quality(frames: np.ndarray, flows: np.ndarray | None = None, small_frames: np.ndarray | None = None,
                    landmarks: np.ndarray | None = None, max_frames: int = 64) -> QualityResult:
    """Flicker over all pairs; warp residual on `small_frames` (the frames `flows` were computed
    on); sharpness on up to `max_frames` sampled full-size frames (face box from `landmarks`)."""
    h, w = frames.shape[1:3]
    idx = sample_indices(len(frames), max_frames)
    grey = luma(frames[idx])
    sharp = np.array([laplacian_variance(g) for g in grey])
    face = np.full(len(idx), np.nan)
    if landmarks is not None:
        for j, i in enumerate(idx):
            box = face_box(landmarks[i], h, w)
            if box is not None:
                face[j] = laplacian_variance(grey[j][box[1]:box[3], box[0]:box[2]])
    warp = None
    if flows is not None:
        warp = warp_residual(frames if small_frames is None else small_frames, flows)
    return QualityResult(flicker_luma(frames), warp, sharp, face, idx.tolist())
