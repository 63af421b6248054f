"""Videos, a prepared tiny dataset and tiny training configs for tests/test_training_*.py.

The dataset is prepared once per test session (about 10 s) and shared: every test that changes a
dataset copies it first (`copy_dataset`).
"""

from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch


_CACHE: dict[str, Path] = {}
SYNC_MIN = 0.7  # 17-frame clips of assets/speech_en_16k.wav: the dubbed video scores 0.41, in-sync ones 0.94-0.99


@pytest.fixture(autouse=False)
def one_thread():
    """The tiny models run thousands of small ops; with one intra-op thread none of them waits at an
    OpenMP barrier for a thread that a busy machine has descheduled (seconds per step, else)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def portrait(size: int = 256) -> np.ndarray:
    from _media_helpers import portrait as astronaut

    return astronaut(size)


def make_videos(root: Path, wave: torch.Tensor, which: tuple[str, ...] = ("a", "b", "dub", "still", "cat", "short")
                ) -> Path:
    """Test videos (23 fps, 256 px) from `wave` (conftest's `speech`): `a`, `b` in sync (1.6 s = 2 clips of 17 frames; `a` has a caption
    sidecar), `dub` (mouth follows other speech), `still` (mouth closed), `cat` (no face), `short`
    (0.5 s, shorter than a clip)."""
    import cv2

    from _media_helpers import cat
    from fantasytalking_core.video import write_video
    from training.synthetic import write_talking_video

    root.mkdir(parents=True, exist_ok=True)
    img, sr = portrait(256), 16000
    clip = lambda a, b: wave[int(a * sr):int(b * sr)]  # noqa: E731
    makers = {
        "a": lambda p: write_talking_video(p, img, clip(0.0, 1.6), seed=0),
        "b": lambda p: write_talking_video(p, img, clip(3.0, 4.6), seed=1),
        "dub": lambda p: write_talking_video(p, img, clip(0.0, 0.8), mouth_wave=wave[int(2.5 * sr):], seed=2),
        "still": lambda p: write_talking_video(p, img, clip(0.0, 0.8), still=True),
        "cat": lambda p: write_video(np.stack([cv2.resize(cat(), (256, 256))] * 18), p, fps=23,
                                     audio=clip(0.0, 18 / 23)[None].numpy(), sample_rate=sr),
        "short": lambda p: write_talking_video(p, img, clip(0.0, 0.5)),
    }
    for name in which:
        makers[name](root / f"{name}.mp4")
    if "a" in which:
        (root / "a.txt").write_text("A woman talks.\n")
    return root


def prepare_config():
    from training.config import PrepareConfig

    return dataclasses.replace(PrepareConfig.tiny(), sync_min_score=SYNC_MIN)


def tiny_dataset(tmp_path_factory, speech: torch.Tensor) -> tuple[Path, Path, dict]:
    """(videos folder, dataset folder, counts), made once per session from conftest's `speech`."""
    if "dataset" not in _CACHE:
        from training.featurize import Encoders
        from training.prepare import prepare_dataset

        base = tmp_path_factory.mktemp("training_data")
        videos = make_videos(base / "videos", speech)
        threads = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            counts = prepare_dataset(videos, base / "dataset", prepare_config(), Encoders.tiny(), progress=False)
        finally:
            torch.set_num_threads(threads)
        _CACHE.update(videos=videos, dataset=base / "dataset")
        _CACHE["counts"] = counts  # type: ignore[assignment]
    return _CACHE["videos"], _CACHE["dataset"], _CACHE["counts"]  # type: ignore[return-value]


def copy_dataset(src: Path, dst: Path, keep: int | None = None) -> Path:
    """A copy of a prepared dataset; `keep` clips only (the first ones of the manifest)."""
    shutil.copytree(src, dst)
    if keep is not None:
        rows = [line for line in (dst / "manifest.jsonl").read_text().splitlines() if line.strip()][:keep]
        (dst / "manifest.jsonl").write_text("".join(r + "\n" for r in rows))
    return dst


def tiny_train_config(dataset: Path, run_dir: Path, stage1: int = 3, stage2: int = 3, **changes):
    """The tiny recipe, shortened; `changes` are dotted overrides like {"optim.grad_accum": 2}."""
    from training.config import TrainConfig

    overrides = [f"data.dataset={dataset}", f"run_dir={run_dir}", "log.every=1000", "log.tensorboard=false",
                 f"stages=[{{name: s1, steps: {stage1}, audio: global}}, "
                 f"{{name: s2, steps: {stage2}, audio: frame, lip_mask_loss: true}}]"]
    overrides += [f"{k}={json.dumps(v) if not isinstance(v, str) else v}" for k, v in changes.items()]
    return TrainConfig.from_dict({"preset": "tiny"}, overrides)
