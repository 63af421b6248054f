"""Lip-sync proxy without weights: MediaPipe mouth opening against the audio's envelope.

Per video frame t: the mouth opening m[t] is the gap between the inner-lip midpoints of face mesh
(landmarks 13 and 14) divided by the outer-eye-corner distance (33, 263), so it does not depend
on face size. The audio gives two envelopes at the video frame rate, each from the samples of
frame t's interval [t/fps, (t+1)/fps): loudness e[t] (RMS in dB, floored 60 dB under the peak)
and onsets o[t] (positive spectral flux of log-magnitude STFT frames, 25 ms Hann, 10 ms hop,
whose centres fall in the interval). Loudness is compared with the opening, onsets with the
opening's rise (half-wave rectified central difference), both by Pearson correlation at every
offset k in [-K, K]: corr(k) = pearson(m[t], e[t - k]) over the frames where both exist.
The best offset is the k of highest correlation. Sign as SyncNet's: k > 0 means the mouth
follows the sound k frames late (the video lags the audio).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

SAMPLE_RATE = 16000
MOUTH_UPPER, MOUTH_LOWER = 13, 14  # face-mesh inner-lip midpoints
EYE_OUTER = (33, 263)  # face-mesh outer eye corners
FLOOR_DB = 60.0
SILENCE_RMS = 1e-4  # -80 dBFS: nothing to sync to below this


def mouth_opening(landmarks: np.ndarray) -> np.ndarray:
    """Inner-lip gap / outer-eye distance per frame from face-mesh landmarks `[T,468|478,2]`
    (pixels); NaN where the landmarks are NaN (no face)."""
    pts = np.asarray(landmarks, np.float64)
    gap = np.linalg.norm(pts[:, MOUTH_UPPER] - pts[:, MOUTH_LOWER], axis=-1)
    eyes = np.linalg.norm(pts[:, EYE_OUTER[0]] - pts[:, EYE_OUTER[1]], axis=-1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(eyes > 0, gap / eyes, np.nan)


def frame_bounds(num_frames: int, fps: float, sample_rate: int = SAMPLE_RATE) -> np.ndarray:
    """Sample index where each video frame's interval starts, `[T+1]` (last = end of frame T-1)."""
    return np.round(np.arange(num_frames + 1) * sample_rate / float(fps)).astype(np.int64)


def energy_envelope(wave: np.ndarray, fps: float, num_frames: int) -> np.ndarray:
    """RMS loudness in dB per video frame `[T]`, relative to the loudest frame and floored at
    -60 dB; NaN for frames the audio does not fully cover."""
    wave = np.asarray(wave, np.float64)
    bounds = frame_bounds(num_frames, fps)
    rms = np.full(num_frames, np.nan)
    for t in range(num_frames):
        a, b = bounds[t], bounds[t + 1]
        if b <= len(wave) and b > a:
            rms[t] = np.sqrt(np.mean(wave[a:b] ** 2))
    peak = np.nanmax(rms) if np.isfinite(rms).any() else 0.0
    if peak <= 0:
        return np.where(np.isfinite(rms), -FLOOR_DB, np.nan)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.maximum(20 * np.log10(rms / peak), -FLOOR_DB)


def onset_envelope(wave: np.ndarray, fps: float, num_frames: int, win: int = 400, hop: int = 160) -> np.ndarray:
    """Onset strength per video frame `[T]`: mean positive spectral flux of the STFT frames whose
    centres fall in the frame's interval; NaN where no STFT frame does."""
    wave = np.asarray(wave, np.float64)
    out = np.full(num_frames, np.nan)
    if len(wave) < win + hop:
        return out
    n = 1 + (len(wave) - win) // hop
    idx = np.arange(win)[None, :] + hop * np.arange(n)[:, None]
    spec = np.abs(np.fft.rfft(wave[idx] * np.hanning(win), n=512, axis=1))  # [n, 257]
    logmag = np.log1p(1000.0 * spec)
    flux = np.concatenate([[0.0], np.maximum(np.diff(logmag, axis=0), 0.0).sum(axis=1)])  # [n]
    centres = hop * np.arange(n) + win / 2
    frame_of = np.searchsorted(frame_bounds(num_frames, fps), centres, side="right") - 1
    for t in range(num_frames):
        sel = frame_of == t
        if sel.any():
            out[t] = flux[sel].mean()
    return out


def rise(x: np.ndarray) -> np.ndarray:
    """Half-wave rectified central difference `max(0, (x[t+1] - x[t-1]) / 2)`, NaN at the ends."""
    x = np.asarray(x, np.float64)
    out = np.full_like(x, np.nan)
    out[1:-1] = np.maximum((x[2:] - x[:-2]) / 2, 0.0)
    return out


def correlation_curve(x: np.ndarray, y: np.ndarray, max_offset: int, min_overlap: int) -> tuple[np.ndarray, np.ndarray]:
    """Offsets `k` in [-K', K'] and Pearson corr(x[t], y[t-k]) over frames where both are finite.

    K' = max_offset, reduced so every offset compares at least `min_overlap` frame pairs; an
    offset whose pairs have no variance gets NaN.
    """
    x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
    n = len(x)
    k_max = max(0, min(int(max_offset), n - int(min_overlap)))
    offsets = np.arange(-k_max, k_max + 1)
    corr = np.full(len(offsets), np.nan)
    for i, k in enumerate(offsets):
        xs, ys = (x[k:], y[: n - k]) if k >= 0 else (x[: n + k], y[-k:])
        ok = np.isfinite(xs) & np.isfinite(ys)
        if ok.sum() < min_overlap:
            continue
        a, b = xs[ok] - xs[ok].mean(), ys[ok] - ys[ok].mean()
        den = np.sqrt((a * a).sum() * (b * b).sum())
        if den > 1e-12:
            corr[i] = float((a * b).sum() / den)
    return offsets, corr


