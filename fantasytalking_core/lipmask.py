"""Lip masks for FantasyTalking's stage-2 loss: MediaPipe face-mesh lips -> pixel masks -> latent.

Per frame, the outer lip contour of MediaPipe face mesh (20 landmarks, from the edges of
`FACEMESH_LIPS`) is filled, mouth opening included. Frames where the mesh finds no face are
handled by an explicit policy (see `lip_masks`). `to_latent` brings the masks to the Wan latent
grid `(T_lat, H/8, W/8)` by trilinear interpolation, as the paper does.

Frames in: `[T,H,W,C]` numpy uint8 / float 0..1 or torch float 0..1 (a ComfyUI IMAGE batch), or
a list of images; RGB, RGBA or grayscale, as `face.as_rgb_uint8` accepts.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from .face import as_rgb_uint8_frames
from .frames import latent_frames
from .mediapipe_backend import MediaPipeBackend, get_backend

# Outer lip contour in drawing order: lower lip from the person's right mouth corner (61, image left)
# to 291, then the upper lip back. Every consecutive pair is an edge of FACEMESH_LIPS. All indices
# are < 468, so they mean the same points in the 468-point mesh and in the 478-point one (468 mesh
# points + 10 iris points) of `refine_landmarks` and of the Tasks FaceLandmarker.
LIP_OUTER = (61, 146, 91, 181, 84, 17, 314, 405, 321, 375, 291, 409, 270, 269, 267, 0, 37, 39, 40, 185)
MISSING_POLICIES = ("interpolate", "previous", "empty", "error")


@dataclass
class FaceMeshTrack:
    """MediaPipe face-mesh landmarks of a video: `landmarks` float32 `[T,N,2]` pixels (x, y), NaN
    where `found` (bool `[T]`) is False; N is 468, or 478 with `refine_landmarks`; `backend` names
    the MediaPipe backend that made it ("solutions" or "tasks"). With ``max_faces`` above 1,
    ``faces`` holds every face of each frame: float32 ``[F_t, N, 2]`` pixels per frame (the first is
    ``landmarks``' face), for dubs with several speakers."""

    landmarks: np.ndarray
    found: np.ndarray
    height: int
    width: int
    backend: str = "solutions"
    faces: list[np.ndarray] | None = None


def face_mesh_track(frames: Any, refine_landmarks: bool = False, min_confidence: float = 0.5,
                    static_image_mode: bool = False, *,
                    backend: str | MediaPipeBackend | None = None, max_faces: int = 1) -> FaceMeshTrack:
    """Face-mesh landmarks of the most prominent face in every frame (and, with `max_faces` > 1, of up
    to that many faces per frame in `faces`).

    `static_image_mode=False` (video) lets MediaPipe track the face from frame to frame, which is
    faster and steadier; use True for unrelated images. One pass serves both `lip_masks` and
    `motion.measure_motion` (pass the result as their `track`). `backend`: see
    `mediapipe_backend.get_backend`.
    """
    if not 0.0 < float(min_confidence) <= 1.0:
        raise ValueError(f"min_confidence must be in (0, 1], got {min_confidence!r}")
    video = as_rgb_uint8_frames(frames)
    t, h, w = video.shape[:3]
    n = 478 if refine_landmarks else 468
    landmarks = np.full((t, n, 2), np.nan, np.float32)
    found = np.zeros(t, bool)
    every = [] if max_faces > 1 else None
    mp_backend = get_backend(backend)
    with mp_backend.face_mesh(static_image_mode=bool(static_image_mode), max_num_faces=int(max_faces),
                              refine_landmarks=bool(refine_landmarks), min_confidence=float(min_confidence)) as mesh:
        for i, frame in enumerate(video):
            faces = [f[:, :2] * [w, h] for f in mesh(frame)]
            if faces:
                landmarks[i] = faces[0]
                found[i] = True
            if every is not None:
                every.append(np.stack(faces).astype(np.float32) if faces else np.zeros((0, n, 2), np.float32))
    return FaceMeshTrack(landmarks, found, h, w, mp_backend.name, every)


@dataclass
class LipMasks:
    """Per-frame lip masks.

    `masks` float32 `[T,H,W]` in {0,1} (a ComfyUI MASK); `found` bool `[T]`: the mesh saw a face;
    `filled` bool `[T]`: the polygon was made by the missing-frame policy; `polygons` float32
    `[T,20,2]` outer-lip pixels (x, y) actually drawn, NaN where the mask is empty.
    """

    masks: torch.Tensor
    found: np.ndarray
    filled: np.ndarray
    polygons: np.ndarray
    policy: str
    dilation: int
    notes: list[str] = field(default_factory=list)

    @property
    def area_fraction(self) -> torch.Tensor:
        """Mask area per frame as a fraction of the frame, float32 `[T]`."""
        return self.masks.mean(dim=(1, 2))


def _fill_missing(polygons: np.ndarray, found: np.ndarray, policy: str) -> tuple[np.ndarray, np.ndarray]:
    """Apply the missing-frame policy to `[T,K,2]` polygons; returns (polygons, filled flags)."""
    out = polygons.copy()
    idx = np.flatnonzero(found)
    filled = np.zeros(len(found), bool)
    if policy == "empty" or len(idx) == 0:
        return out, filled
    for t in np.flatnonzero(~found):
        before, after = idx[idx < t], idx[idx > t]
        if policy == "previous" and len(before):
            out[t] = polygons[before[-1]]
        elif policy == "interpolate" and len(before) and len(after):
            a, b = before[-1], after[0]
            out[t] = polygons[a] + (t - a) / (b - a) * (polygons[b] - polygons[a])
        else:
            continue
        filled[t] = True
    return out, filled


def lip_masks(frames: Any, dilation: int = 0, missing: str = "interpolate", refine_landmarks: bool = False,
              min_confidence: float = 0.5, static_image_mode: bool = False,
              track: FaceMeshTrack | None = None, *, backend: str | MediaPipeBackend | None = None) -> LipMasks:
    """Filled outer-lip masks for every frame of `frames` `[T,H,W,C]`.

    `dilation`: grow each mask by this many pixels (elliptical kernel), >= 0.
    `missing`: what a frame without a face gets —
      "interpolate" (default): the lip polygon interpolated linearly between the nearest found
        frames before and after; frames before the first or after the last found frame, with
        no neighbour on one side, stay empty;
      "previous": the last found frame's polygon (empty before the first found frame);
      "empty": an all-zero mask;  "error": raise ValueError naming the frames.
    Every frame empty after the policy is listed in `notes`. The mesh tracks the face through
    the video (`static_image_mode=False`) unless told otherwise. Pass `track` (from
    `face_mesh_track`) to reuse a mesh pass; `frames`, the mesh options and `backend` (see
    `mediapipe_backend.get_backend`) are then ignored.
    """
    if missing not in MISSING_POLICIES:
        raise ValueError(f"missing must be one of {MISSING_POLICIES}, got {missing!r}")
    if isinstance(dilation, bool) or int(dilation) != dilation or dilation < 0:
        raise ValueError(f"dilation must be an int >= 0 pixels, got {dilation!r}")
    if track is None:
        track = face_mesh_track(frames, refine_landmarks, min_confidence, static_image_mode, backend=backend)
    t, h, w = len(track.found), track.height, track.width
    notes: list[str] = []
    if missing == "error" and not track.found.all():
        bad = np.flatnonzero(~track.found).tolist()
        raise ValueError(
            f"no face found in {len(bad)} of {t} frames ({bad[:20]}{' ...' if len(bad) > 20 else ''}); "
            "use missing='interpolate', 'previous' or 'empty', or drop those frames"
        )
    polygons, filled = _fill_missing(track.landmarks[:, list(LIP_OUTER)], track.found, missing)
    masks = np.zeros((t, h, w), np.uint8)
    for i in range(t):
        if not np.isnan(polygons[i]).any():
            masks[i] = polygon_mask(h, w, [polygons[i]], int(dilation))
    if filled.any():
        notes.append(f"{int(filled.sum())} frame(s) without a face got a lip polygon by policy '{missing}'")
    empty = np.flatnonzero(np.isnan(polygons).any(axis=(1, 2))).tolist()
    if empty:
        notes.append(f"{len(empty)} of {t} frame(s) have an empty lip mask (no face): {empty[:20]}")
    return LipMasks(torch.from_numpy(masks.astype(np.float32)), track.found.copy(), filled, polygons,
                    missing, int(dilation), notes)


def polygon_mask(height: int, width: int, polygons: list[np.ndarray], dilation: int = 0) -> np.ndarray:
    """One frame's mask, uint8 0/1 [height, width]: the filled polygons (pixel coordinates [N, 2], drawn
    with 4 fractional bits), grown by `dilation` pixels (elliptical kernel)."""
    import cv2

    mask = np.zeros((height, width), np.uint8)
    for polygon in polygons:
        pts = np.round(polygon * 16).astype(np.int32)  # 4 fractional bits, cv2 `shift=4`
        cv2.fillPoly(mask, [pts], 1, lineType=cv2.LINE_8, shift=4)
    if dilation:
        mask = cv2.dilate(mask, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * dilation + 1,) * 2))
    return mask


