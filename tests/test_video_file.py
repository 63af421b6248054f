"""Long videos straight to a file (issue 25): FantasyTalking Long Video Sampler (to file) on the plain
host writes the very frames the IMAGE node makes into an mp4 named as Save Video names files, with
the prompt in its tags, publishes it only when complete, leaves nothing (or, asked, a playable
partial file) when stopped, and tells ComfyUI's cache when the file it returned was deleted."""

from __future__ import annotations

import json
import time

import numpy as np

import pytest
import torch

import nodes
import nodes.video_file as vf
from _graph import run_graph
from fantasytalking_core.video import probe, read_video
from nodes import _host
from test_long_audio import CLASSES, FPS, long_graph
from test_nodes import _models_env, models_dir  # noqa: F401 (the same tiny model files, the plain host)

FILE = {"filename_prefix": "talks/long", "save_output": True, "keep_partial": False}


def file_graph(speech_path, **settings) -> dict:
    g = long_graph(speech_path, motion_frames=1, **settings)
    g["long"] = {"class_type": "FantasyTalkingLongVideoToFile", "inputs": {**g["long"]["inputs"], **FILE}}
    return g


@pytest.fixture()
def folders(tmp_path, monkeypatch):
    out, temp = tmp_path / "output", tmp_path / "temp"
    monkeypatch.setenv("FANTASYTALKING_OUTPUT_DIR", str(out))
    monkeypatch.setenv("FANTASYTALKING_TEMP_DIR", str(temp))
    return out, temp


def files(folder) -> list[str]:
    """Every file under folder, hidden ones included, relative."""
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file()) if folder.exists() else []


def test_the_file_has_the_image_nodes_frames_and_sound_named_as_save_video_names(speech_path, folders, monkeypatch):
    out, temp = folders
    image = long_graph(speech_path, motion_frames=1)
    want = run_graph(image, CLASSES)["long"]
    previews = []
    monkeypatch.setattr(_host, "show_progress", lambda v, t, f=None: previews.append((v, t, f.shape)))
    ui = {}
    got = run_graph(file_graph(speech_path), CLASSES, ui=ui, extra_pnginfo={"workflow": {"n": 1}})
    path, audio, frames = got["long"]
    assert path == out / "talks" / "long_00001_.mp4" and files(out) == ["talks/long_00001_.mp4"] and not files(temp)
    assert ui["long"] == {"images": [{"filename": "long_00001_.mp4", "subfolder": "talks", "type": "output"}],
                          "animated": (True,)}
    assert frames == want[0].shape[0] == 159
    video = read_video(path)
    assert video.frames.shape == (159, 32, 32, 3) and video.fps == FPS
    err = np.abs(video.frames.astype(np.float32) / 255 - want[0].numpy()).mean()
    assert err < 0.02  # the same frames, through H.264 (crf 18)
    assert torch.equal(audio["waveform"], want[1]["waveform"]) and audio["sample_rate"] == want[1]["sample_rate"]
    info = probe(path)
    assert abs(info["audio"]["duration"] - 159 / FPS) < 0.5 / FPS and info["video"]["codec"] == "h264"
    assert info["video"]["pix_fmt"] == "yuv420p" and info["audio"]["codec"] == "aac"
    # a preview after each segment, its last frame; the bar counts frames
    assert [(v, t) for v, t, _ in previews] == [(41, 159), (81, 159), (121, 159), (159, 159)]
    assert all(s == (32, 32, 3) for *_, s in previews)
    import av

    with av.open(str(path)) as c:
        tags = dict(c.metadata)
    assert json.loads(tags["workflow"]) == {"n": 1} and json.loads(tags["prompt"])["long"]["inputs"]["seed"] == 1111
    # never overwritten: the next run takes the next number; off: the temp folder, for Save Video
    again = run_graph(file_graph(speech_path), CLASSES)["long"][0]
    assert again.name == "long_00002_.mp4" and read_video(again).frames.shape[0] == 159
    g = file_graph(speech_path)
    g["long"]["inputs"]["save_output"] = False
    ui.clear()
    tmp = run_graph(g, CLASSES, ui=ui)["long"][0]
    assert tmp == temp / "talks" / "long_00001_.mp4" and ui["long"]["images"][0]["type"] == "temp"
    monkeypatch.setattr(_host, "metadata_enabled", lambda: False)  # --disable-metadata
    bare = run_graph(file_graph(speech_path), CLASSES)["long"][0]
    with av.open(str(bare)) as c:
        assert "prompt" not in c.metadata and "workflow" not in c.metadata
    assert files(out) == [f"talks/long_0000{i}_.mp4" for i in (1, 2, 3)]


