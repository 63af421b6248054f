"""The MediaPipe backends: choice, errors, and the Tasks backend run for real against the solutions one.

Google's Tasks model files cannot be downloaded here, so `task_dir` assembles working equivalents
offline from the models inside the mediapipe 0.10.14 wheel, with the file names users download:
- blaze_face_short_range.tflite: the wheel's face_detection_short_range.tflite (same BlazeFace
  short-range model, with the metadata the Tasks FaceDetector needs);
- face_landmarker.task: a zip of face_detector.tflite (the same) and face_landmarks_detector.tflite,
  the wheel's attention mesh model (face_landmark_with_attention.tflite, what solutions runs with
  refine_landmarks=True) with its six landmark outputs merged into the single 478x3 tensor the
  Tasks graph reads, by an appended CONCATENATION + GATHER (lips, eyes and irises overwrite the
  mesh x, y as solutions' refinement does; iris z is copied from one eye-contour point, where
  solutions averages 16: z is not used here);
- pose_landmarker_full.task: a zip of the wheel's pose_detection.tflite and pose_landmark_full.tflite
  with input-normalisation metadata added (the Tasks graph refuses float inputs without it).
So the Tasks backend runs the very networks the solutions backend runs (the mesh: solutions with
refine_landmarks=True), and the two must agree to rounding. Measured here (max over points, pixels):
face mesh 0.002 (astronaut, 512 px) and 0.025 (Tom Hanks, 112 px); face detector boxes differ only by
the Tasks API's integer pixel box. Google's own .task files hold newer networks; they are not tested.
"""

from __future__ import annotations

import os
import sys
import types
import zipfile
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest

from fantasytalking_core import face as F
from fantasytalking_core import lipmask as L
from fantasytalking_core import mediapipe_backend as B
from fantasytalking_core import motion as M
from tests._media_helpers import insightface_image, open_mouth, portrait, warp

pytestmark = pytest.mark.filterwarnings("ignore:SymbolDatabase.GetPrototype:UserWarning")

# Landmark index maps of MediaPipe's attention mesh (tensors_to_face_landmarks_with_attention):
# which mesh point each refinement output point replaces.
LIPS = (61, 146, 91, 181, 84, 17, 314, 405, 321, 375, 291, 185, 40, 39, 37, 0, 267, 269, 270, 409, 78, 95, 88, 178, 87,
        14, 317, 402, 318, 324, 308, 191, 80, 81, 82, 13, 312, 311, 310, 415, 76, 77, 90, 180, 85, 16, 315, 404, 320,
        307, 306, 184, 74, 73, 72, 11, 302, 303, 304, 408, 62, 96, 89, 179, 86, 15, 316, 403, 319, 325, 292, 183, 42,
        41, 38, 12, 268, 271, 272, 407)
LEFT_EYE = (33, 7, 163, 144, 145, 153, 154, 155, 133, 246, 161, 160, 159, 158, 157, 173, 130, 25, 110, 24, 23, 22, 26,
            112, 243, 247, 30, 29, 27, 28, 56, 190, 226, 31, 228, 229, 230, 231, 232, 233, 244, 113, 225, 224, 223,
            222, 221, 189, 35, 124, 46, 53, 52, 65, 143, 111, 117, 118, 119, 120, 121, 128, 245, 156, 70, 63, 105, 66,
            107, 55, 193)
RIGHT_EYE = (263, 249, 390, 373, 374, 380, 381, 382, 362, 466, 388, 387, 386, 385, 384, 398, 359, 255, 339, 254, 253,
             252, 256, 341, 463, 467, 260, 259, 257, 258, 286, 414, 446, 261, 448, 449, 450, 451, 452, 453, 464, 342,
             445, 444, 443, 442, 441, 413, 265, 353, 276, 283, 282, 295, 372, 340, 346, 347, 348, 349, 350, 357, 465,
             383, 300, 293, 334, 296, 336, 285, 417)


def wheel_model(rel: str) -> Path:
    import mediapipe

    return Path(mediapipe.__file__).parent / "modules" / rel


