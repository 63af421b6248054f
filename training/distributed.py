"""One process group whatever the launch: torchrun on many nodes, or a plain `python -m` process.

Under torchrun (RANK/WORLD_SIZE/LOCAL_RANK set) the group comes from its environment; otherwise a
single-process group is made in memory (`HashStore`), so the trainer runs the same code, FSDP
included, on one CPU. NCCL on GPUs, gloo on the CPU.
"""

from __future__ import annotations

import os
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Iterator

import torch
import torch.distributed as dist


@dataclass
class DistContext:
    rank: int
    world_size: int
    local_rank: int
    device: torch.device
    backend: str
    mesh: object  # torch.distributed.device_mesh.DeviceMesh over all ranks

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def barrier(self) -> None:
        if self.backend == "nccl":
            dist.barrier(device_ids=[self.device.index])
        else:
            dist.barrier()

    def mean(self, value: float) -> float:
        """The mean of a float over ranks (every rank gets it)."""
        t = torch.tensor([float(value)], dtype=torch.float64, device=self.device)
        dist.all_reduce(t)
        return float(t.item()) / self.world_size



def _pick_device(pref: str, local_rank: int) -> torch.device:
    """`devices.pick_device`, then the process's own GPU: cuda:LOCAL_RANK."""
    from fantasytalking_core.devices import pick_device

    if pref not in ("auto", "cpu", "cuda"):
        raise ValueError(f"device must be 'auto', 'cpu' or 'cuda', got {pref!r}")
    if pick_device(pref).type == "cuda":
        if local_rank >= torch.cuda.device_count():
            raise RuntimeError(f"LOCAL_RANK {local_rank} but only {torch.cuda.device_count()} GPUs here; launch at "
                               f"most {torch.cuda.device_count()} processes per node (--nproc_per_node)")
        return torch.device("cuda", local_rank)
    return torch.device("cpu")


def init(pref: str = "auto") -> DistContext:
    """Join (or create) the process group and a 1-D device mesh over all ranks."""
    from torch.distributed.device_mesh import init_device_mesh

    launched = "RANK" in os.environ and "WORLD_SIZE" in os.environ
    local_rank = int(os.environ.get("LOCAL_RANK", 0)) if launched else 0
    device = _pick_device(pref, local_rank)
    backend = "nccl" if device.type == "cuda" else "gloo"
    if device.type == "cuda":
        torch.cuda.set_device(device)
    if dist.is_initialized():
        raise RuntimeError("a torch.distributed process group is already initialised in this process; "
                           "run one training at a time (training.distributed.session closes its group)")
    if launched:
        dist.init_process_group(backend, device_id=device if device.type == "cuda" else None)
    else:
        dist.init_process_group(backend, store=dist.HashStore(), rank=0, world_size=1)
    world = dist.get_world_size()
    mesh = init_device_mesh(device.type, (world,))
    return DistContext(dist.get_rank(), world, local_rank, device, backend, mesh)


@contextmanager
def session(pref: str = "auto") -> Iterator[DistContext]:
    """`init`, and destroy the process group on the way out (also after an error)."""
    ctx = init(pref)
    try:
        yield ctx
        # every rank finished (rank 0 may still be writing the export) before the group goes: a gloo rank
        # that destroys its group while its peer still works can abort at exit ("terminate called ...")
        ctx.barrier()
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()
