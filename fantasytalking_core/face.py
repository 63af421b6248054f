"""Reference-face handling for the identity adapter: detection, square crop, ArcFace embedding.

Faces are found with MediaPipe face detection (`mediapipe_backend`: the models bundled in the
mediapipe 0.10.14 wheel, or the Tasks API with user-provided model files). The
identity feature is an ArcFace embedding from an insightface model pack (antelopev2 or
buffalo_l) that the user puts in `ComfyUI/models/insightface/models/<pack>/`; nothing is ever
downloaded. The face is aligned to the standard 112x112 ArcFace five-point template as
insightface does. The five points come from the pack's SCRFD detector when the optional
`insightface` package can run it, otherwise from MediaPipe face mesh (eye centres, nose tip,
mouth corners). Every result says which detector and which landmarks were used.

Images in: numpy uint8 or float [H,W,C] / torch float [H,W,C] 0..1 (or a ComfyUI batch of one,
[1,H,W,C]); RGB, RGBA (alpha dropped) or grayscale ([H,W] or [H,W,1], replicated). All image
outputs are RGB uint8 numpy arrays.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from .mediapipe_backend import MediaPipeBackend, get_backend, mediapipe_solutions  # noqa: F401 (public re-export)

ARCFACE_TEMPLATE = np.array(  # 112x112 ArcFace five-point template (insightface face_align)
    [[38.2946, 51.6963], [73.5318, 51.5014], [56.0252, 71.7366], [41.5493, 92.3655], [70.7299, 92.2041]],
    dtype=np.float32,
)
ARCFACE_TEMPLATE.setflags(write=False)
FIVE_POINT_NAMES = ("eye_image_left", "eye_image_right", "nose_tip", "mouth_image_left", "mouth_image_right")
MEDIAPIPE_KEYPOINT_NAMES = ("right_eye", "left_eye", "nose_tip", "mouth_center", "right_ear", "left_ear")
# MediaPipe face-mesh indices behind the five points (image-left eye = the person's right eye).
MESH_EYE_LEFT, MESH_EYE_RIGHT, MESH_NOSE_TIP, MESH_MOUTH = (33, 133), (362, 263), 1, (61, 291)
PACK_HELP = (
    "Put an insightface model pack (antelopev2 or buffalo_l, the .onnx files from the insightface "
    "project's model releases) in ComfyUI/models/insightface/models/<pack>/, e.g. "
    "ComfyUI/models/insightface/models/antelopev2/glintr100.onnx. Nothing is downloaded automatically."
)


# ----------------------------------------------------------------------------- image input


def as_rgb_uint8(image: Any, name: str = "image") -> np.ndarray:
    """Any supported single image -> contiguous RGB uint8 numpy `[H,W,3]`."""
    arr = image.detach().cpu().float().numpy() if hasattr(image, "detach") else np.asarray(image)
    if arr.ndim == 4:
        if arr.shape[0] != 1:
            raise ValueError(
                f"{name} is a batch of {arr.shape[0]} images {list(arr.shape)}; pass one image, e.g. image[0]"
            )
        arr = arr[0]
    if arr.ndim == 2:
        arr = arr[..., None]
    if arr.ndim != 3 or arr.shape[-1] not in (1, 2, 3, 4):
        raise ValueError(
            f"{name} has shape {list(arr.shape)}; expected [H,W,C] with C in 1 (gray), 3 (RGB) or 4 (RGBA), "
            "channels last (permute a [C,H,W] tensor first)"
        )
    if arr.shape[0] == 0 or arr.shape[1] == 0:
        raise ValueError(f"{name} is empty: shape {list(arr.shape)}")
    arr = arr[..., :3] if arr.shape[-1] >= 3 else np.repeat(arr[..., :1], 3, axis=-1)
    if arr.dtype == np.uint8:
        out = arr
    elif arr.dtype == np.bool_:
        out = arr.astype(np.uint8) * 255
    elif arr.dtype == np.uint16:
        out = (arr >> 8).astype(np.uint8)
    elif np.issubdtype(arr.dtype, np.floating):
        if not np.isfinite(arr).all():
            raise ValueError(f"{name} contains NaN or infinite values")
        hi = float(arr.max())
        if hi > 1.5:
            raise ValueError(
                f"{name} is float with values up to {hi:.1f}; expected 0..1 (ComfyUI IMAGE). "
                "Divide by 255 or pass a uint8 array"
            )
        out = np.round(np.clip(arr, 0.0, 1.0) * 255.0).astype(np.uint8)
    else:
        raise ValueError(f"{name} has dtype {arr.dtype}; expected uint8, uint16 or float 0..1")
    return np.ascontiguousarray(out)


def as_rgb_uint8_frames(frames: Any, name: str = "frames") -> np.ndarray:
    """A video `[T,H,W,C]` (numpy/torch) or a list of images -> RGB uint8 `[T,H,W,3]`."""
    if isinstance(frames, np.ndarray) and frames.dtype == np.uint8 and frames.ndim == 4 and frames.shape[-1] == 3:
        if not len(frames):
            raise ValueError(f"{name} has no frames")
        return frames  # already RGB bytes (a decoded video): no second copy of a long video
    if isinstance(frames, (list, tuple)):
        items = [as_rgb_uint8(f, f"{name}[{i}]") for i, f in enumerate(frames)]
    else:
        arr = frames.detach().cpu() if hasattr(frames, "detach") else np.asarray(frames)
        if arr.ndim != 4:
            raise ValueError(
                f"{name} has shape {list(arr.shape)}; expected a video [T,H,W,C] (ComfyUI IMAGE batch) "
                "or a list of images"
            )
        items = [as_rgb_uint8(arr[i], f"{name}[{i}]") for i in range(arr.shape[0])]
    if not items:
        raise ValueError(f"{name} has no frames")
    shapes = {f.shape for f in items}
    if len(shapes) > 1:
        raise ValueError(f"{name} mixes frame sizes {sorted(shapes)}; resize them to one size first")
    return np.stack(items)


# ----------------------------------------------------------------------------- detection


@dataclass
class FaceDetection:
    """One face: pixel box `(x0, y0, x1, y1)` clipped to the image, score in [0,1], and optional
    keypoints `[K,2]` (x, y pixels) named by `keypoint_names`; `source` names the detector."""

    box: tuple[float, float, float, float]
    score: float
    keypoints: np.ndarray | None = None
    keypoint_names: tuple[str, ...] = ()
    source: str = "mediapipe_full_range"

    @property
    def width(self) -> float:
        return self.box[2] - self.box[0]

    @property
    def height(self) -> float:
        return self.box[3] - self.box[1]

    @property
    def area(self) -> float:
        return max(self.width, 0.0) * max(self.height, 0.0)

    @property
    def center(self) -> tuple[float, float]:
        return (self.box[0] + self.box[2]) / 2, (self.box[1] + self.box[3]) / 2


def detect_faces(image: Any, min_confidence: float = 0.5, *,
                 backend: str | MediaPipeBackend | None = None) -> list[FaceDetection]:
    """All faces in `image`, largest first, with MediaPipe's six keypoints.

    Solutions backend: the full-range model (`model_selection=1`) first: it found every portrait
    we tried, from faces ~20 px wide to faces filling the frame, and the small faces of group
    photos that the short-range model misses; the short-range model (`model_selection=0`) runs
    only when the full-range one finds nothing. Tasks backend: only the short-range model exists
    (faces that fill a good part of the picture). `backend`: see `mediapipe_backend.get_backend`.
    """
    if not 0.0 < float(min_confidence) <= 1.0:
        raise ValueError(f"min_confidence must be in (0, 1], got {min_confidence!r}")
    rgb = as_rgb_uint8(image)
    h, w = rgb.shape[:2]
    mp_backend = get_backend(backend)

    for source in mp_backend.detector_sources:
        with mp_backend.face_detector(source, float(min_confidence)) as detect:
            raw = detect(rgb)
        found = []
        for box, score, kps in raw:
            x0, y0 = max(float(box[0]) * w, 0.0), max(float(box[1]) * h, 0.0)
            x1, y1 = min(float(box[2]) * w, w), min(float(box[3]) * h, h)
            face = FaceDetection((x0, y0, x1, y1), score, (kps * [w, h]).astype(np.float32), MEDIAPIPE_KEYPOINT_NAMES,
                                 source)
            if face.area > 0 and score >= min_confidence:  # the full-range graph can report lower scores
                found.append(face)
        if found:
            return sorted(found, key=lambda f: f.area, reverse=True)
    return []


def select_face(detections: Sequence[FaceDetection]) -> tuple[FaceDetection, str]:
    """The face to use: the only one, or the largest of several (warned, and said in the note)."""
    if not detections:
        raise ValueError(
            "no face found in the reference image: use a photo where the face is visible, "
            "roughly frontal and at least ~64 px wide"
        )
    best = max(detections, key=lambda f: f.area)
    if len(detections) == 1:
        return best, ""
    x0, y0, x1, y1 = (round(v) for v in best.box)
    note = (
        f"found {len(detections)} faces in the reference image; using the largest, box "
        f"({x0}, {y0}, {x1}, {y1}), {x1 - x0}x{y1 - y0} px. Crop the image to choose another"
    )
    warnings.warn(note, stacklevel=2)
    return best, note


def _square_region(box: Sequence[float], scale: float) -> tuple[int, int, int]:
    """Square `(x0, y0, side)` in pixels, `scale` times the box's longer side, same centre."""
    x0, y0, x1, y1 = (float(v) for v in box)
    side = max(1, int(round(scale * max(x1 - x0, y1 - y0))))
    return int(round((x0 + x1 - side) / 2)), int(round((y0 + y1 - side) / 2)), side


