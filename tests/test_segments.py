"""The segment machinery (fantasytalking_core/segments.py): the plan, which latent frames a segment
holds, each segment's audio windows from one encoding, colour matching and its drift, the loop."""

from __future__ import annotations

import pytest
import torch

from fantasytalking_core.audio import split_windows
from fantasytalking_core.encoders import timeline_tokens, wav2vec_num_tokens
from fantasytalking_core.segments import (SegmentPlan, held_video, i2v_mask, match_segment,
                                          output_frames, plan_segments, run_segments, segment_audio, segment_seed)

from _factories import tiny_audio, tiny_wan

# ----------------------------------------------------------------------------------- plan


def test_plan_hand_examples():
    assert [(p.start_frame, p.num_frames, p.motion_frames) for p in plan_segments(161, 81, 5)] == \
        [(0, 81, 0), (76, 81, 5), (152, 9, 5)]
    assert [(p.start_frame, p.num_frames, p.motion_frames) for p in plan_segments(161, 81, 1)] == \
        [(0, 81, 0), (80, 81, 1)]
    assert [(p.start_frame, p.num_frames) for p in plan_segments(61, 21, 9)] == \
        [(0, 21), (12, 21), (24, 21), (36, 21), (48, 13)]
    assert plan_segments(45, 81, 5) == [SegmentPlan(0, 0, 45, 0)]  # shorter than a segment: one
    p = plan_segments(161, 81, 5)[1]
    assert (p.end_frame, p.latent_start, p.latent_frames) == (157, 19, 21)


@pytest.mark.parametrize("segment_frames, motion", [(81, 5), (81, 1), (49, 9), (9, 5), (121, 17), (13, 9)])
def test_plan_makes_every_frame_once_on_the_videos_latent_grid(segment_frames, motion):
    for total in range(5, 1200, 4):
        plans = plan_segments(total, segment_frames, motion)
        stitched = []
        for p in plans:
            assert (p.num_frames - 1) % 4 == 0 and 5 <= p.num_frames <= segment_frames
            assert p.start_frame % 4 == 0  # the segment's latent frame i is the video's latent frame start/4 + i
            frames = list(range(p.start_frame, p.end_frame))
            if p.index:
                assert p.motion_frames == motion and frames[:motion] == stitched[-motion:]
            else:
                assert p.motion_frames == 0
            stitched += frames[p.motion_frames:]
        assert stitched == list(range(total))
        assert [p.index for p in plans] == list(range(len(plans)))


def test_plan_refuses_bad_counts():
    for bad in (0, 2, 4, 81, 83, True):
        with pytest.raises(ValueError, match=r"^motion_frames = \S+ (is not 4k\+1 and at least 1 |must be below "
                                             r"segment_frames \(81\))"):
            plan_segments(161, 81, bad)
    with pytest.raises(ValueError, match="total_frames = 160 is not 4k\\+1"):
        plan_segments(160)
    with pytest.raises(ValueError, match="segment_frames = 80 is not 4k\\+1"):
        plan_segments(161, 80)


