"""Source videos for data preparation: finding them, their ids, captions and stream facts. Their
audio is the core's `audio.read_audio` (aligned to the first frame) and their frames the core's
`video.frames_at_fps` (resampled while decoding: a long video is never held in memory).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

from fantasytalking_core.video import VIDEO_EXTENSIONS, probe


def find_source_videos(root: str | Path) -> list[Path]:
    """Every video under `root` (recursively), sorted."""
    root = Path(root).expanduser()
    if not root.is_dir():
        raise FileNotFoundError(f"--videos folder not found: {root}")
    return sorted(p for p in root.rglob("*") if p.suffix.lower() in VIDEO_EXTENSIONS and p.is_file()
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


def video_info(path: Path) -> VideoInfo:
    """What preparation needs to know of a source video before decoding it (`video.probe`)."""
    info = probe(path)
    v = info["video"]
    if v is None:
        raise ValueError(f"{path} has no video stream")
    duration = v.get("duration") or info.get("duration")
    return VideoInfo(duration, v.get("fps"), v["width"], v["height"], info["audio"] is not None)