def _with_metadata(model: bytes, outputs: int, name: str, std: float) -> bytes:
    """Image-input normalisation metadata ((x - 0) / std) and `outputs` plain outputs."""
    from mediapipe.tasks.python.metadata.metadata_writers import metadata_writer

    writer = metadata_writer.MetadataWriter.create(bytearray(model)).add_general_info(name, "assembled for tests")
    writer.add_image_input(norm_mean=[0.0], norm_std=[std])
    for _ in range(outputs):
        writer.add_feature_output()
    return bytes(writer.populate()[0])


def attention_mesh_478() -> bytes:
    """face_landmark_with_attention.tflite with one [1,1,1,1434] landmark output (478 points x, y, z)
    and the face flag, the two outputs the Tasks face landmarks graph reads."""
    import flatbuffers
    from mediapipe.tasks.metadata import schema_py_generated as fb

    model = fb.ModelT.InitFromPackedBuf(bytearray(wheel_model("face_landmark/face_landmark_with_attention.tflite")
                                                  .read_bytes()), 0)
    graph = model.subgraphs[0]
    mesh, lips, l_eye, r_eye, l_iris, r_iris, flag = graph.outputs  # output order of this model
    sizes = [graph.tensors[i].shape[-1] for i in (mesh, lips, l_eye, r_eye, l_iris, r_iris)]
    assert sizes == [1404, 160, 142, 142, 10, 10], sizes
    start = np.cumsum([0] + sizes)
    src = np.arange(1434).reshape(478, 3)  # flat index into the concatenation, per point and axis
    for offset, points in ((start[1], LIPS), (start[2], LEFT_EYE), (start[3], RIGHT_EYE),
                           (start[4], range(468, 473)), (start[5], range(473, 478))):
        for k, p in enumerate(points):
            src[p, :2] = offset + 2 * k, offset + 2 * k + 1
    src[468:473, 2], src[473:478, 2] = 3 * 33 + 2, 3 * 263 + 2  # iris z: an eye corner's z

    def tensor(name: bytes, shape: list[int], kind: int, data: bytes | None = None) -> int:
        buffer = fb.BufferT()
        buffer.data = None if data is None else np.frombuffer(data, np.uint8)
        model.buffers.append(buffer)
        t = fb.TensorT()
        t.name, t.shape, t.type, t.buffer = name, shape, kind, len(model.buffers) - 1
        graph.tensors.append(t)
        return len(graph.tensors) - 1

    def op(code: int, options_type: int, options: object, inputs: list[int], outputs: list[int]) -> None:
        opcode = fb.OperatorCodeT()
        opcode.builtinCode = opcode.deprecatedBuiltinCode = code
        opcode.version = 1
        model.operatorCodes.append(opcode)
        o = fb.OperatorT()
        o.opcodeIndex, o.inputs, o.outputs = len(model.operatorCodes) - 1, inputs, outputs
        o.builtinOptionsType, o.builtinOptions = options_type, options
        graph.operators.append(o)

    every = tensor(b"all_landmarks", [1, 1, 1, int(start[-1])], fb.TensorType.FLOAT32)
    concat = fb.ConcatenationOptionsT()
    concat.axis = 3
    op(fb.BuiltinOperator.CONCATENATION, fb.BuiltinOptions.ConcatenationOptions, concat,
       [mesh, lips, l_eye, r_eye, l_iris, r_iris], [every])
    index = tensor(b"mesh478_index", [1434], fb.TensorType.INT32, src.reshape(-1).astype(np.int32).tobytes())
    out = tensor(b"landmarks_478", [1, 1, 1, 1434], fb.TensorType.FLOAT32)
    gather = fb.GatherOptionsT()
    gather.axis = 3
    op(fb.BuiltinOperator.GATHER, fb.BuiltinOptions.GatherOptions, gather, [every, index], [out])
    graph.outputs = [out, flag]
    model.metadata = None  # the old metadata describes seven outputs
    builder = flatbuffers.Builder(1 << 20)
    builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
    return _with_metadata(bytes(builder.Output()), 2, "face landmarks 478", 255.0)


