"""Video I/O: stream durations agree, frames round-trip, no overwrite, no temp files, clear errors."""

import numpy as np
import pytest
import torch

from fantasytalking_core.video import VideoWriter, next_free_path, probe, read_video, write_video

FPS, SR = 23, 16000


def smooth_frames(t=29, h=64, w=64):
    yy, xx = np.mgrid[0:h, 0:w] / max(h, w)
    return np.stack(
        [np.stack([(0.2 + 0.6 * xx + 0.01 * i) % 1.0, 0.2 + 0.6 * yy, 0.5 + 0.2 * np.sin(3 * xx + i / 5)], -1)
         for i in range(t)]
    ).astype(np.float32)  # [T, H, W, 3] in 0..1


def sine(seconds, sr=SR, freq=440.0):
    return (0.4 * np.sin(2 * np.pi * freq * np.arange(int(seconds * sr)) / sr)).astype(np.float32)


def psnr(a, b):
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return 10 * np.log10(255.0**2 / mse)


@pytest.mark.parametrize("frames_n, seconds", [(23, 1.3), (29, 1.3), (29, 0.5)])
def test_audio_and_video_durations_match(tmp_path, frames_n, seconds):
    frames = smooth_frames(frames_n)
    path = write_video(frames, tmp_path / "clip.mp4", fps=FPS, audio=sine(seconds), sample_rate=SR, preset="ultrafast")
    info = probe(path)
    v, a = info["video"], info["audio"]
    assert (v["codec"], v["pix_fmt"], v["width"], v["height"]) == ("h264", "yuv420p", 64, 64)
    assert v["frames"] == frames_n and v["fps"] == pytest.approx(FPS)
    assert (a["codec"], a["sample_rate"], a["channels"]) == ("aac", SR, 1)
    want = frames_n / FPS
    assert abs(v["duration"] - want) < 1 / FPS and abs(a["duration"] - v["duration"]) < 1 / FPS

    data = read_video(path)
    assert data.frames.shape == (frames_n, 64, 64, 3) and data.frames.dtype == np.uint8
    assert data.fps == pytest.approx(FPS) and data.sample_rate == SR
    assert data.audio.shape[0] == 1 and abs(data.audio.shape[1] / SR - want) < 1 / FPS
    assert psnr(data.frames, (frames * 255 + 0.5).astype(np.uint8)) > 30


def test_audio_content_round_trips(tmp_path):
    wav = sine(2.0)  # longer than the video: cut
    path = write_video(smooth_frames(23), tmp_path / "a.mp4", fps=FPS, audio=torch.from_numpy(wav), sample_rate=SR)
    got = read_video(path).audio[0]
    n = min(len(got), SR)
    assert n > 0.95 * SR
    ref = wav[:n]
    snr = 10 * np.log10(np.sum(ref[1000:-1000] ** 2) / np.sum((got[1000:n - 1000] - ref[1000:-1000]) ** 2))
    assert snr > 25  # AAC is lossy; a one-sample shift (priming left in) would give about 15 dB


def test_stereo_torch_uint8_and_odd_size(tmp_path):
    frames = torch.from_numpy((smooth_frames(9, 33, 47) * 255).astype(np.uint8))
    stereo = torch.from_numpy(np.stack([sine(0.2), sine(0.2, freq=220.0)]))
    path = write_video(frames, tmp_path / "odd.mp4", fps=FPS, audio=stereo, sample_rate=SR)
    info = probe(path)
    assert (info["video"]["width"], info["video"]["height"]) == (48, 34)  # padded to even
    assert info["audio"]["channels"] == 2
    data = read_video(path)
    # the original pixels survive; the padding repeats the last row/column
    assert psnr(data.frames[:, :33, :47], frames.numpy()) > 30
    assert np.abs(data.frames[:, 33].astype(int) - data.frames[:, 32].astype(int)).mean() < 3


def test_no_audio(tmp_path):
    path = write_video(smooth_frames(5), tmp_path / "silent.mp4")
    assert probe(path)["audio"] is None
    data = read_video(path)
    assert data.audio is None and data.sample_rate is None and data.frames.shape[0] == 5


def test_refuses_overwrite_then_overwrites_and_leaves_no_temp(tmp_path):
    target = tmp_path / "out.mp4"
    write_video(smooth_frames(5), target, fps=FPS)
    before = target.read_bytes()
    with pytest.raises(FileExistsError, match="overwrite=True"):
        write_video(smooth_frames(7), target, fps=FPS)
    assert target.read_bytes() == before
    write_video(smooth_frames(7), target, fps=FPS, overwrite=True)
    assert probe(target)["video"]["frames"] == 7
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.mp4"]


def test_failure_leaves_nothing_behind(tmp_path):
    frames = smooth_frames(6)
    frames[4, 10, 10, 0] = np.nan  # found only while encoding frame 4
    with pytest.raises(ValueError, match="frame 4"):
        write_video(frames, tmp_path / "bad.mp4")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    "frames, kwargs, err, match",
    [
        (np.zeros((0, 8, 8, 3), np.uint8), {}, ValueError, "empty"),
        (np.zeros((4, 3, 8, 8), np.float32), {}, ValueError, "channels first"),
        (np.zeros((8, 8, 3), np.uint8), {}, ValueError, r"\[T, H, W, 3\]"),
        (np.zeros((4, 8, 8, 3), np.int32), {}, TypeError, "uint8"),
        (np.zeros((4, 8, 8, 3), np.uint8), {"audio": np.zeros(100, np.float32)}, ValueError, "sample_rate"),
        (np.zeros((4, 8, 8, 3), np.uint8), {"audio": np.zeros((1, 2, 100), np.float32), "sample_rate": SR},
         ValueError, "waveform"),
        (np.zeros((4, 8, 8, 3), np.uint8), {"fps": 0}, ValueError, "fps"),
    ],
)
def test_input_errors(tmp_path, frames, kwargs, err, match):
    with pytest.raises(err, match=match):
        write_video(frames, tmp_path / "x.mp4", **kwargs)
    assert list(tmp_path.iterdir()) == []


