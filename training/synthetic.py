"""Synthetic talking videos for the tiny recipe and the tests: a portrait that sways and opens its
mouth with the loudness of a real speech recording, muxed with that speech.

`python -m training.synthetic --out videos/ --audio speech.wav [--image portrait.png] [--count 3]`
writes `talk_000.mp4`, ... (each from another stretch of the audio) and a caption sidecar
`talk_000.txt` for every other video. The mouth is a local vertical stretch centred between the
inner lips that face mesh finds on the portrait, so MediaPipe sees real lip motion: following the
loudness of the soundtrack, of another recording (`mouth_wave`: a dubbed, out-of-sync video), or
not moving at all (`still=True`).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch

from fantasytalking_core.audio import SAMPLE_RATE

from .sync import frame_energy


def mouth_centre(image: np.ndarray) -> tuple[np.ndarray, float]:
    """(x, y) between the inner lips and the outer-eye-corner distance, from face mesh."""
    from fantasytalking_core.lipmask import face_mesh_track

    track = face_mesh_track(image[None], static_image_mode=True)
    if not track.found[0]:
        raise ValueError("no face found in the portrait; use a clear frontal face photo for synthetic videos")
    pts = track.landmarks[0]
    return (pts[13] + pts[14]) / 2, float(np.linalg.norm(pts[33] - pts[263]))


def open_mouth(img: np.ndarray, centre: np.ndarray, amount: float, sigma: float) -> np.ndarray:
    """Pixels near `centre` move up to `amount` px away from it vertically (Gaussian falloff)."""
    import cv2

    h, w = img.shape[:2]
    yy, xx = np.mgrid[:h, :w].astype(np.float32)
    g = np.exp(-((xx - centre[0]) ** 2 + (yy - centre[1]) ** 2) / (2 * sigma**2))
    map_y = yy - amount * g * np.tanh((yy - centre[1]) / (sigma / 4))
    return cv2.remap(img, xx, map_y.astype(np.float32), cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)


def sway(img: np.ndarray, dx: float, dy: float, angle: float) -> np.ndarray:
    import cv2

    h, w = img.shape[:2]
    m = cv2.getRotationMatrix2D((w / 2, h / 2), angle, 1.0)
    m[:, 2] += (dx, dy)
    return cv2.warpAffine(img, m, (w, h), borderMode=cv2.BORDER_REFLECT)


def talking_frames(image: np.ndarray, drive: torch.Tensor, fps: float, num_frames: int, still: bool = False,
                   seed: int = 0) -> np.ndarray:
    """uint8 [num_frames, H, W, 3]: the portrait swaying, its mouth opening with the RMS energy of
    `drive` (16 kHz) over each frame's time span, or closed throughout when `still`."""
    centre, eyes = mouth_centre(image)
    energy = frame_energy(drive, num_frames, fps)
    level = np.zeros(num_frames) if still else energy / max(np.percentile(energy, 95), 1e-6)
    rng = np.random.default_rng(seed)
    phase = rng.uniform(0, 2 * np.pi, 3)
    frames = []
    for t in range(num_frames):
        s = t / fps
        img = open_mouth(image, centre, 0.22 * eyes * min(float(level[t]), 1.3), 0.35 * eyes)
        frames.append(sway(img, 0.04 * eyes * np.sin(2 * np.pi * 0.4 * s + phase[0]),
                           0.03 * eyes * np.sin(2 * np.pi * 0.3 * s + phase[1]), 2.0 * np.sin(2 * np.pi * 0.25 * s + phase[2])))
    return np.stack(frames)


def write_talking_video(path: str | Path, image: np.ndarray, wave16k: torch.Tensor, fps: float = 23.0,
                        mouth_wave: torch.Tensor | None = None, still: bool = False, overwrite: bool = False,
                        seed: int = 0) -> Path:
    """An mp4 over the whole `wave16k` (16 kHz mono) with that soundtrack; the mouth follows
    `mouth_wave` when given (out of sync), else the soundtrack."""
    from fantasytalking_core.video import write_video

    num_frames = int(wave16k.numel() / SAMPLE_RATE * fps)
    drive = wave16k if mouth_wave is None else mouth_wave
    if drive.numel() < wave16k.numel():
        raise ValueError(f"mouth_wave has {drive.numel()} samples, fewer than the soundtrack's {wave16k.numel()}")
    frames = talking_frames(image, drive, fps, num_frames, still, seed=seed)
    return write_video(frames, path, fps=fps, audio=wave16k[None].numpy(), sample_rate=SAMPLE_RATE,
                       overwrite=overwrite)


def load_portrait(path: str | Path, size: int = 256) -> np.ndarray:
    """RGB uint8 [size, size, 3] from an image file (resized, LANCZOS)."""
    from PIL import Image

    from fantasytalking_core.images import load_image

    return np.asarray(load_image(path).resize((size, size), Image.LANCZOS))


def main(argv: list[str] | None = None) -> int:
    from fantasytalking_core.audio import read_audio

    default_image = Path(__file__).resolve().parents[1] / "assets" / "portrait.png"
    ap = argparse.ArgumentParser(prog="python -m training.synthetic", description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", required=True, help="folder for the videos (created)")
    ap.add_argument("--audio", required=True, help="a speech recording (any file PyAV decodes: wav, mp3, m4a, ...)")
    ap.add_argument("--image", default=str(default_image), help="a portrait (default: assets/portrait.png)")
    ap.add_argument("--count", type=int, default=3)
    ap.add_argument("--seconds", type=float, default=2.0, help="length of each video")
    ap.add_argument("--size", type=int, default=256, help="video width and height")
    ap.add_argument("--fps", type=float, default=23.0)
    args = ap.parse_args(argv)
    try:
        wave = read_audio(args.audio).to_16k()
        image = load_portrait(args.image, args.size)
    except (FileNotFoundError, ValueError) as err:
        raise SystemExit(f"error: {err}") from None
    n = int(args.seconds * SAMPLE_RATE)
    if wave.numel() < n:
        raise SystemExit(f"error: {args.audio} is {wave.numel() / SAMPLE_RATE:.2f} s, shorter than --seconds {args.seconds}")
    out = Path(args.out).expanduser()
    out.mkdir(parents=True, exist_ok=True)
    starts = np.linspace(0, wave.numel() - n, max(args.count, 1)).astype(int)
    for i, start in enumerate(starts[: args.count]):
        path = write_talking_video(out / f"talk_{i:03d}.mp4", image, wave[start:start + n], args.fps, seed=i)
        if i % 2 == 0:
            path.with_suffix(".txt").write_text("A person is talking.\n")
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
