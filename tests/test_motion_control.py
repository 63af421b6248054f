"""The motion sliders' training-free controls (fantasytalking_core/motion_control.py): the mapping, the
I2V conditioning amplitude against the formula computed by hand, neutral 0.5 untouched, and the
control reaching every path: the pipeline's segments, the ComfyUI one-pass graph, the Long Video
Sampler's segments (held frames exact), core's context windows, a measured reference video."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
import torch

import nodes
from nodes.contracts import FaceReference, MotionIntensity
from fantasytalking_core.motion import from_sliders
from fantasytalking_core.motion_control import (AMPLITUDE_RANGE, AUDIO_GUIDANCE_RANGE, AUDIO_SCALE_RANGE,
                                                TrainingFreeControls, amplify_concat, amplify_i2v, amplify_motion,
                                                known_frames)
from fantasytalking_core.pipeline import FantasyTalkingPipeline, Generation, GenerationConfig, tiny_components
from fantasytalking_core.sampling import Guidance
from fantasytalking_core.segments import i2v_mask, plan_segments
from nodes import _host
from nodes.apply import MotionAmplitude, adapter_run

from _graph import run_graph
from _long_helpers import EchoDiT, ExactVAE
from _plain_host import CoreLikeWindow, PlainModelPatcher
from test_long_audio import CLASSES, long_graph, portrait
from test_nodes import _graph, _models_env, _setup, models_dir  # noqa: F401 (tiny model files, the plain host)


def by_hand(latents: torch.Tensor, a: float, known: int) -> torch.Tensor:
    """The formula frame by frame, row by row, in float64 numpy: z0 the last known frame, d = z_t - z0,
    z_t' = clip(z0 + a * (d - mean(d)) + mean(d), -6, 6), mean over channels and pixels."""
    z = latents.double().numpy()
    out = z.copy()
    for b in range(z.shape[0]):
        z0 = z[b, :, known - 1]
        for t in range(known, z.shape[2]):
            d = z[b, :, t] - z0
            out[b, :, t] = np.clip(z0 + a * (d - d.mean()) + d.mean(), -6, 6)
    return torch.from_numpy(out).float()


# ----------------------------------------------------------------------------------- the pieces


@pytest.mark.parametrize("a, known", [(1.25, 1), (0.75, 1), (1.2, 2), (2.0, 3)])
def test_amplitude_equals_the_formula_by_hand_and_keeps_the_known_frames(a, known):
    z = torch.randn(2, 16, 5, 3, 4, generator=torch.Generator().manual_seed(0)) * 2.5  # some values clamp at +-6
    out = amplify_motion(z, a, known)
    assert torch.equal(out[:, :, :known], z[:, :, :known])  # exactly, not up to rounding
    torch.testing.assert_close(out, by_hand(z, a, known), atol=2e-6, rtol=0)
    assert not torch.allclose(out, z)
    if a == 2.0:
        assert out[:, :, known:].abs().max() == 6.0  # the clamp acted (the known frames are never clamped)


def test_neutral_returns_the_tensors_themselves():
    z, y = torch.randn(1, 16, 4, 2, 2), torch.randn(1, 20, 4, 2, 2)
    assert amplify_motion(z, 1.0) is z and amplify_i2v(y, 1.0) is y and amplify_concat(z, None, 1.0) is z
    assert amplify_motion(z, 1.3, known=4) is z  # every frame known: nothing to move
    c = TrainingFreeControls()
    g = Guidance(5.0, 4.5)
    assert c.amplitude == 1.0 and c.guidance(g) is g and c.audio_scale(0.7) == 0.7 and c.cfg_audio(4.5) == 4.5
    assert TrainingFreeControls(0.5, 0.9).guidance(g) is g and TrainingFreeControls(0.9, 0.5).amplitude == 1.0


