"""scripts/gpu_check.py: ``--preset tiny`` runs every section on the CPU; with ``COMFYUI_PATH`` the
ComfyUI section runs in that host's venv. (The real check needs a lent H100/H200.)"""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

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
    assert "| check | s/step | TFLOP/s | MFU | peak GiB | predicted GiB | ok | note |" in text
    # the dry run's prediction of the same step (meta device) beside the measured peak
    assert plain["predicted_gib"] == pytest.approx(check.predict_dit(
        cfg, (grid.frames, h // 8, w // 8), batch=3, text_tokens=32, audio_window=check.dit_step.audio_window(cfg, frames),
        audio_dim=64).peak() / 2**30)


@pytest.mark.skipif(not os.environ.get("COMFYUI_PATH"), reason="set COMFYUI_PATH to a ComfyUI tree (with its venv)")
def test_comfyui_section_through_core_and_our_nodes():
    root = Path(os.environ["COMFYUI_PATH"]).expanduser()
    venv = root / ".venv" / ("Scripts/python.exe" if os.name == "nt" else "bin/python")
    python = os.environ.get("COMFYUI_PYTHON") or (str(venv) if venv.is_file() else sys.executable)
    run = subprocess.run([python, "-m", "scripts.gpu_check", "--preset", "tiny", "--device", "cpu", "--comfyui", str(root),
                          "--only", "comfyui", "--repeats", "1"], cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    assert "| ComfyUI core + FantasyTalking Apply |" in run.stdout and "the audio changes the result" in run.stdout


def test_motion_section_parses_its_arguments_and_refuses_without_the_real_files(capsys):
    with pytest.raises(SystemExit):
        check.main(["--preset", "tiny", "--device", "cpu", "--only", "motion"])
    assert "needs --motion-files, --motion-image and --motion-audio" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        check.main(["--preset", "tiny", "--only", "motion", "--motion-omegas", "0.2,1.5"])
    assert "must lie in [0, 1]" in capsys.readouterr().err
    assert check.parse_omegas("0.2,0.5,0.8") == check.MOTION_OMEGAS == (0.2, 0.5, 0.8)


def test_motion_sweep_renders_each_omega_and_measures_it():
    """The section's pieces on the CPU: the sweep with the untrained tiny components (noise: no face, so
    the measures say neutral and why) and the measures of a video with a real face that sways."""
    import numpy as np

    from _media_helpers import portrait, warp
    from fantasytalking_core.pipeline import FantasyTalkingPipeline, tiny_components

    speech = ROOT / "assets" / "speech_en_16k.wav"
    face = portrait(256)
    rows = check.motion_sweep(FantasyTalkingPipeline(tiny_components()), face, speech, (0.2, 0.8), frames=5,
                              steps=1, size=64)
    assert [r["omega"] for r in rows] == [0.2, 0.8] and all(r["frames_with_face"] == 0 for r in rows)
    assert all(r["lip_open_mean"] is None and r["omega_b"] == 0.5 for r in rows)
    sway = torch.from_numpy(np.stack([warp(face, 10 * p, 0) for p in (0, 1, 0, -1)])).float() / 255
    m = check.motion_measures(sway)
    assert m["frames_with_face"] == 4 and m["raw_b"] > 0 and 0 < m["lip_open_mean"] < 0.5 and m["lip_open_sd"] >= 0