def to_latent(masks: Any, num_latent_frames: int | None = None) -> torch.Tensor:
    """Pixel masks `[T,H,W]` -> latent-grid weights float32 `[T_lat, H/8, W/8]` in [0,1] (Wan's VAE).

    Trilinear interpolation (`align_corners=False`), as in the paper; `T_lat` defaults to
    `frames.latent_frames(T)`. Mass: this samples the masks at the centres of the latent cells
    (linear between the two nearest pixels/frames per axis) rather than averaging each 8x8x4
    block, so the mean (fractional area) is kept only approximately: closely for regions much
    larger than a cell (a mouth of >= ~3 cells), while a region thinner than a cell can shift,
    shrink or vanish. Values stay in [0,1]. H and W must be multiples of 8.
    """
    m = torch.as_tensor(np.asarray(masks) if not isinstance(masks, torch.Tensor) else masks)
    if m.ndim != 3:
        raise ValueError(f"masks have shape {list(m.shape)}; expected [T,H,W]")
    t, h, w = m.shape
    if h % 8 or w % 8:
        raise ValueError(
            f"mask size {h}x{w} is not a multiple of 8 (the VAE's stride); make masks at the "
            f"video size the VAE encodes (Wan: multiples of 16)"
        )
    t_lat = latent_frames(t) if num_latent_frames is None else int(num_latent_frames)
    if t_lat < 1:
        raise ValueError(f"num_latent_frames must be >= 1, got {num_latent_frames!r}")
    m = m.to(torch.float32)[None, None]  # [1,1,T,H,W]
    size = (t_lat, h // 8, w // 8)
    out = F.interpolate(m, size=size, mode="trilinear", align_corners=False)  # [1,1,T_lat,H/8,W/8]
    return out[0, 0].clamp_(0.0, 1.0)
