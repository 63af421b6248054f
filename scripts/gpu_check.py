"""One prepared GPU check of the DiT: speed, memory and exactness in one command, one table.

    python -m scripts.gpu_check                                # a lent H100/H200: about 5 min, < 8 min
    python -m scripts.gpu_check --comfyui /path/to/ComfyUI     # + the same step through core's model
    python -m scripts.gpu_check --preset tiny                  # CPU, seconds (tests/test_gpu_check.py)

Full-size Wan2.1-I2V-14B with random bf16 weights (the cost does not depend on their values), a
512x512x81 video (21,504 tokens) and FantasyTalking's frame-level audio attached; each row is one
denoising step with the three guidance passes batched, as the pipeline runs them:

- ``plain``: our DiT and audio adapter, attention ``auto``; s/step, TFLOP/s from the FLOP count of
  ``perf.flops`` (the count ``scripts/dry_run.py`` checks against PyTorch's FLOP counter on the
  full-size forward), MFU against a bf16 matmul measured in the same run, peak memory beside the
  peak the dry run predicts for the same step (``perf.memory.predict_dit``, the meta device);
- ``no adapter``: the same step without the audio adapter; the adapter overhead is plain / this;
- ``attention <name>``: every exact attention kernel installed here, then ``sage`` when present;
- ``block swap N @ 24 GB``: the process capped at 24 GiB (``set_per_process_memory_fraction``),
  N blocks streamed from pinned CPU memory, N the fewest the predicted peak needs (as
  ``block_swap="auto"`` chooses);
- ``fp8 e4m3fn_fast``: block weights in float8 with fp8 matmuls (Hopper/Ada; else dequantised);
- ``bf16 vs fp32, 4 blocks``: a 4-block slice in bf16 against the same weights in float32 (relative
  error of the output; the time embedding and head must be equal: the official float32 regions);
- ``ComfyUI core + FantasyTalking Apply`` (with ``--comfyui``): core's own WanModel from the same
  kind of random state dict, our nodes loaded as a custom node pack (FantasyTalking Model Loader,
  Apply and Guider), one Euler step through core's sampler (cond batching included).
- ``motion omega W`` (with ``--motion-files``, the real weights; docs/motion.md): the same portrait
  and speech rendered with both motion sliders at each W of ``--motion-omegas`` (0.2, 0.5, 0.8; the
  released weights: the training-free controls), and per video the pack's motion measure (omega_l,
  omega_b of the output, raw and normalised) and the lip opening (inner-lip gap / eye distance, mean
  and spread), to calibrate the sliders' ranges. Not run where this was written (no GPU, no weights).

Pieces come from ``benchmarks/dit_step.py`` (model, inputs, denoiser, timer, matmul peak). Sections
past ``--time-budget-s`` are skipped, saying so; a failing section is a row with its error, and
the exit status is 1 when any row failed. With ``--comfyui`` the check runs again from that
ComfyUI's folder, where core's modules come first as its main.py has them (scripts/comfy_host.py
``continue_from``); run it with that ComfyUI's python. From the repository root (scripts/__init__.py).
"""

from __future__ import annotations

if __name__ == "__main__" and not __package__:  # run by path: run again as `python -m <folder>.<name>` (scripts/__init__.py)
    import os, sys  # noqa: E401
    here, name = os.path.split(os.path.splitext(os.path.abspath(__file__))[0])
    os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [os.path.dirname(here), os.environ.get("PYTHONPATH")]))
    os.execv(sys.executable, [sys.executable, "-m", f"{os.path.basename(here)}.{name}", *sys.argv[1:]])

import argparse
import asyncio
import copy
import importlib
import json
import platform
import sys
import tempfile
import time
import traceback
from pathlib import Path

import torch

