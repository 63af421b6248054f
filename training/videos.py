"""Source videos for data preparation: finding them, their captions, their audio, and their frames
resampled to the training frame rate while decoding (a long video is never held in memory).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np
import torch

from fantasytalking_core.audio import SAMPLE_RATE, prepare_waveform

VIDEO_SUFFIXES = (".mp4", ".mov", ".mkv", ".webm", ".avi", ".m4v")


def find_videos(root: str | Path) -> list[Path]:
    """Every video under `root` (recursively), sorted."""
    root = Path(root).expanduser()
    if not root.is_dir():
        raise FileNotFoundError(f"--videos folder not found: {root}")
    return sorted(p for p in root.rglob("*") if p.suffix.lower() in VIDEO_SUFFIXES and p.is_file()
                  and not p.name.startswith("."))


def video_key(path: Path, root: Path) -> str:
    """A file-name-safe id from the path relative to `root`: `a/b c.mp4` -> `a__b_c`."""
    rel = path.relative_to(root).with_suffix("").as_posix()
    return re.sub(r"[^A-Za-z0-9_.-]", "_", rel.replace("/", "__"))


def load_captions(path: str | Path | None) -> dict[str, str]:
    """A captions file: JSON {video: caption} or JSONL lines {"video": ..., "caption": ...}; the video
    is its path relative to --videos (or its file name, or its stem)."""
    if path is None:
        return {}
    p = Path(path).expanduser()
    if not p.is_file():
        raise FileNotFoundError(f"--captions file not found: {p}")
    text = p.read_text(encoding="utf-8")
    if p.suffix == ".jsonl":
        rows = [json.loads(line) for line in text.splitlines() if line.strip()]
        bad = [r for r in rows if not isinstance(r, dict) or "video" not in r or "caption" not in r]
        if bad:
            raise ValueError(f"{p}: every line must be {{\"video\": ..., \"caption\": ...}}, got {bad[0]!r}")
        return {str(r["video"]): str(r["caption"]) for r in rows}
    data = json.loads(text)
    if not isinstance(data, dict):
        raise ValueError(f"{p} must hold a JSON object {{video: caption}}, got {type(data).__name__}")
    return {str(k): str(v) for k, v in data.items()}


def caption_for(path: Path, root: Path, captions: dict[str, str]) -> str:
    """The captions file's entry (relative path, file name or stem), else a sidecar `<video>.txt`,
    else "" (an empty caption is allowed: the clip trains with the empty prompt)."""
    rel = path.relative_to(root).as_posix()
    for key in (rel, path.name, path.stem, str(Path(rel).with_suffix(""))):
        if key in captions:
            return captions[key].strip()
    sidecar = path.with_suffix(".txt")
    return sidecar.read_text(encoding="utf-8").strip() if sidecar.is_file() else ""


@dataclass
class VideoInfo:
    duration: float | None  # seconds, as the container declares it
    fps: float | None
    width: int
    height: int
    has_audio: bool


def probe_video(path: Path) -> VideoInfo:
    from fantasytalking_core.video import probe

    info = probe(path)
    v = info["video"]
    if v is None:
        raise ValueError(f"{path} has no video stream")
    duration = v.get("duration") or info.get("duration")
    return VideoInfo(duration, v.get("fps"), v["width"], v["height"], info["audio"] is not None)


def read_audio_16k(path: Path) -> torch.Tensor:
    """The soundtrack (any codec PyAV decodes: `video.decode_audio`) as 16 kHz mono float32 [T],
    aligned so sample 0 is the first video frame's time. A file without usable audio is a ValueError."""
    from fantasytalking_core.video import decode_audio

    decoded = decode_audio(path)
    wave = prepare_waveform(decoded.samples, decoded.sample_rate)
    shift = int(round(decoded.offset * SAMPLE_RATE))
    if shift > 0:  # the audio starts after the first frame: silence before it
        wave = torch.cat([wave.new_zeros(shift), wave])
    elif shift < 0:
        wave = wave[-shift:]
    return wave


def frames_at_fps(path: Path, fps: float, max_edge: int) -> Iterator[np.ndarray]:
    """Decoded RGB uint8 frames [H, W, 3] at `fps` (for each target time k/fps from the first frame,
    the source frame shown at that time), downscaled so the longer edge is at most `max_edge`."""
    import av

    with av.open(str(path)) as c:
        stream = c.streams.video[0]
        stream.thread_type = "AUTO"
        w, h = stream.codec_context.width, stream.codec_context.height
        scale = min(1.0, max_edge / max(w, h))
        size = (max(2, round(w * scale)), max(2, round(h * scale)))
        opts = {"width": size[0], "height": size[1], "interpolation": "AREA" if scale < 1 else "BICUBIC"}
        prev, prev_t, t0, k, cache = None, 0.0, None, 0, None
        last_step = 1.0 / float(stream.average_rate or fps)
        for frame in c.decode(stream):
            t = float(frame.time) if frame.time is not None else (prev_t + last_step if prev is not None else 0.0)
            if t0 is None:
                t0 = t
            if prev is not None:
                last_step = max(t - prev_t, 1e-6)
                while t0 + k / fps < (prev_t + t) / 2:  # prev is the frame nearest to target k
                    cache = cache if cache is not None else prev.to_ndarray(format="rgb24", **opts)
                    yield cache
                    k += 1
            prev, prev_t, cache = frame, t, None
        while prev is not None and t0 + k / fps < prev_t + last_step / 2 + 1e-9:
            cache = cache if cache is not None else prev.to_ndarray(format="rgb24", **opts)
            yield cache
            k += 1
