"""scripts/comfyui_smoke.py and its modules: the tiny model files' layouts against independent
implementations (transformers, diffusers, Wan's official key list), the workflow graphs and output
checks, the host-matrix table, and - when COMFYUI_PATH points at one or more ComfyUI checkouts
(joined with ':') - the whole smoke run against the real servers."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from _factories import official_wan_shapes
from scripts import comfy_host
from scripts import comfy_smoke_sequences as seqs
from scripts import comfy_smoke_workflows as wfs
from scripts import comfy_tiny_models as tiny
from scripts import comfyui_smoke as smoke

ROOT = Path(__file__).resolve().parents[1]


def _shapes(model: torch.nn.Module) -> dict[str, tuple[int, ...]]:
    return {k: tuple(v.shape) for k, v in model.state_dict().items()}


def test_wan_vae_layout_converts_to_diffusers_wan21_vae():
    """Our hand-written Wan VAE key list, renamed by diffusers' own converter, is exactly the
    state dict of diffusers' AutoencoderKLWan at Wan2.1's width (what our load_vae builds)."""
    from diffusers import AutoencoderKLWan
    from diffusers.loaders.single_file_utils import convert_wan_vae_to_diffusers

    shapes = tiny.wan_vae_shapes()
    converted = convert_wan_vae_to_diffusers({k: torch.empty(v, device="meta") for k, v in shapes.items()})
    with torch.device("meta"):
        ref = AutoencoderKLWan(base_dim=96, z_dim=16)
    assert {k: tuple(v.shape) for k, v in converted.items()} == _shapes(ref)
    assert sum(int(np.prod(s)) for s in shapes.values()) == 126_892_531  # Wan2.1_VAE.pth's count


def test_clip_layouts_equal_transformers_models():
    from transformers import (CLIPTextConfig, CLIPTextModelWithProjection, CLIPVisionConfig,
                              CLIPVisionModelWithProjection)

    with torch.device("meta"):
        text = CLIPTextModelWithProjection(CLIPTextConfig(
            hidden_size=768, intermediate_size=3072, num_attention_heads=12, num_hidden_layers=12,
            projection_dim=768, max_position_embeddings=77, vocab_size=49408))
        vision = CLIPVisionModelWithProjection(CLIPVisionConfig(
            hidden_size=1280, intermediate_size=5120, num_attention_heads=16, num_hidden_layers=32,
            projection_dim=1024, image_size=224, patch_size=14))
    assert tiny.clip_l_text_shapes() == _shapes(text)
    assert tiny.clip_vision_h_shapes() == _shapes(vision)


def test_wav2vec2_layout_equals_transformers_base_with_released_weight_norm_names():
    """transformers keeps the positional conv's weight norm as a parametrization in memory; the
    released wav2vec2-base-960h file (and ours) stores weight_g / weight_v."""
    from transformers import Wav2Vec2Config, Wav2Vec2Model

    with torch.device("meta"):
        ref = _shapes(Wav2Vec2Model(Wav2Vec2Config()))
    rename = {"parametrizations.weight.original0": "weight_g", "parametrizations.weight.original1": "weight_v"}
    for old, new in rename.items():
        ref = {k.replace(old, new): v for k, v in ref.items()}
    assert tiny.wav2vec2_base_shapes() == ref


def test_wan_dit_file_has_official_keys_and_dims_core_infers(tmp_path):
    from safetensors import safe_open

    from fantasytalking_core.wan import WanConfig

    path = tiny.make_wan_dit(tmp_path / "dit.safetensors")
    with safe_open(str(path), "pt") as f:
        shapes = {k: tuple(f.get_slice(k).get_shape()) for k in f.keys()}
        meta = f.metadata()
    cfg = WanConfig.tiny().with_(text_dim=4096, clip_dim=1280)
    assert shapes == official_wan_shapes(cfg)
    assert meta["smoke"] == tiny.FORMAT_TAG
    # What ComfyUI's model_detection reads: heads = dim // 128, I2V = img_emb present and in_dim 36.
    assert shapes["head.modulation"][-1] // 128 == cfg.num_heads
    assert shapes["patch_embedding.weight"][1] == 36 and "img_emb.proj.0.bias" in shapes
    assert shapes["text_embedding.0.weight"] == (cfg.dim, 4096)  # core fixes text_dim at 4096


def test_random_state_scales():
    shapes = {"a.weight": (64, 32, 3), "a.bias": (64,), "n.weight": (64,), "r.gamma": (8, 1, 1), "c.weight_g": (1, 1, 4)}
    state = tiny.random_state(shapes, seed=0, dtype=torch.float32)
    assert torch.equal(state["a.bias"], torch.zeros(64))
    assert torch.equal(state["n.weight"], torch.ones(64)) and torch.equal(state["r.gamma"], torch.ones(8, 1, 1))
    assert torch.equal(state["c.weight_g"], torch.ones(1, 1, 4))
    assert abs(float(state["a.weight"].std()) - (1 / 96) ** 0.5) < 0.01  # fan_in 32 * 3
    again = tiny.random_state(shapes, seed=0, dtype=torch.float32)
    assert all(torch.equal(state[k], again[k]) for k in shapes)


def test_ensure_model_reuses_tagged_files_and_remakes_others(tmp_path):
    path = tiny.ensure_model("wan_dit", tmp_path)
    assert path == tmp_path / "diffusion_models" / tiny.MODEL_FILES["wan_dit"][1]
    stamp = path.stat().st_mtime_ns
    assert tiny.ensure_model("wan_dit", tmp_path).stat().st_mtime_ns == stamp
    path.write_bytes(b"not a safetensors file")
    assert tiny.ensure_model("wan_dit", tmp_path).stat().st_size > 1_000_000


def _ctx(tmp_path, **kw):
    return wfs.Context(base=tmp_path, models={k: v[1] for k, v in tiny.MODEL_FILES.items()},
                       inputs={"image": "p.png", "audio": "a.wav"}, **kw)


def _graphs(wf, ctx) -> list[dict]:
    """The API graphs a workflow posts (a prompt-order workflow: one per configuration)."""
    if wf.build is not None:
        return [wf.build(ctx)]
    if wf.name.startswith("prompt_order_"):
        loader = wf.name[len("prompt_order_"):]
        return [seqs.config_graph(ctx, loader, c, 7, "t") for c in seqs.CONFIGS]
    return []


@pytest.mark.parametrize("wf", smoke.WORKFLOWS, ids=lambda w: w.name)
def test_workflow_graphs_link_existing_outputs(tmp_path, wf):
    graphs = _graphs(wf, _ctx(tmp_path))
    assert graphs or wf.name == "host_checks"
    for graph in graphs:
        for node_id, node in graph.items():
            assert set(node) == {"class_type", "inputs"}, node_id
            for name, value in node["inputs"].items():
                if isinstance(value, list):
                    src, index = value
                    assert src in graph, f"{wf.name}: node {node_id}.{name} links missing node {src}"
                    assert isinstance(index, int) and index >= 0
    used = {m for graph in graphs for node in graph.values() for m in node["inputs"].values() if isinstance(m, str)}
    # a file inside a folder (an insightface pack) is chosen by its folder's name
    names = {tiny.MODEL_FILES[k][1].split("/")[-2] if "/" in tiny.MODEL_FILES[k][1] else tiny.MODEL_FILES[k][1]
             for k in wf.needs}
    if graphs and not wf.gguf:
        assert names <= used


def test_the_windows_workflow_follows_what_the_host_declares(tmp_path):
    old = {"WanContextWindowsManual": {"input": {"required": {k: ["INT"] for k in (
        "model", "context_length", "context_overlap", "context_schedule", "context_stride", "closed_loop", "fuse_method")}}}}
    new = {"WanContextWindowsManual": {"input": {"required": dict(old["WanContextWindowsManual"]["input"]["required"],
                                                                  retain_first_frame=["BOOLEAN"], freenoise=["BOOLEAN"])}}}
    wf = next(w for w in smoke.WORKFLOWS if w.name == "pack_context_windows")
    for info, refusal in ((old, wfs.WINDOWS_REFUSAL), (new, None)):
        ctx = _ctx(tmp_path, object_info=info)
        assert wf.expect(ctx) == refusal
        windows = [n["inputs"] for n in wf.build(ctx).values() if n["class_type"] == "WanContextWindowsManual"]
        assert len(windows) == 4 and all(set(w) <= ctx.declared("WanContextWindowsManual") for w in windows)
        assert [w.get("retain_first_frame") for w in windows] == ([None] * 4 if info is old else [False, True, False, False])
    message = ("execution failed: node 45 (FantasyTalkingSampler): RuntimeError: ComfyUI 0.3.64 cuts the video into "
               "context windows (9 latent frames) but not Wan I2V's start image (41), so no Wan I2V model runs under "
               "its context windows. FantasyTalking with context windows needs a ComfyUI released after November 2025")
    assert wfs.expected_refusal(wfs.WINDOWS_REFUSAL, message)
    assert not wfs.expected_refusal(wfs.WINDOWS_REFUSAL, "execution failed: shapes do not match")
    assert not wfs.expected_refusal(None, message)


def _fake_server(tmp_path, results: dict):
    """ctx.prompt for a host that 'computes' each configuration's latent from ``results`` and saves it."""
    from safetensors.torch import save_file

    (tmp_path / "output").mkdir(exist_ok=True)
    calls = []

    def prompt(graph: dict) -> dict:
        sampler = graph["80"]["inputs"]
        config = next(c for c in ("apply_lora", "lora_apply", "ft", "lora", "plain")
                      if {"plain": "70" not in graph and "71" not in graph, "ft": "71" in graph and "70" not in graph
                          and "72" not in graph, "lora": "70" in graph and "71" not in graph,
                          "lora_apply": "70" in graph and "71" in graph, "apply_lora": "72" in graph}[c])
        fresh = "_fresh_" in graph["7"]["inputs"]["unet_name"]
        calls.append((config, sampler["seed"], fresh))
        name = f"{len(calls)}.latent"
        save_file({"latent_tensor": results(config, sampler["seed"], fresh, len(calls))}, str(tmp_path / "output" / name))
        return {"90": {"latents": [{"filename": name, "subfolder": "", "type": "output"}]}}

    return prompt, calls


