"""One front for MediaPipe face detection, face mesh and pose, over two backends.

- "solutions": `mediapipe.solutions` with the models bundled in the mediapipe 0.10.14 wheel
  (Python < 3.13). The default whenever it is importable and its model files are present.
- "tasks": the Tasks API (`mediapipe.tasks.python.vision`: FaceDetector, FaceLandmarker,
  PoseLandmarker) with Google's model files in a folder (ComfyUI: `models/mediapipe/`). Newer
  wheels (1.x, the only ones from Python 3.13 on) have only this. A missing file is fetched on
  first use from Google's model storage (`TASK_MODELS`, docs/mediapipe.md): the URL and the
  destination are printed, a progress bar runs, the file is written under a temporary name, checked
  (a zip holding the model's members for `.task`, a TFLite flatbuffer for `.tflite`: never an HTML
  page, a partial download or a git-LFS pointer) and renamed. FANTASYTALKING_OFFLINE=1, or no
  network, gives an error naming the URL and the folder to put the file in instead.
  FANTASYTALKING_MEDIAPIPE_MIRROR=<base URL> fetches from a mirror with the same paths.

Both give the same data, normalised to the image (x / width, y / height), so callers do not care
which one ran: detections `(box [x0,y0,x1,y1], score, keypoints [6,2])` with MediaPipe's six face
keypoints; face meshes float32 `[N,3]` (x, y, z) with N = 468, or 478 with the iris points
(`refine_landmarks`), the first 468 in the same topology for both; pose float32 `[33,4]`
(x, y, z, visibility). Known differences: Tasks has only the short-range face detector (faces that
fill a good part of the picture, as in portraits; `solutions` first tries the full-range one); the
Tasks FaceLandmarker always computes 478 points (468 are kept unless `refine_landmarks`), and
Google's `face_landmarker.task` and `pose_landmarker_*.task` hold newer networks than the 0.10.14
wheel, so landmarks, lip masks and omega values agree across backends only approximately (same
indices and meaning, not the same numbers).

The folders: `models_dir` (the ComfyUI layer passes `models/mediapipe`), else
FANTASYTALKING_MEDIAPIPE_DIR, else `<models>/mediapipe` (`paths.default_models_root`). Files are
looked for in every folder and fetched into the first.
"""

from __future__ import annotations

import http.client
import itertools
import os
import sys
import urllib.error
import urllib.request
import uuid
import zipfile
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import numpy as np

from .paths import default_models_root

ENV_DIR = "FANTASYTALKING_MEDIAPIPE_DIR"
OFFLINE_ENV = "FANTASYTALKING_OFFLINE"
MIRROR_ENV = "FANTASYTALKING_MEDIAPIPE_MIRROR"
BACKENDS = ("auto", "solutions", "tasks")
PIP_FIX = "pip install mediapipe==0.10.14 (Python 3.10-3.12)"
# Model files of the 0.10.14 wheel that the solutions we use load (relative to the package).
BUNDLED = ("modules/face_detection/face_detection_short_range.tflite", "modules/face_landmark/face_landmark.tflite",
           "modules/pose_landmark/pose_landmark_full.tflite")
# Pose model 1 (full) ships in the 0.10.14 wheel; 0 (lite) and 2 (heavy) would be downloaded.
POSE_MODEL_COMPLEXITY = 1
VIDEO_FRAME_MS = 40  # nominal frame spacing for Tasks video mode, which wants increasing timestamps


@dataclass(frozen=True)
class TaskModel:
    """A Tasks model file: accepted names (preferred first), Google's page and download address,
    and the files a `.task` bundle (a zip) must hold."""

    role: str
    names: tuple[str, ...]
    page: str
    url: str
    members: tuple[str, ...] = ()


