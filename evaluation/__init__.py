"""Evaluation of talking videos: the numbers that say whether a setting or a training run helped.

Offline, on CPU, with what the pinned packages ship:
  lipsync.py   lip-sync proxy: MediaPipe mouth opening vs audio loudness / onsets, best offset
  identity.py  identity consistency: ArcFace (insightface pack) or a HOG fallback, named
  dynamics.py  subject / background dynamics: Farneback flow split by selfie segmentation
  quality.py   temporal flicker, sharpness
The paper's metrics when their weights are in the models folder (never downloaded):
  syncnet.py   Sync-C / Sync-D (syncnet_python)      inception.py  FID Inception (pytorch-fid)
  frechet.py   Fréchet distance (FID, FVD)           paper.py      FID, FVD, IDC, aesthetics
  weights.py   file names, sources, loaders
Around them: media.py (inputs), config.py (EvalConfig presets, folders), runner.py (one video),
report.py (JSON, plots), batch.py (a folder -> CSV), __main__.py (CLI).
"""

from .config import EvalConfig
from .media import EvalInput, load_input
from .runner import evaluate, write_report

__all__ = ["EvalConfig", "EvalInput", "load_input", "evaluate", "write_report"]
