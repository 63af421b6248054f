"""Dub an existing video: new speech in, only the mouth and jaw regenerated, everything else kept.

docs/dubbing.md explains the choices and gives their numbers. The pieces, in order:

- **Plan** (`plan_dub`): the output keeps the source's frame rate; its length follows `fit` when the
  new audio and the video differ by more than a frame ("cut": the video's length, the audio cut or
  padded with silence; "loop" / "hold": the audio's length, the video looped or its last frame held,
  or cut to the audio when that is shorter), and the plan says what it did. The model runs at 23
  fps: model frame i stands for the output frame nearest its time (retime in), output frame j takes
  its mouth from the model frame nearest its time (retime out); at 23 fps both are the identity.
  The model frames are cut into segments by issue 16's `segments.plan_segments`.
- **Masks** (`mouth_masks`): per source frame the outer lips (drawn as `lipmask.lip_masks` draws them,
  `lipmask.polygon_mask`) and, with `jaw`, the lower face from the jaw line up to the nose, grown by
  `dilation` and feathered by `feather` pixels; a frame without a face has an empty mask.
  `latent_mask` takes a segment's masks to the latent grid: a latent cell is generated when any
  pixel of its 8x8 block in any of the frames it stands for (frame 0 alone, then frames 4t-3..4t)
  is masked, so every masked pixel is covered.
- **Segments** (`DubJob.frames`): `segments.run_segments` with the caller's `sample(plan, held,
  source, mask)`: the segment's source frames at the model's size and its latent mask. The I2V start
  image is the source's own first frame; a later segment holds the previous segment's last dubbed
  frames (the mouth continues over the seam). A segment whose mask is empty is not sampled: its
  source frames come back. No colour matching: outside the mask every frame is the source's.
- **Composite** (`sampling.composite`): output frame j is source frame j outside the mask and the
  model's frame (resized to the source) inside, blended by the feathered mask (`paste_back`; off: the model's frames
  everywhere, i.e. the VAE round trip outside the mask); a frame with an empty mask is the source
  frame untouched.

- **Several speakers** (`dub_speakers.DubSpeakers`): the new audio is their tracks (`dub_features`:
  each fitted as `dub_wave` fits one, then the background's silence); each segment routes every
  voice to its speaker's region on the segment's own source frames (docs/speakers.md).

The sampling itself is the caller's: `dub_frames` runs it on the command line (our DiT, with
`sampling.inpainting`), nodes/dub.py through core's sampler and its denoise mask.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator

import numpy as np
import torch
import torch.nn.functional as F
from einops import rearrange
from tqdm.auto import tqdm

from .audio import SAMPLE_RATE, fit_to_frames
from .dub_speakers import DubSpeakers
from .frames import TIME_STRIDE, check_frames, plan_frames
from .images import frames_to_tensor, official_size, video_to_frames
from .lipmask import LIP_OUTER, face_mesh_track, polygon_mask
from .motion_control import amplify_i2v
from .pipeline import TINY_BANNER, i2v_condition
from .sampling import composite
from .segments import SegmentPlan, output_frames, plan_segments, run_segments, segment_audio, segment_seed
from .speakers import encode_tracks

MODEL_FPS = 23.0
FIT_MODES = ("cut", "loop", "hold")
MASK_MAX = 255  # MouthMasks and DubJob keep masks as bytes, 255 = regenerated
# The lower face in MediaPipe face-mesh indices: the jaw line of FACEMESH_FACE_OVAL from the right
# cheek (361) round the chin (152) to the left cheek (132), closed through the subnasale (2).
JAW_OUTLINE = (361, 288, 397, 365, 379, 378, 400, 377, 152, 148, 176, 149, 150, 136, 172, 58, 132, 2)


# ------------------------------------------------------------------------------------- masks


@dataclass
class MouthMasks:
    """Per-frame dubbing masks: `masks` uint8 [T, H, W], 0..255 (255: regenerated; the feathered edge in
    between; a byte a pixel, so a long high-resolution video's masks fit beside its frames; `soft`
    gives 0..1 floats), `found` bool [T] (the face mesh saw a face; frames without one have an empty
    mask)."""

    masks: torch.Tensor
    found: np.ndarray
    notes: list[str] = field(default_factory=list)

    def soft(self) -> torch.Tensor:
        """The masks as float32 0..1 (ComfyUI's MASK)."""
        return self.masks.float() / MASK_MAX


def _check_pixels(value: Any, name: str) -> int:
    if isinstance(value, bool) or int(value) != value or value < 0:
        raise ValueError(f"{name} must be an int >= 0 pixels, got {value!r}")
    return int(value)


def feather_mask(mask: np.ndarray, feather: int) -> np.ndarray:
    """A soft edge `feather` pixels wide outside one mask [H, W] (uint8 0/1 -> uint8 0..255): grown by
    `feather`, then blurred over as much, so the mask itself stays 255 and falls to 0 beyond it."""
    import cv2

    out = mask * np.uint8(MASK_MAX)
    if not feather or not mask.any():
        return out
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * feather + 1,) * 2)
    soft = cv2.GaussianBlur(cv2.dilate(mask, kernel).astype(np.float32), (2 * feather + 1,) * 2, feather / 2)
    return np.maximum(out, np.rint(soft * MASK_MAX).astype(np.uint8))