def test_output_frames_and_seeds():
    assert output_frames(6.880750, 23) == 159 == -(-6.880750 * 23 // 1)  # ceil: the fewest covering the audio
    assert output_frames(2.0, 23) == 46 and output_frames(1.0, 25) == 25 and output_frames(0.0, 23) == 1
    assert [segment_seed(1111, i) for i in range(3)] == [1111, 1112, 1113]
    assert segment_seed(2**64 - 1, 1) == 0


# ----------------------------------------------------------------------------------- held frames


@pytest.mark.parametrize("num_frames", [5, 13, 81])
@pytest.mark.parametrize("known", [1, 5, 9])
def test_i2v_mask_marks_exactly_the_latent_frames_the_held_frames_are(num_frames, known):
    if known > num_frames:
        with pytest.raises(ValueError, match="between 0 and num_frames"):
            i2v_mask(num_frames, 3, 2, known=known)
        return
    mask = i2v_mask(num_frames, 3, 2, known=known)
    t_lat = (num_frames - 1) // 4 + 1
    assert mask.shape == (4, t_lat, 3, 2)
    # hand: per-frame flags, frame 0 counted 4 times, grouped in fours: entry [j, t] = seq[4t + j]
    seq = [1.0] * 4 + [1.0] * (known - 1) + [0.0] * (num_frames - known)
    for t in range(t_lat):
        for j in range(4):
            assert torch.all(mask[j, t] == seq[4 * t + j])
    held_latents = (known - 1) // 4 + 1  # 1 -> latent 0; 5 -> latents 0, 1; 9 -> latents 0, 1, 2
    assert mask[:, :held_latents].eq(1).all() and mask[:, held_latents:].eq(0).all()


def test_i2v_mask_refuses_more_known_frames_than_the_segment_has():
    with pytest.raises(ValueError, match="between 0 and num_frames"):
        i2v_mask(9, 2, 2, known=10)


def test_held_video_is_the_held_frames_then_grey():
    held = torch.rand(5, 4, 4, 3)
    v = held_video(held, 9)
    assert v.shape == (9, 4, 4, 3) and torch.equal(v[:5], held) and v[5:].eq(0.5).all()
    w = held_video(held.permute(3, 0, 1, 2)[None] * 2 - 1, 9, fill=0.0, dim=2)  # the pipeline's layout
    assert w.shape == (1, 3, 9, 4, 4) and w[:, :, 5:].eq(0).all()
    with pytest.raises(ValueError, match="cannot hold 5 frames"):
        held_video(held, 4)


def test_i2v_condition_encodes_the_held_frames_and_marks_them_known():
    from fantasytalking_core.pipeline import TinyCausalVAE, i2v_condition

    vae = TinyCausalVAE()
    held = torch.rand(1, 3, 5, 16, 24) * 2 - 1
    y = i2v_condition(vae, held, 13)
    assert y.shape == (1, 20, 4, 2, 3)
    assert torch.equal(y[0, :4], i2v_mask(13, 2, 3, known=5))
    video = torch.cat([held, torch.zeros(1, 3, 8, 16, 24)], dim=2)
    assert torch.equal(y[:, 4:], vae.encode(video))


# ----------------------------------------------------------------------------------- audio


@pytest.fixture(scope="module")
def adapter():
    return tiny_audio(tiny_wan().cfg)


def _features(tokens: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(1, tokens, 768, generator=torch.Generator().manual_seed(seed))


def test_one_segment_is_the_official_clip_rule(adapter):
    feats = _features(150)
    got = segment_audio(adapter, feats, SegmentPlan(0, 0, 73, 0), 73, 23.0)
    want = adapter.condition(feats, 73)  # projected, then split as the official code: tokens spread over 73 frames
    assert torch.equal(got.tokens, want.tokens) and torch.equal(got.k_lens, want.k_lens)


def test_segments_take_the_whole_videos_windows_of_their_own_latent_frames(adapter):
    """A recording at least as long as the video (161 frames, 349 tokens): every segment's windows are
    the official rule's windows of the whole video at its latent frames; a frame two segments share
    hears the same audio in both."""
    total, fps = 161, 23.0
    length = timeline_tokens(total, fps)
    assert length == wav2vec_num_tokens(int(total / fps * 16000)) == 349
    feats = _features(length)
    with torch.no_grad():
        whole = split_windows(adapter.project(feats), total)
        for motion in (1, 5, 9):
            conds = []
            for plan in plan_segments(total, 41, motion):
                c = segment_audio(adapter, feats, plan, total, fps)
                m = plan.latent_start
                torch.testing.assert_close(c.tokens, whole.tokens[:, m:m + plan.latent_frames], atol=1e-6, rtol=0)
                assert torch.equal(c.k_lens, whole.k_lens[m:m + plan.latent_frames])
                conds.append((plan, c))
            for (a, ca), (b, cb) in zip(conds, conds[1:]):  # the held latent frames hear what they heard before
                shared = (b.motion_frames - 1) // 4 + 1
                torch.testing.assert_close(cb.tokens[:, :shared], ca.tokens[:, -shared:], atol=1e-6, rtol=0)


def test_segment_windows_keep_the_real_token_rate_when_the_recording_is_shorter(adapter):
    """6.88 s of speech makes 161 frames (7.0 s): the windows sit where tokens 0.02 s apart are, and
    the tokens the recording lacks are cut from the windows, as the official rule cuts at a clip's
    end. Hand values: 349 timeline tokens, 343 real ones; window of the last latent frame (40):
    tokens_per_frame 349/161, centre int(tpf * (157 + 161) / 2) - 1 = 343, half int(2 * tpf) = 4,
    widened by 4 -> (335, 351), of which 335..342 are real: k_len 8."""
    total, fps, length = 161, 23.0, wav2vec_num_tokens(110092)
    assert length == 343
    feats = _features(length, seed=1)
    plan = plan_segments(total, 41, 1)[-1]  # frames 120-160: latent frames 30..40
    c = segment_audio(adapter, feats, plan, total, fps)
    assert int(c.k_lens[-1]) == 8
    with torch.no_grad():
        proj = adapter.project(feats)
    torch.testing.assert_close(c.tokens[0, -1, :8], proj[0, 335:343], atol=1e-6, rtol=0)
    assert not c.tokens[0, -1, 8:].any()
    spread = split_windows(proj, total)  # the official spread of 343 tokens puts it 6 tokens (0.12 s) earlier
    assert spread.ranges[-1] == (329, 345)
    tpf = 349 / 161  # every window: the official formula on the timeline
    for i, t in enumerate(range(plan.latent_start, plan.latent_start + plan.latent_frames)):
        centre = int(tpf * ((t - 1) * 4 + 1 + t * 4 + 1) / 2) - 1
        s = centre - int(tpf * 2) - 4
        assert int(c.k_lens[i]) == min(centre + int(tpf * 2) + 4, length - 1) - s + 1
        torch.testing.assert_close(c.tokens[0, i, 0], proj[0, s], atol=1e-6, rtol=0)


def test_only_the_segments_own_tokens_are_projected(adapter, monkeypatch):
    seen = []
    real = adapter.project
    monkeypatch.setattr(adapter, "project", lambda f: seen.append(f.shape[1]) or real(f))
    feats = _features(timeline_tokens(801, 23.0))
    for plan in plan_segments(801, 81, 1):
        segment_audio(adapter, feats, plan, 801, 23.0)
    assert max(seen) < 200 < feats.shape[1]  # ~81 frames' worth of tokens each, of 1741


# ----------------------------------------------------------------------------------- colour


def test_the_seam_map_transfers_mean_and_std():
    g = torch.Generator().manual_seed(0)
    old = torch.rand(3, 8, 8, 3, generator=g) * 0.5 + 0.25
    new = (old - 0.1) * 0.6 + 0.05  # drifted: darker, lower contrast
    torch.testing.assert_close(match_segment(new, old[:2]), old, atol=1e-5, rtol=0)  # new[:2] -> old[:2], all frames
    flat = torch.full((2, 4, 4, 3), 0.3)  # constant channel: shifted only, no division by 0
    torch.testing.assert_close(match_segment(flat, flat + 0.2), flat + 0.2)


def test_match_segment_joins_the_seam_and_ends_on_the_reference():
    g = torch.Generator().manual_seed(1)
    reference = torch.rand(1, 8, 8, 3, generator=g) * 0.5 + 0.25
    held = reference * 0.9 + 0.08  # the previous segment ended a little off
    frames = torch.cat([(held - 0.1) * 0.8] * 9)  # this segment: darker again, the same picture
    out = match_segment(frames, held[:1], reference)
    torch.testing.assert_close(out[0], held[0], atol=1e-5, rtol=0)  # the seam: the held frame's colours
    torch.testing.assert_close(out[-1], reference[0], atol=1e-5, rtol=0)  # the end: the portrait's
    mid = match_segment(frames, held[:1], None)  # no reference: the seam map for the whole segment
    torch.testing.assert_close(mid[-1], held[0], atol=1e-5, rtol=0)


def drifting_video(strategy: str, segments: int = 12, n: int = 21, motion: int = 1, drift: float = 0.03,
                   seam: float = 0.05):
    """A stand-in generator with Wan-like colour faults: each segment remakes its held frame `seam`
    darker (the VAE round trip), then brightens and gains contrast by `drift` over its frames.
    -> (per-segment colour error of the end frame against the portrait, largest frame-to-frame jump)."""
    g = torch.Generator().manual_seed(2)
    portrait = torch.rand(1, 16, 16, 3, generator=g) * 0.6 + 0.2
    plans = plan_segments(1 + (n - motion) * segments, n, motion)
    ramp = torch.linspace(0, 1, n).view(n, 1, 1, 1)

    def sample(plan, held):
        base = held[-1:].expand(n, -1, -1, -1) * (1 - seam if plan.index else 1)
        return ((base - 0.5) * (1 + drift * ramp) + 0.5 + drift * ramp).clamp(0, 1)

    ref = portrait if strategy == "portrait" else None
    video = torch.cat(list(run_segments(plans, portrait, sample, ref, color_match=strategy != "none")))
    errors = [float((video[p.end_frame - 1].mean((0, 1)) - portrait[0].mean((0, 1))).abs().max()) for p in plans]
    return errors, float((video[1:] - video[:-1]).abs().mean(dim=(1, 2)).amax(dim=1).max())


def test_colour_drift_builds_up_without_the_portrait_and_not_with_it():
    """The numbers docs/long_audio.md reports: 12 segments of a generator with a 5% seam fault and a
    3% drift per segment."""
    none, jump_none = drifting_video("none")
    seam, jump_seam = drifting_video("seam")
    ours, jump_ours = drifting_video("portrait")
    assert jump_none > 0.02 > 0.005 > max(jump_seam, jump_ours)  # unmatched, every seam jumps
    assert seam[-1] > 0.2  # matched to the held frames only, the drift compounds segment after segment
    assert ours[0] == seam[0] > 0.02  # the first segment is the model's own (as the official code)
    assert max(ours[1:]) < 0.005  # eased to the portrait, every later segment ends on its colours


# ----------------------------------------------------------------------------------- the loop


def test_run_segments_holds_the_right_frames_and_yields_each_frame_once():
    plans = plan_segments(61, 21, 5)
    start = torch.full((1, 2, 2, 3), -1.0)
    seen = []

    def sample(plan, held):  # frame value = the video's frame index
        seen.append((plan.index, held[:, 0, 0, 0].tolist()))
        return torch.arange(plan.start_frame, plan.end_frame).float().view(-1, 1, 1, 1).expand(-1, 2, 2, 3)

    chunks = list(run_segments(plans, start, sample, color_match=False))
    assert [c.shape[0] for c in chunks] == [21, 16, 16, 8]
    assert torch.equal(torch.cat(chunks)[:, 0, 0, 0], torch.arange(61).float())
    assert seen == [(0, [-1.0]), (1, [16.0, 17, 18, 19, 20]), (2, [32.0, 33, 34, 35, 36]), (3, [48.0, 49, 50, 51, 52])]
    kept = list(run_segments(plans, start, sample, color_match=False, keep=40))
    assert [c.shape[0] for c in kept] == [21, 16, 3] and len(seen) == 4 + 3  # no segment past what is kept
    with pytest.raises(ValueError, match="segment 0 gave"):
        list(run_segments(plans, start, lambda p, h: torch.zeros(3, 2, 2, 3)))
