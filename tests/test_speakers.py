"""Several speakers (issue 26): the timing of their tracks, the features of silence, the regions, and the
routing that sends each voice to its own region only.

The routing tests are exact: a tiny DiT whose self-attention output is zero mixes nothing between
tokens, so changing one speaker's audio may change the video only where that speaker's routing weight
is above zero, by exactly zero elsewhere, through the three guidance passes, the long-video segments
and (tests/test_speakers_nodes.py) core's context windows.
"""

from __future__ import annotations

import copy
import math

import numpy as np
import pytest
import torch
from PIL import Image

from _factories import tiny_audio, tiny_wan, wan_inputs
from fantasytalking_core.__main__ import main
from fantasytalking_core.adapters import AudioCondition, attach_adapters
from fantasytalking_core.adapters.routing import RoutedAudio
from fantasytalking_core.audio import prepare_waveform
from fantasytalking_core.face import FaceDetection
from fantasytalking_core.pipeline import FantasyTalkingPipeline, Generation, GenerationConfig, tiny_components
from fantasytalking_core.sampling import Guidance
from fantasytalking_core.speakers import (RegionalGuidance, SpeakerRegions, Speakers, Timing, arrange_tracks,
                                          encode_tracks, find_regions, follow_faces, full_frame, given_regions,
                                          parse_schedule, silence_features)

SR = 16000


def tone(seconds: float, freq: float, seed: int = 0, rate: int = SR) -> np.ndarray:
    """A voiced-ish test signal: a tone with seeded noise (different seeds give different features)."""
    t = np.arange(int(seconds * rate)) / rate
    noise = np.random.default_rng(seed).standard_normal(t.size) * 0.05
    return (0.3 * np.sin(2 * np.pi * freq * t) + noise).astype(np.float32)


def astronauts() -> np.ndarray:
    """Two people side by side: skimage's astronaut (public domain, NASA) and its mirror image."""
    from skimage import data

    a = data.astronaut()
    return np.concatenate([a, a[:, ::-1]], axis=1)  # 512 x 1024


# ------------------------------------------------------------------------------------- timing


def test_together_places_every_track_from_the_start_and_mixes_them():
    a, b = tone(0.5, 200, 1), tone(0.3, 300, 2)
    tr = arrange_tracks([(a, SR), (b, SR)], Timing("together"))
    assert tr.tracks.shape == (2, a.size)
    assert torch.equal(tr.tracks[0], torch.from_numpy(a)) and torch.equal(tr.tracks[1, :b.size], torch.from_numpy(b))
    assert not tr.tracks[1, b.size:].any()  # real zeros in the waveform where speaker 2 is silent
    mix = a.copy()
    mix[:b.size] += b
    mix /= max(1.0, np.abs(mix).max())
    assert tr.soundtrack.sample_rate == SR and np.allclose(tr.soundtrack.waveform[0].numpy(), mix, atol=1e-7)


def test_turns_follow_each_other_with_the_gap_at_any_sample_rate():
    a, b = tone(0.5, 200, 1, rate=22050), tone(0.25, 300, 2)
    tr = arrange_tracks([(a, 22050), (b, SR)], Timing.parse("turns:0.2"))
    start = round((a.size / 22050 + 0.2) * SR)
    a16 = prepare_waveform(a, 22050)
    assert torch.equal(tr.tracks[0, :a16.numel()], a16) and not tr.tracks[0, a16.numel():].any()
    assert not tr.tracks[1, :start].any() and torch.equal(tr.tracks[1, start:start + b.size], torch.from_numpy(b))
    assert tr.soundtrack.sample_rate == 22050  # the mix at the highest rate
    assert tr.soundtrack.waveform.shape[-1] == round(0.7 * 22050) + math.ceil(b.size * 22050 / SR)  # b resampled
    assert "speaker 2 from 0.70 s" in tr.notes[0]


def test_channels_give_one_speaker_per_channel_and_keep_the_recording():
    a, b = tone(0.4, 200, 1), tone(0.4, 300, 2)
    tr = arrange_tracks([(np.stack([a, b]), SR)], Timing.parse("channels"))
    assert torch.equal(tr.tracks[0], torch.from_numpy(a)) and torch.equal(tr.tracks[1], torch.from_numpy(b))
    assert tr.soundtrack.waveform.shape == (2, a.size)  # the stereo recording itself


