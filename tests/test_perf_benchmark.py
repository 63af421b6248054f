"""benchmarks/dit_step.py runs on the CPU with the tiny preset and prints the table."""

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

from fantasytalking_core.perf import TokenGrid, step_flops
from fantasytalking_core.wan import WanConfig

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "dit_step.py"


def _load(script=SCRIPT):
    spec = importlib.util.spec_from_file_location(script.stem, script)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def test_tiny_table_has_every_variant_and_the_config_flops(capsys):
    bench = _load()
    rows = bench.main(["--preset", "tiny", "--height", "64", "--width", "64", "--frames", "9", "--repeats", "1",
                       "--warmup", "0", "--cache-steps", "3",
                       "--variants", "plain,sequential,fast_rope,fp8+swap=1,cache=1e9"])
    out = capsys.readouterr().out
    assert [r["variant"] for r in rows] == ["plain", "sequential", "fast_rope", "fp8+swap=1", "cache=1e9"]
    grid = TokenGrid.for_video(WanConfig.tiny(), 64, 64, 9)
    assert all(r["tokens"] == grid.tokens == 48 for r in rows)
    window = bench.audio_window(WanConfig.tiny(), 9)
    assert all(r["flops"] == step_flops(WanConfig.tiny(), grid, 3, audio_window=window, audio_dim=64) for r in rows)
    peak = float(out.split("bf16 matmul ")[1].split(" ")[0])
    assert all(r["seconds"] > 0 and r["mfu"] == pytest.approx(r["tflops"] / peak, rel=0.01) for r in rows)
    assert rows[-1]["note"] == "2/3 calls skipped"  # step 0 runs, then the huge threshold skips
    assert "| variant | tokens | GFLOP/step | s/step | TFLOP/s | bf16 mm TFLOP/s | MFU | peak GiB |" in out
    assert "48 tokens" in out and "command: python benchmarks/dit_step.py" in out


def test_help_and_bad_variant():
    run = subprocess.run([sys.executable, str(SCRIPT), "--help"], capture_output=True, text=True, timeout=120)
    assert run.returncode == 0 and "--variants" in run.stdout and "--seq-parallel" in run.stdout
    with pytest.raises(SystemExit, match="unknown variant feature 'turbo'"):
        _load().parse_variant("fast_rope+turbo")


def test_vae_decode_benchmark_runs_tiled_and_whole(capsys):
    vae = _load(SCRIPT.with_name("vae_decode.py"))
    rows = vae.main(["--height", "32", "--width", "32", "--frames", "5", "--base-dim", "4", "--tiles", "none,16/8"])
    assert [r["variant"] for r in rows] == ["none", "16/8"] and all(r["seconds"] > 0 for r in rows)
    assert "| tiles (px) | s | peak GiB |" in capsys.readouterr().out
    with pytest.raises(SystemExit, match="bad tile variant"):
        vae.parse_tiles("16/32")