def assemble_task_files(folder: Path) -> Path:
    """The three Tasks model files, under the names users download, built from the wheel."""
    folder.mkdir(parents=True, exist_ok=True)
    detector = wheel_model("face_detection/face_detection_short_range.tflite").read_bytes()
    (folder / "blaze_face_short_range.tflite").write_bytes(detector)
    with zipfile.ZipFile(folder / "face_landmarker.task", "w") as bundle:
        bundle.writestr("face_detector.tflite", detector)
        bundle.writestr("face_landmarks_detector.tflite", attention_mesh_478())
    pose = _with_metadata(wheel_model("pose_landmark/pose_landmark_full.tflite").read_bytes(), 5, "pose", 255.0)
    with zipfile.ZipFile(folder / "pose_landmarker_full.task", "w") as bundle:
        bundle.write(wheel_model("pose_detection/pose_detection.tflite"), "pose_detector.tflite")
        bundle.writestr("pose_landmarks_detector.tflite", pose)
    return folder


@pytest.fixture(scope="module")
def task_dir(tmp_path_factory) -> Path:
    return assemble_task_files(tmp_path_factory.mktemp("mediapipe"))


@pytest.fixture(scope="module")
def tasks(task_dir) -> B.MediaPipeBackend:
    return B.get_backend("tasks", task_dir)


@pytest.fixture(scope="module")
def faces():
    from skimage import data

    return {"astronaut": data.astronaut(), "tom": insightface_image("Tom_Hanks_54745.png")}


def box_iou(a, b) -> float:
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    return inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter)


@pytest.fixture
def no_bundled_models(monkeypatch):
    """The installed mediapipe as a newer wheel looks: Tasks API present, mediapipe.solutions gone."""
    import mediapipe

    monkeypatch.setattr(mediapipe, "solutions", None)
    monkeypatch.delenv(B.ENV_DIR, raising=False)
    return mediapipe


# ----------------------------------------------------------------------------- choosing a backend


def test_auto_prefers_the_bundled_models(task_dir, monkeypatch):
    monkeypatch.setenv(B.ENV_DIR, str(task_dir))
    chosen = B.get_backend()
    assert chosen.name == "solutions" and chosen.models_dirs == (task_dir,) and "bundled" in chosen.reason
    assert B.get_backend("auto", task_dir).name == "solutions" and B.get_backend(None).name == "solutions"
    assert B.get_backend(chosen) is chosen
    assert chosen.detector_sources == ("mediapipe_full_range", "mediapipe_short_range")


def test_models_dir_argument_then_environment_then_models_root(task_dir, tmp_path, monkeypatch):
    monkeypatch.setenv(B.ENV_DIR, os.pathsep.join([str(tmp_path / "a"), "~/b"]))
    assert B.resolve_models_dirs() == (tmp_path / "a", Path("~/b").expanduser())
    assert B.resolve_models_dirs(task_dir) == (task_dir,)  # an explicit folder wins over the variable
    assert B.resolve_models_dirs([str(task_dir), tmp_path]) == (task_dir, tmp_path)
    assert B.resolve_models_dirs([task_dir, tmp_path, str(task_dir)]) == (task_dir, tmp_path)  # each once
    monkeypatch.delenv(B.ENV_DIR)
    monkeypatch.setenv("FANTASYTALKING_MODELS_DIR", str(tmp_path / "models"))
    assert B.resolve_models_dirs() == (tmp_path / "models" / "mediapipe",)
    monkeypatch.delenv("FANTASYTALKING_MODELS_DIR")
    assert B.resolve_models_dirs() == (Path("models") / "mediapipe",)  # outside ComfyUI: ./models


def test_without_bundled_models_auto_falls_back_to_tasks(no_bundled_models, task_dir, monkeypatch, faces):
    chosen = B.get_backend("auto", task_dir)
    assert chosen.name == "tasks" and chosen.models_dirs == (task_dir,)
    assert chosen.reason == (f"MediaPipe Tasks API with model files from '{task_dir}' (blaze_face_short_range.tflite, "
                             "face_landmarker.task, pose_landmarker_full.task)")
    monkeypatch.setenv(B.ENV_DIR, str(task_dir))  # what the CLI and training scripts use
    (face,) = F.detect_faces(faces["astronaut"])  # no backend argument: auto -> tasks
    assert face.source == "mediapipe_tasks_short_range"


