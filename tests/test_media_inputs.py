"""Any audio a person has, for the command line, training preparation and evaluation; clear errors
for files that hold no audio and for an image path that is no image (issue 15, item 5)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from fantasytalking_core.audio import read_audio
from fantasytalking_core.video import write_video
from tests._audio_helpers import encode_audio_file

SR = 16000


@pytest.fixture(scope="module")
def memo(tmp_path_factory, speech):
    """A phone's voice memo: the speech sample's first 2 s as AAC in .m4a, 48 kHz mono."""
    path = tmp_path_factory.mktemp("memo") / "memo.m4a"
    return encode_audio_file(path, speech[None, : 2 * SR].numpy(), SR, "aac", "ipod", 48000, "mono")


def test_cli_generates_from_an_m4a_and_refuses_a_video_as_image(memo, tmp_path, capsys):
    from fantasytalking_core.__main__ import main
    from fantasytalking_core.video import probe

    image = tmp_path / "face.png"
    from PIL import Image

    Image.fromarray(np.full((40, 48, 3), 120, np.uint8)).save(image)
    out = tmp_path / "talk.mp4"
    assert main(["generate", "--preset", "tiny", "--image", str(image), "--audio", str(memo), "--out", str(out),
                 "--size", "32", "--steps", "1", "--num-frames", "9"]) == 0
    info = probe(out)
    assert info["video"]["frames"] == 9 and info["audio"]["sample_rate"] == 48000  # the memo's own soundtrack
    video = tmp_path / "clip.mp4"
    write_video(np.zeros((3, 16, 16, 3), np.uint8), video, fps=23)
    capsys.readouterr()
    assert main(["generate", "--preset", "tiny", "--image", str(video), "--audio", str(memo),
                 "--out", str(tmp_path / "x.mp4")]) == 2
    err = capsys.readouterr().err.strip()
    assert "clip.mp4 is not an image Pillow can read" in err and "export one frame first" in err
    assert len(err.splitlines()) == 1 and "Traceback" not in err


def test_load_image_errors():
    from fantasytalking_core.images import load_image

    with pytest.raises(ValueError, match="not an image Pillow can read"):
        load_image(__file__)  # a text file
    with pytest.raises(FileNotFoundError, match="image file not found"):
        load_image("/nonexistent/face.png")


def test_evaluation_and_training_read_compressed_audio(memo, speech, tmp_path):
    from evaluation.media import load_audio
    from fantasytalking_core.audio import read_audio

    got = load_audio(memo)
    ref = speech[: 2 * SR].numpy()
    assert abs(got.size - ref.size) < 0.03 * SR
    assert np.corrcoef(got[2000:28000], ref[2000:28000])[0, 1] > 0.95
    # a video whose sound is an mp3 track starting 0.5 s after its first frame: silence is put in front
    mp3 = encode_audio_file(tmp_path / "v.mp3", speech[None, :SR].numpy(), SR, "libmp3lame", "mp3", 44100, "mono")
    video = tmp_path / "v.mkv"
    import av

    with av.open(str(mp3)) as src, av.open(str(video), "w", format="matroska") as out:
        vs = out.add_stream("libx264", rate=23)
        vs.width, vs.height, vs.pix_fmt = 16, 16, "yuv420p"
        a_in = src.streams.audio[0]
        a_out = out.add_stream_from_template(a_in)
        for i in range(46):
            frame = av.VideoFrame.from_ndarray(np.zeros((16, 16, 3), np.uint8), format="rgb24")
            frame.pts = i
            out.mux(vs.encode(frame))
        out.mux(vs.encode(None))
        for packet in src.demux(a_in):
            if packet.dts is None:
                continue
            packet.pts = packet.dts = packet.pts + int(0.5 / a_in.time_base)
            packet.stream = a_out
            out.mux(packet)
    track = read_audio(video)  # the one reader, also the trainer's
    assert track.offset == pytest.approx(0.5, abs=0.05)
    wave = track.to_16k(align_to_video=True)
    lead = int(np.argmax(np.abs(wave.numpy()) > 1e-3))
    assert abs(lead - int(np.argmax(np.abs(speech.numpy()) > 1e-3)) - SR // 2) < 0.06 * SR  # 0.5 s later


def test_files_without_audio_are_named(tmp_path):
    from evaluation.media import load_audio

    write_video(np.zeros((3, 16, 16, 3), np.uint8), tmp_path / "silent.mp4", fps=23)
    with pytest.raises(ValueError, match="silent.mp4 has no audio stream"):
        load_audio(tmp_path / "silent.mp4")
    with pytest.raises(ValueError, match="silent.mp4 has no audio stream"):
        read_audio(tmp_path / "silent.mp4")
    with pytest.raises(TypeError):
        read_audio(torch.zeros(10))  # an array needs its sample rate: (waveform, rate)