class Interrupt(BaseException):
    """Newer core's InterruptProcessingException is a BaseException, not an Exception."""


@pytest.mark.parametrize("stop", [Interrupt, RuntimeError])
def test_a_stopped_run_leaves_no_file_or_a_playable_partial_one_when_asked(speech_path, folders, monkeypatch, stop):
    out, _ = folders
    calls = []

    def interrupt():
        calls.append(1)
        if len(calls) == 3:  # Audio Encode, segment 1, then stop before segment 2
            raise stop("Processing interrupted")

    monkeypatch.setattr(_host, "check_interrupt", interrupt)
    with pytest.raises(stop):
        run_graph(file_graph(speech_path), CLASSES)
    assert files(out) == ["talks"] or files(out) == []  # no file, no hidden temporary file
    assert not any(out.rglob("*.mp4"))
    calls.clear()
    g = file_graph(speech_path)
    g["long"]["inputs"]["keep_partial"] = True
    with pytest.raises(stop):
        run_graph(g, CLASSES)
    assert files(out) == ["talks/long_00001_partial.mp4"]
    info = probe(out / "talks" / "long_00001_partial.mp4")
    assert info["video"]["frames"] == 41  # the first segment
    assert abs(info["audio"]["duration"] - 41 / FPS) < 0.5 / FPS  # its sound, cut to its frames
    monkeypatch.setattr(_host, "check_interrupt", lambda: None)
    done = run_graph(file_graph(speech_path), CLASSES)["long"][0]
    assert done.name == "long_00002_.mp4"  # numbered after the partial file, as core numbers them


def test_a_requeued_prompt_is_served_from_the_cache_until_its_file_is_deleted(speech_path, folders):
    cls = vf.FantasyTalkingLongVideoToFile
    vf.PUBLISHED.__init__()
    before = cls.IS_CHANGED(unique_id="long", **FILE)
    path = run_graph(file_graph(speech_path), CLASSES)["long"][0]
    assert cls.IS_CHANGED(unique_id="long", **FILE) == before  # same inputs, file there: the cache serves it
    assert cls.IS_CHANGED(unique_id="other") == before
    path.unlink()
    deleted = cls.IS_CHANGED(unique_id="long", **FILE)
    assert deleted != before  # the file the cache would give is gone: run again
    path = run_graph(file_graph(speech_path), CLASSES)["long"][0]
    assert path.is_file() and cls.IS_CHANGED(unique_id="long", **FILE) == deleted  # and then cached again


def test_the_image_output_says_what_it_costs():
    tips = vf.FantasyTalkingLongVideoToFile.OUTPUT_TOOLTIPS
    assert vf.FantasyTalkingLongVideoToFile.RETURN_TYPES == ("VIDEO", "AUDIO", "INT") and "decodes every frame" in tips[0]
    for node in (nodes.NODE_CLASS_MAPPINGS[n] for n in ("FantasyTalkingLongVideoSampler",
                                                                     "FantasyTalkingDubSampler")):
        assert node.RETURN_TYPES[0] == "IMAGE" and "4.3 GiB" in node.OUTPUT_TOOLTIPS[0]
        assert "Get Video Components" in node.OUTPUT_TOOLTIPS[0]