from benchmarks import dit_step
from fantasytalking_core.adapters import attach_adapters
from fantasytalking_core.attention import available_backends, resolve_backend
from fantasytalking_core.encoders import wav2vec_num_tokens
from fantasytalking_core.perf import RuntimeOptions, TokenGrid, configured, step_flops
from fantasytalking_core.perf.fp8 import fp8_matmul_supported
from fantasytalking_core.perf.memory import predict_dit
from fantasytalking_core.wan import WanConfig
from scripts.comfy_host import PACK_ROOT as ROOT
from scripts.comfy_host import continue_from

GiB = 2**30
PRESETS = {  # name -> (config, height, width, frames)
    "wan21_i2v_14b": (WanConfig.wan21_i2v_14b(), 512, 512, 81),
    # text 4096 and CLIP 1280 wide, as core's model detection assumes for any Wan
    "tiny": (WanConfig.tiny().with_(text_dim=4096, clip_dim=1280), 64, 64, 9),
}
SLICE_TOLERANCE = 0.05  # bf16 vs fp32 over 4 blocks: relative error of the output


class Check:
    """Collects the rows; runs each section under the time budget, turning errors into rows."""

    def __init__(self, device: torch.device, budget_s: float):
        self.device, self.budget_s, self.start, self.rows = device, budget_s, time.perf_counter(), []

    def section(self, name: str, fn) -> None:
        if time.perf_counter() - self.start > self.budget_s:
            self.rows.append({"check": name, "ok": None, "note": f"skipped: past the {self.budget_s:.0f} s budget"})
            return
        try:
            fn()
        except Exception as err:  # noqa: BLE001  (a failed section is reported, the others still run)
            self.rows.append({"check": name, "ok": False, "note": f"{type(err).__name__}: {err}".splitlines()[0][:300]})
            traceback.print_exc(file=sys.stderr)
        finally:
            if self.device.type == "cuda":
                torch.cuda.set_per_process_memory_fraction(1.0, self.device)
                torch.cuda.empty_cache()

    def reset_peak(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)

    def peak_gib(self) -> float | None:
        return torch.cuda.max_memory_allocated(self.device) / GiB if self.device.type == "cuda" else None


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--preset", choices=sorted(PRESETS), default="wan21_i2v_14b",
                   help="wan21_i2v_14b (a GPU, 512x512x81) or tiny (CPU seconds, 64x64x9)")
    p.add_argument("--device", help="cuda or cpu (default cuda when available)")
    p.add_argument("--comfyui", type=Path, help="a ComfyUI tree: also run the step through core's WanModel")
    p.add_argument("--swap-budget-gb", type=float, default=24.0, help="memory cap of the block-swap row (default 24)")
    p.add_argument("--warmup", type=int, default=1, help="untimed steps per row (default 1)")
    p.add_argument("--repeats", type=int, default=2, help="timed steps per row, median reported (default 2)")
    p.add_argument("--time-budget-s", type=float, default=420.0, help="skip sections started after this (420)")
    p.add_argument("--only", help="comma-separated sections: plain,backends,swap,fp8,slice,comfyui,motion")
    p.add_argument("--json", type=Path, help="also write the rows to this JSON file")
    m = p.add_argument_group("motion sliders (real weights; docs/motion.md)")
    m.add_argument("--motion-files", type=Path, help="JSON of the model files (pipeline.ModelPaths keys: wan, "
                                                      "fantasytalking, wav2vec, vae, text_encoder, clip_vision)")
    m.add_argument("--motion-image", type=Path, help="the portrait")
    m.add_argument("--motion-audio", type=Path, help="the speech")
    m.add_argument("--motion-omegas", type=parse_omegas, default=MOTION_OMEGAS, help="slider values (0.2,0.5,0.8)")
    m.add_argument("--motion-frames", type=int, default=33, help="frames per video, 4k+1 (33)")
    m.add_argument("--motion-steps", type=int, default=12, help="sampling steps per video (12)")
    m.add_argument("--motion-size", type=int, default=512, help="longest edge in pixels (512, the official)")
    args = p.parse_args(argv)
    sections = {"plain", "backends", "swap", "fp8", "slice", "comfyui"} | ({"motion"} if args.motion_files else set())
    only = set(args.only.split(",")) if args.only else sections
    if "motion" in only and not (args.motion_files and args.motion_image and args.motion_audio):
        p.error("the motion section needs --motion-files, --motion-image and --motion-audio (the real weights)")
    command = " ".join(sys.argv[1:] if argv is None else argv)
    if args.comfyui is not None and (not args.only or "comfyui" in args.only.split(",")):
        continue_from(args.comfyui.expanduser(), "folder_paths", "scripts.gpu_check",  # core's modules first
                      sys.argv[1:] if argv is None else argv, ("--comfyui", "--json"))
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    cfg, height, width, frames = PRESETS[args.preset]
    torch.manual_seed(0)
    check = Check(device, args.time_budget_s)
    grid = TokenGrid.for_video(cfg, height, width, frames)
    window = dit_step.audio_window(cfg, frames)
    proj_dim = 2048 if cfg.dim >= 1024 else 64
    flops = step_flops(cfg, grid, 3, audio_window=window, audio_dim=proj_dim)
    peak_bf16 = dit_step.matmul_tflops(device, torch.bfloat16)
    state = {"flops": flops, "peak_bf16": peak_bf16, "grid": grid, "frames": frames, "window": window,
             "proj_dim": proj_dim, "plan": _predict(cfg, {"grid": grid, "window": window, "proj_dim": proj_dim})}
    with torch.no_grad():
        if only & {"plain", "backends", "swap", "fp8"}:
            check.section("model", lambda: _build(check, cfg, device, frames, grid, state))
        if "model" in state:
            if "plain" in only:
                check.section("plain", lambda: _plain(check, args, state))
            if "backends" in only:
                check.section("attention backends", lambda: _backends(check, args, state))
            if "swap" in only:
                check.section(f"block swap @ {args.swap_budget_gb:g} GB", lambda: _swap(check, args, state))
            if "fp8" in only:
                check.section("fp8 e4m3fn_fast", lambda: _fp8(check, args, state))
            state.pop("model"), state.pop("audio"), state.pop("cond"), state.pop("inputs")
        if "slice" in only:
            check.section("bf16 vs fp32, 4 blocks", lambda: _slice(check, cfg, grid, device))
        if args.comfyui is not None and "comfyui" in only:
            check.section("ComfyUI core + FantasyTalking Apply", lambda: _comfyui(check, args, cfg, state))
        if "motion" in only:
            check.section("motion sliders", lambda: _motion(check, args))
    print(_report(args, command, cfg, grid, device, window, state, check.rows, time.perf_counter() - check.start))
    if args.json:
        args.json.write_text(json.dumps({"preset": args.preset, "device": _device_name(device), "flops": flops,
                                         "bf16_matmul_tflops": peak_bf16, "rows": check.rows}, indent=1, default=str))
    return 1 if any(r["ok"] is False for r in check.rows) else 0


