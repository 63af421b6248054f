"""Synthetic talking videos with known properties for the evaluation tests, and checks of them.

- `syllables`: a speech-like envelope in [0, 1] (bumps of 3-7 frames, gaps of 2-6 frames).
- `mouth_video`: skimage's astronaut with the mouth opened by a local vertical stretch of
  0.10 x face width x envelope (tests/_media_helpers.open_mouth).
- `voiced_audio`: 16 kHz audio whose amplitude in video frame t is envelope[t] exactly (a
  harmonic complex at 125 Hz: 5 whole periods per 25 fps frame), so its loudness is the envelope.
- `pan_video`: the astronaut (her own static background) centred over a textured background
  moving `speed` px per frame; `still_video`: one frame repeated.
"""

from __future__ import annotations

import numpy as np
import pytest

from tests._media_helpers import open_mouth, portrait

SR = 16000
FPS = 25.0


def syllables(num_frames: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    env = np.zeros(num_frames)
    t = int(rng.integers(1, 4))
    while t < num_frames:
        width = int(rng.integers(3, 8))
        bump = np.sin(np.linspace(0, np.pi, width + 2)[1:-1]) * rng.uniform(0.5, 1.0)
        env[t:t + width] = bump[: max(0, min(width, num_frames - t))]
        t += width + int(rng.integers(2, 7))
    return env


def shifted(env: np.ndarray, k: int) -> np.ndarray:
    """out[t] = env[t - k], zero where t - k is outside."""
    out = np.zeros_like(env)
    if k >= 0:
        out[k:] = env[: len(env) - k]
    else:
        out[:k] = env[-k:]
    return out


_MOUTH: dict[int, tuple[np.ndarray, float]] = {}


def mouth_geometry(size: int = 256) -> tuple[np.ndarray, float]:
    """Inner-lip centre (x, y) and face width of the portrait, from one static face-mesh pass."""
    if size not in _MOUTH:
        from fantasytalking_core.lipmask import face_mesh_track

        pts = face_mesh_track(portrait(size)[None], static_image_mode=True).landmarks[0]
        _MOUTH[size] = (pts[[13, 14]].mean(0), float(np.ptp(pts[:, 0])))
    return _MOUTH[size]


def mouth_video(env: np.ndarray, size: int = 256) -> np.ndarray:
    face = portrait(size)
    centre, width = mouth_geometry(size)
    return np.stack([open_mouth(face, centre, 0.10 * width * a, 0.25 * width) for a in env])


def voiced_audio(env: np.ndarray, fps: float = FPS, seed: int = 0) -> np.ndarray:
    n = int(round(len(env) * SR / fps))
    t = np.arange(n) / SR
    carrier = sum(np.sin(2 * np.pi * 125 * h * t + h) / h for h in range(1, 20))
    frame = np.minimum((np.arange(n) * fps / SR).astype(int), len(env) - 1)
    wave = env[frame] * carrier
    return (0.5 * wave / max(np.abs(wave).max(), 1e-12)).astype(np.float32)


def texture(h: int, w: int, seed: int = 0) -> np.ndarray:
    """Smooth random colour texture (blurred noise): Farneback tracks it well."""
    import cv2

    rng = np.random.default_rng(seed)
    noise = rng.uniform(0, 255, (h, w, 3)).astype(np.float32)
    return np.clip(cv2.GaussianBlur(noise, (0, 0), 3) * 3 - 255, 0, 255).astype(np.uint8)


def pan_video(num_frames: int = 12, size: int = 256, speed: int = 3) -> np.ndarray:
    face = portrait(size // 2)
    tex = texture(size, size + speed * num_frames)
    frames = []
    for i in range(num_frames):
        f = tex[:, speed * i: speed * i + size].copy()
        o = size // 4
        f[o:o + size // 2, o:o + size // 2] = face
        frames.append(f)
    return np.stack(frames)


def still_video(num_frames: int = 8, size: int = 256) -> np.ndarray:
    return np.stack([portrait(size)] * num_frames)


# ----------------------------------------------------------------------------- checks of the fixtures


def test_audio_loudness_follows_the_envelope_frame_by_frame():
    env = syllables(40)
    wave = voiced_audio(env)
    assert len(wave) == 40 * 640
    rms = np.sqrt((wave.reshape(40, 640).astype(np.float64) ** 2).mean(1))
    on = env > 0
    ratio = rms[on] / env[on]
    assert np.ptp(ratio) / ratio.mean() < 1e-4  # RMS per frame = envelope x one constant
    assert np.all(rms[~on] == 0)


def test_shifted_moves_the_envelope_by_k_frames():
    env = syllables(30, seed=3)
    assert np.array_equal(shifted(env, 2)[2:], env[:-2]) and np.all(shifted(env, 2)[:2] == 0)
    assert np.array_equal(shifted(env, -3)[:-3], env[3:])


@pytest.mark.filterwarnings("ignore:SymbolDatabase.GetPrototype:UserWarning")
def test_the_mouth_opens_with_the_envelope():
    from evaluation.lipsync import mouth_opening
    from fantasytalking_core.lipmask import face_mesh_track

    amounts = np.array([0.0, 0.5, 1.0])
    track = face_mesh_track(mouth_video(amounts), static_image_mode=True)
    opening = mouth_opening(track.landmarks)
    assert track.found.all() and np.all(np.diff(opening) > 0.02), opening  # measured 0.12, 0.19, 0.28