def test_prompt_order_compares_every_prompt_with_a_fresh_run_and_catches_a_stale_one(tmp_path):
    base = {c: torch.full((1, 16, 3, 6, 8), float(i)) for i, c in enumerate(("plain", "ft", "lora", "lora_apply"))}
    base["apply_lora"] = base["lora_apply"]
    wf = seqs.prompt_order("unet")
    good, calls = _fake_server(tmp_path, lambda c, seed, fresh, n: base[c] + seed)
    detail = wf.run(_ctx(tmp_path, prompt=good))
    assert detail.startswith("15 prompts in 3 orders, each bit-equal to a fresh run")
    assert len({(c, s) for c, s, fresh in calls if not fresh}) == 15  # every prompt a new computation
    assert {(c, s) for c, s, fresh in calls if fresh} == {(c, s) for c, s, fresh in calls if not fresh}
    # the case: after plain and FantasyTalking runs, a LoRA run comes out without (part of) its LoRA
    stale = lambda c, seed, fresh, n: base[c] + seed + (0.5 if (c, seed, fresh) == ("lora", 7, False) else 0)  # noqa: E731
    bad, _ = _fake_server(tmp_path, stale)
    with pytest.raises(comfy_host.SmokeFailure, match=r"lora \(seed 7\) differs from a fresh run by 0.5"):
        wf.run(_ctx(tmp_path, prompt=bad))


