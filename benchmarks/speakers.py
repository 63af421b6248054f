"""What several speakers cost: one DiT forward with K speakers routed by region against one speaker.

K speakers run K + 1 audio attentions per block (each speaker and the background's silence) from the
block's one shared query, and mix them per token; everything else in the block is unchanged. So the
extra work is K times the audio attention: 0.24% of a 14B step's FLOPs at 512x512 and 81 frames.
Columns: speakers, the audio attention's share of that step (``perf.flops``, the adapter counted
K + 1 times for K > 1), then measured on this machine: seconds per forward of the chosen preset
(median of repeats, random weights: the cost does not depend on their values), and the ratio to
one speaker.

    python -m benchmarks.speakers                       # mid preset on the CPU
    python -m benchmarks.speakers --preset wan21_i2v_14b --device cuda --dtype bf16
"""

from __future__ import annotations

if __name__ == "__main__" and not __package__:  # run by path: run again as `python -m <folder>.<name>` (scripts/__init__.py)
    import os, sys  # noqa: E401
    here, name = os.path.split(os.path.splitext(os.path.abspath(__file__))[0])
    os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [os.path.dirname(here), os.environ.get("PYTHONPATH")]))
    os.execv(sys.executable, [sys.executable, "-m", f"{os.path.basename(here)}.{name}", *sys.argv[1:]])

import argparse
import statistics
import sys
import time

import torch

from benchmarks.dit_step import PRESETS
from fantasytalking_core.adapters import AudioAdapter, AudioAdapterConfig, AudioCondition, attach_adapters
from fantasytalking_core.adapters.routing import RoutedAudio
from fantasytalking_core.perf import TokenGrid, step_flops
from fantasytalking_core.perf.flops import forward_flops
from fantasytalking_core.speakers import SpeakerRegions
from fantasytalking_core.wan import WanConfig, WanModel, init_random_

WINDOW = 41  # keys per latent frame of the official windows at 23 fps (about 4 frames of 50 Hz tokens + 2 x 4)


def audio_share(speakers: int) -> float:
    """The audio attention's share of a 14B step (three passes) at 512x512, 81 frames."""
    cfg = WanConfig.wan21_i2v_14b()
    grid = TokenGrid.for_video(cfg, 512, 512, 81)
    one = forward_flops(cfg, grid, batch=3, audio_window=WINDOW)
    sources = 1 if speakers == 1 else speakers + 1
    total = step_flops(cfg, grid, passes=3, audio_window=WINDOW) + (sources - 1) * one["audio_attn"]
    return sources * one["audio_attn"] / total


def regions(speakers: int, height: int, width: int) -> SpeakerRegions:
    """Speakers side by side in equal vertical strips (the last strip's right quarter is background)."""
    masks = torch.zeros(speakers, height, width)
    strip = width // speakers
    for k in range(speakers):
        masks[k, :, k * strip:(k + 1) * strip - (strip // 4 if k == speakers - 1 else 0)] = 1
    return SpeakerRegions(masks)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--preset", choices=sorted(PRESETS), default="mid")
    p.add_argument("--device", default="cpu")
    p.add_argument("--dtype", choices=("fp32", "bf16"), default="fp32")
    p.add_argument("--repeats", type=int, default=3)
    args = p.parse_args(argv)
    cfg, height, width, frames = PRESETS[args.preset]
    dtype = torch.bfloat16 if args.dtype == "bf16" else torch.float32
    device = torch.device(args.device)
    dit = init_random_(WanModel(cfg), seed=0).eval().to(device, dtype)
    audio = init_random_(AudioAdapter(AudioAdapterConfig.for_wan(cfg)), seed=1, std=0.02).eval().to(device, dtype)
    grid = TokenGrid.for_video(cfg, height, width, frames)
    g = torch.Generator().manual_seed(0)
    x = torch.randn(3, 16, grid.frames, height // 8, width // 8, generator=g).to(device, dtype)
    inputs = dict(x=x, t=torch.full((3,), 700.0, device=device), context=torch.randn(3, 16, cfg.text_dim, generator=g)
                  .to(device, dtype), clip_fea=torch.randn(3, 257, cfg.clip_dim, generator=g).to(device, dtype),
                  y=torch.randn(3, cfg.in_dim - 16, *x.shape[2:], generator=g).to(device, dtype))

    def source(seed: int) -> AudioCondition:
        tokens = torch.randn(1, grid.frames, WINDOW, 2048, generator=torch.Generator().manual_seed(seed))
        return AudioCondition(tokens.to(device, dtype), torch.full((grid.frames,), WINDOW, device=device))

    def seconds(cond) -> float:
        times = []
        with torch.no_grad(), attach_adapters(dit, audio=audio) as att, att.conditioned(audio=cond, audio_scale=1.0):
            for i in range(args.repeats + 1):
                if device.type == "cuda":
                    torch.cuda.synchronize()
                t0 = time.perf_counter()
                dit(**inputs)
                if device.type == "cuda":
                    torch.cuda.synchronize()
                if i:  # the first call warms up
                    times.append(time.perf_counter() - t0)
        return statistics.median(times)

    rows, base = [], None
    for k in (1, 2, 3, 4):
        if k == 1:
            cond = source(1)
        else:
            cond = RoutedAudio([source(s) for s in range(k + 1)], regions(k, height, width).weights(grid.height,
                                                                                                    grid.width))
        s = seconds(cond)
        base = base or s
        rows.append((k, audio_share(k), s, s / base))
    print(f"{args.preset} ({cfg.num_layers} blocks, dim {cfg.dim}), {grid.tokens} tokens x 3 passes, {args.device} "
          f"{args.dtype}, window {WINDOW} keys")
    print("| speakers | audio attention in a 14B step (FLOPs) | s / forward (3 passes) | vs 1 speaker |")
    print("| --- | --- | --- | --- |")
    for k, share, s, ratio in rows:
        print(f"| {k} | {100 * share:.2f}% | {s:.3f} | {ratio:.2f}x |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
