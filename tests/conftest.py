"""Where the tests find their fixtures, and the rules every test runs under.

- The speech sample is the repository's own `assets/speech_en_16k.wav` (espeak-ng, 16 kHz mono,
  6.88 s): `speech_path` gives the file, `speech` its 16 kHz mono waveform. Nothing outside the
  repository is read.
- Nothing downloads: FANTASYTALKING_OFFLINE=1 for every test (the MediaPipe first-use fetch is tested
  against a server on 127.0.0.1 that the test starts, with the variable lifted there).
- `blocked_imports` (a fixture): `blocked_imports(*names)` gives the source of a `python -c` prelude that makes importing those modules
  fail as if they were not installed (for the "runs without the optional package" tests).
"""

from __future__ import annotations

from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SPEECH_WAV = ROOT / "assets" / "speech_en_16k.wav"
PORTRAIT_PNG = ROOT / "assets" / "portrait.png"


@pytest.fixture(autouse=True)
def _offline(monkeypatch):
    monkeypatch.setenv("FANTASYTALKING_OFFLINE", "1")


@pytest.fixture(scope="session")
def speech_path() -> Path:
    """assets/speech_en_16k.wav."""
    assert SPEECH_WAV.is_file(), f"the speech sample {SPEECH_WAV} is missing from the checkout"
    return SPEECH_WAV


@pytest.fixture(scope="session")
def speech(speech_path):
    """The speech sample as float32 mono 16 kHz [T] (110092 samples)."""
    from fantasytalking_core.audio import read_audio

    return read_audio(speech_path).to_16k()


def _blocked_imports(*names: str) -> str:
    """Python source after which those modules (and their submodules) look not installed: the path
    finder does not find them, so `importlib.util.find_spec` says None and `import` raises
    ModuleNotFoundError, as on a machine without them."""
    return (
        "import sys, importlib.machinery\n"
        "class _NotInstalled(importlib.machinery.PathFinder):\n"
        f"    names = {tuple(names)!r}\n"
        "    @classmethod\n"
        "    def find_spec(cls, name, path=None, target=None):\n"
        "        if name.split('.')[0] in cls.names:\n"
        "            return None\n"
        "        return importlib.machinery.PathFinder.find_spec(name, path, target)\n"
        "sys.meta_path[:] = [_NotInstalled if f is importlib.machinery.PathFinder else f for f in sys.meta_path]\n"
    )


@pytest.fixture(scope="session")
def blocked_imports():
    """`blocked_imports("mediapipe", "cv2")` -> a prelude for `python -c` in which those modules are not installed."""
    return _blocked_imports
