import json
import os
import pickle
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from _factories import official_ckpt_dict, tiny_audio, tiny_wan, wan_inputs
from fantasytalking_core import checkpoints as ck
from fantasytalking_core.__main__ import main as cli

ROOT = Path(__file__).resolve().parents[1]


def _state(model, dtype=None, prefix=""):
    return {prefix + k: (v.to(dtype) if dtype else v).clone().contiguous() for k, v in model.state_dict().items()}


@pytest.fixture(scope="module")
def wan():
    return tiny_wan(seed=11)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("prefix", ["", "model.diffusion_model."])
def test_wan_single_file_round_trip(tmp_path, wan, dtype, prefix):
    path = tmp_path / "wan.safetensors"
    save_file(_state(wan, dtype, prefix), str(path))
    loaded = ck.load_wan(path)
    assert loaded.cfg == wan.cfg.with_(text_len=512)  # weights do not say text_len; Wan's is 512
    for k, v in loaded.state_dict().items():
        assert v.dtype == dtype and torch.equal(v, wan.state_dict()[k].to(dtype)), k
    inputs = wan_inputs(wan.cfg)
    if dtype == torch.float32:
        # Weights are bit-equal (above); BLAS may round differently with other memory alignment.
        torch.testing.assert_close(ck.load_wan(path, config=wan.cfg)(**inputs), wan(**inputs), atol=1e-5, rtol=1e-5)


def test_wan_fp8_and_fp8_scaled(tmp_path, wan):
    fp8 = {k: v.to(torch.float8_e4m3fn) if v.dim() == 2 else v for k, v in _state(wan).items()}
    save_file(fp8, str(tmp_path / "fp8.safetensors"))
    loaded = ck.load_wan(tmp_path / "fp8.safetensors")
    w = "blocks.1.cross_attn.k_img.weight"
    assert loaded.state_dict()[w].dtype == torch.bfloat16
    assert torch.equal(loaded.state_dict()[w], fp8[w].to(torch.bfloat16))

    scaled = {"scaled_fp8": torch.zeros(0, dtype=torch.float8_e4m3fn)}
    for k, v in _state(wan).items():
        if v.dim() == 2:
            scale = v.abs().max() / 448.0
            scaled[k] = (v / scale).to(torch.float8_e4m3fn)
            scaled[k[: -len(".weight")] + ".scale_weight"] = scale.reshape(1)
        else:
            scaled[k] = v
    save_file(scaled, str(tmp_path / "scaled.safetensors"))
    info = ck.describe(tmp_path / "scaled.safetensors")
    assert info["format"] == "wan_dit" and any("fp8 scaled" in n for n in info["notes"])
    loaded = ck.load_wan(tmp_path / "scaled.safetensors", dtype=torch.float32)
    expected = scaled[w].float() * scaled[w[:-7] + ".scale_weight"]
    assert torch.equal(loaded.state_dict()[w], expected)
    rel = (loaded.state_dict()[w] - wan.state_dict()[w]).abs().max() / wan.state_dict()[w].abs().max()
    assert rel < 0.07  # e4m3 keeps ~3 mantissa bits


