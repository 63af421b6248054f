"""Atomic, resumable training checkpoints (torch.distributed.checkpoint, sharded like the model).

```
RUN/checkpoints/step_00001000/
  .metadata, __0_0.distcp, ...   trainable weights + AdamW state, one shard file per rank (DCP)
  rng/rank_00000.json            python, numpy, torch (and CUDA) generator states of each rank
  train_state.json               step, samples seen (the data-loader position), scheduler, world size
```

Every rank writes into `step_X.partial/`; after a barrier rank 0 adds `train_state.json` and renames
the folder to `step_X/`. A run killed at any moment therefore leaves either a complete checkpoint
or a `.partial` folder that is never read (and is removed by the next save). Only trainable
weights are saved: frozen ones come back from their source files. The checkpoint folder must be
on a filesystem every rank sees (as DCP requires), e.g. the run folder on shared storage.
"""

from __future__ import annotations

import json
import os
import random
import re
import shutil
from pathlib import Path

import numpy as np
import torch

from .distributed import DistContext

_STEP = re.compile(r"^step_(\d{8})$")


def step_dirs(root: Path) -> list[Path]:
    """Complete checkpoints under `root`, oldest first."""
    if not root.is_dir():
        return []
    found = [p for p in root.iterdir() if _STEP.match(p.name) and (p / "train_state.json").is_file()]
    return sorted(found, key=lambda p: int(_STEP.match(p.name).group(1)))


def latest(root: Path) -> Path | None:
    dirs = step_dirs(root)
    return dirs[-1] if dirs else None


def _state_dicts(model, optimizer):
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_state_dict

    return get_state_dict(model, optimizer, options=StateDictOptions(ignore_frozen_params=True))


def rng_state() -> dict:
    py = random.getstate()
    npy = np.random.get_state()
    out = {"python": [py[0], list(py[1]), py[2]],
           "numpy": [npy[0], npy[1].tolist(), int(npy[2]), int(npy[3]), float(npy[4])],
           "torch": torch.get_rng_state().tolist()}
    if torch.cuda.is_available():
        out["cuda"] = [s.tolist() for s in torch.cuda.get_rng_state_all()]
    return out


def set_rng_state(state: dict) -> None:
    py = state["python"]
    random.setstate((py[0], tuple(py[1]), py[2]))
    n = state["numpy"]
    np.random.set_state((n[0], np.array(n[1], dtype=np.uint32), n[2], n[3], n[4]))
    torch.set_rng_state(torch.tensor(state["torch"], dtype=torch.uint8))
    if "cuda" in state and torch.cuda.is_available() and len(state["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all([torch.tensor(s, dtype=torch.uint8) for s in state["cuda"]])


def _remove(path: Path) -> None:
    """Rename first, so a half-deleted folder never looks like a checkpoint; then delete."""
    doomed = path.with_name(path.name + ".deleting")
    os.replace(path, doomed)
    shutil.rmtree(doomed, ignore_errors=True)


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class Checkpointer:
    def __init__(self, root: str | Path, ctx: DistContext, keep_last: int = 3):
        self.root, self.ctx, self.keep_last = Path(root), ctx, keep_last

    def save(self, step: int, model, optimizer, scheduler, train_state: dict) -> Path:
        """Collective: every rank must call it with the same step."""
        import torch.distributed.checkpoint as dcp

        final = self.root / f"step_{step:08d}"
        partial = final.with_name(final.name + ".partial")
        if self.ctx.is_main:
            self.root.mkdir(parents=True, exist_ok=True)
            for stale in list(self.root.glob("step_*.partial")) + list(self.root.glob("step_*.deleting")):
                shutil.rmtree(stale, ignore_errors=True)  # a crashed save of ours: never complete
            (partial / "rng").mkdir(parents=True)
        self.ctx.barrier()
        msd, osd = _state_dicts(model, optimizer)
        dcp.save({"model": msd, "optim": osd}, checkpoint_id=str(partial))
        (partial / "rng" / f"rank_{self.ctx.rank:05d}.json").write_text(json.dumps(rng_state()))
        self.ctx.barrier()
        if self.ctx.is_main:
            state = dict(train_state, step=step, world_size=self.ctx.world_size, scheduler=scheduler.state_dict())
            (partial / "train_state.json").write_text(json.dumps(state, indent=1))
            _fsync_dir(partial)
            if final.exists():  # a checkpoint of the same step from an earlier attempt
                _remove(final)
            os.replace(partial, final)
            _fsync_dir(self.root)
            for old in step_dirs(self.root)[:-self.keep_last]:
                _remove(old)
        self.ctx.barrier()
        return final

    def load(self, path: Path, model, optimizer, scheduler) -> dict:
        """Restore weights, optimizer, scheduler and this rank's RNG; returns train_state.json."""
        import torch.distributed.checkpoint as dcp
        from torch.distributed.checkpoint.state_dict import StateDictOptions, set_state_dict

        state_file = path / "train_state.json"
        if not state_file.is_file():
            raise FileNotFoundError(f"{path} is not a complete checkpoint (no train_state.json); resume from "
                                    f"another one: {[p.name for p in step_dirs(path.parent)]}")
        state = json.loads(state_file.read_text())
        msd, osd = _state_dicts(model, optimizer)  # the trainable weights only
        try:  # DCP raises on any of them missing from the checkpoint
            dcp.load({"model": msd, "optim": osd}, checkpoint_id=str(path))
        except Exception as err:
            raise ValueError(f"{path} does not hold this model's trainable weights and optimizer state ({err}); "
                             "resume with the config that wrote it, or start a new run (--resume never)") from err
        # strict=False: the frozen weights are not in the checkpoint, they come from their source files
        set_state_dict(model, optimizer, model_state_dict=msd, optim_state_dict=osd,
                       options=StateDictOptions(ignore_frozen_params=True, strict=False))
        scheduler.load_state_dict(state["scheduler"])
        rng = path / "rng" / f"rank_{self.ctx.rank:05d}.json"
        if state.get("world_size") == self.ctx.world_size and rng.is_file():
            set_rng_state(json.loads(rng.read_text()))
        return state