def test_the_memory_benchmark_measures_growth_against_the_image_it_would_hold(capsys):
    """benchmarks/comfy_long_video_memory.py's table: growth from the first length, the IMAGE of the extra
    frames (float32 H x W x 3), and the verdicts of issue 25 (file < 10%, IMAGE >= 50%)."""
    from benchmarks import comfy_long_video_memory as bench

    row = {"size": 64, "host": "0.33.0", "video_s": 1.0, "audio_track_s": 1.0, "wall_s": 1.0}
    rows = [{**row, "path": "file", "seconds": 60, "frames": 1380, "peak_mib": 2000.0},
            {**row, "path": "file", "seconds": 600, "frames": 13800, "peak_mib": 2030.0, "held_mib": 1990.4},
            {**row, "path": "image", "seconds": 60, "frames": 1380, "peak_mib": 2050.0},
            {**row, "path": "image", "seconds": 600, "frames": 13800, "peak_mib": 2500.0}]
    extra = 12420 * 64 * 64 * 3 * 4 / 2**20
    assert bench.image_mib(12420, 64) == pytest.approx(extra) and round(extra) == 582
    bench.print_table(rows)
    out = capsys.readouterr().out
    assert "| to file (VIDEO) | 0.33.0 | 600 | 13800 |" in out and "| +30 | 582 | +5.2% | 1990 | 1 |" in out
    assert "| 60 | 1380 | 1.000 | 1.000 | 2000 |  |  |  | ? | 1 |" in out  # a row without what it held
    assert "file: +30 MiB of 582 MiB (+5.2%, target < 10%): PASS" in out
    assert "image: +450 MiB of 582 MiB (+77.3%, target >= 50%): PASS" in out
    rows[1]["peak_mib"] = 2100.0
    bench.print_table(rows)
    assert "file: +100 MiB of 582 MiB (+17.2%, target < 10%): FAIL" in capsys.readouterr().out


def test_the_memory_benchmark_timeline_splits_loading_from_the_segments(tmp_path, capsys):
    """benchmarks/comfy_long_video_memory.RssTimeline: a process's RSS sampled with the segments its log
    has announced (whole lines only), written as TSV, and the before/during split the table prints."""
    import os

    from benchmarks import comfy_long_video_memory as bench

    log = tmp_path / "server.log"
    log.write_bytes(b"loading\n")
    timeline = bench.RssTimeline(os.getpid(), log, tmp_path / "rss.tsv", interval=0.01)
    timeline.start()

    def wait_for(n: int) -> None:
        deadline = time.monotonic() + 10
        while len(timeline.samples) < n and time.monotonic() < deadline:
            time.sleep(0.01)

    wait_for(3)
    with log.open("ab") as f:
        f.write(b"FantasyTalking Long Video Sampler (to file): segment 1/3, frames 0-80\nX: segment 2/3")
    first = len(timeline.samples)
    wait_for(first + 3)
    phases = timeline.finish()
    samples = timeline.samples
    assert [n for _, _, n in samples[:3]] == [0, 0, 0] and samples[-1][2] == 1  # "2/3" has no newline yet
    assert {n for _, _, n in samples} == {0, 1}
    assert phases["before_segments_max_mib"] == max(r for _, r, n in samples if n == 0)
    assert phases["segments_min_mib"] == min(r for _, r, n in samples if n == 1)
    assert phases["segments_max_mib"] == max(r for _, r, n in samples if n == 1)
    rows = (tmp_path / "rss.tsv").read_text().splitlines()
    assert rows[0] == "seconds\trss_mib\tsegments" and len(rows) == len(samples) + 1
    assert float(rows[1].split("\t")[1]) == pytest.approx(samples[0][1], abs=0.05)

    row = {"size": 64, "host": "0.33.0", "video_s": 1.0, "audio_track_s": 1.0, "wall_s": 1.0, "frames": 1380,
           "peak_mib": 2000.0, "path": "file", "seconds": 60}
    bench.print_table([{**row, "before_segments_max_mib": 2100.4, "segments_min_mib": 1799.6, "segments_max_mib": 1850.2}])
    assert "| file | 60 | 2100 | 1800 | 1850 |" in capsys.readouterr().out


def test_the_file_nodes_messages_name_the_node_the_user_placed():
    """The (to file) nodes run their sampler's video(): its messages say "(to file)", not the IMAGE node."""
    from types import SimpleNamespace

    ft = SimpleNamespace(audio=object(), source="ft")
    for cls, name, extra in ((nodes.FantasyTalkingLongVideoToFile, "Long Video Sampler", {}),
                             (nodes.FantasyTalkingDubToFile, "Dub Sampler", {"wav2vec": None})):
        with pytest.raises(ValueError, match=rf"^FantasyTalking {name} [(]to file[)] needs one audio input"):
            cls().to_file(model=None, fantasytalking_model=ft, **extra)
    with pytest.raises(ValueError, match=r"^FantasyTalking Dub Sampler needs one audio input"):
        nodes.FantasyTalkingDubSampler().dub(model=None, fantasytalking_model=ft, wav2vec=None)
