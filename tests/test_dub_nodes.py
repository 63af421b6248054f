"""The dub in the ComfyUI nodes (issue 17), through the plain host (tests/_plain_host.py, whose sampler
honours a LATENT's noise_mask as core's does): FantasyTalking Dub Mask -> FantasyTalking Dub Sampler
keeps the source outside the mask (the VAE round trip without paste-back, the source's pixels with it),
regenerates inside, keeps the source's frame count and fits the audio to it."""

from __future__ import annotations

import math

import pytest
import torch

from _graph import _Standin, run_graph
from fantasytalking_core import dub as D
import nodes
from nodes import _host
from _dub_helpers import face_free_source, psnr, round_trip, talking_source
from test_long_audio import CLASSES as LONG_CLASSES
from _long_helpers import ExactVAE
from test_nodes import _models_env, models_dir  # noqa: F401 (the same tiny model files, the plain host)

pytestmark = pytest.mark.filterwarnings("ignore:SymbolDatabase.GetPrototype:UserWarning")
FRAMES = talking_source(30)


class TestVideoFrames(_Standin):
    """GetVideoComponents stand-in: the talking source's frames as IMAGE."""
    RETURN_TYPES, FUNCTION = ("IMAGE",), "load"

    def load(self):
        return (torch.from_numpy(FRAMES).float() / 255,)


CLASSES = {**LONG_CLASSES, "TestVideoFrames": TestVideoFrames}


def dub_graph(speech_path, **settings) -> dict:
    inputs = {"model": ["wan", 0], "fantasytalking_model": ["ft", 0], "wav2vec": ["w2v", 0], "audio": ["audio", 0],
              "positive": ["text", 0], "negative": ["text", 1], "vae": ["vae", 0], "images": ["video", 0],
              "fps": 23.0, "mask": ["mask", 0], "fit": "cut", "size": 128, "segment_frames": 13, "motion_frames": 1,
              "audio_scale": 1.0, "seed": 1111, "steps": 2, "cfg_text": 5.0, "cfg_audio": 5.0,
              "audio_guidance_start": 0.0, "audio_guidance_end": 1.0, "sampler_name": "euler", "scheduler": "simple",
              "shift": 5.0, "clip_vision_output": ["clipv", 0]}
    inputs.update(settings)
    return {
        "wan": {"class_type": "TestTinyWan", "inputs": {"seed": 0}},
        "ft": {"class_type": "FantasyTalkingModelLoader", "inputs": {"model_name": "ft_audio_only.safetensors",
                                                                      "precision": "fp32"}},
        "w2v": {"class_type": "FantasyTalkingWav2VecLoader", "inputs": {"model_name": "wav2vec2-tiny", "device": "cpu"}},
        "audio": {"class_type": "TestAudio", "inputs": {"path": str(speech_path)}},
        "video": {"class_type": "TestVideoFrames", "inputs": {}},
        "mask": {"class_type": "FantasyTalkingDubMask", "inputs": {"images": ["video", 0], "dilation": 2, "jaw": True,
                                                                    "feather": 3}},
        "text": {"class_type": "TestTextConds", "inputs": {}},
        "clipv": {"class_type": "TestClipVision", "inputs": {}},
        "vae": {"class_type": "TestExactVAE", "inputs": {}},
        "dub": {"class_type": "FantasyTalkingDubSampler", "inputs": inputs},
    }


def test_dub_node_holds_the_source_outside_the_mask_and_regenerates_inside(speech_path, monkeypatch):
    parts, masks_seen = [], []
    import nodes.sampling

    real = nodes.sampling.sample

    def spy(model, guider, latent, *a, **k):
        parts.append(k["part"])
        masks_seen.append(latent["noise_mask"])
        return real(model, guider, latent, *a, **k)

    monkeypatch.setattr(nodes.sampling, "sample", spy)
    out = run_graph(dub_graph(speech_path, paste_back=False), CLASSES)
    frames, audio = out["dub"]
    mask = out["mask"][0]
    src = torch.from_numpy(FRAMES).float() / 255
    assert frames.shape == src.shape and mask.shape == src.shape[:3]
    plan = D.plan_dub(30, 23.0, 6.88, segment_frames=13)
    job = D.DubJob(FRAMES, mask, plan, size=128, paste_back=False)
    assert parts == [(i, 3) for i in range(3)] and all(m.shape[:2] == (1, 1) for m in masks_seen)
    rt, generated = round_trip(ExactVAE(), job)
    torch.testing.assert_close(frames[~generated], rt[~generated], atol=1e-5, rtol=0)
    print(f"\nnode, exact-inverse VAE, no paste-back: PSNR outside the mask {psnr(frames, src, ~generated):.2f} dB "
          f"(the VAE round trip {psnr(rt, src, ~generated):.2f} dB)")
    inside = mask > 0.5
    assert float((frames - rt).abs()[inside].mean()) > 0.02
    rate = audio["sample_rate"]
    assert audio["waveform"].shape[-1] == round(30 / 23 * rate)  # 6.88 s of speech cut to the video's 1.30 s

    pasted = run_graph(dub_graph(speech_path), CLASSES)["dub"][0]
    assert psnr(pasted, src, mask == 0) == math.inf and float((pasted - src).abs()[inside].mean()) > 0.02
    base = out["wan"][0]
    assert not base.object_patches and not base.wrappers  # the input MODEL as given