def test_the_table_has_a_column_per_host_and_refusals_count_as_passes(tmp_path, capsys):
    ctx = _ctx(tmp_path)
    refusal = "needs a ComfyUI released after November 2025"

    def refused(ctx):
        raise comfy_host.SmokeFailure(f"execution failed: node 1 (X): RuntimeError: ComfyUI 0.3.64 cannot: {refusal}")

    expected = dict(expect=lambda ctx: refusal)
    rows = [smoke.run_workflow(wfs.Workflow("a", run=lambda ctx: "fine"), ctx),
            smoke.run_workflow(wfs.Workflow("b", run=refused, **expected), ctx),
            smoke.run_workflow(wfs.Workflow("c", run=lambda ctx: "fine", **expected), ctx),
            smoke.run_workflow(wfs.Workflow("d", run=refused), ctx),
            smoke.run_workflow(wfs.Workflow("e", run=lambda ctx: "fine", gguf=True), ctx)]
    assert [r.ok for r in rows] == [True, True, False, False, None]
    assert rows[1].detail == f"refused as expected: RuntimeError: ComfyUI 0.3.64 cannot: {refusal}"
    assert "expected to refuse" in rows[2].detail
    smoke.print_table({"ComfyUI 0.3.64": rows, "ComfyUI 0.33.0": rows[:1]})
    out = capsys.readouterr().out
    assert "| check | ComfyUI 0.3.64 | ComfyUI 0.33.0 |" in out
    assert "| a | PASS 0.0 s | PASS 0.0 s |" in out and "| b | PASS 0.0 s | - |" in out
    assert "| e | SKIP 0.0 s | - |" in out and "e [ComfyUI 0.3.64]: skipped: needs --gguf" in out
    assert out.rstrip().endswith("3 passed, 2 failed, 1 skipped")