def test_wan_sharded_folder(tmp_path, wan):
    state = _state(wan)
    keys = sorted(state)
    halves = {"model-00001-of-00002.safetensors": keys[: len(keys) // 2], "model-00002-of-00002.safetensors": keys[len(keys) // 2:]}
    for name, ks in halves.items():
        save_file({k: state[k] for k in ks}, str(tmp_path / name))
    index = {"weight_map": {k: name for name, ks in halves.items() for k in ks}}
    (tmp_path / "diffusion_pytorch_model.safetensors.index.json").write_text(json.dumps(index))
    loaded = ck.load_wan(tmp_path)
    assert all(torch.equal(v, state[k]) for k, v in loaded.state_dict().items())


def test_wan_t2v_is_detected(tmp_path):
    t2v = tiny_wan(model_type="t2v")
    save_file(_state(t2v), str(tmp_path / "t2v.safetensors"))
    assert ck.load_wan(tmp_path / "t2v.safetensors").cfg.model_type == "t2v"


def test_wan_errors_name_file_problem_and_fix(tmp_path, wan):
    state = _state(wan)
    del state["blocks.1.ffn.2.bias"]
    save_file(state, str(tmp_path / "partial.safetensors"))
    with pytest.raises(ck.CheckpointError, match=r"partial.safetensors.*missing \['blocks.1.ffn.2.bias'\].*diffusion_models"):
        ck.load_wan(tmp_path / "partial.safetensors")
    good = tmp_path / "good.safetensors"
    save_file(_state(wan), str(good))
    truncated = tmp_path / "truncated.safetensors"
    truncated.write_bytes(good.read_bytes()[:5])
    with pytest.raises(ck.CheckpointError, match="truncated"):
        ck.load_wan(truncated)
    save_file({"condition_embedder.time_proj.weight": torch.zeros(2, 2)}, str(tmp_path / "diffusers.safetensors"))
    with pytest.raises(ck.CheckpointError, match="diffusers-format"):
        ck.load_wan(tmp_path / "diffusers.safetensors")
    flf = _state(wan)
    flf["img_emb.emb_pos"] = torch.zeros(1, 514, 64)
    save_file(flf, str(tmp_path / "flf.safetensors"))
    with pytest.raises(ck.CheckpointError, match="FLF2V"):
        ck.load_wan(tmp_path / "flf.safetensors")
    save_file({"foo.weight": torch.zeros(2)}, str(tmp_path / "other.safetensors"))
    with pytest.raises(ck.CheckpointError, match="neither a Wan2.1 DiT nor FantasyTalking.*foo.weight"):
        ck.load_wan(tmp_path / "other.safetensors")
    with pytest.raises(ck.CheckpointError, match="does not exist"):
        ck.load_wan(tmp_path / "nope.safetensors")
    with pytest.raises(ck.CheckpointError, match="not a Wan2.1 DiT"):
        path = tmp_path / "ft.ckpt"
        torch.save(official_ckpt_dict(tiny_audio(wan.cfg)), path)
        ck.load_wan(path)


def _write_all_audio_formats(tmp_path, audio):
    sd = audio.state_dict()
    paths = {"official_ckpt": tmp_path / "fantasytalking_model.ckpt", "official_st": tmp_path / "official.safetensors",
             "flat": tmp_path / "flat.safetensors", "ours": tmp_path / "ours.safetensors"}
    torch.save(official_ckpt_dict(audio), paths["official_ckpt"])
    save_file({k: v.contiguous() for k, v in sd.items()}, str(paths["official_st"]))
    flat = {}
    for k, v in sd.items():
        flat[k.replace("audio_processor.", "").replace(".processor.", ".")] = v.contiguous()
    assert "blocks.0.cross_attn.k_proj.weight" in flat
    save_file(flat, str(paths["flat"]))
    ck.save_adapters(paths["ours"], {"audio": audio}, extra={"note": "x"})
    return paths


def test_every_audio_format_loads_the_same_weights(tmp_path, wan):
    audio = tiny_audio(wan.cfg)
    paths = _write_all_audio_formats(tmp_path, audio)
    kinds = {name: ck.detect(ck.open_state(p)).kind for name, p in paths.items()}
    assert kinds == {"official_ckpt": "fantasytalking_official", "official_st": "fantasytalking_official",
                     "flat": "fantasytalking_flat", "ours": "fantasytalking_adapters"}
    for name, path in paths.items():
        loaded = ck.load_audio_adapter(path)
        assert loaded.cfg == audio.cfg, name
        for k, v in audio.state_dict().items():
            assert torch.equal(loaded.state_dict()[k], v), (name, k)
    modules, extra = ck.load_adapters(paths["ours"])
    assert set(modules) == {"audio"} and extra == {"note": "x"}


def test_full_size_official_audio_layout_is_understood():
    with torch.device("meta"):
        state = {"proj_model.proj.weight": torch.empty(2048, 768)}
        for n in range(40):
            for kv in ("k_proj", "v_proj"):
                state[f"audio_processor.blocks.{n}.cross_attn.processor.{kv}.weight"] = torch.empty(5120, 2048)
    cfg = ck.audio_config_from_state(state)
    from fantasytalking_core.wan import WanConfig

    assert cfg == ck.AudioAdapterConfig.for_wan(WanConfig.wan21_i2v_14b())
    assert (cfg.audio_dim, cfg.proj_dim, cfg.dim, cfg.num_blocks) == (768, 2048, 5120, 40)
    with torch.device("meta"):
        module = ck.AudioAdapter(cfg)
    expected = {k for k in module.state_dict()}
    assert {k for k in state} | {"proj_model.norm.weight", "proj_model.norm.bias"} == expected


class _Evil:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (Path.write_text, (Path(self.marker), "pwned"))


@pytest.mark.parametrize("writer", ["torch_save", "raw_pickle"])
def test_pickles_that_run_code_are_refused_without_running(tmp_path, writer):
    marker = tmp_path / "marker.txt"
    payload = {"proj_model": {"proj.weight": torch.zeros(2, 2)}, "audio_processor": _Evil(str(marker))}
    path = tmp_path / "fantasytalking_model.ckpt"
    if writer == "torch_save":
        torch.save(payload, path)
    else:
        with open(path, "wb") as f:
            pickle.dump(payload, f)
    with pytest.raises(ck.CheckpointError, match="refused to load.*could run code.*Nothing in it was executed"):
        ck.load_audio_adapter(path)
    assert not marker.exists()


def test_adapter_file_is_atomic_and_never_overwritten(tmp_path, wan):
    audio = tiny_audio(wan.cfg)
    path = tmp_path / "mine.safetensors"
    ck.save_adapters(path, {"audio": audio})
    before = path.read_bytes()
    with pytest.raises(FileExistsError, match="overwrite=True"):
        ck.save_adapters(path, {"audio": tiny_audio(wan.cfg, seed=9)})
    assert path.read_bytes() == before
    ck.save_adapters(path, {"audio": tiny_audio(wan.cfg, seed=9)}, overwrite=True)
    assert path.read_bytes() != before
    assert [p.name for p in tmp_path.iterdir()] == ["mine.safetensors"]
    with pytest.raises(ValueError, match="unknown adapter module"):
        ck.save_adapters(tmp_path / "x.safetensors", {"lipsync": audio})


def test_newer_adapter_files_are_refused_clearly(tmp_path, wan):
    audio = tiny_audio(wan.cfg)
    tensors = {f"audio.{k}": v.contiguous() for k, v in audio.state_dict().items()}
    meta = {"format": ck.ADAPTER_FORMAT, "format_version": "1",
            "modules": json.dumps({"audio": {"version": 99, "config": {}}}), "extra": "{}"}
    save_file(tensors, str(tmp_path / "future.safetensors"), metadata=meta)
    with pytest.raises(ck.CheckpointError, match="version 99.*update ComfyUI-FantasyTalking"):
        ck.load_adapters(tmp_path / "future.safetensors")


def test_cli_inspect_and_convert(tmp_path, wan, capsys):
    audio = tiny_audio(wan.cfg)
    ckpt = tmp_path / "fantasytalking_model.ckpt"
    torch.save(official_ckpt_dict(audio), ckpt)
    assert cli(["inspect", str(ckpt)]) == 0
    out = capsys.readouterr().out
    assert "fantasytalking_official" in out and "blocks:     2" in out and "float32" in out
    n_params = sum(v.numel() for v in audio.state_dict().values())
    assert f"{n_params:,}" in out

    for layout in ("adapters", "official"):
        target = tmp_path / f"converted_{layout}.safetensors"
        assert cli(["convert", str(ckpt), str(target), "--layout", layout]) == 0
        loaded = ck.load_audio_adapter(target)
        assert all(torch.equal(loaded.state_dict()[k], v) for k, v in audio.state_dict().items())
        assert cli(["convert", str(ckpt), str(target), "--layout", layout]) == 2
        assert "already exists" in capsys.readouterr().err

    wan_path = tmp_path / "wan.safetensors"
    save_file(_state(wan, torch.bfloat16), str(wan_path))
    result = subprocess.run([sys.executable, "-m", "fantasytalking_core", "inspect", str(wan_path), "--json"],
                            capture_output=True, text=True, cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert result.returncode == 0, result.stderr
    info = json.loads(result.stdout)
    assert info["format"] == "wan_dit" and info["blocks"] == 2 and info["dtypes"] == {"BF16": len(_state(wan))}
    assert info["parameters"] == sum(v.numel() for v in wan.state_dict().values())
    assert info["config"]["model_type"] == "i2v" and info["config"]["num_heads"] == 2
