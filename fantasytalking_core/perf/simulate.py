"""Run the models on PyTorch's ``meta`` device: every operator's shape, device and dtype checks at
full size, without memory or compute; bytes alive on the device counted on the way.

``with Simulation(dit=model, audio=adapter) as sim:`` then call the models with meta tensors.
Inside it:

- **bytes on the device**: every storage on the simulated device is followed by weak reference
  from the operator that made it until it is freed (views share their storage); ``sim.peak`` is
  the most bytes alive at once, ``sim.peak_at`` the module path and operator where it happened.
  Weights already on the device when the simulation starts count from the start.
- **the failing place**: an operator that fails (a CPU tensor inside a block: "Tensor on device
  cpu is not on the expected device meta!", a bf16 x float32 matmul, a reshape of the wrong
  size; and the dtype mixes in matmuls and convolutions that the meta kernels let through but
  CUDA's refuse) raises :class:`SimulationError` naming the module path (``dit.blocks.3.cross_attn.o``)
  from a forward pre-hook stack, and the operator; so does a Python error raised in a module.
- **device -> host copies** (``.cpu()``: the decoded frames) return zeros of the right shape and
  dtype that hold no memory (a stride-0 view of one zero): values do not exist on the meta
  device, shapes do. Block swap's CPU copies of the weights are made this way, so the offloaded
  14B weights need no RAM either. They are counted in ``sim.host_copies``.
- **fused attention**: ``F.scaled_dot_product_attention`` on the meta device would take the math
  path and hold the whole ``L x L`` score matrix (500 GB at 720p); a GPU runs a fused kernel, so
  the simulation calls the memory-efficient kernel's operator instead (its meta function checks
  shapes and dtypes, FlopCounterMode counts it, its output is all it allocates).
- **reads of a device value** (``.item()``, ``bool(t)``, ``.tolist()``: a device-to-host sync on a
  GPU, a graph break under ``torch.compile``) raise :class:`SimulationError` with the module.

What it cannot see: kernel numerics, speed, allocator fragmentation and caching, CUDA-only
libraries' own checks (docs/performance.md lists them).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.multiprocessing.reductions import StorageWeakRef
from torch.overrides import TorchFunctionMode
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

aten = torch.ops.aten
_READS = {aten._local_scalar_dense.default, aten.is_nonzero.default, aten.equal.default}
# the meta kernels of these accept mixed dtypes; CUDA's refuse them ("expected mat1 and mat2 to have the same dtype")
_SAME_DTYPE = {aten.mm.default, aten.addmm.default, aten.bmm.default, aten.baddbmm.default, aten.addbmm.default,
               aten.convolution.default, aten._scaled_dot_product_efficient_attention.default}
_SWEEP_WEIGHTS_EVERY = 256  # ops between sweeps of the (many, long-lived) weight storages


class SimulationError(RuntimeError):
    """A model failed on the simulated device; the message names the module and the operator."""


@dataclass
class _Live:
    ref: StorageWeakRef
    nbytes: int


@dataclass
class Peak:
    bytes: int = 0
    at: str = ""


@dataclass
class _Stack:
    names: dict[int, str] = field(default_factory=dict)
    path: list[str] = field(default_factory=list)


class _FusedAttention(TorchFunctionMode):
    """SDPA on the simulated device as a fused kernel (see the module docstring)."""

    def __init__(self, device: torch.device):
        super().__init__()
        self.device = device

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func is not F.scaled_dot_product_attention or args[0].device != self.device:
            return func(*args, **kwargs)
        q, k, v = args[:3]
        mask = kwargs.get("attn_mask", args[3] if len(args) > 3 else None)
        bias = None
        if mask is not None:
            if mask.dtype == torch.bool:
                mask = torch.zeros(mask.shape, dtype=q.dtype, device=q.device).masked_fill(~mask, float("-inf"))
            bias = mask.expand(q.shape[0], q.shape[1], q.shape[2], k.shape[2])
        return torch.ops.aten._scaled_dot_product_efficient_attention(q, k, v, bias, False)[0]


class Simulation(TorchDispatchMode):
    """The simulated device: bytes alive, the failing module, host copies (see the module docstring).

    ``roots``: name -> module (or object with modules in ``.model``), for the module paths in
    errors and in ``peak_at``; every tensor of theirs already on ``device`` counts as resident.
    """

    def __init__(self, device: str = "meta", **roots: object):
        super().__init__()
        self.device = torch.device(device)
        self._stack = _Stack()
        self._live: dict[int, _Live] = {}  # storages made during the simulation, swept every op
        self._weights: dict[int, _Live] = {}  # storages present at the start, swept now and then
        self._host: set[int] = set()  # storages that stand for host memory (see host_memory)
        self.current = 0
        self.peak = Peak()
        self.peaks: dict[str, int] = {}  # root name -> most bytes alive while it ran
        self.host_copies = 0  # device -> host copies answered with zeros
        self.ops = 0
        self._handles: list = []
        for name, root in roots.items():
            self.add_root(name, root)

    # -- set-up ------------------------------------------------------------------------------
    def add_root(self, name: str, root: object) -> None:
        """Name ``root``'s modules and count its tensors on the device as resident."""
        module = root if isinstance(root, nn.Module) else getattr(root, "model", None)
        if not isinstance(module, nn.Module):
            return
        for sub_name, sub in module.named_modules():
            self._stack.names.setdefault(id(sub), f"{name}.{sub_name}" if sub_name else name)
        for t in list(module.parameters()) + list(module.buffers()):
            self._add(t, self._weights)

    def _add(self, t: torch.Tensor, table: dict[int, _Live]) -> None:
        if not isinstance(t, torch.Tensor) or t.device != self.device:
            return
        storage = t.untyped_storage()
        ref = StorageWeakRef(storage)
        if ref.cdata in self._live or ref.cdata in self._weights or ref.cdata in self._host:
            return
        table[ref.cdata] = _Live(ref, storage.nbytes())
        self.current += storage.nbytes()
        if self.current > self.peak.bytes:
            self.peak = Peak(self.current, self.where())
        if self._stack.path:
            root = self._stack.path[0].split(".")[0]
            self.peaks[root] = max(self.peaks.get(root, 0), self.current)

    def host_memory(self, tensors) -> None:
        """These tensors stand for host memory (block swap's copies on a simulated GPU): not counted."""
        for t in tensors:
            key = StorageWeakRef(t.untyped_storage()).cdata
            for table in (self._live, self._weights):
                if key in table:
                    self.current -= table.pop(key).nbytes
            self._host.add(key)

    def reset_peak(self) -> None:
        """Forget the peak so far (e.g. after loading): the next peak starts from what is alive now."""
        self._sweep(self._weights)
        self._sweep(self._live)
        self.peak = Peak(self.current, self.where())
        self.peaks.clear()

    def resident(self) -> int:
        """Bytes alive on the device now."""
        self._sweep(self._weights)
        self._sweep(self._live)
        return self.current

    # -- where we are ------------------------------------------------------------------------
    def where(self) -> str:
        return self._stack.path[-1] if self._stack.path else "(outside the models)"

    def _pre_hook(self, module: nn.Module, args) -> None:
        name = self._stack.names.get(id(module))
        if name is not None:
            self._stack.path.append(name)

    def _post_hook(self, module: nn.Module, args, out) -> None:
        if self._stack.names.get(id(module)) is not None and self._stack.path:
            self._stack.path.pop()

    def __enter__(self) -> "Simulation":
        self._stack.path.clear()
        self._handles = [nn.modules.module.register_module_forward_pre_hook(self._pre_hook),
                         nn.modules.module.register_module_forward_hook(self._post_hook)]
        self._attention = _FusedAttention(self.device)
        self._attention.__enter__()
        return super().__enter__()

    def __exit__(self, exc_type, exc, tb):
        for h in self._handles:
            h.remove()
        self._handles = []
        out = super().__exit__(exc_type, exc, tb)
        self._attention.__exit__(exc_type, exc, tb)
        if exc is not None and not isinstance(exc, SimulationError) and self._stack.path:
            where = self._stack.path[-1]
            self._stack.path.clear()
            raise SimulationError(f"{type(exc).__name__} in {where}: {exc}") from exc
        self._stack.path.clear()
        return out

    # -- every operator ----------------------------------------------------------------------
    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        self.ops += 1
        if func in _READS and args[0].device == self.device:
            raise SimulationError(f"a value of a device tensor is read ({func}: .item(), bool() or .tolist(), a "
                                  f"device-to-host sync on a GPU and a graph break under torch.compile) in "
                                  f"{self.where()}; decide it on the host, where the tensor is built")
        if func in _SAME_DTYPE:
            dtypes = {a.dtype for a in args if isinstance(a, torch.Tensor) and a.is_floating_point()}
            if len(dtypes) > 1:
                raise SimulationError(f"{func} failed in {self.where()}: expected its tensors to have the same dtype, "
                                      f"got {sorted(str(d) for d in dtypes)} (a GPU refuses this mix)")
        host = self._host_copy(func, args, kwargs)
        if host is not None:
            return host
        try:
            out = func(*args, **kwargs)
        except Exception as err:
            raise SimulationError(f"{func} failed in {self.where()}: {err}") from err
        self._sweep(self._live)
        if self.ops % _SWEEP_WEIGHTS_EVERY == 0:
            self._sweep(self._weights)
        for t in tree_flatten(out)[0]:
            if isinstance(t, torch.Tensor):
                self._add(t, self._live)
        return out

    def _host_copy(self, func, args, kwargs):
        """A device -> host copy: zeros of the right shape and dtype that hold one element."""
        if func is aten._to_copy.default:
            src, target = args[0], kwargs.get("device")
            if src.device == self.device and target is not None and torch.device(target).type == "cpu":
                self.host_copies += 1
                return torch.zeros((), dtype=kwargs.get("dtype") or src.dtype).expand(src.shape)
        if func is aten.copy_.default:
            dst, src = args[0], args[1]
            if src.device == self.device and dst.device.type == "cpu":
                self.host_copies += 1
                return dst.zero_()
        return None

    def _sweep(self, table: dict[int, _Live]) -> None:
        dead = [key for key, live in table.items() if live.ref.expired()]
        for key in dead:
            self.current -= table.pop(key).nbytes


def module_bytes(*modules: nn.Module) -> int:
    """Bytes of the modules' parameters and buffers (each storage once)."""
    seen, total = set(), 0
    for module in modules:
        for t in list(module.parameters()) + list(module.buffers()):
            key = StorageWeakRef(t.untyped_storage()).cdata
            if key not in seen:
                seen.add(key)
                total += t.untyped_storage().nbytes()
    return total


__all__ = ["Peak", "Simulation", "SimulationError", "module_bytes"]
