"""Lip masks from MediaPipe face mesh, the missing-frame policies, and the latent projection."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from fantasytalking_core import face as F
from fantasytalking_core import lipmask as L
from tests._media_helpers import portrait

pytestmark = pytest.mark.filterwarnings("ignore:SymbolDatabase.GetPrototype:UserWarning")


@pytest.fixture(scope="module")
def clip():
    """Five frames of a still 256 px portrait, its face-mesh track and lip masks."""
    frames = np.stack([portrait(256)] * 5)
    track = L.face_mesh_track(frames)
    return frames, track, L.lip_masks(frames, track=track)


def test_outer_lip_contour_is_a_closed_chain_of_facemesh_lip_edges():
    from mediapipe.python.solutions.face_mesh_connections import FACEMESH_LIPS

    edges = {frozenset(e) for e in FACEMESH_LIPS}
    ring = list(L.LIP_OUTER)
    assert len(set(ring)) == 20 and all(frozenset(p) in edges for p in zip(ring, ring[1:] + ring[:1]))


def test_mask_on_a_real_face_covers_the_mouth_and_stays_in_the_face_box(clip):
    frames, track, lips = clip
    assert lips.masks.shape == (5, 256, 256) and lips.masks.dtype == torch.float32
    assert set(torch.unique(lips.masks).tolist()) == {0.0, 1.0}
    assert lips.found.all() and not lips.filled.any() and lips.notes == []
    area = lips.area_fraction
    assert 0.004 < float(area.min()) and float(area.max()) < 0.03, area  # measured 0.0056 on this 256 px portrait
    x0, y0, x1, y1 = F.detect_faces(frames[0])[0].box
    for t in range(5):
        ys, xs = np.nonzero(lips.masks[t].numpy())
        assert x0 <= xs.min() and xs.max() <= x1 and (y0 + y1) / 2 <= ys.min() and ys.max() <= y1
        pts = track.landmarks[t]
        for i in (13, 14, 0, 17, 78, 308):  # inner and outer lip midpoints, inner corners
            x, y = np.round(pts[i]).astype(int)
            assert lips.masks[t, y, x] == 1, i
        for i in (1, 33, 263, 152):  # nose tip, eye corners, chin: outside the lips
            x, y = np.round(pts[i]).astype(int)
            assert lips.masks[t, y, x] == 0, i
        np.testing.assert_allclose(lips.polygons[t], pts[list(L.LIP_OUTER)])


def test_dilation_grows_the_mask(clip):
    frames, track, lips = clip
    areas = [float(L.lip_masks(frames, dilation=d, track=track).masks.sum()) for d in (0, 2, 5)]
    assert areas[0] < areas[1] < areas[2]
    grown = L.lip_masks(frames, dilation=2, track=track).masks
    assert bool((grown >= lips.masks).all())  # a superset
    with pytest.raises(ValueError, match="dilation"):
        L.lip_masks(frames, dilation=-1, track=track)


def test_frames_without_a_face_are_reported():
    face = portrait(128)
    blank = np.full_like(face, 127)
    lips = L.lip_masks(np.stack([face, blank, face]))
    assert lips.found.tolist() == [True, False, True]
    assert lips.filled.tolist() == [False, True, False] and float(lips.masks[1].sum()) > 0
    with pytest.raises(ValueError, match=r"no face found in 1 of 3 frames \(\[1\]\)"):
        L.lip_masks(np.stack([face, blank, face]), missing="error")


def synthetic_track(found: list[bool]) -> L.FaceMeshTrack:
    """A track whose lip ring is a 40x20 px ellipse moving 10 px right per frame; NaN where not found."""
    t = len(found)
    angles = np.linspace(0, 2 * np.pi, 20, endpoint=False)
    ring = np.stack([100 + 20 * np.cos(angles), 80 + 10 * np.sin(angles)], -1)
    landmarks = np.full((t, 468, 2), np.nan, np.float32)
    for i in range(t):
        if found[i]:
            landmarks[i, list(L.LIP_OUTER)] = ring + [10 * i, 0]
    return L.FaceMeshTrack(landmarks, np.array(found), 160, 256)


@pytest.mark.parametrize(
    "policy, empty, filled",
    [
        ("interpolate", [0, 5], [2, 3]),  # gaps between found frames are filled; the ends stay empty
        ("previous", [0], [2, 3, 5]),
        ("empty", [0, 2, 3, 5], []),
    ],
)
def test_missing_frame_policies(policy, empty, filled):
    track = synthetic_track([False, True, False, False, True, False])
    lips = L.lip_masks(None, missing=policy, track=track)
    sums = lips.masks.sum(dim=(1, 2))
    assert [i for i in range(6) if sums[i] == 0] == empty
    assert np.flatnonzero(lips.filled).tolist() == filled
    if policy == "interpolate":  # frames 2 and 3 lie 1/3 and 2/3 of the way from frame 1 to frame 4
        np.testing.assert_allclose(lips.polygons[2], track.landmarks[1, list(L.LIP_OUTER)] + [10, 0], atol=1e-4)
        np.testing.assert_allclose(lips.polygons[3], track.landmarks[4, list(L.LIP_OUTER)] - [10, 0], atol=1e-4)
    if policy == "previous":
        np.testing.assert_array_equal(lips.polygons[5], track.landmarks[4, list(L.LIP_OUTER)])
    assert any("empty lip mask" in n for n in lips.notes)
    assert abs(float(sums[1]) - np.pi * 20 * 10) < 0.1 * np.pi * 200  # the ellipse's area


def test_no_face_anywhere_gives_empty_masks_and_a_note():
    lips = L.lip_masks(None, track=synthetic_track([False] * 3))
    assert float(lips.masks.sum()) == 0 and "3 of 3" in lips.notes[-1]
    with pytest.raises(ValueError, match="missing must be one of"):
        L.lip_masks(None, missing="nearest", track=synthetic_track([True]))


def trilinear_reference(masks: np.ndarray, size: tuple[int, int, int]) -> np.ndarray:
    """Separable linear resampling with half-pixel centres (align_corners=False), by matrices."""

    def matrix(n_in: int, n_out: int) -> np.ndarray:
        m = np.zeros((n_out, n_in))
        for o in range(n_out):
            x = min(max((o + 0.5) * n_in / n_out - 0.5, 0.0), n_in - 1)
            lo = int(np.floor(x))
            hi = min(lo + 1, n_in - 1)
            m[o, lo] += 1 - (x - lo)
            m[o, hi] += x - lo
        return m

    mt, mh, mw = (matrix(n, s) for n, s in zip(masks.shape, size))
    return np.einsum("at,bh,cw,thw->abc", mt, mh, mw, masks)


def test_to_latent_shape_values_and_reference():
    rng = np.random.default_rng(0)
    masks = (rng.random((17, 48, 64)) > 0.7).astype(np.float32)
    lat = L.to_latent(masks)
    assert lat.shape == (5, 6, 8) and lat.dtype == torch.float32  # (17-1)//4+1 = 5
    np.testing.assert_allclose(lat.numpy(), trilinear_reference(masks, (5, 6, 8)), atol=1e-5)
    assert L.to_latent(torch.from_numpy(masks), num_latent_frames=3).shape == (3, 6, 8)
    with pytest.raises(ValueError, match="not a multiple of 8"):
        L.to_latent(np.zeros((5, 50, 64)))


def test_to_latent_keeps_the_fractional_area(clip):
    _frames, track, _ = clip
    lips = L.lip_masks(np.zeros((9, 256, 256, 3), np.uint8), track=L.FaceMeshTrack(
        np.repeat(track.landmarks[:1], 9, 0), np.ones(9, bool), 256, 256))
    lat = L.to_latent(lips.masks)  # a real mouth, ~0.9% of the frame, 9 frames -> 3 latent frames
    assert lat.shape == (3, 32, 32)
    assert abs(float(lat.mean()) / float(lips.masks.mean()) - 1) < 0.15
    rng = np.random.default_rng(1)  # boxes >= 3 cells wide at random sub-cell offsets
    ratios = []
    for _ in range(20):
        m = np.zeros((5, 128, 128), np.float32)
        x, y, w, h = rng.integers(0, 60, 2).tolist() + rng.integers(24, 60, 2).tolist()
        m[:, y : y + h, x : x + w] = 1
        ratios.append(float(L.to_latent(m).mean()) / float(m.mean()))
    assert abs(np.mean(ratios) - 1) < 0.03 and max(abs(r - 1) for r in ratios) < 0.25
