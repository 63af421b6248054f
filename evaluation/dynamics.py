"""Subject and background dynamics: dense optical flow split by a person mask.

Frames are shrunk so the longer side is `analysis_size` px. For each consecutive pair (t, t+1):
OpenCV Farneback flow, and MediaPipe selfie segmentation of frame t (general model, bundled in
mediapipe 0.10.14) thresholded into a person mask. The subject region is the mask eroded by
`boundary_px`, the background its complement eroded likewise (flow bleeds across edges, so the
band between is left out). SD / BD are the mean flow magnitude over the subject / background,
averaged over pairs, in percent of the frame diagonal per frame: 1.0 means a motion of 1% of the
diagonal between consecutive frames, whatever the resolution. Camera motion is not compensated:
a pan raises BD, as it should for "a living background".
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .config import FarnebackParams


def person_masks(frames: np.ndarray, threshold: float = 0.5) -> np.ndarray:
    """Boolean person masks `[T,H,W]` from MediaPipe selfie segmentation (model 0)."""
    from fantasytalking_core.face import mediapipe_solutions

    solutions = mediapipe_solutions()
    out = np.zeros(frames.shape[:3], bool)
    with solutions.selfie_segmentation.SelfieSegmentation(model_selection=0) as seg:
        for i, frame in enumerate(frames):
            out[i] = seg.process(np.ascontiguousarray(frame)).segmentation_mask > threshold
    return out


def farneback_flows(frames: np.ndarray, params: FarnebackParams = FarnebackParams()) -> np.ndarray:
    """Flow from frame t to t+1, float32 `[T-1,H,W,2]` (dx, dy) pixels: frame t at (x, y) is
    seen at (x + dx, y + dy) in frame t+1."""
    import cv2

    grey = [cv2.cvtColor(f, cv2.COLOR_RGB2GRAY) for f in frames]
    return np.stack([
        cv2.calcOpticalFlowFarneback(grey[i], grey[i + 1], None, params.pyr_scale, params.levels,
                                     params.winsize, params.iterations, params.poly_n, params.poly_sigma, 0)
        for i in range(len(grey) - 1)
    ]).astype(np.float32)


def split_regions(mask: np.ndarray, boundary_px: int) -> tuple[np.ndarray, np.ndarray]:
    """(subject, background) boolean maps: the mask and its complement, each eroded by
    `boundary_px` (elliptical kernel)."""
    import cv2

    m = mask.astype(np.uint8)
    if boundary_px <= 0:
        return m.astype(bool), ~m.astype(bool)
    k = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * boundary_px + 1,) * 2)
    return cv2.erode(m, k).astype(bool), cv2.erode(1 - m, k).astype(bool)


@dataclass
class DynamicsResult:
    """Per-pair mean flow magnitude `[T-1]` in the subject, the background and the whole frame
    (% of diagonal per frame; NaN where a region is empty), and their means."""

    subject: np.ndarray
    background: np.ndarray
    whole: np.ndarray
    subject_fraction: np.ndarray
    diagonal_px: float  # of the analysis frames
    scale: float  # analysis size / video size
    notes: list[str] = field(default_factory=list)

    @staticmethod
    def _mean(x: np.ndarray) -> float | None:
        return float(np.nanmean(x)) if np.isfinite(x).any() else None

    def headline(self) -> dict[str, Any]:
        sd, bd = self._mean(self.subject), self._mean(self.background)
        # px/frame at the video's own size: % of diagonal * diagonal / 100 / scale
        to_px = self.diagonal_px / 100.0 / self.scale
        return {"subject_dynamics": sd, "background_dynamics": bd, "global_dynamics": self._mean(self.whole),
                "subject_dynamics_px": None if sd is None else sd * to_px,
                "background_dynamics_px": None if bd is None else bd * to_px,
                "subject_fraction": self._mean(self.subject_fraction)}

    def to_dict(self) -> dict[str, Any]:
        return {"units": "percent of the frame diagonal per frame (the *_px values: pixels per frame at the "
                         "video's own resolution)", "analysis_scale": self.scale, "notes": self.notes,
                **self.headline()}


def measure_dynamics(flows: np.ndarray, masks: np.ndarray, scale: float = 1.0, boundary_px: int = 4) -> DynamicsResult:
    """SD / BD from `flows` `[T-1,h,w,2]` and `masks` `[T,h,w]` at analysis size; `scale` is
    analysis size / video size (for the px values)."""
    h, w = flows.shape[1:3]
    diag = float(np.hypot(h, w))
    n = len(flows)
    sub, bg, whole, frac = (np.full(n, np.nan) for _ in range(4))
    for t in range(n):
        mag = np.linalg.norm(flows[t], axis=-1) / diag * 100.0
        s, b = split_regions(masks[t], boundary_px)
        frac[t] = masks[t].mean()
        whole[t] = mag.mean()
        if s.any():
            sub[t] = mag[s].mean()
        if b.any():
            bg[t] = mag[b].mean()
    notes = []
    if not np.isfinite(sub).any():
        notes.append("no person found by selfie segmentation: subject dynamics unavailable")
    if not np.isfinite(bg).any():
        notes.append("the person fills the frame: background dynamics unavailable")
    return DynamicsResult(sub, bg, whole, frac, diag, scale, notes)