def test_who_speaks_when_cuts_one_recording_into_tracks():
    w = tone(1.0, 250, 3)
    tr = arrange_tracks([(w, SR)], Timing.parse("0-0.4:1, 0.4-0.9:2"))
    assert tr.count == 2
    assert torch.equal(tr.tracks[0, :6400], torch.from_numpy(w[:6400])) and not tr.tracks[0, 6400:].any()
    assert not tr.tracks[1, :6400].any() and torch.equal(tr.tracks[1, 6400:14400], torch.from_numpy(w[6400:14400]))
    assert not tr.tracks[:, 14400:].any()  # nobody speaks after 0.9 s: both hear silence
    assert parse_schedule("0-3.2:1; 3.2-7.5:2") == [(0.0, 3.2, 0), (3.2, 7.5, 1)]


@pytest.mark.parametrize("timing, audios, message", [
    ("0-1:1, oops", 1, r"entry 'oops' is not 'start-end:speaker'"),
    ("2-1:1", 1, "ends before it starts"),
    ("0-1:5", 1, "names speaker 5; speakers are 1 to 4"),
    ("0-0.5:1, 0.5-1:3", 1, "never gives speaker 2 a turn"),
    ("0-0.5:1, 5-6:2", 1, "starts after the end of the 1.00 s recording"),
    ("channels", 1, "'channels' needs a recording with 2 to 4 channels .* has 1"),
    ("channels", 2, "'channels' takes one recording, got 2"),
    ("turns", 5, "5 recordings: at most 4 speakers"),
    ("turns:x", 1, "the gap after 'turns:' must be seconds"),
])
def test_timing_errors_say_what_to_give(timing, audios, message):
    with pytest.raises(ValueError, match=message):
        arrange_tracks([(tone(1.0, 200), SR)] * audios, Timing.parse(timing))


# ------------------------------------------------------------------------------------- features


@pytest.fixture(scope="module")
def components():
    return tiny_components(seed=0)


def test_silence_is_the_encoding_of_a_zero_waveform_never_zero_features(components):
    enc = components.wav2vec
    a = tone(0.6, 220, 1)
    tracks = torch.stack([torch.from_numpy(a), torch.zeros(a.size)])
    feats = encode_tracks(enc, tracks)
    zeros = enc.encode(torch.zeros(a.size))
    assert feats.shape[0] == 3  # two speakers, then the background
    assert torch.equal(feats[1], zeros[0]) and torch.equal(feats[2], zeros[0])  # silent speaker, background
    assert torch.equal(silence_features(enc, a.size), zeros)
    assert torch.equal(feats[0], enc.encode(torch.from_numpy(a))[0])
    assert zeros.abs().amax() > 0.1  # wav2vec2's silence is not zero features


# ------------------------------------------------------------------------------------- routing


def _frame_condition(frames: int, seed: int, proj_dim: int = 32, win: int = 6) -> AudioCondition:
    g = torch.Generator().manual_seed(seed)
    tokens = torch.randn(1, frames, win, proj_dim, generator=g)
    return AudioCondition(tokens, torch.full((frames,), win))


def test_one_full_frame_speaker_is_the_single_speaker_attention_bit_for_bit():
    model = tiny_wan()
    audio = tiny_audio(model.cfg)
    inputs = wan_inputs(model.cfg, batch=3)  # 3 latent frames of 4x6 latent pixels: 2x3 tokens
    cond, silence = _frame_condition(3, 1), _frame_condition(3, 2)
    routed = RoutedAudio([cond, silence], full_frame(3 * 16, 2 * 16).weights(2, 3))
    scale = torch.tensor([1.0, 0.0, 1.0])  # the guidance passes batched, audio off in the middle row
    with torch.no_grad(), attach_adapters(model, audio=audio) as att:
        with att.conditioned(audio=cond, audio_scale=scale):
            single = model(**inputs)
        with att.conditioned(audio=routed, audio_scale=scale):
            assert torch.equal(model(**inputs), single)