def mouth_masks(frames: Any, dilation: int = 8, jaw: bool = True, feather: int = 8, track=None, *,
                backend: Any = None, faces: int = 1) -> MouthMasks:
    """The region to regenerate in every frame of `frames` [T, H, W, C]: the outer lips (with `jaw`
    also the lower face from the jaw line up to the nose), grown by `dilation` pixels, with a soft
    edge of `feather` pixels (`feather_mask`), one frame at a time. Frames without a face get an empty
    mask: the dub passes them through untouched. `faces`: how many faces' mouths (several speakers:
    one per speaker, each frame the union). `track`: a `lipmask.face_mesh_track` to reuse (made with
    `max_faces=faces` for several)."""
    dilation, feather = _check_pixels(dilation, "dilation"), _check_pixels(feather, "feather")
    if isinstance(faces, bool) or int(faces) != faces or faces < 1:
        raise ValueError(f"faces must be an int >= 1 (one per speaker), got {faces!r}")
    if track is None:
        track = face_mesh_track(frames, backend=backend, max_faces=faces)
    outlines = [list(LIP_OUTER)] + ([list(JAW_OUTLINE)] if jaw else [])  # dilating the union = the union dilated
    out = np.zeros((len(track.found), track.height, track.width), np.uint8)
    for i in np.flatnonzero(track.found):
        every = [track.landmarks[i]] if faces == 1 or track.faces is None else list(track.faces[i][:faces])
        region = polygon_mask(track.height, track.width, [f[o] for f in every for o in outlines], dilation)
        out[i] = feather_mask(region, feather)
    notes = []
    missing = np.flatnonzero(~track.found).tolist()
    if missing:
        notes.append(f"{len(missing)} of {len(track.found)} frame(s) have no face and pass through untouched: "
                     f"{missing[:20]}{' ...' if len(missing) > 20 else ''}")
    return MouthMasks(torch.from_numpy(out), track.found.copy(), notes)