_STORE = "https://storage.googleapis.com/mediapipe-models"
_PAGES = "https://ai.google.dev/edge/mediapipe/solutions/vision"
TASK_MODELS = {
    "face_detector": TaskModel(
        "face detector (BlazeFace short-range)", ("blaze_face_short_range.tflite",),
        f"{_PAGES}/face_detector#models",
        f"{_STORE}/face_detector/blaze_face_short_range/float16/latest/blaze_face_short_range.tflite"),
    "face_landmarker": TaskModel(
        "face landmarker (478-point face mesh)", ("face_landmarker.task", "face_landmarker_v2_with_blendshapes.task"),
        f"{_PAGES}/face_landmarker#models",
        f"{_STORE}/face_landmarker/face_landmarker/float16/latest/face_landmarker.task",
        ("face_detector.tflite", "face_landmarks_detector.tflite")),
    "pose_landmarker": TaskModel(
        "pose landmarker", ("pose_landmarker_full.task", "pose_landmarker_heavy.task", "pose_landmarker_lite.task"),
        f"{_PAGES}/pose_landmarker#models",
        f"{_STORE}/pose_landmarker/pose_landmarker_full/float16/latest/pose_landmarker_full.task",
        ("pose_detector.tflite", "pose_landmarks_detector.tflite")),
}


def resolve_models_dirs(models_dir: str | os.PathLike | Sequence[str | os.PathLike] | None = None) -> tuple[Path, ...]:
    """The folders searched for Tasks model files: `models_dir` (one path or several, first wins)
    when given, else $FANTASYTALKING_MEDIAPIPE_DIR (several joined by os.pathsep), else
    `<models>/mediapipe`. A missing file is fetched into the first."""
    if models_dir is None:
        models_dir = [p for p in os.environ.get(ENV_DIR, "").split(os.pathsep) if p.strip()]
        models_dir = models_dir or [default_models_root() / "mediapipe"]
    elif isinstance(models_dir, (str, os.PathLike)):
        models_dir = [models_dir]
    return tuple(dict.fromkeys(Path(p).expanduser() for p in models_dir))  # in order, each once


def _where(dirs: Sequence[Path]) -> str:
    return " or ".join(f"'{d}'" for d in dirs)


def _files_help(dirs: Sequence[Path]) -> str:
    fd, fl, pl = (TASK_MODELS[k] for k in ("face_detector", "face_landmarker", "pose_landmarker"))
    folder = _where(dirs) or f"a folder you pass as models_dir or set in {ENV_DIR}"
    return (f"put {fl.names[0]} (face mesh: lip masks, face motion; {fl.url}), {pl.names[0]} (or "
            f"{' / '.join(pl.names[1:])}; body motion; {pl.url}) and optionally {fd.names[0]} (face detection; "
            f"else the detector inside {fl.names[0]} is used; {fd.url}) into {folder}. Google's model pages: "
            f"{fl.page}, {pl.page}, {fd.page}")


def _import_mediapipe(dirs: Sequence[Path]) -> Any:
    try:
        import mediapipe as mp
    except ImportError as err:
        raise RuntimeError(
            "mediapipe is not installed (face embed, lip masks and motion need it; the rest of the pack does not): "
            "pip install -r requirements.txt installs the right one for this Python: mediapipe 0.10.14 below "
            "Python 3.13 (its wheel bundles the models), mediapipe 1.2 from 3.13 (its Tasks model files are "
            "fetched into models/mediapipe/ on first use)"
        ) from err
    return mp


def _bundled_missing(mp: Any) -> list[str]:
    """What stops the solutions backend: [] when `mediapipe.solutions` and its model files are there."""
    solutions = getattr(mp, "solutions", None)
    if solutions is None or not all(hasattr(solutions, m) for m in ("face_detection", "face_mesh", "pose")):
        return ["mediapipe.solutions"]
    root = Path(getattr(mp, "__file__", "") or ".").parent
    return [f for f in BUNDLED if not (root / f).is_file()]


def _has_tasks_api(mp: Any) -> bool:
    """mediapipe >= 0.10 imports its Tasks API as `mediapipe.tasks` (None there when it failed)."""
    if getattr(mp, "tasks", None) is None:
        return False
    try:
        from mediapipe.tasks.python import vision  # noqa: F401
    except Exception:  # a broken install: the message lists the fixes
        return False
    return True