def test_routing_mixes_one_attention_per_source_by_the_token_weights():
    model = tiny_wan()
    audio = tiny_audio(model.cfg)
    proc = audio.processor(0)
    sources = [_frame_condition(3, s) for s in (1, 2, 3)]
    g = torch.Generator().manual_seed(4)
    w = torch.rand(3, 3, 2, 3, generator=g)
    w[0, :, :, 0] = 0  # speaker 1 absent from the first column
    w = w / w.sum(0, keepdim=True)
    q = torch.randn(2, 3 * 6, model.cfg.dim, generator=g)
    got = RoutedAudio(sources, w).attend(proc, q, model.cfg.num_heads)
    want = sum(w[s].reshape(1, -1, 1).double() * proc(q, sources[s], model.cfg.num_heads).double() for s in range(3))
    torch.testing.assert_close(got.double(), want, atol=1e-6, rtol=1e-6)
    with pytest.raises(ValueError, match="sum to 1"):
        RoutedAudio(sources, w * 0.5)
    with pytest.raises(ValueError, match=r"regions are on a 2x3 token grid \(32x48 pixels\) but the video has 24 "
                                         r"tokens over 3 latent frames \(8 per frame\)"):
        RoutedAudio(sources, w).attend(proc, q[:, :, :].repeat(1, 2, 1)[:, :24], model.cfg.num_heads)


def _two_speaker_masks(w: int = 96, h: int = 64) -> list[np.ndarray]:
    """Speaker 1: the left 32 px plus a soft band (0.5) to 48 px; speaker 2: the right 32 px."""
    m1, m2 = np.zeros((h, w), np.float32), np.zeros((h, w), np.float32)
    m1[:, :32], m1[:, 32:40] = 1.0, 0.5
    m2[:, 64:] = 1.0
    return [m1, m2]


def _quiet_self_attention(components):
    """The tiny components with every self-attention output zero: nothing mixes tokens."""
    c = copy.copy(components)
    c.dit = copy.deepcopy(components.dit)
    for block in c.dit.blocks:
        block.self_attn.o.weight.data.zero_()
        block.self_attn.o.bias.data.zero_()
    return c


def _video(pipe, image, audios, config, masks, region_guidance=False) -> tuple[torch.Tensor, Generation]:
    tracks = arrange_tracks([(a, SR) for a in audios], Timing("together"))
    gen = Generation(image, Speakers(tracks, masks, region_guidance=region_guidance), config)
    return torch.cat(list(pipe.frames(gen, progress=False))), gen


@pytest.mark.parametrize("region_guidance, speakers", [(False, (0, 1)), (True, (1,))])
def test_each_voice_moves_only_its_own_region_through_guidance_and_segments(components, region_guidance, speakers):
    pipe = FantasyTalkingPipeline(_quiet_self_attention(components))
    image = np.random.default_rng(0).integers(0, 255, (64, 96, 3), dtype=np.uint8)
    config = GenerationConfig(size=96, steps=2, segment_frames=9, color_match=False)  # cfg 5/5: three passes
    assert config.guidance().passes(0, 2) == ("pos_audio", "pos_noaudio", "neg_noaudio")
    masks = _two_speaker_masks()
    a, b = tone(0.6, 200, 1), tone(0.6, 300, 2)
    base, gen = _video(pipe, image, [a, b], config, masks, region_guidance)
    assert len(gen.plans) == 2 and base.shape == (14, 64, 96, 3)  # 17 made, cut to the audio
    weights = gen.speakers.regions.weights(4, 6)[:, 0]  # [3, 4, 6]
    for k in speakers:
        changed = [tone(0.6, 260, 7), b] if k == 0 else [a, tone(0.6, 410, 8)]
        other, _ = _video(pipe, image, changed, config, masks, region_guidance)
        diff = (other - base).abs().amax(-1)  # [T, H, W]
        region = (weights[k] > 0).repeat_interleave(16, 0).repeat_interleave(16, 1)  # its tokens' pixels
        assert diff[:, ~region].max() == 0, f"speaker {k + 1}'s audio moved pixels outside its region"
        assert (diff[:, region].amax(-1) > 0).all(), f"speaker {k + 1}'s audio must move its region in every frame"


def test_one_full_frame_speaker_makes_todays_video_bit_for_bit(components):
    pipe = FantasyTalkingPipeline(components)
    image = np.random.default_rng(1).integers(0, 255, (64, 64, 3), dtype=np.uint8)
    config = GenerationConfig(size=64, steps=2, segment_frames=9)
    voice = (tone(0.5, 220, 3), SR)
    today = torch.cat(list(pipe.frames(Generation(image, voice, config), progress=False)))
    gen = Generation(image, Speakers(arrange_tracks([voice], Timing("together"))), config)
    assert gen.speakers.regions.source == "the whole picture" and len(gen.plans) == 2
    assert torch.equal(torch.cat(list(pipe.frames(gen, progress=False))), today)


# ------------------------------------------------------------------------------------- regions