def test_without_files_tasks_is_chosen_and_offline_names_url_and_folder(no_bundled_models, tmp_path):
    empty = B.get_backend("auto", tmp_path)  # the files come on first use
    assert empty.name == "tasks" and empty.reason.endswith("(none yet: fetched on first use)")
    with pytest.raises(RuntimeError) as err:  # conftest sets FANTASYTALKING_OFFLINE=1
        F.detect_faces(np.zeros((64, 64, 3), np.uint8), backend=empty)
    url = "https://storage.googleapis.com/mediapipe-models/face_landmarker/face_landmarker/float16/latest/face_landmarker.task"
    assert str(err.value) == (
        f"MediaPipe face landmarker (478-point face mesh) model face_landmarker.task is not in '{tmp_path}', and "
        f"FANTASYTALKING_OFFLINE forbids fetching it: download {url} (model page: https://ai.google.dev/edge/"
        f"mediapipe/solutions/vision/face_landmarker#models) and put it in '{tmp_path}' as face_landmarker.task, "
        "or pip install mediapipe==0.10.14 (Python 3.10-3.12), whose wheel bundles the models")
    assert list(tmp_path.iterdir()) == []


def test_forcing_a_backend_says_what_is_missing(no_bundled_models, tmp_path):
    with pytest.raises(RuntimeError, match=r"ships no bundled face/pose models \(no mediapipe.solutions.*"
                                           r"install the version this pack uses: pip install mediapipe==0.10.14 "
                                           r"\(Python 3.10-3.12\), or use backend='tasks' and put face_landmarker.task"):
        B.get_backend("solutions")
    with pytest.raises(ValueError, match=r"backend must be one of \('auto', 'solutions', 'tasks'\).*'gpu'"):
        B.get_backend("gpu")
    later = B.get_backend("tasks", tmp_path / "not_yet")  # created by the first fetch
    assert later.name == "tasks" and later.models_dirs == (tmp_path / "not_yet",)


def test_mediapipe_not_installed(monkeypatch):
    monkeypatch.setitem(sys.modules, "mediapipe", None)  # import mediapipe -> ImportError
    with pytest.raises(RuntimeError, match=r"^mediapipe is not installed \(face embed, lip masks and motion need it; "
                                           r"the rest of the pack does not\): pip install -r requirements.txt .*"
                                           r"mediapipe 0.10.14 below Python 3.13 .*mediapipe 1.2 from 3.13"):
        B.get_backend()


def test_an_old_mediapipe_without_a_tasks_api(monkeypatch):
    monkeypatch.setitem(sys.modules, "mediapipe", types.SimpleNamespace(__version__="0.8.9"))
    with pytest.raises(RuntimeError, match=r"^mediapipe 0.8.9 ships no bundled.*, and its Tasks API "
                                           r"\(mediapipe.tasks.python.vision\) cannot be imported: pip install "
                                           r"mediapipe==0.10.14 \(Python 3.10-3.12\)$"):
        B.get_backend("tasks")


# ----------------------------------------------------------------------------- the first-use fetch