def _no_bundled(version: str, missing: Sequence[str]) -> str:
    why = ("no mediapipe.solutions: newer wheels dropped it" if list(missing) == ["mediapipe.solutions"]
           else f"missing {', '.join(missing)}")
    return f"mediapipe {version} ships no bundled face/pose models ({why})"


def mediapipe_solutions() -> Any:
    """``mediapipe.solutions`` with its bundled models (mediapipe 0.10.14); a clear error otherwise."""
    dirs = resolve_models_dirs()
    mp = _import_mediapipe(dirs)
    missing = _bundled_missing(mp)
    if missing:
        raise RuntimeError(
            f"{_no_bundled(str(getattr(mp, '__version__', '?')), missing)}; install the version this pack uses: "
            f"{PIP_FIX}, or use backend='tasks' and {_files_help(dirs)}"
        )
    return mp.solutions


def find_task_model(key: str, dirs: Sequence[Path]) -> Path | None:
    """The first accepted file name of `TASK_MODELS[key]` found in `dirs` (folders in order, then
    names in order), or None. The file is checked: a `.task` must be a zip holding the model's
    members, a `.tflite` a TFLite flatbuffer; a bad file is an error naming it and the URL."""
    model = TASK_MODELS[key]
    for folder in dirs:
        for name in model.names:
            path = folder / name
            if path.is_file():
                _check_model_file(path, model)
                return path
    return None


def _model_file_problem(path: Path, model: TaskModel, suffix: str) -> str:
    """Why `path` is not a usable `model` file ("" when it is): a `.task` must be a zip holding the
    model's members, a `.tflite` a TFLite flatbuffer; an HTML page, a partial download or a git-LFS
    pointer is neither."""
    if suffix == ".task":
        if not zipfile.is_zipfile(path):
            return "not a zip archive"
        try:
            with zipfile.ZipFile(path) as bundle:
                lacking = [m for m in model.members if m not in bundle.namelist()]
                broken = bundle.testzip()
        except (zipfile.BadZipFile, OSError) as err:
            return f"a damaged zip archive ({err})"
        return f"the bundle lacks {lacking}" if lacking else f"member {broken} is damaged" if broken else ""
    with open(path, "rb") as f:
        return "" if f.read(8)[4:8] == b"TFL3" else "not a TFLite model"


def _check_model_file(path: Path, model: TaskModel) -> None:
    why = _model_file_problem(path, model, path.suffix)
    if why:
        raise RuntimeError(
            f"'{path}' is not a usable MediaPipe {model.role} file ({why}; a partial download, an HTML page or "
            f"a git-LFS pointer?): delete it and let the pack fetch it again, or download it yourself from "
            f"{model_url(model)} (model page: {model.page})"
        )


def model_url(model: TaskModel) -> str:
    """Where `model` is fetched from: Google's storage, or $FANTASYTALKING_MEDIAPIPE_MIRROR + the same path."""
    mirror = os.environ.get(MIRROR_ENV, "").strip().rstrip("/")
    return mirror + model.url[len(_STORE):] if mirror else model.url


