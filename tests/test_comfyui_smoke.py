"""scripts/comfyui_smoke.py: the tiny model files' layouts against independent implementations
(transformers, diffusers, Wan's official key list), the output checks, and - when COMFYUI_PATH
points at a ComfyUI checkout - the whole smoke run against the real server."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from _factories import official_wan_shapes

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "scripts" / "comfyui_smoke.py"


def _load_script():
    spec = importlib.util.spec_from_file_location("comfyui_smoke", SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    sys.modules["comfyui_smoke"] = mod  # dataclasses look their module up here
    spec.loader.exec_module(mod)
    return mod


smoke = _load_script()


def _shapes(model: torch.nn.Module) -> dict[str, tuple[int, ...]]:
    return {k: tuple(v.shape) for k, v in model.state_dict().items()}


def test_wan_vae_layout_converts_to_diffusers_wan21_vae():
    """Our hand-written Wan VAE key list, renamed by diffusers' own converter, is exactly the
    state dict of diffusers' AutoencoderKLWan at Wan2.1's width (what our load_vae builds)."""
    from diffusers import AutoencoderKLWan
    from diffusers.loaders.single_file_utils import convert_wan_vae_to_diffusers

    shapes = smoke.wan_vae_shapes()
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
    assert smoke.clip_l_text_shapes() == _shapes(text)
    assert smoke.clip_vision_h_shapes() == _shapes(vision)


def test_wav2vec2_layout_equals_transformers_base_with_released_weight_norm_names():
    """transformers keeps the positional conv's weight norm as a parametrization in memory; the
    released wav2vec2-base-960h file (and ours) stores weight_g / weight_v."""
    from transformers import Wav2Vec2Config, Wav2Vec2Model

    with torch.device("meta"):
        ref = _shapes(Wav2Vec2Model(Wav2Vec2Config()))
    rename = {"parametrizations.weight.original0": "weight_g", "parametrizations.weight.original1": "weight_v"}
    for old, new in rename.items():
        ref = {k.replace(old, new): v for k, v in ref.items()}
    assert smoke.wav2vec2_base_shapes() == ref


def test_wan_dit_file_has_official_keys_and_dims_core_infers(tmp_path):
    from safetensors import safe_open

    from fantasytalking_core.wan import WanConfig

    path = smoke.make_wan_dit(tmp_path / "dit.safetensors")
    with safe_open(str(path), "pt") as f:
        shapes = {k: tuple(f.get_slice(k).get_shape()) for k in f.keys()}
        meta = f.metadata()
    cfg = WanConfig.tiny().with_(text_dim=4096, clip_dim=1280)
    assert shapes == official_wan_shapes(cfg)
    assert meta["smoke"] == smoke.FORMAT_TAG
    # What ComfyUI's model_detection reads: heads = dim // 128, I2V = img_emb present and in_dim 36.
    assert shapes["head.modulation"][-1] // 128 == cfg.num_heads
    assert shapes["patch_embedding.weight"][1] == 36 and "img_emb.proj.0.bias" in shapes
    assert shapes["text_embedding.0.weight"] == (cfg.dim, 4096)  # core fixes text_dim at 4096


def test_random_state_scales():
    shapes = {"a.weight": (64, 32, 3), "a.bias": (64,), "n.weight": (64,), "r.gamma": (8, 1, 1), "c.weight_g": (1, 1, 4)}
    state = smoke.random_state(shapes, seed=0, dtype=torch.float32)
    assert torch.equal(state["a.bias"], torch.zeros(64))
    assert torch.equal(state["n.weight"], torch.ones(64)) and torch.equal(state["r.gamma"], torch.ones(8, 1, 1))
    assert torch.equal(state["c.weight_g"], torch.ones(1, 1, 4))
    assert abs(float(state["a.weight"].std()) - (1 / 96) ** 0.5) < 0.01  # fan_in 32 * 3
    again = smoke.random_state(shapes, seed=0, dtype=torch.float32)
    assert all(torch.equal(state[k], again[k]) for k in shapes)


def test_ensure_model_reuses_tagged_files_and_remakes_others(tmp_path):
    path = smoke.ensure_model("wan_dit", tmp_path)
    assert path == tmp_path / "diffusion_models" / smoke.MODEL_FILES["wan_dit"][1]
    stamp = path.stat().st_mtime_ns
    assert smoke.ensure_model("wan_dit", tmp_path).stat().st_mtime_ns == stamp
    path.write_bytes(b"not a safetensors file")
    assert smoke.ensure_model("wan_dit", tmp_path).stat().st_size > 1_000_000


def _ctx(tmp_path):
    return smoke.Context(base=tmp_path, models={k: v[1] for k, v in smoke.MODEL_FILES.items()},
                         inputs={"image": "p.png", "audio": "a.wav"})


@pytest.mark.parametrize("wf", smoke.WORKFLOWS, ids=lambda w: w.name)
def test_workflow_graphs_link_existing_outputs(tmp_path, wf):
    graph = wf.build(_ctx(tmp_path))
    for node_id, node in graph.items():
        assert set(node) == {"class_type", "inputs"}, node_id
        for name, value in node["inputs"].items():
            if isinstance(value, list):
                src, index = value
                assert src in graph, f"{wf.name}: node {node_id}.{name} links missing node {src}"
                assert isinstance(index, int) and index >= 0
    used = {m for node in graph.values() for m in node["inputs"].values() if isinstance(m, str)}
    # a file inside a folder (an insightface pack) is chosen by its folder's name
    names = {smoke.MODEL_FILES[k][1].split("/")[-2] if "/" in smoke.MODEL_FILES[k][1] else smoke.MODEL_FILES[k][1]
             for k in wf.needs}
    assert names <= used


def test_check_video_reads_frames_fps_and_audio(tmp_path):
    from fantasytalking_core.video import write_video

    (tmp_path / "output").mkdir()
    frames = np.random.default_rng(0).integers(0, 255, (9, 48, 64, 3), dtype=np.uint8)
    audio = np.sin(np.arange(16000) / 16000 * 2 * np.pi * 220).astype(np.float32)
    path = write_video(frames, tmp_path / "output" / "v.mp4", fps=23, audio=audio, sample_rate=16000)
    outputs = {"12": {"images": [{"filename": "v.mp4", "subfolder": "", "type": "output"}], "animated": [True]}}
    (found,) = smoke.saved_files(_ctx(tmp_path), outputs, "12")
    detail = smoke.check_video(found, frames=9, fps=23, width=64, height=48, audio=True)
    assert detail.startswith("v.mp4: 9 frames 64x48 @ 23 fps, audio 0.")
    with pytest.raises(smoke.SmokeFailure, match="frames is 9, expected 13"):
        smoke.check_video(found, frames=13, fps=23, width=64, height=48, audio=True)
    with pytest.raises(smoke.SmokeFailure, match="fps is 23, expected 25"):
        smoke.check_video(found, frames=9, fps=25, width=64, height=48, audio=True)
    with pytest.raises(smoke.SmokeFailure, match="reported no output file"):
        smoke.saved_files(_ctx(tmp_path), {}, "12")


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


@pytest.mark.skipif(not os.environ.get("COMFYUI_PATH"), reason="set COMFYUI_PATH to a ComfyUI checkout to run the smoke test")
def test_smoke_against_real_comfyui(tmp_path):
    """The whole script against a real ComfyUI on CPU: pack nodes served, default workflows pass."""
    comfyui = Path(os.environ["COMFYUI_PATH"])
    python = smoke.comfy_python(comfyui)
    r = subprocess.run([sys.executable, str(SCRIPT), "--comfyui", str(comfyui), "--python", python,
                        "--keep", str(tmp_path / "run")], capture_output=True, text=True, timeout=1200)
    assert r.returncode == 0, r.stdout[-6000:] + r.stderr[-3000:]
    for name in [w.name for w in smoke.WORKFLOWS if w.default] + ["pack nodes in /object_info", "server start"]:
        assert any(line.split()[:1] and name in line and " PASS " in line for line in r.stdout.splitlines()), name
    assert "0 failed" in r.stdout
