"""scripts/gpu_check.py: ``--preset tiny`` runs every section on the CPU; with ``COMFYUI_PATH`` the
ComfyUI section runs in that host's venv. (The real check needs a lent H100/H200.)"""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from fantasytalking_core.perf import TokenGrid, step_flops
from scripts import gpu_check as check

ROOT = Path(__file__).resolve().parents[1]


def test_tiny_preset_runs_every_section_on_the_cpu(tmp_path, capsys):
    out = tmp_path / "rows.json"
    assert check.main(["--preset", "tiny", "--device", "cpu", "--warmup", "0", "--repeats", "1",
                       "--json", str(out)]) == 0
    text = capsys.readouterr().out
    data = json.loads(out.read_text())
    names = [r["check"] for r in data["rows"]]
    assert names == ["plain (audio attached)", "no adapter", "attention sdpa", "attention math",
                     "block swap 1 @ 24 GB", "fp8 e4m3fn_fast", "bf16 vs fp32, 4 blocks"]
    assert all(r["ok"] for r in data["rows"])
    cfg, h, w, frames = check.PRESETS["tiny"]
    grid = TokenGrid.for_video(cfg, h, w, frames)
    assert data["flops"] == step_flops(cfg, grid, 3, audio_window=check.dit_step.audio_window(cfg, frames),
                                       audio_dim=64)
    plain = data["rows"][0]
    assert plain["tflops"] == pytest.approx(data["flops"] / plain["s_step"] / 1e12)
    assert plain["mfu"] == pytest.approx(plain["tflops"] / data["bf16_matmul_tflops"])
    assert "adapter overhead" in plain["note"] and "equal to float32" in data["rows"][-1]["note"]
    assert "| check | s/step | TFLOP/s | MFU | peak GiB | ok | note |" in text


@pytest.mark.skipif(not os.environ.get("COMFYUI_PATH"), reason="set COMFYUI_PATH to a ComfyUI tree (with its venv)")
def test_comfyui_section_through_core_and_our_nodes():
    root = Path(os.environ["COMFYUI_PATH"]).expanduser()
    venv = root / ".venv" / ("Scripts/python.exe" if os.name == "nt" else "bin/python")
    python = os.environ.get("COMFYUI_PYTHON") or (str(venv) if venv.is_file() else sys.executable)
    run = subprocess.run([python, "-m", "scripts.gpu_check", "--preset", "tiny", "--device", "cpu", "--comfyui", str(root),
                          "--only", "comfyui", "--repeats", "1"], cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    assert "| ComfyUI core + FantasyTalking Apply |" in run.stdout and "the audio changes the result" in run.stdout