def test_the_mapping_is_monotonic_with_the_documented_ends():
    grid = np.linspace(0, 1, 101)
    for prop, span in (("audio_scale_gain", AUDIO_SCALE_RANGE), ("audio_guidance_gain", AUDIO_GUIDANCE_RANGE),
                       ("amplitude", AMPLITUDE_RANGE)):
        kw = "omega_b" if prop == "amplitude" else "omega_l"
        values = [getattr(TrainingFreeControls(**{kw: float(w)}), prop) for w in grid]
        assert all(b > a for a, b in zip(values, values[1:])), prop  # strictly increasing
        assert values[0] == pytest.approx(span[0]) and values[-1] == pytest.approx(span[1]) and values[50] == 1.0
    assert AUDIO_SCALE_RANGE == (0.8, 1.2) and AUDIO_GUIDANCE_RANGE == (0.75, 1.25) and AMPLITUDE_RANGE == (0.75, 1.25)
    c = TrainingFreeControls(1.0, 0.0)
    assert c.audio_scale(1.0) == pytest.approx(1.2) and c.cfg_audio(5.0) == pytest.approx(6.0)
    assert c.cfg_audio(1.0) == 1.0 and c.amplitude == pytest.approx(0.75)  # guidance off stays off
    assert TrainingFreeControls(0.0).cfg_audio(5.0) == pytest.approx(4.0)
    with pytest.raises(ValueError, match=r"omega_b \(body motion\) must be a number in \[0, 1\]"):
        TrainingFreeControls(0.5, 1.5)
    with pytest.raises(ValueError, match=r"omega_l \(facial motion\) must be a number in \[0, 1\] \(0.5 is neutral\), got nan"):
        GenerationConfig(omega_l=float("nan"))


def test_known_frames_follow_the_i2v_mask_in_either_convention():
    for held, latent_known in ((1, 1), (5, 2), (9, 3)):
        mask = i2v_mask(21, 2, 3, known=held)  # [4, T_lat, h, w], 1 = known (the pipeline's y)
        assert known_frames(mask) == latent_known
        assert known_frames((1 - mask)[None, :1]) == 0  # core's concat_mask is 0 on known frames
    z = torch.randn(1, 16, 6, 2, 2)
    concat_mask = torch.ones(1, 1, 6, 2, 2)
    concat_mask[:, :, :2] = 0  # core's convention: 0 = known
    out = amplify_concat(z, concat_mask, 1.2)
    assert torch.equal(out[:, :, :2], z[:, :, :2])
    torch.testing.assert_close(out, by_hand(z, 1.2, 2), atol=2e-6, rtol=0)


def test_comfyui_latents_are_amplified_in_the_models_latent_space():
    """core's concat_latent_image holds raw VAE latents: the formula acts on process_in of them (Wan's
    normalisation) and the result goes back through process_out; the known frame comes back exactly."""
    mean, std = torch.linspace(-1, 1, 16).view(1, 16, 1, 1, 1), torch.linspace(0.5, 3, 16).view(1, 16, 1, 1, 1)
    raw = torch.randn(1, 16, 4, 3, 3, generator=torch.Generator().manual_seed(2)) * std + mean
    out = amplify_concat(raw, None, 1.25, lambda x: (x - mean) / std, lambda x: x * std + mean)
    assert torch.equal(out[:, :, :1], raw[:, :, :1])
    torch.testing.assert_close(out, by_hand((raw - mean) / std, 1.25, 1) * std + mean, atol=1e-5, rtol=0)
    assert not torch.allclose(out, by_hand(raw, 1.25, 1), atol=1e-3)  # not the same as in raw space


# ----------------------------------------------------------------------------------- command line


@pytest.fixture(scope="module")
def echo():
    c = tiny_components(seed=0)
    c.dit, c.vae = EchoDiT(), ExactVAE()
    return c


def _first_calls(calls: list[dict]) -> list[torch.Tensor]:
    return [c["y"][0] for c in calls if c["sigma"] == 1.0]


def test_pipeline_segments_get_the_amplitude_and_keep_their_held_frames(echo, speech_path):
    """Two runs of the pipeline (5 segments holding 5 frames): omega_b 0.9 changes each segment's
    conditioning by the formula, after exactly its held frames; EchoDiT's video does not depend on the
    unknown frames of y, so the held frames (and the video) are the same in both runs."""
    runs = {}
    for omega_b in (0.5, 0.9):
        cfg = GenerationConfig(size=32, steps=1, segment_frames=41, motion_frames=5, color_match=False, omega_b=omega_b)
        echo.dit.calls.clear()
        video = torch.cat(list(FantasyTalkingPipeline(echo).frames(Generation(portrait(), speech_path, cfg),
                                                                   progress=False)))
        runs[omega_b] = (video, _first_calls(echo.dit.calls))
    plans = plan_segments(161, 41, 5)
    (plain_video, plain), (video, moved) = runs[0.5], runs[0.9]
    assert len(moved) == len(plans) == 5 and torch.equal(video, plain_video)
    for plan, p, m in zip(plans, plain, moved):
        held = 1 if plan.index == 0 else 2  # latent frames of 1 / 5 held frames
        assert known_frames(p[:4]) == held and torch.equal(m[:4], p[:4])
        assert torch.equal(m[4:, :held], p[4:, :held])
        torch.testing.assert_close(m[4:], by_hand(p[None, 4:], 0.75 + 0.5 * 0.9, held)[0], atol=2e-6, rtol=0)
        assert not torch.allclose(m[4:, held:], p[4:, held:])


