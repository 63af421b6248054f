"""Long videos in segments: the plan, what each segment is conditioned on, colour and stitching.

One home for the machinery the command line (`pipeline.py`) and the ComfyUI node
(`nodes/long_video.py`) share; docs/long_audio.md explains the choices and gives their numbers.

- **Plan** (`plan_segments`): segments of at most `segment_frames` frames (4k+1; 81 for Wan2.1). Each
  later segment starts `motion_frames` (4j+1) frames before the end of the previous one, always a
  multiple of 4 frames into the video, so its latent frame i is latent frame `start_frame // 4 + i`
  of the whole video.
- **Held frames**: a segment's first `motion_frames` frames are the previous segment's last frames
  (the first segment: the portrait), given to Wan as known frames of its I2V conditioning: the
  VAE encodes [held frames, grey...] and the mask (`i2v_mask`) is 1 on exactly the frames they are;
  `i2v_y` puts the two together as Wan's I2V input `y` (for every caller, the trainer included).
  Stitching drops them, so every frame of the video is made once. The CLIP image tokens stay the
  portrait's for every segment (the caller encodes them once).
- **Audio** (`segment_audio`): the recording is encoded once; each segment takes the windows of its
  own latent frames, placed by the official window rule over the whole video.
- **Colour** (`match_segment`): a later segment is matched to the frames it holds at its start and
  eased, over its length, to the portrait's colours at its end, so seams do not jump and colour
  drift does not build up from segment to segment.
- **The loop** (`run_segments`): the caller's `sample(plan, held)` makes each segment's frames; the
  loop colour-matches them, yields the new frames and keeps only what the next segment holds.
  `sample` decides the conditioning, so other uses plug into the same loop (the dub: the source's
  frames held outside a latent mask, `dub.py`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Iterable, Iterator

import torch

from .adapters.audio import AudioCondition
from .audio import gather_windows, widened_ranges
from .encoders.wav2vec import timeline_tokens
from .frames import TIME_STRIDE, check_frames, latent_frames, video_frames


@dataclass(frozen=True)
class SegmentPlan:
    """Frames [start_frame, start_frame + num_frames) of the video; the first `motion_frames` of them
    (0 for the first segment) are the previous segment's last frames, held."""

    index: int
    start_frame: int
    num_frames: int
    motion_frames: int

    @property
    def end_frame(self) -> int:
        return self.start_frame + self.num_frames

    @property
    def latent_start(self) -> int:
        """The video's latent frame that is this segment's latent frame 0."""
        return self.start_frame // TIME_STRIDE  # a multiple of 4 frames into the video

    @property
    def latent_frames(self) -> int:
        return latent_frames(self.num_frames)


def plan_segments(total_frames: int, segment_frames: int = 81, motion_frames: int = 1) -> list[SegmentPlan]:
    """Cut `total_frames` (4k+1) into segments of at most `segment_frames` (4k+1), each later one
    holding the previous one's last `motion_frames` (4j+1: 1 = the last frame, 5 or 9 = InfiniteTalk
    style motion context). Stitched without the held frames they give exactly `total_frames`; the
    last segment may be shorter (at least `motion_frames + 4`)."""
    total_frames = check_frames(total_frames, "total_frames")
    segment_frames = check_frames(segment_frames, "segment_frames")
    motion_frames = check_frames(motion_frames, "motion_frames", least=1)
    if motion_frames >= segment_frames:
        raise ValueError(f"motion_frames = {motion_frames} must be below segment_frames ({segment_frames}): "
                         "a segment holds its motion frames and makes at least 4 new ones")
    plans = [SegmentPlan(0, 0, min(segment_frames, total_frames), 0)]
    while plans[-1].end_frame < total_frames:
        start = plans[-1].end_frame - motion_frames  # a multiple of 4: (4a+1) - (4j+1) per segment
        plans.append(SegmentPlan(len(plans), start, min(segment_frames, total_frames - start), motion_frames))
    return plans


def output_frames(seconds: float, fps: float) -> int:
    """Frames a video of a `seconds` long recording keeps: ceil(seconds * fps), the fewest that cover
    it (so the video ends less than one frame after the sound; the file's audio is padded to it)."""
    return max(1, math.ceil(round(seconds * fps, 6)))