# ----------------------------------------------------------------------------- sections


def _build(check: Check, cfg, device, frames, grid, state) -> None:
    dtype = torch.bfloat16
    state["model"] = dit_step.random_model(cfg, device, dtype)
    state["audio"], state["cond"] = dit_step.random_audio(cfg, device, dtype, frames)
    state["inputs"] = dit_step.step_inputs(cfg, grid, device)


def _predict(cfg: WanConfig, state: dict, fp8: str = "none"):
    """The dry run's memory plan of this step (meta device): batch 3, the same size and audio."""
    grid = state["grid"]
    latent = (grid.frames, grid.height * cfg.patch_size[1], grid.width * cfg.patch_size[2])
    return predict_dit(cfg, latent, batch=3, fp8=fp8, text_tokens=min(cfg.text_len, 100),
                       audio_window=state["window"], audio_dim=state["proj_dim"])


def _row(check: Check, state: dict, name: str, seconds: float, note: str = "", ok: bool = True,
         predicted: int | None = None) -> dict:
    row = {"check": name, "s_step": seconds, "tflops": state["flops"] / seconds / 1e12,
           "mfu": state["flops"] / seconds / 1e12 / state["peak_bf16"], "peak_gib": check.peak_gib(),
           "predicted_gib": None if predicted is None else predicted / GiB, "note": note, "ok": ok}
    check.rows.append(row)
    return row