def test_pipeline_omega_l_sets_the_audio_strength(echo, speech_path, monkeypatch):
    import fantasytalking_core.pipeline as pl

    guidances, scales = [], []
    real_guided, real_passes = pl.guided_model, pl.run_passes_batched
    monkeypatch.setattr(pl, "guided_model", lambda fn, g, sigmas: guidances.append(g) or real_guided(fn, g, sigmas))
    monkeypatch.setattr(pl, "run_passes_batched", lambda fn, x, s, passes, conds, **kw: scales.append(
        float(conds["pos_audio"]["audio_scale"])) or real_passes(fn, x, s, passes, conds, **kw))
    cfg = GenerationConfig(size=32, steps=1, omega_l=1.0, num_frames=5)
    list(FantasyTalkingPipeline(echo).frames(Generation(portrait(), speech_path, cfg), progress=False))
    assert guidances[-1].cfg_audio == pytest.approx(6.0)  # 1 + (5 - 1) * 1.25
    assert scales and all(s == pytest.approx(1.2) for s in scales)  # audio_scale 1 x 1.2 on the audio rows


# ----------------------------------------------------------------------------------- ComfyUI


def _audio_only_graph(omega_l: float | None, omega_b: float | None, **kw) -> dict:
    g = _graph(**kw)
    g["ft"]["inputs"]["model_name"] = "ft_audio_only.safetensors"
    g["sample"]["inputs"]["steps"] = 2
    if omega_l is None:
        del g["motion"], g["apply"]["inputs"]["motion"]
    else:
        g["motion"]["inputs"].update(omega_l=omega_l, omega_b=omega_b)
    return g


def _record_y(dit) -> list[torch.Tensor]:
    seen: list[torch.Tensor] = []
    dit.register_forward_pre_hook(lambda module, args: seen.append(args[4].clone()))
    return seen


def test_neutral_sliders_on_audio_only_weights_give_the_official_result_bit_for_bit():
    plain = run_graph(_audio_only_graph(None, None))
    neutral = run_graph(_audio_only_graph(0.5, 0.5))
    assert torch.equal(neutral["sample"][0]["samples"], plain["sample"][0]["samples"])
    model, status = neutral["apply"]
    assert not model.get_wrappers(_host.OUTER_SAMPLE, _host.WRAPPER_KEY) and adapter_run(model).audio_scale == 1.0
    assert "omega_l 0.50 neutral" in status and "I2V conditioning untouched" in status
    assert plain["apply"][1].endswith("motion: not connected (official result)")


def test_one_pass_graph_gets_both_controls(monkeypatch):
    """Motion Intensity -> Apply with audio-only weights (no error): the DiT sees the I2V latents
    amplified by the formula, audio_scale and the sampler's audio guidance scaled by omega_l."""
    guidances = []
    real = nodes.sampling.make_guider
    monkeypatch.setattr(nodes.sampling, "make_guider", lambda m, p, n, g: guidances.append(g) or real(m, p, n, g))
    out = run_graph(_audio_only_graph(0.9, 0.8))
    model, status = out["apply"]
    run = adapter_run(model)
    assert run.audio_scale == pytest.approx(0.8 + 0.4 * 0.9)
    assert guidances[-1].cfg_audio == pytest.approx(1 + (4.5 - 1) * (0.75 + 0.5 * 0.9))
    assert "training-free controls (from the sliders)" in status and "motion amplitude 1.150" in status
    (wrapper,) = model.get_wrappers(_host.OUTER_SAMPLE, _host.WRAPPER_KEY)
    assert isinstance(wrapper, MotionAmplitude) and wrapper.amplitude == pytest.approx(1.15)
    # the DiT's y in a second sampling run of the same model and conds
    pos, neg, lat = out["i2v"]
    dit = model.model.diffusion_model
    seen = _record_y(dit)
    shifted = nodes.sampling.with_shift(model, 5.0)
    guider = nodes.sampling._guider(shifted, pos, neg, Guidance(5.0, 4.5))
    nodes.sampling.sample(shifted, guider, lat, 1111, 1, "euler", "simple")
    image, mask = pos[0][1]["concat_latent_image"], pos[0][1]["concat_mask"]
    want = by_hand(image, 1.15, 1)
    assert seen and all(torch.allclose(y[:, 4:], want.expand(y.shape[0], -1, -1, -1, -1), atol=2e-6) for y in seen)
    assert all(torch.equal(y[:, :4], (1 - mask).expand(y.shape[0], 4, -1, -1, -1)) for y in seen)
    assert torch.equal(pos[0][1]["concat_latent_image"], image)  # the user's conditioning is not changed
    assert not torch.allclose(out["sample"][0]["samples"],
                              run_graph(_audio_only_graph(None, None))["sample"][0]["samples"], atol=1e-5)


