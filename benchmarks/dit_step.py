"""Time one denoising step of the FantasyTalking DiT (every guidance pass) and print a table.

Per variant (a set of ``perf.RuntimeOptions``): tokens, FLOPs per step from the config, seconds
per step (CUDA events or the CPU clock, after warm-up, median of repeats), achieved TFLOP/s, the
bf16 matmul TFLOP/s measured on the same device in the same run, their ratio (model FLOP
utilisation), peak memory and the speed-up over the first variant. Weights are random (the cost
does not depend on their values), so nothing is downloaded.

    python -m benchmarks.dit_step --preset tiny                       # CPU, seconds
    python -m benchmarks.dit_step --preset wan21_i2v_14b --device cuda --dtype bf16 \
        --variants plain,sequential,fast_rope,fast_rope+compile,fast_rope+compile+fp8_fast,swap=20
    torchrun --nproc-per-node 2 -m benchmarks.dit_step --preset tiny --seq-parallel

Variants are comma-separated; each is ``+``-joined features: ``plain``, ``sequential`` (guidance
passes one by one instead of batched), ``fast_rope``, ``attn=<backend>``, ``compile`` or
``compile=<mode>``, ``fp8``, ``fp8_fast``, ``swap=<blocks>``, ``cache=<threshold>`` (a short
sampling run with the step cache; its row is the mean time per step, with steps skipped).
"""

from __future__ import annotations

if __name__ == "__main__" and not __package__:  # run by path: run again as `python -m <folder>.<name>` (scripts/__init__.py)
    import os, sys  # noqa: E401
    here, name = os.path.split(os.path.splitext(os.path.abspath(__file__))[0])
    os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [os.path.dirname(here), os.environ.get("PYTHONPATH")]))
    os.execv(sys.executable, [sys.executable, "-m", f"{os.path.basename(here)}.{name}", *sys.argv[1:]])

import argparse
import json
import os
import platform
import statistics
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

from fantasytalking_core.adapters import AudioAdapterConfig, AudioAdapter, attach_adapters
from fantasytalking_core.attention import resolve_backend
from fantasytalking_core.encoders import wav2vec_num_tokens
from fantasytalking_core.perf import RuntimeOptions, StepCacheConfig, TokenGrid, configure, step_flops
from fantasytalking_core.sampling import (Guidance, flow_sigmas, guided_model, run_passes_batched,
                                          sample_euler)
from fantasytalking_core.wan import WanConfig, WanModel

DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}
PRESETS = {  # name -> (config, default height, width, frames)
    "tiny": (WanConfig.tiny(), 128, 128, 17),
    "mid": (WanConfig(dim=1536, ffn_dim=8960, num_heads=12, num_layers=4), 192, 192, 17),
    "wan21_i2v_14b": (WanConfig.wan21_i2v_14b(), 512, 512, 81),
}
PASS_NAMES = ("pos_audio", "pos_noaudio", "neg_noaudio")


@dataclass
class Variant:
    name: str
    options: RuntimeOptions = field(default_factory=RuntimeOptions)
    sequential: bool = False


def parse_variant(text: str) -> Variant:
    """``fast_rope+compile+swap=10`` -> options; raises with the list of features on a bad one."""
    opts, sequential = {}, False
    for part in filter(None, text.split("+")):
        key, _, value = part.partition("=")
        if key == "plain":
            continue
        elif key == "sequential":
            sequential = True
        elif key == "fast_rope":
            opts["fast_rope"] = True
        elif key == "attn" and value:
            opts["attention"] = value
        elif key == "compile":
            opts.update(compile=True, compile_mode=value or None)
        elif key in ("fp8", "fp8_fast"):
            opts["fp8"] = "e4m3fn" if key == "fp8" else "e4m3fn_fast"
        elif key == "swap" and value.isdigit():
            opts["block_swap"] = int(value)
        elif key == "cache" and value:
            opts["step_cache"] = StepCacheConfig(threshold=float(value))
        else:
            raise SystemExit(f"unknown variant feature {part!r} in {text!r}; use plain, sequential, fast_rope, "
                             f"attn=<backend>, compile[=<mode>], fp8, fp8_fast, swap=<N>, cache=<threshold>")
    return Variant(text, RuntimeOptions(**opts), sequential)