def _padded_crop(rgb: np.ndarray, x0: int, y0: int, side: int) -> np.ndarray:
    """`rgb[y0:y0+side, x0:x0+side]` with black where the square leaves the image."""
    out = np.zeros((side, side, 3), np.uint8)
    h, w = rgb.shape[:2]
    sx0, sy0, sx1, sy1 = max(x0, 0), max(y0, 0), min(x0 + side, w), min(y0 + side, h)
    if sx1 > sx0 and sy1 > sy0:
        out[sy0 - y0 : sy1 - y0, sx0 - x0 : sx1 - x0] = rgb[sy0:sy1, sx0:sx1]
    return out


def crop_face(image: Any, detection: FaceDetection, scale: float = 1.5, size: int | None = None) -> np.ndarray:
    """Square RGB uint8 crop `[S,S,3]` centred on the face box, `scale` x its longer side, black
    padding where it leaves the image; resized to `size` x `size` when given."""
    if not (math.isfinite(scale) and scale > 0):
        raise ValueError(f"scale must be a finite number > 0, got {scale!r} (1.5 keeps hair and chin)")
    if size is not None and (isinstance(size, bool) or int(size) != size or size < 1):
        raise ValueError(f"size must be None or an int >= 1, got {size!r}")
    import cv2

    crop = _padded_crop(as_rgb_uint8(image), *_square_region(detection.box, scale))
    if size is not None and crop.shape[0] != size:
        interp = cv2.INTER_AREA if crop.shape[0] > size else cv2.INTER_CUBIC
        crop = cv2.resize(crop, (int(size), int(size)), interpolation=interp)
    return crop


