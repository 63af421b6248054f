"""Several speakers in the Dub Sampler node (issue 26): FantasyTalking Speakers -> FantasyTalking Dub Sampler
(and its (to file) form). One speaker equals the dub from audio bit for bit; with a tiny DiT whose
self-attention output is zero, changing one voice changes the dubbed frames only inside that speaker's
region; the node's errors say what to connect."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

import nodes
from _dub_helpers import talking_source
from _graph import _Standin, run_graph
from _media_helpers import portrait, warp
from test_dub_nodes import CLASSES as DUB_CLASSES, dub_graph
from test_nodes import _models_env, models_dir  # noqa: F401 (the same tiny model files, the plain host)
from test_speakers_nodes import CLASSES as SPEAKER_CLASSES, speakers_graph

pytestmark = pytest.mark.filterwarnings("ignore:SymbolDatabase.GetPrototype:UserWarning")
SOURCE = np.random.default_rng(3).integers(0, 255, (14, 64, 96, 3), dtype=np.uint8)


class TestSourceFrames(_Standin):
    """GetVideoComponents stand-in: 14 frames of 96x64 noise."""
    RETURN_TYPES, FUNCTION = ("IMAGE",), "load"

    def load(self):
        return (torch.from_numpy(SOURCE).float() / 255,)


class TestBandMask(_Standin):
    """A dub mask over rows 16..47 of every frame: across both speakers and the background between them."""
    RETURN_TYPES, FUNCTION = ("MASK",), "load"

    def load(self):
        m = torch.zeros(14, 64, 96)
        m[:, 16:48] = 1.0
        return (m,)


CLASSES = {**DUB_CLASSES, **SPEAKER_CLASSES, "TestSourceFrames": TestSourceFrames, "TestBandMask": TestBandMask}


def _speakers_node(**inputs) -> dict:
    return {"class_type": "FantasyTalkingSpeakers", "inputs": {
        "wav2vec": ["w2v", 0], "timing": "together", "gap": 0.0, "schedule": "", "fps": 23.0, "frames": 0,
        "max_frames": 81, **inputs}}


def test_one_speaker_dubs_as_the_audio_input_does_bit_for_bit(speech_path):
    graph = dub_graph(speech_path, steps=1)
    today = run_graph(graph, CLASSES)["dub"]
    graph["spk"] = _speakers_node(audio_1=["audio", 0])  # max_frames 81: the dub fits the whole track itself
    del graph["dub"]["inputs"]["audio"]
    graph["dub"]["inputs"]["speakers"] = ["spk", 0]
    one = run_graph(graph, CLASSES)["dub"]
    assert one[0].shape == (30, 128, 128, 3) and torch.equal(one[0], today[0])
    assert one[1]["sample_rate"] == today[1]["sample_rate"] and torch.equal(one[1]["waveform"], today[1]["waveform"])


def two_speaker_dub(freq2: float = 300.0, **settings) -> dict:
    """test_speakers_nodes' two voices and regions (96x64) into the Dub Sampler over a band of 14 frames."""
    graph = speakers_graph(freq2)
    long = graph.pop("long")["inputs"]
    dub = {**{k: long[k] for k in ("model", "fantasytalking_model", "speakers", "positive", "negative", "vae",
                                   "clip_vision_output", "segment_frames", "motion_frames", "audio_scale", "seed",
                                   "steps", "cfg_text", "cfg_audio", "audio_guidance_start", "audio_guidance_end",
                                   "sampler_name", "scheduler", "shift")},
           "wav2vec": ["w2v", 0], "images": ["video", 0], "fps": 23.0, "mask": ["band", 0], "fit": "hold",
           "size": 96, **settings}
    return {**graph, "video": {"class_type": "TestSourceFrames", "inputs": {}},
            "band": {"class_type": "TestBandMask", "inputs": {}},
            "dub": {"class_type": "FantasyTalkingDubSampler", "inputs": dub}}


