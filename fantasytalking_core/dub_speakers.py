"""Several speakers in a dub: each new voice drives only its own face of the source video.

The routing is ``speakers.py``'s (one audio attention per speaker plus the background's silence,
mixed per token by region weights); what a dub adds is where the regions come from and that they
move with the people:

- **Given masks** (one per speaker, at the source video's size) hold for every frame.
- **Automatic regions** come from the faces the dub's face mesh finds anyway (the mouth masks of
  every face, ``dub.mouth_masks(faces=K)``): on the first source frame the K largest faces, numbered
  left to right (``speakers.find_regions``); on every later source frame each speaker takes the face
  nearest to their previous one (``speakers.match_faces``; a frame with fewer faces keeps the
  previous ones). Per segment the regions of its model frames are drawn at the model's size
  (``speakers.head_regions``) and averaged over the frames each latent frame stands for, so the
  routing weights are per latent frame (``RoutedAudio`` takes ``[S, T_lat, h, w]``).

The mouth masks decide what is regenerated (every speaker's mouth); the routing decides which voice
drives which region.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import torch
import torch.nn.functional as F

from .adapters.routing import RoutedAudio
from .face import FaceDetection
from .frames import TIME_STRIDE
from .sampling import Guidance
from .speakers import (RegionalGuidance, SpeakerRegions, Speakers, SpeakerTracks, find_regions, full_frame,
                       given_regions, head_regions, match_faces, region_audio)

Box = tuple[float, float, float, float]


def check_region_size(size: tuple[int, int], width: int, height: int, what: str = "the speaker regions") -> None:
    """Regions (``size`` = width, height) drawn for another picture than the source video are refused."""
    if tuple(size) != (width, height):
        raise ValueError(f"{what} {'are' if what.endswith('s') else 'is'} {size[0]}x{size[1]} but the source video is "
                         f"{width}x{height}: draw the masks on a frame of the video itself (FantasyTalking Speaker "
                         f"Regions on the video's frames: it takes the first; --mask files of {width}x{height} on the "
                         f"command line)")


def mesh_faces(landmarks: Any) -> list[FaceDetection]:
    """A frame's face-mesh faces ``[F, N, 2]`` (pixels) as face boxes (each face's landmarks' extent)."""
    out = []
    for face in landmarks:
        (x0, y0), (x1, y1) = face.min(0), face.max(0)
        out.append(FaceDetection((float(x0), float(y0), float(x1), float(y1)), 1.0, source="face mesh"))
    return out