def fetch_task_model(key: str, folder: Path, progress: bool = True, timeout: float = 60.0) -> Path:
    """The first-use fetch of `TASK_MODELS[key]` into `folder` (as its first accepted name).

    Prints the URL and the destination, shows a progress bar, writes to a temporary name in the
    folder, checks the size and the content, then renames: a failed or partial download never
    leaves a file that looks finished. FANTASYTALKING_OFFLINE=1 or a network error: a RuntimeError
    naming the URL and the folder, so the user can put the file there by hand."""
    from tqdm.auto import tqdm

    model = TASK_MODELS[key]
    url, dest = model_url(model), Path(folder) / model.names[0]
    by_hand = (f"download {url} (model page: {model.page}) and put it in '{folder}' as {dest.name}, or {PIP_FIX}, "
               "whose wheel bundles the models")
    if os.environ.get(OFFLINE_ENV, "").strip() not in ("", "0"):
        raise RuntimeError(f"MediaPipe {model.role} model {dest.name} is not in '{folder}', and {OFFLINE_ENV} forbids "
                           f"fetching it: {by_hand}")
    print(f"MediaPipe: fetching the {model.role} model (first use)\n  from {url}\n  to   {dest}", file=sys.stderr,
          flush=True)
    tmp = dest.with_name(f".{dest.name}.{uuid.uuid4().hex[:8]}.part")
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
        request = urllib.request.Request(url, headers={"User-Agent": "ComfyUI-FantasyTalking"})
        with urllib.request.urlopen(request, timeout=timeout) as response, open(tmp, "wb") as out:
            total = int(response.headers.get("Content-Length") or 0) or None
            with tqdm(total=total, unit="B", unit_scale=True, desc=dest.name, disable=not progress) as bar:
                while chunk := response.read(1 << 16):
                    out.write(chunk)
                    bar.update(len(chunk))
        size = tmp.stat().st_size
        why = (f"{size} of {total} bytes arrived" if total is not None and size != total
               else _model_file_problem(tmp, model, dest.suffix))
        if why:
            raise RuntimeError(f"the file fetched from {url} is not a usable MediaPipe {model.role} model ({why}; an "
                               f"HTML page, a partial download or a git-LFS pointer?); nothing was saved. Try again, "
                               f"or {by_hand}")
        os.replace(tmp, dest)
    except (urllib.error.URLError, http.client.HTTPException, OSError) as err:  # no network, timeout, HTTP errors, cut off
        raise RuntimeError(f"could not fetch the MediaPipe {model.role} model ({err}): {by_hand}") from err
    finally:
        tmp.unlink(missing_ok=True)
    return dest


