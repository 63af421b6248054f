"""Face: the reference portrait -> ArcFace identity embedding and face crop."""

from __future__ import annotations

import numpy as np
import torch

from fantasytalking_core.face import embed_reference

from . import _host
from .contracts import FaceReference

CATEGORY = "FantasyTalking"
NO_PACK = "none (crop only)"


class FantasyTalkingFaceEmbed:
    DESCRIPTION = ("Finds the face in the reference image (the largest one when there are several), crops it and "
                   "computes its ArcFace embedding for the identity adapter. ArcFace needs an insightface pack in "
                   "models/insightface/models/<pack>/ (antelopev2 or buffalo_l).")
    RETURN_TYPES = ("FANTASYTALKING_FACE", "IMAGE")
    RETURN_NAMES = ("face", "face_crop")
    OUTPUT_TOOLTIPS = ("The identity embedding, for FantasyTalking Apply.", "The face crop, to check the detection.")
    FUNCTION = "embed"
    CATEGORY = CATEGORY

    @classmethod
    def INPUT_TYPES(cls):
        _host.register_folders()
        packs = _host.list_dirs("insightface", "models", must_contain="*.onnx")
        return {"required": {
            "image": ("IMAGE", {"tooltip": "The reference portrait (the first image of a batch is used)."}),
            "insightface_pack": ([NO_PACK] + packs, {"default": packs[0] if packs else NO_PACK,
                                                     "tooltip": "ArcFace pack in models/insightface/models/. "
                                                                "'none' gives the crop without an embedding."}),
            "min_confidence": ("FLOAT", {"default": 0.5, "min": 0.05, "max": 1.0, "step": 0.05,
                                         "tooltip": "Face detection threshold."}),
            "crop_scale": ("FLOAT", {"default": 1.5, "min": 1.0, "max": 3.0, "step": 0.1,
                                     "tooltip": "Crop size relative to the face box."}),
        }}

    def embed(self, image: torch.Tensor, insightface_pack: str = NO_PACK, min_confidence: float = 0.5,
              crop_scale: float = 1.5):
        pack = None if insightface_pack == NO_PACK else _host.full_path(insightface_pack, "insightface", sub="models")
        ref = embed_reference(image[0], pack, min_confidence=min_confidence, crop_scale=crop_scale,
                              backend=_host.mediapipe_backend())
        note = ref.note + (f" (image batch of {image.shape[0]}: used the first)" if image.shape[0] > 1 else "")
        face = FaceReference(ref.embedding, ref.crop, ref.box, note.strip())
        crop = torch.from_numpy(np.ascontiguousarray(ref.crop)).float().div(255.0)[None]  # [1, S, S, 3]
        return (face, crop)