def test_dub_node_fits_the_video_to_the_audio_when_asked(speech_path):
    out = run_graph(dub_graph(speech_path, fit="hold", fps=25.0, steps=1, segment_frames=41), CLASSES)
    frames, audio = out["dub"]
    n = math.ceil(110092 / 16000 * 25)  # the speech's length at the source's 25 fps
    assert frames.shape[0] == n
    src = torch.from_numpy(FRAMES).float() / 255
    masks = out["mask"][0]
    held = masks[-1] == 0
    assert (frames[30:][:, held] == src[-1][held]).all()  # the last frame held to the end, outside its mouth
    assert torch.equal(frames[:30][masks == 0], src[masks == 0])  # the video itself first, frame for frame
    assert abs(audio["waveform"].shape[-1] / audio["sample_rate"] - n / 25) < 1e-3


def test_dub_mask_node_previews_and_empty_masks_pass_through(speech_path):
    graph = dub_graph(speech_path, steps=1)
    out = run_graph({k: graph[k] for k in ("video", "mask")}, CLASSES)
    masks, preview = out["mask"]
    src = torch.from_numpy(FRAMES).float() / 255
    assert _host.IN_COMFY is False and float(masks.max()) == 1.0
    assert torch.equal(masks, D.mouth_masks(FRAMES, 2, True, 3).soft())  # the core's masks, as ComfyUI's MASK
    outside, inside = masks == 0, masks == 1
    assert torch.equal(preview[outside], src[outside])  # untouched outside the region, tinted red inside
    torch.testing.assert_close(preview[inside], 0.5 * src[inside] + 0.5 * torch.tensor([1.0, 0.1, 0.1]), atol=1e-6,
                               rtol=0)
    empty, empty_preview = nodes.FantasyTalkingDubMask().mask(torch.from_numpy(face_free_source()).float() / 255, 2,
                                                              True, 3)
    assert not empty.any() and torch.equal(empty_preview, torch.from_numpy(face_free_source()).float() / 255)


class TestGetVideoComponents(TestVideoFrames):
    """LoadVideo + GetVideoComponents stand-in: the talking source's frames, its sound, 23 fps."""
    RETURN_TYPES = ("IMAGE", "AUDIO", "FLOAT")

    def load(self):
        silence = {"waveform": torch.zeros(1, 1, 16000), "sample_rate": 16000}
        return (torch.from_numpy(FRAMES).float() / 255, silence, 23.0)


def test_the_template_runs_on_the_plain_host(speech_path):
    """06_dub_video as the templates browser gives it, core nodes replaced by stand-ins, fewer steps."""
    from scripts import example_workflows as ew

    graph = ew.api_graphs()["06_dub_video"]
    assert graph["dub"]["inputs"]["fps"] == ["parts", 2] and graph["video"]["inputs"]["fps"] == ["parts", 2]
    assert graph["clipv_enc"]["inputs"]["image"] == ["first", 0] and graph["first"]["inputs"]["batch_index"] == 0
    stand = dub_graph(speech_path)
    for key in ("source", "first", "clipv", "mask_preview", "video", "save", "clip"):
        del graph[key]
    graph.update(parts={"class_type": "TestGetVideoComponents", "inputs": {}}, wan=stand["wan"], ft=stand["ft"],
                 w2v=stand["w2v"], audio=stand["audio"], vae=stand["vae"], text=stand["text"], clipv_enc=stand["clipv"])
    del graph["pos"], graph["neg"]
    graph["dub"]["inputs"].update(positive=["text", 0], negative=["text", 1], steps=2, size=128, segment_frames=13)
    out = run_graph(graph, {**CLASSES, "TestGetVideoComponents": TestGetVideoComponents})
    frames, audio = out["dub"]
    src = torch.from_numpy(FRAMES).float() / 255
    mask = out["mask"][0]
    assert frames.shape == src.shape and psnr(frames, src, mask == 0) == math.inf
    assert float((frames - src).abs()[mask > 0.5].mean()) > 0.02


def test_dub_node_refuses_a_mask_of_another_video_and_an_applied_model(speech_path):
    import nodes

    graph = dub_graph(speech_path, steps=1)
    out = run_graph({k: graph[k] for k in ("wan", "ft", "w2v", "audio", "video", "mask", "text", "vae")}, CLASSES)
    sampler = nodes.NODE_CLASS_MAPPINGS["FantasyTalkingDubSampler"]()
    args = dict(model=out["wan"][0], fantasytalking_model=out["ft"][0], wav2vec=out["w2v"][0], audio=out["audio"][0],
                positive=out["text"][0], negative=out["text"][1], vae=out["vae"][0], images=out["video"][0], fps=23.0,
                size=128, segment_frames=13, steps=1)
    with pytest.raises(ValueError, match="make the masks from these frames"):
        sampler.dub(mask=out["mask"][0][:, :64], **args)
    with pytest.raises(ValueError, match="fit must be one of"):
        sampler.dub(mask=out["mask"][0], fit="stretch", **args)
    applied = nodes.NODE_CLASS_MAPPINGS["FantasyTalkingApply"]().apply(
        out["wan"][0], out["ft"][0], run_graph({k: graph[k] for k in ("w2v", "audio")} | {
            "enc": {"class_type": "FantasyTalkingAudioEncode", "inputs": {"audio": ["audio", 0], "wav2vec": ["w2v", 0],
                                                                          "fps": 23.0, "frames": 0, "max_frames": 81}}},
            CLASSES)["enc"][0])[0]
    with pytest.raises(ValueError, match="already has FantasyTalking attached"):
        sampler.dub(mask=out["mask"][0], **{**args, "model": applied})
