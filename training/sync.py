"""Audio-visual sync filter: a hook, with a lip-motion / audio-energy correlation proxy.

The paper filters clips with SyncNet. With SyncNet weights (`syncnet_v2.model`, given as
`--syncnet FILE`) `SyncNetScorer` scores each clip with `evaluation.syncnet` (Sync-C
confidence and offset, as syncnet_python computes them). Without them the default scorer is a
proxy: per frame, the mouth opening (inner-lip gap of MediaPipe face mesh, landmarks 13 and 14,
over the outer-eye-corner distance 33-263) and the audio RMS energy over that frame's time span;
the score is their Pearson correlation, maximised over audio offsets of up to `max_offset` frames
either way. Talking faces open the mouth when the voice is loud, so in-sync clips correlate;
dubbed, shifted or silent-mouthed clips do not. A clip passes when score >= `min_score` and the best
offset is within `max_offset` frames.

Any callable `(frames, track, wave16k, fps) -> SyncScore` can replace them
(`prepare_dataset(..., sync=my_scorer)`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from evaluation import lipsync
from fantasytalking_core.lipmask import FaceMeshTrack


@dataclass
class SyncScore:
    score: float  # higher is better synced; the proxy's is a correlation in [-1, 1]
    offset: int  # frames; positive: the mouth moves `offset` frames after the sound
    method: str
    note: str = ""


def frame_energy(wave16k: torch.Tensor, num_frames: int, fps: float) -> np.ndarray:
    """RMS of the 16 kHz audio over each frame's span [t/fps, (t+1)/fps), float64 [num_frames]."""
    x = wave16k.double().numpy()
    edges = lipsync.frame_bounds(num_frames, fps)
    return np.array([np.sqrt(np.mean(x[a:b] ** 2)) if b > a and a < x.size else 0.0
                     for a, b in zip(edges[:-1], edges[1:])])


def correlation_sync(opening: np.ndarray, energy: np.ndarray, max_offset: int = 6,
                     min_motion: float = 0.01) -> SyncScore:
    """Best Pearson correlation of opening[t] with energy[t - k] over k in [-max_offset, max_offset].

    A mouth whose opening varies by less than `min_motion` (std, in eye-corner distances; face-mesh
    jitter on a closed mouth is ~0.003, speech ~0.05) scores 0: there is no lip motion to sync."""
    finite = opening[np.isfinite(opening)]
    if finite.size < 4 or finite.std() < min_motion:
        return SyncScore(0.0, 0, "energy_correlation", "the mouth does not move (or no face): nothing to sync")
    if energy.std() <= 0:
        return SyncScore(0.0, 0, "energy_correlation", "the audio is constant (silence): nothing to sync")
    offsets, curve = lipsync.correlation_curve(opening, energy, max_offset, min_overlap=4)
    if not np.isfinite(curve).any():
        return SyncScore(0.0, 0, "energy_correlation", "too few frames with a face to correlate")
    # the best correlation; among equal ones the smallest |offset|
    best = max((c, -abs(k), k) for k, c in zip(offsets.tolist(), curve.tolist()) if np.isfinite(c))
    return SyncScore(best[0], best[2], "energy_correlation")


@dataclass
class EnergySync:
    """The default scorer (see module docstring). Searches offsets up to `search` frames either way
    (wider than the filter's accepted offset, so a shifted clip shows its real offset)."""

    search: int = 6
    min_motion: float = 0.01

    def __call__(self, frames: Any, track: FaceMeshTrack, wave16k: torch.Tensor, fps: float) -> SyncScore:
        opening = lipsync.mouth_opening(track.landmarks)  # the evaluation's measure: filter and metric agree
        return correlation_sync(opening, frame_energy(wave16k, len(opening), fps), self.search, self.min_motion)


@dataclass
class SyncNetScorer:
    """SyncNet Sync-C confidence and offset of a clip: frames resampled to 25 fps, face boxes from
    the face-mesh track, syncnet_python's crops (see `evaluation.syncnet`)."""

    model: Any
    device: str = "cpu"

    @classmethod
    def load(cls, path: str, device: str = "cpu") -> "SyncNetScorer":
        from evaluation.syncnet import load_syncnet

        return cls(load_syncnet(path).to(device), device)

    def __call__(self, frames: Any, track: FaceMeshTrack, wave16k: torch.Tensor, fps: float) -> SyncScore:
        from evaluation.paper import boxes_from_landmarks
        from evaluation.syncnet import indices_at_25fps, syncnet_crops, syncnet_scores

        idx = indices_at_25fps(len(frames), fps)
        crops = syncnet_crops(np.asarray(frames)[idx], boxes_from_landmarks(track.landmarks, track.found)[idx])
        out = syncnet_scores(self.model, crops, wave16k.numpy(), device=self.device)
        return SyncScore(float(out["sync_c"]), int(out["offset"]), "syncnet")
