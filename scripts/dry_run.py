"""Every path a user runs, at full size, on a simulated GPU: PyTorch's ``meta`` device.

    python -m scripts.dry_run                 # the CI set (tests/test_dry_run.py): about 2 min on 2 cores
    python -m scripts.dry_run --all           # + 720p through the whole pipeline, every backend at 40 blocks
    python -m scripts.dry_run --only fp8      # rows whose name contains "fp8"
    python -m scripts.dry_run --json out.json
    python -m scripts.dry_run --only none --comfyui /path/to/ComfyUI   # + core's WanModel, in the host's venv

Wan2.1-I2V-14B (40 blocks, dim 5120) with FantasyTalking's audio adapter (and the identity and
motion adapters in one row), UMT5-XXL, CLIP ViT-H/14, wav2vec2-base and the Wan VAE, built on the
meta device with their real configurations: every operator checks shapes, devices and dtypes, none
allocates or computes (``fantasytalking_core.perf.simulate``). A failing row names the operator and
the module (``dit.blocks.3.cross_attn.o``). Each row prints the bytes alive on the device at the
peak (weights resident + activations), and the DiT rows the FLOPs of one denoising step counted by
``torch.utils.flop_counter.FlopCounterMode`` beside the analytic count of ``perf.flops``.

With ``--comfyui`` (repeatable) the same simulation runs core's own ``comfy.ldm.wan.model.WanModel``
(built with the operations core picks for the weight dtype: manual cast for bf16 and fp8 e4m3fn
weights with bf16 compute, and 0.3.x's scaled-fp8 layers) with FantasyTalking's attach applied, in
that host's venv (``<host>/.venv``): the adapters' query, output and dtype follow core's model.

Sampling runs 2 steps (the three guidance passes of each batched, as the pipeline runs them): the
steps repeat the same operators on the same shapes, so more steps add time, not coverage. Rows
marked "4 blocks" use the 14B configuration with 4 of its 40 identical blocks, to keep the CI run
short; ``--all`` runs them at 40.
"""

from __future__ import annotations

if __name__ == "__main__" and not __package__:  # run by path: run again as `python -m <folder>.<name>` (scripts/__init__.py)
    import os, sys  # noqa: E401
    here, name = os.path.split(os.path.splitext(os.path.abspath(__file__))[0])
    os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [os.path.dirname(here), os.environ.get("PYTHONPATH")]))
    os.execv(sys.executable, [sys.executable, "-m", f"{os.path.basename(here)}.{name}", *sys.argv[1:]])

import argparse
import contextlib
import importlib.machinery
import json
import sys
import time
import types
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from fantasytalking_core.adapters import AudioAdapter, attach_adapters
from fantasytalking_core.adapters.audio import AudioAdapterConfig
from fantasytalking_core.adapters.identity import IdentityAdapter, IdentityAdapterConfig
from fantasytalking_core.adapters.motion import MotionAdapter, MotionAdapterConfig
from fantasytalking_core.perf import RuntimeOptions, StepCacheConfig, TokenGrid, configure, step_flops
from fantasytalking_core.perf.memory import GiB, MemoryPlan, predict_dit
from fantasytalking_core.perf.simulate import Simulation, SimulationError
from fantasytalking_core.wan import WanConfig, WanModel

META = torch.device("meta")
SIZES = {"480p": (480, 832), "720p": (720, 1280), "512": (512, 512)}  # (height, width)
FRAMES = 81
STEPS = 2
CARDS = (24, 16)  # GB cards the block-swap column is for
ENCODERS = ("text_encoder", "clip_vision", "wav2vec", "vae")  # the models beside the DiT, by root name
# The official FantasyTalking README (bf16, A100, 512x512x81; DiffSynth runs the passes one by one):
OFFICIAL = {"all resident": 40, "7e9 persistent": 20, "none persistent": 5}


@dataclass
class Row:
    name: str
    ok: bool = True
    peak: float = 0.0  # GiB alive on the device at the peak
    weights: float = 0.0  # GiB of weights resident when the run starts
    flops: float = 0.0  # PFLOP per step, counted
    analytic: float = 0.0  # PFLOP per step, perf.flops
    seconds: float = 0.0
    note: str = ""
    peak_at: str = ""  # the module where the peak happened
    parts: dict = field(default_factory=dict)  # peak GiB inside each model


