"""Sources and measures shared by the dub tests (tests/test_dub.py, tests/test_dub_nodes.py)."""

from __future__ import annotations

import math

import numpy as np
import torch

from _media_helpers import portrait, warp
from fantasytalking_core.images import frames_to_tensor, video_to_frames


def talking_source(n: int = 30, size: int = 128) -> np.ndarray:
    """n frames of the astronaut portrait swaying a little (uint8 [n, size, size, 3]); MediaPipe finds the face."""
    img = portrait(size)
    return np.stack([warp(img, dx=2 * math.sin(i / 3), dy=math.cos(i / 4)) for i in range(n)])


def face_free_source(n: int = 12, size: int = 64) -> np.ndarray:
    yy, xx = np.mgrid[0:size, 0:size]
    img = np.stack([xx * 255 / size, yy * 255 / size, np.full_like(xx, 90.0)], -1)
    return np.stack([np.roll(img, i, axis=1) for i in range(n)]).astype(np.uint8)


def psnr(a: torch.Tensor, b: torch.Tensor, where: torch.Tensor) -> float:
    """PSNR in dB of frames in 0..1 over the pixels where `where` [T, H, W] is true."""
    mse = float(((a - b) ** 2)[where].mean())
    return math.inf if mse == 0 else 10 * math.log10(1 / mse)


def round_trip(vae, job) -> tuple[torch.Tensor, torch.Tensor]:
    """The source through the VAE segment by segment, as the dub encodes it, and each frame's latent
    mask footprint in pixels (the generated cells), both [T, H, W(, 3)] for the output frames."""
    frames, footprint = [], []
    for plan in job.plan.plans:
        source, mask = job.model_inputs(plan)
        rt = video_to_frames(vae.decode(vae.encode(frames_to_tensor(source))))
        cells = mask.repeat_interleave(8, 1).repeat_interleave(8, 2)
        cells = torch.cat([cells[:1], cells[1:].repeat_interleave(4, 0)])  # latent t -> frames 4t-3..4t
        frames.append(rt[plan.motion_frames:])
        footprint.append(cells[plan.motion_frames:])
    n = job.plan.frames
    return torch.cat(frames)[:n], torch.cat(footprint)[:n].bool()