def test_context_windows_get_the_amplitude_of_the_whole_video():
    """Core's context windows cut the conditioning the OUTER_SAMPLE wrapper made for the whole video:
    each window's y is its slice of the amplified whole (frame 0 the reference), not an amplification
    of its own slice."""
    ft, dit, audio, _ = _setup(frames=17)  # 5 latent frames
    (audio_only,) = nodes.FantasyTalkingModelLoader().load("ft_audio_only.safetensors", "fp32")
    base = PlainModelPatcher(dit)
    windows = [CoreLikeWindow([0, 1, 2]), CoreLikeWindow([2, 3, 4])]
    base.model_options["test_context_windows"] = windows
    model, _ = nodes.FantasyTalkingApply().apply(base, audio_only, audio, 1.0, "frame",
                                                 motion=MotionIntensity(from_sliders(0.5, 1.0)))
    g = torch.Generator().manual_seed(3)
    mask = torch.ones(1, 1, 5, 4, 6)
    mask[:, :, 0] = 0
    cond = {"concat_latent_image": torch.randn(1, 16, 5, 4, 6, generator=g), "concat_mask": mask,
            "clip_vision_output": SimpleNamespace(penultimate_hidden_states=torch.randn(1, 257, dit.cfg.clip_dim))}
    pos = [[torch.randn(1, 5, dit.cfg.text_dim, generator=g), cond]]
    neg = [[torch.randn(1, 5, dit.cfg.text_dim, generator=g), cond]]
    seen = _record_y(dit)
    guider = nodes.sampling._guider(model, pos, neg, Guidance())
    nodes.sampling.sample(model, guider, {"samples": torch.zeros(1, 16, 5, 4, 6)}, 1, 1, "euler", "simple")
    whole = torch.cat([(1 - mask).expand(-1, 4, -1, -1, -1), by_hand(cond["concat_latent_image"], 1.25, 1)], 1)
    assert len(seen) == 2
    for w, y in zip(windows, seen):
        torch.testing.assert_close(y, w.get_tensor(whole).expand(y.shape[0], -1, -1, -1, -1), atol=2e-6, rtol=0)
    own = by_hand(windows[1].get_tensor(cond["concat_latent_image"]), 1.25, 1)
    assert not torch.allclose(seen[1][:1, 4:], own, atol=1e-3)


def test_long_video_segments_get_the_amplitude_and_keep_their_held_frames(speech_path):
    g = long_graph(speech_path)
    plain = run_graph(g, CLASSES)
    g["motion"] = {"class_type": "FantasyTalkingMotionIntensity", "inputs": {"omega_l": 0.5, "omega_b": 0.9}}
    g["long"]["inputs"]["motion"] = ["motion", 0]
    moved = run_graph(g, CLASSES)
    assert torch.equal(moved["long"][0], plain["long"][0])  # EchoDiT ignores y's unknown frames: same held frames
    plans = plan_segments(161, 41, 5)
    firsts = [_first_calls(r["wan"][0].model.diffusion_model.calls) for r in (plain, moved)]
    assert len(firsts[0]) == len(firsts[1]) == len(plans)
    for plan, p, m in zip(plans, *firsts):
        held = 1 if plan.index == 0 else 2
        assert torch.equal(m[:4], p[:4]) and torch.equal(m[4:, :held], p[4:, :held])
        torch.testing.assert_close(m[4:], by_hand(p[None, 4:], 1.2, held)[0], atol=2e-6, rtol=0)
        assert not torch.allclose(m[4:, held:], p[4:, held:])


