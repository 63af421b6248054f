"""Lip masks: MediaPipe face-mesh lips per frame -> MASK, with a preview."""

from __future__ import annotations

import torch

from fantasytalking_core.lipmask import lip_masks

from . import _host

CATEGORY = "FantasyTalking"
MISSING = ["interpolate", "previous", "empty", "error"]


def tinted(images: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
    """A preview of masks [T, H, W] on the frames: the masked region tinted red, half strength."""
    m = masks[..., None].float().cpu()
    return (images[..., :3].float().cpu() * (1 - 0.5 * m) + 0.5 * m * torch.tensor([1.0, 0.1, 0.1])).clamp(0, 1)


class FantasyTalkingLipMask:
    DESCRIPTION = ("Draws the outer-lip region of every frame from MediaPipe face-mesh landmarks. The mask weights "
                   "the training loss (stage 2); here it previews what the model is taught to watch.")
    RETURN_TYPES = ("MASK", "IMAGE")
    RETURN_NAMES = ("lip_mask", "preview")
    OUTPUT_TOOLTIPS = ("One mask per frame, 1 on the lips.", "The frames with the lips tinted red.")
    FUNCTION = "mask"
    CATEGORY = CATEGORY

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "images": ("IMAGE", {"tooltip": "Video frames (an IMAGE batch)."}),
            "dilation": ("INT", {"default": 0, "min": 0, "max": 64, "step": 1,
                                 "tooltip": "Grow each mask by this many pixels."}),
            "missing_face": (MISSING, {"default": "interpolate",
                                       "tooltip": "Frames without a face: interpolate between neighbours, copy the "
                                                  "previous one, leave empty, or stop with an error."}),
        }}

    def mask(self, images: torch.Tensor, dilation: int = 0, missing_face: str = "interpolate"):
        _host.check_interrupt()
        result = lip_masks(images, dilation=dilation, missing=missing_face, backend=_host.mediapipe_backend())
        masks = result.masks.float()  # [T, H, W]
        return (masks, tinted(images, masks))
