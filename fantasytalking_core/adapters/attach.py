"""Attach FantasyTalking adapters to any DiT with Wan's module layout: ours, or ComfyUI's WanModel.

Four host modules are patched, nothing else:

- ``patch_embedding`` records the latent grid (frames, height, width) of the current forward, so
  frame-level audio is checked against the real number of latent frames;
- ``blocks.N.cross_attn.norm_q`` keeps its output: the cross-attention query, computed once by the
  host (recomputing it would cost a dim x dim matmul per block);
- ``blocks.N.cross_attn.o`` adds ``audio_scale * audio_attn(q) + id_scale * id_attn(q)`` to its
  input, i.e. to the text + image attention sum, before the output projection (Eq. 4 of the paper);
- ``time_embedding`` adds the motion-intensity embedding to its output.

Each patched module is a shallow copy of the host's own module with its class swapped to a
subclass. The copy shares the host module's parameter and buffer dicts, so state-dict keys, LoRA
key paths, fp8 weight casting and offloading stay exactly where the host expects them. The patches
are returned as ``{dotted path: module}`` for ComfyUI's ``add_object_patch``, or applied in place.

Conditions, scales and captured queries are per thread (core may run one step's conds in threads,
one per GPU). So code that re-runs blocks on another thread, e.g. activation checkpointing whose
recompute runs in autograd's device thread, must set the conditions again there with
``conditioned()`` (training/ does this).
"""

from __future__ import annotations

import copy
import functools
import threading
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Callable, Iterator

import torch
import torch.nn as nn


@dataclass
class Term:
    """One adapter's contribution: the module, its current condition and scale.

    ``scale`` is a float or a per-row tensor ``[B]`` (guidance passes batched together switch the
    adapter off for some rows with 0). A scale of exactly 0 skips the computation entirely.
    """

    module: nn.Module
    condition: Any = None
    scale: float | torch.Tensor = 1.0
    _active: bool | None = None  # cached: a tensor scale would otherwise sync the GPU in every block

    def __setattr__(self, name: str, value: Any) -> None:
        object.__setattr__(self, name, value)
        if name in ("condition", "scale"):
            object.__setattr__(self, "_active", None)

    def active(self) -> bool:
        if self._active is None:
            if self.condition is None:
                on = False
            elif isinstance(self.scale, torch.Tensor):
                on = bool((self.scale != 0).any())
            else:
                on = self.scale != 0
            object.__setattr__(self, "_active", on)
        return self._active


def _row_scale(scale: float | torch.Tensor, like: torch.Tensor) -> float | torch.Tensor:
    if not isinstance(scale, torch.Tensor):
        return scale
    scale = scale.to(device=like.device, dtype=like.dtype).reshape(-1)
    if scale.shape[0] not in (1, like.shape[0]):
        raise ValueError(f"per-row scale has {scale.shape[0]} rows but the batch has {like.shape[0]}")
    return scale.view(-1, *([1] * (like.dim() - 1)))


@functools.lru_cache(maxsize=None)
def _query_capture_class(base: type) -> type:
    def forward(self, *args, **kwargs):
        out = base.forward(self, *args, **kwargs)
        attachment, index = self._ft_hook
        attachment._queries[index] = out
        return out

    return type(f"FTQueryCapture_{base.__name__}", (base,), {"forward": forward})


@functools.lru_cache(maxsize=None)
def _output_class(base: type) -> type:
    def forward(self, x, *args, **kwargs):
        attachment, index = self._ft_hook
        extra = attachment._block_extra(index, x)
        if extra is not None:
            x = x + extra.to(x.dtype)
        return base.forward(self, x, *args, **kwargs)

    return type(f"FTOutput_{base.__name__}", (base,), {"forward": forward})


@functools.lru_cache(maxsize=None)
def _grid_class(base: type) -> type:
    def forward(self, *args, **kwargs):
        out = base.forward(self, *args, **kwargs)  # [B, dim, F, H, W]
        self._ft_hook[0]._grid = tuple(out.shape[2:])
        return out

    return type(f"FTGrid_{base.__name__}", (base,), {"forward": forward})


@functools.lru_cache(maxsize=None)
def _time_class(base: type) -> type:
    def forward(self, *args, **kwargs):
        out = base.forward(self, *args, **kwargs)
        extra = self._ft_hook[0]._time_extra(out)
        return out if extra is None else out + extra.to(out.dtype)

    return type(f"FTTime_{base.__name__}", (base,), {"forward": forward})


