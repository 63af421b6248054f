"""Motion intensities for FantasyTalking's motion network: omega_l (face) and omega_b (body).

Both are variances over the video, measured with MediaPipe, then mapped to [0,1]:
- raw_l, facial expression: face-mesh landmarks (468) of each frame are Procrustes-aligned to
  the clip's mean shape (translation, uniform scale and in-plane rotation removed, scale = RMS
  distance of the landmarks from their centroid), then the per-landmark variance over time
  (x + y) is averaged over landmarks. Units: (face radius)^2. Rigid head shifts, zooms and rolls
  cancel; lips, jaw, brows and (in 2-D, partly) head turns count.
- raw_b, body: MediaPipe Pose joints (nose, shoulders, elbows, wrists) in image pixels divided by
  the clip's median shoulder width, NOT re-centred per frame: swaying or moving through the frame
  is body motion ("variance of body joints"), so camera motion counts too. Per-joint variance
  over the frames where that joint is visible, averaged over joints. Units: (shoulder width)^2.
Every frame is measured on its own (MediaPipe static-image mode; see `measure_motion`).
Each raw value goes through `MotionNormalization` (log-space low/high -> clamp to [0,1]). Those
constants must be the same in training and inference: store `to_dict()` next to trained weights.
At inference the paper uses the neutral 0.5, exposed as sliders (`from_sliders`).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any, Sequence

import numpy as np
import torch

from .face import as_rgb_uint8_frames
from .lipmask import FaceMeshTrack, face_mesh_track
from .mediapipe_backend import POSE_MODEL_COMPLEXITY, MediaPipeBackend, get_backend  # noqa: F401 (re-export)

POSE_JOINTS = {0: "nose", 11: "left_shoulder", 12: "right_shoulder", 13: "left_elbow", 14: "right_elbow",
               15: "left_wrist", 16: "right_wrist"}
NEUTRAL = 0.5


@dataclass
class MotionNormalization:
    """Maps raw variances to [0,1]: `clamp((f(raw) - f(low)) / (f(high) - f(low)), 0, 1)` with f =
    log10 (`space="log"`, raw <= 0 -> 0) or identity (`"linear"`), separately for lips and body.

    The defaults are placeholders set from synthetic videos (see `default`); fit real ones on the
    training set with `fit_normalization` and save them with the trained motion network.
    """

    lip_low: float = 3e-5
    lip_high: float = 3e-3
    body_low: float = 1e-4
    body_high: float = 1e-1
    space: str = "log"
    source: str = "default"

    def __post_init__(self) -> None:
        if self.space not in ("log", "linear"):
            raise ValueError(f"MotionNormalization.space must be 'log' or 'linear', got {self.space!r}")
        for part in ("lip", "body"):
            lo, hi = getattr(self, f"{part}_low"), getattr(self, f"{part}_high")
            if not (math.isfinite(lo) and math.isfinite(hi) and lo < hi) or (self.space == "log" and lo <= 0):
                raise ValueError(
                    f"MotionNormalization needs finite {part}_low < {part}_high"
                    f"{' and both > 0 in log space' if self.space == 'log' else ''}; got {lo!r}, {hi!r}"
                )

    @classmethod
    def default(cls) -> MotionNormalization:
        """Placeholder constants from synthetic videos of one 256 px portrait (the face ~75 px wide):
        still -> raw_l 0, raw_b 0; rigid shift/roll/zoom of the whole frame -> raw_l 3e-5..5e-5;
        mouth opened by 3% / 8% of the face width -> raw_l 1e-4 / 5.5e-4; a sway of ~6% of the
        shoulder width -> raw_b 5e-3. So 0 is a still face, 0.5 is raw_l 3e-4 (landmarks moving
        ~1.7% of the face radius) and raw_b 3e-3 (joints moving ~5% of the shoulder width)."""
        return cls()

    def _map(self, raw: float, low: float, high: float) -> float:
        if self.space == "log":
            if raw <= 0:
                return 0.0
            raw, low, high = math.log10(raw), math.log10(low), math.log10(high)
        return float(min(max((raw - low) / (high - low), 0.0), 1.0))

    def omega_l(self, raw_l: float) -> float:
        return self._map(raw_l, self.lip_low, self.lip_high)

    def omega_b(self, raw_b: float) -> float:
        return self._map(raw_b, self.body_low, self.body_high)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> MotionNormalization:
        """Inverse of `to_dict`; unknown or missing keys are errors, so files cannot silently drift."""
        keys = {f for f in cls.__dataclass_fields__}
        if set(data) != keys:
            raise ValueError(
                f"motion normalisation dict has keys {sorted(data)}; expected {sorted(keys)} "
                "(saved by MotionNormalization.to_dict)"
            )
        return cls(**{k: (float(v) if k.endswith(("_low", "_high")) else str(v)) for k, v in data.items()})


def fit_normalization(raw_l: Sequence[float], raw_b: Sequence[float], low_percentile: float = 5.0,
                      high_percentile: float = 95.0, space: str = "log") -> MotionNormalization:
    """Normalisation from a dataset's raw values: low/high = the given percentiles (robust to
    outliers), so ~90% of the training pieces spread over (0,1) and the tails clamp. Non-positive
    raw values are ignored in log space."""
    if not 0.0 <= low_percentile < high_percentile <= 100.0:
        raise ValueError(f"need 0 <= low_percentile < high_percentile <= 100, got {low_percentile}, "
                         f"{high_percentile}")
    bounds = []
    for name, values in (("raw_l", raw_l), ("raw_b", raw_b)):
        v = np.asarray([x for x in values if x is not None], np.float64)
        v = v[np.isfinite(v) & ((v > 0) if space == "log" else True)]
        if len(v) < 2:
            raise ValueError(f"fit_normalization needs at least 2 usable {name} values, got {len(v)}")
        lo, hi = np.percentile(v, [low_percentile, high_percentile])
        if not hi > lo:
            raise ValueError(f"{name} values are (nearly) all equal ({lo:.3g}); cannot fit a range")
        bounds += [float(lo), float(hi)]
    source = f"fit_normalization p{low_percentile:g}-p{high_percentile:g}, {len(raw_l)} pieces"
    return MotionNormalization(*bounds, space=space, source=source)


@dataclass
class MotionMeasurement:
    """Motion intensities for the motion network: `omega_l`, `omega_b` in [0,1]; the raw variances
    (None when not measured), how many frames had a face / a body, and notes."""

    omega_l: float
    omega_b: float
    raw_l: float | None = None
    raw_b: float | None = None
    num_frames: int = 0
    frames_with_face: int = 0
    frames_with_body: int = 0
    source: str = "video"
    notes: list[str] = field(default_factory=list)

    def to_tensor(self, batch_size: int = 1) -> torch.Tensor:
        """`[B, 2]` float32: (omega_l, omega_b) per row, the motion network's input."""
        return torch.tensor([[self.omega_l, self.omega_b]], dtype=torch.float32).expand(batch_size, 2).clone()


