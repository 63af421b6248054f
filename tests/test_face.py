"""Face detection, selection, crop, alignment and the ArcFace path (tiny generated ONNX packs)."""

from __future__ import annotations

import importlib.util
import warnings

import numpy as np
import pytest
import torch

from fantasytalking_core import face as F
from tests._media_helpers import cat, decoy_model, fake_scrfd, insightface_image, portrait, tiny_arcface

HAS_INSIGHTFACE = importlib.util.find_spec("insightface") is not None
pytestmark = pytest.mark.filterwarnings("ignore:SymbolDatabase.GetPrototype:UserWarning")


def skimage_similarity(src, dst) -> np.ndarray:
    """skimage's least-squares similarity `[2,3]` (from_estimate since 0.26, estimate before)."""
    from skimage.transform import SimilarityTransform

    if hasattr(SimilarityTransform, "from_estimate"):
        return SimilarityTransform.from_estimate(src, dst).params[:2]
    tf = SimilarityTransform()
    tf.estimate(src, dst)
    return tf.params[:2]


def iou(a, b) -> float:
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    return inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter)


@pytest.fixture(scope="module")
def astronaut():
    from skimage import data

    return data.astronaut()  # 512x512, one face at about x 170-280, y 60-175


# ----------------------------------------------------------------------------- input formats


def test_image_formats_convert_to_rgb_uint8():
    rgb = np.random.default_rng(0).integers(0, 256, (5, 7, 3), dtype=np.uint8)
    assert np.array_equal(F.as_rgb_uint8(rgb), rgb)
    assert np.array_equal(F.as_rgb_uint8(rgb.astype(np.float32) / 255), rgb)
    assert np.array_equal(F.as_rgb_uint8(torch.from_numpy(rgb).float()[None] / 255), rgb)  # ComfyUI [1,H,W,C]
    rgba = np.concatenate([rgb, np.zeros((5, 7, 1), np.uint8)], -1)
    assert np.array_equal(F.as_rgb_uint8(rgba), rgb)
    gray = rgb[..., 0]
    for g in (gray, gray[..., None]):
        out = F.as_rgb_uint8(g)
        assert out.shape == (5, 7, 3) and all(np.array_equal(out[..., c], gray) for c in range(3))
    with pytest.raises(ValueError, match="batch of 2"):
        F.as_rgb_uint8(np.zeros((2, 5, 7, 3), np.uint8))
    with pytest.raises(ValueError, match="expected 0..1"):
        F.as_rgb_uint8(rgb.astype(np.float32))
    with pytest.raises(ValueError, match="channels last"):
        F.as_rgb_uint8(np.zeros((3, 64, 64), np.float32))
    video = F.as_rgb_uint8_frames(torch.rand(4, 6, 8, 1))
    assert video.shape == (4, 6, 8, 3) and video.dtype == np.uint8
    with pytest.raises(ValueError, match="mixes frame sizes"):
        F.as_rgb_uint8_frames([rgb, rgb[:4]])
    decoded = np.stack([rgb, rgb[::-1]])  # a decoded video: RGB bytes already, used as it is (no copy)
    assert F.as_rgb_uint8_frames(decoded) is decoded
    np.testing.assert_array_equal(F.as_rgb_uint8_frames(list(decoded)), decoded)
    with pytest.raises(ValueError, match="has no frames"):
        F.as_rgb_uint8_frames(decoded[:0])


# ----------------------------------------------------------------------------- detection


def test_detects_the_astronaut_in_any_format(astronaut):
    faces = F.detect_faces(astronaut)
    assert len(faces) == 1
    face = faces[0]
    assert iou(face.box, (170, 60, 280, 175)) > 0.6, face.box
    assert face.score > 0.8 and face.keypoints.shape == (6, 2)
    right_eye, left_eye, nose, mouth = face.keypoints[:4]
    assert right_eye[0] < nose[0] < left_eye[0] and nose[1] < mouth[1]  # the person's right eye is image-left
    rgba = np.concatenate([astronaut, np.full((512, 512, 1), 255, np.uint8)], -1)
    gray = (astronaut.astype(np.float32) @ [0.299, 0.587, 0.114] / 255).astype(np.float32)
    for variant in (rgba, gray, torch.from_numpy(astronaut).float() / 255):
        (other,) = F.detect_faces(variant)
        assert iou(other.box, face.box) > 0.85


@pytest.mark.parametrize("size", [96, 2048])
def test_tiny_and_huge_images(astronaut, size):
    import cv2

    (ref,) = F.detect_faces(astronaut)
    interp = cv2.INTER_AREA if size < 512 else cv2.INTER_LINEAR
    (face,) = F.detect_faces(cv2.resize(astronaut, (size, size), interpolation=interp))
    assert iou([v * 512 / size for v in face.box], ref.box) > 0.7


def test_no_face_is_a_clear_error():
    assert F.detect_faces(cat()) == []
    with pytest.raises(ValueError, match="no face found in the reference image.*64 px"):
        F.embed_reference(cat())