@dataclass(frozen=True)
class MediaPipeBackend:
    """A chosen backend ("solutions" or "tasks") and the folders holding Tasks model files.

    Build it with `get_backend`. It holds no models: each `face_detector` / `face_mesh` / `pose`
    call opens one for a `with` block and closes it after.
    """

    name: str
    models_dirs: tuple[Path, ...] = ()
    version: str = ""
    reason: str = ""

    @property
    def detector_sources(self) -> tuple[str, ...]:
        """Face detector models in the order `face.detect_faces` tries them."""
        if self.name == "solutions":
            return ("mediapipe_full_range", "mediapipe_short_range")
        return ("mediapipe_tasks_short_range",)

    def task_model(self, key: str) -> Path:
        """Path of the Tasks model file `key` ("face_landmarker", "pose_landmarker", "face_detector"),
        fetched into the first folder on first use (`fetch_task_model`)."""
        path = find_task_model(key, self.models_dirs)
        if path is None:
            if not self.models_dirs:
                raise RuntimeError(f"MediaPipe Tasks backend without a model folder: {_files_help(())}")
            path = fetch_task_model(key, self.models_dirs[0])
        return path

    def _base_options(self, key: str) -> Any:
        from mediapipe.tasks.python.core.base_options import BaseOptions

        if key == "face_detector" and find_task_model(key, self.models_dirs) is None:
            # face_landmarker.task (needed for the face mesh anyway) carries its own BlazeFace detector
            with zipfile.ZipFile(self.task_model("face_landmarker")) as z:
                return BaseOptions(model_asset_buffer=z.read("face_detector.tflite"))
        return BaseOptions(model_asset_path=str(self.task_model(key)))

    @contextmanager
    def face_detector(self, source: str, min_confidence: float) -> Iterator[Callable[[np.ndarray], list]]:
        """`with b.face_detector(source, c) as detect:` -> `detect(rgb)`: list of
        `(box [x0,y0,x1,y1], score, keypoints [6,2])`, normalised, unclipped."""
        if source not in self.detector_sources:
            raise ValueError(f"face detector {source!r} is not in backend {self.name!r}: {self.detector_sources}")
        if self.name == "solutions":
            solutions = mediapipe_solutions()
            selection = 1 if source == "mediapipe_full_range" else 0
            with solutions.face_detection.FaceDetection(model_selection=selection,
                                                        min_detection_confidence=float(min_confidence)) as det:
                yield lambda rgb: [detection_from_solutions(d) for d in det.process(rgb).detections or []]
            return
        from mediapipe.tasks.python import vision

        options = vision.FaceDetectorOptions(base_options=self._base_options("face_detector"),
                                             min_detection_confidence=float(min_confidence))
        with vision.FaceDetector.create_from_options(options) as det:
            def detect(rgb: np.ndarray) -> list:
                h, w = rgb.shape[:2]
                return [detection_from_tasks(d, w, h) for d in det.detect(_mp_image(rgb)).detections]

            yield detect

    @contextmanager
    def face_mesh(self, *, static_image_mode: bool, max_num_faces: int, refine_landmarks: bool,
                  min_confidence: float) -> Iterator[Callable[[np.ndarray], list[np.ndarray]]]:
        """`with b.face_mesh(...) as mesh:` -> `mesh(rgb)`: one float32 `[N,3]` normalised array per
        face, N = 478 with `refine_landmarks`, else 468. Without `static_image_mode` the face is
        tracked from call to call (frames of one video, in order)."""
        n = 478 if refine_landmarks else 468
        if self.name == "solutions":
            solutions = mediapipe_solutions()
            with solutions.face_mesh.FaceMesh(
                static_image_mode=bool(static_image_mode), max_num_faces=int(max_num_faces),
                refine_landmarks=bool(refine_landmarks), min_detection_confidence=float(min_confidence),
                min_tracking_confidence=float(min_confidence),
            ) as mesh:
                yield lambda rgb: [landmarks_array(f.landmark) for f in mesh.process(rgb).multi_face_landmarks or []]
            return
        from mediapipe.tasks.python import vision

        path = self.task_model("face_landmarker")
        mode = vision.RunningMode.IMAGE if static_image_mode else vision.RunningMode.VIDEO
        # solutions' min_tracking_confidence is the face-presence threshold; Tasks names it apart.
        options = vision.FaceLandmarkerOptions(
            base_options=self._base_options("face_landmarker"), running_mode=mode, num_faces=int(max_num_faces),
            min_face_detection_confidence=float(min_confidence), min_face_presence_confidence=float(min_confidence),
            min_tracking_confidence=float(min_confidence),
        )
        clock = itertools.count(0, VIDEO_FRAME_MS)
        with vision.FaceLandmarker.create_from_options(options) as mesh:
            def run(rgb: np.ndarray) -> list[np.ndarray]:
                image = _mp_image(rgb)
                result = mesh.detect(image) if static_image_mode else mesh.detect_for_video(image, next(clock))
                faces = [landmarks_array(f) for f in result.face_landmarks]
                if faces and len(faces[0]) < n:
                    raise RuntimeError(f"'{path}' gives {len(faces[0])} face landmarks, fewer than the {n} asked "
                                       f"for: use Google's face_landmarker.task ({TASK_MODELS['face_landmarker'].url})")
                return [f[:n] for f in faces]

            yield run

    @contextmanager
    def pose(self, min_confidence: float) -> Iterator[Callable[[np.ndarray], np.ndarray | None]]:
        """`with b.pose(c) as pose:` -> `pose(rgb)`: float32 `[33,4]` (x, y, z normalised,
        visibility) of one body, or None; every image on its own (static-image mode)."""
        if self.name == "solutions":
            solutions = mediapipe_solutions()
            with solutions.pose.Pose(static_image_mode=True, model_complexity=POSE_MODEL_COMPLEXITY,
                                     min_detection_confidence=float(min_confidence)) as pose:
                def run_solutions(rgb: np.ndarray) -> np.ndarray | None:
                    found = pose.process(rgb).pose_landmarks
                    return None if found is None else landmarks_array(found.landmark, visibility=True)

                yield run_solutions
            return
        from mediapipe.tasks.python import vision

        options = vision.PoseLandmarkerOptions(base_options=self._base_options("pose_landmarker"), num_poses=1,
                                               min_pose_detection_confidence=float(min_confidence))
        with vision.PoseLandmarker.create_from_options(options) as pose:
            def run_tasks(rgb: np.ndarray) -> np.ndarray | None:
                found = pose.detect(_mp_image(rgb)).pose_landmarks
                return landmarks_array(found[0], visibility=True) if found else None

            yield run_tasks