def from_sliders(omega_l: float = NEUTRAL, omega_b: float = NEUTRAL) -> MotionMeasurement:
    """Intensities chosen by the user, each in [0,1] (0.5 = neutral, the paper's default)."""
    for name, label, value in (("omega_l", "facial motion", omega_l), ("omega_b", "body motion", omega_b)):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise ValueError(f"{name} ({label}) must be a number in [0, 1], got {value!r}")
        if not 0.0 <= value <= 1.0:
            raise ValueError(
                f"{name} ({label}) = {value} is outside [0, 1]: set the slider between 0 and 1 (0.5 is neutral)"
            )
    return MotionMeasurement(float(omega_l), float(omega_b), source="sliders")


def face_motion_raw(landmarks: np.ndarray) -> float:
    """raw_l of landmarks `[F,N,2]` (found frames only, F >= 2): mean per-landmark variance after
    Procrustes alignment to the mean shape; units (RMS face radius)^2."""
    x = np.asarray(landmarks, np.float64)
    x = x - x.mean(axis=1, keepdims=True)
    x /= np.sqrt((x**2).sum(axis=(1, 2), keepdims=True) / x.shape[1]).clip(1e-9)  # unit RMS radius
    ref = x[0]
    for _ in range(3):  # generalised Procrustes: rotate every frame onto the running mean shape
        u, _s, vt = np.linalg.svd(np.einsum("fni,nj->fij", x, ref))
        d = np.sign(np.linalg.det(u @ vt))
        u[:, :, 1] *= d[:, None]  # no reflections
        aligned = np.einsum("fni,fij->fnj", x, u @ vt)
        ref = aligned.mean(0)
        ref /= np.sqrt((ref**2).sum() / len(ref)).clip(1e-9)
    return float(aligned.var(axis=0).sum(axis=-1).mean())