@contextmanager
def model_server(routes: dict[str, tuple[int, bytes, dict]]):
    """An HTTP server on 127.0.0.1 answering `path -> (status, body, headers)`, 404 otherwise; yields
    its base URL and the list of requested paths. Stopped on exit."""
    import http.server
    import threading

    seen: list[str] = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802 (the stdlib's name)
            seen.append(self.path)
            status, body, headers = routes.get(self.path, (404, b"<html>not found</html>", {}))
            self.send_response(status)
            headers = {"Content-Length": str(len(body)), **headers}
            for k, v in headers.items():
                self.send_header(k, v)
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", seen
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


PATHS = {k: B.TASK_MODELS[k].url[len("https://storage.googleapis.com/mediapipe-models"):] for k in B.TASK_MODELS}


@pytest.fixture
def online(monkeypatch):
    monkeypatch.delenv("FANTASYTALKING_OFFLINE")

    def use(base: str) -> None:
        monkeypatch.setenv(B.MIRROR_ENV, base)

    return use


def test_first_use_fetch_prints_url_and_destination_and_writes_atomically(no_bundled_models, task_dir, tmp_path,
                                                                          online, faces, capsys):
    routes = {PATHS[k]: (200, (task_dir / B.TASK_MODELS[k].names[0]).read_bytes(), {}) for k in B.TASK_MODELS}
    with model_server(routes) as (base, seen):
        online(base)
        backend = B.get_backend("auto", [tmp_path / "mediapipe", task_dir.parent / "elsewhere"])
        (face,) = F.detect_faces(faces["astronaut"], backend=backend)
        err = capsys.readouterr().err
    dest = tmp_path / "mediapipe" / "face_landmarker.task"
    assert seen == [PATHS["face_landmarker"]]  # the detector inside the landmarker bundle serves detection
    assert (f"MediaPipe: fetching the face landmarker (478-point face mesh) model (first use)\n  from "
            f"{base}{PATHS['face_landmarker']}\n  to   {dest}") in err
    assert "face_landmarker.task: 100%" in err  # the progress bar
    assert dest.read_bytes() == (task_dir / "face_landmarker.task").read_bytes()
    assert sorted(p.name for p in dest.parent.iterdir()) == ["face_landmarker.task"]  # no .part left
    (ref,) = F.detect_faces(faces["astronaut"], backend=B.get_backend("tasks", task_dir))
    assert face.box == ref.box and face.score == ref.score  # the fetched file works
    with model_server({}) as (base, seen):  # second use: nothing is fetched
        online(base)
        F.detect_faces(faces["astronaut"], backend=backend)
    assert seen == []


@pytest.mark.parametrize("case", ["html", "lfs_pointer", "partial_zip", "cut_off", "not_found"])
def test_a_bad_download_saves_nothing_and_names_url_and_folder(no_bundled_models, task_dir, tmp_path, online,
                                                               case):
    good = (task_dir / "pose_landmarker_full.task").read_bytes()
    bodies = {
        "html": (200, b"<!DOCTYPE html><html><body>Sign in to continue</body></html>", {"Content-Type": "text/html"}),
        "lfs_pointer": (200, b"version https://git-lfs.github.com/spec/v1\noid sha256:abc\nsize 9000000\n", {}),
        "partial_zip": (200, good[: len(good) // 2], {}),
        "cut_off": (200, good[: len(good) // 2], {"Content-Length": str(len(good))}),
        "not_found": (404, b"<html>no such object</html>", {}),
    }
    why = {"html": "not a zip archive", "lfs_pointer": "not a zip archive", "partial_zip": "not a zip archive",
           "cut_off": f"{len(good) // 2} of {len(good)} bytes arrived", "not_found": "HTTP Error 404"}
    folder = tmp_path / "mediapipe"
    with model_server({PATHS["pose_landmarker"]: bodies[case]}) as (base, _):
        online(base)
        with pytest.raises(RuntimeError) as err:
            B.fetch_task_model("pose_landmarker", folder, progress=False, timeout=10)
    msg = str(err.value)
    assert why[case] in msg, msg
    assert f"download {base}{PATHS['pose_landmarker']}" in msg and f"put it in '{folder}'" in msg
    assert list(folder.iterdir()) == []  # neither the file nor a temporary one


def test_no_network_is_the_same_clear_error(no_bundled_models, tmp_path, online):
    import socket

    with socket.socket() as sock:  # a port on 127.0.0.1 that nothing listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    online(f"http://127.0.0.1:{port}")
    with pytest.raises(RuntimeError, match=r"could not fetch the MediaPipe pose landmarker model \(.*refused.*\): "
                                           r"download http://127.0.0.1:\d+/pose_landmarker/.*pose_landmarker_full.task"):
        B.fetch_task_model("pose_landmarker", tmp_path, progress=False, timeout=5)


def test_a_broken_file_in_the_folder_is_named(task_dir, tmp_path, faces):
    only_mesh = tmp_path / "only_mesh"
    only_mesh.mkdir()
    (only_mesh / "face_landmarker.task").write_bytes((task_dir / "face_landmarker.task").read_bytes())
    (only_mesh / "pose_landmarker_full.task").write_text("version https://git-lfs.github.com/spec/v1\n")
    with pytest.raises(RuntimeError, match=r"pose_landmarker_full.task' is not a usable MediaPipe pose landmarker file "
                                           r"\(not a zip archive; .*git-LFS pointer\?\): delete it and let the pack "
                                           r"fetch it again"):
        B.get_backend("tasks", only_mesh)
    (only_mesh / "pose_landmarker_full.task").unlink()
    backend = B.get_backend("tasks", only_mesh)
    with pytest.raises(RuntimeError, match="pose_landmarker_full.task is not in .*only_mesh"):  # offline in tests
        M.pose_track(faces["astronaut"][None], backend=backend)
    # Without blaze_face_short_range.tflite the detector inside face_landmarker.task is used: same faces.
    (a,) = F.detect_faces(faces["astronaut"], backend=backend)
    (b,) = F.detect_faces(faces["astronaut"], backend=B.get_backend("tasks", task_dir))
    assert a.box == b.box and a.score == b.score


def test_model_names_in_order_of_preference(task_dir, tmp_path):
    pose = (task_dir / "pose_landmarker_full.task").read_bytes()
    for name in ("pose_landmarker_lite.task", "pose_landmarker_heavy.task"):
        (tmp_path / name).write_bytes(pose)
    assert B.find_task_model("pose_landmarker", [tmp_path]).name == "pose_landmarker_heavy.task"
    (tmp_path / "pose_landmarker_full.task").write_bytes(pose)
    assert B.find_task_model("pose_landmarker", [tmp_path]).name == "pose_landmarker_full.task"
    assert B.find_task_model("pose_landmarker", [task_dir, tmp_path]) == task_dir / "pose_landmarker_full.task"
    assert B.find_task_model("face_detector", [tmp_path]) is None


@pytest.mark.parametrize("name, content, why", [
    ("face_landmarker.task", b"<html>Not Found</html>", "not a zip archive"),
    ("face_landmarker.task", "zip", r"the bundle lacks \['face_landmarks_detector.tflite'\]"),
    ("blaze_face_short_range.tflite", b"version https://git-lfs.github.com/spec/v1\n", "not a TFLite model"),
])
def test_broken_model_files_are_clear_errors(tmp_path, name, content, why):
    if content == "zip":
        with zipfile.ZipFile(tmp_path / name, "w") as z:
            z.writestr("face_detector.tflite", b"x")
    else:
        (tmp_path / name).write_bytes(content)
    key = "face_landmarker" if name.endswith(".task") else "face_detector"
    with pytest.raises(RuntimeError, match=rf"^'.*{name}' is not a usable MediaPipe .* file \({why}; a partial "
                                           rf"download, an HTML page or a git-LFS pointer\?\): delete it and let the "
                                           rf"pack fetch it again, or download it yourself from "
                                           rf"https://storage.googleapis.com/mediapipe-models/"):
        B.find_task_model(key, [tmp_path])


# ----------------------------------------------------------------------------- result conversion


def test_tasks_result_objects_convert_like_solutions_protos():
    from mediapipe.framework.formats import detection_pb2, landmark_pb2
    from mediapipe.tasks.python.components.containers import bounding_box, category, detections, keypoint, landmark

    det = detections.Detection(bounding_box.BoundingBox(origin_x=30, origin_y=-5, width=40, height=50),
                               [category.Category(index=0, score=0.75)],
                               [keypoint.NormalizedKeypoint(0.25, 0.5), keypoint.NormalizedKeypoint(0.5, 0.125)])
    box, score, kps = B.detection_from_tasks(det, width=200, height=100)
    assert np.allclose(box, [0.15, -0.05, 0.35, 0.45]) and score == 0.75  # normalised, not clipped here
    assert np.array_equal(kps, np.float32([[0.25, 0.5], [0.5, 0.125]]))
    proto = detection_pb2.Detection(score=[0.75])
    rel = proto.location_data.relative_bounding_box
    rel.xmin, rel.ymin, rel.width, rel.height = 0.15, -0.05, 0.2, 0.5
    for x, y in ((0.25, 0.5), (0.5, 0.125)):
        k = proto.location_data.relative_keypoints.add()
        k.x, k.y = x, y
    box2, score2, kps2 = B.detection_from_solutions(proto)
    assert np.allclose(box2, box, atol=1e-7) and score2 == score and np.array_equal(kps2, kps)
    points = [landmark.NormalizedLandmark(x=0.5, y=0.25, z=-0.1, visibility=None),
              landmark.NormalizedLandmark(x=1.0, y=0.0, z=0.0, visibility=0.9)]
    assert np.allclose(B.landmarks_array(points, visibility=True), [[0.5, 0.25, -0.1, 0.0], [1.0, 0.0, 0.0, 0.9]])
    protos = [landmark_pb2.NormalizedLandmark(x=0.5, y=0.25, z=-0.1)]
    assert np.array_equal(B.landmarks_array(protos), B.landmarks_array(points[:1]))


# ----------------------------------------------------------------------------- the Tasks backend, run for real


@pytest.mark.parametrize("name", ["astronaut", "tom"])
def test_tasks_face_detector_matches_solutions_short_range(tasks, faces, name):
    rgb = faces[name]
    h, w = rgb.shape[:2]
    solutions = B.get_backend("solutions")
    with tasks.face_detector("mediapipe_tasks_short_range", 0.5) as detect:
        ours = detect(rgb)
    with solutions.face_detector("mediapipe_short_range", 0.5) as detect:
        ref = detect(rgb)
    assert len(ours) == len(ref) == 1
    (box, score, kps), (box_ref, score_ref, kps_ref) = ours[0], ref[0]
    scale = np.array([w, h, w, h])
    # the Tasks API rounds the box down to whole pixels (origin and size): within 1 px per corner, 2 px for x1/y1
    assert np.all(np.abs(box[:2] * scale[:2] - box_ref[:2] * scale[:2]) < 1.0)
    assert np.all(np.abs(box[2:] * scale[2:] - box_ref[2:] * scale[2:]) < 2.0)
    assert abs(score - score_ref) < 1e-6 and kps.shape == (6, 2)
    assert np.abs((kps - kps_ref) * [w, h]).max() < 0.01
    (face,) = F.detect_faces(rgb, backend=tasks)
    assert face.source == "mediapipe_tasks_short_range" and face.keypoints.shape == (6, 2)
    assert 0 <= face.box[0] < face.box[2] <= w and 0 <= face.box[1] < face.box[3] <= h
    (full,) = F.detect_faces(rgb, backend=solutions)  # the full-range model: another net, the same face
    assert box_iou(face.box, full.box) > 0.6


def test_tasks_finds_no_small_faces_and_says_why(tasks):
    group = insightface_image("t1.jpg")  # six faces ~100 px in 1280x886: too small for the short-range model
    assert F.detect_faces(group, backend=tasks) == []
    assert len(F.detect_faces(group, backend="solutions")) >= 3
    with pytest.raises(ValueError, match=r"Tasks backend, which has only the short-range face detector.*crop the "
                                         r"image closer around the face, or pip install mediapipe==0.10.14"):
        F.embed_reference(group, backend=tasks)


@pytest.mark.parametrize("name", ["astronaut", "tom"])
def test_tasks_face_mesh_matches_solutions(tasks, faces, name):
    rgb = faces[name]
    ref = L.face_mesh_track(rgb[None], refine_landmarks=True, static_image_mode=True, backend="solutions")
    ours = L.face_mesh_track(rgb[None], refine_landmarks=True, static_image_mode=True, backend=tasks)
    assert ours.backend == "tasks" and ours.found.all() and ours.landmarks.shape == (1, 478, 2)
    # same network and crop: measured max 0.002 px (astronaut) and 0.025 px (112 px Tom Hanks)
    assert np.abs(ours.landmarks - ref.landmarks).max() < 0.1
    mesh468 = L.face_mesh_track(rgb[None], static_image_mode=True, backend=tasks)
    assert mesh468.landmarks.shape == (1, 468, 2)
    assert np.array_equal(mesh468.landmarks, ours.landmarks[:, :468])
    ours_lips, ref_lips = L.lip_masks(None, track=mesh468), L.lip_masks(None, track=ref)
    inter = float((ours_lips.masks * ref_lips.masks).sum())
    assert inter / float(((ours_lips.masks + ref_lips.masks) > 0).sum()) > 0.98


def test_tasks_face_mesh_tracks_a_video(tasks):
    face = portrait(256)
    pts = L.face_mesh_track(face[None], static_image_mode=True, backend=tasks).landmarks[0]
    mouth, width = pts[[13, 14]].mean(0), float(np.ptp(pts[:, 0]))
    video = np.stack([open_mouth(face, mouth, 0.08 * width * abs(p), 0.25 * width) for p in np.sin(np.arange(6))])
    ours = L.face_mesh_track(video, refine_landmarks=True, backend=tasks)  # video mode: tracked from frame 0
    ref = L.face_mesh_track(video, refine_landmarks=True, backend="solutions")
    assert ours.found.all()
    err = np.abs(ours.landmarks - ref.landmarks).max(axis=(1, 2))
    # frame 0 starts from a detection, as in solutions; later frames start from the previous frame's landmarks,
    # where the two graphs place the next crop slightly differently: measured up to 1.8 px, 2.5% of the width.
    assert err[0] < 0.1 and err.max() < 0.05 * width, (err, width)
    ours_lips = L.lip_masks(video, backend=tasks)
    ref_lips = L.lip_masks(None, track=L.FaceMeshTrack(ref.landmarks[:, :468], ref.found, 256, 256))
    iou = (ours_lips.masks * ref_lips.masks).sum((1, 2)) / ((ours_lips.masks + ref_lips.masks) > 0).sum((1, 2))
    assert float(iou[0]) > 0.98 and float(iou.min()) > 0.7, iou  # measured 1.0, then 0.78 .. 0.97 (small mouth)


@pytest.mark.parametrize("name", ["astronaut", "tom"])
def test_tasks_pose_matches_solutions(tasks, faces, name):
    rgb = faces[name]
    joints, vis = M.pose_track(rgb[None], backend=tasks)
    joints_ref, vis_ref = M.pose_track(rgb[None], backend="solutions")
    assert np.abs(vis - vis_ref).max() < 1e-4  # the same network ran
    used = [j for j in M.POSE_JOINTS if vis_ref[0, j] >= 0.5]
    shoulders = float(np.linalg.norm(joints_ref[0, 11] - joints_ref[0, 12]))
    dist = np.linalg.norm(joints[0, used] - joints_ref[0, used], axis=-1)
    # measured: most joints < 0.2 px, a few 2-4 px (<= 2% of the shoulder width) after the graphs' landmark refinement
    assert len(used) >= 3 and dist.max() < 0.04 * shoulders and np.median(dist) < 0.5, dist


def test_measure_motion_with_tasks_matches_solutions(tasks):
    face = portrait(256)
    phase = np.sin(np.linspace(0, 2 * np.pi, 6))
    clip = np.stack([warp(face, 12 * p, 6 * p, angle=3 * p) for p in phase])
    ours = M.measure_motion(clip, backend=tasks)
    # Reference: solutions with the same (attention) mesh network, the first 468 points
    refined = L.face_mesh_track(clip, refine_landmarks=True, static_image_mode=True, backend="solutions")
    ref = M.measure_motion(clip, track=L.FaceMeshTrack(refined.landmarks[:, :468], refined.found, 256, 256),
                           backend="solutions")
    assert ours.frames_with_face == ours.frames_with_body == 6
    # measured: raw_l -0.3%, raw_b +0.5% (the pose difference above)
    assert abs(ours.raw_l / ref.raw_l - 1) < 0.03 and abs(ours.raw_b / ref.raw_b - 1) < 0.05, (ours, ref)
    assert ref.notes == []
    assert ours.notes[0].startswith("measured with MediaPipe backends face mesh: tasks, pose: tasks")


class RefinedSolutions(B.MediaPipeBackend):
    """The solutions backend running the attention mesh (refine_landmarks=True) even for 468 points,
    which is what Google's face_landmarker.task is."""

    @contextmanager
    def face_mesh(self, *, refine_landmarks, **kwargs):
        with super().face_mesh(refine_landmarks=True, **kwargs) as mesh:
            yield lambda rgb: [f[: 478 if refine_landmarks else 468] for f in mesh(rgb)]


@pytest.mark.parametrize("name", ["astronaut", "tom"])
def test_five_points_and_embedding_with_tasks(tasks, faces, name, tmp_path):
    from tests._media_helpers import tiny_arcface

    rgb = faces[name]
    (det,) = F.detect_faces(rgb, backend="solutions")
    five, source = F.mediapipe_five_points(rgb, det, backend=tasks)
    ref, ref_source = F.mediapipe_five_points(rgb, det, backend=RefinedSolutions("solutions"))
    assert source == "mediapipe_tasks_face_mesh" and ref_source == "mediapipe_face_mesh"
    assert np.abs(five - ref).max() < 0.1
    tiny_arcface(tmp_path / "arcface.onnx")
    result = F.embed_reference(rgb, embedder=F.ArcFaceEmbedder.from_pack(tmp_path, landmarks="mediapipe"),
                               backend=tasks)
    assert result.detector == "mediapipe_tasks_short_range" and result.landmark_source == "mediapipe_tasks_face_mesh"
    assert result.aligned.shape == (112, 112, 3) and abs(float(np.linalg.norm(result.embedding)) - 1) < 1e-5
