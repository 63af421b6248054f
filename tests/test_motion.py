"""omega_l / omega_b: the raw variances, their invariances, the [0,1] mapping and the sliders."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from fantasytalking_core import lipmask as L
from fantasytalking_core import motion as M
from tests._media_helpers import cat, open_mouth, portrait, warp

pytestmark = pytest.mark.filterwarnings("ignore:SymbolDatabase.GetPrototype:UserWarning")
T = 8
PHASE = np.sin(np.linspace(0, 2 * np.pi, T))


@pytest.fixture(scope="module")
def still():
    return np.stack([portrait(256)] * T)


@pytest.fixture(scope="module")
def measured(still):
    """Still, rigidly moved and mouth-moving versions of one portrait, measured once."""
    face = still[0]
    pts = L.face_mesh_track(face[None], static_image_mode=True).landmarks[0]
    mouth, width = pts[[13, 14]].mean(0), float(np.ptp(pts[:, 0]))  # face ~75 px wide
    clips = {
        "still": still,
        "shift": np.stack([warp(face, 12 * p, 6 * p) for p in PHASE]),
        "roll": np.stack([warp(face, angle=6 * p) for p in PHASE]),
        "zoom": np.stack([warp(face, scale=1 + 0.08 * p) for p in PHASE]),
        "mouth": np.stack([open_mouth(face, mouth, 0.08 * width * abs(p), 0.25 * width) for p in PHASE]),
    }
    return {name: M.measure_motion(v) for name, v in clips.items()}


def test_a_still_clip_has_no_motion(measured):
    m = measured["still"]
    assert m.frames_with_face == m.frames_with_body == m.num_frames == T and m.notes == []
    assert m.raw_l < 1e-12 and m.raw_b < 1e-12 and m.omega_l == 0.0 and m.omega_b == 0.0


def test_face_motion_grows_with_mouth_motion_and_ignores_rigid_moves(measured):
    mouth = measured["mouth"].raw_l
    assert mouth > 3e-4 and measured["mouth"].omega_l > 0.5  # measured 6.2e-4 -> 0.66
    for rigid in ("shift", "roll", "zoom"):
        assert measured[rigid].raw_l < mouth / 5, (rigid, measured[rigid].raw_l)  # measured <= 5e-5
    assert measured["mouth"].raw_b < measured["shift"].raw_b / 5  # the body did not move (measured 6e-4, nose joint)


def test_body_motion_counts_global_movement(measured):
    assert measured["shift"].raw_b > 2e-3 and measured["shift"].omega_b > 0.4  # 12 px of ~137 px shoulders
    assert measured["zoom"].raw_b > 1e-4 > measured["still"].raw_b


def test_face_motion_raw_is_exactly_invariant_to_similarity_transforms():
    rng = np.random.default_rng(0)
    shape = rng.normal(size=(468, 2)) * 40 + 100
    frames = []
    for i in range(6):
        a, s, d = rng.uniform(-0.5, 0.5), rng.uniform(0.5, 2), rng.uniform(-50, 50, 2)
        rot = np.array([[math.cos(a), -math.sin(a)], [math.sin(a), math.cos(a)]])
        frames.append(s * shape @ rot.T + d)
    assert M.face_motion_raw(np.stack(frames)) < 1e-20
    # one landmark of 468 moves +-0.1 radius in x on alternate frames: variance 0.01 on that point
    unit = (shape - shape.mean(0)) / np.sqrt(((shape - shape.mean(0)) ** 2).sum() / 468)
    moved = np.stack([unit + (np.eye(468)[:, :1] * [0.1 * (-1) ** i, 0]) for i in range(6)])
    assert M.face_motion_raw(moved) == pytest.approx(0.01 / 468, rel=0.05)


def test_body_motion_raw_by_hand():
    joints, vis = np.zeros((4, 33, 2)), np.zeros((4, 33))
    joints[:, 11], joints[:, 12] = [50, 100], [150, 100]  # shoulders 100 px apart
    joints[:, 0] = [[100 + 10 * (-1) ** i, 40] for i in range(4)]  # nose sways +-10 px
    vis[:, [0, 11, 12]] = 1.0
    raw, frames = M.body_motion_raw(joints, vis)
    assert frames == 4 and raw == pytest.approx(0.01 / 3)  # nose variance 0.1^2, averaged over 3 joints
    vis[:3, 12] = 0.1
    assert M.body_motion_raw(joints, vis) == (None, 1)


def test_no_face_or_body_gives_neutral_with_notes():
    m = M.measure_motion(np.stack([cat()[:256, :256]] * 3))
    assert (m.omega_l, m.omega_b, m.raw_l, m.raw_b) == (0.5, 0.5, None, None)
    assert m.frames_with_face == 0 and len(m.notes) == 2 and "neutral" in m.notes[0]
    with pytest.raises(ValueError, match="at least 2 frames"):
        M.measure_motion(np.stack([cat()]))


def test_a_face_mesh_track_can_be_reused(still, measured):
    track = L.face_mesh_track(still, static_image_mode=True)
    assert M.measure_motion(still, track=track).raw_l == measured["still"].raw_l


def test_normalization_maps_round_trips_and_fits():
    n = M.MotionNormalization.default()
    assert n.omega_l(0.0) == 0.0 and n.omega_l(n.lip_low) == 0.0 and n.omega_l(1.0) == 1.0
    assert n.omega_l(math.sqrt(n.lip_low * n.lip_high)) == pytest.approx(0.5)  # log-space midpoint
    assert n.omega_b(math.sqrt(n.body_low * n.body_high)) == pytest.approx(0.5)
    lin = M.MotionNormalization(0.0, 2.0, 1.0, 3.0, space="linear")
    assert lin.omega_l(0.5) == 0.25 and lin.omega_b(2.5) == 0.75
    assert M.MotionNormalization.from_dict(n.to_dict()) == n
    with pytest.raises(ValueError, match="expected"):
        M.MotionNormalization.from_dict({**n.to_dict(), "extra": 1})
    with pytest.raises(ValueError, match="lip_low < lip_high"):
        M.MotionNormalization(lip_low=1e-3, lip_high=1e-4)
    values = np.arange(1, 102, dtype=float)  # 1..101: p5 = 6, p95 = 96
    fit = M.fit_normalization(values, values * 10)
    assert (fit.lip_low, fit.lip_high, fit.body_low, fit.body_high) == pytest.approx((6, 96, 60, 960))
    assert "101 pieces" in fit.source and M.MotionNormalization.from_dict(fit.to_dict()) == fit
    with pytest.raises(ValueError, match="at least 2 usable raw_l"):
        M.fit_normalization([1e-4], [1e-3, 1e-2])


def test_sliders():
    m = M.from_sliders(0.2, 1)
    assert (m.omega_l, m.omega_b, m.source) == (0.2, 1.0, "sliders")
    torch.testing.assert_close(m.to_tensor(3), torch.tensor([[0.2, 1.0]] * 3))
    assert M.from_sliders().to_tensor().tolist() == [[0.5, 0.5]]
    with pytest.raises(ValueError, match=r"omega_l \(facial motion\) = 1.3 is outside \[0, 1\]"):
        M.from_sliders(1.3, 0.5)
    with pytest.raises(ValueError, match=r"omega_b \(body motion\)"):
        M.from_sliders(0.5, float("nan"))
    with pytest.raises(ValueError, match="omega_b"):
        M.from_sliders(0.5, True)