def pose_track(frames: Any, min_confidence: float = 0.5, *,
               backend: str | MediaPipeBackend | None = None) -> tuple[np.ndarray, np.ndarray]:
    """MediaPipe Pose joints, each frame on its own: pixels float32 `[T,33,2]` (NaN without a
    body) and visibility float32 `[T,33]` (0 without a body). `backend`: see
    `mediapipe_backend.get_backend` (solutions: the full model bundled in the wheel; tasks: the
    user's pose_landmarker_full/heavy/lite.task)."""
    video = as_rgb_uint8_frames(frames)
    t, h, w = video.shape[:3]
    joints, visibility = np.full((t, 33, 2), np.nan, np.float32), np.zeros((t, 33), np.float32)
    with get_backend(backend).pose(float(min_confidence)) as pose:
        for i, frame in enumerate(video):
            body = pose(frame)  # [33,4] normalised x, y, z, visibility, or None
            if body is not None:
                joints[i] = body[:, :2] * [w, h]
                visibility[i] = body[:, 3]
    return joints, visibility


def body_motion_raw(joints: np.ndarray, visibility: np.ndarray, min_frames: int = 2,
                    min_visibility: float = 0.5) -> tuple[float | None, int]:
    """raw_b of `[T,33,2]` joints and `[T,33]` visibility, and the frames with a body (both
    shoulders visible). None when fewer than `min_frames` such frames."""
    body = (visibility[:, 11] >= min_visibility) & (visibility[:, 12] >= min_visibility)
    if body.sum() < max(min_frames, 2):
        return None, int(body.sum())
    scale = float(np.median(np.linalg.norm(joints[body, 11] - joints[body, 12], axis=-1)))
    if not scale > 0:
        return None, int(body.sum())
    variances = []
    for j in POSE_JOINTS:
        seen = body & (visibility[:, j] >= min_visibility)
        if seen.sum() >= max(min_frames, 2):
            variances.append(float((joints[seen, j] / scale).var(axis=0).sum()))
    return float(np.mean(variances)), int(body.sum())


def measure_motion(frames: Any, normalization: MotionNormalization | None = None, min_fraction: float = 0.5,
                   track: FaceMeshTrack | None = None, *,
                   backend: str | MediaPipeBackend | None = None) -> MotionMeasurement:
    """omega_l and omega_b of a video `[T,H,W,C]` (T >= 2).

    A part (face, or body = both shoulders) found in fewer than max(2, ceil(min_fraction * T))
    frames is not measured: its omega is the neutral 0.5, its raw value None, and a note says so,
    so that a data-prep script can drop the video while inference still runs. `track` reuses a
    face-mesh pass of the same frames. Each frame is measured on its own (MediaPipe `static_image_mode=True`), so the value does not
    depend on tracking history: in video mode a still video read raw_l 2.5e-5 and raw_b 1.7e-4
    instead of 0, and a rigid shift raw_l 1.7e-4 instead of 4.6e-5. `backend`: the MediaPipe
    backend (`mediapipe_backend.get_backend`); with the Tasks backend a note names the model files,
    because they are other networks than the bundled ones (see that module) and the normalisation
    constants were set with the bundled ones.
    """
    norm = normalization if normalization is not None else MotionNormalization.default()
    if not 0.0 < min_fraction <= 1.0:
        raise ValueError(f"min_fraction must be in (0, 1], got {min_fraction!r}")
    video = as_rgb_uint8_frames(frames)
    t = len(video)
    if t < 2:
        raise ValueError(f"motion needs a video of at least 2 frames, got {t}")
    min_frames = max(2, math.ceil(min_fraction * t))
    mp_backend = get_backend(backend)
    track = track if track is not None else face_mesh_track(video, static_image_mode=True, backend=mp_backend)
    if len(track.found) != t:
        raise ValueError(f"track has {len(track.found)} frames but the video has {t}; pass the track of these frames")
    notes: list[str] = []
    if mp_backend.name != "solutions" or track.backend != "solutions":
        notes.append(f"measured with MediaPipe backends face mesh: {track.backend}, pose: {mp_backend.name} "
                     f"({mp_backend.reason}); the default normalisation was set with the bundled models")
    n_face = int(track.found.sum())
    raw_l = face_motion_raw(track.landmarks[track.found]) if n_face >= min_frames else None
    if raw_l is None:
        notes.append(f"face found in {n_face} of {t} frames (< {min_frames}): omega_l set to neutral {NEUTRAL}")
    raw_b, n_body = body_motion_raw(*pose_track(video, backend=mp_backend), min_frames=min_frames)
    if raw_b is None:
        notes.append(f"body (both shoulders) found in {n_body} of {t} frames (< {min_frames}): "
                     f"omega_b set to neutral {NEUTRAL}")
    omega_l = norm.omega_l(raw_l) if raw_l is not None else NEUTRAL
    omega_b = norm.omega_b(raw_b) if raw_b is not None else NEUTRAL
    return MotionMeasurement(omega_l, omega_b, raw_l, raw_b, t, n_face, n_body, "video", notes)
