"""Wan's frame rule, in one place: which video frame counts are valid, video <-> latent frames, and
how many frames a recording gets.

Wan2.1's causal VAE keeps the first frame alone and packs every later 4 frames into one latent
frame, so a video has 4k+1 frames (at least 5 here) and `(T - 1) // 4 + 1` latent frames. The
frame count of a recording is the official `int(fps * seconds // 4) * 4 + 5` (`plan_frames`, for
nodes, command line and pipeline alike), capped at `max_frames` and said so (`cut_note`). A leaf:
imports nothing of the project.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

TIME_STRIDE = 4  # video frames per latent frame after the first (Wan's causal VAE)
_CAPPED = "capped at max_frames"  # how `plan_frames` says it capped (what `cut_note` looks for)


def check_frames(num_frames: Any, name: str = "num_frames", zero: str = "", least: int = 5) -> int:
    """`num_frames` as an int when it is 4k+1 and at least `least` (itself 4k+1: 5 for a video; 1 where
    a single frame is valid, e.g. held frames), else the one error saying so, with the nearest valid counts;
    `zero` names what 0 would do where the caller takes 0 (e.g. "follow the audio")."""
    if isinstance(num_frames, bool) or not isinstance(num_frames, (int, np.integer)) \
            or num_frames < least or (num_frames - 1) % TIME_STRIDE:
        try:
            below = (int(num_frames) - 1) // TIME_STRIDE * TIME_STRIDE + 1
        except (TypeError, ValueError, OverflowError):
            below = 1
        near = [v for v in (below, below + TIME_STRIDE) if v >= least] or [least]
        raise ValueError(f"{name} = {num_frames!r} is not 4k+1 and at least {least} (Wan's VAE packs 4 frames per "
                         f"latent frame after the first): use {' or '.join(map(str, near))}"
                         + (f", or 0 to {zero}" if zero else ""))
    return int(num_frames)


def latent_frames(num_frames: int) -> int:
    """Latent frames of `num_frames` video frames: `(T - 1) // 4 + 1` (81 -> 21, 1 -> 1)."""
    return (int(num_frames) - 1) // TIME_STRIDE + 1


def video_frames(num_latent: int) -> int:
    """Video frames of `num_latent` latent frames: `(T_lat - 1) * 4 + 1` (21 -> 81); also the first
    video frame latent frame `num_latent` stands for (latent frame i >= 1: frames 4(i-1)+1 .. 4i)."""
    return (int(num_latent) - 1) * TIME_STRIDE + 1


def plan_frames(seconds: float, fps: float = 23, frames: int = 0, max_frames: int = 81) -> tuple[int, str]:
    """The one frame-count rule (nodes, command line, pipeline, dub): -> (num_frames, how it was chosen).

    `frames` > 0 is taken as given (4k+1); 0 follows the audio with the official
    `int(fps * seconds // 4) * 4 + 5`, capped at `max_frames` (4k+1) as the official code caps it;
    `max_frames` 0 = no cap (the whole audio, segment after segment)."""
    for name, value, zero in (("frames", frames, "follow the audio"), ("max_frames", max_frames, "have no cap")):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 0:
            raise ValueError(f"{name} must be an int >= 0 (0 = {zero}), got {value!r}")
        if value:
            check_frames(value, name, zero)
    if frames:
        return int(frames), "fixed"
    if not (math.isfinite(seconds) and seconds >= 0):
        raise ValueError(f"seconds must be finite and >= 0, got {seconds!r}")
    if not (math.isfinite(fps) and fps > 0):
        raise ValueError(f"fps must be > 0, got {fps!r}")
    need = int(fps * seconds // 4) * 4 + 5  # always 4k+1
    if max_frames and need > max_frames:
        return int(max_frames), f"audio needs {need} frames; {_CAPPED} {max_frames}"
    return need, "from audio length"


def cut_note(seconds: float, frames: int, fps: float, max_frames: int, how: str,
             whole: str = "max_frames 0 makes the whole recording") -> str:
    """What a `max_frames` cap left out of a recording ("" when `plan_frames`' `how` says it did not
    cap): said wherever it cuts, so a video is never silently shorter than its audio. `whole`: how to
    make all of it, where the caller is."""
    if _CAPPED not in how:
        return ""
    return (f"max_frames {max_frames} cut the video to {frames / fps:.2f} s: the last {seconds - frames / fps:.2f} s "
            f"of the {seconds:.2f} s recording are left out ({whole})")


def seconds_for_frames(num_frames: int, fps: float) -> float:
    """Duration of `num_frames` video frames at `fps`, in seconds."""
    if not (math.isfinite(fps) and fps > 0):
        raise ValueError(f"fps must be > 0, got {fps!r}")
    return num_frames / fps
