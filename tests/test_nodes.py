"""The node layer without ComfyUI: declarations, graphs through the test executor, and the patch
applied through object patches + wrapper equal to the adapters attached directly."""

from __future__ import annotations

import logging
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

import nodes
from fantasytalking_core.adapters import (IdentityAdapter, MotionAdapter, IdentityAdapterConfig,
                                          MotionAdapterConfig)
from fantasytalking_core.adapters.attach import attach_adapters
from fantasytalking_core.adapters.audio import AudioCondition
from fantasytalking_core.checkpoints import save_adapters
from nodes.contracts import AudioFeatures, FaceReference, MotionIntensity as Motion
from fantasytalking_core.motion import from_sliders
from fantasytalking_core.sampling import Guidance, flow_sigmas, initial_noise, run_passes_batched, sample_euler
from fantasytalking_core.wan import init_random_
import nodes.sampling
from nodes import _host
from nodes.apply import audio_row_scales, check_context_window, window_audio

import _plain_host
from _audio_helpers import tiny_wav2vec
from _factories import tiny_audio, tiny_wan, wan_inputs
from _graph import input_spec_errors, run_graph
from _plain_host import CoreLikeWindow, PlainModelPatcher

SPEECH = Path(__file__).resolve().parents[1] / "assets" / "speech_en_16k.wav"


