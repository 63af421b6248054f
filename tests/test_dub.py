"""Dubbing (issue 17): mouth masks, the latent mask, inpainting by latent blending, the retiming plan,
and the whole dub on the tiny models: outside the mask the output is the source (up to the VAE round
trip without paste-back, exactly with it), inside it differs, a face-free source comes back unchanged,
and the command line keeps the source's frame rate and length."""

from __future__ import annotations

import math

import pytest
import torch

from fantasytalking_core import dub as D
from fantasytalking_core.lipmask import lip_masks, to_latent
from fantasytalking_core.pipeline import FantasyTalkingPipeline, GenerationConfig, tiny_components
from fantasytalking_core.sampling import flow_sigmas, inpainting, sample_euler, sample_uni_pc
from _dub_helpers import face_free_source, psnr, round_trip, talking_source

pytestmark = pytest.mark.filterwarnings("ignore:SymbolDatabase.GetPrototype:UserWarning")


@pytest.fixture(scope="module")
def source_and_masks():
    frames = talking_source()
    return frames, D.mouth_masks(frames, dilation=2, jaw=True, feather=3)


# ----------------------------------------------------------------------------------- masks


def test_mouth_mask_covers_the_lips_and_the_jaw_option_adds_the_lower_face(source_and_masks):
    frames, jawed = source_and_masks
    lips = lip_masks(frames, dilation=2, missing="empty").masks
    assert jawed.found.all() and jawed.notes == []
    assert jawed.masks.dtype == torch.uint8
    assert bool((jawed.soft() >= lips).all())  # the lips are always in
    plain = D.mouth_masks(frames, dilation=2, jaw=False, feather=0)
    assert torch.equal(plain.soft(), lips)  # no jaw, no feather: the lip mask exactly
    jaw_only = D.mouth_masks(frames, dilation=2, jaw=True, feather=0).masks > 0  # the jaw alone, no feather
    assert float(jaw_only.float().mean()) > 2 * float(plain.soft().mean())  # the lower face is larger than the lips
    lowest = lambda m: int(m.nonzero()[:, 0].max())  # noqa: E731  the lowest masked row of a frame
    assert all(lowest(j) > lowest(p) + 5 for j, p in zip(jaw_only, plain.masks))  # down to the chin
    soft = jawed.masks[(jawed.masks > 0) & (jawed.masks < D.MASK_MAX)]
    assert soft.numel() > 0  # feathered edge
    grown = D.mouth_masks(frames, dilation=6, jaw=False, feather=0).masks
    assert float(grown.sum()) > float(plain.masks.sum())
    with pytest.raises(ValueError, match="feather must be an int >= 0"):
        D.mouth_masks(frames, feather=-1)


def test_face_free_frames_get_an_empty_mask_and_a_note():
    frames = face_free_source()
    masks = D.mouth_masks(frames)
    assert not masks.found.any() and not masks.masks.any()
    assert "12 of 12 frame(s) have no face and pass through untouched" in masks.notes[0]


