"""Thumbnails for the Templates browser: example_workflows/<name>.jpg, drawn from real inputs.

    python -m scripts.template_thumbnails                # (re)draw all of them
    python -m scripts.template_thumbnails 06_dub_video   # just that one

ComfyUI's frontend shows a custom node pack's template ``<name>.json`` with the picture
``/api/workflow_templates/<pack>/<name>.jpg``, i.e. ``example_workflows/<name>.jpg`` beside it, in a
square card (224 px; drawn here at 448 px for sharp screens). Each one is a small diagram of what
the template does, made from the portrait (scikit-image's astronaut photo, public domain; the
pack's assets/portrait.png without scikit-image) and our speech sample, with the pack's own face
detection and lip mask (MediaPipe) where the template is about them. No video is generated:
no model weights exist here.
"""

from __future__ import annotations

if __name__ == "__main__" and not __package__:  # run by path: run again as `python -m <folder>.<name>` (scripts/__init__.py)
    import os, sys  # noqa: E401
    here, name = os.path.split(os.path.splitext(os.path.abspath(__file__))[0])
    os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [os.path.dirname(here), os.environ.get("PYTHONPATH")]))
    os.execv(sys.executable, [sys.executable, "-m", f"{os.path.basename(here)}.{name}", *sys.argv[1:]])

import sys
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "example_workflows"
S = 448  # thumbnail side
ACCENT, TEXT, DIM, BG0, BG1 = (79, 195, 247), (236, 239, 244), (150, 158, 170), (40, 44, 52), (18, 20, 24)
FPS, WINDOW, OVERLAP = 23.0, 81, 16


def font(size: int) -> ImageFont.ImageFont:
    for name in ("DejaVuSans.ttf", "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf"):
        try:
            return ImageFont.truetype(name, size)
        except OSError:
            pass
    return ImageFont.load_default(size)


def portrait(side: int) -> Image.Image:
    try:
        from skimage import data

        img = Image.fromarray(data.astronaut()[0:320, 60:380])
    except ImportError:
        img = Image.open(ROOT / "assets" / "portrait.png").convert("RGB")
    return img.resize((side, side), Image.LANCZOS)


def speech() -> np.ndarray:
    import soundfile

    wave, _ = soundfile.read(str(ROOT / "assets" / "speech_en_16k.wav"), dtype="float32")
    return wave if wave.ndim == 1 else wave.mean(1)


def canvas() -> tuple[Image.Image, ImageDraw.ImageDraw]:
    t = np.linspace(0, 1, S)[:, None, None]
    grad = (np.array(BG0) * (1 - t) + np.array(BG1) * t).repeat(S, 1).astype(np.uint8)
    img = Image.fromarray(grad)
    return img, ImageDraw.Draw(img)


def caption(d: ImageDraw.ImageDraw, title: str, detail: str) -> None:
    d.text((24, S - 78), title, font=font(23), fill=TEXT)
    d.text((24, S - 44), detail, font=font(15), fill=DIM)


def paste_rounded(img: Image.Image, tile: Image.Image, xy: tuple[int, int], radius: int = 14) -> None:
    mask = Image.new("L", tile.size, 0)
    ImageDraw.Draw(mask).rounded_rectangle((0, 0, *tile.size), radius, fill=255)
    img.paste(tile, xy, mask)


def waveform(d: ImageDraw.ImageDraw, wave: np.ndarray, box: tuple[int, int, int, int], color=ACCENT) -> None:
    x0, y0, x1, y1 = box
    bars = (x1 - x0) // 4
    chunks = np.array_split(np.abs(wave), bars)
    peak = max(float(np.percentile(np.abs(wave), 99.5)), 1e-6)
    mid = (y0 + y1) / 2
    for i, c in enumerate(chunks):
        h = min(float(c.max()) / peak, 1.0) * (y1 - y0) / 2
        x = x0 + 4 * i
        d.rectangle((x, mid - max(h, 1), x + 2, mid + max(h, 1)), fill=color)


def film(img: Image.Image, d: ImageDraw.ImageDraw, face: Image.Image, x: int, y: int, n: int = 3) -> None:
    """A small stack of video frames with sprocket holes."""
    side = face.size[0]
    for k in reversed(range(n)):
        fx, fy = x + 14 * k, y - 14 * k
        d.rounded_rectangle((fx - 8, fy - 8, fx + side + 8, fy + side + 8), 6, fill=(30, 32, 38), outline=DIM)
        for hy in range(fy, fy + side, 16):
            d.rectangle((fx - 6, hy + 4, fx - 3, hy + 9), fill=DIM)
            d.rectangle((fx + side + 3, hy + 4, fx + side + 6, hy + 9), fill=DIM)
        paste_rounded(img, face, (fx, fy), 4)


def arrow(d: ImageDraw.ImageDraw, x0: int, x1: int, y: int) -> None:
    d.line((x0, y, x1 - 6, y), fill=ACCENT, width=5)
    d.polygon([(x1, y), (x1 - 16, y - 11), (x1 - 16, y + 11)], fill=ACCENT)


