"""fantasytalking_core.frames: the 4k+1 rule, video <-> latent frames, the frame plan of a recording."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from fantasytalking_core import frames as F
from fantasytalking_core.pipeline import TinyCausalVAE


def test_check_frames_one_rule_one_message():
    for n in (5, 9, 81, 121, np.int64(81)):
        got = F.check_frames(n)
        assert got == n and type(got) is int
    for bad, near in ((80, "77 or 81"), (4, "5"), (1, "5"), (0, "5"), (-3, "5"), (82, "81 or 85")):
        with pytest.raises(ValueError, match=f"^num_frames = {bad} is not 4k\\+1 and at least 5 \\(Wan's VAE packs 4 "
                                             f"frames per latent frame after the first\\): use {near}$"):
            F.check_frames(bad)
    for bad in (81.0, "81", None, True):
        with pytest.raises(ValueError, match="is not 4k\\+1"):
            F.check_frames(bad)
    with pytest.raises(ValueError, match="^segment_frames = 7 .*: use 5 or 9, or 0 to follow the audio$"):
        F.check_frames(7, "segment_frames", zero="follow the audio")
    assert F.check_frames(1, least=1) == 1  # a single held frame
    with pytest.raises(ValueError, match="at least 1 .*: use 1 or 5$"):
        F.check_frames(3, least=1)


def test_latent_and_video_frames_match_a_causal_vae():
    vae = TinyCausalVAE()  # frame 0 alone, then 4 frames per latent frame, as Wan's
    for n in (1, 5, 9, 13, 21):
        t = vae.encode(torch.zeros(1, 3, n, 8, 8)).shape[2]
        assert F.latent_frames(n) == t and F.video_frames(t) == n
    assert F.latent_frames(81) == 21 and F.video_frames(21) == 81
    for t in range(1, 60):
        assert F.latent_frames(F.video_frames(t)) == t
        F.check_frames(F.video_frames(t), least=1)  # always 4k+1


def test_plan_frames_follows_the_official_formula():
    # hand-computed: int(23 * s // 4) * 4 + 5, capped at 81
    table = {(0.0, 23): 5, (1.0, 23): 25, (2.0, 23): 49, (3.0, 23): 73, (3.3, 23): 77,
             (3.5, 23): 81, (10.0, 23): 81, (2.0, 25): 53, (1.0, 16): 21, (0.17, 23): 5}
    for (s, fps), want in table.items():
        assert F.plan_frames(s, fps)[0] == want, (s, fps)
    assert F.plan_frames(10.0, 23, max_frames=0)[0] == 233
    assert F.plan_frames(10.0, 23, max_frames=121) == (121, "audio needs 233 frames; capped at max_frames 121")
    assert F.plan_frames(10.0, 23, max_frames=0) == (233, "from audio length")  # 0 = no cap
    assert F.plan_frames(10.0, 23, frames=49) == (49, "fixed")  # frames wins over the audio and the cap
    assert F.plan_frames(1.0, 23, frames=121, max_frames=81) == (121, "fixed")
    for fps in (8, 16, 23, 24, 25, 29.97, 30):
        for s in np.linspace(0, 12, 97):
            n, _ = F.plan_frames(float(s), fps, 0, 81)
            assert n == min(int(fps * s // 4) * 4 + 5, 81) and (n - 1) % 4 == 0
    assert F.seconds_for_frames(81, 23) == 81 / 23
    for bad, near in ((80, "77 or 81"), (3, "5"), (1, "5"), (82, "81 or 85")):
        with pytest.raises(ValueError, match=f"^max_frames = {bad} is not 4k\\+1 .*: use {near}, or 0 to have no cap$"):
            F.plan_frames(1.0, 23, max_frames=bad)
        with pytest.raises(ValueError, match=f"^frames = {bad} is not 4k\\+1 .*: use {near}, or 0 to follow the audio"):
            F.plan_frames(1.0, 23, frames=bad)
    for bad in (-1, 82.0, None, True):
        with pytest.raises(ValueError, match="must be an int >= 0"):
            F.plan_frames(1.0, 23, max_frames=bad)
    with pytest.raises(ValueError, match="seconds"):
        F.plan_frames(float("nan"))


def test_cut_note_says_what_the_cap_left_out():
    n, how = F.plan_frames(10.0, 23, 0, 81)
    assert F.cut_note(10.0, n, 23, 81, how) == ("max_frames 81 cut the video to 3.52 s: the last 6.48 s of the 10.00 s "
                                                "recording are left out (max_frames 0 makes the whole recording)")
    assert F.cut_note(10.0, n, 23, 81, how, whole="here").endswith("(here)")
    for frames, cap in ((0, 0), (49, 81), (0, 241)):
        n, how = F.plan_frames(10.0, 23, frames, cap)
        assert F.cut_note(10.0, n, 23, cap, how) == ""