def test_a_measured_reference_video_sets_the_training_free_controls():
    """'Move like this video' with audio-only weights: Motion Intensity measures the video (MediaPipe, the
    pack's motion measure) and Apply maps the measured omegas like slider values."""
    from _media_helpers import portrait as face_portrait, warp

    face = face_portrait(256)
    sway = np.stack([warp(face, 12 * p, 6 * p) for p in (0, 1, 0, -1, 0, 1)])
    video = torch.from_numpy(sway).float().div(255)
    motion, omega_l, omega_b = nodes.FantasyTalkingMotionIntensity().intensity(0.5, 0.5, reference_video=video)
    assert motion.measurement.source == "video" and omega_b > 0.4 and omega_b != 0.5
    ft, dit, audio, _ = _setup()
    (audio_only,) = nodes.FantasyTalkingModelLoader().load("ft_audio_only.safetensors", "fp32")
    model, status = nodes.FantasyTalkingApply().apply(PlainModelPatcher(dit), audio_only, audio, motion=motion)
    (wrapper,) = model.get_wrappers(_host.OUTER_SAMPLE, _host.WRAPPER_KEY)
    assert wrapper.amplitude == pytest.approx(0.75 + 0.5 * omega_b)
    assert adapter_run(model).audio_scale == pytest.approx(TrainingFreeControls(omega_l).audio_scale(1.0))
    assert "measured on the reference video" in status


def test_learned_modules_still_take_the_sliders_and_identity_is_off_without_its_module():
    ft, dit, audio, _ = _setup()
    motion = MotionIntensity(from_sliders(0.8, 0.3))
    model, status = nodes.FantasyTalkingApply().apply(PlainModelPatcher(dit), ft, audio, motion=motion)
    run = adapter_run(model)
    assert run.controls is None and torch.equal(run.motion, motion.tensor()) and run.audio_scale == 1.0
    assert not model.get_wrappers(_host.OUTER_SAMPLE, _host.WRAPPER_KEY) and "motion: learned module" in status
    (audio_only,) = nodes.FantasyTalkingModelLoader().load("ft_audio_only.safetensors", "fp32")
    face = FaceReference(torch.randn(512).numpy(), None, (0, 0, 1, 1))
    model, status = nodes.FantasyTalkingApply().apply(PlainModelPatcher(dit), audio_only, audio, face=face)
    assert adapter_run(model).id_tokens is None and "identity: off" in status and "has no identity module" in status


def test_dub_keeps_the_source_motion_by_default():
    """The Dub Sampler's segment step (the Long Video Sampler's) gets the controls only when a Motion
    Intensity is connected: unconnected, nothing is registered and the guidance is the given object."""
    import inspect

    from nodes.long_video import SegmentSampler, SegmentSettings

    spec = nodes.FantasyTalkingDubSampler.INPUT_TYPES()
    assert "motion" in spec["optional"] and "motion" not in spec["required"]
    assert "Off unless connected" in spec["optional"]["motion"][1]["tooltip"]
    assert inspect.signature(nodes.FantasyTalkingDubSampler.video).parameters["motion"].default is None
    assert GenerationConfig().controls() == TrainingFreeControls()  # the dub command line: neutral unless set
    _, dit, _, _ = _setup()
    (audio_only,) = nodes.FantasyTalkingModelLoader().load("ft_audio_only.safetensors", "fp32")
    guidance = Guidance()
    settings = SegmentSettings(1.0, 1111, 2, guidance, "euler", "simple", 0.0)
    steps = {motion: SegmentSampler("FantasyTalking Dub Sampler", PlainModelPatcher(dit), audio_only, None, 81, 23.0,
                                    1, [], [], None, None, settings,
                                    motion=None if motion is None else MotionIntensity(from_sliders(*motion)))
             for motion in (None, (0.9, 0.9))}
    off, on = steps[None], steps[(0.9, 0.9)]
    assert not off.model.get_wrappers(_host.OUTER_SAMPLE, _host.WRAPPER_KEY) and off.run.guidance(guidance) is guidance
    assert off.run.audio_scale == 1.0 and "motion: not connected" in off.run.status
    (wrapper,) = on.model.get_wrappers(_host.OUTER_SAMPLE, _host.WRAPPER_KEY)
    assert wrapper.amplitude == pytest.approx(1.2) and on.run.audio_scale == pytest.approx(1.16)
    assert on.run.guidance(guidance).cfg_audio == pytest.approx(1 + 4 * 1.2)
