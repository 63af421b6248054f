"""fantasytalking_core.audio: input handling, fitting to the frames, the official windows."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from fantasytalking_core import audio as A
from tests._audio_helpers import encode_audio_file, official_windows

SR = 16000


def sine(freq: float, sr: int, seconds: float = 1.0) -> np.ndarray:
    return np.sin(2 * np.pi * freq * np.arange(int(sr * seconds)) / sr)


# ---------------------------------------------------------------------------------------- input


@pytest.mark.parametrize("sr", [44100, 48000, 22050, 8000, 32000])
def test_resample_keeps_pitch_and_scales_length(sr):
    out = A.prepare_waveform(sine(1000, sr), sr)
    assert out.dtype == torch.float32 and out.ndim == 1
    assert out.numel() == math.ceil(sr * SR / sr)  # 1 s -> 16000 samples
    spectrum = np.abs(np.fft.rfft(out.numpy()))  # 1 Hz per bin for 1 s
    assert int(np.argmax(spectrum)) == 1000
    mid = out[2000:-2000].numpy()
    assert abs(np.abs(mid).max() - 1.0) < 0.01  # unity pass-band gain


def test_resample_is_band_limited():
    # 10 kHz is above the 8 kHz Nyquist of 16 kHz: naive decimation would alias it to 6 kHz
    out = A.prepare_waveform(sine(10000, 44100), 44100).numpy()
    assert np.sqrt(np.mean(out[2000:-2000] ** 2)) < 1e-2


def test_downmix_is_channel_mean_and_layouts_agree():
    stereo = np.stack([sine(300, SR), 0.5 * sine(700, SR)]).astype(np.float32)
    expected = torch.from_numpy(stereo.mean(axis=0))
    assert torch.allclose(A.prepare_waveform(stereo, SR), expected, atol=1e-7)
    assert torch.equal(A.prepare_waveform(torch.from_numpy(stereo)[None], SR),
                       A.prepare_waveform(stereo, SR))
    comfy = {"waveform": torch.from_numpy(stereo)[None], "sample_rate": SR}
    assert torch.equal(A.read_audio(comfy).to_16k(), A.prepare_waveform(stereo, SR))
    assert torch.equal(A.read_audio((stereo, SR)).to_16k(), A.prepare_waveform(stereo, SR))
    track = A.read_audio(comfy)
    assert torch.equal(track.waveform, torch.from_numpy(stereo)) and track.sample_rate == SR
    assert torch.equal(A.read_audio(track, max_channels=1).waveform, torch.from_numpy(stereo).mean(0, keepdim=True))


def test_pcm_integer_scaling():
    got = A.prepare_waveform(np.array([-32768, 0, 16384, 32767], np.int16), SR)
    assert got.tolist() == pytest.approx([-1.0, 0.0, 0.5, 32767 / 32768])
    got = A.prepare_waveform(torch.tensor([0, 128, 255], dtype=torch.uint8), SR)
    assert got.tolist() == pytest.approx([-1.0, 0.0, 127 / 128])
    got = A.prepare_waveform(np.array([-2**31, 2**30], np.int32), SR)
    assert got.tolist() == pytest.approx([-1.0, 0.5])


@pytest.mark.parametrize("wave, sr, match", [
    (np.zeros(0, np.float32), SR, "0 samples"),
    (np.zeros((2, 0), np.float32), SR, "0 samples"),
    (np.zeros((2, 1, 100), np.float32), SR, "batch has 2"),
    (np.zeros((1, 1, 1, 100), np.float32), SR, r"\[T\], \[C, T\]"),
    (np.zeros((1000, 2), np.float32), SR, "transpose"),
    (np.zeros(100, np.float32), 0, "sample_rate"),
    (np.zeros(100, np.float32), 44100.5, "sample_rate"),
    (np.zeros(100, np.complex64), SR, "not audio"),
])
def test_bad_input_is_a_clear_error(wave, sr, match):
    with pytest.raises((ValueError, TypeError), match=match):
        A.prepare_waveform(wave, sr)


def test_nan_inf_report_count_and_position():
    x = np.zeros((2, 32000), np.float32)
    x[1, 16000] = np.nan
    x[0, 20000] = np.inf
    with pytest.raises(ValueError, match=r"2 NaN/inf samples \(first at channel 0, sample 20000, 1.250 s\)"):
        A.prepare_waveform(x, SR)


def test_silence_is_valid_and_normalises_without_nan():
    silent = A.prepare_waveform(np.zeros(8000, np.int16), SR)
    assert torch.equal(A.normalize_like_processor(silent), torch.zeros(8000))
    const = A.normalize_like_processor(torch.full((8000,), 0.3))
    assert torch.isfinite(const).all() and const.abs().max() < 1e-3


def test_read_audio_file(tmp_path, speech, speech_path):
    import soundfile

    assert speech.dtype == torch.float32 and speech.ndim == 1
    data, _ = soundfile.read(str(speech_path), dtype="float32")
    assert speech.numel() == 110092 and torch.equal(speech, torch.from_numpy(data))  # PyAV = libsndfile, bit for bit
    stereo = (np.stack([sine(1000, 44100), sine(1000, 44100)], axis=1) * 20000).astype(np.int16)
    soundfile.write(str(tmp_path / "s.wav"), stereo, 44100, subtype="PCM_16")
    track = A.read_audio(tmp_path / "s.wav")
    assert track.sample_rate == 44100 and track.waveform.shape == (2, 44100)
    assert torch.equal(track.waveform, torch.from_numpy(stereo.T / 32768.0).float())
    got = track.to_16k()
    assert got.numel() == SR and int(np.argmax(np.abs(np.fft.rfft(got.numpy())))) == 1000
    with pytest.raises(FileNotFoundError, match="nope.wav"):
        A.read_audio(tmp_path / "nope.wav")
    (tmp_path / "bad.wav").write_bytes(b"not audio at all")
    with pytest.raises(ValueError, match="could not read .*bad.wav as audio"):
        A.read_audio(tmp_path / "bad.wav")
    with pytest.raises(TypeError, match="file path, a ComfyUI AUDIO dict"):
        A.read_audio(3)


@pytest.mark.parametrize("name,codec,fmt,rate,layout", [
    ("voice.mp3", "libmp3lame", "mp3", 44100, "stereo"),  # a downloaded recording
    ("memo.m4a", "aac", "ipod", 48000, "mono"),  # a phone's voice memo
    ("note.opus", "libopus", "opus", 48000, "mono"),
    ("take.flac", "flac", "flac", 22050, "stereo"),
    ("take.ogg", "libopus", "ogg", 48000, "stereo"),
])
def test_read_audio_decodes_every_common_format(tmp_path, speech, name, codec, fmt, rate, layout):
    """Files made from the speech sample with PyAV's own encoders read back as the same speech:
    lossless ones sample for sample, lossy ones correlated > 0.95 after resampling to 16 kHz."""
    wave = A.read_audio((speech.numpy()[: 3 * SR], SR))
    path = encode_audio_file(tmp_path / name, wave.waveform.numpy(), SR, codec, fmt, rate, layout)
    back = A.read_audio(path)
    assert back.sample_rate == rate and back.waveform.shape[0] == (1 if layout == "mono" else 2)
    got, ref = back.to_16k().numpy(), speech.numpy()[: 3 * SR]
    assert abs(got.size - ref.size) <= 0.03 * SR  # durations within 30 ms (codec priming/padding)
    n = min(got.size, ref.size)
    lag = int(np.argmax(np.correlate(got[:n], ref[: n - 2000], mode="valid")))  # encoder delay, if any
    corr = np.corrcoef(got[lag:lag + n - 2000], ref[: n - 2000])[0, 1]
    assert lag < 0.06 * SR and corr > (0.999 if codec == "flac" else 0.95), (lag, corr)


def test_read_audio_from_a_video_and_clear_errors(tmp_path, speech):
    from PIL import Image

    from fantasytalking_core.video import write_video

    frames = np.zeros((23, 16, 16, 3), np.uint8)
    clip = speech[:SR].numpy()
    write_video(frames, tmp_path / "talk.mp4", fps=23, audio=clip, sample_rate=SR)
    got = A.read_audio(tmp_path / "talk.mp4").to_16k().numpy()  # the video's audio track (AAC)
    assert abs(got.size - SR) <= 0.01 * SR and np.corrcoef(got[:15000], clip[:15000])[0, 1] > 0.95
    write_video(frames, tmp_path / "silent.mp4", fps=23)
    with pytest.raises(ValueError, match="silent.mp4 has no audio stream \\(a video without sound\\)"):
        A.read_audio(tmp_path / "silent.mp4")
    Image.new("RGB", (8, 8)).save(tmp_path / "face.png")
    with pytest.raises(ValueError, match="face.png has no audio stream \\(an image\\)"):
        A.read_audio(tmp_path / "face.png")
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(ValueError, match="could not read .*notes.txt as audio .*not a media file"):
        A.read_audio(tmp_path / "notes.txt")


def test_normalisation_equals_feature_extractor(speech):
    from transformers import Wav2Vec2FeatureExtractor

    fe = Wav2Vec2FeatureExtractor(feature_size=1, sampling_rate=SR, padding_value=0.0,
                                  do_normalize=True, return_attention_mask=False)
    rng = np.random.default_rng(0)
    for x in (speech.numpy(), (rng.standard_normal(5000) * 0.2 + 0.05).astype(np.float32),
              np.zeros(800, np.float32)):
        ref = fe(x, sampling_rate=SR, return_tensors="np").input_values[0]
        assert np.array_equal(A.normalize_like_processor(torch.from_numpy(x)).numpy(), ref)


# ------------------------------------------------------------------------------------ alignment


def test_windows_refuse_bad_frame_counts():
    with pytest.raises(ValueError, match=r"^num_frames = 80 is not 4k\+1 and at least 5 .*: use 77 or 81$"):
        A.window_ranges(173, 80)
    with pytest.raises(ValueError, match=r"num_frames = 1 is not 4k\+1 .*: use 5$"):
        A.split_windows(torch.zeros(1, 50, 4), 1)


def test_fit_to_frames_actions():
    target = int(49 / 23 * SR)  # 34086
    wave = torch.randn(40000)
    f = A.fit_to_frames(wave, 49, 23)
    assert (f.action, f.source_samples, f.target_samples) == ("trimmed", 40000, target)
    assert torch.equal(f.waveform, wave[:target])
    assert A.fit_to_frames(wave[:target], 49, 23).action == "exact"
    f = A.fit_to_frames(wave[:30000], 49, 23)
    assert f.action == "shorter" and f.waveform.numel() == 30000
    f = A.fit_to_frames(wave[:30000], 49, 23, pad=True)
    assert f.action == "padded" and f.waveform.numel() == target
    assert torch.equal(f.waveform[:30000], wave[:30000]) and not f.waveform[30000:].any()
    with pytest.raises(ValueError, match="shorter than one latent frame"):
        A.fit_to_frames(wave[:2000], 49, 23)  # 4 / 23 s = 2782 samples
    assert A.fit_to_frames(wave[:2000], 49, 23, pad=True).action == "padded"


def test_window_ranges_hand_table():
    # L=173, 81 frames: tpf = 173/81, half = int(2*tpf) = 4; centre_i = int(tpf*(4i-1)) - 1
    r = A.window_ranges(173, 81)
    assert len(r) == 21
    assert r[:6] == [(-7, 1), (1, 9), (9, 17), (18, 26), (27, 35), (35, 43)]
    assert r[10] == (78, 86) and r[20] == (163, 171)
    # 175 tokens (81 frames trimmed at 23 fps): tpf = 2.1605, half = 4
    assert A.window_ranges(175, 81)[:3] == [(-7, 1), (1, 9), (10, 18)]
    # 25 frames, 50 tokens: tpf = 2, half = 4, centres 5, 13, 21, ..., 45
    assert A.window_ranges(50, 25) == [(-7, 1), (1, 9), (9, 17), (17, 25), (25, 33), (33, 41), (41, 49)]


def test_split_windows_hand_values():
    tokens = torch.arange(1, 174, dtype=torch.float32)[None, :, None]  # value = index + 1
    w = A.split_windows(tokens, 81)
    assert w.tokens.shape == (1, 21, 17, 1)
    assert w.ranges[:2] == [(-11, 5), (-3, 13)] and w.ranges[-1] == (159, 175)
    assert w.k_lens[:3].tolist() == [6, 14, 17] and int(w.k_lens[-1]) == 14
    # front padding goes to the end: window 0 = tokens 0..5 then 11 zeros
    assert w.tokens[0, 0, :, 0].tolist() == [1, 2, 3, 4, 5, 6] + [0] * 11
    assert w.tokens[0, 20, :, 0].tolist() == list(range(160, 174)) + [0] * 3


@pytest.mark.parametrize("expand", [0, 2, 4])
def test_split_windows_matches_official_code(expand):
    gen = torch.Generator().manual_seed(0)
    checked = refused = 0
    for num_frames in (5, 9, 13, 33, 49, 81, 121):
        for length in list(range(1, 60, 3)) + [100, 173, 175, 256, 331, 517]:
            tokens = torch.randn(3, length, 6, generator=gen)
            try:
                ref = [official_windows(tokens[b:b + 1], num_frames, expand) for b in range(3)]
            except RuntimeError:  # official torch.stack fails: a window lies past the end
                ref = None
            if ref is None or (ref[0][1] < 1).any():  # or a window has no audio at all
                with pytest.raises(ValueError, match="audio too short"):
                    A.split_windows(tokens, num_frames, expand)
                refused += 1
                continue
            got = A.split_windows(tokens, num_frames, expand)
            checked += 1
            want_k = ref[0][1]
            assert torch.equal(got.tokens, torch.cat([r[0] for r in ref]))
            assert torch.equal(got.k_lens, want_k)
            assert got.ranges == [tuple(r) for r in ref[0][2]]
            padding = torch.arange(got.tokens.shape[2])[None, :] >= got.k_lens[:, None]  # [T_lat, L_win]
            assert not got.tokens[:, padding].any()
            for t, (s, _) in enumerate(got.ranges):  # valid part = the source slice
                k = int(got.k_lens[t])
                assert torch.equal(got.tokens[:, t, :k], tokens[:, max(s, 0):max(s, 0) + k])
    assert checked > 100 and (expand != 0 or refused > 0)


def test_split_windows_refuses_what_official_cannot_do():
    # 81 frames, 3 tokens, no widening: later windows start past the end (official: k_len <= 0)
    with pytest.raises(ValueError, match="audio too short for 81 frames"):
        A.split_windows(torch.ones(1, 3, 8), 81, expand_length=0)
    with pytest.raises(ValueError, match=r"\[B, L, C\]"):
        A.split_windows(torch.ones(3, 8), 81)