def test_weights_are_each_tokens_share_and_sum_to_one():
    masks = _two_speaker_masks()
    regions = given_regions(masks, 2, 96, 64)
    w = regions.weights(4, 6)
    assert w.shape == (3, 1, 4, 6)
    want = torch.from_numpy(np.stack(masks)).reshape(2, 4, 16, 6, 16).mean((2, 4))
    torch.testing.assert_close(w[:2, 0], want)
    torch.testing.assert_close(w.sum(0), torch.ones(1, 4, 6))
    assert w[0, 0, 0, 2] == 0.25 and w[2, 0, 0, 2] == 0.75  # the soft band shares its token with the background
    full = full_frame(96, 64).weights(4, 6)
    assert torch.equal(full[0], torch.ones(1, 4, 6)) and not full[1].any()  # exactly 1 and 0


def test_faces_are_found_numbered_left_to_right_and_made_disjoint():
    image = astronauts()
    regions = find_regions(image, 2, feather=0)
    assert regions.count == 2 and regions.size == (1024, 512)
    (l0, _, r0, _), (l1, _, r1, _) = regions.boxes
    assert r0 < 512 < l1  # speaker 1 is the left astronaut
    hard = regions.masks
    assert set(hard.unique().tolist()) == {0.0, 1.0} and not (hard[0] * hard[1]).any()  # disjoint
    for k, (x0, y0, x1, y1) in enumerate(regions.boxes):
        cy, cx = int((y0 + y1) / 2), int((x0 + x1) / 2)
        assert hard[k, cy, cx] == 1 and hard[1 - k, cy, cx] == 0  # each region holds its own face
        below = min(511, int(y1 + (y1 - y0)))
        assert hard[k, below, cx] == 1  # grown down to the neck and shoulders
    soft = find_regions(image, 2, feather=8)
    assert soft.masks.sum(0).max() <= 1 + 1e-5  # feathered, still never more than the whole token
    assert 0 < soft.masks[0][hard[0] == 0].max() < 1  # the feather reaches outside the hard region
    preview = soft.preview(image)
    assert preview.shape == image.shape and preview.dtype == np.uint8
    cy, cx = (int((regions.boxes[1][1] + regions.boxes[1][3]) / 2), int((regions.boxes[1][0] + regions.boxes[1][2]) / 2))
    assert preview[cy + 60, cx, 2] > image[cy + 60, cx, 2] or preview[cy + 60, cx, 2] == 255  # speaker 2 tinted blue


def test_overlapping_head_boxes_are_split_between_the_nearest_faces():
    faces = [FaceDetection((10.0, 20.0, 30.0, 40.0), 0.9), FaceDetection((40.0, 20.0, 60.0, 40.0), 0.9),
             FaceDetection((80.0, 0.0, 82.0, 2.0), 0.9)]  # the tiny third face is left out (largest two kept)
    regions = find_regions(np.zeros((100, 100, 3), np.uint8), 2, feather=0, detections=faces[::-1])
    assert regions.boxes == [faces[0].box, faces[1].box]
    m = regions.masks
    assert m[0, 30, 34] == 1 and m[1, 30, 36] == 1  # the boxes overlap; the split is halfway between the faces
    assert not (m[0] * m[1]).any()


def test_regions_follow_the_faces_and_keep_their_numbers():
    a, b = FaceDetection((10.0, 20.0, 30.0, 40.0), 0.9), FaceDetection((60.0, 20.0, 80.0, 40.0), 0.9)
    frame = np.zeros((100, 100, 3), np.uint8)
    start = find_regions(frame, 2, feather=0, detections=[b, a])
    assert start.boxes == [a.box, b.box]
    # the people moved towards each other and past: speaker 1 is now right of speaker 2
    a2, b2 = FaceDetection((52.0, 25.0, 72.0, 45.0), 0.9), FaceDetection((38.0, 22.0, 58.0, 42.0), 0.9)
    moved = follow_faces(start, frame, feather=0, detections=[b2, a2])
    assert moved.boxes == [b2.box, a2.box]  # each took the face nearest to its own previous one
    assert moved.masks[0, 35, 47] == 1 and "followed" in moved.source
    kept = follow_faces(moved, frame, feather=0, detections=[a2])  # one face turned away: the regions stay
    assert kept is moved