# ------------------------------------------------------------------------------------------ set-up


def random_model(cfg: WanConfig, device: torch.device, dtype: torch.dtype, seed: int = 0) -> WanModel:
    """The DiT built on the meta device and filled with seeded noise where it will run (fast for 14B)."""
    torch.manual_seed(seed)
    with torch.device("meta"):
        model = WanModel(cfg).to(dtype)
    model = model.to_empty(device=device).eval().requires_grad_(False)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "norm" in name and p.dim() == 1:
                p.fill_(1.0)
            else:
                p.normal_(0.0, 0.02)
    return model


def random_audio(cfg: WanConfig, device, dtype, frames: int, fps: float = 23.0, seed: int = 1):
    proj_dim = 2048 if cfg.dim >= 1024 else 64
    torch.manual_seed(seed)
    with torch.device("meta"):
        audio = AudioAdapter(AudioAdapterConfig.for_wan(cfg, proj_dim=proj_dim)).to(dtype)
    audio = audio.to_empty(device=device).eval().requires_grad_(False)
    with torch.no_grad():
        for name, p in audio.named_parameters():
            p.fill_(1.0) if name == "proj_model.norm.weight" else p.normal_(0.0, 0.02)
    n = wav2vec_num_tokens(round(frames / fps * 16000))
    g = torch.Generator().manual_seed(seed)
    features = torch.randn(1, n, 768, generator=g).to(device=device, dtype=dtype)
    return audio, audio.condition(features, frames)


def step_inputs(cfg: WanConfig, grid: TokenGrid, device, seed: int = 2) -> dict:
    g = torch.Generator().manual_seed(seed)
    h, w = grid.height * cfg.patch_size[1], grid.width * cfg.patch_size[2]
    shape = (1, 16, grid.frames, h, w)
    ctx = lambda: torch.randn(1, min(cfg.text_len, 100), cfg.text_dim, generator=g).to(device)  # noqa: E731
    return {"x": torch.randn(*shape, generator=g).to(device), "pos": ctx(), "neg": ctx(),
            "clip_fea": torch.randn(1, cfg.clip_tokens, cfg.clip_dim, generator=g).to(device),
            "y": torch.randn(1, cfg.in_dim - 16, *shape[2:], generator=g).to(device)}


def make_denoiser(forward, att, cond, inp, passes, max_batch):
    """``passes_fn(x, sigma, passes)`` as pipeline.sample_latents builds it (batched rows, audio off per row);
    ``forward`` is the DiT or its perf Runtime, ``att`` the attachment of the audio adapter."""
    scale_of = {"pos_audio": 1.0, "pos_noaudio": 0.0, "neg_noaudio": 0.0, "neg_audio": 1.0}
    conds = {name: {"context": inp["pos" if name.startswith("pos") else "neg"],  # scales on the CPU, as pipeline
                    "audio_scale": torch.tensor([scale_of[name]])} for name in scale_of}

    def model_fn(x, sigma, context, audio_scale):
        n = x.shape[0]
        with att.conditioned(audio=cond, audio_scale=audio_scale):
            return forward(x, sigma * 1000.0, context, inp["clip_fea"].expand(n, -1, -1),
                         inp["y"].expand(n, -1, -1, -1, -1))

    def passes_fn(x, sigma, names=passes):
        return run_passes_batched(model_fn, x, sigma, names, conds, max_batch=max_batch)

    return passes_fn


# ------------------------------------------------------------------------------------------ timing