def _time(check: Check, args, state: dict, forward, with_audio: bool = True) -> float:
    """One three-pass step through ``forward`` (the DiT or its Runtime), the audio on or off."""
    model, inp = state["model"], state["inputs"]
    timer = dit_step.Timer(check.device)
    check.reset_peak()
    if not with_audio:  # nothing attached: the conditions are all None
        fn = dit_step.make_denoiser(forward, attach_adapters(model), None, inp, dit_step.PASS_NAMES, None)
        return dit_step.time_step(fn, inp["x"], timer, args.warmup, args.repeats)
    with attach_adapters(model, audio=state["audio"]) as att:
        fn = dit_step.make_denoiser(forward, att, state["cond"], inp, dit_step.PASS_NAMES, None)
        return dit_step.time_step(fn, inp["x"], timer, args.warmup, args.repeats)


def _plain(check: Check, args, state: dict) -> None:
    model = state["model"]
    kernel = resolve_backend("auto", check.device)
    plain = _row(check, state, "plain (audio attached)", _time(check, args, state, model), f"attention auto -> {kernel}",
                 predicted=state["plan"].peak())
    state["plain_peak_gib"], state["plain_s"] = plain["peak_gib"], plain["s_step"]
    bare = _row(check, state, "no adapter", _time(check, args, state, model, with_audio=False))
    ratio = plain["s_step"] / bare["s_step"]
    plain["note"] += f"; adapter overhead {ratio:.3f}x the no-adapter step"
    state["adapter_overhead"] = ratio


def _backends(check: Check, args, state: dict) -> None:
    names = [b for b in available_backends() if b != "math" or check.device.type == "cpu"]
    for name in sorted(names, key=lambda b: b == "sage"):  # the exact kernels first
        try:
            with configured(state["model"], RuntimeOptions(attention=name)) as rt:
                seconds = _time(check, args, state, rt)
            _row(check, state, f"attention {name}", seconds, "8-bit Q/K (not exact)" if name == "sage" else "")
        except Exception as err:  # noqa: BLE001
            check.rows.append({"check": f"attention {name}", "ok": False, "note": f"{type(err).__name__}: {err}"[:300]})


def _swap(check: Check, args, state: dict) -> None:
    model, budget = state["model"], args.swap_budget_gb * GiB
    blocks = len(model.blocks)
    per_block = sum(p.numel() * p.element_size() for p in model.blocks[0].parameters())
    per_block += sum(p.numel() * p.element_size() for p in state["audio"].processor(0).parameters())
    if check.device.type == "cuda":
        total = torch.cuda.get_device_properties(check.device).total_memory
        swapped = max(1, state["plan"].swap_for(int(budget)) or blocks)  # as block_swap="auto" decides
    else:
        total, swapped = None, 1  # the CPU has no cap to meet: one block runs the code path
    with attach_adapters(model, audio=state["audio"]) as att:
        with configured(model, RuntimeOptions(block_swap=swapped), adapters=[state["audio"]]) as rt:
            timer = dit_step.Timer(check.device)
            if total is not None:
                torch.cuda.empty_cache()
                torch.cuda.set_per_process_memory_fraction(min(1.0, budget / total), check.device)
            check.reset_peak()
            fn = dit_step.make_denoiser(rt, att, state["cond"], state["inputs"], dit_step.PASS_NAMES, None)
            seconds = dit_step.time_step(fn, state["inputs"]["x"], timer, args.warmup, args.repeats)
    peak = check.peak_gib()
    ok = peak is None or peak <= args.swap_budget_gb
    note = f"{swapped} of {blocks} blocks streamed ({per_block / GiB:.2f} GiB each)"
    _row(check, state, f"block swap {swapped} @ {args.swap_budget_gb:g} GB", seconds, note, ok,
         predicted=state["plan"].peak(swapped))


