#!/usr/bin/env python3
"""Checks of the pack against core's own Python objects, run in a ComfyUI's interpreter on CPU.

    cd COMFY && PYTHONPATH=REPO .venv/bin/python -m scripts.comfy_host_checks --models DIR [--pack PACK]
    cd COMFY && PYTHONPATH=REPO .venv/bin/python -m scripts.comfy_host_checks --nodes

It runs as ComfyUI's main.py does, from the host's folder (core's modules first, this repo after
them; ``scripts.comfy_host.run_from`` gives that command) and imports the pack the way ComfyUI does,
as a package from its folder. scripts/comfyui_smoke.py runs it as its ``host_checks`` row (``DIR``
holds the tiny files it makes) and, with ``--nodes``, to list the pack's NODE_CLASS_MAPPINGS. Each
check prints ``RESULT <name>: <what it showed>``; the exit code is 1 when one fails.

- ``memory``: FantasyTalking Model Loader gives adapter layers with core's manual-cast ops under
  core's model patcher, so core loads, offloads and (on NVIDIA, dynamic VRAM) pages them; a load
  with a 1-byte budget (what ``--lowvram`` does when memory is short) leaves every weight on the
  offload device, casts it per call, and gives the same audio attention bit for bit.
- ``extra tokens``: core's own WanModel with FantasyTalking runs with in-context latents
  (``context_latents``, tokens after the video's) and the audio still acts (where core has them).
- ``multi-GPU``: core's deep clone for another device (``deepclone_multigpu``, what MultiGPU CFG
  Split and Select Model Device do) stops with the pack's message, and Apply refuses a model that
  already carries multi-GPU clones (where core has multi-GPU nodes). The clone path itself runs on
  CPU here; a second GPU to spread the passes over was not available.
"""

from __future__ import annotations

import argparse
import importlib.util
import inspect
import json
import sys
import traceback
from pathlib import Path