@dataclass
class OffsetResult:
    """Best offset of one envelope: `offset_frames` (None when no correlation exists),
    `corr` at it, `corr_at_zero`, `margin` (best minus the median over offsets)."""

    offset_frames: int | None
    corr: float
    corr_at_zero: float
    margin: float
    offsets: np.ndarray
    curve: np.ndarray

    def to_dict(self, fps: float) -> dict[str, Any]:
        return {"offset_frames": self.offset_frames,
                "offset_seconds": None if self.offset_frames is None else round(self.offset_frames / fps, 4),
                "corr": self.corr, "corr_at_zero": self.corr_at_zero, "margin": self.margin,
                "offsets": self.offsets.tolist(), "curve": [None if not np.isfinite(c) else float(c) for c in self.curve]}


def best_offset(x: np.ndarray, y: np.ndarray, max_offset: int, min_overlap: int) -> OffsetResult:
    offsets, curve = correlation_curve(x, y, max_offset, min_overlap)
    zero = curve[len(offsets) // 2] if len(offsets) else np.nan
    if not np.isfinite(curve).any():
        return OffsetResult(None, 0.0, 0.0, 0.0, offsets, curve)
    i = int(np.nanargmax(curve))
    return OffsetResult(int(offsets[i]), float(curve[i]), float(np.nan_to_num(zero)),
                        float(curve[i] - np.nanmedian(curve)), offsets, curve)


@dataclass
class LipSyncResult:
    """Lip-sync proxy of one video; `available` False says why in `reason`."""

    available: bool
    reason: str = ""
    energy: OffsetResult | None = None
    onset: OffsetResult | None = None
    fps: float = 25.0
    face_fraction: float = 0.0
    series: dict[str, np.ndarray] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    def headline(self) -> dict[str, Any]:
        e, o = self.energy, self.onset
        return {
            "lipsync_offset_frames": e.offset_frames if e else None,
            "lipsync_corr": e.corr if e else None,
            "lipsync_corr_at_zero": e.corr_at_zero if e else None,
            "lipsync_onset_offset_frames": o.offset_frames if o else None,
            "lipsync_onset_corr": o.corr if o else None,
        }

    def to_dict(self) -> dict[str, Any]:
        return {"available": self.available, "reason": self.reason, "face_fraction": self.face_fraction,
                "sign": "offset > 0: the mouth follows the audio late (video lags audio)",
                "energy": self.energy.to_dict(self.fps) if self.energy else None,
                "onset": self.onset.to_dict(self.fps) if self.onset else None, "notes": self.notes}


def measure_lipsync(landmarks: np.ndarray, found: np.ndarray, audio: np.ndarray | None, fps: float,
                    max_offset: int = 15, min_overlap: int = 16, audio_reason: str = "") -> LipSyncResult:
    """The proxy from face-mesh `landmarks` `[T,N,2]` (NaN without a face), `found` `[T]` and
    16 kHz mono `audio` (None: unavailable, `audio_reason` says why)."""
    t = len(found)
    frac = float(np.mean(found)) if t else 0.0
    mouth = mouth_opening(landmarks)
    series = {"mouth_opening": mouth}
    if audio is None:
        return LipSyncResult(False, audio_reason or "no audio", fps=fps, face_fraction=frac, series=series)
    audio = np.asarray(audio, np.float64)
    if audio.size == 0 or np.sqrt(np.mean(audio**2)) < SILENCE_RMS:
        return LipSyncResult(False, "the audio is silent (RMS below -80 dBFS): nothing to sync to",
                             fps=fps, face_fraction=frac, series=series)
    if t < min_overlap + 1:
        return LipSyncResult(False, f"the video has {t} frames; the proxy needs more than min_overlap_frames="
                             f"{min_overlap}", fps=fps, face_fraction=frac, series=series)
    if frac < 0.5:
        return LipSyncResult(False, f"a face was found in only {int(np.sum(found))} of {t} frames",
                             fps=fps, face_fraction=frac, series=series)
    energy = energy_envelope(audio, fps, t)
    onset = onset_envelope(audio, fps, t)
    series.update(audio_energy_db=energy, audio_onset=onset, mouth_rise=rise(mouth))
    covered = int(np.isfinite(energy).sum())
    if covered < min_overlap:
        return LipSyncResult(False, f"the audio covers only {covered} of {t} frames", fps=fps,
                             face_fraction=frac, series=series)
    notes = []
    if covered < t:
        notes.append(f"the audio ends after {covered} of {t} frames; later frames are not compared")
    if np.nanstd(mouth) < 1e-3:
        notes.append("the mouth does not move (opening varies by < 0.1% of the eye distance): correlation 0")
        still = OffsetResult(None, 0.0, 0.0, 0.0, np.zeros(0, np.int64), np.zeros(0))
        return LipSyncResult(True, "", still, still, fps, frac, series, notes)
    res_e = best_offset(mouth, energy, max_offset, min_overlap)
    res_o = best_offset(series["mouth_rise"], onset, max_offset, min_overlap)
    return LipSyncResult(True, "", res_e, res_o, fps, frac, series, notes)
