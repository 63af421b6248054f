"""The prepared dataset on disk: one safetensors file per training piece (`num_frames` frames cut
from a source video), per-video records, a manifest.

```
DATASET/
  dataset.json            format, version, the settings every piece shares, encoders, motion normalisation
  null_text.safetensors   the empty prompt's embedding (prompt dropout)
  clips/<clip_id>.safetensors
  records/<video_key>.json  per source video: accepted piece ids and rejected pieces with reasons
  manifest.jsonl          one line per accepted piece with its stats (rebuilt from the records)
  rejected.jsonl          one line per rejected video or piece, with the reason
```

The stored names keep the word "clip" of the first datasets (folder `clips/`, keys `clip_id` and
`clips`, format `fantasytalking-clip`), so prepared datasets stay readable; in code a training
piece is a *piece* ("clip" means CLIP). A piece file holds `latents` [16, T_lat, H/8, W/8],
`first_latent` (the I2V first-frame latent, same shape), `clip_fea` [257, clip_dim], `text`
[L, text_dim], `audio` [L_a, 768] (wav2vec2), `lip_mask` [T_lat, H/8, W/8], `face_crop` uint8 [S, S, 3], `face_embedding` [512] and
`motion_raw` [2] (raw_l, raw_b; NaN = not measured), plus its stats as JSON metadata.
Every file is written under a temporary name and renamed into place, so a crash never leaves a
half-written piece, record or manifest; temporary names are never read.
"""

from __future__ import annotations

import json
import os
import socket
from pathlib import Path
from typing import Any

import torch

DATASET_FORMAT = "fantasytalking-dataset"
PIECE_FORMAT = "fantasytalking-clip"
VERSION = 1
PIECE_TENSORS = ("latents", "first_latent", "clip_fea", "text", "audio", "lip_mask", "face_crop",
                "face_embedding", "motion_raw")
_TMP = ".tmp-"


def tmp_name(path: Path) -> Path:
    """`.name.tmp-<host>-<pid>` beside `path`: unique per process, recognisable as unfinished."""
    return path.with_name(f".{path.name}{_TMP}{socket.gethostname()}-{os.getpid()}")


def publish(tmp: Path, path: Path) -> Path:
    """Atomically move a finished temporary file into place (replacing an older version)."""
    os.replace(tmp, path)
    return path


def write_bytes_atomic(path: Path, data: bytes) -> Path:
    tmp = tmp_name(path)
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        return publish(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def write_json_atomic(path: Path, obj: Any) -> Path:
    return write_bytes_atomic(path, (json.dumps(obj, indent=1, sort_keys=True) + "\n").encode())


def write_jsonl_atomic(path: Path, rows: list[dict]) -> Path:
    return write_bytes_atomic(path, "".join(json.dumps(r, sort_keys=True) + "\n" for r in rows).encode())


def write_tensors_atomic(path: Path, tensors: dict[str, torch.Tensor], info: dict) -> Path:
    from safetensors.torch import save_file

    tmp = tmp_name(path)
    try:
        save_file({k: v.detach().cpu().contiguous() for k, v in tensors.items()}, str(tmp),
                  metadata={"format": PIECE_FORMAT, "version": str(VERSION), "info": json.dumps(info, sort_keys=True)})
        return publish(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def write_safetensors(path: Path, tensors: dict[str, torch.Tensor], metadata: dict | None = None,
                      overwrite: bool = False) -> Path:
    """Any safetensors file, atomically; an existing file is kept unless `overwrite`."""
    from safetensors.torch import save_file

    path = Path(path)
    if path.exists() and not overwrite:
        raise FileExistsError(f"{path} already exists; choose another name or pass overwrite")
    tmp = tmp_name(path)
    try:
        save_file({k: v.detach().cpu().contiguous() for k, v in tensors.items()}, str(tmp), metadata=metadata)
        return publish(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def read_piece(path: Path) -> tuple[dict[str, torch.Tensor], dict]:
    """A piece file -> (tensors, info). Errors name the file and what to do."""
    from safetensors import safe_open

    if not path.is_file():
        raise FileNotFoundError(f"piece file {path} is missing; re-run `python -m training.prepare` on this dataset "
                                "to rebuild it")
    with safe_open(str(path), framework="pt", device="cpu") as f:
        meta = f.metadata() or {}
        if meta.get("format") != PIECE_FORMAT:
            raise ValueError(f"{path} is not a FantasyTalking training piece file (format {meta.get('format')!r})")
        tensors = {k: f.get_tensor(k) for k in f.keys()}
    missing = [k for k in PIECE_TENSORS if k not in tensors]
    if missing:
        raise ValueError(f"{path} lacks {missing}; it was made by another version: prepare the dataset again")
    return tensors, json.loads(meta.get("info", "{}"))


def remove_stale_tmp(folder: Path) -> int:
    """Delete unfinished files that this host's dead processes left behind; returns how many.

    A temporary file of a process that is still running (another shard of the same preparation)
    is left alone.
    """
    host = socket.gethostname()
    removed = 0
    for p in folder.glob(f".*{_TMP}*"):
        owner = p.name.rsplit(_TMP, 1)[-1]
        h, _, pid = owner.rpartition("-")
        if h != host or not pid.isdigit() or _alive(int(pid)):
            continue
        p.unlink(missing_ok=True)
        removed += 1
    return removed


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class DatasetLayout:
    """Paths of one dataset folder."""

    def __init__(self, root: str | Path):
        self.root = Path(root).expanduser()
        self.info = self.root / "dataset.json"
        self.null_text = self.root / "null_text.safetensors"
        self.clips = self.root / "clips"
        self.records = self.root / "records"
        self.manifest = self.root / "manifest.jsonl"
        self.rejected = self.root / "rejected.jsonl"

    def piece_path(self, piece_id: str) -> Path:
        return self.clips / f"{piece_id}.safetensors"

    def record_path(self, video_key: str) -> Path:
        return self.records / f"{video_key}.json"

    def make(self) -> None:
        for d in (self.root, self.clips, self.records):
            d.mkdir(parents=True, exist_ok=True)

    def read_info(self) -> dict:
        if not self.info.is_file():
            raise FileNotFoundError(f"{self.root} is not a prepared dataset (no dataset.json); make one with "
                                    f"`python -m training.prepare --videos DIR --out {self.root}`")
        info = json.loads(self.info.read_text())
        if info.get("format") != DATASET_FORMAT or info.get("version") != VERSION:
            raise ValueError(f"{self.info}: format {info.get('format')!r} version {info.get('version')!r}; this "
                             f"trainer reads {DATASET_FORMAT!r} version {VERSION}: prepare the dataset again")
        return info

    def read_manifest(self) -> list[dict]:
        if not self.manifest.is_file():
            raise FileNotFoundError(f"{self.manifest} is missing: the preparation of {self.root} has not finished; "
                                    "re-run `python -m training.prepare` (it resumes)")
        rows = [json.loads(line) for line in self.manifest.read_text().splitlines() if line.strip()]
        return rows