def segment_seed(seed: int, index: int) -> int:
    """Segment `index` samples from noise seed `seed + index` (wrapping at 2**64)."""
    return (seed + index) % 2**64


# ------------------------------------------------------------------------------------- audio


def segment_audio(adapter, features: torch.Tensor, plan: SegmentPlan, total_frames: int, fps: float,
                  expand_length: int = 4) -> AudioCondition:
    """The audio condition of one segment, from the features [1, L, 768] of the whole recording
    (encoded once, cut as the official code cuts it: to `total_frames / fps` seconds).

    One segment covering the whole video: exactly the official clip rule (`adapter.condition`).
    Several: the official window rule applied once to the whole video, with window positions for
    `timeline_tokens(total_frames, fps)` tokens (token j at 0.02 j s, not spread over the frames when
    the recording is a little shorter than the video), and the segment takes the windows of its own
    latent frames. So the windows at a seam hold the real tokens on both sides of it, both segments
    hear the same audio for a frame they share, and nothing drifts with the length. Only the
    segment's tokens are projected."""
    if plan.num_frames == total_frames:
        return adapter.condition(features, total_frames)
    length = features.shape[1]
    ranges = widened_ranges(timeline_tokens(total_frames, fps), total_frames, expand_length)
    ranges = ranges[plan.latent_start: plan.latent_start + plan.latent_frames]
    if len(ranges) != plan.latent_frames:
        raise ValueError(f"segment {plan.index} (frames {plan.start_frame}-{plan.end_frame - 1}) lies past the "
                         f"video's {total_frames} frames")
    lo = min(min(max(s, 0), length - 1) for s, _ in ranges)
    hi = max(min(max(e, 0), length - 1) for _, e in ranges)
    windows = gather_windows(adapter.project(features[:, lo:hi + 1]), ranges, length, offset=lo)
    return AudioCondition(windows.tokens, windows.k_lens)


# ------------------------------------------------------------------------------------- held frames


