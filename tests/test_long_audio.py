"""Long audio end to end (issue 16): with a stand-in model whose output is a known function of its
conditioning (tests/_long_helpers.py), every segment gets the right held frames, audio windows and
reference, and the stitched video equals the one computed over the whole video, frame for frame, on
the command-line pipeline and in the ComfyUI node; the CLI makes the whole recording by default and
streams it to the file."""

from __future__ import annotations

import math
from types import SimpleNamespace

import numpy as np
import pytest
import soundfile
import torch
from PIL import Image

import nodes
import nodes.sampling
from _factories import tiny_wan
from _graph import STANDINS, _Standin, run_graph
from _long_helpers import EchoDiT, ExactVAE, expected_video
from _plain_host import PlainModelPatcher
from fantasytalking_core.images import fit_frames, image_to_tensor
from fantasytalking_core.pipeline import FantasyTalkingPipeline, Generation, GenerationConfig, tiny_components
from fantasytalking_core.segments import i2v_mask, output_frames, plan_segments
from nodes import _host
from test_nodes import _models_env, models_dir  # noqa: F401 (the same tiny model files, the plain host)

FPS = 23.0


def portrait(w: int = 96, h: int = 80) -> np.ndarray:
    yy, xx = np.mgrid[0:h, 0:w]
    img = np.stack([xx / w, yy / h, 0.5 * np.ones_like(xx, dtype=float)], -1) * 255
    img[(xx - w / 2) ** 2 + (yy - h / 2) ** 2 < (min(w, h) / 3) ** 2] = (230, 180, 150)
    return img.astype(np.uint8)


def check_segments(calls: list[dict], plans, want, clip: torch.Tensor) -> None:
    """Each segment's first DiT call (sigma 1): the held frames as known latents and nothing else,
    the audio windows of its own latent frames, the portrait's CLIP tokens."""
    firsts = [c for c in calls if c["sigma"] == 1.0]
    assert len(firsts) == len(plans)
    for plan, call in zip(plans, firsts):
        m, t, y = plan.latent_start, plan.latent_frames, call["y"][0]
        held = (max(plan.motion_frames, 1) - 1) // 4 + 1
        assert torch.equal(y[:4], i2v_mask(plan.num_frames, *y.shape[-2:], known=max(plan.motion_frames, 1)))
        torch.testing.assert_close(y[4:7, :held], want.latents[:, m:m + held], atol=1e-5, rtol=0)
        assert not y[4:, held:].any() and not y[7:].any()  # grey (0) after the held frames
        torch.testing.assert_close(call["audio"], want.windows.tokens[:, m:m + t], atol=1e-5, rtol=0)
        assert torch.equal(call["k_lens"].cpu(), want.windows.k_lens[m:m + t])
        assert torch.equal(call["clip"], clip)


# ----------------------------------------------------------------------------------- command line


@pytest.fixture(scope="module")
def echo():
    c = tiny_components(seed=0)
    c.dit, c.vae = EchoDiT(), ExactVAE()
    return c


@pytest.mark.parametrize("segment_frames, motion_frames", [(41, 1), (41, 5), (21, 9), (161, 1)])
def test_pipeline_segments_get_their_conditioning_and_stitch_to_the_whole_video(echo, speech_path, segment_frames,
                                                                                 motion_frames):
    cfg = GenerationConfig(size=32, steps=2, segment_frames=segment_frames, motion_frames=motion_frames,
                           color_match=False)
    gen = Generation(portrait(), speech_path, cfg)
    assert (gen.generated, gen.frames) == (161, 159)  # the whole 6.88 s recording by default
    echo.dit.calls.clear()
    video = torch.cat(list(FantasyTalkingPipeline(echo).frames(gen, progress=False)))
    with torch.no_grad():
        image = image_to_tensor(gen.portrait)
        first = ExactVAE().encode(image[:, :, None])[0, :3, 0]
        clip = echo.clip_encoder(image)
        feats = echo.wav2vec.encode(gen.wave16k)  # the whole recording, once
    want = expected_video(feats, echo.audio, 161, FPS, first, clip, gen.frames)
    if len(gen.plans) == 1:  # one segment: the official clip rule spreads the 343 tokens over the 161 frames
        assert video.shape == want.frames.shape and not torch.allclose(video, want.frames, atol=1e-3)
        with torch.no_grad():
            official = echo.audio.condition(feats, 161)  # the released code's windows for one clip of 161 frames
        call = next(c for c in echo.dit.calls if c["sigma"] == 1.0)
        torch.testing.assert_close(call["audio"], official.tokens[:1], atol=1e-6, rtol=0)
        assert torch.equal(call["k_lens"].cpu(), official.k_lens.cpu()) and torch.equal(call["clip"], clip)
        return
    check_segments(echo.dit.calls, gen.plans, want, clip)
    assert video.shape == want.frames.shape == (159, 32, 32, 3)
    torch.testing.assert_close(video, want.frames, atol=1e-5, rtol=0)