@dataclass
class SegmentRegions:
    """The speakers' regions on one segment's model frames: ``masks [T, K, h, w]`` at the model's size
    (T = 4k+1), or ``regions`` for every frame. What ``RegionAudio`` and ``RegionalGuidance`` ask of
    regions: :meth:`weights` and :meth:`latent_mask`, here per latent frame."""

    masks: torch.Tensor | None = None
    regions: SpeakerRegions | None = None

    def weights(self, grid_h: int, grid_w: int) -> torch.Tensor:
        """``[K + 1, T_lat, grid_h, grid_w]`` (``[K + 1, 1, ...]`` for held regions): per latent frame the
        mean of its frames' weights (frame 0 alone, then frames 4t-3..4t), still summing to 1."""
        if self.masks is None:
            return self.regions.weights(grid_h, grid_w)
        per_frame = torch.cat([SpeakerRegions(m).weights(grid_h, grid_w) for m in self.masks], 1)  # [S, T, gh, gw]
        first, rest = per_frame[:, :1], per_frame[:, 1:]
        rest = rest.reshape(rest.shape[0], -1, TIME_STRIDE, grid_h, grid_w).mean(2)
        return torch.cat([first, rest], 1)

    def latent_mask(self, lat_h: int, lat_w: int) -> torch.Tensor:
        """The speakers' share of each latent pixel, ``[T_lat, lat_h, lat_w]`` (or ``[1, ...]``)."""
        w = self.weights(lat_h // 2, lat_w // 2)[:-1].sum(0)
        return w.repeat_interleave(2, -2).repeat_interleave(2, -1)


@dataclass
class DubSpeakers:
    """The speakers of one dub: their ``tracks`` (``SpeakerTracks``: 16 kHz on the new audio's timeline,
    which ``dub.plan_dub`` fits, and their mix, the new sound), ``regions`` at the source's size (on the
    first source frame), ``boxes`` the K faces of every source frame when the regions follow the faces
    (None: the regions hold), and whether cfg_audio is kept to the regions."""

    tracks: SpeakerTracks
    regions: SpeakerRegions
    boxes: list[list[Box]] | None = None
    region_guidance: bool = False
    grow: float = 1.0
    feather: float = 8.0

    def segment(self, index: torch.Tensor, width: int, height: int) -> SegmentRegions:
        """The regions of a segment whose model frames show the source frames ``index`` [T], at the model's
        ``width x height`` (the source frames are stretched to it)."""
        if self.boxes is None:
            return SegmentRegions(regions=self._stretched(width, height))
        sw, sh = self.regions.size
        sx, sy = width / sw, height / sh
        feather = self.feather * (sx + sy) / 2
        drawn: dict[int, torch.Tensor] = {}
        for j in index.tolist():
            if j not in drawn:
                faces = [FaceDetection((x0 * sx, y0 * sy, x1 * sx, y1 * sy), 1.0) for x0, y0, x1, y1 in self.boxes[j]]
                drawn[j] = head_regions(faces, height, width, self.grow, feather).masks
        return SegmentRegions(torch.stack([drawn[j] for j in index.tolist()]))

    def _stretched(self, width: int, height: int) -> SpeakerRegions:
        """The held regions stretched to the model's size as the source frames are (a full-frame region as it is,
        so one speaker stays exactly the single-speaker dub)."""
        r = self.regions
        if r.whole:
            return full_frame(width, height)  # weights exactly 1: the routing returns the one attention untouched
        if r.size == (width, height):
            return r
        masks = F.interpolate(r.masks[None].float(), size=(height, width), mode="bilinear", align_corners=False,
                              antialias=True)[0]
        return SpeakerRegions(masks.clamp(0, 1), r.source)

    def condition(self, adapter: Any, features: torch.Tensor, plan: Any, total_frames: int, fps: float,
                  regions: SegmentRegions, grid: tuple[int, int]) -> RoutedAudio:
        """One segment's routed audio on the token grid ``(rows, columns)``; ``features [K + 1, L, 768]``."""
        return region_audio(adapter, features, plan, total_frames, fps, regions).on_grid(*grid)

    def guidance(self, guidance: Guidance, regions: SegmentRegions) -> Guidance | RegionalGuidance:
        return RegionalGuidance(guidance, regions) if self.region_guidance else guidance


def dub_speakers(speakers: Speakers, first_frame: Any, faces: Sequence[Any] | None = None) -> DubSpeakers:
    """The command line's speakers (``speakers.Speakers``) for a source video whose first frame is
    ``first_frame`` [H, W, 3]: given masks checked at its size, or regions found on the faces of the
    source frames, ``faces`` (per frame the face-mesh landmarks ``[F, N, 2]``, ``FaceMeshTrack.faces``)."""
    k, tracks = speakers.tracks.count, speakers.tracks
    height, width = first_frame.shape[:2]
    if speakers.masks:
        for i, m in enumerate(speakers.masks):
            shape = torch.as_tensor(m).shape[-2:]
            check_region_size((shape[1], shape[0]), width, height, f"--mask {i + 1}")
        return DubSpeakers(tracks, given_regions(speakers.masks, k, width, height), None, speakers.region_guidance)
    if k == 1:
        return DubSpeakers(tracks, full_frame(width, height), None, speakers.region_guidance)
    per_frame = [mesh_faces(f) for f in faces] if faces is not None else []
    found = len(per_frame[0]) if per_frame else 0
    if found < k:
        raise ValueError(f"found {found} face(s) on the video's first frame but there are {k} speakers: give one "
                         f"--mask FILE per speaker (white = the speaker, at the video's {width}x{height}), or dub a "
                         f"video whose first frame shows every speaker's face")
    first = find_regions(first_frame, k, speakers.grow, speakers.feather, detections=per_frame[0])
    boxes, previous = [], list(first.boxes)
    for detected in per_frame:
        matched = match_faces(previous, detected)
        previous = previous if matched is None else [f.box for f in matched]
        boxes.append(previous)
    first.source += ", followed on every source frame"
    return DubSpeakers(tracks, first, boxes, speakers.region_guidance, speakers.grow, speakers.feather)