# ------------------------------------------------------------------------------------- models


def dit_14b(dtype=torch.bfloat16, blocks: int = 40) -> tuple[WanModel, AudioAdapter]:
    """Wan2.1-I2V-14B (or its first ``blocks`` blocks) and the FantasyTalking audio adapter, on meta."""
    cfg = WanConfig.wan21_i2v_14b().with_(num_layers=blocks)
    with META:
        return WanModel(cfg).to(dtype).eval(), AudioAdapter(AudioAdapterConfig.for_wan(cfg)).to(dtype).eval()


def components(dtype=torch.bfloat16, tiled: bool = False):
    """The pipeline's components as ``load_components`` puts them on a GPU, on meta, real configurations.
    ``tiled``: the VAE decodes in tiles, as ``load_components`` sets it (the same operators on slices:
    about 15 times the operators at 480p, 80 s here, so only ``--all`` runs it)."""
    from diffusers import AutoencoderKLWan
    from transformers import (CLIPVisionConfig, CLIPVisionModel, UMT5Config, UMT5EncoderModel, Wav2Vec2Config,
                              Wav2Vec2Model)

    from fantasytalking_core.encoders import ClipImageEncoder, UMT5TextEncoder, Wav2VecEncoder, WanVAE
    from fantasytalking_core.pipeline import Components

    dit, audio = dit_14b(dtype)
    with META:
        vae = AutoencoderKLWan(base_dim=96, z_dim=16).float()  # Wan2.1's VAE, float32 as load_components
        t5 = UMT5EncoderModel(UMT5Config(vocab_size=256384, d_model=4096, d_kv=64, d_ff=10240, num_heads=64,
                                         num_layers=24, feed_forward_proj="gated-gelu",
                                         tie_word_embeddings=False)).to(torch.bfloat16)
        clip = CLIPVisionModel(CLIPVisionConfig(hidden_size=1280, intermediate_size=5120, num_hidden_layers=32,
                                                num_attention_heads=16, image_size=224, patch_size=14,
                                                hidden_act="gelu", layer_norm_eps=1e-5)).to(torch.float16)
        w2v = Wav2Vec2Model(Wav2Vec2Config()).eval()  # wav2vec2-base-960h
    return Components(dit=dit, audio=audio, vae=WanVAE(vae, tiled_decode=tiled),
                      text_encoder=UMT5TextEncoder(t5, lambda text: [2 + b % 250000 for b in text.encode()] + [1]),
                      clip_encoder=ClipImageEncoder(clip),
                      wav2vec=Wav2VecEncoder(model=w2v, device=META, dtype=torch.float32, source="meta"))


def roots(c) -> dict:
    return {"dit": c.dit, "audio": c.audio, "vae": c.vae, "text_encoder": c.text_encoder,
            "clip_vision": c.clip_encoder, "wav2vec": c.wav2vec}


# ------------------------------------------------------------------------------------- the simulated GPU


@contextlib.contextmanager
def kernel_packages() -> None:
    """FlashAttention 3/2 and SageAttention as stand-ins that check what the real kernels require
    (``[B, L, heads, head_dim]``, fp16/bf16, q k v alike, head_dim <= 256) and return the output's
    shape: the code path up to the kernel call runs; the kernels' numerics are theirs."""
    from fantasytalking_core import attention as attn

    def kernel(name):
        def run(q, k, v, *args, **kwargs):
            for t, what in ((q, "q"), (k, "k"), (v, "v")):
                if t.dim() != 4 or t.dtype not in (torch.float16, torch.bfloat16) or t.device != q.device:
                    raise RuntimeError(f"{name} needs [B, L, heads, head_dim] fp16/bf16 tensors on one device, got "
                                       f"{what} {tuple(t.shape)} {t.dtype} on {t.device}")
            if k.dtype != q.dtype or v.dtype != q.dtype or q.shape[-1] > 256 or k.shape[:2] != v.shape[:2]:
                raise RuntimeError(f"{name}: q {q.dtype} {tuple(q.shape)}, k {k.dtype} {tuple(k.shape)}, "
                                   f"v {v.dtype} {tuple(v.shape)}")
            return torch.empty_like(q)
        return run

    names = {"flash_attn_interface": "flash_attn_func", "flash_attn": "flash_attn_func", "sageattention": "sageattn"}
    saved = {n: sys.modules.get(n) for n in names}
    for module, fn in names.items():
        stand_in = types.ModuleType(module)
        stand_in.__spec__ = importlib.machinery.ModuleSpec(module, None)
        setattr(stand_in, fn, kernel(module))
        sys.modules[module] = stand_in
    attn._installed.cache_clear()
    try:
        yield
    finally:
        for n, m in saved.items():
            if m is None:
                sys.modules.pop(n, None)
            else:
                sys.modules[n] = m
        attn._installed.cache_clear()