class Timer:
    """CUDA events on a GPU, ``perf_counter`` on the CPU; ``measure(fn)`` -> seconds."""

    def __init__(self, device: torch.device):
        self.cuda = device.type == "cuda"

    def measure(self, fn) -> float:
        if self.cuda:
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            fn()
            end.record()
            torch.cuda.synchronize()
            return start.elapsed_time(end) / 1000.0
        t0 = time.perf_counter()
        fn()
        return time.perf_counter() - t0


def matmul_tflops(device: torch.device, dtype: torch.dtype, repeats: int = 5) -> float:
    """Dense matmul throughput of this device in ``dtype`` (square, 8192 on GPU, 1024 on CPU)."""
    n = 8192 if device.type == "cuda" else 1024
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    timer = Timer(device)
    for _ in range(2):
        timer.measure(lambda: a @ b)
    best = min(timer.measure(lambda: a @ b) for _ in range(repeats))
    return 2 * n**3 / best / 1e12


def time_step(passes_fn, x: torch.Tensor, timer: Timer, warmup: int = 1, repeats: int = 3,
              stat: str = "median") -> float:
    """Seconds of one step (every guidance pass) at sigma 0.7: ``warmup`` untimed calls, then the
    median (or min) of ``repeats`` timed ones."""
    sigma = torch.tensor(0.7, device=x.device)
    for _ in range(warmup):
        timer.measure(lambda: passes_fn(x, sigma))
    times = [timer.measure(lambda: passes_fn(x, sigma)) for _ in range(repeats)]
    return statistics.median(times) if stat == "median" else min(times)


def run_variant(v: Variant, cfg, grid, dtype, device, args, flops: int) -> dict:
    """Build a fresh model with the variant's options, time one step, return the row."""
    if device.type == "cuda":
        torch.cuda.empty_cache()
    model = random_model(cfg, device, dtype)
    audio, cond = random_audio(cfg, device, dtype, args.frames)
    inp = step_inputs(cfg, grid, device)
    passes = PASS_NAMES[: args.passes]
    max_batch = 1 if v.sequential else None
    timer = Timer(device)
    with torch.no_grad():
        if v.options.fp8 != "none":  # fp8 before attach (attach wraps the quantised layers)
            configure(model, RuntimeOptions(fp8=v.options.fp8))
        with attach_adapters(model, audio=audio) as att:
            runtime = configure(model, v.options.with_(fp8="none"), adapters=[audio])
            if device.type == "cuda":
                torch.cuda.synchronize()
                torch.cuda.empty_cache()  # give back what block swap moved to the CPU
                torch.cuda.reset_peak_memory_stats()
                if args.memory_limit_gb:
                    total = torch.cuda.get_device_properties(device).total_memory
                    torch.cuda.set_per_process_memory_fraction(min(1.0, args.memory_limit_gb * 2**30 / total))
            passes_fn = make_denoiser(runtime, att, cond, inp, passes, max_batch)
            extra = ""
            if v.options.step_cache is not None:
                seconds, extra = _sampling_run(passes_fn, inp["x"], args, timer, runtime)
            else:
                seconds = time_step(passes_fn, inp["x"], timer, args.warmup, args.repeats, args.stat)
    peak = torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else None
    if device.type == "cuda" and args.memory_limit_gb:
        torch.cuda.set_per_process_memory_fraction(1.0)
    del model, audio, runtime
    return {"variant": v.name, "tokens": grid.tokens, "passes": args.passes, "flops": flops,
            "seconds": seconds, "tflops": flops / seconds / 1e12, "peak_gib": peak, "note": extra}


def _sampling_run(passes_fn, x, args, timer, runtime):
    """A ``--cache-steps`` Euler run with three-pass guidance; mean seconds per step and what was skipped."""
    sigmas = flow_sigmas(args.cache_steps, 5.0).to(x.device)
    fn = guided_model(passes_fn, Guidance(), sigmas.cpu())  # the official defaults
    runtime.reset()
    seconds = timer.measure(lambda: sample_euler(fn, x, sigmas))
    cache = runtime.cache
    return seconds / args.cache_steps, f"{cache.skipped}/{cache.skipped + cache.computed} calls skipped"