def test_pipeline_streams_segments_to_the_file(echo, speech_path, tmp_path, monkeypatch):
    from fantasytalking_core.video import VideoWriter, probe

    chunks = []
    real = VideoWriter.write
    monkeypatch.setattr(VideoWriter, "write", lambda self, f: chunks.append(f.shape[0]) or real(self, f))
    gen = Generation(portrait(), speech_path, GenerationConfig(size=32, steps=1, segment_frames=41))
    out = FantasyTalkingPipeline(echo).write(gen, tmp_path / "long.mp4", progress=False)
    assert chunks == [41, 40, 40, 38]  # segment by segment, the last one cut to the audio
    info = probe(out)
    seconds = soundfile.info(str(speech_path)).duration
    assert info["video"]["frames"] == output_frames(seconds, FPS) == 159
    assert abs(info["video"]["duration"] - info["audio"]["duration"]) < 0.5 / FPS  # the streams end together
    assert 0 <= info["video"]["duration"] - seconds < 1 / FPS  # the video covers the recording, < 1 frame more
    assert [p.name for p in tmp_path.iterdir()] == ["long.mp4"]  # no temporary file left
    with pytest.raises(InterruptedError):  # a stopped run leaves no file
        FantasyTalkingPipeline(echo).write(gen, tmp_path / "stopped.mp4", progress=False, should_stop=lambda: True)
    assert [p.name for p in tmp_path.iterdir()] == ["long.mp4"]


def test_cli_makes_the_whole_recording_by_default_and_says_what_max_frames_cuts(tmp_path, speech_path, capsys):
    from fantasytalking_core.__main__ import main
    from fantasytalking_core.video import probe

    image = tmp_path / "portrait.png"
    Image.fromarray(portrait()).save(image)
    base = ["generate", "--preset", "tiny", "--image", str(image), "--audio", str(speech_path), "--size", "32",
            "--steps", "1", "--cfg-text", "1", "--cfg-audio", "1"]
    assert main(base + ["--out", str(tmp_path / "whole.mp4")]) == 0
    out = capsys.readouterr().out
    assert "audio 6.88 s -> 159 frames at 23 fps (6.91 s) in 2 segment(s) of up to 81 frames" in out
    assert "note:" not in out and probe(tmp_path / "whole.mp4")["video"]["frames"] == 159
    assert main(base + ["--out", str(tmp_path / "cut.mp4"), "--max-frames", "33"]) == 0
    out = capsys.readouterr().out
    assert "note: max_frames 33 cut the video to 1.43 s: the last 5.45 s of the 6.88 s recording are left out" in out
    assert probe(tmp_path / "cut.mp4")["video"]["frames"] == 33


# ----------------------------------------------------------------------------------- ComfyUI node


class TestEchoWan(_Standin):
    RETURN_TYPES, FUNCTION = ("MODEL",), "load"

    def load(self):
        return (PlainModelPatcher(EchoDiT()),)


class TestExactVAE(_Standin):
    RETURN_TYPES, FUNCTION = ("VAE",), "load"

    def load(self):
        return (ExactVAE().comfy(),)


class TestTextConds(_Standin):
    RETURN_TYPES, FUNCTION = ("CONDITIONING", "CONDITIONING"), "encode"

    def encode(self):
        g, dim = torch.Generator().manual_seed(4), tiny_wan().cfg.text_dim
        return ([[torch.randn(1, 5, dim, generator=g), {}]], [[torch.randn(1, 7, dim, generator=g), {}]])


class TestClipVision(_Standin):
    RETURN_TYPES, FUNCTION = ("CLIP_VISION_OUTPUT",), "encode"

    def encode(self):
        g = torch.Generator().manual_seed(5)
        return (SimpleNamespace(penultimate_hidden_states=torch.randn(1, 257, tiny_wan().cfg.clip_dim, generator=g)),)


