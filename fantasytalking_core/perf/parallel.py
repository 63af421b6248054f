"""Ulysses sequence parallelism for the DiT over ``torch.distributed`` (Jacobs et al. 2023).

Every rank gets the same inputs. The latent is split by *latent frames* (rank r takes frames
``[start_r, stop_r)``, as even as possible), so each rank patch-embeds, modulates, runs the
cross-attention, the audio attention and the feed-forward on its own frames only. Self-attention
needs the whole sequence: one all-to-all turns "my tokens, all heads" into "all tokens, my heads"
(heads / world each), the attention runs, and a second all-to-all turns it back. The head's output
is gathered so every rank returns the full prediction.

Splitting by frames keeps FantasyTalking's frame-level audio exact: the audio attention of the
attach mechanism maps the captured query's tokens to latent frames by ``tokens / windows``; on a
rank holding frames ``[a, b)`` it is handed the windows ``[a, b)`` only (see
``Runtime.local_conditions``), so token -> frame stays right. Ranks may hold different numbers of
frames (21 frames on 2 ranks: 11 and 10); the all-to-all pads to the longest share and the padding
is dropped before the attention, so it never enters the softmax.

Launch with ``torchrun --nproc-per-node N ...`` and ``dist.init_process_group`` (nccl on GPUs, gloo
on CPUs); on one rank the same code runs without communication.
"""

from __future__ import annotations

import torch
import torch.distributed as dist

from ..attention import attention


class SequenceParallel:
    """The process group and the frame split; :meth:`attention` is the self-attention of a block."""

    def __init__(self, group=None):
        if not dist.is_available() or not dist.is_initialized():
            raise RuntimeError("seq_parallel needs torch.distributed initialised: launch with "
                               "`torchrun --nproc-per-node N script.py` and call "
                               "torch.distributed.init_process_group('nccl' or 'gloo') before perf.configure")
        self.group = group
        self.world = dist.get_world_size(group)
        self.rank = dist.get_rank(group)
        self._lengths: list[int] | None = None  # tokens per rank of the current forward

    # -- the split --------------------------------------------------------------------------
    def frame_split(self, frames: int) -> list[tuple[int, int]]:
        """``[(start, stop)]`` latent frames per rank, the first ``frames % world`` ranks one more."""
        if frames < self.world:
            raise ValueError(f"sequence parallel over {self.world} ranks needs at least {self.world} latent frames, "
                             f"got {frames}; use fewer ranks or more frames")
        base, extra = divmod(frames, self.world)
        bounds, start = [], 0
        for r in range(self.world):
            stop = start + base + (r < extra)
            bounds.append((start, stop))
            start = stop
        return bounds

    def begin(self, frames: int, tokens_per_frame: int) -> tuple[int, int]:
        """Set up a forward over ``frames`` latent frames; returns this rank's ``(start, stop)``."""
        bounds = self.frame_split(frames)
        self._lengths = [(b - a) * tokens_per_frame for a, b in bounds]
        return bounds[self.rank]

    # -- self-attention ---------------------------------------------------------------------
    def attention(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, backend: str = "auto") -> torch.Tensor:
        """``q, k, v [B, L_rank, N, D]`` (this rank's tokens, all heads) -> ``[B, L_rank, N, D]``."""
        if self.world == 1:
            return attention(q, k, v, backend=backend)
        lengths = self._lengths
        if lengths is None or q.shape[1] != lengths[self.rank]:
            raise RuntimeError(f"sequence-parallel attention got {q.shape[1]} tokens on rank {self.rank}; the "
                               f"forward set up {lengths}. Run the model through perf.configure's runtime.")
        b, _, n, d = q.shape
        if n % self.world:
            raise ValueError(f"{n} attention heads cannot be split over {self.world} ranks; use a world size "
                             f"that divides {n}")
        h, lmax = n // self.world, max(lengths)
        qkv = torch.stack([q.to(v.dtype), k.to(v.dtype), v])  # [3, B, L_rank, N, D]
        qkv = _pad(qkv, 2, lmax).view(3, b, lmax, self.world, h, d)
        send = qkv.permute(3, 0, 1, 2, 4, 5).contiguous()  # [world (head group), 3, B, Lmax, h, D]
        recv = torch.empty_like(send)  # [world (source rank = token share), 3, B, Lmax, h, D]
        dist.all_to_all_single(recv, send, group=self.group)
        full = torch.cat([recv[r, :, :, :length] for r, length in enumerate(lengths)], dim=2)  # [3, B, L, h, D]
        out = attention(full[0], full[1], full[2], backend=backend)  # [B, L, h, D]
        shares = [_pad(part, 1, lmax) for part in out.split(lengths, dim=1)]
        send = torch.stack(shares).contiguous()  # [world (destination rank), B, Lmax, h, D]
        recv = torch.empty_like(send)  # [world (head group), B, Lmax, h, D]
        dist.all_to_all_single(recv, send, group=self.group)
        mine = recv[:, :, : lengths[self.rank]]  # [world, B, L_rank, h, D]
        return mine.permute(1, 2, 0, 3, 4).reshape(b, lengths[self.rank], n, d).to(q.dtype)

    # -- outputs and reductions -------------------------------------------------------------
    def gather_frames(self, x: torch.Tensor, frames: int) -> torch.Tensor:
        """This rank's ``[B, C, f_rank, H, W]`` -> everyone's ``[B, C, frames, H, W]`` on every rank."""
        if self.world == 1:
            return x
        bounds = self.frame_split(frames)
        fmax = max(b - a for a, b in bounds)
        parts = [torch.empty_like(_pad(x, 2, fmax)) for _ in range(self.world)]
        dist.all_gather(parts, _pad(x, 2, fmax).contiguous(), group=self.group)
        return torch.cat([p[:, :, : b - a] for p, (a, b) in zip(parts, bounds)], dim=2)

    def all_reduce_sum(self, x: torch.Tensor) -> torch.Tensor:
        if self.world == 1:
            return x
        x = x.clone()
        dist.all_reduce(x, group=self.group)
        return x


def _pad(x: torch.Tensor, dim: int, length: int) -> torch.Tensor:
    """Zero-pad ``x`` along ``dim`` to ``length``."""
    missing = length - x.shape[dim]
    if missing == 0:
        return x
    shape = list(x.shape)
    shape[dim] = missing
    return torch.cat([x, x.new_zeros(shape)], dim=dim)