def get_backend(backend: str | MediaPipeBackend | None = "auto",
                models_dir: str | os.PathLike | Sequence[str | os.PathLike] | None = None) -> MediaPipeBackend:
    """Choose the MediaPipe backend.

    `backend`: "auto" (or None): "solutions" when mediapipe.solutions and its bundled models are
    there, else "tasks" when the Tasks API is importable, else an error listing the fixes;
    "solutions" / "tasks" force one (an error says what is missing); a `MediaPipeBackend` is
    returned as is. `models_dir`: see `resolve_models_dirs`. Tasks model files are looked up (and
    fetched) when a model is first used, so a missing pose model only stops the body-motion measurement.
    """
    if isinstance(backend, MediaPipeBackend):
        return backend
    backend = "auto" if backend is None else backend
    if backend not in BACKENDS:
        raise ValueError(f"MediaPipe backend must be one of {BACKENDS} or a MediaPipeBackend, got {backend!r}")
    dirs = resolve_models_dirs(models_dir)
    mp = _import_mediapipe(dirs)
    version = str(getattr(mp, "__version__", "?"))
    missing = _bundled_missing(mp)
    if backend == "solutions" or (backend == "auto" and not missing):
        if missing:
            mediapipe_solutions()  # raises the error that says what is missing and the fixes
        return MediaPipeBackend("solutions", dirs, version, "mediapipe.solutions with the models bundled in the wheel")
    no_bundled = _no_bundled(version, missing)
    if not _has_tasks_api(mp):
        raise RuntimeError(f"{no_bundled}, and its Tasks API (mediapipe.tasks.python.vision) cannot be imported: "
                           f"{PIP_FIX}")
    if not dirs:
        raise RuntimeError(f"backend='tasks' needs a folder for the MediaPipe model files: {_files_help(dirs)}")
    found = {k: p for k in TASK_MODELS if (p := find_task_model(k, dirs)) is not None}
    files = ", ".join(p.name for p in found.values()) or "none yet: fetched on first use"
    return MediaPipeBackend("tasks", dirs, version, f"MediaPipe Tasks API with model files from {_where(dirs)} "
                                                    f"({files})")


# ----------------------------------------------------------------------------- result conversion


def _mp_image(rgb: np.ndarray) -> Any:
    import mediapipe as mp

    return mp.Image(image_format=mp.ImageFormat.SRGB, data=np.ascontiguousarray(rgb, dtype=np.uint8))


def landmarks_array(landmarks: Sequence[Any], visibility: bool = False) -> np.ndarray:
    """MediaPipe landmarks (solutions protos or Tasks `NormalizedLandmark`s) -> float32 `[N,3]`
    (x, y, z), or `[N,4]` with visibility (None in a Tasks landmark reads as 0)."""
    fields = ("x", "y", "z", "visibility") if visibility else ("x", "y", "z")
    return np.array([[getattr(p, f) or 0.0 for f in fields] for p in landmarks], np.float32).reshape(-1, len(fields))


def detection_from_solutions(det: Any) -> tuple[np.ndarray, float, np.ndarray]:
    """A solutions `Detection` proto -> normalised (box [x0,y0,x1,y1], score, keypoints [K,2])."""
    rel = det.location_data.relative_bounding_box
    box = np.array([rel.xmin, rel.ymin, rel.xmin + rel.width, rel.ymin + rel.height], np.float64)
    kps = np.array([[k.x, k.y] for k in det.location_data.relative_keypoints], np.float32).reshape(-1, 2)
    return box, float(det.score[0]), kps


def detection_from_tasks(det: Any, width: int, height: int) -> tuple[np.ndarray, float, np.ndarray]:
    """A Tasks `Detection` (pixel box, normalised keypoints) -> the same as `detection_from_solutions`."""
    bb = det.bounding_box
    box = np.array([bb.origin_x / width, bb.origin_y / height, (bb.origin_x + bb.width) / width,
                    (bb.origin_y + bb.height) / height], np.float64)
    kps = np.array([[k.x, k.y] for k in det.keypoints or []], np.float32).reshape(-1, 2)
    return box, float(det.categories[0].score), kps
