"""Block swap: keep some DiT blocks in CPU memory and stream each one in just before it runs.

The weights of a swapped block live in pinned CPU memory (the "master" copy). Before block i runs,
its tensors are copied to the compute device on a side CUDA stream, started ``prefetch`` blocks
ahead so the copy overlaps the previous blocks' compute; after it ran, its parameters point back
at the master copy and the device copy is freed. Nothing is copied back: inference does not
change weights. The *last* N blocks are swapped, so the first swapped block's copy already
overlaps the resident blocks before it.

What moves is every parameter and buffer of the block, found through the block's modules:
FantasyTalking's attach shadows share their host module's parameter objects, so the shared
weights move with the block; the adapters' own per-block weights (audio ``k_proj``/``v_proj``,
identity ``k_id``/``v_id``) join through ``extra`` (see :func:`adapter_modules`). Move the
model and adapters to their device and dtype *before* setting up the swap: a later ``.to()``
would leave the CPU copies stale.

On the CPU (the tests) the same logic runs with plain copies instead of streams.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
import torch.nn as nn


def adapter_modules(adapters: Sequence[nn.Module]) -> Callable[[int], list[nn.Module]]:
    """Block i's part of each adapter, for ``extra``: ``AudioAdapter.processor(i)`` (audio
    k/v) and ``IdentityAdapter.blocks[i]`` (identity k/v); adapters without per-block
    weights (motion) contribute nothing."""

    def extra(index: int) -> list[nn.Module]:
        out = []
        for adapter in adapters:
            if hasattr(adapter, "processor"):
                out.append(adapter.processor(index))
            elif isinstance(getattr(adapter, "blocks", None), nn.ModuleList):
                out.append(adapter.blocks[index])
        return out

    return extra


class BlockSwap:
    """Stream the last ``num_swapped`` of ``blocks`` from the CPU.

    Call :meth:`before` and :meth:`after` around every block (``perf.runtime`` does).
    """

    def __init__(self, blocks: Sequence[nn.Module], num_swapped: int, device: torch.device | str,
                 prefetch: int = 1, extra: Callable[[int], list[nn.Module]] | None = None):
        n = len(blocks)
        if not 0 <= num_swapped <= n:
            raise ValueError(f"block_swap must be between 0 and the number of blocks ({n}), got {num_swapped}")
        self.device = torch.device(device)
        self.prefetch = prefetch
        self.swapped = list(range(n - num_swapped, n))
        self._cuda = self.device.type == "cuda"
        self._stream = torch.cuda.Stream(self.device) if self._cuda else None
        self._tensors: dict[int, list[torch.Tensor]] = {}  # block -> its parameters/buffers (objects kept)
        self._masters: dict[int, list[torch.Tensor]] = {}  # block -> CPU copies
        self._loaded: dict[int, tuple[list[torch.Tensor], object]] = {}  # block -> (device copies, event)
        # meta: the dry run's simulated GPU keeps its "host" copies on meta too (a tensor cannot change
        # between meta and CPU in place); perf.simulate counts them as host memory (host_tensors)
        host = self.device if self.device.type == "meta" else torch.device("cpu")
        for i in self.swapped:
            modules = [blocks[i]] + (list(extra(i)) if extra is not None else [])
            tensors = _unique_tensors(modules)
            masters = []
            for t in tensors:
                master = t.data.detach().to(host, copy=True)
                masters.append(master.pin_memory() if self._cuda else master)
                t.data = masters[-1]
            self._tensors[i], self._masters[i] = tensors, masters

    # -- the two calls around every block ------------------------------------------------------
    def before(self, index: int) -> None:
        """Make block ``index`` resident (if swapped) and start copying the next swapped blocks."""
        if index in self._tensors:
            if any(t.requires_grad for t in self._tensors[index]) and torch.is_grad_enabled():
                raise RuntimeError("block swap is for inference: run under torch.no_grad() or freeze the weights")
            copies, event = self._loaded.pop(index, None) or self._load(index)
            if self._cuda:
                current = torch.cuda.current_stream(self.device)
                current.wait_event(event)
                for c in copies:
                    c.record_stream(current)  # allocated on the copy stream, used here
            for t, c in zip(self._tensors[index], copies):
                t.data = c
        for j in self.swapped:
            if index < j <= index + self.prefetch and j not in self._loaded:
                self._loaded[j] = self._load(j)

    def after(self, index: int) -> None:
        """Point block ``index`` back at its CPU master copy (the device copy is freed)."""
        if index in self._tensors:
            for t, m in zip(self._tensors[index], self._masters[index]):
                t.data = m

    def _load(self, index: int) -> tuple[list[torch.Tensor], object]:
        masters = self._masters[index]
        if not self._cuda:
            return [m.to(self.device, copy=True) for m in masters], None
        with torch.cuda.stream(self._stream):
            copies = [m.to(self.device, non_blocking=True) for m in masters]
            event = torch.cuda.Event()
            event.record(self._stream)
        return copies, event

    # -- bookkeeping ---------------------------------------------------------------------------
    def host_tensors(self) -> list[torch.Tensor]:
        """The host copies of every swapped block's weights."""
        return [m for masters in self._masters.values() for m in masters]

    def resident(self, index: int) -> bool:
        """Whether block ``index``'s weights are on the compute device now."""
        if index not in self._tensors:
            return True
        return all(t.data_ptr() != m.data_ptr() for t, m in zip(self._tensors[index], self._masters[index]))

    def close(self) -> None:
        """Put every swapped block back on the compute device for good."""
        self._loaded.clear()
        for i in list(self._tensors):
            for t, m in zip(self._tensors[i], self._masters[i]):
                t.data = m.to(self.device)
        self._tensors.clear()
        self._masters.clear()
        self.swapped = []


def _unique_tensors(modules: list[nn.Module]) -> list[torch.Tensor]:
    seen, out = set(), []
    for module in modules:
        for t in list(module.parameters()) + list(module.buffers()):
            if id(t) not in seen:
                seen.add(id(t))
                out.append(t)
    return out