def inputs_to_video(img, d, wave: np.ndarray, seconds: float) -> None:
    """Portrait + speech on the left, an arrow, video frames on the right (01, 02, 05)."""
    face = portrait(170)
    paste_rounded(img, face, (24, 30))
    waveform(d, wave[: int(seconds * 16000)], (24, 214, 194, 300))
    arrow(d, 204, 250, 165)
    film(img, d, portrait(132), 268, 128)


def face_box(rgb: np.ndarray) -> tuple[float, float, float, float] | None:
    try:
        from fantasytalking_core.face import detect_faces

        faces = detect_faces(rgb)
        return faces[0].box if faces else None
    except Exception as e:  # MediaPipe missing: the diagram goes without the box
        print(f"face detection unavailable ({e}); no face box drawn")
        return None


def draw_01(img, d, wave):
    inputs_to_video(img, d, wave, 81 / FPS)
    caption(d, "Portrait + speech → video", "up to 81 frames · 23 fps · official settings")


def draw_02(img, d, wave):
    side = 196
    face = portrait(side)
    box = face_box(np.asarray(face))
    paste_rounded(img, face, (24, 30))
    if box:
        d.rectangle((24 + box[0], 30 + box[1], 24 + box[2], 30 + box[3]), outline=ACCENT, width=3)
        d.text((28 + box[0], 30 + box[3] + 4), "ArcFace", font=font(14), fill=ACCENT)
    for k, (label, value) in enumerate((("ω_l face", 0.6), ("ω_b body", 0.4))):
        y = 60 + 70 * k
        d.text((246, y), f"{label}  {value:.1f}", font=font(16), fill=TEXT)
        d.rounded_rectangle((246, y + 28, 424, y + 38), 5, fill=(60, 64, 74))
        d.rounded_rectangle((246, y + 28, 246 + int(178 * value), y + 38), 5, fill=ACCENT)
    waveform(d, wave[: int(81 / FPS * 16000)], (246, 214, 424, 300))
    caption(d, "Identity + motion sliders", "face embedding · expression and body intensity")


def _windows(latent: int) -> list[tuple[int, int]]:
    """Core's standard_static windows over ``latent`` frames (WanContextWindowsManual turns the
    81/16 video frames into 21/4 latent frames; the last window is moved back to stay full)."""
    from fantasytalking_core.frames import latent_frames

    length, overlap = latent_frames(WINDOW), OVERLAP // 4
    if latent <= length:
        return [(0, latent)]
    out = []
    for start in range(0, latent, length - overlap):
        if start + length >= latent:
            return out + [(latent - length, latent)]
        out.append((start, start + length))
    return out


def long_audio(img, d, wave, windows: bool):
    from fantasytalking_core.frames import latent_frames, plan_frames

    paste_rounded(img, portrait(150), (24, 26))
    frames, _ = plan_frames(len(wave) / 16000, FPS, 0, 0)
    waveform(d, wave, (24, 250, 424, 330))
    if windows:
        latent = latent_frames(frames)
        for k, (a, b) in enumerate(_windows(latent)):
            x0, x1 = 24 + 400 * a / latent, 24 + 400 * b / latent
            y = 190 + 16 * k
            d.rounded_rectangle((x0, y, x1, y + 10), 4, outline=ACCENT, width=2)
        d.text((196, 84), f"windows of {WINDOW} frames", font=font(17), fill=TEXT)
        d.text((196, 110), f"{OVERLAP} shared · own audio each", font=font(15), fill=DIM)
        d.text((196, 136), "ComfyUI 0.33+", font=font(15), fill=ACCENT)
    else:
        d.rounded_rectangle((24, 206, 424, 226), 6, outline=ACCENT, width=3)
        d.text((196, 84), f"all {frames} frames", font=font(17), fill=TEXT)
        d.text((196, 110), "in one pass", font=font(15), fill=DIM)


def draw_03(img, d, wave):
    """Segments of 81 frames along the whole recording, each starting from the end of the one before."""
    paste_rounded(img, portrait(150), (24, 26))
    from fantasytalking_core.frames import plan_frames

    seconds = 4 * len(wave) / 16000  # a recording four times the sample's, as long audio is
    frames, _ = plan_frames(seconds, FPS, 0, 0)
    waveform(d, np.tile(wave, 4), (24, 250, 424, 330))
    starts = list(range(0, frames - 1, WINDOW - 1))
    for k, a in enumerate(starts):
        x0, x1 = 24 + 400 * a / frames, 24 + 400 * min(a + WINDOW, frames) / frames
        d.rounded_rectangle((x0, 206, x1 - 3, 226), 5, outline=ACCENT, width=2, fill=(30, 60, 78) if k % 2 else None)
    d.text((196, 84), f"{len(starts)} segments of {WINDOW}", font=font(17), fill=TEXT)
    d.text((196, 110), "each from the last frame", font=font(15), fill=DIM)
    d.text((196, 136), "of the one before", font=font(15), fill=DIM)
    caption(d, "Long audio, any length", "segments · own audio each · straight to mp4")


