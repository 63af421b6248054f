"""scripts/official_parity.py against a local copy of the official code, when one is given.

Set OFFICIAL_FANTASYTALKING to a clone of Fantasy-AMAP/fantasy-talking (nothing is downloaded)."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "official_parity.py"
OFFICIAL = os.environ.get("OFFICIAL_FANTASYTALKING")


@pytest.mark.skipif(not OFFICIAL, reason="set OFFICIAL_FANTASYTALKING to a local copy of Fantasy-AMAP/fantasy-talking")
def test_parity_with_the_official_loop_at_cfg_audio_1_and_a_portrait(tmp_path):
    out = tmp_path / "parity.json"
    run = subprocess.run([sys.executable, "-m", "scripts.official_parity", "--official", OFFICIAL, "--steps", "2",
                          "--only", "cfg_audio 1,4:5", "--json", str(out)], cwd=SCRIPT.parents[1], capture_output=True,
                         text=True, timeout=600)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    data = json.loads(out.read_text())
    assert data["ok"] and [r["setting"] for r in data["rows"]] == [
        "cfg_audio 1 (three passes)", "cfg_text 1, cfg_audio 1", "4:5 portrait 80x100 -> 112x128"]
    assert data["rows"][-1]["size"] == "112x128"  # the official resize: 102 px rounded up to 112
    assert all(r["worst_pass"] < 1e-5 and r["final_latent"] < 1e-5 for r in data["rows"])
    assert all(r["pixels_equal"] for r in data["resize"]) and all(r["equal"] for r in data["prompts"])


def test_a_folder_that_is_not_the_official_code_is_refused(tmp_path):
    """Run by path from another folder (the old form: it runs itself as ``python -m scripts.official_parity``)."""
    run = subprocess.run([sys.executable, str(SCRIPT), "--official", str(tmp_path)], cwd=tmp_path, capture_output=True,
                         text=True, timeout=120)
    assert run.returncode != 0 and "not a copy of Fantasy-AMAP/fantasy-talking" in run.stderr