# ----------------------------------------------------------------------------- alignment


def similarity_transform(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """Least-squares similarity (rotation, uniform scale, shift) mapping `src` [N,2] onto `dst`
    [N,2] (Umeyama 1991, as skimage's SimilarityTransform.estimate); returns the `[2,3]` matrix."""
    src, dst = np.asarray(src, np.float64), np.asarray(dst, np.float64)
    mu_s, mu_d = src.mean(0), dst.mean(0)
    s, d = src - mu_s, dst - mu_d
    cov = d.T @ s / len(src)
    u, sig, vt = np.linalg.svd(cov)
    fix = np.diag([1.0, np.sign(np.linalg.det(u @ vt)) or 1.0])
    rot = u @ fix @ vt
    scale = float((sig * np.diag(fix)).sum() / max(s.var(0).sum(), 1e-12))
    return np.hstack([scale * rot, (mu_d - scale * rot @ mu_s)[:, None]])


def align_face(image: Any, five_points: np.ndarray, size: int = 112) -> np.ndarray:
    """Warp the face to the ArcFace template: RGB uint8 `[size,size,3]` (insightface norm_crop)."""
    import cv2

    matrix = similarity_transform(five_points, ARCFACE_TEMPLATE * (size / 112.0))
    return cv2.warpAffine(as_rgb_uint8(image), matrix, (size, size), borderValue=0.0)


def mediapipe_five_points(image: Any, detection: FaceDetection, *,
                          backend: str | MediaPipeBackend | None = None) -> tuple[np.ndarray, str]:
    """Five ArcFace points `[5,2]` (pixels) for `detection`, and how they were obtained.

    Face mesh runs on a 2x square crop around the box, resized to 256 px: eye centres are the
    means of the eye corners, then nose tip and mouth corners. If the mesh finds no face there,
    the detector's keypoints are used, mouth corners placed at +-0.415 x the eye vector from the
    mouth centre (the template's mouth-width/eye-distance ratio); the source says so.
    """
    import cv2

    mp_backend = get_backend(backend)
    rgb = as_rgb_uint8(image)
    x0, y0, side = _square_region(detection.box, 2.0)
    crop = cv2.resize(_padded_crop(rgb, x0, y0, side), (256, 256), interpolation=cv2.INTER_AREA)
    with mp_backend.face_mesh(static_image_mode=True, max_num_faces=3, refine_landmarks=False,
                              min_confidence=0.3) as mesh:
        meshes = mesh(crop)
    if meshes:
        faces = [f[:, :2].astype(np.float64) * 256 for f in meshes]
        pts = min(faces, key=lambda f: float(np.linalg.norm(f.mean(0) - 128)))  # the face at the centre
        five = np.stack([pts[list(MESH_EYE_LEFT)].mean(0), pts[list(MESH_EYE_RIGHT)].mean(0),
                         pts[MESH_NOSE_TIP], pts[MESH_MOUTH[0]], pts[MESH_MOUTH[1]]])
        source = "mediapipe_face_mesh" if mp_backend.name == "solutions" else "mediapipe_tasks_face_mesh"
        return (five * side / 256 + [x0, y0]).astype(np.float32), source
    if detection.keypoints is None or len(detection.keypoints) < 4:
        raise ValueError(
            "could not place eye, nose and mouth landmarks on the selected face: use a sharper, "
            "more frontal reference photo"
        )
    eye_a, eye_b, nose, mouth = (np.asarray(p, np.float64) for p in detection.keypoints[:4])
    left, right = (eye_a, eye_b) if eye_a[0] <= eye_b[0] else (eye_b, eye_a)
    half = 0.415 * (right - left)
    five = np.stack([left, right, nose, mouth - half, mouth + half]).astype(np.float32)
    return five, "mediapipe_detection_approx"


# ----------------------------------------------------------------------------- ArcFace


def _onnx_role(path: Path) -> tuple[str, bool]:
    """("recognition" | "detector" | "other", normalises_inside) from an ONNX file's signature.

    Recognition: one input [N,3,112,112], one output [N,512]. Detector: SCRFD with keypoints
    (9 or 15 outputs). `normalises_inside` is insightface's rule for mxnet exports: the first
    nodes include Sub and Mul, so the net takes raw 0..255 pixels.
    """
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    weights = {t.name for t in model.graph.initializer}
    dims = lambda v: [d.dim_value if d.dim_value > 0 else None for d in v.type.tensor_type.shape.dim]  # noqa: E731
    ins = [dims(v) for v in model.graph.input if v.name not in weights]
    outs = [dims(v) for v in model.graph.output]
    first = [n.name for n in model.graph.node[:8]]
    inside = any(n.startswith(("Sub", "_minus")) for n in first) and any(n.startswith(("Mul", "_mul")) for n in first)
    if len(ins) != 1 or len(ins[0]) != 4 or ins[0][1] != 3:
        return "other", inside
    if ins[0][2:] == [112, 112] and len(outs) == 1 and outs[0][-1:] == [512]:
        return "recognition", inside
    return ("detector" if len(outs) in (9, 15) else "other"), inside


@dataclass(eq=False)
class ArcFaceEmbedder:
    """A loaded insightface pack: the ArcFace ONNX session and, when usable, its SCRFD detector.

    Owned by the caller (a node or a data-prep script keeps one); build with `from_pack`.
    `landmarks` is "scrfd" when the detector gives the five points, else "mediapipe".
    """

    session: Any
    model_path: Path
    input_name: str
    output_name: str
    input_mean: float = 127.5
    input_std: float = 127.5
    detector: Any = None
    detector_path: Path | None = None
    landmarks: str = "mediapipe"
    det_size: tuple[int, int] = (640, 640)
    notes: list[str] = field(default_factory=list)

    @classmethod
    def from_pack(cls, pack_dir: str | Path, providers: Sequence[Any] | None = None,
                  landmarks: str = "auto", det_size: tuple[int, int] = (640, 640)) -> ArcFaceEmbedder:
        """Load the recognition model of a pack folder, found by signature as insightface does
        (input [N,3,112,112], one output [N,512]), not by file name; other files are ignored.

        `providers`: onnxruntime providers, default CPU. `landmarks`: "auto" (SCRFD when the pack
        has a keypoint detector and the optional `insightface` package is importable, else
        MediaPipe), "scrfd" (required, else an error) or "mediapipe".
        """
        if landmarks not in ("auto", "scrfd", "mediapipe"):
            raise ValueError(f"landmarks must be 'auto', 'scrfd' or 'mediapipe', got {landmarks!r}")
        pack = Path(pack_dir).expanduser()
        if not pack.is_dir():
            raise FileNotFoundError(f"insightface model pack folder not found: '{pack}'. {PACK_HELP}")
        files = sorted(pack.glob("*.onnx"))
        if not files:
            raise FileNotFoundError(f"no .onnx files in insightface pack folder '{pack}'. {PACK_HELP}")
        recognizers, detectors, unreadable, notes = [], [], [], []
        for path in files:
            try:
                role, inside = _onnx_role(path)
            except Exception as exc:  # a truncated download or a git-LFS pointer
                unreadable.append(f"{path.name} ({type(exc).__name__})")
                continue
            if role == "recognition":
                recognizers.append((path, inside))
            elif role == "detector":
                detectors.append(path)
        if not recognizers:
            bad = f"; unreadable: {', '.join(unreadable)}" if unreadable else ""
            raise FileNotFoundError(
                f"no ArcFace recognition model in '{pack}': none of {[p.name for p in files]} has input "
                f"[N,3,112,112] and output [N,512] (expected glintr100.onnx in antelopev2 or "
                f"w600k_r50.onnx in buffalo_l){bad}. {PACK_HELP}"
            )
        model_path, inside = recognizers[0]
        if len(recognizers) > 1:
            notes.append(f"several recognition models in '{pack}'; using {model_path.name}")
        import onnxruntime

        providers = list(providers) if providers else ["CPUExecutionProvider"]
        session = onnxruntime.InferenceSession(str(model_path), providers=providers)
        detector = detector_path = None
        if landmarks != "mediapipe" and detectors:
            try:
                from insightface.model_zoo import get_model  # optional; never called on a missing file
            except Exception as exc:
                notes.append(f"SCRFD detector {detectors[0].name} not used: insightface is not importable ({exc}); "
                             "pip install --no-deps insightface to use it")
            else:
                detector_path = detectors[0]
                detector = get_model(str(detector_path), providers=providers)  # an existing local file: no download
                detector.prepare(0, input_size=tuple(det_size))
        elif landmarks != "mediapipe":
            notes.append(f"no SCRFD keypoint detector in '{pack}'; five points come from MediaPipe face mesh")
        if landmarks == "scrfd" and detector is None:
            raise RuntimeError(
                f"landmarks='scrfd' needs an SCRFD detector in '{pack}' and the insightface package "
                f"(pip install --no-deps insightface: its opencv-python would add a second cv2): {'; '.join(notes)}"
            )
        mean, std = (0.0, 1.0) if inside else (127.5, 127.5)
        return cls(session, model_path, session.get_inputs()[0].name, session.get_outputs()[0].name, mean, std,
                   detector, detector_path, "scrfd" if detector is not None else "mediapipe", tuple(det_size), notes)

    def detect(self, image: Any, min_confidence: float = 0.5) -> list[FaceDetection]:
        """Faces from the pack's SCRFD detector (five keypoints each), largest first."""
        if self.detector is None:
            raise RuntimeError("this ArcFaceEmbedder has no SCRFD detector; use detect_faces() (MediaPipe)")
        rgb = as_rgb_uint8(image)
        h, w = rgb.shape[:2]
        # prepare() sets the threshold in insightface 0.7.x and 2.x alike; the model takes BGR.
        self.detector.prepare(0, input_size=self.det_size, det_thresh=float(min_confidence))
        boxes, kpss = self.detector.detect(np.ascontiguousarray(rgb[..., ::-1]), input_size=self.det_size)
        source = f"scrfd:{self.detector_path.name}"
        faces = [FaceDetection((max(float(b[0]), 0.0), max(float(b[1]), 0.0), min(float(b[2]), w), min(float(b[3]), h)),
                               float(b[4]), np.asarray(k, np.float32), FIVE_POINT_NAMES, source)
                 for b, k in zip(boxes, kpss)]
        return sorted([f for f in faces if f.area > 0], key=lambda f: f.area, reverse=True)

    def embed_aligned(self, aligned: np.ndarray) -> np.ndarray:
        """ArcFace embeddings, L2-normalised float32 `[N,512]`, of aligned RGB uint8 faces
        `[N,112,112,3]` or `[112,112,3]`. The net gets RGB, (x - mean) / std, NCHW: insightface
        feeds BGR with `swapRB=True`, i.e. RGB too."""
        batch = np.asarray(aligned)
        batch = batch[None] if batch.ndim == 3 else batch
        if batch.ndim != 4 or batch.shape[1:] != (112, 112, 3):
            raise ValueError(f"aligned faces have shape {list(np.shape(aligned))}; expected [N,112,112,3] RGB")
        blob = (batch.astype(np.float32).transpose(0, 3, 1, 2) - self.input_mean) / self.input_std
        feats = np.asarray(self.session.run([self.output_name], {self.input_name: blob})[0], np.float32)
        feats = feats.reshape(len(batch), -1)
        return feats / np.maximum(np.linalg.norm(feats, axis=1, keepdims=True), 1e-12)


@dataclass
class FaceEmbedding:
    """The reference face: ArcFace `embedding` float32 [512] (L2 norm 1; None without a pack),
    `crop` RGB uint8 [S,S,3], `aligned` RGB uint8 [112,112,3] (None without a pack), pixel `box`,
    five `landmarks` [5,2] (None without a pack), and where each came from."""

    embedding: np.ndarray | None
    crop: np.ndarray
    box: tuple[float, float, float, float]
    score: float
    detector: str
    num_faces: int
    aligned: np.ndarray | None = None
    landmarks: np.ndarray | None = None
    landmark_source: str = ""
    note: str = ""


def embed_reference(
    image: Any, pack_dir: str | Path | None = None, *, embedder: ArcFaceEmbedder | None = None,
    min_confidence: float = 0.5, crop_scale: float = 1.5, crop_size: int | None = None,
    backend: str | MediaPipeBackend | None = None,
) -> FaceEmbedding:
    """Detect, select (largest face), crop and embed the reference face.

    Pass a loaded `embedder` to reuse it, or `pack_dir` to load one for this call; with neither,
    the embedding is None and the note says why. Raises ValueError when no face is found.
    `backend`: the MediaPipe backend (`mediapipe_backend.get_backend`), resolved only when
    MediaPipe is needed (no SCRFD detector, or SCRFD found nothing, or five points from the mesh).
    """
    rgb = as_rgb_uint8(image)
    if embedder is None and pack_dir is not None:
        embedder = ArcFaceEmbedder.from_pack(pack_dir)
    notes = list(embedder.notes) if embedder is not None else []
    faces = []
    if embedder is not None and embedder.detector is not None:
        faces = embedder.detect(rgb, min_confidence)
        notes += [] if faces else ["SCRFD found no face; fell back to MediaPipe"]
    if not faces:
        mp_backend = get_backend(backend)
        faces = detect_faces(rgb, min_confidence, backend=mp_backend)
        if not faces and mp_backend.name == "tasks":
            raise ValueError(
                "no face found in the reference image by the MediaPipe Tasks backend, which has only the "
                "short-range face detector (faces that fill a good part of the picture): crop the image closer "
                "around the face, or pip install mediapipe==0.10.14 (Python 3.10-3.12) for the full-range detector"
            )
    face, note = select_face(faces)
    notes += [note] if note else []
    crop = crop_face(rgb, face, crop_scale, crop_size)
    if embedder is None:
        notes.append("no insightface pack given: identity embedding skipped. " + PACK_HELP)
        return FaceEmbedding(None, crop, face.box, face.score, face.source, len(faces), note=" ".join(notes))
    if face.source.startswith("scrfd"):
        five, landmark_source = face.keypoints, face.source
    else:
        five, landmark_source = mediapipe_five_points(rgb, face, backend=backend)
    aligned = align_face(rgb, five)
    embedding = embedder.embed_aligned(aligned)[0]
    return FaceEmbedding(embedding, crop, face.box, face.score, face.source, len(faces), aligned,
                         np.asarray(five, np.float32), landmark_source, " ".join(notes))
