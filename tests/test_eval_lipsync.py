"""Lip-sync proxy: correlation math against numpy, envelopes against per-frame references, and the
offset recovered from synthetic mouths driven by envelopes shifted by known numbers of frames."""

from __future__ import annotations

import numpy as np
import pytest

from evaluation import lipsync as LS
from fantasytalking_core.lipmask import face_mesh_track
from tests.test_eval_synth import FPS, mouth_video, shifted, syllables, voiced_audio

pytestmark = pytest.mark.filterwarnings("ignore:SymbolDatabase.GetPrototype:UserWarning")


def test_correlation_curve_is_pearson_of_the_shifted_pairs():
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=40), rng.normal(size=40)
    x[7] = np.nan  # a frame without a face
    offsets, curve = LS.correlation_curve(x, y, max_offset=5, min_overlap=20)
    assert offsets.tolist() == list(range(-5, 6))
    for k, c in zip(offsets, curve):
        pairs = [(x[t], y[t - k]) for t in range(40) if 0 <= t - k < 40 and np.isfinite(x[t])]
        a, b = np.array(pairs).T
        assert c == pytest.approx(np.corrcoef(a, b)[0, 1], abs=1e-12)


def test_offset_range_shrinks_to_keep_min_overlap():
    offsets, _ = LS.correlation_curve(np.arange(20.0), np.arange(20.0), max_offset=15, min_overlap=16)
    assert offsets.tolist() == [-4, -3, -2, -1, 0, 1, 2, 3, 4]


@pytest.mark.parametrize("k", [-6, -1, 0, 2, 5])
def test_best_offset_finds_the_shift_of_a_random_envelope(k):
    rng = np.random.default_rng(k + 10)
    env = np.convolve(rng.uniform(size=80), np.ones(3) / 3, "same")
    mouth = shifted(env, k) + rng.normal(0, 0.02, 80)  # mouth[t] = env[t - k]
    res = LS.best_offset(mouth, env, 15, 16)
    assert res.offset_frames == k and res.corr > 0.9 and res.margin > 0.5


def test_energy_envelope_is_the_rms_of_each_frame_in_db_below_the_peak():
    rng = np.random.default_rng(1)
    wave = rng.normal(0, 0.1, 10 * 640) * np.repeat(rng.uniform(0.01, 1, 10), 640)
    rms = np.sqrt((wave.reshape(10, 640) ** 2).mean(1))  # 25 fps at 16 kHz: 640 samples a frame
    expected = np.maximum(20 * np.log10(rms / rms.max()), -60)
    env = LS.energy_envelope(wave, 25.0, 12)  # 2 frames more than the audio covers
    assert np.allclose(env[:10], expected, atol=1e-9) and np.isnan(env[10:]).all()


def test_onset_envelope_peaks_where_sound_starts():
    env = np.zeros(30)
    env[10:20] = 1.0
    onset = LS.onset_envelope(voiced_audio(env), FPS, 30)
    assert int(np.nanargmax(onset)) in (9, 10)  # the STFT frame straddling the start (25 ms window)
    assert np.nanmax(onset[12:19]) < 0.05 * np.nanmax(onset)


@pytest.mark.parametrize("k", [3, -2])
def test_synthetic_mouth_video_gives_the_known_offset(k):
    """A portrait whose mouth opening follows the envelope k frames late (k < 0: early), with
    audio whose loudness is the envelope. Both envelopes recover k exactly (measured: corr 0.95
    loudness, 0.65 onsets; corr at offset 0 below 0.1)."""
    env = syllables(75, seed=1)
    frames = mouth_video(shifted(env, k))
    track = face_mesh_track(frames)
    res = LS.measure_lipsync(track.landmarks, track.found, voiced_audio(env), FPS)
    assert res.available and res.face_fraction == 1.0
    assert res.energy.offset_frames == k and res.energy.corr > 0.85 and res.energy.corr_at_zero < 0.2
    assert res.onset.offset_frames == k and res.onset.corr > 0.5
    head = res.headline()
    assert head["lipsync_offset_frames"] == k and res.to_dict(
    )["energy"]["offset_seconds"] == pytest.approx(k / FPS)


def test_real_speech_drives_a_mouth_and_the_offset_is_found(speech):
    """The speech sample (espeak): the mouth opens with the speech's own linear frame RMS,
    two frames late. The proxy's dB loudness finds +2."""
    wave = speech.numpy()[: 100 * 640]
    rms = np.sqrt((wave.reshape(100, 640).astype(np.float64) ** 2).mean(1))
    frames = mouth_video(shifted(rms / rms.max(), 2))
    track = face_mesh_track(frames)
    res = LS.measure_lipsync(track.landmarks, track.found, wave, FPS)
    assert res.energy.offset_frames == 2 and res.energy.corr > 0.6  # measured 0.77 (0.33 at offset 0)


def test_unavailable_cases_say_why():
    lm = np.zeros((30, 468, 2))
    found = np.ones(30, bool)
    assert LS.measure_lipsync(lm, found, None, FPS, audio_reason="no audio stream").reason == "no audio stream"
    silent = LS.measure_lipsync(lm, found, np.zeros(30 * 640, np.float32), FPS)
    assert not silent.available and "silent" in silent.reason
    noface = LS.measure_lipsync(np.full((30, 468, 2), np.nan), np.zeros(30, bool), voiced_audio(syllables(30)), FPS)
    assert not noface.available and "0 of 30 frames" in noface.reason
    short = LS.measure_lipsync(lm[:10], found[:10], voiced_audio(syllables(10)), FPS)
    assert not short.available and "10 frames" in short.reason


def test_a_still_mouth_gives_zero_correlation_and_says_so():
    rng = np.random.default_rng(0)
    lm = rng.uniform(0, 100, (1, 468, 2)).repeat(40, axis=0)
    res = LS.measure_lipsync(lm, np.ones(40, bool), voiced_audio(syllables(40)), FPS)
    assert res.available and res.energy.corr == 0.0 and res.energy.offset_frames is None
    assert any("does not move" in n for n in res.notes)