CLASSES = {**nodes.NODE_CLASS_MAPPINGS, **STANDINS, **{c.__name__: c for c in (TestEchoWan, TestExactVAE,
                                                                              TestTextConds, TestClipVision)}}


def long_graph(speech_path, model=("wan", 0), **settings) -> dict:
    inputs = {"model": list(model), "fantasytalking_model": ["ft", 0], "audio_features": ["enc", 0],
              "audio": ["audio", 0], "positive": ["text", 0], "negative": ["text", 1], "vae": ["vae", 0],
              "start_image": ["img", 0], "clip_vision_output": ["clipv", 0], "width": 32, "height": 32,
              "segment_frames": 41, "motion_frames": 5, "audio_scale": 1.0, "seed": 1111, "steps": 2,
              "cfg_text": 5.0, "cfg_audio": 5.0, "audio_guidance_start": 0.0, "audio_guidance_end": 1.0,
              "sampler_name": "euler", "scheduler": "simple", "shift": 5.0, "color_match": False}
    inputs.update(settings)
    return {
        "wan": {"class_type": "TestEchoWan", "inputs": {}},
        "ft": {"class_type": "FantasyTalkingModelLoader", "inputs": {"model_name": "ft_audio_only.safetensors",
                                                                      "precision": "fp32"}},
        "w2v": {"class_type": "FantasyTalkingWav2VecLoader", "inputs": {"model_name": "wav2vec2-tiny", "device": "cpu"}},
        "audio": {"class_type": "TestAudio", "inputs": {"path": str(speech_path)}},
        "enc": {"class_type": "FantasyTalkingAudioEncode",
                "inputs": {"audio": ["audio", 0], "wav2vec": ["w2v", 0], "fps": FPS, "frames": 0, "max_frames": 0}},
        "img": {"class_type": "TestImage", "inputs": {"size": 64}},
        "text": {"class_type": "TestTextConds", "inputs": {}},
        "clipv": {"class_type": "TestClipVision", "inputs": {}},
        "vae": {"class_type": "TestExactVAE", "inputs": {}},
        "long": {"class_type": "FantasyTalkingLongVideoSampler", "inputs": inputs},
    }


def test_node_segments_get_their_conditioning_and_stitch_to_the_whole_video(speech_path, monkeypatch):
    parts = []
    real_sample = nodes.sampling.sample
    monkeypatch.setattr(nodes.sampling, "sample", lambda *a, **k: parts.append(k["part"]) or real_sample(*a, **k))
    out = run_graph(long_graph(speech_path), CLASSES)
    frames, audio = out["long"]
    feats, dit = out["enc"][0], out["wan"][0].model.diffusion_model
    clip = out["clipv"][0].penultimate_hidden_states
    start = fit_frames(out["img"][0], 32, 32)
    first = ExactVAE().encode(start.permute(3, 0, 1, 2)[None] * 2 - 1)[0, :3, 0]
    want = expected_video(feats.features, out["ft"][0].audio, 161, FPS, first, clip, 159)
    plans = plan_segments(161, 41, 5)
    check_segments(dit.calls, plans, want, clip)
    assert frames.shape == want.frames.shape == (159, 32, 32, 3)
    torch.testing.assert_close(frames, want.frames, atol=1e-5, rtol=0)
    rate = out["audio"][0]["sample_rate"]
    assert audio["sample_rate"] == rate and audio["waveform"].shape[-1] == round(159 / FPS * rate)
    assert parts == [(i, len(plans)) for i in range(len(plans))]  # the progress bar spans every segment