def latent_mask(masks: torch.Tensor) -> torch.Tensor:
    """Pixel masks [T, H, W] (T = 4k+1) -> the generated latent cells [T_lat, H/8, W/8], 0 or 1.

    A cell is 1 when any pixel of its block in any frame it stands for is above 0: latent frame 0 is
    frame 0 alone, latent frame t frames 4t-3..4t (Wan's causal VAE). Unlike `lipmask.to_latent`
    (trilinear, samples the cell centres), every masked pixel of every frame is inside a generated
    cell, so no part of a moving mouth is held to the source."""
    t, h, w = masks.shape
    check_frames(t, f"masks {tuple(masks.shape)}: the frame count", least=1)
    if h % 8 or w % 8:
        raise ValueError(f"masks {tuple(masks.shape)}: need sides that are multiples of 8 (the VAE's stride)")
    m = torch.cat([masks[:1].expand(TIME_STRIDE - 1, -1, -1), masks]).float()  # frame 0 stands alone
    blocks = m.reshape(-1, TIME_STRIDE, h // 8, 8, w // 8, 8).amax(dim=(1, 3, 5))  # [T_lat, H/8, W/8]
    return (blocks > 0).float()


# ------------------------------------------------------------------------------------- plan


@dataclass
class DubPlan:
    """The output's frames and how they map to the source and to the model's 23 fps frames."""

    source_frames: int
    source_fps: float
    audio_seconds: float
    fit: str
    frames: int  # output frames, at the source's frame rate
    generated: int  # model frames sampled (4k+1)
    model_frames: int  # model frames the output uses (the segments stop after them)
    out_source: torch.Tensor  # long [frames]: the source frame each output frame shows
    model_out: torch.Tensor  # long [generated]: the output frame each model frame stands for
    out_model: torch.Tensor  # long [frames]: the model frame each output frame takes its mouth from
    plans: list[SegmentPlan]
    notes: list[str] = field(default_factory=list)

    @property
    def seconds(self) -> float:
        return self.frames / self.source_fps

    def describe(self) -> str:
        return (f"dub: {self.source_frames} source frames at {self.source_fps:g} fps "
                f"({self.source_frames / self.source_fps:.2f} s), new audio {self.audio_seconds:.2f} s -> "
                f"{self.frames} frames ({self.seconds:.2f} s, fit {self.fit}); the model makes {self.model_frames} "
                f"frames at {MODEL_FPS:g} fps in {len(self.plans)} segment(s)")


def _nearest(n: int, ratio: float, last: int) -> torch.Tensor:
    """round(i * ratio) for i < n, at most `last`."""
    return torch.floor(torch.arange(n, dtype=torch.float64) * ratio + 0.5 + 1e-9).long().clamp(max=last)


def plan_dub(source_frames: int, source_fps: float, audio_seconds: float, fit: str = "cut",
             segment_frames: int = 81, motion_frames: int = 1, fps: float = MODEL_FPS) -> DubPlan:
    """Plan a dub of a `source_frames` long video at `source_fps` with `audio_seconds` of new audio.

    Lengths within one source frame count as equal. Otherwise `fit` decides (see the module
    docstring) and the plan's notes say what was cut, padded, looped or held."""
    if fit not in FIT_MODES:
        raise ValueError(f"fit must be one of {FIT_MODES}, got {fit!r}")
    if not (math.isfinite(source_fps) and source_fps > 0):
        raise ValueError(f"the source video's frame rate must be > 0, got {source_fps!r}")
    if source_frames < 1:
        raise ValueError("the source video has no frames")
    if source_frames == 1:
        raise ValueError("the source is a single frame (a still image?): a dub changes the mouth of a video; to make a "
                         "still portrait talk, use generate (ComfyUI: template 01 or 03_long_audio)")
    if not (math.isfinite(audio_seconds) and audio_seconds > 4 / fps):
        raise ValueError(f"the new audio is {audio_seconds:.3f} s: it must be longer than one latent frame "
                         f"({4 / fps:.3f} s)")
    video = source_frames / source_fps
    notes, diff = [], audio_seconds - video
    if abs(diff) <= 1 / source_fps or fit == "cut":
        frames = source_frames
        if diff > 1 / source_fps:
            notes.append(f"the new audio ({audio_seconds:.2f} s) is longer than the video ({video:.2f} s): its last "
                         f"{diff:.2f} s are cut (fit 'loop' or 'hold' keep the whole audio)")
        elif diff < -1 / source_fps:
            notes.append(f"the new audio ({audio_seconds:.2f} s) is shorter than the video ({video:.2f} s): the last "
                         f"{-diff:.2f} s are dubbed with silence (fit 'loop' or 'hold' end the video with the audio)")
    else:
        frames = output_frames(audio_seconds, source_fps)
        if diff < 0:
            notes.append(f"the video ({video:.2f} s) is cut to the new audio ({audio_seconds:.2f} s): its last "
                         f"{-diff:.2f} s are left out (fit 'cut' keeps the whole video, the rest dubbed with silence)")
        elif fit == "loop":
            notes.append(f"the video ({video:.2f} s) loops to cover the new audio ({audio_seconds:.2f} s): "
                         f"{frames / source_frames:.2f} times through")
        else:
            notes.append(f"the video's last frame is held for the last {diff:.2f} s of the new audio "
                         f"({audio_seconds:.2f} s)")
    j = torch.arange(frames)
    out_source = j % source_frames if fit == "loop" else j.clamp(max=source_frames - 1)
    seconds = frames / source_fps
    generated, _ = plan_frames(seconds, fps, 0, 0)  # the official count, uncapped
    out_model = _nearest(frames, fps / source_fps, generated - 1)
    model_out = _nearest(generated, source_fps / fps, frames - 1)
    model_frames = int(out_model.max()) + 1
    plans = plan_segments(generated, segment_frames, motion_frames)
    return DubPlan(source_frames, float(source_fps), float(audio_seconds), fit, frames, generated, model_frames,
                   out_source, model_out, out_model, plans, notes)


def dub_wave(wave16k: torch.Tensor, plan: DubPlan, fps: float = MODEL_FPS) -> torch.Tensor:
    """The new audio (16 kHz mono) as the model hears it: cut or padded with silence to the output's
    length, then padded with silence to the sampled frames' length, so token j stays at 0.02 j s
    (no spreading of a short recording over the frames)."""
    # the sampled frames always outlast the output, so one silence pad covers both
    return fit_to_frames(wave16k[:round(plan.seconds * SAMPLE_RATE)], plan.generated, fps, pad=True).waveform


def dub_features(encoder: Any, audio: torch.Tensor | DubSpeakers, plan: DubPlan,
                 fps: float = MODEL_FPS) -> torch.Tensor:
    """The wav2vec2 features the dub's segments take their windows from: of the new audio ``[1, L, 768]``,
    or of several speakers' tracks, each fitted as ``dub_wave`` fits one, then the background's silence
    ``[K + 1, L, 768]`` (``speakers.encode_tracks``)."""
    if isinstance(audio, DubSpeakers):
        return encode_tracks(encoder, torch.stack([dub_wave(t, plan, fps) for t in audio.tracks.tracks]))
    return encoder.encode(dub_wave(audio, plan, fps))


# ------------------------------------------------------------------------------------- the job


def _resize(frames: torch.Tensor, width: int, height: int) -> torch.Tensor:
    """[T, H, W, C] float -> [T, height, width, C] (bilinear, antialiased when shrinking)."""
    if frames.shape[1:3] == (height, width):
        return frames
    x = F.interpolate(rearrange(frames, "t h w c -> t c h w"), size=(height, width), mode="bilinear",
                      align_corners=False, antialias=True)
    return rearrange(x, "t c h w -> t h w c")


SampleDub = Callable[[SegmentPlan, torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]


class DubJob:
    """One dub: the source frames [N, H, W, 3] (uint8 or float 0..1), their masks [N, H, W] (float 0..1, or
    uint8 0..255 as `mouth_masks` makes them; kept as bytes) and the plan.

    `frames(sample)` makes the output frames [n, H, W, 3] (float 0..1, the source's size and frame
    rate) segment by segment; `sample(plan, held, source, mask)` gets the segment's held frames and
    source frames at the model's size [T, h, w, 3] (0..1) and its latent mask [T_lat, h/8, w/8]
    (1 = generate), and returns the segment's frames [T, h, w, 3]."""

    def __init__(self, frames: Any, masks: torch.Tensor, plan: DubPlan, size: int = 512, paste_back: bool = True):
        self.source = torch.as_tensor(np.asarray(frames)) if not isinstance(frames, torch.Tensor) else frames
        if self.source.ndim != 4 or self.source.shape[-1] < 3:
            raise ValueError(f"the source video must be frames [N, H, W, 3], got {tuple(self.source.shape)}")
        n, h, w = self.source.shape[:3]
        if tuple(masks.shape) != (n, h, w):
            raise ValueError(f"the masks are {tuple(masks.shape)} but the video is {n} frames of {w}x{h}: make the "
                             f"masks from these frames (one per frame, same size)")
        if plan.source_frames != n:
            raise ValueError(f"the plan is for {plan.source_frames} source frames, the video has {n}")
        if masks.dtype != torch.uint8:
            masks = (masks.float().clamp(0, 1) * MASK_MAX).round_().to(torch.uint8)
        self.masks, self.plan, self.paste_back = masks.cpu(), plan, paste_back
        self.width, self.height = official_size(w, h, size)  # the frames are stretched to it and back
        self.has_face = self.masks.flatten(1).amax(1) > 0  # [N]

    def _mask(self, idx: torch.Tensor) -> torch.Tensor:
        return self.masks[idx].float() / MASK_MAX

    def _float(self, idx: torch.Tensor) -> torch.Tensor:
        x = self.source[idx, ..., :3]
        return x.float() / 255.0 if x.dtype == torch.uint8 else x.float().cpu()

    def first_frame(self) -> torch.Tensor:
        """The source frame the video starts from, at the model's size [1, h, w, 3]: the first segment's
        I2V start image and CLIP image."""
        return _resize(self._float(self.plan.out_source[self.plan.model_out[:1]]), self.width, self.height).clamp(0, 1)

    def source_index(self, plan: SegmentPlan) -> torch.Tensor:
        """The source frame each of a segment's model frames shows: long [T]."""
        return self.plan.out_source[self.plan.model_out[plan.start_frame:plan.end_frame]]

    def model_inputs(self, plan: SegmentPlan) -> tuple[torch.Tensor, torch.Tensor]:
        """A segment's source frames at the model's size [T, h, w, 3] and its latent mask."""
        src = self.source_index(plan)
        frames = _resize(self._float(src), self.width, self.height).clamp(0, 1)
        masks = _resize(self._mask(src)[..., None], self.width, self.height)[..., 0]
        return frames, latent_mask(masks)

    def frames(self, sample: SampleDub) -> Iterator[torch.Tensor]:
        start = self.first_frame()  # the source's own first frame

        def segment(plan: SegmentPlan, held: torch.Tensor) -> torch.Tensor:
            source, mask = self.model_inputs(plan)
            return source if not mask.any() else sample(plan, held, source, mask)

        made = torch.empty(0, self.height, self.width, 3)  # model frames not yet used, from index `first`
        first = done = 0
        for chunk in run_segments(self.plan.plans, start, segment, color_match=False, keep=self.plan.model_frames):
            made, have = torch.cat([made, chunk.float().cpu()]), first + made.shape[0] + chunk.shape[0]
            end = int((self.plan.out_model < have).sum())  # out_model is non-decreasing
            if end > done:
                yield self._composite(done, end, made, first)
                done = end
            keep_from = int(self.plan.out_model[min(done, self.plan.frames - 1)])
            made, first = made[keep_from - first:], keep_from

    def _composite(self, a: int, b: int, made: torch.Tensor, first: int) -> torch.Tensor:
        """Output frames a..b-1: the source outside the mask, the model's frame inside it."""
        src_idx = self.plan.out_source[a:b]
        src = self._float(src_idx)
        gen = _resize(made[self.plan.out_model[a:b] - first], src.shape[2], src.shape[1]).clamp(0, 1)
        mask = self._mask(src_idx)[..., None]
        out = composite(gen, src, mask) if self.paste_back else gen
        face = self.has_face[src_idx]
        out[~face] = src[~face]  # frames without a face: untouched
        return out


# ------------------------------------------------------------------------------------- command line


def dub_frames(pipeline, job: DubJob, audio: torch.Tensor | DubSpeakers, config, prompt: str, negative_prompt: str,
               should_stop=None, progress: bool = True, runtime: Any = None) -> Iterator[torch.Tensor]:
    """The output frames of `job` made by a `pipeline.FantasyTalkingPipeline` with `config` (a
    GenerationConfig: steps, guidance, seed, segment settings; its fps is the model's), the new
    audio (16 kHz mono, the whole recording: `dub_wave` fits it) or several speakers
    (`dub_speakers.DubSpeakers`: each voice routed to its own region, per source frame)."""
    c, plan = pipeline.c, job.plan
    if c.untrained:
        print(TINY_BANNER)
    device = next(c.dit.parameters()).device
    speakers = audio if isinstance(audio, DubSpeakers) else None
    with pipeline.session(runtime) as (att, rt):
        start = frames_to_tensor(job.first_frame()[0])
        context, clip_fea = pipeline.conditioning(start, prompt, negative_prompt)  # the source's first frame
        features = dub_features(c.wav2vec, audio, plan, config.fps)

        def sample(seg: SegmentPlan, held: torch.Tensor, source: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
            y = i2v_condition(c.vae, frames_to_tensor(held).to(device), seg.num_frames)
            y = amplify_i2v(y, config.controls().amplitude).to(device)  # omega_b: off (1) unless set
            guidance = config.guidance()
            if speakers is None:
                cond = segment_audio(c.audio, features, seg, plan.generated, config.fps)
            else:  # the regions of this segment's source frames, on its token grid
                regions = speakers.segment(job.source_index(seg), job.width, job.height)
                cond = speakers.condition(c.audio, features, seg, plan.generated, config.fps, regions,
                                          (y.shape[-2] // 2, y.shape[-1] // 2))
                guidance = speakers.guidance(guidance, regions)
            src = c.vae.encode(frames_to_tensor(source).to(device))
            if rt is not None:
                rt.reset()
            steps = tqdm(total=config.steps, desc=f"segment {seg.index + 1}/{len(plan.plans)}", disable=not progress,
                         leave=False)
            latents = pipeline.sample_latents(att, c.dit, y, clip_fea, context, cond, config,
                                              segment_seed(config.seed, seg.index), should_stop, steps,
                                              inpaint=(src, mask.to(device)), guidance=guidance)
            return video_to_frames(c.vae.decode(latents))

        yield from job.frames(sample)
