"""Several people talking in one video: each voice drives only its own face (docs/speakers.md).

1 to 4 speakers, each an audio track on one shared timeline and a region of the picture:

- **Timing** (:class:`Timing`, :func:`arrange_tracks`): ``together`` (each track from 0, overlaps
  allowed), ``turns`` (track 1, then track 2, ..., ``gap`` seconds between), ``channels`` (one stereo
  recording, channel c is speaker c) or ``schedule`` (one recording and who speaks when,
  ``"0-3.2:1, 3.2-7.5:2"``). Every speaker's track spans the whole timeline, zeros where they are
  silent, so wav2vec2 hears real silence there (:func:`encode_tracks`), never zero features. The
  background hears the features of silence itself (a zero waveform, encoded). The video's
  soundtrack is the mix of the tracks (the recording itself for ``channels`` and ``schedule``).
- **Regions** (:class:`SpeakerRegions`): found on the portrait (:func:`find_regions`: faces numbered
  left to right, grown to head and shoulders, made disjoint, feathered) or given as masks
  (:func:`given_regions`, checked for size, emptiness and overlap). On the DiT's token grid they
  become the routing weights (:meth:`SpeakerRegions.weights`): per token one weight per speaker and
  one for the background, summing to 1.
- **Routing** (``adapters/routing.py``): per block one audio attention per speaker and one for the
  background, mixed per token by those weights before the output projection.
  :class:`RegionAudio` holds the sources and regions until the video's token grid is known.
- **Guidance** (:class:`RegionalGuidance`): optionally, the audio guidance term only inside the
  speakers' regions (scale 1 outside), so motion leaking elsewhere is not amplified by cfg_audio.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from .adapters.routing import RoutedAudio, SourceSet
from .audio import SAMPLE_RATE, AudioTrack, prepare_waveform, read_audio
from .face import as_rgb_uint8, detect_faces
from .frames import cut_note, plan_frames
from .images import fit_frames
from .sampling import Guidance
from .segments import segment_audio

MAX_SPEAKERS = 4
TIMINGS = ("together", "turns", "channels", "schedule")
PATCH = 16  # pixels per DiT token side: the VAE's 8 times the 2x2 patch
COLORS = ((230, 60, 60), (60, 120, 235), (60, 190, 90), (235, 180, 40))  # speaker 1..4 in previews


# ------------------------------------------------------------------------------------- timing


@dataclass(frozen=True)
class Timing:
    """How the speakers' audio lies on the video's timeline (see the module docstring)."""

    mode: str = "turns"
    gap: float = 0.0  # seconds of silence between turns
    schedule: str = ""  # "start-end:speaker, ..." in seconds, speakers numbered from 1

    def __post_init__(self) -> None:
        if self.mode not in TIMINGS:
            raise ValueError(f"speaker timing must be one of {TIMINGS}, got {self.mode!r}")
        if not (math.isfinite(self.gap) and self.gap >= 0):
            raise ValueError(f"the gap between turns must be >= 0 seconds, got {self.gap!r}")
        if self.mode == "schedule":
            parse_schedule(self.schedule)

    @classmethod
    def parse(cls, text: str) -> "Timing":
        """The command line's ``--timing``: ``together``, ``turns``, ``turns:GAP`` (seconds),
        ``channels``, or a who-speaks-when list ``"0-3.2:1, 3.2-7.5:2"``."""
        text = str(text).strip()
        if text in ("together", "turns", "channels"):
            return cls(text)
        if text.startswith("turns:"):
            try:
                return cls("turns", float(text[6:]))
            except ValueError:
                raise ValueError(f"--timing {text!r}: the gap after 'turns:' must be seconds, e.g. turns:0.5") from None
        return cls("schedule", schedule=text)


_SPAN = re.compile(r"^\s*([0-9.]+)\s*-\s*([0-9.]+)\s*:\s*([0-9]+)\s*$")


def parse_schedule(text: str) -> list[tuple[float, float, int]]:
    """``"0-3.2:1, 3.2-7.5:2"`` -> ``[(0.0, 3.2, 0), (3.2, 7.5, 1)]`` (speakers from 0 here, from 1 in
    the text). Spans may overlap: two speakers then both hear the recording there."""
    spans = []
    for part in [p for p in str(text).replace(";", ",").split(",") if p.strip()]:
        m = _SPAN.match(part)
        if not m:
            raise ValueError(f"who-speaks-when entry {part.strip()!r} is not 'start-end:speaker' in seconds, "
                             f"e.g. '0-3.2:1, 3.2-7.5:2'")
        start, end, who = float(m[1]), float(m[2]), int(m[3])
        if not end > start:
            raise ValueError(f"who-speaks-when entry {part.strip()!r} ends before it starts")
        if not 1 <= who <= MAX_SPEAKERS:
            raise ValueError(f"who-speaks-when entry {part.strip()!r} names speaker {who}; speakers are 1 to {MAX_SPEAKERS}")
        spans.append((start, end, who - 1))
    if not spans:
        raise ValueError("the who-speaks-when list is empty; give e.g. '0-3.2:1, 3.2-7.5:2' (seconds:speaker)")
    return spans


@dataclass
class SpeakerTracks:
    """Each speaker's audio on the shared timeline: ``tracks [K, N]`` mono 16 kHz float32 (zeros where
    the speaker is silent), and the ``soundtrack`` the video keeps (the mix, at its own rate)."""

    tracks: torch.Tensor
    soundtrack: AudioTrack
    timing: Timing
    notes: list[str] = field(default_factory=list)

    @property
    def count(self) -> int:
        return self.tracks.shape[0]

    @property
    def seconds(self) -> float:
        return self.tracks.shape[1] / SAMPLE_RATE

    def cut(self, num_samples: int) -> torch.Tensor:
        """The tracks cut (or padded with silence) to ``num_samples`` (the video's official cut)."""
        n = self.tracks.shape[1]
        return self.tracks[:, :num_samples] if n >= num_samples else F.pad(self.tracks, (0, num_samples - n))


def _resample(x: np.ndarray, rate: int, to: int) -> np.ndarray:
    if rate == to:
        return x
    from scipy.signal import resample_poly

    g = math.gcd(rate, to)
    return resample_poly(x, to // g, rate // g, axis=-1).astype(np.float32)


def arrange_tracks(audios: Sequence[Any], timing: Timing = Timing()) -> SpeakerTracks:
    """The speakers' tracks from ``audios`` (any input ``audio.read_audio`` takes): one per speaker for
    ``together`` and ``turns``; one recording for ``channels`` (a speaker per channel) and ``schedule``
    (as many speakers as the list names)."""
    if not audios:
        raise ValueError("no audio given: give one recording per speaker (1 to 4)")
    if timing.mode in ("channels", "schedule"):
        if len(audios) != 1:
            raise ValueError(f"speaker timing {timing.mode!r} takes one recording, got {len(audios)}: use 'together' "
                             f"or 'turns' for one recording per speaker")
        track = read_audio(audios[0])
        if timing.mode == "channels":
            c = track.waveform.shape[0]
            if not 2 <= c <= MAX_SPEAKERS:
                raise ValueError(f"speaker timing 'channels' needs a recording with 2 to {MAX_SPEAKERS} channels (one "
                                 f"per speaker); {track.source or 'the recording'} has {c}")
            tracks = torch.stack([prepare_waveform(track.waveform[i:i + 1], track.sample_rate) for i in range(c)])
            if c > 2:  # the video keeps mono or stereo
                track = AudioTrack(track.waveform.mean(0, keepdim=True), track.sample_rate, track.source)
            return SpeakerTracks(tracks, track, timing, [f"{c} speakers, one per channel of {track.source}"])
        wave = prepare_waveform(track.waveform, track.sample_rate)
        spans = parse_schedule(timing.schedule)
        count = max(s[2] for s in spans) + 1
        t = torch.arange(wave.numel()) / SAMPLE_RATE
        tracks = torch.zeros(count, wave.numel())
        for start, end, who in spans:
            if start >= wave.numel() / SAMPLE_RATE:
                raise ValueError(f"who-speaks-when span {start:g}-{end:g} s starts after the end of the "
                                 f"{wave.numel() / SAMPLE_RATE:.2f} s recording")
            on = (t >= start) & (t < end)
            tracks[who][on] = wave[on]
        silent = [str(k + 1) for k in range(count) if not tracks[k].any()]
        if silent:
            raise ValueError(f"the who-speaks-when list never gives speaker {', '.join(silent)} a turn; number the "
                             f"speakers 1 to {count} without gaps")
        return SpeakerTracks(tracks, track, timing, [f"{count} speakers from one recording, by the list {timing.schedule!r}"])
    if len(audios) > MAX_SPEAKERS:
        raise ValueError(f"{len(audios)} recordings: at most {MAX_SPEAKERS} speakers")
    read = [read_audio(a) for a in audios]
    rate = max(r.sample_rate for r in read)
    mono = [_resample(r.waveform.mean(0).numpy(), r.sample_rate, rate) for r in read]
    starts, at = [], 0.0
    for m in mono:  # in seconds, so both rates place every track at the same moment
        starts.append(at if timing.mode == "turns" else 0.0)
        at += m.shape[-1] / rate + timing.gap
    waves16 = [prepare_waveform(r.waveform, r.sample_rate) for r in read]
    tracks = torch.zeros(len(read), max(round(s * SAMPLE_RATE) + w.numel() for s, w in zip(starts, waves16)))
    mix = np.zeros(max(round(s * rate) + m.shape[-1] for s, m in zip(starts, mono)), np.float32)
    for k, (s, w16, m) in enumerate(zip(starts, waves16, mono)):
        tracks[k, round(s * SAMPLE_RATE): round(s * SAMPLE_RATE) + w16.numel()] = w16
        mix[round(s * rate): round(s * rate) + m.shape[-1]] += m
    peak = float(np.abs(mix).max(initial=0.0))
    if peak > 1.0:  # overlapping voices: scale the mix down rather than clip it
        mix /= peak
    soundtrack = AudioTrack(torch.from_numpy(mix)[None], rate, " + ".join(r.source or "audio" for r in read))
    when = ", ".join(f"speaker {k + 1} from {s:.2f} s" for k, s in enumerate(starts))
    return SpeakerTracks(tracks, soundtrack, timing, [f"{len(read)} speaker(s) {timing.mode}: {when}"])


# ------------------------------------------------------------------------------------- features


def silence_features(encoder: Any, num_samples: int) -> torch.Tensor:
    """wav2vec2's features of real silence: a zero waveform of ``num_samples``, encoded [1, L, 768]."""
    return encoder.encode(torch.zeros(int(num_samples)))


def encode_tracks(encoder: Any, tracks: torch.Tensor) -> torch.Tensor:
    """``tracks [K, N]`` (16 kHz, one timeline) -> ``[K + 1, L, 768]``: each speaker's features, then the
    background's features of silence. Each track is encoded whole, its silences as silence (a track
    that is silent throughout has exactly the silence features, encoded once)."""
    silence = silence_features(encoder, tracks.shape[1]).float()
    out = [encoder.encode(t).float() if bool(t.any()) else silence for t in tracks]
    return torch.cat([*out, silence]).cpu()


def region_audio(adapter: Any, features: torch.Tensor, plan: Any, total_frames: int, fps: float,
                 regions: Any) -> "RegionAudio":
    """One segment's audio routed by ``regions``: every source's audio windows (``segments.segment_audio``
    per source of ``features [K + 1, L, 768]``: the speakers', then the background's)."""
    sources = [segment_audio(adapter, features[s:s + 1], plan, total_frames, fps) for s in range(features.shape[0])]
    return RegionAudio(sources, regions)


@dataclass
class RegionAudio(SourceSet):
    """Audio conditions per source (speakers, then background) and the regions that route them, before
    the token grid is known (a ComfyUI MODEL learns the video's size only when it runs):
    :meth:`on_grid` gives the ``RoutedAudio`` the blocks attend to."""

    sources: list[Any]
    regions: "SpeakerRegions"
    _grids: dict = field(default_factory=dict, repr=False)

    def on_grid(self, rows: int, columns: int) -> RoutedAudio:
        """The routed audio for a video of ``rows x columns`` tokens per latent frame (pixels / 16)."""
        if (rows, columns) not in self._grids:
            self._grids[(rows, columns)] = RoutedAudio(self.sources, self.regions.weights(rows, columns))
        return self._grids[(rows, columns)]


# ------------------------------------------------------------------------------------- regions


@dataclass
class SpeakerRegions:
    """``masks [K, H, W]`` float32 in 0..1, speaker k's part of the picture (k from 0, left to right
    when found automatically); ``boxes`` the faces they came from, if any."""

    masks: torch.Tensor
    source: str = "given masks"
    boxes: list[tuple[float, float, float, float]] = field(default_factory=list)

    @property
    def count(self) -> int:
        return self.masks.shape[0]

    @property
    def size(self) -> tuple[int, int]:
        """(width, height)."""
        return self.masks.shape[2], self.masks.shape[1]

    @property
    def whole(self) -> bool:
        """One speaker whose region is the whole picture (at any size: routing is the single-speaker path)."""
        return self.count == 1 and bool((self.masks == 1).all())

    def fitted(self, width: int, height: int) -> torch.Tensor:
        """The masks at width x height as ComfyUI's WanImageToVideo fits the start image (centre cut to the
        aspect ratio, bilinear), or as given when already that size: [K, height, width]."""
        if self.size == (width, height):
            return self.masks
        return fit_frames(self.masks[..., None], width, height)[..., 0]

    def weights(self, grid_h: int, grid_w: int) -> torch.Tensor:
        """The routing weights on a ``grid_h x grid_w`` token grid: ``[K + 1, 1, grid_h, grid_w]``, the
        speakers' share of each token's 16x16 pixels, and the background's, summing to 1."""
        masks = self.fitted(grid_w * PATCH, grid_h * PATCH)
        speakers = F.adaptive_avg_pool2d(masks[None].float(), (grid_h, grid_w))[0]  # [K, gh, gw]
        total = speakers.sum(0, keepdim=True)
        speakers = torch.where(total > 1, speakers / total.clamp_min(1e-12), speakers)
        background = (1 - speakers.sum(0, keepdim=True)).clamp_min(0)
        return torch.cat([speakers, background])[:, None]

    def latent_mask(self, lat_h: int, lat_w: int) -> torch.Tensor:
        """The speakers' share of each latent pixel [lat_h, lat_w] (the tokens' weight, for
        :class:`RegionalGuidance`), constant over each token's 2x2 latent pixels."""
        w = self.weights(lat_h // 2, lat_w // 2)[:-1, 0].sum(0)
        return w.repeat_interleave(2, 0).repeat_interleave(2, 1)

    def preview(self, image: Any, alpha: float = 0.45) -> np.ndarray:
        """The picture with each region tinted in its speaker's colour and numbered: uint8 [H, W, 3]."""
        from PIL import Image, ImageDraw

        rgb = as_rgb_uint8(image).astype(np.float32)
        h, w = rgb.shape[:2]
        masks = self.fitted(w, h).numpy()
        for k in range(self.count):
            tint = np.asarray(COLORS[k % len(COLORS)], np.float32)
            a = alpha * masks[k][..., None]
            rgb = rgb * (1 - a) + tint * a
        out = Image.fromarray(rgb.clip(0, 255).astype(np.uint8))
        draw = ImageDraw.Draw(out)
        side = max(12, min(w, h) // 10)
        for k in range(self.count):
            ys, xs = np.nonzero(masks[k] > 0.5)
            if not len(xs):
                continue
            cx, cy = float(xs.mean()), float(ys.min()) + side
            draw.ellipse((cx - side, cy - side, cx + side, cy + side), fill=COLORS[k % len(COLORS)], outline=(255,) * 3)
            draw.text((cx, cy), str(k + 1), fill=(255, 255, 255), anchor="mm", font_size=int(side * 1.3))
        return np.array(out)  # a writable copy


def full_frame(width: int, height: int) -> SpeakerRegions:
    """One speaker whose region is the whole picture (routing equals the single-speaker path exactly)."""
    return SpeakerRegions(torch.ones(1, height, width), "the whole picture")


def _feather(masks: torch.Tensor, feather: float) -> torch.Tensor:
    """Each hard mask blurred (Gaussian, sigma ``feather`` px): the blur is linear with a positive kernel,
    so disjoint masks still sum to at most 1 everywhere."""
    if feather <= 0:
        return masks
    from scipy.ndimage import gaussian_filter

    return torch.from_numpy(np.stack([gaussian_filter(m.numpy(), feather, mode="nearest") for m in masks])).float()


def find_regions(image: Any, count: int, grow: float = 1.0, feather: float = 8.0,
                 detections: Sequence[Any] | None = None) -> SpeakerRegions:
    """Automatic regions for ``count`` speakers on ``image`` (a portrait, any form ``face.as_rgb_uint8``
    takes): the ``count`` largest faces (``face.detect_faces``, or ``detections``), numbered left to
    right, each grown to head and shoulders (``grow`` scales that box), every pixel given to the
    nearest face whose box holds it (so regions are disjoint), then feathered by ``feather`` pixels."""
    _check_count(count)
    rgb = as_rgb_uint8(image)
    faces = list(detections) if detections is not None else detect_faces(rgb)
    if len(faces) < count:
        raise ValueError(
            f"found {len(faces)} face(s) in the portrait but there are {count} speakers: connect one mask per speaker "
            f"(FantasyTalking Speaker Regions' mask_1..mask_{count}; --mask FILE per speaker on the command line), or "
            f"use a portrait where every speaker's face is visible and at least ~40 px wide")
    faces = sorted(sorted(faces, key=lambda f: f.area, reverse=True)[:count], key=lambda f: f.center[0])
    return head_regions(faces, rgb.shape[0], rgb.shape[1], grow, feather, "numbered left to right")


def head_regions(faces: Sequence[Any], height: int, width: int, grow: float = 1.0, feather: float = 8.0,
                 how: str = "") -> SpeakerRegions:
    """One region per face, in the order given: each face's head-and-shoulders box, every pixel given
    to the nearest face whose box holds it (disjoint), feathered by ``feather`` pixels."""
    count = len(faces)
    ys, xs = torch.meshgrid(torch.arange(height, dtype=torch.float32) + 0.5,
                            torch.arange(width, dtype=torch.float32) + 0.5, indexing="ij")
    dist = torch.full((count, height, width), math.inf)
    for k, f in enumerate(faces):
        fw, fh = f.width * grow, f.height * grow
        cx, cy = f.center
        x0, x1 = cx - 1.3 * fw, cx + 1.3 * fw  # shoulders are about 2.5 face widths across
        y0, y1 = f.box[1] - 0.6 * fh, f.box[3] + 1.6 * fh  # hair above, neck and shoulders below
        inside = (xs >= x0) & (xs < x1) & (ys >= y0) & (ys < y1)
        d = torch.hypot((xs - cx) / max(f.width, 1.0), (ys - cy) / max(f.height, 1.0))
        dist[k] = torch.where(inside, d, torch.full_like(d, math.inf))
    nearest = dist.argmin(0)
    hard = torch.stack([(nearest == k) & torch.isfinite(dist[k]) for k in range(count)]).float()
    boxes = [tuple(float(v) for v in f.box) for f in faces]
    note = ", ".join(f"{k + 1}: face at x {round(b[0])}-{round(b[2])}" for k, b in enumerate(boxes))
    return SpeakerRegions(_feather(hard, feather), f"{count} face(s) found, {how} ({note})", boxes)


def follow_faces(regions: SpeakerRegions, frame: Any, grow: float = 1.0, feather: float = 8.0,
                 detections: Sequence[Any] | None = None) -> SpeakerRegions:
    """Automatic ``regions`` found again on ``frame`` (a segment's last held frame): each speaker takes the
    new face nearest to their previous one (in speaker order), so the numbering holds while people
    move; with fewer faces than speakers (a face turned away) the previous regions stay."""
    rgb = as_rgb_uint8(frame)
    faces = list(detections) if detections is not None else detect_faces(rgb)
    matched = match_faces(regions.boxes, faces) if len(regions.boxes) == regions.count else None
    if matched is None:
        return regions
    return head_regions(matched, rgb.shape[0], rgb.shape[1], grow, feather, "followed from the previous segment")


def match_faces(boxes: Sequence[tuple[float, float, float, float]], faces: Sequence[Any]) -> list[Any] | None:
    """For each of the speakers' previous face ``boxes``, in speaker order, the nearest of ``faces`` not
    taken yet (by centre); None when there are fewer faces than boxes (a face turned away)."""
    if len(faces) < len(boxes):
        return None
    faces, matched = list(faces), []
    for x0, y0, x1, y1 in boxes:
        best = min(faces, key=lambda f: math.hypot(f.center[0] - (x0 + x1) / 2, f.center[1] - (y0 + y1) / 2))
        matched.append(best)
        faces.remove(best)
    return matched


def given_regions(masks: Sequence[Any], count: int, width: int, height: int) -> SpeakerRegions:
    """Checked masks, one per speaker in order: each ``[H, W]`` (or ``[1, H, W]``) in 0..1 at the
    portrait's size ``width x height``, not empty, no two covering the same pixel (above 0.5)."""
    _check_count(count)
    if len(masks) != count:
        more = "tracks than regions" if count > len(masks) else "regions than tracks"
        raise ValueError(f"{count} speaker track(s) but {len(masks)} mask(s) (more {more}): give one mask per speaker, "
                         f"in the speakers' order, or no mask for automatic regions")
    out = []
    for k, m in enumerate(masks):
        t = torch.as_tensor(np.asarray(m, dtype=np.float32) if not isinstance(m, torch.Tensor) else m).float().cpu()
        t = t[0] if t.dim() == 3 and t.shape[0] == 1 else t
        if t.dim() != 2:
            raise ValueError(f"mask {k + 1} has shape {tuple(t.shape)}; a mask is one [H, W] picture")
        if (t.shape[1], t.shape[0]) != (width, height):
            raise ValueError(f"mask {k + 1} is {t.shape[1]}x{t.shape[0]} but the portrait is {width}x{height}: draw the "
                             f"mask on the portrait itself (ComfyUI's mask editor on its Load Image) or resize it to "
                             f"{width}x{height}")
        if t.max() > 1.0 + 1e-6 or t.min() < 0:
            t = t / 255.0 if t.max() <= 255 and t.min() >= 0 else t
            if t.max() > 1.0 + 1e-6 or t.min() < 0:
                raise ValueError(f"mask {k + 1} has values outside 0..1 ({float(t.min()):g}..{float(t.max()):g})")
        if not bool((t > 0.5).any()):
            raise ValueError(f"mask {k + 1} is empty (no pixel above 0.5): paint speaker {k + 1}'s head and shoulders")
        out.append(t.clamp(0, 1))
    for a in range(count):
        for b in range(a + 1, count):
            both = int(((out[a] > 0.5) & (out[b] > 0.5)).sum())
            if both:
                raise ValueError(f"masks {a + 1} and {b + 1} overlap on {both} pixels: a pixel can belong to one speaker "
                                 f"only; erase the overlap from one of them")
    return SpeakerRegions(torch.stack(out), "given masks")


def read_mask(path: Any) -> np.ndarray:
    """A mask image file (white = the speaker; any mode, alpha ignored) -> float32 [H, W] in 0..1."""
    from pathlib import Path

    from PIL import Image, UnidentifiedImageError

    p = Path(path).expanduser()
    try:
        with Image.open(p) as img:
            return np.asarray(img.convert("L"), np.float32) / 255.0
    except FileNotFoundError:
        raise FileNotFoundError(f"mask file not found: {p}") from None
    except (UnidentifiedImageError, OSError) as err:
        raise ValueError(f"mask {p} is not an image Pillow can read ({err.__class__.__name__}); give a PNG with the "
                         f"speaker in white on black") from err


def _check_count(count: int) -> None:
    if isinstance(count, bool) or not isinstance(count, int) or not 1 <= count <= MAX_SPEAKERS:
        raise ValueError(f"speakers must be 1 to {MAX_SPEAKERS}, got {count!r}")


# ------------------------------------------------------------------------------------- guidance


@dataclass(frozen=True)
class RegionalGuidance:
    """``guidance`` with its audio term scaled by cfg_audio only inside the speakers' regions:
    ``neg + t (pos - neg) + (1 + (a - 1) m) (pos_audio - pos)`` with ``m`` the speakers' share of
    each latent pixel (``SpeakerRegions.latent_mask``): outside the regions the audio counts once,
    as without audio guidance. Same passes as ``guidance``."""

    guidance: Guidance
    regions: SpeakerRegions

    def passes(self, step: int, total: int) -> tuple[str, ...]:
        return self.guidance.passes(step, total)

    def combine(self, outputs: Mapping[str, torch.Tensor], step: int, total: int) -> torch.Tensor:
        g, a = self.guidance, self.guidance.audio_schedule.value(step, total)
        need = self.passes(step, total)
        if "pos_noaudio" not in need:
            return g.combine(outputs, step, total)
        o = outputs
        ref = o["pos_audio"]
        m = self.regions.latent_mask(ref.shape[-2], ref.shape[-1]).to(ref)  # [h, w], broadcast over the rest
        audio = (1 + (a - 1) * m) * (o["pos_audio"] - o["pos_noaudio"])
        if len(need) == 3:
            return o["neg_noaudio"] + g.cfg_text * (o["pos_noaudio"] - o["neg_noaudio"]) + audio
        return o["pos_noaudio"] + audio


# ------------------------------------------------------------------------------------- one video


@dataclass
class SpeakerPlan:
    """The speakers of one video, ready for the model: ``tracks [K, n]`` cut to the video (16 kHz),
    ``regions`` at the video's size, and whether the audio guidance is kept to the regions."""

    tracks: torch.Tensor
    regions: SpeakerRegions
    region_guidance: bool = False
    follow: tuple[float, float] | None = None  # automatic regions: (grow, feather) to find them again per segment

    def features(self, encoder: Any) -> torch.Tensor:
        """[K + 1, L, 768]: the speakers' features, then the background's silence (``encode_tracks``)."""
        return encode_tracks(encoder, self.tracks)

    def condition(self, adapter: Any, features: torch.Tensor, plan: Any, total_frames: int, fps: float,
                  grid: tuple[int, int], held: torch.Tensor | None = None) -> RoutedAudio:
        """One segment's routed audio on the token grid ``(rows, columns)`` of the video. With automatic
        regions, a later segment's regions follow the faces on its last ``held`` frame [K, H, W, 3]."""
        if self.follow is not None and held is not None and plan.index > 0:
            self.regions = follow_faces(self.regions, held[-1], *self.follow)
        return region_audio(adapter, features, plan, total_frames, fps, self.regions).on_grid(*grid)

    def guidance(self, guidance: Guidance) -> Guidance | RegionalGuidance:
        return RegionalGuidance(guidance, self.regions) if self.region_guidance else guidance


@dataclass
class Speakers:
    """Several speakers for the command line or a script: their ``tracks`` on one timeline, and one mask
    per speaker at the portrait's own size (``masks``; None: found on the portrait, ``find_regions``
    with ``grow`` and ``feather``). ``pipeline.Generation`` takes it in place of one recording."""

    tracks: SpeakerTracks
    masks: Sequence[Any] | None = None
    grow: float = 1.0
    feather: float = 8.0
    region_guidance: bool = False

    def plan(self, image: Any, portrait: Any, resize: Any, num_samples: int) -> SpeakerPlan:
        """For the portrait ``image`` (PIL, its own size) made into the video's ``portrait`` (PIL) by
        ``resize(picture)``: the regions at the video's size and the tracks cut to ``num_samples``."""
        from PIL import Image

        k = self.tracks.count
        if self.masks:
            given = given_regions(self.masks, k, *image.size)
            video = [np.asarray(resize(Image.fromarray((m.numpy() * 255).round().astype(np.uint8), "L")), np.float32)
                     for m in given.masks]
            regions = SpeakerRegions(torch.from_numpy(np.stack(video)) / 255.0, given.source)
        elif k == 1:
            regions = full_frame(*portrait.size)
        else:
            regions = find_regions(portrait, k, self.grow, self.feather)
        follow = (self.grow, self.feather) if k > 1 and not self.masks else None
        return SpeakerPlan(self.tracks.cut(num_samples), regions, self.region_guidance, follow)


@dataclass
class SpeakerAudio:
    """FANTASYTALKING_SPEAKERS: the speakers of one video in ComfyUI. ``features [K + 1, L, 768]`` (each
    speaker's wav2vec2 features, then the background's silence) for ``num_frames`` video frames at
    ``fps``; ``regions`` one mask per speaker (any size: fitted to the video as WanImageToVideo fits the
    start image); ``region_guidance`` keeps cfg_audio to the regions."""

    features: torch.Tensor
    num_frames: int
    fps: float
    seconds: float
    regions: SpeakerRegions
    region_guidance: bool = False
    notes: list[str] = field(default_factory=list)
    cut: str = ""  # what max_frames left out of the recording ("" when nothing)
    timeline: SpeakerTracks | None = None  # the whole tracks and their mix (a dub fits and encodes them itself)

    @property
    def count(self) -> int:
        return self.regions.count

    def conditions(self, adapter: Any, mode: str = "frame") -> RegionAudio:
        """Every source's audio condition for the whole video (``adapter.condition``), with the regions."""
        return RegionAudio([adapter.condition(self.features[s:s + 1], self.num_frames, mode=mode)
                            for s in range(self.features.shape[0])], self.regions)


def encode_speakers(tracks: SpeakerTracks, encoder: Any, regions: Sequence[Any] | None, fps: float, frames: int,
                    max_frames: int, region_guidance: bool = False,
                    whole: str = "max_frames 0 makes the whole recording") -> SpeakerAudio:
    """The speakers' tracks, encoded for the video's frames (``audio.plan_frames``, the one frame rule;
    cut as the official code cuts one recording), with their ``regions`` (one mask per speaker, e.g.
    FantasyTalking Speaker Regions' output; None for one speaker: the whole picture)."""
    if regions is None or len(regions) == 0:
        if tracks.count > 1:
            raise ValueError(f"{tracks.count} speakers need one region each: connect FantasyTalking Speaker Regions' "
                             f"regions (faces found on the portrait, or your masks)")
        checked = full_frame(PATCH, PATCH)
    else:
        masks = [torch.as_tensor(m) for m in regions]
        checked = given_regions(masks, tracks.count, masks[0].shape[-1], masks[0].shape[-2])
    num_frames, how = plan_frames(tracks.seconds, fps, frames, max_frames)
    n = min(tracks.tracks.shape[1], int(num_frames / fps * SAMPLE_RATE))
    features = encode_tracks(encoder, tracks.tracks[:, :n])
    notes = tracks.notes + [f"{num_frames} frames ({how}); audio {tracks.seconds:.2f} s", f"regions: {checked.source}"]
    return SpeakerAudio(features, num_frames, fps, tracks.seconds, checked, region_guidance, notes,
                        cut_note(tracks.seconds, num_frames, fps, max_frames, how, whole), tracks)