def load_pack(pack: Path, comfyui: Path | None = None):
    """The pack imported the way ComfyUI imports a custom node folder: a package named after it
    (here ``smoke_pack``), core's command line parsed first (``--cpu``: no GPU needed)."""
    run_here = "run this from that ComfyUI's folder: cd COMFY && PYTHONPATH=REPO python -m scripts.comfy_host_checks ..."
    sys.argv = ["main.py", "--cpu"]
    try:
        import comfy.options
    except ImportError:
        raise SystemExit(f"ComfyUI's modules are not importable here: {run_here}") from None
    where = Path(comfy.options.__file__).resolve().parents[1]
    if comfyui is not None and where != comfyui.resolve():
        raise SystemExit(f"core's modules come from {where}, not --comfyui {comfyui}: {run_here}")
    comfy.options.enable_args_parsing()
    spec = importlib.util.spec_from_file_location("smoke_pack", pack / "__init__.py", submodule_search_locations=[str(pack)])
    mod = importlib.util.module_from_spec(spec)
    sys.modules["smoke_pack"] = mod
    spec.loader.exec_module(mod)
    return mod


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--comfyui", type=Path, help="the ComfyUI this runs in (checked: run it from that folder)")
    ap.add_argument("--models", type=Path, help="the smoke run's models/ folder")
    ap.add_argument("--pack", type=Path, default=Path(__file__).resolve().parents[1])
    ap.add_argument("--nodes", action="store_true", help="only print NODES=<the pack's node names, JSON>")
    args = ap.parse_args()
    pack = load_pack(args.pack.resolve(), args.comfyui)
    if args.nodes:
        print("NODES=" + json.dumps(sorted(pack.NODE_CLASS_MAPPINGS)), flush=True)
        return 0
    if args.models is None:
        ap.error("--models DIR (the smoke run's models/ folder) is needed for the checks")

    import folder_paths
    import torch

    import comfy.model_patcher
    import comfy.sd

    for folder in ("model_patches", "diffusion_models"):
        folder_paths.add_model_folder_path(folder, str(args.models / folder), is_default=True)
    nodes = pack.NODE_CLASS_MAPPINGS
    from smoke_pack.nodes.apply import MULTI_GPU_REFUSED
    from smoke_pack.nodes.contracts import AudioFeatures

    (ft,) = nodes["FantasyTalkingModelLoader"]().load("smoke_fantasytalking.ckpt", "fp32")
    dit_file = args.models / "diffusion_models" / "smoke_wan21_i2v_tiny.safetensors"
    features = AudioFeatures(torch.randn(1, 20, 768, generator=torch.Generator().manual_seed(0)), 9, 23.0, 0.4, "test")
    failed = 0

    def check(name: str, fn) -> None:
        nonlocal failed
        try:
            print(f"RESULT {name}: {fn()}", flush=True)
        except Exception as e:  # a failed check: report it and go on with the others
            failed += 1
            print(f"RESULT {name}: FAILED {type(e).__name__}: {e}", flush=True)
            traceback.print_exc()

    def memory() -> str:
        patcher, bundle = ft.patcher, ft.patcher.model
        core_cls = getattr(comfy.model_patcher, "CoreModelPatcher", comfy.model_patcher.ModelPatcher)
        assert isinstance(patcher, core_cls), f"{type(patcher).__name__} is not core's {core_cls.__name__}"
        layers = [m for m in bundle.modules() if isinstance(m, (torch.nn.Linear, torch.nn.LayerNorm))]
        plain = [type(m).__name__ for m in layers if not getattr(m, "comfy_cast_weights", False)]
        assert layers and not plain, f"layers without core's manual cast: {plain[:3]}"
        cond = ft.audio.condition(features.features, features.num_frames)
        q = torch.randn(1, 3 * 12, ft.audio.cfg.dim)
        before = ft.audio.attend(0, q, cond, 2)
        patcher.load(torch.device("cpu"), lowvram_model_memory=1)
        low = bundle.model_lowvram
        after = ft.audio.attend(0, q, cond, 2)
        patcher.unpatch_model(torch.device("cpu"))
        assert low, "core did not take the low-VRAM path for the adapter weights"
        assert torch.equal(before, after), f"low-VRAM load changed the audio attention by {(before - after).abs().max()}"
        return (f"{len(layers)} adapter layers use core's manual-cast ops under {type(patcher).__name__}; a 1-byte "
                f"budget loads them low-VRAM (cast per call) with the same audio attention bit for bit")

    def extra_tokens() -> str:
        model = comfy.sd.load_diffusion_model(str(dit_file))
        if "context_latents" not in inspect.getsource(type(model.model.diffusion_model).forward_orig):
            return "not in this host (its Wan model has no in-context latents)"
        m, _status = nodes["FantasyTalkingApply"]().apply(model, ft, features, 1.0, "frame")
        m0, _status = nodes["FantasyTalkingApply"]().apply(model, ft, features, 0.0, "frame")
        g = torch.Generator().manual_seed(1)
        x, t = torch.randn(1, 36, 3, 6, 8, generator=g), torch.full((1,), 500.0)
        ctx, lat = torch.randn(1, 7, 4096, generator=g), torch.randn(1, 36, 2, 6, 8, generator=g)
        outs = []
        for patcher in (m, m0):
            patcher.patch_model(torch.device("cpu"))
            options = {"wrappers": {k: dict(v) for k, v in patcher.wrappers.items()}}
            with torch.no_grad():
                outs.append(patcher.model.diffusion_model(x, t, ctx, transformer_options=options, context_latents=[lat]))
            patcher.unpatch_model(torch.device("cpu"))
        diff = float((outs[0] - outs[1]).abs().max())
        assert torch.isfinite(outs[0]).all() and diff > 1e-4, f"the audio changed the output by {diff}"
        return f"core's WanModel with 2 in-context latent frames after the video's 3: runs, the audio moves it by {diff:.3f}"

    def multi_gpu() -> str:
        model = comfy.sd.load_diffusion_model(str(dit_file))
        if not hasattr(model, "deepclone_multigpu"):
            return "not in this host (no multi-GPU model copies)"
        m, _status = nodes["FantasyTalkingApply"]().apply(model, ft, features, 1.0, "frame")
        try:
            m.deepclone_multigpu(torch.device("cpu"))
            raise AssertionError("core copied the model with FantasyTalking attached without the pack's refusal")
        except RuntimeError as e:
            assert MULTI_GPU_REFUSED in str(e), f"unexpected error: {e}"
        split = model.clone()
        split.set_additional_models("multigpu", [model.clone()])
        try:
            nodes["FantasyTalkingApply"]().apply(split, ft, features, 1.0, "frame")
            raise AssertionError("Apply took a model with multi-GPU clones")
        except ValueError as e:
            assert MULTI_GPU_REFUSED in str(e), f"unexpected error: {e}"
        return ("core's deepclone_multigpu of an Applied model and Apply on a model with multi-GPU clones both stop "
                "with: " + MULTI_GPU_REFUSED.split(":")[0])

    check("memory", memory)
    check("extra tokens", extra_tokens)
    check("multi-GPU", multi_gpu)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