# ------------------------------------------------------------------------------------------ main


def main(argv: list[str] | None = None) -> list[dict]:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--preset", choices=sorted(PRESETS), default="tiny",
                   help="DiT size: tiny (CPU seconds), mid (4 blocks of the 1.3B width), wan21_i2v_14b")
    p.add_argument("--height", type=int, help="pixels (default per preset: 128 tiny, 192 mid, 512 14B)")
    p.add_argument("--width", type=int, help="pixels (default as height)")
    p.add_argument("--frames", type=int, help="video frames, 4k+1 (default 17 tiny/mid, 81 14B)")
    p.add_argument("--dtype", choices=sorted(DTYPES), help="weights and compute (default bf16 on CUDA, fp32 on CPU)")
    p.add_argument("--device", default=None, help="cpu or cuda (default cuda when available)")
    p.add_argument("--passes", type=int, default=3, choices=(1, 2, 3), help="guidance passes per step (default 3)")
    p.add_argument("--variants", default=None,
                   help="comma-separated variants (default: plain,sequential,fast_rope,fp8,cache=0.05 on CPU; "
                        "plus compile and fp8_fast on CUDA)")
    p.add_argument("--warmup", type=int, default=1, help="untimed steps per variant (default 1)")
    p.add_argument("--repeats", type=int, default=3, help="timed steps per variant; the median is reported")
    p.add_argument("--stat", choices=("median", "min"), default="median",
                   help="statistic over the repeats (min is steadier on a shared CPU; default median)")
    p.add_argument("--cache-steps", type=int, default=6, help="steps of the sampling run of cache= variants")
    p.add_argument("--memory-limit-gb", type=float, default=None,
                   help="CUDA: cap this process's memory (set_per_process_memory_fraction) to check a card size")
    p.add_argument("--seq-parallel", action="store_true", help="Ulysses over the torchrun world (every variant)")
    p.add_argument("--json", type=Path, help="also write the rows to this JSON file")
    args = p.parse_args(argv)

    rank = _init_distributed(args)
    cfg, h0, w0, f0 = PRESETS[args.preset]
    args.height, args.frames = args.height or h0, args.frames or f0
    args.width = args.width or (args.height if args.height != h0 else w0)
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    if device.type == "cuda" and device.index is None:
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
        torch.cuda.set_device(device)
    dtype = DTYPES[args.dtype or ("bf16" if device.type == "cuda" else "fp32")]
    grid = TokenGrid.for_video(cfg, args.height, args.width, args.frames)
    window = audio_window(cfg, args.frames)
    proj_dim = 2048 if cfg.dim >= 1024 else 64
    flops = step_flops(cfg, grid, args.passes, audio_window=window, audio_dim=proj_dim)
    default = "plain,sequential,fast_rope,fp8,cache=0.05"
    if device.type == "cuda":
        default = "plain,sequential,fast_rope,fast_rope+compile,fast_rope+compile+fp8_fast,cache=0.05"
    variants = [parse_variant(t) for t in (args.variants or default).split(",")]
    if args.seq_parallel:
        variants = [Variant(v.name + "+sp", v.options.with_(seq_parallel=True), v.sequential) for v in variants]

    peak_bf16 = matmul_tflops(device, torch.bfloat16)
    peak_dtype = peak_bf16 if dtype == torch.bfloat16 else matmul_tflops(device, dtype)
    world = int(os.environ.get("WORLD_SIZE", 1)) if args.seq_parallel else 1
    rows = []
    for v in variants:
        row = run_variant(v, cfg, grid, dtype, device, args, flops)
        row["mfu"] = row["tflops"] / (peak_bf16 * world)  # against every rank's device together
        rows.append(row)
    if rank == 0:
        print(_header(args, cfg, grid, dtype, device, window, flops, peak_bf16, peak_dtype))
        print(format_table(rows, peak_bf16))
        if world > 1:
            print(f"MFU is against {world} devices' bf16 matmul throughput; bf16 mm TFLOP/s is one device's")
        if args.json:
            args.json.write_text(json.dumps({"args": {k: str(v) for k, v in vars(args).items()}, "rows": rows,
                                             "bf16_matmul_tflops": peak_bf16}, indent=1))
    return rows


