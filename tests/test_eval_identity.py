"""Identity consistency: the HOG fallback separates people, the ArcFace path uses the pack and
says so, and the frames' five points equal face.mediapipe_five_points'."""

from __future__ import annotations

import numpy as np
import pytest

from fantasytalking_core import face as FACE
from evaluation import identity as I
from evaluation.config import find_insightface_pack
from fantasytalking_core.lipmask import face_mesh_track
from tests._media_helpers import insightface_image, portrait, tiny_arcface, warp
from tests.test_eval_synth import still_video

pytestmark = pytest.mark.filterwarnings("ignore:SymbolDatabase.GetPrototype:UserWarning")


def test_hog_descriptor_size_and_norm():
    e = I.HogEmbedder()
    emb = e.embed_aligned(np.random.default_rng(0).integers(0, 255, (3, 112, 112, 3), dtype=np.uint8))
    assert emb.shape == (3, ((112 - 32) // 16 + 1) ** 2 * 4 * 9) == (3, e.dim)
    assert np.allclose(np.linalg.norm(emb, axis=1), 1.0, atol=1e-6)
    with pytest.raises(ValueError, match=r"expected \[N,112,112,3\]"):
        e.embed_aligned(np.zeros((2, 64, 64, 3), np.uint8))


def test_hog_fallback_is_higher_for_the_same_person_than_for_another():
    """Measured: 0.997 for the astronaut moved and rotated, 0.76 for Tom Hanks (insightface's photo)."""
    e = I.HogEmbedder()
    ref, _ = I.reference_embedding(e, portrait(256))
    same, _ = I.reference_embedding(e, warp(portrait(256), dx=10, dy=-5, angle=5, scale=1.1))
    other, _ = I.reference_embedding(e, insightface_image("Tom_Hanks_54745.png"))
    assert ref @ same > 0.95 and ref @ other < ref @ same - 0.1


def test_five_points_from_the_track_match_face_mediapipe_five_points():
    img = portrait(256)
    track = face_mesh_track(img[None], static_image_mode=True)
    mine = I.five_points_from_mesh(track.landmarks[0])
    theirs, source = FACE.mediapipe_five_points(img, FACE.detect_faces(img)[0])
    assert source == "mediapipe_face_mesh"
    assert np.abs(mine - theirs).max() < 2.0  # their mesh runs on a 2x crop resized to 256 px


def test_identity_of_a_still_video_against_its_own_photo_with_a_tiny_arcface_pack(tmp_path):
    pack = tmp_path / "antelopev2"
    pack.mkdir()
    tiny_arcface(pack / "glintr100.onnx")
    emb = I.make_embedder(find_insightface_pack(pack))
    assert emb.name == "arcface:antelopev2/glintr100.onnx"
    frames = still_video(4)
    track = face_mesh_track(frames)
    res = I.measure_identity(frames, track.landmarks, track.found, emb, reference=frames[0], max_frames=3)
    assert res.available and res.embedder == emb.name and res.frames == [0, 2, 3]
    # identical frames; face mesh in tracking mode refines its landmarks a little from frame to frame
    assert np.all(res.to_first > 0.97) and np.all(res.adjacent > 0.97)  # measured 0.991-0.999
    assert res.to_reference.min() > 0.9  # same photo; the reference's five points come from a 2x crop
    # reference computed another way: the pack's embedder on the frame aligned by hand
    aligned = FACE.align_face(frames[0], I.five_points_from_mesh(track.landmarks[0]))
    direct = emb.embedder.embed_aligned(aligned)[0]
    ref_direct = emb.embedder.embed_aligned(FACE.align_face(
        frames[0], FACE.mediapipe_five_points(frames[0], FACE.detect_faces(frames[0])[0])[0]))[0]
    assert res.to_reference[0] == pytest.approx(float(direct @ ref_direct), abs=1e-5)
    head = res.headline()
    assert head["identity_embedder"] == emb.name and head["identity_to_first"] == pytest.approx(res.to_first.mean())


def test_no_face_and_reference_without_face_are_reported():
    e = I.HogEmbedder()
    frames = still_video(2)
    none = I.measure_identity(frames, np.full((2, 468, 2), np.nan), np.zeros(2, bool), e)
    assert not none.available and "no face" in none.reason and none.headline()["identity_to_first"] is None
    track = face_mesh_track(frames)
    res = I.measure_identity(frames, track.landmarks, track.found, e, reference=np.full((64, 64, 3), 128, np.uint8))
    assert res.available and res.to_reference is None and "no face found in the reference" in res.notes[0]


def test_a_missing_pack_folder_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="insightface pack folder not found"):
        find_insightface_pack(tmp_path / "nope")
    assert isinstance(I.make_embedder(None), I.HogEmbedder)