def test_node_leaves_nothing_behind_and_stops_when_asked(speech_path, monkeypatch):
    graph = long_graph(speech_path, color_match=True, motion_frames=1)
    out = run_graph(graph, CLASSES)
    base = out["wan"][0]
    assert not base.object_patches and not base.wrappers and not base.additional_models  # the input MODEL as given
    assert not any(hasattr(m, "_ft_hook") for m in base.model.diffusion_model.modules())
    again = run_graph(graph, CLASSES)  # a second prompt: the same video
    assert torch.equal(out["long"][0], again["long"][0])
    plain = run_graph(long_graph(speech_path, motion_frames=1), CLASSES)["long"][0]
    assert torch.equal(out["long"][0][:41], plain[:41])  # the first segment is never colour-matched
    assert not torch.allclose(out["long"][0][41:], plain[41:], atol=1e-4)
    calls, parts, stop_at = [], [], [None]
    real_sample = nodes.sampling.sample
    monkeypatch.setattr(nodes.sampling, "sample", lambda *a, **k: parts.append(k["part"]) or real_sample(*a, **k))

    def interrupt():
        calls.append(1)
        if len(calls) == stop_at[0]:
            raise InterruptedError("Processing interrupted")

    monkeypatch.setattr(_host, "check_interrupt", interrupt)
    run_graph(graph, CLASSES)
    segments = len(plan_segments(161, 41, 1))
    assert segments == 4 and len(calls) == 1 + segments  # Audio Encode once, then before every segment
    assert parts == [(i, segments) for i in range(segments)]
    calls.clear(), parts.clear()
    stop_at[0] = 3  # asked to stop before the second segment
    with pytest.raises(InterruptedError):
        run_graph(graph, CLASSES)
    assert parts == [(0, segments)]  # one segment sampled, nothing after the interrupt


def test_node_refuses_what_would_make_a_wrong_video(speech_path):
    with pytest.raises(ValueError, match=r"covers 81 frames \(3.52 s\) of the 6.88 s recording: set FantasyTalking "
                                         r"Audio Encode's max_frames \(and frames\) to 0"):
        g = long_graph(speech_path)
        g["enc"]["inputs"]["max_frames"] = 81
        run_graph(g, CLASSES)
    with pytest.raises(ValueError, match="multiples of 16"):
        run_graph(long_graph(speech_path, width=40), CLASSES)
    with pytest.raises(ValueError, match=r"motion_frames = 3 is not 4k\+1"):
        run_graph(long_graph(speech_path, motion_frames=3), CLASSES)
    g = long_graph(speech_path, model=("apply", 0))
    g["apply"] = {"class_type": "FantasyTalkingApply", "inputs": {
        "model": ["wan", 0], "fantasytalking_model": ["ft", 0], "audio_features": ["enc", 0], "audio_scale": 1.0,
        "audio_mode": "frame"}}
    with pytest.raises(ValueError, match="already has FantasyTalking attached: connect the model loader's MODEL to "
                                         "FantasyTalking Long Video Sampler"):
        run_graph(g, CLASSES)


def test_seconds_of_video_match_the_recording():
    assert math.isclose(output_frames(60.0, 23) / 23, 60.0)
    for seconds in (6.88075, 20.6, 61.9, 600.01):
        n = output_frames(seconds, 23)
        assert 0 <= n / 23 - seconds < 1 / 23


def test_memory_benchmark_runs_and_prints_its_table(capsys):
    from benchmarks import long_audio_memory as bench

    assert bench.main(["--seconds", "1", "2", "--size", "32", "--steps", "1", "--segment-frames", "21",
                       "--wav2vec", "tiny", "--allocators", "default"]) == 0
    rows = [line for line in capsys.readouterr().out.splitlines() if line.startswith("| stream to mp4")]
    assert len(rows) == 2 and "| default | 1.00 | 23 | 2 | 1.000 |" in rows[0] and "| 2.00 | 46 | 3 | 2.000 |" in rows[1]


def test_encoder_memory_benchmark_runs_both_paths_and_prints_its_table(capsys):
    """`--encoder`: the audio encoder alone, in pieces past 500 tokens and through the model's forward."""
    from benchmarks import long_audio_memory as bench

    assert bench.main(["--encoder", "--seconds", "1", "12", "--encoder-forward", "12", "--wav2vec", "tiny"]) == 0
    out = capsys.readouterr().out
    rows = [line.split(" | ") for line in out.splitlines() if line.startswith("| encode") or line.startswith("| the")]
    assert [(r[0], r[1], r[2]) for r in rows] == [("| encode (in pieces past 10 s)", "1.00", "49"),
                                                  ("| encode (in pieces past 10 s)", "12.00", "599"),
                                                  ("| the model's own forward", "12.00", "599")]
    for r in rows:  # peak over before = peak - before; features: 768-d float32 tokens
        assert float(r[5]) == pytest.approx(float(r[4]) - float(r[3]), abs=1)
        assert float(r[6]) == pytest.approx(int(r[2]) * 768 * 4 / 2**20, abs=0.5)
