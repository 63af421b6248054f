"""Images in and out of the video: the portrait read and resized by the official rule (or cropped),
and the tensor layouts frames move between (PIL, [1, 3, H, W] in -1..1, [T, H, W, 3] in 0..1)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import torch
from einops import rearrange

RESIZE_MODES = ("stretch", "crop")  # "stretch": the official rule (resize_official); "crop": resize_and_crop


def load_image(image: Any):
    """A path, PIL image, uint8 array [H, W, 3] or float tensor [H, W, 3] / [1, H, W, 3] (ComfyUI
    IMAGE, 0..1) -> PIL RGB. A file that is no image (a video, a text) is a clear error."""
    from PIL import Image, UnidentifiedImageError

    if isinstance(image, (str, Path)):
        p = Path(image).expanduser()
        if not p.is_file():
            raise FileNotFoundError(f"image file not found: {p}")
        try:
            with Image.open(p) as img:
                return img.convert("RGB")
        except (UnidentifiedImageError, OSError, Image.DecompressionBombError) as err:
            raise ValueError(f"{p} is not an image Pillow can read ({err.__class__.__name__}); give a PNG, JPEG or "
                             "WebP portrait (for a video, export one frame first)") from err
    if isinstance(image, Image.Image):
        return image.convert("RGB")
    if isinstance(image, torch.Tensor):
        t = image.detach().cpu().float()
        t = t[0] if t.ndim == 4 else t
        image = (t.clamp(0, 1) * 255 + 0.5).to(torch.uint8).numpy()
    if isinstance(image, np.ndarray) and image.ndim == 3 and image.shape[-1] in (3, 4):
        return Image.fromarray(np.ascontiguousarray(image[..., :3]).astype(np.uint8))
    raise TypeError(f"image must be a path, PIL image or [H, W, 3] array/tensor, got {type(image).__name__}"
                    f"{getattr(image, 'shape', '')}")


def resize_portrait(image, size: int = 512, mode: str = "stretch"):
    """The portrait at the video's size: :func:`resize_official` ("stretch") or :func:`resize_and_crop`."""
    if mode == "stretch":
        return resize_official(image, size)
    if mode == "crop":
        return resize_and_crop(image, size)
    raise ValueError(f"resize must be one of {RESIZE_MODES}, got {mode!r}")


def official_size(width: int, height: int, size: int = 512, multiple: int = 16) -> tuple[int, int]:
    """The official video size of a width x height picture: the longest side to `size`
    (``int(side * size / longest)``), each side rounded UP to a multiple of `multiple`."""
    if size < multiple or size % multiple:
        raise ValueError(f"size must be a multiple of {multiple}, got {size}")
    scale = size / max(width, height)
    up = lambda side: -(-max(1, int(side * scale)) // multiple) * multiple  # noqa: E731
    return up(width), up(height)


def resize_official(image, size: int = 512, multiple: int = 16):
    """The official rule: LANCZOS to ``int(side * size / longest side)`` (`utils.py`
    `resize_image_by_longest_edge`), then each side rounded UP to a multiple of ``multiple`` and the
    image stretched to that (bicubic, PIL's default; `WanVideoPipeline.check_resize_height_width`
    and `encode_image`). A 4:5 portrait becomes 416x512, 3:2 becomes 512x352."""
    from PIL import Image

    target = official_size(*image.size, size, multiple)
    w, h = image.size
    scale = size / max(w, h)
    image = image.resize((max(1, int(w * scale)), max(1, int(h * scale))), Image.LANCZOS)
    return image if target == image.size else image.resize(target, Image.BICUBIC)


class CropGeometry(NamedTuple):
    """Where :func:`resize_and_crop` puts a picture: a point (x, y) of the source lands at
    ``(x * scale_x - left, y * scale_y - top)`` of the ``width`` x ``height`` result."""

    scale_x: float
    scale_y: float
    left: int
    top: int
    width: int
    height: int


def crop_geometry(width: int, height: int, size: int = 512, multiple: int = 16) -> CropGeometry:
    """The geometry of :func:`resize_and_crop` for a width x height picture (the one rule: the
    trainer maps face points with it)."""
    if size < multiple or size % multiple:
        raise ValueError(f"size must be a multiple of {multiple}, got {size}")
    scale = size / max(width, height)
    nw, nh = ((size, max(multiple, round(height * scale))) if width >= height
              else (max(multiple, round(width * scale)), size))
    cw, ch = nw // multiple * multiple, nh // multiple * multiple
    return CropGeometry(nw / width, nh / height, (nw - cw) // 2, (nh - ch) // 2, cw, ch)


def resize_and_crop(image, size: int = 512, multiple: int = 16):
    """Resize (LANCZOS) so the longest edge is `size`, then centre-crop the other side down to a
    multiple of `multiple` (at most multiple-1 pixels lost; the aspect ratio is kept). Not the
    official rule (:func:`resize_official`); GenerationConfig(resize="crop")."""
    from PIL import Image

    w, h = image.size
    g = crop_geometry(w, h, size, multiple)
    image = image.resize((round(g.scale_x * w), round(g.scale_y * h)), Image.LANCZOS)
    return image.crop((g.left, g.top, g.left + g.width, g.top + g.height))


def image_to_tensor(image) -> torch.Tensor:
    """PIL RGB -> [1, 3, H, W] float32 in -1..1 (Wan's `to_tensor().sub_(0.5).div_(0.5)`)."""
    arr = torch.from_numpy(np.asarray(image, dtype=np.uint8).copy()).float() / 255.0
    return rearrange(arr, "h w c -> 1 c h w").sub(0.5).div(0.5)


def frames_to_tensor(frames: torch.Tensor) -> torch.Tensor:
    """Frames in 0..1 -> -1..1, channels first: one frame [H, W, 3] -> [1, 3, H, W]; several [K, H, W, 3]
    -> [1, 3, K, H, W]."""
    if frames.ndim == 3:
        return rearrange(frames.float(), "h w c -> 1 c h w").mul(2).sub(1)
    return rearrange(frames.float(), "t h w c -> 1 c t h w").mul(2).sub(1)


def video_to_frames(video: torch.Tensor) -> torch.Tensor:
    """Decoded video [1, 3, T, H, W] in -1..1 -> frames [T, H, W, 3] float32 0..1 on the CPU."""
    return rearrange(video[0].float().cpu().add(1).div(2).clamp(0, 1), "c t h w -> t h w c")

def fit_frames(frames: torch.Tensor, width: int, height: int) -> torch.Tensor:
    """Frames [T, H, W, 3] (0..1) to width x height as ComfyUI's WanImageToVideo prepares its start
    image: the centre cut to the target's aspect ratio, then a bilinear resize."""
    _, h, w, _ = frames.shape
    if (w, h) != (width, height):
        if w * height > h * width:  # wider than the target: cut the sides
            cw = round(h * width / height)
            frames = frames[:, :, (w - cw) // 2:(w - cw) // 2 + cw]
        elif w * height < h * width:
            ch = round(w * height / width)
            frames = frames[:, (h - ch) // 2:(h - ch) // 2 + ch]
        x = torch.nn.functional.interpolate(rearrange(frames.float(), "t h w c -> t c h w"), size=(height, width),
                                            mode="bilinear", align_corners=False)
        frames = rearrange(x, "t c h w -> t h w c").clamp(0, 1)
    return frames.float()