def _fp8(check: Check, args, state: dict) -> None:
    """Last on this model: the quantisation is one-way. Configured before the adapter is attached."""
    model = state["model"]
    with configured(model, RuntimeOptions(fp8="e4m3fn_fast")) as rt:
        layer = model.blocks[0].ffn[0]
        probe = torch.zeros(16, layer.in_features, device=check.device, dtype=torch.bfloat16)
        fast = fp8_matmul_supported(probe, layer.weight)
        seconds = _time(check, args, state, rt)
    weights = sum(p.numel() * p.element_size() for p in model.parameters()) / GiB
    _row(check, state, "fp8 e4m3fn_fast", seconds,
         f"{'torch._scaled_mm fp8 matmuls' if fast else 'dequantised (no sm >= 8.9 here)'}; weights {weights:.1f} GiB",
         predicted=_predict(model.cfg, state, "e4m3fn_fast").peak())


def _slice(check: Check, cfg: WanConfig, grid: TokenGrid, device: torch.device) -> None:
    """bf16 against float32 on the same (bf16-valued) weights: what bf16 compute costs in exactness."""
    tf32 = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    try:
        m16 = dit_step.random_model(cfg.with_(num_layers=4), device, torch.bfloat16)
        m32 = copy.deepcopy(m16).float()
        inp = dit_step.step_inputs(cfg, grid, device)
        t = torch.tensor([700.0], device=device)
        check.reset_peak()
        out16 = m16(inp["x"], t, inp["pos"], inp["clip_fea"], inp["y"])
        out32 = m32(inp["x"], t, inp["pos"], inp["clip_fea"], inp["y"])
        err = float((out16.double() - out32.double()).norm() / out32.double().norm())
        regions = all(torch.equal(a, b) for a, b in zip(m16.embed_time(t), m32.embed_time(t)))
        h = torch.randn(1, 64, cfg.dim, device=device)
        regions = regions and torch.equal(m16.head(h, m16.embed_time(t)[0]), m32.head(h, m32.embed_time(t)[0]))
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = tf32
    check.rows.append({"check": "bf16 vs fp32, 4 blocks", "rel_err": err, "peak_gib": check.peak_gib(),
                       "ok": err < SLICE_TOLERANCE and regions,
                       "note": f"relative error {err:.2e} (< {SLICE_TOLERANCE:g}); time embedding and head "
                               f"{'equal to float32' if regions else 'NOT equal to float32'}"})