def test_fresh_model_names_are_links_to_the_same_file(tmp_path):
    src = tmp_path / "cache" / "dit.safetensors"
    src.parent.mkdir()
    src.write_bytes(b"x")
    smoke.link_models(tmp_path / "base", {"wan_dit": src})
    folder = tmp_path / "base" / "models" / "diffusion_models"
    names = sorted(p.name for p in folder.iterdir())
    want = sorted([tiny.MODEL_FILES["wan_dit"][1]] + [seqs.suffixed(tiny.MODEL_FILES["wan_dit"][1], s)
                                                       for s in seqs.fresh_suffixes()])
    assert names == want and len(names) == 16
    assert all((folder / n).resolve() == src.resolve() for n in names)


def test_check_video_reads_frames_fps_and_audio(tmp_path):
    from fantasytalking_core.video import write_video

    (tmp_path / "output").mkdir()
    frames = np.random.default_rng(0).integers(0, 255, (9, 48, 64, 3), dtype=np.uint8)
    audio = np.sin(np.arange(16000) / 16000 * 2 * np.pi * 220).astype(np.float32)
    path = write_video(frames, tmp_path / "output" / "v.mp4", fps=23, audio=audio, sample_rate=16000)
    outputs = {"12": {"images": [{"filename": "v.mp4", "subfolder": "", "type": "output"}], "animated": [True]}}
    (found,) = wfs.saved_files(_ctx(tmp_path), outputs, "12")
    detail = wfs.check_video(found, frames=9, fps=23, width=64, height=48, audio=True)
    assert detail.startswith("v.mp4: 9 frames 64x48 @ 23 fps, audio 0.")
    with pytest.raises(comfy_host.SmokeFailure, match="frames is 9, expected 13"):
        wfs.check_video(found, frames=13, fps=23, width=64, height=48, audio=True)
    with pytest.raises(comfy_host.SmokeFailure, match="fps is 23, expected 25"):
        wfs.check_video(found, frames=9, fps=25, width=64, height=48, audio=True)
    with pytest.raises(comfy_host.SmokeFailure, match="reported no output file"):
        wfs.saved_files(_ctx(tmp_path), {}, "12")


def test_cli_lists_workflows_and_needs_a_comfyui(capsys):
    assert smoke.main(["--list"]) == 0
    assert "core_wan_i2v: needs wan_dit, wan_vae, clip_l" in capsys.readouterr().out
    env_backup = os.environ.pop("COMFYUI_PATH", None)
    try:
        with pytest.raises(SystemExit):
            smoke.main([])
        assert smoke.main(["--comfyui", "/nonexistent"]) == 2
    finally:
        if env_backup is not None:
            os.environ["COMFYUI_PATH"] = env_backup


@pytest.mark.skipif(not os.environ.get("COMFYUI_PATH"), reason="set COMFYUI_PATH to ComfyUI checkouts (joined with "
                                                           "':') to run the smoke test")
def test_smoke_against_real_comfyui(tmp_path):
    """The whole script against real ComfyUIs on CPU: pack nodes served, default workflows pass on every host."""
    hosts = [p for p in os.environ["COMFYUI_PATH"].split(os.pathsep) if p]
    cmd = [sys.executable, "-m", "scripts.comfyui_smoke", *(a for h in hosts for a in ("--comfyui", h)),
           "--keep", str(tmp_path / "run")]
    r = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=3600)
    assert r.returncode == 0, r.stdout[-6000:] + r.stderr[-3000:]
    rows = {line.split(" | ")[0].strip("| "): line for line in r.stdout.splitlines() if line.startswith("| ")}
    for name in [w.name for w in smoke.WORKFLOWS if w.default and not w.gguf] + ["pack nodes in /object_info"]:
        assert rows[name].count("PASS") == len(hosts), rows.get(name)
    assert " 0 failed" in r.stdout