def test_latent_mask_covers_every_masked_pixel_of_the_frames_each_latent_frame_stands_for():
    g = torch.Generator().manual_seed(0)
    masks = (torch.rand(9, 32, 48, generator=g) > 0.995).float()  # scattered single pixels
    lat = D.latent_mask(masks)
    assert lat.shape == (3, 4, 6)
    want = torch.zeros(3, 4, 6)
    for f, y, x in masks.nonzero().tolist():
        want[(f + 3) // 4, y // 8, x // 8] = 1  # frame 0 -> latent 0, frames 4t-3..4t -> latent t
    assert torch.equal(lat, want)
    trilinear = to_latent(masks) > 0
    assert bool((want.bool() & ~trilinear).any())  # the cell-centre rule misses pixels this one covers
    with pytest.raises(ValueError, match="the frame count = 8 is not 4k\\+1"):
        D.latent_mask(masks[:8])


# ----------------------------------------------------------------------------------- inpainting


@pytest.mark.parametrize("solver", [sample_euler, sample_uni_pc])
def test_inpainting_holds_the_source_outside_the_mask_at_every_step(solver):
    g = torch.Generator().manual_seed(1)
    source, noise = torch.randn(1, 4, 3, 6, 6, generator=g), torch.randn(1, 4, 3, 6, 6, generator=g)
    mask = torch.zeros(3, 6, 6)
    mask[:, 2:4, 1:5] = 1
    weight = torch.randn(4, 4, generator=g) * 0.3

    def model(x, sigma):  # a velocity that depends on x everywhere (mixes channels)
        return torch.einsum("oc,bcthw->bothw", weight, x) + x.roll(1, dims=-1)

    sigmas = flow_sigmas(8, 5.0)
    seen = []
    out = solver(inpainting(model, source, mask, noise), noise, sigmas, callback=lambda i, n, x, d: seen.append(x))
    keep = (1 - mask).bool().expand_as(source)
    assert len(seen) == len(sigmas) - 1  # every step
    for i, x in enumerate(seen):  # on the source's noising path, with the run's own noise
        s = float(sigmas[i + 1])
        torch.testing.assert_close(x[keep], ((1 - s) * source + s * noise)[keep], atol=1e-5, rtol=0)
    torch.testing.assert_close(out[keep], source[keep], atol=1e-5, rtol=0)
    inside = mask.bool().expand_as(source)
    assert float((out - source)[inside].abs().mean()) > 0.1  # generated there
    plain = solver(model, noise, sigmas)
    assert not torch.allclose(out[inside], plain[inside])  # the model saw the held source around it


# ----------------------------------------------------------------------------------- plan


def test_plan_keeps_the_source_frame_rate_and_length_and_retimes_to_23_fps():
    plan = D.plan_dub(250, 25.0, 10.0, segment_frames=81)
    assert plan.frames == 250 and plan.notes == [] and torch.equal(plan.out_source, torch.arange(250))
    assert plan.generated == 233 and plan.model_frames == 230  # 10 s at 23 fps
    times_out = torch.arange(250) / 25.0
    assert float((plan.out_model / 23.0 - times_out).abs().max()) <= 0.5 / 23 + 1e-9  # nearest model frame
    assert float((plan.model_out[:230] / 25.0 - torch.arange(230) / 23.0).abs().max()) <= 0.5 / 25 + 1e-9
    same = D.plan_dub(46, 23.0, 2.0)
    assert torch.equal(same.out_model, torch.arange(46)) and torch.equal(same.model_out[:46], torch.arange(46))
    assert sum(p.num_frames - p.motion_frames for p in plan.plans) == plan.generated


@pytest.mark.parametrize("fit, audio, frames, note", [
    ("cut", 12.0, 250, "its last 2.00 s are cut"),
    ("cut", 8.0, 250, "the last 2.00 s are dubbed with silence"),
    ("loop", 12.0, 300, "loops to cover the new audio"),
    ("hold", 12.0, 300, "last frame is held for the last 2.00 s"),
    ("loop", 8.0, 200, "cut to the new audio"),
    ("hold", 10.02, 250, None),  # within one frame: no mismatch
])
def test_plan_says_what_it_does_when_audio_and_video_differ(fit, audio, frames, note):
    plan = D.plan_dub(250, 25.0, audio, fit)
    assert plan.frames == frames
    assert (plan.notes == []) if note is None else (note in plan.notes[0])
    if fit == "loop" and frames > 250:
        assert plan.out_source[250] == 0 and plan.out_source[-1] == 49
    if fit == "hold" and frames > 250:
        assert bool((plan.out_source[249:] == 249).all())


def test_plan_refuses_bad_input():
    with pytest.raises(ValueError, match="fit must be one of"):
        D.plan_dub(10, 25.0, 1.0, "stretch")
    with pytest.raises(ValueError, match="frame rate must be > 0"):
        D.plan_dub(10, float("nan"), 1.0)
    with pytest.raises(ValueError, match="longer than one latent frame"):
        D.plan_dub(10, 25.0, 0.1)
    with pytest.raises(ValueError, match="a single frame \\(a still image\\?\\).*use generate"):
        D.plan_dub(1, 25.0, 1.0)


def test_dub_wave_pads_or_cuts_to_the_output_then_to_the_sampled_frames(speech):
    plan = D.plan_dub(92, 23.0, speech.numel() / 16000)  # 4 s of video, 6.88 s of audio: cut
    wave = D.dub_wave(speech, plan)
    assert wave.numel() == int(plan.generated / 23 * 16000)
    assert torch.equal(wave[:64000], speech[:64000]) and not wave[64000:].any()


# ----------------------------------------------------------------------------------- the whole dub


@pytest.fixture(scope="module")
def tiny():
    return FantasyTalkingPipeline(tiny_components())


def run_dub(pipe, frames, masks, seconds, speech, paste_back=True, segment_frames=13, fps=23.0):
    plan = D.plan_dub(len(frames), fps, seconds, segment_frames=segment_frames)
    job = D.DubJob(frames, masks, plan, size=frames.shape[1], paste_back=paste_back)
    config = GenerationConfig(size=frames.shape[1], steps=2, segment_frames=segment_frames)
    out = torch.cat(list(D.dub_frames(pipe, job, speech, config, "a person", "", progress=False)))
    return out, job


def test_dub_outside_the_mask_is_the_source_up_to_the_vae_round_trip_and_inside_it_differs(
        tiny, source_and_masks, speech, capsys):
    frames, masks = source_and_masks
    src = torch.from_numpy(frames).float() / 255
    out, job = run_dub(tiny, frames, masks.masks, 1.3, speech, paste_back=False)
    assert out.shape == src.shape and len(job.plan.plans) == 3  # 30 frames in segments of 13
    rt, generated = round_trip(tiny.c.vae, job)
    outside = ~generated
    assert outside.float().mean() > 0.5 and generated.any()
    torch.testing.assert_close(out[outside], rt[outside], atol=2e-6, rtol=0)  # held to the source latent
    out_db, rt_db = psnr(out, src, outside), psnr(rt, src, outside)
    print(f"\nPSNR outside the mask, tiny VAE, no paste-back: {out_db:.2f} dB (the VAE round trip: {rt_db:.2f} dB)")
    assert abs(out_db - rt_db) < 0.01
    inside = masks.soft() > 0.5
    assert float((out - rt).abs()[inside].mean()) > 0.05  # regenerated with the new audio
    # paste-back (the default): the source's own pixels outside the feathered mask, exactly
    pasted, _ = run_dub(tiny, frames, masks.masks, 1.3, speech)
    zero = masks.masks == 0
    assert psnr(pasted, src, zero) == math.inf
    assert float((pasted - src).abs()[inside].mean()) > 0.05
    print(f"PSNR outside the mask with paste-back: {psnr(pasted, src, zero)} dB; mean |change| inside "
          f"{float((pasted - src).abs()[inside].mean()):.3f}")


def test_a_face_free_source_comes_back_unchanged_without_sampling(tiny, speech, monkeypatch):
    frames = face_free_source()
    masks = D.mouth_masks(frames)
    calls = []
    monkeypatch.setattr(type(tiny), "sample_latents", lambda *a, **k: calls.append(1))
    out, job = run_dub(tiny, frames, masks.masks, 12 / 23, speech)
    assert calls == [] and torch.equal(out, torch.from_numpy(frames).float() / 255)


def test_frames_without_a_face_in_a_dubbed_video_pass_through(tiny, source_and_masks, speech):
    frames, masks = source_and_masks
    holes = masks.masks.clone()
    holes[[5, 6, 20]] = 0  # as if the face mesh lost the face there
    out, _ = run_dub(tiny, frames, holes, 1.3, speech)
    src = torch.from_numpy(frames).float() / 255
    assert torch.equal(out[[5, 6, 20]], src[[5, 6, 20]]) and not torch.equal(out[7], src[7])


def test_dub_at_another_frame_rate_keeps_the_source_frames(tiny, source_and_masks, speech):
    frames, masks = source_and_masks
    out, job = run_dub(tiny, frames, masks.masks, 1.0, speech, fps=30.0)
    assert out.shape[0] == 30 and job.plan.model_frames == 23
    src = torch.from_numpy(frames).float() / 255
    zero = masks.masks == 0
    assert psnr(out, src, zero) == math.inf


def test_job_refuses_masks_of_another_video(source_and_masks):
    frames, masks = source_and_masks
    plan = D.plan_dub(len(frames), 23.0, 1.3)
    with pytest.raises(ValueError, match="make the masks from these frames"):
        D.DubJob(frames, masks.masks[:, :64], plan)


# ----------------------------------------------------------------------------------- command line


def test_cli_dub_keeps_the_frame_rate_and_length_and_never_replaces_the_input(tmp_path, speech_path, capsys):
    from fantasytalking_core.__main__ import main
    from fantasytalking_core.video import probe, read_video, write_video

    video = write_video(talking_source(25), tmp_path / "in.mp4", 25.0)
    out = tmp_path / "out.mp4"
    args = ["dub", "--preset", "tiny", "--video", str(video), "--audio", str(speech_path), "--out", str(out),
            "--steps", "1", "--segment-frames", "13", "--attention", "sdpa"]
    assert main(args) == 0
    text = capsys.readouterr().out
    assert "its last 5.88 s are cut" in text and "mouth regenerated in 25 of 25 source frames" in text
    data, info = read_video(out), probe(out)
    assert data.frames.shape == (25, 128, 128, 3) and data.fps == 25.0
    assert abs(info["video"]["duration"] - 1.0) < 1e-6 and abs(info["audio"]["duration"] - 1.0) < 0.5 / 25, info
    assert main(args) == 2 and "already exists" in capsys.readouterr().err
    assert main(args[:7] + ["--out", str(video), "--overwrite"]) == 2
    assert "is the input video" in capsys.readouterr().err
    assert main(["dub", "--preset", "tiny", "--video", str(tmp_path / "none.mp4"), "--audio", str(speech_path),
                 "--out", str(tmp_path / "x.mp4")]) == 2
    assert "--video file not found" in capsys.readouterr().err