def _comfyui(check: Check, args, cfg: WanConfig, state: dict) -> None:
    """The same step through ComfyUI core's WanModel with FantasyTalking Apply and Guider."""
    root = args.comfyui.expanduser().resolve()
    if not (root / "comfy" / "ldm" / "wan" / "model.py").is_file():
        raise FileNotFoundError(f"{root} is not a ComfyUI tree (no comfy/ldm/wan/model.py)")
    sys.argv = [sys.argv[0]] + (["--cpu"] if check.device.type == "cpu" else [])  # core reads its command line
    import comfy.options  # found first: main() runs this from the ComfyUI folder

    comfy.options.enable_args_parsing()
    import comfy.clip_vision
    import comfy.model_management
    import comfy.samplers
    import comfy.sd
    import folder_paths
    import nodes as core_nodes  # ComfyUI's nodes.py

    asyncio.run(core_nodes.load_custom_node(str(ROOT)))  # this pack, as the server loads it
    node = core_nodes.NODE_CLASS_MAPPINGS
    from safetensors.torch import save_file

    # the pack's own node values, as the server loaded them (not ComfyUI's top-level `nodes`)
    AudioFeatures = sys.modules[node["FantasyTalkingApply"].__module__.rpartition(".")[0] + ".contracts"].AudioFeatures

    grid, frames, device = state["grid"], state["frames"], check.device
    dtype = torch.bfloat16
    model = dit_step.random_model(cfg, device, dtype)  # the same random weights as the rows above
    sd = {k: v.to("cpu") for k, v in model.state_dict().items()}
    del model
    patcher = comfy.sd.load_diffusion_model_state_dict(sd, model_options={"dtype": dtype})
    del sd
    with tempfile.TemporaryDirectory() as tmp:  # the adapter file, read by our loader node from model_patches
        audio, _ = dit_step.random_audio(cfg, "cpu", torch.bfloat16, frames)
        save_file({k: v.contiguous() for k, v in audio.state_dict().items()}, str(Path(tmp) / "gpu_check.safetensors"))
        folder_paths.add_model_folder_path("model_patches", tmp)
        ft = node["FantasyTalkingModelLoader"]().load(model_name="gpu_check.safetensors")[0]
    n = wav2vec_num_tokens(round(frames / 23.0 * 16000))
    features = AudioFeatures(torch.randn(1, n, 768), frames, 23.0, frames / 23.0, "random")
    def applied(scale: float):
        return node["FantasyTalkingApply"]().apply(model=patcher, fantasytalking_model=ft, audio_features=features,
                                                   audio_scale=scale)[0]

    inp = dit_step.step_inputs(cfg, grid, "cpu")
    vision = comfy.clip_vision.Output()
    vision.penultimate_hidden_states = inp["clip_fea"]
    h, w = grid.height * cfg.patch_size[1], grid.width * cfg.patch_size[2]
    mask = torch.ones(1, 1, grid.frames, h, w)
    mask[:, :, :1] = 0.0
    extra = {"concat_latent_image": inp["y"][:, 4:], "concat_mask": mask, "clip_vision_output": vision}
    positive, negative = [[inp["pos"], dict(extra)]], [[inp["neg"], dict(extra)]]
    sampler = comfy.samplers.sampler_object("euler")
    sigmas = torch.tensor([0.7, 0.65])
    latent = torch.zeros(1, 16, grid.frames, h, w)

    def step(model):
        guider = node["FantasyTalkingGuider"]().get_guider(model=model, positive=positive, negative=negative,
                                                            cfg_text=5.0, cfg_audio=5.0)[0]
        return lambda: guider.sample(inp["x"], latent, sampler, sigmas, disable_pbar=True, seed=0)

    run = step(applied(1.0))
    first = run()  # loads the model onto the device, warms up
    timer = dit_step.Timer(device)
    check.reset_peak()
    times = [timer.measure(run) for _ in range(max(1, args.repeats))]
    seconds = sorted(times)[len(times) // 2]
    muted = step(applied(0.0))()  # audio_scale 0: the adapter adds nothing
    heard = not torch.equal(first, muted)
    try:
        version = importlib.import_module("comfyui_version").__version__
    except ImportError:
        version = "unknown"
    note = (f"ComfyUI {version}; one Euler step, 3 passes through core's cond batching; the audio "
            f"{'changes' if heard else 'does NOT change'} the result")
    if "plain_s" in state:
        note += f"; {seconds / state['plain_s']:.2f}x our plain step"
    _row(check, state, "ComfyUI core + FantasyTalking Apply", seconds, note, ok=heard)
    comfy.model_management.unload_all_models()


# ----------------------------------------------------------------------------- motion sliders
MOTION_OMEGAS = (0.2, 0.5, 0.8)


def parse_omegas(text: str) -> tuple[float, ...]:
    try:
        values = tuple(float(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"--motion-omegas takes numbers in [0, 1] separated by commas, got {text!r}")
    if not values or not all(0.0 <= v <= 1.0 for v in values):
        raise argparse.ArgumentTypeError(f"--motion-omegas values must lie in [0, 1], got {text!r}")
    return values


def motion_measures(frames: torch.Tensor) -> dict:
    """The pack's motion measure of a video [T, H, W, 3] (0..1) and its lip opening (inner-lip gap /
    outer-eye distance per frame, evaluation/lipsync.py): mean and standard deviation over the
    frames with a face (None without one)."""
    import numpy as np

    from evaluation.lipsync import mouth_opening
    from fantasytalking_core.face import as_rgb_uint8_frames
    from fantasytalking_core.lipmask import face_mesh_track
    from fantasytalking_core.motion import measure_motion

    video = as_rgb_uint8_frames(frames)
    track = face_mesh_track(video, static_image_mode=True)
    m = measure_motion(video, track=track)
    opening = mouth_opening(track.landmarks[track.found]) if track.found.any() else np.zeros(0)
    opening = opening[np.isfinite(opening)]
    return {"omega_l": m.omega_l, "omega_b": m.omega_b, "raw_l": m.raw_l, "raw_b": m.raw_b,
            "lip_open_mean": float(opening.mean()) if opening.size else None,
            "lip_open_sd": float(opening.std()) if opening.size else None,
            "frames_with_face": m.frames_with_face, "notes": m.notes}


def motion_sweep(pipeline, image, audio, omegas=MOTION_OMEGAS, frames: int = 33, steps: int = 12,
                 size: int = 512, seed: int = 1111) -> list[dict]:
    """The same portrait and speech rendered with both sliders at each omega (same seed), measured."""
    from fantasytalking_core.pipeline import GenerationConfig

    rows = []
    for w in omegas:
        config = GenerationConfig(size=size, num_frames=frames, steps=steps, seed=seed, omega_l=w, omega_b=w)
        start = time.perf_counter()
        video = pipeline.generate(image, audio, config=config, progress=False).frames
        rows.append({"omega": w, "seconds": time.perf_counter() - start, **motion_measures(video)})
    return rows


def _motion(check: Check, args) -> None:
    from fantasytalking_core.pipeline import FantasyTalkingPipeline, ModelPaths, load_components

    paths = ModelPaths(**json.loads(args.motion_files.read_text()))
    pipe = FantasyTalkingPipeline(load_components(paths, device=check.device))
    fmt = lambda v: "-" if v is None else f"{v:.3g}"  # noqa: E731
    for r in motion_sweep(pipe, args.motion_image, args.motion_audio, args.motion_omegas, args.motion_frames,
                          args.motion_steps, args.motion_size):
        check.rows.append({**r, "check": f"motion omega {r['omega']:g}", "ok": True,
                           "note": f"output omega_l {fmt(r['omega_l'])} (raw {fmt(r['raw_l'])}), omega_b "
                                   f"{fmt(r['omega_b'])} (raw {fmt(r['raw_b'])}); lip opening mean "
                                   f"{fmt(r['lip_open_mean'])} sd {fmt(r['lip_open_sd'])}; {r['seconds']:.0f} s"})


# ----------------------------------------------------------------------------- report


def _device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"CPU {platform.processor() or platform.machine()}, {torch.get_num_threads()} threads"


def _report(args, command, cfg, grid, device, window, state, rows, elapsed) -> str:
    lines = [f"device: {_device_name(device)}; torch {torch.__version__}; bf16; attention backends here: "
             f"{', '.join(available_backends())}",
             f"model: {args.preset} (dim {cfg.dim}, {cfg.num_layers} blocks); video "
             f"{grid.width * 16}x{grid.height * 16}x{state['frames']} -> {grid.tokens} tokens; audio window {window}; "
             f"3 guidance passes batched; {state['flops'] / 1e12:.4g} TFLOP per step (perf.flops); "
             f"bf16 matmul {state['peak_bf16']:.3g} TFLOP/s measured in this run",
             f"command: python -m scripts.gpu_check {command}; {elapsed:.0f} s in all", "",
             "| check | s/step | TFLOP/s | MFU | peak GiB | predicted GiB | ok | note |",
             "|---|---:|---:|---:|---:|---:|---|---|"]
    for r in rows:
        num = lambda key, fmt: format(r[key], fmt) if r.get(key) is not None else "-"  # noqa: E731
        ok = {True: "yes", False: "NO", None: "skipped"}[r["ok"]]
        lines.append(f"| {r['check']} | {num('s_step', '.4g')} | {num('tflops', '.3g')} | {num('mfu', '.3f')} | "
                     f"{num('peak_gib', '.2f')} | {num('predicted_gib', '.2f')} | {ok} | {r.get('note', '')} |")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
