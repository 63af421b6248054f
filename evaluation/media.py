"""What one evaluation looks at: the frames, their rate, the audio (16 kHz mono) and a reference."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".webp", ".bmp")
AUDIO_EXTENSIONS = (".wav", ".flac", ".ogg", ".mp3", ".m4a", ".aac", ".opus")  # batch mode's <stem>.* sidecars


@dataclass
class EvalInput:
    """`frames` RGB uint8 `[T,H,W,3]` at `fps`; `audio` float32 mono 16 kHz `[N]` or None, with
    `audio_source` saying where it came from (or why there is none); `reference` RGB uint8
    `[H,W,3]` or None."""

    frames: np.ndarray
    fps: float
    audio: np.ndarray | None = None
    audio_source: str = "none: no audio was given"
    reference: np.ndarray | None = None
    name: str = "video"
    path: str | None = None
    reference_path: str | None = None

    def __post_init__(self) -> None:
        f = np.asarray(self.frames)
        if f.ndim != 4 or f.shape[-1] != 3 or f.dtype != np.uint8:
            raise ValueError(f"frames must be RGB uint8 [T,H,W,3], got {f.dtype} {list(f.shape)}")
        if f.shape[0] < 2:
            raise ValueError(f"the video has {f.shape[0]} frame(s); evaluation needs at least 2")
        if not (np.isfinite(self.fps) and self.fps > 0):
            raise ValueError(f"fps must be a positive number, got {self.fps!r}; the file declares no frame rate")
        if self.audio is not None:
            a = np.asarray(self.audio, np.float32)
            if a.ndim != 1:
                raise ValueError(f"audio must be mono 16 kHz [N], got shape {list(a.shape)}")
            if not np.isfinite(a).all():
                raise ValueError("audio contains NaN or infinite values; clean or re-export it")
            self.audio = a

    @property
    def num_frames(self) -> int:
        return int(self.frames.shape[0])

    @property
    def seconds(self) -> float:
        return self.num_frames / self.fps

    def describe(self) -> dict[str, Any]:
        t, h, w = self.frames.shape[:3]
        return {
            "name": self.name, "path": self.path, "frames": t, "fps": float(self.fps), "width": w, "height": h,
            "seconds": round(self.seconds, 4),
            "audio": {"source": self.audio_source,
                      "seconds": None if self.audio is None else round(len(self.audio) / 16000, 4)},
            "reference": self.reference_path,
        }


def read_image(path: str | os.PathLike, name: str = "reference") -> np.ndarray:
    """An image file -> RGB uint8 `[H,W,3]`."""
    import cv2

    p = Path(path).expanduser()
    if not p.is_file():
        raise FileNotFoundError(f"{name} image not found: {p}")
    img = cv2.imread(str(p), cv2.IMREAD_COLOR)
    if img is None:
        raise ValueError(f"could not read {name} image {p}; use PNG or JPEG")
    return np.ascontiguousarray(img[..., ::-1])


def load_audio(path: str | os.PathLike) -> np.ndarray:
    """Any file PyAV decodes (wav, flac, ogg, mp3, m4a, opus, a video's sound) -> float32 mono 16 kHz."""
    from fantasytalking_core.audio import read_audio

    return read_audio(path).to_16k().numpy()


def load_input(video: str | os.PathLike, audio: str | os.PathLike | None = None,
               reference: str | os.PathLike | None = None) -> EvalInput:
    """Read a video file; audio comes from `audio` when given, else from the video's own stream.

    A video without audio is fine: lip-sync metrics are then reported unavailable with the reason.
    """
    from fantasytalking_core.audio import prepare_waveform
    from fantasytalking_core.video import read_video

    vp = Path(video).expanduser()
    data = read_video(vp)
    wave, source = None, "none: the video has no audio stream and no --audio was given"
    if audio is not None:
        wave, source = load_audio(audio), f"file: {Path(audio).expanduser()}"
    elif data.audio is not None and data.audio.shape[-1] > 0:
        wave, source = prepare_waveform(data.audio, data.sample_rate).numpy(), "video stream"
    ref = read_image(reference) if reference is not None else None
    return EvalInput(data.frames, float(data.fps), wave, source, ref, vp.stem, str(vp),
                     None if reference is None else str(Path(reference).expanduser()))


def sample_indices(num: int, max_count: int) -> np.ndarray:
    """At most `max_count` indices spread evenly over `range(num)`, first and last included."""
    if num <= max_count:
        return np.arange(num)
    return np.unique(np.round(np.linspace(0, num - 1, max_count)).astype(int))


def resize_longer(frames: np.ndarray, size: int) -> tuple[np.ndarray, float]:
    """Frames `[T,H,W,3]` resized so the longer side is `size` (area filter when shrinking);
    returns the frames and the scale (new / old). Frames already that size are returned as is."""
    import cv2

    h, w = frames.shape[1:3]
    scale = size / max(h, w)
    if abs(scale - 1.0) < 1e-9:
        return frames, 1.0
    nh, nw = max(2, round(h * scale)), max(2, round(w * scale))
    interp = cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR
    return np.stack([cv2.resize(f, (nw, nh), interpolation=interp) for f in frames]), scale