@pytest.fixture(scope="module")
def models_dir(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("models")
    cfg = tiny_wan().cfg
    modules = {
        "audio": tiny_audio(cfg),
        "identity": init_random_(IdentityAdapter(IdentityAdapterConfig.for_wan(cfg)), seed=5, std=0.2),
        "motion": init_random_(MotionAdapter(MotionAdapterConfig.for_wan(cfg)), seed=6, std=0.2),
    }
    save_adapters(root / "model_patches" / "ft_tiny.safetensors", modules)
    save_adapters(root / "model_patches" / "ft_audio_only.safetensors", {"audio": modules["audio"]})
    tiny_wav2vec().save_pretrained(root / "audio_encoders" / "wav2vec2-tiny")
    return root


@pytest.fixture(autouse=True)
def _models_env(models_dir, monkeypatch):
    monkeypatch.setenv("FANTASYTALKING_MODELS_DIR", str(models_dir))
    _plain_host.install(monkeypatch)


def test_every_node_declaration_follows_comfyui_rules():
    assert set(nodes.NODE_CLASS_MAPPINGS) == set(nodes.NODE_DISPLAY_NAME_MAPPINGS)
    assert len(nodes.NODE_CLASS_MAPPINGS) == 16
    errors = [e for name, cls in nodes.NODE_CLASS_MAPPINGS.items() for e in input_spec_errors(name, cls)]
    assert errors == []
    assert {cls.CATEGORY for cls in nodes.NODE_CLASS_MAPPINGS.values()} == {"FantasyTalking"}


def test_the_checker_catches_bad_declarations():
    class Bad:
        RETURN_TYPES, RETURN_NAMES, FUNCTION, CATEGORY, DESCRIPTION = ("X",), ("x",), "run", "c", "d"

        @classmethod
        def INPUT_TYPES(cls):
            return {"required": {"a": ("INT", {"default": 5, "min": 0, "max": 3, "tooltip": "t"}),
                                 "b": (["x", "y"], {"default": "z", "tooltip": "t"}), "c": ("FLOAT", {"default": 1})}}

        def run(self):
            pass

    errors = input_spec_errors("Bad", Bad)
    assert any("a: default 5 outside [0, 3]" in e for e in errors)
    assert any("b: default 'z' not among" in e for e in errors)
    assert any("c: no tooltip" in e for e in errors)
    assert any("OUTPUT_TOOLTIPS has 0 entries" in e for e in errors)


def test_loaders_list_and_load_local_files(models_dir):
    names = nodes.FantasyTalkingModelLoader.INPUT_TYPES()["required"]["model_name"][0]
    assert names == ["ft_audio_only.safetensors", "ft_tiny.safetensors"]
    (ft,) = nodes.FantasyTalkingModelLoader().load("ft_tiny.safetensors", "fp32")
    assert ft.audio is not None and ft.identity is not None and ft.motion is not None
    assert nodes.FantasyTalkingWav2VecLoader.INPUT_TYPES()["required"]["model_name"][0] == ["wav2vec2-tiny"]
    with pytest.raises(FileNotFoundError, match="'missing.ckpt' not found in .*model_patches"):
        nodes.FantasyTalkingModelLoader().load("missing.ckpt")


def _audio(seconds: float = 2.0, rate: int = 22050) -> dict:
    t = torch.arange(int(seconds * rate)) / rate
    return {"waveform": (0.3 * torch.sin(2 * torch.pi * 220 * t)).reshape(1, 1, -1).repeat(1, 2, 1), "sample_rate": rate}


def test_audio_encode_follows_the_audio_and_trims_the_soundtrack(caplog):
    (w2v,) = nodes.FantasyTalkingWav2VecLoader().load("wav2vec2-tiny", "cpu")
    feats, frames, trimmed = nodes.FantasyTalkingAudioEncode().encode(_audio(2.0), 23.0, 0, 81, wav2vec=w2v)
    assert frames == int(23 * 2.0 // 4) * 4 + 5 == 49 and feats.num_frames == 49
    from fantasytalking_core.encoders import wav2vec_num_tokens

    # 49 frames (2.13 s) cover the 2.0 s audio, so all of it is encoded (the official rule rounds up)
    assert feats.features.shape == (1, wav2vec_num_tokens(2 * 16000), 768)
    assert trimmed["sample_rate"] == 22050 and trimmed["waveform"].shape == (1, 2, round(49 / 23 * 22050))
    assert feats.cut == ""
    with caplog.at_level(logging.WARNING, logger="FantasyTalking"):
        capped_feats, capped, _ = nodes.FantasyTalkingAudioEncode().encode(_audio(5.0), 23.0, 0, 81, wav2vec=w2v)
    assert capped == 81  # 3.52 s of the 5 s: said, never a silently shorter video
    want = ("max_frames 81 cut the video to 3.52 s: the last 1.48 s of the 5.00 s recording are left out (max_frames 0 "
            "and FantasyTalking Long Video Sampler, template 03_long_audio, make the whole recording)")
    assert capped_feats.cut == want and caplog.messages == [f"FantasyTalking Audio Encode: {want}"]
    fixed_feats, fixed, cut = nodes.FantasyTalkingAudioEncode().encode(_audio(5.0), 23.0, 21, 81, wav2vec=w2v)
    assert fixed == 21 and cut["waveform"].shape[-1] == round(21 / 23 * 22050)
    assert fixed_feats.features.shape == (1, wav2vec_num_tokens(int(21 / 23 * 16000)), 768)  # cut to 21 frames
    with pytest.raises(ValueError, match="frames = 20 is not 4k\\+1.*use 17 or 21"):
        nodes.FantasyTalkingAudioEncode().encode(_audio(), 23.0, 20, 81, wav2vec=w2v)
    with pytest.raises(ValueError, match="needs an encoder: connect 'wav2vec'"):
        nodes.FantasyTalkingAudioEncode().encode(_audio(), 23.0, 0, 81)


def test_audio_encode_reads_core_audio_encoder_output():
    feats = torch.randn(1, 200, 768)  # 4 s at 50 per second
    with pytest.warns(UserWarning, match="without normalising"):
        out, frames, trimmed = nodes.FantasyTalkingAudioEncode().encode(
            _audio(4.0), 23.0, 0, 81, audio_encoder_output={"encoded_audio": feats})
    assert frames == 81 and out.features.shape[1] == int(81 / 23 * 50)
    assert torch.equal(out.features, feats[:, : int(81 / 23 * 50)])


def _forward(model, x, t, ctx, clip, y, options):
    return _plain_host.forward(model, x, t, ctx, clip, y, options)


def _setup(frames: int = 9):
    (ft,) = nodes.FantasyTalkingModelLoader().load("ft_tiny.safetensors", "fp32")
    dit = tiny_wan()
    g = torch.Generator().manual_seed(1)
    audio = AudioFeatures(torch.randn(1, int(frames / 23 * 50), 768, generator=g), frames, 23.0, 1.0, "test")
    inp = wan_inputs(dit.cfg, batch=3, frames=(frames - 1) // 4 + 1)
    return ft, dit, audio, inp


def test_apply_through_object_patches_equals_adapters_attached_directly():
    ft, dit, audio, inp = _setup()
    face = FaceReference(torch.randn(512).numpy(), None, (0, 0, 1, 1))
    motion = Motion(from_sliders(0.8, 0.3))
    m, _ = nodes.FantasyTalkingApply().apply(PlainModelPatcher(dit), ft, audio, 0.7, "frame",
                                              face=face, id_scale=0.4, motion=motion)
    uuids = ["a", "b", "c"]
    with torch.no_grad():
        got = _forward(m, inp["x"], inp["t"], inp["context"], inp["clip_fea"], inp["y"],
                       {"uuids": uuids, _host.AUDIO_OFF: {"b"}})
        plain = dit(inp["x"], inp["t"], inp["context"], inp["clip_fea"], inp["y"])
        cond = ft.audio.condition(audio.features, audio.num_frames)
        id_tokens = ft.identity.condition(torch.as_tensor(face.embedding))
        with attach_adapters(dit, audio=ft.audio, identity=ft.identity, motion=ft.motion) as att:
            with att.conditioned(audio=cond, audio_scale=torch.tensor([0.7, 0.0, 0.7]), identity=id_tokens,
                                 id_scale=0.4, motion=motion.tensor()):
                direct = dit(inp["x"], inp["t"], inp["context"], inp["clip_fea"], inp["y"])
            with att.conditioned(audio=cond, audio_scale=0.7):
                audio_only = dit(inp["x"][:1], inp["t"][:1], inp["context"][:1], inp["clip_fea"][:1], inp["y"][:1])
    assert torch.allclose(got, direct, atol=1e-6)
    assert not torch.allclose(got, plain, atol=1e-3)  # the adapters really act
    assert not torch.allclose(got[:1], audio_only, atol=1e-3)  # identity and motion act too
    # the input model is untouched: no patches left behind, same output as before
    assert not any(hasattr(mod, "_ft_hook") for mod in dit.modules())


def test_audio_rows_follow_the_cond_uuids():
    ft, dit, audio, inp = _setup()
    m, _ = nodes.FantasyTalkingApply().apply(PlainModelPatcher(dit), ft, audio, 1.0, "frame")
    with torch.no_grad():
        got = _forward(m, inp["x"], inp["t"], inp["context"], inp["clip_fea"], inp["y"],
                       {"uuids": ["on", "off", "on"], _host.AUDIO_OFF: {"off"}})
        plain = dit(inp["x"], inp["t"], inp["context"], inp["clip_fea"], inp["y"])
        all_on = _forward(m, inp["x"], inp["t"], inp["context"], inp["clip_fea"], inp["y"], {})
    assert torch.equal(got[1], plain[1])  # the audio-off row is plain Wan
    assert torch.allclose(got[[0, 2]], all_on[[0, 2]], atol=1e-6) and not torch.allclose(got[0], plain[0], atol=1e-3)
    assert audio_row_scales(6, {"uuids": [1, 2, 3], _host.AUDIO_OFF: {2}}, 0.5).tolist() == [0.5, 0.5, 0, 0, 0.5, 0.5]
    assert audio_row_scales(6, {"uuids": [1, 2]}, 0.5) == 0.5


@pytest.mark.parametrize("retain_first_frame", [False, True])
def test_each_context_window_gets_the_audio_of_its_own_latent_frames(retain_first_frame):
    """Windows as ComfyUI 0.33's Wan context windows make them (33/8 -> 9 latent frames, overlap 2,
    the frame before each later window put in front as a causal anchor; retain_first_frame keeps
    the start image in slot 0 of the conditioning): the DiT call of each window equals the adapters
    attached directly with the audio windows of exactly the latent frames the window holds."""
    ft, dit, audio, inp = _setup(frames=61)  # 16 latent frames
    cond = ft.audio.condition(audio.features, audio.num_frames)
    m, _ = nodes.FantasyTalkingApply().apply(PlainModelPatcher(dit), ft, audio, 1.0, "frame")
    windows = [CoreLikeWindow(list(range(0, 9))), CoreLikeWindow(list(range(7, 16)), anchor=6)]
    held = [list(range(0, 9)), [6] + list(range(7, 16))]  # latent frames in each window's DiT call
    retain = [0] if retain_first_frame else []
    for window, frames in zip(windows, held):
        x = window.get_tensor(inp["x"][:1])
        y = window.get_tensor(inp["y"][:1], retain_index_list=retain)
        if retain and window.index_list[0]:  # a later window: its conditioning changed, its audio must not
            assert not torch.equal(y, window.get_tensor(inp["y"][:1]))
        part = window_audio(cond, {"context_window": window}, len(frames))
        assert torch.equal(part.tokens, cond.tokens[:, frames]) and torch.equal(part.k_lens, cond.k_lens[frames])
        args = (x, inp["t"][:1], inp["context"][:1], inp["clip_fea"][:1], y)
        with torch.no_grad():
            got = _forward(m, *args, {"context_window": window})
            with attach_adapters(dit, audio=ft.audio) as att, att.conditioned(
                    audio=AudioCondition(cond.tokens[:, frames], cond.k_lens[frames]), audio_scale=1.0):
                want = dit(*args)
            plain = dit(*args)
        assert torch.allclose(got, want, atol=1e-6) and not torch.allclose(got, plain, atol=1e-3)


def test_frame_count_errors_name_the_real_cause():
    ft, dit, audio, inp = _setup(frames=17)  # 5 latent frames
    cond = ft.audio.condition(audio.features, audio.num_frames)
    with pytest.raises(ValueError, match=r"latent has 3 latent frames \(9 video frames\) but the audio was encoded "
                                         r"for 17 video frames .*connect FantasyTalking Audio Encode's num_frames.*"
                                         r"use ComfyUI's own context-window nodes"):
        window_audio(cond, {}, 3)
    with pytest.raises(ValueError, match="a context window reaches latent frame 6 but the audio covers 5"):
        window_audio(cond, {"context_window": CoreLikeWindow([4, 5, 6])}, 3)
    with pytest.raises(RuntimeError, match="gave the model 4 latent frames for the context window over frames 1-3, "
                                           "but the window object selects 3"):
        window_audio(cond, {"context_window": CoreLikeWindow([1, 2, 3])}, 4)  # a host that added a frame unannounced
    m, _ = nodes.FantasyTalkingApply().apply(PlainModelPatcher(dit), ft, audio, 1.0, "frame")
    with pytest.raises(ValueError, match="latent has 3 latent frames"), torch.no_grad():
        _forward(m, inp["x"][:1, :, :3], inp["t"][:1], inp["context"][:1], inp["clip_fea"][:1], inp["y"][:1, :, :3], {})


def test_a_host_whose_context_windows_cannot_do_wan_i2v_gets_the_version_needed(monkeypatch):
    monkeypatch.setattr(_host, "host_name", lambda: "ComfyUI 0.3.64")
    x, c_concat = torch.zeros(1, 16, 9, 2, 2), torch.zeros(1, 20, 16, 2, 2)
    executor = lambda *args, **kwargs: "ran"  # noqa: E731
    options = {"context_window": CoreLikeWindow(list(range(9)))}
    with pytest.raises(RuntimeError, match=r"ComfyUI 0.3.64 cuts the video into context windows \(9 latent frames\) "
                                           r"but not Wan I2V's start image \(16\).*needs a ComfyUI released after "
                                           r"November 2025"):
        check_context_window(executor, x, torch.zeros(1), c_concat, None, None, options)
    assert check_context_window(executor, x, torch.zeros(1), c_concat[:, :, :9], None, None, options) == "ran"
    assert check_context_window(executor, x, torch.zeros(1), c_concat, transformer_options={}) == "ran"


def test_apply_refuses_what_it_cannot_do():
    ft, dit, audio, _ = _setup()
    base = PlainModelPatcher(dit)
    with pytest.raises(ValueError, match="no ArcFace embedding: choose an insightface pack"):
        nodes.FantasyTalkingApply().apply(base, ft, audio, face=FaceReference(None, None, (0, 0, 1, 1)))
    m, _ = nodes.FantasyTalkingApply().apply(base, ft, audio)
    with pytest.raises(ValueError, match="already has FantasyTalking attached"):
        nodes.FantasyTalkingApply().apply(m, ft, audio)
    for cfg_audio in (4.5, 1.0):  # audio guidance without audio would be a silent no-op
        with pytest.raises(ValueError, match="guidance needs a MODEL from FantasyTalking Apply"):
            nodes.FantasyTalkingGuider().get_guider(base, [], [], 5.0, cfg_audio)


def _graph(cfg_audio: float = 4.5, shortcut: bool = False, sampler_name: str = "euler") -> dict:
    return {
        "wan": {"class_type": "TestTinyWan", "inputs": {"seed": 0}},
        "ft": {"class_type": "FantasyTalkingModelLoader", "inputs": {"model_name": "ft_tiny.safetensors", "precision": "fp32"}},
        "w2v": {"class_type": "FantasyTalkingWav2VecLoader", "inputs": {"model_name": "wav2vec2-tiny", "device": "cpu"}},
        "audio": {"class_type": "TestAudio", "inputs": {"path": str(SPEECH)}},
        "enc": {"class_type": "FantasyTalkingAudioEncode",
                "inputs": {"audio": ["audio", 0], "wav2vec": ["w2v", 0], "fps": 23.0, "frames": 9, "max_frames": 81}},
        "img": {"class_type": "TestImage", "inputs": {"size": 64}},
        "i2v": {"class_type": "TestWanImageToVideo", "inputs": {"image": ["img", 0], "length": 9, "seed": 0}},
        "motion": {"class_type": "FantasyTalkingMotionIntensity", "inputs": {"omega_l": 0.7, "omega_b": 0.4}},
        "apply": {"class_type": "FantasyTalkingApply",
                  "inputs": {"model": ["wan", 0], "fantasytalking_model": ["ft", 0], "audio_features": ["enc", 0],
                             "audio_scale": 1.0, "audio_mode": "frame", "motion": ["motion", 0]}},
        "sample": {"class_type": "FantasyTalkingSampler",
                   "inputs": {"model": ["apply", 0], "positive": ["i2v", 0], "negative": ["i2v", 1],
                              "latent_image": ["i2v", 2], "seed": 1111, "steps": 4, "cfg_text": 5.0,
                              "cfg_audio": cfg_audio, "audio_guidance_start": 0.0, "audio_guidance_end": 1.0,
                              "sampler_name": sampler_name, "scheduler": "simple", "shift": 5.0, "denoise": 1.0,
                              "two_pass_shortcut": shortcut}},
        "decode": {"class_type": "TestVAEDecode", "inputs": {"samples": ["sample", 0]}},
    }


@pytest.mark.parametrize("cfg_audio, shortcut", [(4.5, False), (1.0, True)])
def test_graph_runs_and_equals_the_guidance_formula_computed_directly(cfg_audio, shortcut):
    out = run_graph(_graph(cfg_audio, shortcut))
    video = out["decode"][0]
    assert video.shape == (9, 64, 64, 3) and torch.isfinite(video).all()
    latent = out["sample"][0]["samples"]
    assert latent.shape == (1, 16, 3, 8, 8)

    # the same sampling written out with the core's pieces: passes batched, formula, Euler
    ft, enc, (pos, neg, lat) = out["ft"][0], out["enc"][0], out["i2v"]
    dit = out["wan"][0].model.diffusion_model
    cond = ft.audio.condition(enc.features, enc.num_frames)
    y = torch.cat([(1 - pos[0][1]["concat_mask"]).expand(-1, 4, -1, -1, -1), pos[0][1]["concat_latent_image"]], 1)
    clip = pos[0][1]["clip_vision_output"].penultimate_hidden_states
    ctx = {"pos": torch.nn.functional.pad(pos[0][0], (0, 0, 0, 2)), "neg": neg[0][0]}
    passes = {"pos_audio": ("pos", 1.0), "pos_noaudio": ("pos", 0.0), "neg_noaudio": ("neg", 0.0), "neg_audio": ("neg", 1.0)}
    conds = {k: {"context": ctx[c], "scale": torch.tensor([s])} for k, (c, s) in passes.items()}
    sigmas = flow_sigmas(4, 5.0)
    guidance = Guidance(5.0, cfg_audio, two_pass_shortcut=shortcut)
    with attach_adapters(dit, audio=ft.audio, motion=ft.motion) as att, torch.no_grad():
        def model_fn(x, sigma, context, scale):
            with att.conditioned(audio=cond, audio_scale=scale, motion=out["motion"][0].tensor()):
                n = x.shape[0]
                return dit(x, sigma * 1000, context, clip.expand(n, -1, -1), y.expand(n, -1, -1, -1, -1))

        def fn(x, sigma):
            i = int((sigmas[1:-1] >= float(sigma) - 1e-6).sum())
            p = guidance.passes(i, 4)
            return guidance.combine(run_passes_batched(model_fn, x, sigma, p, conds), i, 4)

        want = sample_euler(fn, initial_noise(lat["samples"].shape, 1111), sigmas)
    assert torch.allclose(latent, want, atol=1e-4), (latent - want).abs().max()


def test_guider_node_gives_the_sampler_node_result():
    out = run_graph(_graph())
    latent = out["sample"][0]["samples"]
    apply_model, (pos, neg, lat) = out["apply"][0], out["i2v"]
    shifted = nodes.sampling.with_shift(apply_model, 5.0)
    (guider,) = nodes.FantasyTalkingGuider().get_guider(shifted, pos, neg, 5.0, 4.5, 0.0, 1.0)
    again = nodes.sampling.sample(shifted, guider, lat, 1111, 4, "euler", "simple")["samples"]
    assert torch.equal(latent, again)
    no_audio_cfg = run_graph(_graph(cfg_audio=1.0))["sample"][0]["samples"]
    assert not torch.allclose(latent, no_audio_cfg, atol=1e-4)


def test_sampling_defaults_follow_the_official_code_and_the_plain_host_refuses_what_it_cannot_run():
    official = Guidance()
    for cls in (nodes.FantasyTalkingGuider, nodes.FantasyTalkingSampler):
        spec = cls.INPUT_TYPES()
        inputs = {**spec["required"], **spec.get("optional", {})}
        assert inputs["cfg_text"][1]["default"] == official.cfg_text == 5.0
        assert inputs["cfg_audio"][1]["default"] == official.cfg_audio == 5.0
        assert inputs["two_pass_shortcut"][1]["default"] is official.two_pass_shortcut is False
        assert "Not the official formula" in inputs["two_pass_shortcut"][1]["tooltip"]
        assert "1 included, keeps the official three passes" in inputs["cfg_audio"][1]["tooltip"]
        assert list(spec["optional"]) == ["two_pass_shortcut"]  # after the widgets saved workflows store
    sampler = nodes.FantasyTalkingSampler.INPUT_TYPES()["required"]["sampler_name"]
    assert sampler[1]["default"] == "euler" and "uni_pc" in sampler[0] and "Wan's own default" in sampler[1]["tooltip"]
    guider = _plain_host.PlainGuider(PlainModelPatcher(tiny_wan()), official)
    with pytest.raises(ValueError, match=r"plain test host runs the samplers \['euler', 'uni_pc'\], not 'dpmpp_2m'"):
        guider.sample(torch.zeros(1, 16, 1, 2, 2), torch.zeros(1, 16, 1, 2, 2), "dpmpp_2m", flow_sigmas(2))


def test_face_motion_and_lip_mask_nodes_on_a_real_portrait():
    from _media_helpers import portrait

    img = torch.from_numpy(portrait(256)).float().div(255)[None]
    face, crop = nodes.FantasyTalkingFaceEmbed().embed(img, "none (crop only)")
    assert face.embedding is None and "identity embedding skipped" in face.note
    assert crop.ndim == 4 and crop.shape[0] == 1 and crop.shape[-1] == 3 and 0 <= crop.min() and crop.max() <= 1
    x0, y0, x1, y1 = face.box
    assert 0 <= x0 < x1 <= 256 and 0 <= y0 < y1 <= 256
    motion, wl, wb = nodes.FantasyTalkingMotionIntensity().intensity(0.25, 0.75)
    assert (wl, wb) == (0.25, 0.75) and motion.tensor().tolist() == [[0.25, 0.75]]
    with pytest.raises(ValueError, match="reference_video has 1 frame"):
        nodes.FantasyTalkingMotionIntensity().intensity(0.5, 0.5, reference_video=img)
    frames = img.repeat(3, 1, 1, 1)
    mask, preview = nodes.FantasyTalkingLipMask().mask(frames, 2, "interpolate")
    assert mask.shape == (3, 256, 256) and preview.shape == (3, 256, 256, 3)
    area = mask.mean(dim=(1, 2))
    assert (area > 0.001).all() and (area < 0.05).all()
    ys, xs = torch.nonzero(mask[0], as_tuple=True)
    assert x0 <= xs.float().mean() <= x1 and y0 <= ys.float().mean() <= y1
    assert torch.allclose(preview[mask == 0], frames[mask == 0])


def test_one_models_root_rule_for_the_core_and_the_nodes_outside_comfyui(tmp_path, monkeypatch):
    from fantasytalking_core.paths import MODELS_ENV, default_models_root

    monkeypatch.delenv(MODELS_ENV, raising=False)
    installed = tmp_path / "ComfyUI" / "custom_nodes" / "ComfyUI-FantasyTalking"
    assert default_models_root(installed) == tmp_path / "ComfyUI" / "models"  # a pack inside ComfyUI
    assert default_models_root(tmp_path / "src" / "ComfyUI-FantasyTalking") == Path("models")
    assert _host.folder_paths("model_patches") == [default_models_root() / "model_patches"]
    monkeypatch.setenv(MODELS_ENV, str(tmp_path / "m"))
    assert default_models_root(installed) == tmp_path / "m"  # the variable wins
    assert _host.folder_paths("audio_encoders") == [tmp_path / "m" / "audio_encoders"]
