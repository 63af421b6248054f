"""Subject / background dynamics, flicker and sharpness on videos with known motion and light."""

from __future__ import annotations

import numpy as np
import pytest

from evaluation import dynamics as D
from evaluation import quality as Q
from tests.test_eval_synth import pan_video, still_video, texture

pytestmark = pytest.mark.filterwarnings("ignore:SymbolDatabase.GetPrototype:UserWarning")


def dynamics_of(frames: np.ndarray) -> D.DynamicsResult:
    return D.measure_dynamics(D.farneback_flows(frames), D.person_masks(frames), 1.0, 4)


def test_a_still_video_has_no_dynamics():
    res = dynamics_of(still_video(6)).headline()
    assert 0.3 < res["subject_fraction"] < 0.8  # the astronaut is found (measured 0.52)
    assert res["subject_dynamics"] < 0.005 and res["background_dynamics"] < 0.005  # measured 1e-4, 4e-4
    assert res["subject_dynamics_px"] < 0.02


def test_a_panning_background_moves_more_than_the_still_subject():
    """Background texture pans 3 px/frame behind a static pasted portrait (whose own photo
    background is static too, so BD < 3 px). Measured: BD 2.46 px, SD 0.52 px (flow bleeds
    from the moving edge into the face region)."""
    res = dynamics_of(pan_video(10, speed=3)).headline()
    assert res["background_dynamics"] > 3 * res["subject_dynamics"]
    assert 1.5 < res["background_dynamics_px"] < 3.2 and res["subject_dynamics_px"] < 1.0
    assert res["background_dynamics"] == pytest.approx(res["background_dynamics_px"] / np.hypot(256, 256) * 100)


def test_farneback_recovers_a_known_translation():
    tex = texture(96, 140)
    frames = np.stack([tex[:, 20:116], tex[:, 18:114]])  # content moves +2 px in x
    flow = D.farneback_flows(frames)[0][20:-20, 20:-20]
    assert np.median(flow[..., 0]) == pytest.approx(2.0, abs=0.05) and abs(np.median(flow[..., 1])) < 0.05


def test_regions_leave_a_band_out_at_the_mask_edge():
    from scipy import ndimage

    mask = np.zeros((40, 40), bool)
    mask[10:30, 12:28] = True
    sub, bg = D.split_regions(mask, 3)
    disk = np.hypot(*np.mgrid[-3:4, -3:4]) <= 3.5  # OpenCV's 7x7 ellipse
    assert np.array_equal(sub, ndimage.binary_erosion(mask, disk))
    assert not (sub & bg).any() and not (sub | bg)[10, 12] and (sub | bg).sum() < 40 * 40


def test_flicker_luma_is_the_brightness_step():
    base = np.clip(texture(64, 64).astype(int), 20, 230)
    frames = np.stack([base + (5 if i % 2 else 0) for i in range(6)]).astype(np.uint8)
    assert np.allclose(Q.flicker_luma(frames), 5.0, atol=1e-4)  # luma weights sum to 1


def test_warp_residual_removes_motion_but_keeps_flicker():
    tex = np.clip(texture(64, 80).astype(int), 20, 230)
    f0, f1 = tex[:, 8:72], tex[:, 6:70]  # moved +2 px
    flow = np.zeros((1, 64, 64, 2), np.float32)
    flow[..., 0] = 2.0
    moved = np.stack([f0, f1]).astype(np.uint8)
    assert Q.warp_residual(moved, flow)[0] < 1e-4
    flick = np.stack([f0, f1 + 7]).astype(np.uint8)
    assert Q.warp_residual(flick, flow)[0] == pytest.approx(7.0, abs=1e-3)
    assert Q.warp_residual(moved, np.zeros_like(flow))[0] > 5  # without the flow the motion shows


def test_sharpness_is_the_laplacian_variance_and_drops_with_blur():
    import cv2
    from scipy import ndimage

    img = still_video(1)[0]
    grey = Q.luma(img[None])[0].astype(np.float64)
    ref = ndimage.laplace(grey, mode="mirror").var()  # OpenCV's default border is reflect-101
    assert Q.laplacian_variance(grey) == pytest.approx(ref, rel=1e-9)
    blurred = cv2.GaussianBlur(img, (0, 0), 2)
    res = Q.measure_quality(np.stack([img, img]), landmarks=None).headline()
    res_blur = Q.measure_quality(np.stack([blurred, blurred])).headline()
    assert res_blur["sharpness"] < 0.3 * res["sharpness"] and res["sharpness_face"] is None


def test_face_box_crops_the_landmarks_with_a_margin():
    pts = np.array([[10.0, 20.0], [50.0, 80.0]])
    assert Q.face_box(pts, 100, 100) == (6, 14, 54, 86)
    assert Q.face_box(np.full((2, 2), np.nan), 100, 100) is None
