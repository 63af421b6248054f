"""benchmarks/dit_step.py (and vae_decode.py) run on the CPU with the tiny preset and prints the table."""

import subprocess
import sys
from pathlib import Path

import pytest

from benchmarks import dit_step as bench
from fantasytalking_core.perf import TokenGrid, step_flops
from fantasytalking_core.wan import WanConfig

ROOT = Path(__file__).resolve().parents[1]


def test_tiny_table_has_every_variant_and_the_config_flops(capsys):
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
    assert "48 tokens" in out and "command: python -m benchmarks.dit_step" in out


def test_help_and_bad_variant(tmp_path):
    """The old form, run by path from another folder (it runs itself as ``python -m benchmarks.dit_step``)."""
    run = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "dit_step.py"), "--help"], cwd=tmp_path,
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 0 and "--variants" in run.stdout and "--seq-parallel" in run.stdout
    with pytest.raises(SystemExit, match="unknown variant feature 'turbo'"):
        bench.parse_variant("fast_rope+turbo")


def test_vae_decode_benchmark_runs_tiled_and_whole(capsys):
    from benchmarks import vae_decode as vae

    rows = vae.main(["--height", "32", "--width", "32", "--frames", "5", "--base-dim", "4", "--tiles", "none,16/8"])
    assert [r["variant"] for r in rows] == ["none", "16/8"] and all(r["seconds"] > 0 for r in rows)
    assert "| tiles (px) | s | peak GiB |" in capsys.readouterr().out
    with pytest.raises(SystemExit, match="bad tile variant"):
        vae.parse_tiles("16/32")