def test_region_errors_say_what_to_connect():
    with pytest.raises(ValueError, match=r"found 1 face\(s\) in the portrait but there are 2 speakers: connect one "
                                         r"mask per speaker .*mask_1..mask_2; --mask FILE per speaker"):
        find_regions(astronauts()[:, :512], 2)
    ok = _two_speaker_masks()
    with pytest.raises(ValueError, match=r"2 speaker track\(s\) but 1 mask\(s\) \(more tracks than regions\)"):
        given_regions(ok[:1], 2, 96, 64)
    with pytest.raises(ValueError, match="mask 2 is 48x64 but the portrait is 96x64: draw the mask on the portrait"):
        given_regions([ok[0], ok[1][:, :48]], 2, 96, 64)
    with pytest.raises(ValueError, match=r"mask 2 is empty \(no pixel above 0.5\)"):
        given_regions([ok[0], ok[1] * 0.4], 2, 96, 64)
    with pytest.raises(ValueError, match="masks 1 and 2 overlap on 512 pixels"):
        given_regions([ok[0], np.maximum(ok[1], ok[0] * (np.arange(96) >= 24))], 2, 96, 64)
    with pytest.raises(ValueError, match="speakers must be 1 to 4"):
        given_regions(ok * 3, 5, 96, 64)


# ------------------------------------------------------------------------------------- guidance


def test_regional_guidance_scales_the_audio_term_inside_the_regions_only():
    g = Guidance(cfg_text=5.0, cfg_audio=4.0)
    regions = given_regions(_two_speaker_masks(), 2, 96, 64)
    r = RegionalGuidance(g, regions)
    gen = torch.Generator().manual_seed(0)
    o = {k: torch.randn(1, 16, 3, 8, 12, generator=gen) for k in ("pos_audio", "pos_noaudio", "neg_noaudio")}
    got = r.combine(o, 0, 10)
    full, once = g.combine(o, 0, 10), Guidance(cfg_text=5.0, cfg_audio=1.0).combine(o, 0, 10)
    torch.testing.assert_close(got[..., :4], full[..., :4])  # speaker 1's whole tokens: cfg_audio 4
    torch.testing.assert_close(got[..., 6:8], once[..., 6:8])  # the background: the audio term once
    m = 0.25  # the soft band's token: 1 + (a - 1) m
    torch.testing.assert_close(got[..., 4:6], once[..., 4:6] + 3 * m * (o["pos_audio"] - o["pos_noaudio"])[..., 4:6])
    assert r.passes(0, 10) == g.passes(0, 10)


# ------------------------------------------------------------------------------------- command line


def test_generate_takes_several_voices_and_their_masks(tmp_path, capsys):
    image = tmp_path / "two.png"
    Image.fromarray(np.random.default_rng(2).integers(0, 255, (64, 96, 3), dtype=np.uint8)).save(image)
    paths = []
    for k, (mask, voice) in enumerate(zip(_two_speaker_masks(), (tone(0.3, 200, 1), tone(0.25, 300, 2)))):
        Image.fromarray((mask * 255).astype(np.uint8)).save(tmp_path / f"m{k}.png")
        import soundfile

        soundfile.write(tmp_path / f"a{k}.wav", voice, SR)
        paths += ["--audio", str(tmp_path / f"a{k}.wav"), "--mask", str(tmp_path / f"m{k}.png")]
    out = tmp_path / "out.mp4"
    args = ["generate", "--preset", "tiny", "--image", str(image), *paths, "--timing", "turns:0.1", "--size", "96",
            "--steps", "1", "--out", str(out)]
    assert main(args) == 0
    printed = capsys.readouterr().out
    assert "speaker 2 from 0.40 s" in printed and "speaker regions: given masks" in printed and out.is_file()
    Image.fromarray(np.zeros((64, 96), np.uint8)).save(tmp_path / "m1.png")  # an empty mask
    assert main(args[:-1] + [str(tmp_path / "again.mp4")]) == 2
    assert "mask 2 is empty" in capsys.readouterr().err


def test_the_speakers_benchmark_prints_its_table(capsys):
    from benchmarks import speakers as bench

    one, two = bench.audio_share(1), bench.audio_share(2)
    assert 0.001 < one < 0.01  # the audio attention is a small part of a 14B step (0.24% of its FLOPs)
    assert 2.9 < two / one < 3.0  # two speakers: three audio attentions (two voices, the background)
    assert bench.main(["--preset", "tiny", "--repeats", "1"]) == 0
    rows = [line for line in capsys.readouterr().out.splitlines() if line.startswith("| ") and line[2].isdigit()]
    assert [r.split(" | ")[0] for r in rows] == ["| 1", "| 2", "| 3", "| 4"]
