"""The command line end to end: report files exist and parse, batch mode writes one CSV, and bad
input gives clear errors."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from evaluation.__main__ import main
from evaluation.report import to_jsonable
from fantasytalking_core.video import write_video
from tests._media_helpers import portrait
from tests.test_eval_synth import mouth_video, pan_video, shifted, still_video, syllables, voiced_audio

pytestmark = pytest.mark.filterwarnings("ignore:SymbolDatabase.GetPrototype:UserWarning")


@pytest.fixture(scope="module")
def media(tmp_path_factory):
    d = tmp_path_factory.mktemp("eval_media")
    env = syllables(50, seed=4)
    talk = write_video(mouth_video(shifted(env, 2)), d / "talk.mp4", fps=25, audio=voiced_audio(env), sample_rate=16000)
    still = write_video(still_video(20), d / "still.mp4", fps=25)
    pan = write_video(pan_video(12), d / "pan.mp4", fps=25)
    import cv2

    cv2.imwrite(str(d / "ref.png"), portrait(256)[..., ::-1])
    return {"dir": d, "talk": talk, "still": still, "pan": pan, "ref": d / "ref.png", "empty": d / "no_models"}


def read_png(path: Path) -> np.ndarray:
    import cv2

    img = cv2.imread(str(path))
    assert img is not None and img.ndim == 3, path
    return img


def test_one_video_writes_a_report_and_plots(media, tmp_path, capsys):
    out = tmp_path / "report"
    code = main(["--video", str(media["talk"]), "--reference", str(media["ref"]), "--out", str(out),
                 "--models", str(media["empty"])])
    assert code == 0
    report = json.loads((out / "report.json").read_text())
    m = report["metrics"]
    assert report["schema"] == "fantasytalking-eval/1" and report["video"]["frames"] == 50
    assert report["video"]["audio"]["source"] == "video stream"
    assert m["lipsync_offset_frames"] == 2 and m["lipsync_corr"] > 0.8  # AAC round trip keeps the offset
    assert m["identity_embedder"] == "hog_cv2_aligned112" and m["identity_to_reference"] > 0.95
    assert m["subject_dynamics"] > m["background_dynamics"]  # only the mouth moves
    assert m["sync_c"] is None and "syncnet_v2.model" in report["paper"]["sync"]["reason"]
    assert len(report["series"]["mouth_opening"]) == 50 and len(report["series"]["flow_subject"]) == 49
    assert read_png(out / "lipsync.png").shape == (650, 1000, 3) and read_png(out / "dynamics.png").shape == (400, 1000, 3)
    printed = capsys.readouterr().out
    assert "lipsync_offset_frames  2" in printed and "report.json" in printed


def test_a_still_video_without_audio(media, tmp_path):
    out = tmp_path / "still"
    assert main(["--video", str(media["still"]), "--out", str(out), "--paper", "none", "--no-plots"]) == 0
    report = json.loads((out / "report.json").read_text())
    assert not report["lipsync"]["available"] and "no audio stream" in report["lipsync"]["reason"]
    m = report["metrics"]
    assert m["subject_dynamics"] < 0.01 and m["background_dynamics"] < 0.01  # measured 1e-4 (H.264 noise)
    assert m["flicker_luma"] < 0.05 and m["identity_to_reference"] is None and m["identity_to_first"] > 0.95
    assert report["paper"] == {} and not (out / "lipsync.png").exists()


def test_batch_mode_writes_one_table(media, tmp_path):
    folder = tmp_path / "videos"
    folder.mkdir()
    for name in ("talk", "pan"):
        (folder / f"{name}.mp4").write_bytes(media[name].read_bytes())
    (folder / "broken.mp4").write_bytes(b"not a video")
    env = syllables(50, seed=4)  # a companion wav overrides the video's own audio
    import soundfile

    soundfile.write(str(folder / "talk.wav"), voiced_audio(shifted(env, -3)), 16000)
    out = tmp_path / "batch"
    code = main(["--videos", str(folder), "--out", str(out), "--paper", "none", "--no-plots", "--preset", "fast"])
    assert code == 1  # one video failed
    rows = list(csv.DictReader(open(out / "summary.csv")))
    assert [r["video"] for r in rows] == ["broken.mp4", "pan.mp4", "talk.mp4", "MEAN"]
    by = {r["video"]: r for r in rows}
    assert by["broken.mp4"]["error"] and not by["pan.mp4"]["error"]
    assert float(by["pan.mp4"]["background_dynamics"]) > 3 * float(by["pan.mp4"]["subject_dynamics"])
    assert int(by["talk.mp4"]["lipsync_offset_frames"]) == 5  # mouth 2 late, companion audio 3 early
    mean = (float(by["pan.mp4"]["sharpness"]) + float(by["talk.mp4"]["sharpness"])) / 2
    assert float(by["MEAN"]["sharpness"]) == pytest.approx(mean, rel=1e-5)
    summary = json.loads((out / "summary.json").read_text())
    assert len(summary["rows"]) == 4 and (out / "talk" / "report.json").is_file()


def test_bad_input_is_a_clear_error(media, tmp_path, capsys):
    assert main(["--video", str(tmp_path / "missing.mp4"), "--out", str(tmp_path / "o")]) == 2
    assert "no video file at" in capsys.readouterr().err
    assert main(["--video", str(media["talk"]), "--out", str(tmp_path / "o"), "--reference", str(tmp_path / "x.png")]) == 2
    assert "reference image not found" in capsys.readouterr().err
    assert main(["--videos", str(media["dir"]), "--audio", "a.wav", "--out", str(tmp_path / "o")]) == 2
    assert "in batch mode put <stem>.wav" in capsys.readouterr().err
    assert main(["--video", str(media["talk"]), "--out", str(tmp_path / "o"), "--paper", "fid,foo"]) == 2
    assert "unknown paper metric" in capsys.readouterr().err


def test_json_conversion_drops_nan_and_numpy_types():
    data = {"a": np.float32(1.5), "b": np.array([1, np.nan]), "c": [np.int64(3), float("inf")], "d": np.bool_(True)}
    assert to_jsonable(data) == {"a": 1.5, "b": [1.0, None], "c": [3, None], "d": True}


def test_module_runs_as_a_program():
    res = subprocess.run([sys.executable, "-m", "evaluation", "--help"], capture_output=True, text=True,
                         cwd=Path(__file__).resolve().parents[1], timeout=120)
    assert res.returncode == 0 and "--videos" in res.stdout and "--models" in res.stdout
