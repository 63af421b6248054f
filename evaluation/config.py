"""Settings of one evaluation run, with named presets, and where evaluation weights live."""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from fantasytalking_core.paths import default_models_root

PAPER_METRICS = ("sync", "fid", "fvd", "idc", "aesthetic")


@dataclass(frozen=True)
class FarnebackParams:
    """`cv2.calcOpticalFlowFarneback` settings (OpenCV's documented example values)."""

    pyr_scale: float = 0.5
    levels: int = 3
    winsize: int = 15
    iterations: int = 3
    poly_n: int = 5
    poly_sigma: float = 1.2


@dataclass(frozen=True)
class EvalConfig:
    """What to measure and how. Units are frames, pixels at `analysis_size`, or as named.

    max_offset_frames: lip-sync proxy searches audio/mouth offsets in [-K, K] video frames.
    min_overlap_frames: fewest frames an offset must compare (larger offsets are not tried).
    analysis_size: longer side, in pixels, at which flow and segmentation run (speed; results
        are normalised by the frame diagonal, so they do not depend on it much).
    boundary_px: pixels on each side of the person-mask edge left out of both regions (flow
        smooths across edges, so edge pixels belong to neither side).
    identity_max_frames: frames sampled evenly for identity embeddings.
    sharpness_max_frames: frames sampled evenly for sharpness.
    insightface_pack: an insightface pack folder for ArcFace; None = look in the models folder,
        else the shipped HOG fallback (named in the report).
    models_dir: folder with the paper-metric weights (see `paper.MODEL_FILES`); None = default.
    paper_metrics: which paper metrics to attempt ("sync", "fid", "fvd", "idc", "aesthetic");
        each is reported as unavailable, with the reason, when its weights or inputs are absent.
    paper_max_frames: frames per video (evenly sampled) for FID, IDC and the aesthetic score.
    fvd_clip_frames: frames per FVD clip (non-overlapping clips of consecutive frames).
    syncnet_vshift: SyncNet offset search range (+-frames at 25 fps), 15 as in syncnet_python.
    device: torch device for the paper metrics' networks.
    plots: write PNG plots next to the JSON.
    """

    max_offset_frames: int = 15
    min_overlap_frames: int = 16
    analysis_size: int = 256
    boundary_px: int = 4
    mask_threshold: float = 0.5
    flow: FarnebackParams = field(default_factory=FarnebackParams)
    identity_max_frames: int = 32
    sharpness_max_frames: int = 64
    insightface_pack: str | None = None
    models_dir: str | None = None
    paper_metrics: tuple[str, ...] = PAPER_METRICS
    paper_max_frames: int = 200
    fvd_clip_frames: int = 16
    syncnet_vshift: int = 15
    device: str = "cpu"
    plots: bool = True

    def __post_init__(self) -> None:
        for name in ("max_offset_frames", "min_overlap_frames", "analysis_size", "identity_max_frames",
                     "sharpness_max_frames", "paper_max_frames", "fvd_clip_frames", "syncnet_vshift"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ValueError(f"EvalConfig.{name} must be an int >= 1, got {v!r}")
        if self.analysis_size < 32:
            raise ValueError(f"EvalConfig.analysis_size must be >= 32 pixels, got {self.analysis_size}")
        if isinstance(self.boundary_px, bool) or not isinstance(self.boundary_px, int) or self.boundary_px < 0:
            raise ValueError(f"EvalConfig.boundary_px must be an int >= 0, got {self.boundary_px!r}")
        if not 0.0 < float(self.mask_threshold) < 1.0:
            raise ValueError(f"EvalConfig.mask_threshold must be in (0, 1), got {self.mask_threshold!r}")
        unknown = [m for m in self.paper_metrics if m not in PAPER_METRICS]
        if unknown:
            raise ValueError(f"unknown paper metric(s) {unknown}; choose from {list(PAPER_METRICS)}")

    @classmethod
    def default(cls) -> EvalConfig:
        return cls()

    @classmethod
    def fast(cls) -> EvalConfig:
        """Quick look: smaller analysis size, fewer sampled frames, no paper metrics."""
        return cls(analysis_size=160, identity_max_frames=8, sharpness_max_frames=16, paper_metrics=())

    def with_changes(self, **changes: Any) -> EvalConfig:
        return replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["paper_metrics"] = list(self.paper_metrics)
        return d


PRESETS = {"default": EvalConfig.default, "fast": EvalConfig.fast}


def eval_models_dir(models_dir: str | os.PathLike | None = None) -> Path:
    """Where the paper-metric weights are read from: `models_dir`, else `<models>/eval`."""
    return Path(models_dir).expanduser() if models_dir else default_models_root() / "eval"


def find_insightface_pack(explicit: str | os.PathLike | None = None) -> Path | None:
    """An insightface pack folder: `explicit` (must exist), else antelopev2 or buffalo_l under
    `<models>/insightface/models/`, else None."""
    if explicit:
        p = Path(explicit).expanduser()
        if not p.is_dir():
            raise FileNotFoundError(
                f"insightface pack folder not found: '{p}'. Give the folder holding the pack's .onnx files, "
                f"e.g. ComfyUI/models/insightface/models/antelopev2, or leave it out to use the HOG fallback"
            )
        return p
    root = default_models_root() / "insightface" / "models"
    for name in ("antelopev2", "buffalo_l"):
        if (root / name).is_dir() and any((root / name).glob("*.onnx")):
            return root / name
    return None