def test_path_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="create it first"):
        write_video(smooth_frames(2), tmp_path / "missing" / "x.mp4")
    with pytest.raises(ValueError, match="container"):
        write_video(smooth_frames(2), tmp_path / "x.gif")


def test_next_free_path(tmp_path):
    base = tmp_path / "talk.mp4"
    assert next_free_path(base).name == "talk_00001.mp4"
    write_video(smooth_frames(2), next_free_path(base))
    assert next_free_path(base).name == "talk_00002.mp4"
    (tmp_path / "talk_00007.mp4").touch()
    (tmp_path / "talking_00009.mp4").touch()
    assert next_free_path(base).name == "talk_00008.mp4"
    assert next_free_path(tmp_path / "nowhere" / "a.mp4").name == "a_00001.mp4"


def test_writer_streams_chunks_into_the_same_video(tmp_path):
    frames = smooth_frames(29)
    whole = write_video(frames, tmp_path / "whole.mp4", fps=FPS, audio=sine(2.0), sample_rate=SR, preset="ultrafast")
    with VideoWriter(tmp_path / "chunks.mp4", FPS, sine(2.0), SR, preset="ultrafast") as out:
        for a, b in ((0, 5), (5, 14), (14, 29)):
            out.write(torch.from_numpy(frames[a:b]))
            assert not (tmp_path / "chunks.mp4").exists()  # appears only when complete
    assert out.frames_written == 29
    a, b = read_video(whole), read_video(out.path)
    assert np.array_equal(a.frames, b.frames)  # the same encoder input, frame by frame
    info = probe(out.path)
    assert info["video"]["frames"] == 29 and abs(info["audio"]["duration"] - 29 / FPS) < 0.5 / FPS  # cut to them
    assert sorted(p.name for p in tmp_path.iterdir()) == ["chunks.mp4", "whole.mp4"]


def test_writer_leaves_nothing_when_stopped_or_given_bad_chunks(tmp_path):
    with pytest.raises(RuntimeError, match="stopped"):
        with VideoWriter(tmp_path / "a.mp4", FPS) as out:
            out.write(smooth_frames(3))
            raise RuntimeError("stopped")
    with pytest.raises(ValueError, match="every chunk must have the first chunk's size"):
        with VideoWriter(tmp_path / "b.mp4", FPS) as out:
            out.write(smooth_frames(3))
            out.write(smooth_frames(3, 32, 64))
    with pytest.raises(ValueError, match="nothing to write"):
        VideoWriter(tmp_path / "c.mp4", FPS).close()
    assert list(tmp_path.iterdir()) == []
    (tmp_path / "d.mp4").write_bytes(b"mine")
    with pytest.raises(FileExistsError, match="overwrite=True"):
        VideoWriter(tmp_path / "d.mp4", FPS)
    assert (tmp_path / "d.mp4").read_bytes() == b"mine"


@pytest.mark.parametrize("count", [0, 1, 4, 7, 20])  # unknown, short, short, exact, too many
def test_frames_go_into_one_array_whatever_frame_count_the_container_gives(count):
    from fantasytalking_core.video import _into_array

    frames = [np.full((3, 5, 3), i, np.uint8) for i in range(7)]
    out = _into_array(iter(frames), count)
    np.testing.assert_array_equal(out, np.stack(frames))
    assert _into_array(iter([]), count).shape[0] == 0


def test_writer_interleaves_the_audio_with_the_frames_and_tags_the_file(tmp_path):
    """Each chunk brings the audio up to its last frame, so the sound lies beside its frames in the file
    (not one block at the end) and a file closed early keeps exactly its frames' sound."""
    import av

    frames = smooth_frames(46)
    with VideoWriter(tmp_path / "a.mp4", FPS, sine(4.0), SR, preset="ultrafast",
                     metadata={"prompt": '{"1": {}}'}) as out:
        for a in range(0, 46, 23):
            out.write(frames[a:a + 23])
            assert out._samples_written == round(out.frames_written * SR / FPS)  # sound up to the last frame
    with av.open(str(out.path)) as c:
        assert c.metadata.get("prompt") == '{"1": {}}'
        order = [p.stream.type for p in c.demux() if p.size]
    first_audio, last_video = order.index("audio"), len(order) - 1 - order[::-1].index("video")
    assert first_audio < last_video  # interleaved, not all sound after the last frame
    info = probe(out.path)
    assert info["video"]["frames"] == 46 and abs(info["audio"]["duration"] - 46 / FPS) < 0.5 / FPS
    with VideoWriter(tmp_path / "early.mp4", FPS, sine(4.0), SR, preset="ultrafast") as out:
        out.write(frames[:23])  # stopped after one chunk: what was written is a playable, shorter file
    info = probe(out.path)
    assert info["video"]["frames"] == 23 and abs(info["audio"]["duration"] - 23 / FPS) < 0.5 / FPS
