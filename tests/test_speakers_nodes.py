"""Several speakers in the ComfyUI nodes (issue 26): FantasyTalking Speakers and Speaker Regions, Apply and
the Long Video Sampler taking ``speakers``; each voice moves only its own region through core's context
windows and the node's segments (a tiny DiT whose self-attention output is zero mixes nothing between
tokens, so anything outside a speaker's region that changes with its voice is a routing bug)."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

import nodes
from _factories import tiny_wan, wan_inputs
from _graph import STANDINS, _Standin, run_graph
from _plain_host import CoreLikeWindow, PlainModelPatcher, forward
from fantasytalking_core.adapters.attach import attach_adapters
from nodes.contracts import AudioFeatures
from fantasytalking_core.speakers import SpeakerAudio, Timing, arrange_tracks, encode_tracks, full_frame, given_regions
from test_long_audio import TestClipVision, TestExactVAE, TestTextConds
from test_nodes import _models_env, models_dir  # noqa: F401 (the same tiny model files, the plain host)
from test_speakers import _two_speaker_masks, tone


def quiet_wan() -> torch.nn.Module:
    """The tiny Wan DiT with every self-attention output zero: no token hears another."""
    dit = tiny_wan()
    for block in dit.blocks:
        block.self_attn.o.weight.data.zero_()
        block.self_attn.o.bias.data.zero_()
    return dit


def _speakers(frames: int, masks: list[np.ndarray], seed: int = 1, changed: int | None = None) -> SpeakerAudio:
    g = torch.Generator().manual_seed(seed)
    features = torch.randn(len(masks) + 1, int(frames / 23 * 50), 768, generator=g)
    if changed is not None:
        features[changed] = torch.randn(features.shape[1:], generator=torch.Generator().manual_seed(99))
    regions = given_regions(masks, len(masks), masks[0].shape[1], masks[0].shape[0])
    return SpeakerAudio(features, frames, 23.0, frames / 23, regions)


def _column_masks() -> list[np.ndarray]:
    """On a 2x3 token grid (32x48 px): speaker 1 the left column, speaker 2 the right one."""
    m1, m2 = np.zeros((32, 48), np.float32), np.zeros((32, 48), np.float32)
    m1[:, :16], m2[:, 32:] = 1.0, 1.0
    return [m1, m2]


def test_each_voice_moves_only_its_region_in_every_context_window():
    (ft,) = nodes.FantasyTalkingModelLoader().load("ft_audio_only.safetensors", "fp32")
    dit = quiet_wan()
    inp = wan_inputs(dit.cfg, batch=3, frames=16)  # 61 video frames, latent 4x6: tokens 2x3
    windows = [CoreLikeWindow(list(range(0, 9))), CoreLikeWindow(list(range(7, 16)), anchor=6)]
    outs = {}
    for changed in (None, 1):
        m = nodes.FantasyTalkingApply().apply(PlainModelPatcher(dit), ft, audio_scale=1.0, audio_mode="frame",
                                                 speakers=_speakers(61, _column_masks(), changed=changed))[0]
        for i, window in enumerate(windows):
            args = [window.get_tensor(inp[k]) for k in ("x",)] + [inp["t"], inp["context"], inp["clip_fea"],
                                                                 window.get_tensor(inp["y"])]
            with torch.no_grad():
                outs[changed, i] = forward(m, *args, {"context_window": window, "uuids": ["a", "b", "c"],
                                                      nodes.sampling._host.AUDIO_OFF: {"b"}})
    for i in range(len(windows)):
        diff = (outs[1, i] - outs[None, i]).abs()  # [3, 16, T, 4, 6]
        assert diff[..., :4].max() == 0, "speaker 2's voice moved tokens outside its region"
        assert not diff[1].any()  # the audio-off row (a guidance pass without audio)
        assert (diff[[0, 2], ..., 4:].amax((1, 3, 4)) > 0).all()  # its region moves on every latent frame


def test_one_full_frame_speaker_through_apply_is_audio_features_bit_for_bit():
    (ft,) = nodes.FantasyTalkingModelLoader().load("ft_audio_only.safetensors", "fp32")
    dit = tiny_wan()
    inp = wan_inputs(dit.cfg, batch=3, frames=3)
    one = _speakers(9, [np.ones((32, 48), np.float32)])
    feats = AudioFeatures(one.features[:1], 9, 23.0, 9 / 23, "test")
    outs = []
    for kwargs in ({"audio_features": feats}, {"speakers": one}):
        m = nodes.FantasyTalkingApply().apply(PlainModelPatcher(dit), ft, audio_scale=0.8, **kwargs)[0]
        with torch.no_grad():
            outs.append(forward(m, inp["x"], inp["t"], inp["context"], inp["clip_fea"], inp["y"], {}))
    assert torch.equal(outs[0], outs[1])
    with pytest.raises(ValueError, match="needs one audio input: connect audio_features .* or speakers .*, not both"):
        nodes.FantasyTalkingApply().apply(PlainModelPatcher(dit), ft, feats, speakers=one)
    with pytest.raises(ValueError, match="needs one audio input"):
        nodes.FantasyTalkingApply().apply(PlainModelPatcher(dit), ft)


# ------------------------------------------------------------------------------------- the graph


class TestQuietWan(_Standin):
    RETURN_TYPES, FUNCTION = ("MODEL",), "load"

    def load(self):
        return (PlainModelPatcher(quiet_wan()),)


class TestTone(_Standin):
    RETURN_TYPES, FUNCTION = ("AUDIO",), "load"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"freq": ("FLOAT", {}), "seed": ("INT", {})}}

    def load(self, freq, seed):
        return ({"waveform": torch.from_numpy(tone(0.6, freq, seed))[None, None], "sample_rate": 16000},)


class TestPicture(_Standin):
    RETURN_TYPES, FUNCTION = ("IMAGE",), "load"

    def load(self):
        return (torch.from_numpy(np.random.default_rng(0).random((1, 64, 96, 3), dtype=np.float32)),)


class TestMasks(_Standin):
    RETURN_TYPES, FUNCTION = ("MASK", "MASK"), "load"

    def load(self):
        return tuple(torch.from_numpy(m)[None] for m in _two_speaker_masks())


CLASSES = {**nodes.NODE_CLASS_MAPPINGS, **STANDINS, **{c.__name__: c for c in (
    TestQuietWan, TestTone, TestPicture, TestMasks, TestExactVAE, TestTextConds, TestClipVision)}}


def speakers_graph(freq2: float = 300.0, **settings) -> dict:
    long = {"model": ["wan", 0], "fantasytalking_model": ["ft", 0], "speakers": ["spk", 0], "audio": ["spk", 2],
            "positive": ["text", 0], "negative": ["text", 1], "vae": ["vae", 0], "start_image": ["img", 0],
            "clip_vision_output": ["clipv", 0], "width": 96, "height": 64, "segment_frames": 9, "motion_frames": 1,
            "audio_scale": 1.0, "seed": 1111, "steps": 2, "cfg_text": 5.0, "cfg_audio": 5.0,
            "audio_guidance_start": 0.0, "audio_guidance_end": 1.0, "sampler_name": "euler", "scheduler": "simple",
            "shift": 5.0, "color_match": False}
    speakers = {"wav2vec": ["w2v", 0], "audio_1": ["a1", 0], "audio_2": ["a2", 0], "timing": "together", "gap": 0.0,
                "schedule": "", "fps": 23.0, "frames": 0, "max_frames": 0, "regions": ["regions", 0]}
    speakers.update(settings)
    return {
        "wan": {"class_type": "TestQuietWan", "inputs": {}},
        "ft": {"class_type": "FantasyTalkingModelLoader", "inputs": {"model_name": "ft_audio_only.safetensors",
                                                                      "precision": "fp32"}},
        "w2v": {"class_type": "FantasyTalkingWav2VecLoader", "inputs": {"model_name": "wav2vec2-tiny", "device": "cpu"}},
        "a1": {"class_type": "TestTone", "inputs": {"freq": 200.0, "seed": 1}},
        "a2": {"class_type": "TestTone", "inputs": {"freq": freq2, "seed": 2}},
        "img": {"class_type": "TestPicture", "inputs": {}},
        "masks": {"class_type": "TestMasks", "inputs": {}},
        "regions": {"class_type": "FantasyTalkingSpeakerRegions", "inputs": {
            "image": ["img", 0], "speakers": 2, "grow": 1.0, "feather": 8, "mask_1": ["masks", 0],
            "mask_2": ["masks", 1]}},
        "spk": {"class_type": "FantasyTalkingSpeakers", "inputs": speakers},
        "text": {"class_type": "TestTextConds", "inputs": {}},
        "clipv": {"class_type": "TestClipVision", "inputs": {}},
        "vae": {"class_type": "TestExactVAE", "inputs": {}},
        "long": {"class_type": "FantasyTalkingLongVideoSampler", "inputs": long},
    }


def test_long_video_node_routes_each_voice_to_its_region_segment_after_segment():
    base = run_graph(speakers_graph(), CLASSES)
    spk, frames, mix = base["spk"][0], base["long"][0], base["long"][1]
    assert spk.num_frames == 17 and frames.shape == (14, 64, 96, 3)  # 0.6 s: 17 frames made, 14 kept
    w2v = base["w2v"][0]
    tracks = arrange_tracks([base["a1"][0], base["a2"][0]], Timing("together"))
    assert torch.equal(spk.features, encode_tracks(w2v, tracks.tracks[:, :int(17 / 23 * 16000)]))
    assert mix["waveform"].shape[-1] == round(14 / 23 * 16000)
    regions_out, preview = base["regions"]
    assert regions_out.shape == (2, 64, 96) and preview.shape == (1, 64, 96, 3)
    changed = run_graph(speakers_graph(freq2=410.0), CLASSES)["long"][0]
    diff = (changed - frames).abs().amax(-1)
    weights = spk.regions.weights(4, 6)[1, 0]
    region = (weights > 0).repeat_interleave(16, 0).repeat_interleave(16, 1)
    assert diff[:, ~region].max() == 0, "speaker 2's voice moved pixels outside its region"
    assert (diff[:, region].amax(-1) > 0).all()


def test_speaker_nodes_say_what_to_connect():
    g = speakers_graph()
    del g["spk"]["inputs"]["regions"]
    with pytest.raises(ValueError, match="2 speakers need one region each: connect FantasyTalking Speaker Regions"):
        run_graph({k: g[k] for k in ("w2v", "a1", "a2", "spk")}, CLASSES)
    regions = nodes.FantasyTalkingSpeakerRegions()
    image = torch.from_numpy(np.random.default_rng(0).random((1, 64, 96, 3), dtype=np.float32))
    masks = [torch.from_numpy(m)[None] for m in _two_speaker_masks()]
    with pytest.raises(ValueError, match="connect mask_1 too: masks are speakers 1, 2, ... in order"):
        regions.regions(image, 2, mask_2=masks[1])
    with pytest.raises(ValueError, match=r"2 speaker track\(s\) but 1 mask\(s\)"):
        regions.regions(image, 2, mask_1=masks[0])
    with pytest.raises(ValueError, match=r"found 0 face\(s\) in the portrait but there are 2 speakers"):
        regions.regions(image, 2)
    one, preview = regions.regions(image, 2, mask_1=masks[0], mask_2=masks[1])
    assert torch.equal(one, torch.stack([m[0] for m in masks])) and preview.shape == (1, 64, 96, 3)
    assert full_frame(96, 64).count == 1