def draw_03c(img, d, wave):
    long_audio(img, d, wave, windows=False)
    caption(d, "Short audio, one pass", "the whole recording · no seams · tiled decode")


def draw_03b(img, d, wave):
    long_audio(img, d, wave, windows=True)
    caption(d, "Long audio, context windows", "WanContextWindowsManual · memory of one clip")


def draw_04(img, d, wave):
    side = 300
    face = portrait(side)
    rgb = np.asarray(face)
    try:
        from fantasytalking_core.lipmask import lip_masks

        mask = lip_masks(rgb[None], dilation=2, static_image_mode=True).masks[0].numpy() > 0.5
    except Exception as e:  # MediaPipe missing: the plain portrait
        print(f"lip mask unavailable ({e}); portrait without mask")
        mask = np.zeros(rgb.shape[:2], bool)
    tinted = rgb.copy()
    tinted[mask] = (0.35 * rgb[mask] + 0.65 * np.array(ACCENT)).astype(np.uint8)
    paste_rounded(img, Image.fromarray(tinted), ((S - side) // 2, 30))
    caption(d, "Lip mask preview", "MediaPipe lips per frame, as training uses")


def draw_05(img, d, wave):
    inputs_to_video(img, d, wave, 81 / FPS)
    for k, steps in enumerate((30, 6)):
        y = 318 + 16 * k
        d.rectangle((24, y, 24 + 9 * steps, y + 9), fill=ACCENT if k else (80, 86, 98))
        d.text((32 + 9 * steps, y - 4), f"{steps} steps", font=font(13), fill=TEXT if k else DIM)
    caption(d, "Fast: step-distilled LoRA", "6 steps · cfg_text 1 · audio CFG on all steps")


def draw_06(img, d, wave):
    """The source frames with the regenerated region tinted, the new speech, the dubbed frames."""
    side = 140
    rgb = np.asarray(portrait(side))
    try:
        from fantasytalking_core.dub import mouth_masks

        mask = mouth_masks(rgb[None], dilation=2, feather=2).soft()[0].numpy()[..., None]
    except Exception as e:  # MediaPipe missing: the plain portrait
        print(f"mouth mask unavailable ({e}); portrait without mask")
        mask = np.zeros((*rgb.shape[:2], 1))
    tinted = Image.fromarray((rgb * (1 - 0.65 * mask) + 0.65 * mask * np.array(ACCENT)).astype(np.uint8))
    film(img, d, Image.fromarray(rgb), 30, 72)
    arrow(d, 222, 262, 142)
    film(img, d, tinted, 284, 72, n=1)
    waveform(d, wave[: int(4 * 16000)], (24, 262, 424, 330))
    d.text((24, 234), "new speech", font=font(15), fill=DIM)
    caption(d, "Dub a video", "new speech · mouth and jaw · straight to mp4")


def draw_07(img, d, wave):
    """Two people with their numbered regions (the pack's own face detection), each with their own voice, in turns."""
    side = 200
    face = np.asarray(portrait(side))
    pair = np.concatenate([face, face[:, ::-1]], axis=1)  # 2*side x side
    try:
        from fantasytalking_core.speakers import find_regions

        pair = find_regions(pair, 2, feather=4).preview(pair)
    except Exception as e:  # MediaPipe missing: the plain pair
        print(f"speaker regions unavailable ({e}); plain portraits")
    tile = Image.fromarray(pair).resize((400, 200), Image.LANCZOS)
    paste_rounded(img, tile, (24, 24))
    half = int(3 * 16000)
    colors = ((230, 60, 60), (60, 120, 235))
    for k in range(2):
        y0 = 246 + 50 * k
        d.text((24, y0 + 8), str(k + 1), font=font(20), fill=colors[k])
        box = (48 + 192 * k, y0, 48 + 192 * k + 184, y0 + 40)
        waveform(d, wave[k * half:(k + 1) * half], box, color=colors[k])
    caption(d, "Two speakers, one video", "each voice moves only its own face · in turns")


DRAW = {"01_portrait_audio_to_talking_video": draw_01, "02_identity_and_motion_sliders": draw_02,
        "03_long_audio": draw_03, "03b_long_audio_context_windows": draw_03b, "03c_short_audio_one_pass": draw_03c,
        "04_lip_mask_preview": draw_04, "05_fast_distill_lora": draw_05, "06_dub_video": draw_06,
        "07_two_speakers": draw_07}


def main(argv: list[str] | None = None) -> int:
    """Draw the thumbnails named on the command line (all without names)."""
    names = (sys.argv[1:] if argv is None else argv) or list(DRAW)
    wave = speech()
    for name in names:
        draw = DRAW[name]
        img, d = canvas()
        draw(img, d, wave)
        path = OUT / f"{name}.jpg"
        img.save(path, quality=88, optimize=True)
        print(f"wrote {path.relative_to(ROOT)} ({path.stat().st_size // 1024} KiB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