def test_each_new_voice_moves_only_its_own_region_of_the_dub_node():
    base = run_graph(two_speaker_dub(), CLASSES)
    frames, mix = base["dub"]
    assert frames.shape == (14, 64, 96, 3)  # 0.6 s of voices at 23 fps: the 14 source frames (fit hold)
    spk = base["spk"][0]
    voices = spk.timeline.soundtrack.waveform  # [1, 9600]: the mix of the two 0.6 s tones
    got = mix["waveform"][0]
    assert mix["sample_rate"] == 16000 and got.shape == (1, round(14 / 23 * 16000))  # the video's 0.61 s
    assert torch.equal(got[:, :9600], voices) and not got[:, 9600:].any()  # the new sound: the mix, then silence
    changed = run_graph(two_speaker_dub(freq2=410.0), CLASSES)["dub"][0]
    diff = (changed - frames).abs().amax(-1)
    band = torch.zeros(64, 96, dtype=torch.bool)
    band[16:48] = True
    region = (spk.regions.weights(4, 6)[1, 0] > 0).repeat_interleave(16, 0).repeat_interleave(16, 1) & band
    assert diff[:, ~region].max() == 0, "speaker 2's voice moved pixels outside its region"
    assert (diff[:, region].amax(-1) > 0).all()


def test_the_dub_node_says_what_to_connect(speech_path):
    graph = two_speaker_dub(steps=1)
    sampler = nodes.FantasyTalkingDubSampler()
    out = run_graph({k: v for k, v in graph.items() if k != "dub"}, CLASSES)
    args = dict(model=out["wan"][0], fantasytalking_model=out["ft"][0], wav2vec=out["w2v"][0], positive=out["text"][0],
                negative=out["text"][1], vae=out["vae"][0], images=out["video"][0], fps=23.0, mask=out["band"][0],
                size=96, segment_frames=9, steps=1)
    with pytest.raises(ValueError, match=r"FantasyTalking Dub Sampler needs one audio input: connect audio \(Load "
                                         r"Audio\) for one speaker, or speakers \(FantasyTalking Speakers\) for several, "
                                         r"not both"):
        sampler.dub(audio=out["a1"][0], speakers=out["spk"][0], **args)
    with pytest.raises(ValueError, match="needs one audio input: connect audio"):
        sampler.dub(**args)
    small = {**args, "images": args["images"][:, :, :64], "mask": args["mask"][:, :, :64]}
    with pytest.raises(ValueError, match=r"the speaker regions are 96x64 but the source video is 64x64: draw the masks "
                                         r"on a frame of the video itself \(FantasyTalking Speaker Regions on the "
                                         r"video's frames"):
        sampler.dub(speakers=out["spk"][0], **small)
    # automatic regions on a frame with one face, for two speakers: Speaker Regions says so
    one_face = torch.from_numpy(talking_source(1)).float() / 255
    with pytest.raises(ValueError, match=r"found 1 face\(s\) in the portrait but there are 2 speakers: connect one "
                                         r"mask per speaker"):
        nodes.FantasyTalkingSpeakerRegions().regions(one_face, 2)
    inputs = nodes.NODE_CLASS_MAPPINGS["FantasyTalkingDubToFile"].INPUT_TYPES()
    assert "speakers" in inputs["optional"] and "audio" in inputs["optional"]  # saved workflows keep loading


def test_the_dub_mask_node_regenerates_every_speakers_mouth():
    img = portrait(96)
    two = np.concatenate([img, img[:, ::-1]], axis=1)
    frames = torch.from_numpy(np.stack([warp(two, dx=math.sin(i / 3)) for i in range(5)])).float() / 255
    mask = nodes.FantasyTalkingDubMask()
    one, _ = mask.mask(frames, 2, True, 0)
    both, preview = mask.mask(frames, 2, True, 0, faces=2)
    left, right = int((both[..., :96] > 0).sum()), int((both[..., 96:] > 0).sum())
    assert min(left, right) > 0.8 * max(left, right) and preview.shape == frames.shape
    assert min(int((one[..., :96] > 0).sum()), int((one[..., 96:] > 0).sum())) == 0
    assert mask.INPUT_TYPES()["optional"]["faces"][1]["default"] == 1
