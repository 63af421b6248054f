"""The main job needs no MediaPipe, and the optional packages are optional (issue 15, items 2 and 4).

Each "without X" check runs in a fresh interpreter whose imports of X fail as if X were not
installed (conftest's `blocked_imports`): importing the pack and every module, the command line's
image + audio -> video, and the ComfyUI graph Wav2Vec/Model loaders -> Audio Encode -> Apply ->
Guider/Sampler. Each optional package, when missing, gives an error or note naming the pip command.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
OPTIONAL = ("mediapipe", "diffusers", "matplotlib", "insightface", "tensorboard", "soundfile", "skimage")


def _run(prelude: str, code: str, timeout: int = 600) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT), str(ROOT / "tests")]), OMP_NUM_THREADS="1")
    return subprocess.run([sys.executable, "-c", prelude + code], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=timeout)


def test_the_pack_and_every_module_import_without_optional_packages(blocked_imports):
    modules = sorted(f"{p.parent.name}.{p.stem}" for folder in ("fantasytalking_core", "nodes", "training", "evaluation")
                     for p in (ROOT / folder).glob("*.py") if p.stem not in ("__init__", "__main__"))
    code = (
        "import importlib, importlib.util, sys\n"
        f"spec = importlib.util.spec_from_file_location('ComfyUI-FantasyTalking', {str(ROOT / '__init__.py')!r}, "
        f"submodule_search_locations=[{str(ROOT)!r}])\n"
        "pack = importlib.util.module_from_spec(spec); sys.modules[spec.name] = pack; spec.loader.exec_module(pack)\n"
        "print(len(pack.NODE_CLASS_MAPPINGS), 'nodes')\n"
        f"for name in {modules!r}:\n"
        "    importlib.import_module(name)\n"
        f"print('loaded:', sorted(m for m in {OPTIONAL!r} if m in sys.modules))\n"
    )
    run = _run(blocked_imports(*OPTIONAL), code)
    assert run.returncode == 0, run.stderr[-3000:]
    assert "16 nodes" in run.stdout and "loaded: []" in run.stdout, run.stdout


def test_command_line_image_and_audio_to_video_without_mediapipe(blocked_imports, speech_path, tmp_path):
    out = tmp_path / "talk.mp4"
    args = ["generate", "--preset", "tiny", "--image", str(ROOT / "assets" / "portrait.png"), "--audio",
            str(speech_path), "--out", str(out), "--size", "32", "--steps", "2", "--num-frames", "9"]
    code = f"from fantasytalking_core.__main__ import main\nraise SystemExit(main({args!r}))\n"
    run = _run(blocked_imports(*OPTIONAL), code)
    assert run.returncode == 0, run.stderr[-3000:]
    from fantasytalking_core.video import probe

    info = probe(out)
    assert info["video"]["frames"] == 9 and info["audio"]["sample_rate"] == 16000


def test_comfyui_graph_runs_without_mediapipe(blocked_imports):
    """tests/test_nodes.py's graph tests (loaders, Audio Encode, Motion sliders, Apply, Guider and
    Sampler against the guidance formula) in an interpreter without mediapipe and the optional packages."""
    code = ("import pytest\n"
            "raise SystemExit(pytest.main(['tests/test_nodes.py', '-p', 'no:cacheprovider', '-q', '-rA', '-k', "
            "'graph_runs or guider_node_gives']))\n")
    run = _run(blocked_imports("mediapipe", "diffusers", "matplotlib", "insightface", "tensorboard"), code)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    passed = [line for line in run.stdout.splitlines() if line.startswith("PASSED tests/test_nodes.py::")]
    names = {line.split("::")[1].split("[")[0] for line in passed}
    assert {"test_guider_node_gives_the_sampler_node_result"} < names and any("graph_runs" in n for n in names)
    assert "SKIPPED" not in run.stdout and "FAILED" not in run.stdout, run.stdout[-2000:]


def test_each_optional_package_names_its_pip_command(monkeypatch, tmp_path):
    from fantasytalking_core.encoders import load_vae
    from training.metrics import MetricsLog

    monkeypatch.setitem(sys.modules, "diffusers", None)
    (tmp_path / "wan_2.1_vae.safetensors").write_bytes(b"x")
    with pytest.raises(ImportError, match=r'Wan VAE outside ComfyUI needs the diffusers package .*pip install '
                                          r'"diffusers>=0.33"'):
        load_vae(tmp_path / "wan_2.1_vae.safetensors")

    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)
    log = MetricsLog(tmp_path / "run", enabled=True, print_every=10, tensorboard=True)
    assert log.writer is None and 'pip install "tensorboard>=2.14"' in log.note


def test_evaluation_without_matplotlib_stops_before_the_work(monkeypatch, tmp_path, capsys):
    from evaluation.__main__ import main as evaluate_main

    monkeypatch.setitem(sys.modules, "matplotlib", None)
    assert evaluate_main(["--video", str(tmp_path / "missing.mp4"), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert 'the evaluation plots need matplotlib' in err and 'pip install "matplotlib>=3.7"' in err
    assert "--no-plots" in err and "missing.mp4" not in err  # refused up front, the video was not read yet


def test_insightface_missing_is_named_with_no_deps(monkeypatch, tmp_path):
    from fantasytalking_core.face import ArcFaceEmbedder
    from tests._media_helpers import fake_scrfd, tiny_arcface

    pack = tmp_path / "pack"
    pack.mkdir()
    tiny_arcface(pack / "glintr100.onnx")
    fake_scrfd(pack / "scrfd_10g_bnkps.onnx", np.array([200, 200, 400, 400]), np.zeros((5, 2)))
    monkeypatch.setitem(sys.modules, "insightface", None)
    monkeypatch.setitem(sys.modules, "insightface.model_zoo", None)
    with pytest.raises(RuntimeError, match=r"landmarks='scrfd' needs .* pip install --no-deps insightface"):
        ArcFaceEmbedder.from_pack(pack, landmarks="scrfd")
    emb = ArcFaceEmbedder.from_pack(pack)  # auto: MediaPipe gives the five points instead, and says how to get SCRFD
    assert emb.landmarks == "mediapipe" and "pip install --no-deps insightface" in " ".join(emb.notes)
