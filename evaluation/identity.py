"""Identity consistency: face embeddings of the frames against the reference and each other.

Every face (reference and frames) is aligned the same way: five points from MediaPipe face mesh
(eye centres, nose tip, mouth corners, as `face.mediapipe_five_points`) warped onto the 112x112
ArcFace template (`face.align_face`). The embedding is ArcFace (512-d) when an insightface pack
is present; otherwise a HOG descriptor of the aligned grey face, computed by OpenCV, which ships
with mediapipe. The report names the embedder, because the two scales differ: ArcFace cosine
for the same person is typically 0.5-0.9 and near 0 for strangers, while HOG cosine is high for
any two faces (measured: 0.997 for one photo moved and rotated, 0.76-0.81 for other people) and
only its changes mean something. Never compare numbers from different embedders.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .media import sample_indices

HOG_EMBEDDER = "hog_cv2_aligned112"


class HogEmbedder:
    """Fallback face embedding: `cv2.HOGDescriptor` over the aligned 112x112 grey face (window
    112, blocks 32 px at stride 16, cells 16 px, 9 bins: 1296-d), L2-normalised."""

    name = HOG_EMBEDDER
    dim = 1296

    def __init__(self) -> None:
        import cv2

        self._hog = cv2.HOGDescriptor((112, 112), (32, 32), (16, 16), (16, 16), 9)

    def embed_aligned(self, aligned: np.ndarray) -> np.ndarray:
        """Aligned RGB uint8 faces `[N,112,112,3]` -> float32 `[N,1296]`, unit norm."""
        import cv2

        batch = np.asarray(aligned)
        batch = batch[None] if batch.ndim == 3 else batch
        if batch.ndim != 4 or batch.shape[1:] != (112, 112, 3):
            raise ValueError(f"aligned faces have shape {list(np.shape(aligned))}; expected [N,112,112,3] RGB")
        feats = np.stack([self._hog.compute(cv2.cvtColor(f, cv2.COLOR_RGB2GRAY)).reshape(-1) for f in batch])
        feats = feats.astype(np.float32)
        return feats / np.maximum(np.linalg.norm(feats, axis=1, keepdims=True), 1e-12)


class ArcFaceIdentity:
    """ArcFace from an insightface pack (`face.ArcFaceEmbedder`), under a name for the report."""

    def __init__(self, pack: str | Path) -> None:
        from fantasytalking_core.face import ArcFaceEmbedder

        self.embedder = ArcFaceEmbedder.from_pack(pack, landmarks="mediapipe")
        self.name = f"arcface:{Path(pack).name}/{self.embedder.model_path.name}"
        self.dim = 512

    def embed_aligned(self, aligned: np.ndarray) -> np.ndarray:
        return self.embedder.embed_aligned(aligned)


def make_embedder(pack: str | Path | None) -> Any:
    """ArcFace when `pack` is given (errors clearly if it is not a usable pack), else HOG."""
    return ArcFaceIdentity(pack) if pack is not None else HogEmbedder()


def five_points_from_mesh(landmarks: np.ndarray) -> np.ndarray:
    """The ArcFace five points `[5,2]` from one frame's face-mesh landmarks `[N,2]`, with the
    indices `face.mediapipe_five_points` uses."""
    from fantasytalking_core.face import MESH_EYE_LEFT, MESH_EYE_RIGHT, MESH_MOUTH, MESH_NOSE_TIP

    pts = np.asarray(landmarks, np.float64)
    return np.stack([pts[list(MESH_EYE_LEFT)].mean(0), pts[list(MESH_EYE_RIGHT)].mean(0), pts[MESH_NOSE_TIP],
                     pts[MESH_MOUTH[0]], pts[MESH_MOUTH[1]]]).astype(np.float32)


def reference_embedding(embedder: Any, image: np.ndarray) -> tuple[np.ndarray | None, str]:
    """Embedding `[D]` of the largest face in the reference image, or (None, why)."""
    from fantasytalking_core.face import align_face, detect_faces, mediapipe_five_points

    faces = detect_faces(image)
    if not faces:
        return None, "no face found in the reference image"
    five, _ = mediapipe_five_points(image, faces[0])
    note = f"{len(faces)} faces in the reference; the largest was used" if len(faces) > 1 else ""
    return embedder.embed_aligned(align_face(image, five))[0], note


@dataclass
class IdentityResult:
    """Cosine similarities (embeddings have unit norm). `to_reference` per sampled frame (None
    without a reference), `to_first` and `adjacent` between sampled frames."""

    available: bool
    reason: str = ""
    embedder: str = ""
    frames: list[int] = field(default_factory=list)
    to_reference: np.ndarray | None = None
    to_first: np.ndarray | None = None
    adjacent: np.ndarray | None = None
    notes: list[str] = field(default_factory=list)

    @staticmethod
    def _mean(x: np.ndarray | None) -> float | None:
        return None if x is None or len(x) == 0 else float(np.mean(x))

    def headline(self) -> dict[str, Any]:
        return {"identity_embedder": self.embedder or None,
                "identity_to_reference": self._mean(self.to_reference),
                "identity_to_reference_min": None if self.to_reference is None or not len(self.to_reference)
                else float(np.min(self.to_reference)),
                "identity_to_first": self._mean(self.to_first), "identity_adjacent": self._mean(self.adjacent)}

    def to_dict(self) -> dict[str, Any]:
        arr = lambda x: None if x is None else [round(float(v), 6) for v in x]  # noqa: E731
        return {"available": self.available, "reason": self.reason, "embedder": self.embedder,
                "frames": self.frames, "to_reference": arr(self.to_reference), "to_first": arr(self.to_first),
                "adjacent": arr(self.adjacent), "notes": self.notes, **self.headline()}


def measure_identity(frames: np.ndarray, landmarks: np.ndarray, found: np.ndarray, embedder: Any,
                     reference: np.ndarray | None = None, max_frames: int = 32) -> IdentityResult:
    """Embed up to `max_frames` frames (evenly spread over those with a face) and compare."""
    from fantasytalking_core.face import align_face

    have = np.flatnonzero(found)
    if len(have) == 0:
        return IdentityResult(False, "no face found in any frame", embedder.name)
    idx = have[sample_indices(len(have), max_frames)]
    aligned = np.stack([align_face(frames[i], five_points_from_mesh(landmarks[i])) for i in idx])
    emb = embedder.embed_aligned(aligned)  # [N, D], unit norm
    notes: list[str] = []
    to_ref = None
    if reference is not None:
        ref, note = reference_embedding(embedder, reference)
        notes += [note] if note else []
        to_ref = None if ref is None else emb @ ref
    to_first = emb[1:] @ emb[0]
    adjacent = np.sum(emb[1:] * emb[:-1], axis=1)
    return IdentityResult(True, "", embedder.name, idx.tolist(), to_ref, to_first, adjacent, notes)