def test_several_faces_take_the_largest_with_a_note():
    faces = F.detect_faces(insightface_image("t1.jpg"))  # six people; MediaPipe finds >= 3 of them
    assert len(faces) >= 3
    assert [f.area for f in faces] == sorted((f.area for f in faces), reverse=True)
    with pytest.warns(UserWarning, match="using the largest"):
        best, note = F.select_face(list(reversed(faces)))
    assert best is faces[0] and f"found {len(faces)} faces" in note
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert F.select_face(faces[:1]) == (faces[0], "")


# ----------------------------------------------------------------------------- crop and alignment


def test_crop_is_square_and_padded_at_borders(astronaut):
    det = F.FaceDetection((100.0, 50.0, 200.0, 130.0), 1.0)
    crop = F.crop_face(astronaut, det, scale=1.5)
    assert crop.shape == (150, 150, 3)  # 1.5 x the longer side (100), centred on (150, 90)
    assert np.array_equal(crop, astronaut[15:165, 75:225])
    corner = F.FaceDetection((-20.0, -20.0, 40.0, 40.0), 1.0)
    crop = F.crop_face(astronaut, corner, scale=2.0, size=60)
    assert crop.shape == (60, 60, 3)
    assert crop[:20, :20].max() == 0 and crop[40:, 40:].max() > 0  # black outside the image
    with pytest.raises(ValueError, match="scale"):
        F.crop_face(astronaut, det, scale=0)


def test_similarity_transform_matches_skimage():
    from skimage.transform import SimilarityTransform

    rng = np.random.default_rng(1)
    src = rng.uniform(0, 300, (5, 2))
    ours = F.similarity_transform(src, F.ARCFACE_TEMPLATE)
    np.testing.assert_allclose(ours, skimage_similarity(src, F.ARCFACE_TEMPLATE), atol=1e-6)
    truth = SimilarityTransform(scale=0.7, rotation=0.3, translation=(5, -9))
    np.testing.assert_allclose(F.similarity_transform(src, truth(src)), truth.params[:2], atol=1e-9)


def test_mediapipe_five_points_on_an_arcface_aligned_photo():
    tom = insightface_image("Tom_Hanks_54745.png")  # already aligned to the 112x112 template
    five, source = F.mediapipe_five_points(tom, F.detect_faces(tom)[0])
    assert source == "mediapipe_face_mesh"
    m = F.similarity_transform(five, F.ARCFACE_TEMPLATE)
    scale, angle = np.hypot(*m[:, 0]), np.degrees(np.arctan2(m[1, 0], m[0, 0]))
    assert 0.9 < scale < 1.1 and abs(angle) < 5 and np.abs(m[:, 2]).max() < 8, m  # measured: 0.95, 1.0 deg, 3 px
    eyes_mouth = five[[0, 1, 3, 4]] - F.ARCFACE_TEMPLATE[[0, 1, 3, 4]]
    assert np.linalg.norm(eyes_mouth, axis=1).max() < 6


# ----------------------------------------------------------------------------- ArcFace


@pytest.fixture(scope="module")
def pack(tmp_path_factory):
    root = tmp_path_factory.mktemp("buffalo_l")
    decoy_model(root / "2d106det.onnx")
    decoy_model(root / "a_landmarks_first_in_name_order.onnx")
    tiny_arcface(root / "w600k_r50.onnx")
    return root


def reference_embedding(model_path, aligned_rgb: np.ndarray, mean: float = 127.5, std: float = 127.5) -> np.ndarray:
    import onnxruntime

    sess = onnxruntime.InferenceSession(str(model_path), providers=["CPUExecutionProvider"])
    blob = ((aligned_rgb.astype(np.float32) - mean) / std).transpose(2, 0, 1)[None]
    out = sess.run(None, {sess.get_inputs()[0].name: blob})[0][0]
    return out / np.linalg.norm(out)


def test_arcface_found_by_signature_and_embeds_like_insightface(pack):
    emb = F.ArcFaceEmbedder.from_pack(pack, landmarks="mediapipe")
    assert emb.model_path.name == "w600k_r50.onnx" and (emb.input_mean, emb.input_std) == (127.5, 127.5)
    img = portrait(256)
    result = F.embed_reference(img, embedder=emb)
    assert result.embedding.shape == (512,) and result.embedding.dtype == np.float32
    assert abs(np.linalg.norm(result.embedding) - 1) < 1e-5
    assert result.landmark_source == "mediapipe_face_mesh" and result.detector == "mediapipe_full_range"
    assert result.aligned.shape == (112, 112, 3) and result.num_faces == 1
    # the same numbers by hand: align with skimage + cv2, normalise, run onnxruntime on RGB NCHW
    import cv2

    matrix = skimage_similarity(result.landmarks, F.ARCFACE_TEMPLATE)
    aligned = cv2.warpAffine(img, matrix, (112, 112), borderValue=0.0)
    assert np.abs(aligned.astype(int) - result.aligned).max() <= 1
    np.testing.assert_allclose(result.embedding, reference_embedding(emb.model_path, aligned), atol=1e-4)
    # channel order matters for this net, so the check above would catch an RGB/BGR swap
    assert np.abs(reference_embedding(emb.model_path, aligned[..., ::-1]) - result.embedding).max() > 1e-2


