"""One piece's training tensors: filters first (face, lip track, sync), then the encoders.

Frames arrive at the analysis resolution (uint8 [T, h, w, 3]); the training frames are made from
them exactly as inference prepares the portrait (`resize_and_crop` to `size`, multiples of 16).
MediaPipe runs once per piece (static-image face mesh, shared by the sync score, the lip masks and
omega_l); lip landmarks are mapped into the training frame, so the masks are drawn at the size
the VAE encodes.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from fantasytalking_core.face import ArcFaceEmbedder, FaceDetection
from fantasytalking_core.images import crop_geometry
from fantasytalking_core.lipmask import FaceMeshTrack

from .config import PrepareConfig

FALLBACK_FACE = "fallback:pixel-projection-v1"
ARCFACE_MISSING = (
    "ArcFace models not found: the identity adapter trains on ArcFace embeddings, which need an insightface "
    "model pack (antelopev2 or buffalo_l: the .onnx files from the insightface releases) given with "
    "--insightface-pack DIR. For tests and the tiny demo only, --fallback-face-embedding uses a deterministic "
    f"pixel projection instead, named '{FALLBACK_FACE}' in the manifest; adapters trained on it do not work "
    "with ArcFace embeddings at inference."
)
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


@dataclass
class Encoders:
    """The frozen models of data preparation (duck-typed as in fantasytalking_core.encoders)."""

    vae: Any
    text_encoder: Any
    clip_encoder: Any
    wav2vec: Any
    face: ArcFaceEmbedder | None  # None: the fallback embedding (explicitly chosen)
    device: torch.device
    sources: dict = field(default_factory=dict)

    @property
    def face_embedding(self) -> str:
        return FALLBACK_FACE if self.face is None else f"arcface:{self.face.model_path.name}"

    @classmethod
    def tiny(cls, seed: int = 0) -> "Encoders":
        """The random tiny encoders of `pipeline.tiny_components` (for the tiny model), fallback face."""
        from fantasytalking_core.pipeline import tiny_components

        c = tiny_components(seed=seed)
        return cls(c.vae, c.text_encoder, c.clip_encoder, c.wav2vec, None, torch.device("cpu"),
                   {"preset": f"tiny (seed {seed})"})

    @classmethod
    def load(cls, vae: str, text_encoder: str, clip_vision: str, wav2vec: str, insightface_pack: str | None,
             tokenizer: str | None = None, device: str = "auto") -> "Encoders":
        """Real encoders from local files (nothing is downloaded); `insightface_pack` None = fallback."""
        from fantasytalking_core.encoders import load_clip_vision, load_text_encoder, load_vae, load_wav2vec

        from fantasytalking_core.devices import pick_device

        dev = pick_device(device)
        half = torch.float32 if dev.type == "cpu" else torch.bfloat16
        face = ArcFaceEmbedder.from_pack(insightface_pack) if insightface_pack else None
        return cls(load_vae(vae, device=dev, dtype=torch.float32, tiling=True),
                   load_text_encoder(text_encoder, tokenizer, device=dev, dtype=half),
                   load_clip_vision(clip_vision, device=dev, dtype=torch.float32 if dev.type == "cpu" else torch.float16),
                   load_wav2vec(wav2vec, device=dev), face, dev,
                   {"vae": str(vae), "text_encoder": str(text_encoder), "clip_vision": str(clip_vision),
                    "wav2vec": str(wav2vec), "insightface_pack": str(insightface_pack)})


def fallback_face_embedding(aligned: np.ndarray) -> np.ndarray:
    """NOT ArcFace: an aligned 112x112 face -> gray 32x32 -> fixed random projection -> L2-normalised
    float32 [512]. Deterministic and face-dependent, for tests and demos without insightface models."""
    import cv2

    gray = cv2.resize(cv2.cvtColor(aligned, cv2.COLOR_RGB2GRAY), (32, 32), interpolation=cv2.INTER_AREA)
    x = gray.astype(np.float64).reshape(-1) / 255.0
    x = x - x.mean()
    proj = np.random.default_rng(20250404).standard_normal((512, x.size)) / np.sqrt(x.size)
    e = proj @ x
    return (e / max(np.linalg.norm(e), 1e-12)).astype(np.float32)


def to_train_frames(frames: np.ndarray, size: int) -> torch.Tensor:
    """uint8 [T, h, w, 3] -> [1, 3, T, H, W] in -1..1, each frame prepared like the inference portrait."""
    from PIL import Image

    from fantasytalking_core.images import image_to_tensor, resize_and_crop

    return torch.stack([image_to_tensor(resize_and_crop(Image.fromarray(f), size))[0] for f in frames], dim=1)[None]


@dataclass
class Rejected:
    reason: str


def confident_faces(frame: np.ndarray, enc: Encoders, confidence: float) -> list[FaceDetection]:
    """Faces scoring >= `confidence` in `frame`, largest first.

    With an insightface pack that has an SCRFD detector, SCRFD decides (it is calibrated like the
    detectors of the paper). Otherwise each MediaPipe detector model is tried in turn and the first
    that scores a face at `confidence` wins: the full-range model scores clear close-up faces
    lower (0.78-0.92 on our test portrait) than the short-range one (~0.96), and MediaPipe's own
    `min_detection_confidence` is not a strict bound on the scores it reports, so the threshold is
    applied here on the reported score.
    """
    from fantasytalking_core.face import MEDIAPIPE_KEYPOINT_NAMES
    from fantasytalking_core.mediapipe_backend import get_backend

    if enc.face is not None and enc.face.detector is not None:
        return [f for f in enc.face.detect(frame, confidence) if f.score >= confidence]
    backend = get_backend()
    h, w = frame.shape[:2]
    for source in backend.detector_sources:
        with backend.face_detector(source, min(confidence, 0.5)) as detect:
            raw = detect(frame)
        faces = []
        for box, score, kps in raw:
            x0, y0 = max(float(box[0]) * w, 0.0), max(float(box[1]) * h, 0.0)
            x1, y1 = min(float(box[2]) * w, w), min(float(box[3]) * h, h)
            face = FaceDetection((x0, y0, x1, y1), float(score), (np.asarray(kps) * [w, h]).astype(np.float32),
                                 MEDIAPIPE_KEYPOINT_NAMES, source)
            if face.area > 0 and face.score >= confidence:
                faces.append(face)
        if faces:
            return sorted(faces, key=lambda f: f.area, reverse=True)
    return []


def face_features(frame: np.ndarray, face: FaceDetection, enc: Encoders, crop_size: int) -> tuple[np.ndarray, np.ndarray, str]:
    """(crop uint8 [S, S, 3], embedding float32 [512], landmark source) of the reference face."""
    from fantasytalking_core.face import align_face, crop_face, embed_reference, mediapipe_five_points

    if enc.face is not None:
        ref = embed_reference(frame, embedder=enc.face, min_confidence=0.5, crop_size=crop_size)
        return ref.crop, ref.embedding.astype(np.float32), ref.landmark_source
    five, source = mediapipe_five_points(frame, face)
    return crop_face(frame, face, 1.5, crop_size), fallback_face_embedding(align_face(frame, five)), source


def featurize_piece(frames: np.ndarray, wave: torch.Tensor, text: torch.Tensor, enc: Encoders, cfg: PrepareConfig,
                   sync) -> tuple[dict[str, torch.Tensor], dict] | Rejected:
    """Frames uint8 [T, h, w, 3] + its 16 kHz audio + the caption's embedding [L, D] -> (tensors, stats),
    or Rejected with the reason. `sync` scores audio-visual sync (None: no sync filter)."""
    from fantasytalking_core.lipmask import face_mesh_track, lip_masks, to_latent
    from fantasytalking_core.motion import measure_motion
    from fantasytalking_core.pipeline import i2v_condition

    ref = frames[0]
    faces = confident_faces(ref, enc, cfg.face_confidence)
    if not faces:
        return Rejected(f"no face at confidence >= {cfg.face_confidence} in the reference frame")
    if len(faces) > cfg.max_faces:
        return Rejected(f"{len(faces)} faces in the reference frame (max_faces {cfg.max_faces})")
    track = face_mesh_track(frames, static_image_mode=True)
    found = float(track.found.mean())
    if found < cfg.min_face_frames:
        return Rejected(f"face mesh found the face in {found:.0%} of frames (< {cfg.min_face_frames:.0%})")
    score = sync(frames, track, wave, cfg.fps) if sync is not None else None
    need = cfg.syncnet_min_confidence if score is not None and score.method == "syncnet" else cfg.sync_min_score
    if score is not None and (score.score < need or abs(score.offset) > cfg.sync_max_offset):
        return Rejected(f"audio-visual sync {score.method} score {score.score:.3f} at offset {score.offset} frames "
                        f"(need >= {need} within {cfg.sync_max_offset}){': ' + score.note if score.note else ''}")
    motion = measure_motion(frames, track=track)

    video = to_train_frames(frames, cfg.size)  # [1, 3, T, H, W]
    h, w = video.shape[-2:]
    sx, sy, left, top, _, _ = crop_geometry(frames.shape[2], frames.shape[1], cfg.size)
    mapped = FaceMeshTrack(track.landmarks * np.array([sx, sy], np.float32) - np.array([left, top], np.float32),
                           track.found, h, w)
    lips = lip_masks(None, dilation=cfg.lip_dilation, track=mapped)
    lip_latent = to_latent(lips.masks)  # [T_lat, H/8, W/8]
    crop, embedding, landmarks = face_features(ref, faces[0], enc, cfg.face_crop_size)

    with torch.no_grad():
        latents = enc.vae.encode(video.to(enc.device))[0].float().cpu()  # [16, T_lat, H/8, W/8]
        first = video[:, :, 0].to(enc.device)  # [1, 3, H, W]
        first_latent = i2v_condition(enc.vae, first, cfg.num_frames)[0, 4:].float().cpu()
        clip_fea = enc.clip_encoder(first)[0].float().cpu()  # [257, clip_dim]
        audio = enc.wav2vec.encode(wave)[0].float().cpu()  # [L_a, 768]
    if latents.shape[1:] != lip_latent.shape:
        raise RuntimeError(f"the VAE gave latents {tuple(latents.shape)} but the lip mask is {tuple(lip_latent.shape)}")
    store = DTYPES[cfg.store_dtype]
    raw = [np.nan if motion.raw_l is None else motion.raw_l, np.nan if motion.raw_b is None else motion.raw_b]
    tensors = {"latents": latents.to(store), "first_latent": first_latent.to(store), "clip_fea": clip_fea.to(store),
               "text": text.float().to(store), "audio": audio.to(store), "lip_mask": lip_latent.float(),
               "face_crop": torch.from_numpy(np.ascontiguousarray(crop)),
               "face_embedding": torch.from_numpy(embedding), "motion_raw": torch.tensor(raw, dtype=torch.float64)}
    info = {"height": int(h), "width": int(w), "latent_shape": list(latents.shape), "audio_tokens": int(audio.shape[0]),
            "text_tokens": int(text.shape[0]), "face_score": round(float(faces[0].score), 4),
            "face_detector": faces[0].source, "face_frames": round(found, 4), "face_embedding": enc.face_embedding,
            "face_landmarks": landmarks, "lip_area": round(float(lips.area_fraction.mean()), 6),
            "lip_latent_mass": round(float(lip_latent.sum()), 4), "raw_l": motion.raw_l, "raw_b": motion.raw_b,
            "motion_notes": motion.notes}
    if score is not None:
        info.update(sync_score=round(score.score, 4), sync_offset=score.offset, sync_method=score.method)
    return tensors, info


def encoder_dims(enc: Encoders) -> dict:
    """text_dim and clip_dim of the encoders (the DiT they feed must take these widths)."""
    with torch.no_grad():
        text = enc.text_encoder([""])[0]
        clip = enc.clip_encoder(torch.zeros(1, 3, 64, 64, device=enc.device))
    return {"text_dim": int(text.shape[-1]), "clip_dim": int(clip.shape[-1]), "audio_dim": 768}