def simulate(row: Row, run: Callable[[Simulation], None], setup: Callable[[Simulation], None] | None = None,
             **models) -> Row:
    """Run ``run(sim)`` on the simulated GPU (after ``setup()``, e.g. block swap moving weights to the
    host); fill the row's memory and time; errors name the place."""
    start = time.perf_counter()
    sim = Simulation(**models)
    try:
        with sim, torch.no_grad():
            if setup is not None:
                setup(sim)
            row.weights = sim.resident() / GiB
            sim.reset_peak()
            run(sim)
    except SimulationError as err:
        row.ok, row.note = False, f"{err}"[:600]
    row.peak, row.peak_at = sim.peak.bytes / GiB, sim.peak.at
    row.parts = {k: round(v / GiB, 2) for k, v in sim.peaks.items()}
    row.seconds = time.perf_counter() - start
    return row


def dit_inputs(cfg: WanConfig, size: str, batch: int = 3, frames: int = FRAMES):
    """The DiT's inputs of one step as the pipeline makes them (the passes batched), and the audio."""
    h, w = SIZES[size]
    grid = TokenGrid.for_video(cfg, h, w, frames)
    lat = (grid.frames, h // 8, w // 8)
    x = torch.empty(batch, 16, *lat, device=META)
    y = torch.empty(batch, cfg.in_dim - 16, *lat, device=META)
    clip = torch.empty(batch, 257, cfg.clip_dim, device=META)
    context = torch.empty(batch, 48, cfg.text_dim, device=META)  # prompts are trimmed to their tokens
    features = torch.empty(1, round(frames / 23 * 50), 768, device=META)  # wav2vec2: 50 tokens per second
    return grid, x, y, clip, context, features


def dit_step(model, audio, size: str, batch: int = 3, flops: bool = True, calls: int = STEPS,
             identity=None, motion=None, row: Row | None = None):
    """``calls`` denoising steps of the DiT (each one call with the passes batched) with the adapters."""
    from torch.utils.flop_counter import FlopCounterMode

    def run(sim: Simulation) -> None:
        grid, x, y, clip, context, features = dit_inputs(model.cfg, size, batch)
        cond = audio.condition(features, FRAMES)  # frame-level windows, as segments.segment_audio
        extra = {}
        if identity is not None:
            extra["identity"] = identity.condition(torch.zeros(1, 512))  # ArcFace runs on the CPU (onnxruntime)
            extra["id_scale"] = 0.5
        if motion is not None:
            extra["motion"] = motion.condition(0.5, 0.5).to(META)
        scale = torch.tensor([1.0] + [0.0] * (batch - 1))  # pos_audio, pos_noaudio, neg_noaudio
        counter = FlopCounterMode(display=False)
        with attach_adapters(model, audio=audio, identity=identity, motion=motion) as att, \
                att.conditioned(audio=cond, audio_scale=scale, **extra):
            for i, t in enumerate(torch.linspace(999.0, 966.0, calls)):
                with counter if flops and i == 0 else contextlib.nullcontext():
                    out = model(x, t.reshape(1), context, clip, y)
                if out.shape != x.shape:
                    raise SimulationError(f"the DiT returned {tuple(out.shape)} for latents {tuple(x.shape)}")
        if row is not None and flops:
            row.flops = counter.get_total_flops() / 1e15 * 3 / batch
            row.analytic = step_flops(model.cfg, grid, passes=3, audio_window=cond.tokens.shape[2]) / 1e15
    return run


# ------------------------------------------------------------------------------------- rows


def row_dit(name: str, size: str, batch: int = 3, options: RuntimeOptions | None = None, blocks: int = 40,
            adapters: str = "audio", flops: bool = True, calls: int = STEPS, note: str = "") -> Row:
    dit, audio = dit_14b(blocks=blocks)
    row = Row(name, note=note)
    models = {"dit": dit, "audio": audio}
    identity = motion = None
    if adapters == "all":
        with META:
            identity = IdentityAdapter(IdentityAdapterConfig.for_wan(dit.cfg)).to(torch.bfloat16).eval()
            motion = MotionAdapter(MotionAdapterConfig.for_wan(dit.cfg)).to(torch.bfloat16).eval()
        models.update(identity=identity, motion=motion)
    if options is not None:
        configure(dit, options, adapters=[a for a in (audio, identity) if a is not None])
    return simulate(row, dit_step(dit, audio, size, batch, flops, calls, identity, motion, row), **models)


def row_plan(size: str, batch: int, fp8: str = "none") -> tuple[Row, MemoryPlan]:
    """The memory plan behind block_swap="auto", and the blocks it swaps on 24 and 16 GB cards."""
    h, w = SIZES[size]
    grid = TokenGrid.for_video(WanConfig.wan21_i2v_14b(), h, w, FRAMES)
    start = time.perf_counter()
    plan = predict_dit(WanConfig.wan21_i2v_14b(), (grid.frames, h // 8, w // 8), batch=batch, fp8=fp8,
                       text_tokens=48)
    fits = []
    for gb in CARDS:
        n = plan.swap_for(gb * GiB)  # a "24 GB" card has 24 GiB
        fits.append(f"{gb} GB: " + ("does not fit" if n is None else f"swap {n}"))
    row = Row(f"auto swap {size} b{batch} {'bf16' if fp8 == 'none' else 'fp8'}", peak=plan.peak() / GiB,
              weights=plan.weights / GiB, seconds=time.perf_counter() - start,
              note=f"per block {plan.per_block / GiB:.2f} GiB; " + ", ".join(fits))
    return row, plan


def row_swap(name: str, size: str, swapped: int, batch: int = 1, note: str = "") -> Row:
    dit, audio = dit_14b()

    def setup(sim: Simulation) -> None:  # the swapped blocks' host copies: a second simulated device, not counted
        sim.host_memory(configure(dit, RuntimeOptions(block_swap=swapped), adapters=[audio]).swap.host_tensors())

    return simulate(Row(name, note=note), dit_step(dit, audio, size, batch, flops=False, calls=1), setup,
                    dit=dit, audio=audio)


def row_step_cache() -> Row:
    """Two calls: the first computes, the second reuses the residual (the measured change is the one
    value the cache reads per call; a simulated device has no values, so it is taken as 0 here)."""
    dit, audio = dit_14b()
    rt = configure(dit, RuntimeOptions(step_cache=StepCacheConfig(threshold=0.1, start_step=0)), adapters=[audio])
    rt.cache.relative_change = lambda a, b: ((a - b).abs().sum(), b.abs().sum()) and 0.0
    row = Row("step cache 480p", note="second step skipped")
    simulate(row, dit_step(dit, audio, "480p", flops=False, calls=2), dit=dit, audio=audio)
    if row.ok and (rt.cache.skipped, rt.cache.computed) != (1, 1):
        row.ok, row.note = False, f"expected one computed and one skipped call, got {rt.cache.history}"
    return row


def row_seq_parallel(blocks: int) -> Row:
    """Rank 0 of 2 Ulysses ranks: its latent frames, its windows, the all-to-all's shapes (the
    collectives are no-ops here: on meta their output buffers already have the right shape)."""
    import torch.distributed as dist

    from fantasytalking_core.perf.parallel import SequenceParallel

    class TwoRanks(SequenceParallel):
        def __init__(self):
            self.group, self.world, self.rank, self._lengths = None, 2, 0, None

    dit, audio = dit_14b(blocks=blocks)
    rt = configure(dit, RuntimeOptions(fast_rope=True), adapters=[audio])
    rt.parallel = TwoRanks()
    for block in dit.blocks:
        block.self_attn.parallel = rt.parallel
    row = Row(f"seq parallel 2 ranks 480p ({blocks} blocks)", note="rank 0: 11 of 21 latent frames")
    saved = dist.all_to_all_single, dist.all_gather
    dist.all_to_all_single = lambda out, inp, group=None: None
    dist.all_gather = lambda parts, x, group=None: None
    try:
        return simulate(row, dit_step(dit, audio, "480p", flops=False, calls=1), dit=dit, audio=audio)
    finally:
        dist.all_to_all_single, dist.all_gather = saved


def _media(size: str, seconds: float):
    from PIL import Image

    h, w = SIZES[size]
    image = Image.new("RGB", (w, h), (128, 100, 90))
    t = np.arange(int(seconds * 16000)) / 16000
    wave = (0.1 * np.sin(2 * np.pi * 220 * t) * (1 + np.sin(2 * np.pi * 3 * t))).astype(np.float32)
    return image, (wave, 16000)


def row_generate(name: str, size: str, frames: int = FRAMES, tiled: bool = False) -> Row:
    """``FantasyTalkingPipeline.frames``: encoders, the segment loop, 2 steps per segment, the VAE."""
    from fantasytalking_core.pipeline import FantasyTalkingPipeline, Generation, GenerationConfig

    c = components(tiled=tiled)
    image, audio = _media(size, frames / 23 + 0.3)
    cfg = GenerationConfig(size=max(SIZES[size]), num_frames=frames, steps=STEPS)
    gen = Generation(image, audio, cfg)
    row = Row(name, note=f"{len(gen.plans)} segment(s) of {gen.plans[0].num_frames} frames, {STEPS} steps, "
                        f"VAE decode {'tiled' if tiled else 'untiled'}")

    def run(sim):
        for _ in FantasyTalkingPipeline(c).frames(gen, progress=False):
            pass
    return simulate(row, run, **roots(c))


def row_dub(size: str = "480p") -> Row:
    """``dub.dub_frames``: the source's first frame, inpainting inside the mouth mask, 2 steps."""
    from fantasytalking_core.dub import DubJob, dub_frames, plan_dub
    from fantasytalking_core.pipeline import FantasyTalkingPipeline, GenerationConfig

    c = components()
    h, w = SIZES[size]
    source = torch.full((FRAMES, h, w, 3), 120, dtype=torch.uint8)
    masks = torch.zeros(FRAMES, h, w, dtype=torch.uint8)
    masks[:, h // 2: h // 2 + 64, w // 2 - 64: w // 2 + 64] = 255
    _, (wave, _) = _media(size, FRAMES / 23)
    plan = plan_dub(FRAMES, 23.0, len(wave) / 16000)
    cfg = GenerationConfig(size=max(h, w), steps=STEPS)
    job = DubJob(source, masks, plan, cfg.size)
    row = Row(f"dub {size}", note=f"{len(plan.plans)} segment(s), {STEPS} steps")

    def run(sim):
        for _ in dub_frames(FantasyTalkingPipeline(c), job, torch.from_numpy(wave), cfg, "A person is talking.",
                            "", progress=False):
            pass
    return simulate(row, run, **roots(c))


def rows(everything: bool) -> list[tuple[str, Callable[[], Row | tuple]]]:
    blocks = 40 if everything else 4
    out = [
        ("dit 512 b1 bf16", lambda: row_dit("dit 512 b1 bf16", "512", batch=1, note="the official README's setting")),
        ("dit 480p bf16 audio+identity+motion",
         lambda: row_dit("dit 480p bf16 audio+identity+motion", "480p", adapters="all")),
        ("dit 720p bf16", lambda: row_dit("dit 720p bf16", "720p")),
        ("dit 720p bf16 fast_rope", lambda: row_dit("dit 720p bf16 fast_rope", "720p", calls=1,
                                                   options=RuntimeOptions(fast_rope=True), flops=False)),
        ("dit 720p b1 bf16", lambda: row_dit("dit 720p b1 bf16", "720p", batch=1, calls=1, flops=False,
                                             note="max_batch 1: the passes one by one")),
        ("fp8 e4m3fn 480p", lambda: row_dit("fp8 e4m3fn 480p", "480p", options=RuntimeOptions(fp8="e4m3fn"),
                                            flops=False, calls=1)),
        ("fp8 e4m3fn_fast 480p", lambda: row_dit("fp8 e4m3fn_fast 480p", "480p", calls=1, flops=False,
                                                 options=RuntimeOptions(fp8="e4m3fn_fast"),
                                                 note="torch._scaled_mm on a simulated sm90")),
    ]
    for backend in ("sdpa", "math", "cudnn", "flash", "flash3", "flash2", "sage"):
        name = f"attention {backend} 480p ({blocks} blocks)"
        out.append((name, lambda b=backend, n=name: row_dit(n, "480p", blocks=blocks, flops=False, calls=1,
                                                            options=RuntimeOptions(attention=b))))
    out += [
        ("block swap 40 512 b1", lambda: row_swap("block swap 40 512 b1", "512", 40,
                                                  note="official 'no persistent parameters'")),
        ("block swap 23 512 b1", lambda: row_swap("block swap 23 512 b1", "512", 23,
                                                  note="17 blocks resident ~ the official 7e9 persistent")),
        ("step cache 480p", row_step_cache),
        ("seq parallel", lambda: row_seq_parallel(blocks)),
        ("auto swap 480p b1 bf16", lambda: row_plan("480p", 1)),
        ("auto swap 480p b1 fp8", lambda: row_plan("480p", 1, "e4m3fn")),
        ("auto swap 480p b3 bf16", lambda: row_plan("480p", 3)),
        ("auto swap 720p b1 bf16", lambda: row_plan("720p", 1)),
        ("auto swap 720p b1 fp8", lambda: row_plan("720p", 1, "e4m3fn")),
        ("long video 480p 2 segments", lambda: row_generate("long video 480p 2 segments", "480p", frames=161)),
        ("dub 480p", row_dub),
    ]
    if everything:
        out += [("generate 480p tiled", lambda: row_generate("generate 480p tiled", "480p", tiled=True)),
                ("generate 720p", lambda: row_generate("generate 720p", "720p")),
                ("generate 720p tiled", lambda: row_generate("generate 720p tiled", "720p", tiled=True))]
    return out


def table(results: list[Row]) -> str:
    """The rows as a markdown table (docs/performance.md holds one)."""
    lines = ["| run | peak GiB | weights GiB | activations GiB | peak in | PFLOP/step counted | analytic | note |",
             "|---|---:|---:|---:|---|---:|---:|---|"]
    for r in results:
        flops = f"{r.flops:.3f}" if r.flops else ""
        analytic = f"{r.analytic:.3f}" if r.analytic else ""
        parts = "; ".join(f"{k} {v:.1f}" for k, v in r.parts.items() if k in ENCODERS) if r.parts else ""
        note = (r.note + (f" (peak while in: {parts})" if parts else "")) if r.ok else f"FAILED: {r.note}"
        lines.append(f"| {r.name} | {r.peak:.1f} | {r.weights:.1f} | {max(0.0, r.peak - r.weights):.1f} | "
                     f"{r.peak_at} | {flops} | {analytic} | {note} |")
    return "\n".join(lines)


def comfy_child(host: str, blocks: int) -> list[Row]:
    """Core's WanModel of ``host`` with FantasyTalking attached, on meta (run in the host's own venv,
    from its folder: ``comfy_host.run_from``)."""
    from comfy.cli_args import args as comfy_args

    comfy_args.cpu = True  # no CUDA here: core takes its CPU paths; the model itself lives on meta
    comfy_args.use_pytorch_cross_attention = True  # what core picks on a recent GPU (SDPA)
    import inspect

    import comfy.ldm.wan.model as core_wan
    import comfy.ops

    try:
        version = __import__("comfyui_version").__version__
    except ImportError:
        version = "unknown"
    variants = [("bf16", torch.bfloat16, {}), ("fp8 e4m3fn", torch.float8_e4m3fn, {})]
    if "scaled_fp8" in inspect.signature(comfy.ops.pick_operations).parameters:
        variants.append(("fp8 scaled", torch.float8_e4m3fn, {"scaled_fp8": torch.float8_e4m3fn}))
    out = []
    for name, weights, extra in variants:
        ops = comfy.ops.pick_operations(weights, torch.bfloat16, **extra)
        dit = core_wan.WanModel(model_type="i2v", dim=5120, ffn_dim=13824, num_heads=40, num_layers=blocks, in_dim=36,
                                image_model="wan2.1", device="meta", dtype=weights, operations=ops)
        cfg = WanConfig.wan21_i2v_14b().with_(num_layers=blocks)
        with META:
            audio = AudioAdapter(AudioAdapterConfig.for_wan(cfg)).to(torch.bfloat16).eval()
        att = attach_adapters(dit, audio=audio, host=f"ComfyUI {version}").apply()
        row = Row(f"ComfyUI {version} core WanModel {name} ({blocks} blocks) 480p",
                  note=f"{ops.__name__}; FantasyTalking attached")

        def run(sim: Simulation, dit=dit, audio=audio, att=att) -> None:
            grid, x, y, clip, context, features = dit_inputs(cfg, "480p", batch=1)
            x = torch.cat([x, y], dim=1).to(torch.bfloat16)  # core's model base concatenates the I2V input
            cond = audio.condition(features, FRAMES)
            options: dict = {}
            with att.conditioned(audio=cond, audio_scale=1.0), att.forward_scope(options=options):
                pred = dit(x, torch.tensor([999.0], device=META), context.to(torch.bfloat16),
                           clip_fea=clip.to(torch.bfloat16), transformer_options=options)
            if pred.shape != (1, 16, *x.shape[2:]):
                raise SimulationError(f"core's WanModel returned {tuple(pred.shape)}")
        out.append(simulate(row, run, dit=dit, audio=audio))
        att.remove()
    return out


def run_comfy(host: Path, blocks: int) -> list[Row]:
    """``comfy_child`` in the host's venv; its rows come back as JSON."""
    import subprocess

    from scripts.comfy_host import comfy_python, run_from

    done = subprocess.run(**run_from(host, comfy_python(host), "scripts.dry_run", "--comfy-child", str(host),
                                     "--blocks", str(blocks)), capture_output=True, text=True, timeout=900)
    if done.returncode != 0 or not done.stdout.strip():
        return [Row(f"ComfyUI {host.name}", ok=False, note=(done.stderr or done.stdout)[-600:])]
    return [Row(**r) for r in json.loads(done.stdout.strip().splitlines()[-1])]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--all", action="store_true", help="720p through the pipeline, every backend at 40 blocks")
    p.add_argument("--only", action="append", default=[], help="run rows whose name contains this (repeatable)")
    p.add_argument("--json", help="write the rows as JSON here")
    p.add_argument("--comfyui", action="append", default=[], type=Path,
                   help="a ComfyUI tree with its venv in .venv: also simulate core's WanModel (repeatable)")
    p.add_argument("--blocks", type=int, default=4, help="blocks of core's WanModel in the --comfyui rows (4)")
    p.add_argument("--comfy-child", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.comfy_child:
        print(json.dumps([r.__dict__ for r in comfy_child(args.comfy_child, args.blocks)]))
        return 0
    results = []
    with kernel_packages():
        for name, make in rows(args.all):
            if args.only and not any(o in name for o in args.only):
                continue
            out = make()
            results.append(out[0] if isinstance(out, tuple) else out)
            _print(results[-1])
    for host in args.comfyui:
        for row in run_comfy(host.expanduser().resolve(), args.blocks):
            results.append(row)
            _print(row)
    print(table(results))
    if args.json:
        Path(args.json).write_text(json.dumps([r.__dict__ for r in results], indent=1))
    return 0 if all(r.ok for r in results) else 1


def _print(row: Row) -> None:
    print(f"{'ok ' if row.ok else 'FAIL'} {row.name}: peak {row.peak:.1f} GiB ({row.seconds:.1f} s)"
          + ("" if row.ok else f": {row.note}"), flush=True)


if __name__ == "__main__":
    raise SystemExit(main())