@pytest.mark.skipif(not HAS_INSIGHTFACE, reason="insightface not installed: pip install --no-deps insightface==2.1")
def test_preprocessing_matches_insightface_arcface_onnx(pack, tmp_path):
    from insightface.model_zoo.arcface_onnx import ArcFaceONNX
    from insightface.utils import face_align

    img = portrait(256)
    result = F.embed_reference(img, embedder=F.ArcFaceEmbedder.from_pack(pack, landmarks="mediapipe"))
    bgr = np.ascontiguousarray(img[..., ::-1])  # insightface works on cv2 BGR images
    theirs = ArcFaceONNX(str(pack / "w600k_r50.onnx"))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # their skimage estimate() call
        feat = theirs.get_feat(face_align.norm_crop(bgr, result.landmarks)).ravel()
    np.testing.assert_allclose(result.embedding, feat / np.linalg.norm(feat), atol=1e-4)
    # mxnet-style graphs (Sub, Mul first) normalise inside: both sides must feed raw 0..255
    tiny_arcface(tmp_path / "glintr100.onnx", mxnet_style=True)
    ours = F.ArcFaceEmbedder.from_pack(tmp_path, landmarks="mediapipe")
    theirs = ArcFaceONNX(str(tmp_path / "glintr100.onnx"))
    assert (ours.input_mean, ours.input_std) == (theirs.input_mean, theirs.input_std) == (0.0, 1.0)


@pytest.mark.skipif(not HAS_INSIGHTFACE, reason="insightface not installed: pip install --no-deps insightface==2.1")
def test_scrfd_keypoints_are_used_when_the_pack_has_a_detector(pack, tmp_path):
    import shutil

    img = portrait(256)
    mp_result = F.embed_reference(img, embedder=F.ArcFaceEmbedder.from_pack(pack, landmarks="mediapipe"))
    box = np.array(mp_result.box) * 2.5  # the 256 px image is resized to the detector's 640
    kps = mp_result.landmarks * 2.5 + np.array([[1.0, -1.0]] * 5)  # slightly off, to tell them apart
    shutil.copy(pack / "w600k_r50.onnx", tmp_path / "w600k_r50.onnx")
    fake_scrfd(tmp_path / "det_10g.onnx", box, kps)
    emb = F.ArcFaceEmbedder.from_pack(tmp_path)
    assert emb.landmarks == "scrfd" and emb.detector_path.name == "det_10g.onnx"
    result = F.embed_reference(img, embedder=emb)
    assert result.detector == result.landmark_source == "scrfd:det_10g.onnx"
    np.testing.assert_allclose(result.landmarks, kps / 2.5, atol=1e-3)
    np.testing.assert_allclose(result.box, box / 2.5, atol=1e-3)
    np.testing.assert_array_equal(result.aligned, F.align_face(img, result.landmarks))
    assert not np.allclose(result.embedding, mp_result.embedding, atol=1e-4)
    with pytest.raises(RuntimeError, match="needs an SCRFD detector"):
        F.ArcFaceEmbedder.from_pack(pack, landmarks="scrfd")


def test_missing_or_wrong_pack_is_a_clear_error(tmp_path, pack):
    expected = r"not found: '.*antelopev2'.*antelopev2 or buffalo_l.*ComfyUI/models/insightface/models/<pack>/"
    with pytest.raises(FileNotFoundError, match=expected):
        F.ArcFaceEmbedder.from_pack(tmp_path / "antelopev2")
    with pytest.raises(FileNotFoundError, match="no .onnx files"):
        F.ArcFaceEmbedder.from_pack(tmp_path)
    decoy_model(tmp_path / "1k3d68.onnx")
    (tmp_path / "glintr100.onnx").write_text("version https://git-lfs.github.com/spec/v1\n")
    with pytest.raises(FileNotFoundError, match=r"no ArcFace recognition model.*unreadable: glintr100.onnx"):
        F.ArcFaceEmbedder.from_pack(tmp_path)
    with pytest.raises(FileNotFoundError, match="not found"):
        F.embed_reference(portrait(128), pack_dir=tmp_path / "nope")


def test_without_a_pack_the_crop_still_comes_back():
    result = F.embed_reference(portrait(256), crop_size=128)
    assert result.embedding is None and result.aligned is None
    assert result.crop.shape == (128, 128, 3) and "no insightface pack" in result.note
    x0, y0, x1, y1 = result.box
    assert 60 < (x0 + x1) / 2 < 200 and 30 < (y0 + y1) / 2 < 170 and x1 - x0 > 40


def test_a_mediapipe_without_bundled_models_gets_a_clear_error(monkeypatch):
    import sys
    import types

    from fantasytalking_core.face import mediapipe_solutions

    monkeypatch.setitem(sys.modules, "mediapipe", types.SimpleNamespace(__version__="1.2.2"))
    with pytest.raises(RuntimeError, match=r"mediapipe 1.2.2 ships no bundled.*mediapipe==0.10.14"):
        mediapipe_solutions()
