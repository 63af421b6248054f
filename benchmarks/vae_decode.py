"""Time and peak memory of the Wan2.1 VAE decode, whole frames versus spatial tiles.

The VAE is diffusers' ``AutoencoderKLWan`` with Wan2.1's architecture (base_dim 96, z_dim 16) and
random weights; ``fantasytalking_core.encoders.load_vae(..., tiling=True)`` (the pipeline's default)
turns on the same tiled decode, diffusers' ``enable_tiling`` with 256-pixel tiles every 192 pixels
(the encode of the first frame is never tiled, as the official code). Tiles bound the decoder's
activations by the tile size instead of the frame size; the decoded video itself stays whole.

    python -m benchmarks.vae_decode --device cuda --height 512 --width 512 --frames 81
    python -m benchmarks.vae_decode --height 64 --width 64 --frames 5 --base-dim 8      # CPU smoke run

Variants (``--tiles``): ``none`` (no tiling) or ``<tile>/<stride>`` in pixels, comma-separated.
"""

from __future__ import annotations

if __name__ == "__main__" and not __package__:  # run by path: run again as `python -m <folder>.<name>` (scripts/__init__.py)
    import os, sys  # noqa: E401
    here, name = os.path.split(os.path.splitext(os.path.abspath(__file__))[0])
    os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [os.path.dirname(here), os.environ.get("PYTHONPATH")]))
    os.execv(sys.executable, [sys.executable, "-m", f"{os.path.basename(here)}.{name}", *sys.argv[1:]])

import argparse
import sys
import time

import torch

from fantasytalking_core.encoders import WanVAE
from fantasytalking_core.frames import check_frames, latent_frames

DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}


def parse_tiles(text: str) -> list[tuple[str, tuple[int, int] | None]]:
    out = []
    for item in filter(None, text.split(",")):
        if item == "none":
            out.append((item, None))
            continue
        tile, _, stride = item.partition("/")
        if not (tile.isdigit() and stride.isdigit()) or int(stride) > int(tile) or int(tile) % 8:
            raise SystemExit(f"bad tile variant {item!r}: use none or <tile>/<stride> pixels, tile a multiple of 8 "
                             f"and stride <= tile, e.g. 256/192")
        out.append((item, (int(tile), int(stride))))
    return out


def decode_once(vae: WanVAE, z: torch.Tensor, tiles: tuple[int, int] | None) -> tuple[float, float | None]:
    model, device = vae.model, z.device
    vae.tiled_decode = tiles is not None
    if tiles is not None:  # the tile size WanVAE.decode's enable_tiling() then keeps
        model.enable_tiling(tile_sample_min_height=tiles[0], tile_sample_min_width=tiles[0],
                            tile_sample_stride_height=tiles[1], tile_sample_stride_width=tiles[1])
    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    t0 = time.perf_counter()
    vae.decode(z)
    if device.type == "cuda":
        torch.cuda.synchronize()
        return time.perf_counter() - t0, torch.cuda.max_memory_allocated(device) / 2**30
    return time.perf_counter() - t0, None


def main(argv: list[str] | None = None) -> list[dict]:
    from diffusers import AutoencoderKLWan

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--height", type=int, default=512)
    p.add_argument("--width", type=int, default=512)
    p.add_argument("--frames", type=int, default=81, help="video frames, 4k+1")
    p.add_argument("--device", default=None, help="cpu or cuda (default cuda when available)")
    p.add_argument("--dtype", choices=sorted(DTYPES), default="fp32", help="VAE weights (Wan decodes in fp32)")
    p.add_argument("--base-dim", type=int, default=96, help="VAE width (96 = Wan2.1; smaller for CPU smoke runs)")
    p.add_argument("--tiles", default="none,256/192,128/96", help="variants: none or <tile>/<stride> pixels")
    args = p.parse_args(argv)
    try:
        check_frames(args.frames, "--frames", least=1)
    except ValueError as exc:
        raise SystemExit(str(exc)) from None
    if args.height % 8 or args.width % 8:
        raise SystemExit(f"need sizes divisible by 8, got {args.width}x{args.height}")
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    variants = parse_tiles(args.tiles)
    torch.manual_seed(0)
    model = AutoencoderKLWan(base_dim=args.base_dim, z_dim=16).to(device).eval()
    if args.dtype != "fp32":
        model = model.to(DTYPES[args.dtype])
    vae = WanVAE(model)
    z = torch.randn(1, 16, latent_frames(args.frames), args.height // 8, args.width // 8, device=device)
    rows = []
    with torch.no_grad():
        for name, tiles in variants:
            seconds, peak = decode_once(vae, z, tiles)
            rows.append({"variant": name, "seconds": seconds, "peak_gib": peak})
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU, {torch.get_num_threads()} threads"
    print(f"device: {name}; torch {torch.__version__}; VAE base_dim {args.base_dim}, {args.dtype}; "
          f"latent {tuple(z.shape[2:])} -> video {args.width}x{args.height}x{args.frames}")
    print("command: python -m benchmarks.vae_decode " + " ".join(sys.argv[1:] if argv is None else argv))
    print("| tiles (px) | s | peak GiB |\n|---|---:|---:|")
    for r in rows:
        peak = f"{r['peak_gib']:.2f}" if r["peak_gib"] is not None else "-"
        print(f"| {r['variant']} | {r['seconds']:.3g} | {peak} |")
    return rows


if __name__ == "__main__":
    main()