def audio_window(cfg: WanConfig, frames: int) -> int:
    """Keys per latent frame of the frame-level audio (the padded window length) for `frames` at 23 fps."""
    from fantasytalking_core.audio import split_windows

    n = wav2vec_num_tokens(round(frames / 23.0 * 16000))
    return split_windows(torch.zeros(1, n, 1), frames).tokens.shape[2]


def _init_distributed(args) -> int:
    if not args.seq_parallel:
        return 0
    import torch.distributed as dist

    if "RANK" not in os.environ:
        raise SystemExit("--seq-parallel needs torchrun: torchrun --nproc-per-node N -m benchmarks.dit_step ...")
    backend = "nccl" if torch.cuda.is_available() and args.device != "cpu" else "gloo"
    dist.init_process_group(backend)
    return dist.get_rank()


def _header(args, cfg, grid, dtype, device, window, flops, peak_bf16, peak_dtype) -> str:
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else \
        f"CPU {platform.processor() or platform.machine()}, {torch.get_num_threads()} threads"
    world = int(os.environ.get("WORLD_SIZE", 1)) if args.seq_parallel else 1
    lines = [f"device: {name}; torch {torch.__version__}; dtype {str(dtype).replace('torch.', '')}; ranks {world}",
             f"model: {args.preset} (dim {cfg.dim}, {cfg.num_layers} blocks, {cfg.num_heads} heads); video "
             f"{args.width}x{args.height}x{args.frames} -> {grid.frames}x{grid.height}x{grid.width} = {grid.tokens} "
             f"tokens; audio window {window}; {args.passes} guidance passes",
             f"FLOPs per step (config): {flops / 1e12:.4g} TFLOP; s/step = {args.stat} of {args.repeats} after "
             f"{args.warmup} warm-up; attention auto -> "
             f"{resolve_backend('auto', device)}; bf16 matmul {peak_bf16:.3g} TFLOP/s"]
    if dtype != torch.bfloat16:
        lines.append(f"{str(dtype).replace('torch.', '')} matmul {peak_dtype:.3g} TFLOP/s "
                     f"(MFU in the table is against bf16, as specified)")
    lines.append("command: python -m benchmarks.dit_step " + " ".join(sys.argv[1:]))
    return "\n".join(lines)


def format_table(rows: list[dict], peak_bf16: float) -> str:
    """Markdown table; speed-up is against the first row."""
    head = ("| variant | tokens | GFLOP/step | s/step | TFLOP/s | bf16 mm TFLOP/s | MFU | peak GiB | speed-up "
            "| note |\n|---|---:|---:|---:|---:|---:|---:|---:|---:|---|")
    base = rows[0]["seconds"] if rows else 1.0
    out = [head]
    for r in rows:
        peak = f"{r['peak_gib']:.2f}" if r["peak_gib"] is not None else "-"
        out.append(f"| {r['variant']} | {r['tokens']} | {r['flops'] / 1e9:.1f} | {r['seconds']:.4g} | "
                   f"{r['tflops']:.3g} | {peak_bf16:.3g} | {r['mfu']:.3f} | {peak} | {base / r['seconds']:.2f}x | "
                   f"{r['note']} |")
    return "\n".join(out)


if __name__ == "__main__":
    main()