def i2v_mask(num_frames: int, lat_h: int, lat_w: int, known: int = 1) -> torch.Tensor:
    """Wan2.1's frame mask [4, T_lat, lat_h, lat_w]: 1 where a frame is known, 0 where it is made.

    `known`: the number of leading known frames (1: Wan's I2V, the first frame; a segment's held
    frames). As `wan/image2video.py`: frame 0's flag repeated 4 times (the VAE's first latent frame
    stands for one frame, the others for 4), grouped in fours: entry [j, t] is frame 4t + j - 3's flag
    (frame 0's for t = 0)."""
    if not 0 <= known <= num_frames:
        raise ValueError(f"known must be between 0 and num_frames ({num_frames}), got {known}")
    flags = torch.zeros(num_frames, lat_h, lat_w)
    flags[:known] = 1
    msk = torch.cat([flags[:1].repeat(4, 1, 1), flags[1:]])  # [num_frames + 3, h, w]
    return msk.view(msk.shape[0] // 4, 4, lat_h, lat_w).transpose(0, 1)


def i2v_y(latents: torch.Tensor, known: int = 1) -> torch.Tensor:
    """Wan2.1's I2V input ``y = [mask, latents]`` [B, 20, T_lat, h, w]: the frame mask
    (`i2v_mask`, 1 on the ``known`` leading frames) before the encoded held video [B, 16, T_lat, h, w]
    (the held frames then grey; all zero where the image is dropped in training). Every caller
    builds y here: the pipeline, the trainer, and the nodes (core's ``concat_mask`` is ``1 - y[:, :4]``)."""
    b, _, t_lat, h, w = latents.shape
    mask = i2v_mask(video_frames(t_lat), h, w, known=known).to(latents.device, latents.dtype)  # [4, T_lat, h, w]
    return torch.cat([mask.expand(b, -1, -1, -1, -1), latents], dim=1)


def held_video(held: torch.Tensor, num_frames: int, fill: float = 0.5, dim: int = 0) -> torch.Tensor:
    """The video the VAE encodes for a segment: the held frames, then grey (`fill`: 0.5 in 0..1, 0 in
    -1..1, as Wan's zeros) up to `num_frames` along `dim`."""
    k = held.shape[dim]
    if not 1 <= k <= num_frames:
        raise ValueError(f"a segment of {num_frames} frames cannot hold {k} frames")
    shape = list(held.shape)
    shape[dim] = num_frames - k
    return torch.cat([held, held.new_full(shape, fill)], dim=dim)


# ------------------------------------------------------------------------------------- colour


def _affine(src: torch.Tensor, dst: torch.Tensor, eps: float = 1e-3) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-channel (gain, offset) taking the mean/std of `src` [N, H, W, 3] to those of `dst`; a
    near-constant channel (std < eps) is shifted only."""
    dims = (0, 1, 2)
    sd_s, sd_d = src.std(dims, correction=0), dst.std(dims, correction=0)  # population: any frame counts
    gain = torch.where(sd_s > eps, sd_d / sd_s.clamp_min(eps), torch.ones_like(sd_s))
    return gain, dst.mean(dims) - gain * src.mean(dims)


def match_segment(frames: torch.Tensor, held: torch.Tensor, reference: torch.Tensor | None = None,
                  tail: int = 4) -> torch.Tensor:
    """A later segment's colours: at its first frame, the map that takes its first `len(held)` frames to
    the held ones (so the seam does not jump); at its last frame, the map that takes its last `tail`
    frames to `reference` (the portrait; so drift does not build up over segments); in between,
    the two maps blended linearly. Without a reference the seam map holds for the whole segment."""
    n = frames.shape[0]
    g0, b0 = _affine(frames[: held.shape[0]], held)
    if reference is None:
        return (frames * g0 + b0).clamp(0, 1)
    g1, b1 = _affine(frames[-min(tail, n):], reference)
    w = torch.linspace(0, 1, n, dtype=frames.dtype, device=frames.device).view(n, 1, 1, 1)
    return (frames * (g0 + w * (g1 - g0)) + (b0 + w * (b1 - b0))).clamp(0, 1)


# ------------------------------------------------------------------------------------- the loop

SampleSegment = Callable[[SegmentPlan, torch.Tensor], torch.Tensor]


def run_segments(plans: list[SegmentPlan], start: torch.Tensor, sample: SampleSegment,
                 reference: torch.Tensor | None = None, color_match: bool = True,
                 keep: int | None = None) -> Iterator[torch.Tensor]:
    """Make the segments one after the other and yield the video's frames as they are done.

    `sample(plan, held)` returns the segment's `plan.num_frames` frames [T, H, W, 3] (0..1) given the
    frames it starts from: `start` [K, H, W, 3] (the portrait) for the first segment, the previous
    segment's last `plan.motion_frames` frames (colour-matched) after. Later segments are
    colour-matched (`match_segment` with `reference`) when `color_match`. Yields each segment's new
    frames (the first segment's all, later ones without the held frames), at most `keep` frames in
    all; only the held frames are kept between segments."""
    held, sent = start, 0
    for plan in plans:
        if keep is not None and sent >= keep:
            return
        with torch.no_grad():  # here, not around the generator: a caller's grad mode may change between yields
            frames = sample(plan, held)
        if tuple(frames.shape[:1]) != (plan.num_frames,):
            raise ValueError(f"segment {plan.index} gave {tuple(frames.shape)} frames; expected {plan.num_frames}")
        if plan.index and color_match:
            frames = match_segment(frames, held, reference)
        new = frames[plan.motion_frames:]
        if keep is not None:
            new = new[: keep - sent]
        sent += new.shape[0]
        nxt = plans[plan.index + 1].motion_frames if plan.index + 1 < len(plans) else 0
        held = frames[frames.shape[0] - nxt:].clone() if nxt else held
        yield new


def fill_video(frames: torch.Tensor, chunks: Iterable[torch.Tensor]) -> torch.Tensor:
    """Fill a preallocated video [N, H, W, 3] with the chunks as they come (no second copy of the video)."""
    done = 0
    for chunk in chunks:
        frames[done:done + chunk.shape[0]] = chunk
        done += chunk.shape[0]
    if done != frames.shape[0]:  # never a video with frames left empty
        raise RuntimeError(f"the segments made {done} frames for a video of {frames.shape[0]}")
    return frames