def _shadow(module: nn.Module, cls_factory, hook: tuple) -> nn.Module:
    """A copy of ``module`` sharing its weights, with a patched class and a (non-module) hook."""
    base = type(module)
    if getattr(module, "_ft_hook", None) is not None:
        raise RuntimeError(
            "this model already has FantasyTalking adapters attached; attach to the original model "
            "(in ComfyUI, connect the loader's MODEL, not the output of another FantasyTalking Apply)"
        )
    new = copy.copy(module)
    new.__class__ = cls_factory(base)
    object.__setattr__(new, "_ft_hook", hook)  # a plain attribute: never a registered submodule
    object.__setattr__(new, "_ft_base", module)
    return new


def _get(root: nn.Module, path: str) -> nn.Module:
    return root.get_submodule(path)


def _set(root: nn.Module, path: str, module: nn.Module) -> None:
    parent, _, name = path.rpartition(".")
    setattr(root.get_submodule(parent) if parent else root, name, module)


class Attachment:
    """Adapters attached to one DiT, with the conditions they read during a forward."""

    def __init__(self, dit: nn.Module, audio: nn.Module | None = None, identity: nn.Module | None = None,
                 motion: nn.Module | None = None, resolve: Callable[[str], nn.Module] | None = None):
        blocks = getattr(dit, "blocks", None)
        if not isinstance(blocks, nn.ModuleList) or not len(blocks):
            raise TypeError(f"{type(dit).__name__} has no 'blocks' ModuleList; expected a Wan2.1 DiT")
        for i, block in enumerate(blocks):
            cross = getattr(block, "cross_attn", None)
            if cross is None or not all(hasattr(cross, a) for a in ("norm_q", "o", "num_heads")):
                raise TypeError(f"block {i} has no cross_attn with norm_q, o and num_heads; expected Wan's layout")
        self.dit = dit
        # Where the host's own module at a path is; ComfyUI's ``get_model_object`` sees past object
        # patches that another clone of the same model may have left applied.
        self._resolve = resolve or dit.get_submodule
        self.num_blocks = len(blocks)
        self.num_heads = [block.cross_attn.num_heads for block in blocks]
        self._terms = {name: Term(m) if m is not None else None
                       for name, m in (("audio", audio), ("identity", identity), ("motion", motion))}
        self._local = threading.local()  # per-thread conditions and forward state (core may run
        #                                  the conds of one step in threads, one per GPU)
        width = getattr(blocks[0].cross_attn.o, "in_features", None)
        for name, term in self._terms.items():
            cfg = getattr(term.module, "cfg", None) if term is not None else None
            n, dim = getattr(cfg, "num_blocks", None), getattr(cfg, "dim", None)
            if name != "motion" and n is not None and n != self.num_blocks:
                raise ValueError(f"the {name} adapter has {n} blocks but the DiT has {self.num_blocks}; "
                                 f"use adapter weights made for this Wan model")
            if dim is not None and width is not None and dim != width:
                raise ValueError(f"the {name} adapter is {dim} wide but the DiT is {width}; "
                                 f"use adapter weights made for this Wan model (14B: 5120)")
        self._originals: dict[str, nn.Module] = {}

    def _state(self) -> threading.local:
        st = self._local
        if not hasattr(st, "terms"):
            st.terms = {k: None if t is None else Term(t.module, t.condition, t.scale) for k, t in self._terms.items()}
            st.queries, st.grid = [None] * self.num_blocks, None
        return st

    audio = property(lambda self: self._state().terms["audio"])
    identity = property(lambda self: self._state().terms["identity"])
    motion = property(lambda self: self._state().terms["motion"])

    @property
    def _queries(self) -> list[torch.Tensor | None]:
        return self._state().queries

    @_queries.setter
    def _queries(self, value: list) -> None:
        self._state().queries = value

    @property
    def _grid(self) -> tuple[int, ...] | None:
        return self._state().grid

    @_grid.setter
    def _grid(self, value: tuple[int, ...] | None) -> None:
        self._state().grid = value

    # -- patches ---------------------------------------------------------------------------
    def patches(self) -> dict[str, nn.Module]:
        """``{path relative to the DiT: patched module}``; in ComfyUI prefix with ``diffusion_model.``."""
        out: dict[str, nn.Module] = {}
        if self.audio is not None or self.identity is not None:
            if isinstance(getattr(self.dit, "patch_embedding", None), nn.Module):
                out["patch_embedding"] = _shadow(self._resolve("patch_embedding"), _grid_class, (self,))
            for i in range(self.num_blocks):
                for leaf, factory in (("norm_q", _query_capture_class), ("o", _output_class)):
                    path = f"blocks.{i}.cross_attn.{leaf}"
                    out[path] = _shadow(self._resolve(path), factory, (self, i))
        if self.motion is not None:
            out["time_embedding"] = _shadow(self._resolve("time_embedding"), _time_class, (self,))
        return out

    def apply(self) -> "Attachment":
        """Patch the DiT in place (outside ComfyUI); :meth:`remove` restores it."""
        if self._originals:
            return self
        for path, module in self.patches().items():
            self._originals[path] = _get(self.dit, path)
            _set(self.dit, path, module)
        return self

    def remove(self) -> None:
        for path, module in self._originals.items():
            _set(self.dit, path, module)
        self._originals.clear()
        self._queries = [None] * self.num_blocks

    def __enter__(self) -> "Attachment":
        return self.apply()

    def __exit__(self, *exc) -> None:
        self.remove()

    # -- conditions ------------------------------------------------------------------------
    @contextmanager
    def conditioned(self, **values) -> Iterator["Attachment"]:
        """Set conditions/scales for the duration of a block: ``audio=, audio_scale=, identity=,
        id_scale=, motion=, motion_scale=``; the previous values come back afterwards."""
        names = {"audio": ("audio", "condition"), "audio_scale": ("audio", "scale"),
                 "identity": ("identity", "condition"), "id_scale": ("identity", "scale"),
                 "motion": ("motion", "condition"), "motion_scale": ("motion", "scale")}
        saved = []
        for key, value in values.items():
            if key not in names:
                raise TypeError(f"unknown condition {key!r}; use one of {sorted(names)}")
            term_name, field = names[key]
            term = getattr(self, term_name)
            if term is None:
                if value is None or field == "scale":
                    continue
                raise ValueError(f"a {term_name} condition was given but no {term_name} adapter is attached")
            saved.append((term, field, getattr(term, field)))
            setattr(term, field, value)
        for term, _, _ in saved:
            term.active()  # decided here, once, not inside every block (no GPU sync, no graph break)
        try:
            yield self
        finally:
            for term, field, old in reversed(saved):
                setattr(term, field, old)

    # -- called from inside the patched modules ---------------------------------------------
    def _block_extra(self, index: int, x: torch.Tensor) -> torch.Tensor | None:
        q, self._queries[index] = self._queries[index], None
        terms = [t for t in (self.audio, self.identity) if t is not None and t.active()]
        if not terms:
            return None
        if q is None:
            raise RuntimeError(
                f"FantasyTalking could not capture the cross-attention query of block {index}: this "
                f"host's cross-attention did not call norm_q before o. The adapters need Wan2.1's "
                f"cross-attention layout."
            )
        frames = getattr(self.audio.condition, "num_latent_frames", None) if self.audio in terms else None
        if frames is not None and self._grid is not None and frames != self._grid[0]:
            raise ValueError(
                f"the audio has windows for {frames} latent frames but the video has {self._grid[0]} "
                f"({(self._grid[0] - 1) * 4 + 1} video frames); encode the audio for the video's frame count"
            )
        extra = None
        for term in terms:
            out = term.module.attend(index, q, term.condition, self.num_heads[index])
            out = out * _row_scale(term.scale, out)
            extra = out if extra is None else extra + out
        return extra

    def _time_extra(self, e: torch.Tensor) -> torch.Tensor | None:
        term = self.motion
        if term is None or not term.active():
            return None
        out = term.module.embed(term.condition).to(e.device)
        return out * _row_scale(term.scale, out)


def find_attachment(dit: nn.Module) -> Attachment | None:
    """The Attachment currently patched into ``dit`` in place (``apply()`` / context manager), if any."""
    try:
        hook = getattr(dit.blocks[0].cross_attn.norm_q, "_ft_hook", None)
    except (AttributeError, IndexError, TypeError):
        return None
    return hook[0] if hook else None


def attach_adapters(dit: nn.Module, audio: nn.Module | None = None, identity: nn.Module | None = None,
                    motion: nn.Module | None = None, resolve: Callable[[str], nn.Module] | None = None) -> Attachment:
    """Attach adapters to a Wan-layout DiT. Use the result as a context manager to patch in place,
    or hand ``.patches()`` to a host that applies object patches (ComfyUI's ModelPatcher, with
    ``resolve`` = its ``get_model_object`` under ``diffusion_model.``)."""
    return Attachment(dit, audio=audio, identity=identity, motion=motion, resolve=resolve)
