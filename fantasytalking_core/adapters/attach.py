"""Attach FantasyTalking adapters to any DiT with Wan's module layout: ours, or ComfyUI's WanModel.

Five kinds of host module are patched, nothing else:

- ``patch_embedding`` records the latent grid (frames, height, width) of each call, so the audio
  goes to the video's own tokens and is checked against the real number of latent frames;
- ``blocks.N.cross_attn.norm_q`` keeps its output: the cross-attention query, computed once by the
  host (recomputing it would cost a dim x dim matmul per block);
- ``blocks.N.cross_attn.o`` adds ``audio_scale * audio_attn(q) + id_scale * id_attn(q)`` to its
  input, i.e. to the text + image attention sum, before the output projection (Eq. 4 of the paper);
- ``blocks.N`` checks, when the block has run, that its ``o`` really added the adapters: a host
  that fuses or replaces the cross-attention (so ``norm_q``/``o`` never run as modules) gets a
  clear error instead of a video without lip sync (never a silent no-op);
- ``time_embedding`` adds the motion-intensity embedding to its output.

A patch changes the class of the host's own module object to a subclass whose ``_ft_hook`` class
attribute is ``(attachment, block index)``; nothing is copied. So every piece of state a host keeps
on its modules (ComfyUI's ``comfy_patched_weights``, low-VRAM weight functions, dynamic-VRAM pages,
LoRA patches on GGUF tensors) stays in one object and cannot go stale between prompts, state-dict
keys and LoRA key paths are unchanged, and the same patch works on a fresh copy of the model.
:meth:`Attachment.patches` returns them as ``{"blocks.0.cross_attn.o.__class__": cls, ...}`` for
ComfyUI's ``add_object_patch``; :meth:`Attachment.apply` sets them in place and
:meth:`Attachment.remove` restores the classes.

Which tokens are the video's: ``[front, front + frames * h * w)`` of the sequence the blocks see.
``(frames, h, w)`` is the first latent grid of the forward (``transformer_options["grid_sizes"]``
where the host gives it, else the first ``patch_embedding`` call); tokens of later
``patch_embedding`` calls (ComfyUI's in-context ``context_latents``) come after the video, and
whatever else the host puts in front (reference latents) is ``front``. A host wrapper may narrow
``frames`` to the video's own frames (ComfyUI's ``time_dim_concat`` appends frames to the grid)
with :meth:`Attachment.forward_scope`. Audio and identity act on the video's tokens only.

Conditions, scales and per-forward state are per thread (core may run the conds of one step in
threads, one per GPU). So code that re-runs blocks on another thread, e.g. activation
checkpointing whose recompute runs in autograd's device thread, must set the conditions again
there with ``conditioned()`` (training/ does this).
"""

from __future__ import annotations

import math
import threading
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Callable, Iterator

import torch
import torch.nn as nn

from ..frames import video_frames
from .registry import ADAPTERS


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


# -- the patched classes: forward of the host's class plus one hook each --------------------------
def _query_forward(base: type) -> Callable:
    def forward(self, *args, **kwargs):
        out = base.forward(self, *args, **kwargs)
        attachment, index = self._ft_hook
        attachment._state().queries[index] = out
        return out

    return forward


def _output_forward(base: type) -> Callable:
    def forward(self, x, *args, **kwargs):
        attachment, index = self._ft_hook
        extra = attachment._block_extra(index, x)
        if extra is not None:
            x = x + extra.to(x.dtype)
        return base.forward(self, x, *args, **kwargs)

    return forward


def _block_forward(base: type) -> Callable:
    def forward(self, *args, **kwargs):
        attachment, index = self._ft_hook
        st = attachment._state()
        st.applied[index], st.queries[index] = False, None
        out = base.forward(self, *args, **kwargs)
        attachment._check_block(index)
        return out

    return forward


def _grid_forward(base: type) -> Callable:
    def forward(self, *args, **kwargs):
        out = base.forward(self, *args, **kwargs)  # [B, dim, F, H, W]
        self._ft_hook[0]._record_grid(tuple(int(s) for s in out.shape[2:]))
        return out

    return forward


def _time_forward(base: type) -> Callable:
    def forward(self, *args, **kwargs):
        out = base.forward(self, *args, **kwargs)
        extra = self._ft_hook[0]._time_extra(out)
        return out if extra is None else out + extra.to(out.dtype)

    return forward


_ROLES = {"query": _query_forward, "output": _output_forward, "block": _block_forward,
          "grid": _grid_forward, "time": _time_forward}


def get_path(root: Any, path: str) -> Any:
    """``root.a.b.c`` for ``path`` ``"a.b.c"``."""
    for name in path.split("."):
        root = getattr(root, name)
    return root


def set_path(root: Any, path: str, value: Any) -> Any:
    """Set ``root.a.b.c = value`` and return the previous value (as ComfyUI's set_attr does)."""
    owner, _, leaf = path.rpartition(".")
    obj = get_path(root, owner) if owner else root
    previous = getattr(obj, leaf)
    setattr(obj, leaf, value)
    return previous


class Attachment:
    """Adapters attached to one DiT, with the conditions they read during a forward."""

    def __init__(self, dit: nn.Module, modules: dict[str, nn.Module | None] | None = None,
                 resolve: Callable[[str], Any] | None = None, host: str = "this model"):
        blocks = getattr(dit, "blocks", None)
        if not isinstance(blocks, nn.ModuleList) or not len(blocks):
            raise TypeError(f"{type(dit).__name__} has no 'blocks' ModuleList; expected a Wan2.1 DiT")
        for i, block in enumerate(blocks):
            cross = getattr(block, "cross_attn", None)
            if cross is None or not all(hasattr(cross, a) for a in ("norm_q", "o", "num_heads")):
                raise TypeError(f"block {i} has no cross_attn with norm_q, o and num_heads; expected Wan's layout")
        modules = dict(modules or {})
        unknown = sorted(set(modules) - set(ADAPTERS))
        if unknown:
            raise TypeError(f"unknown adapters {unknown}; known: {list(ADAPTERS)}")
        self.dit = dit
        self.host = host  # named in errors, e.g. "ComfyUI 0.33.0"
        # The value at an attribute path as the host will see it before patching; ComfyUI's
        # ``get_model_object`` sees past object patches another clone of the model left applied.
        self._resolve = resolve or (lambda path: get_path(dit, path))
        self.num_blocks = len(blocks)
        self.num_heads = [block.cross_attn.num_heads for block in blocks]
        self._terms = {name: Term(m) if (m := modules.get(name)) is not None else None for name in ADAPTERS}
        self._cross = tuple(n for n, spec in ADAPTERS.items() if spec.site == "cross_attn")
        self._time = tuple(n for n, spec in ADAPTERS.items() if spec.site == "time")
        self._local = threading.local()  # per-thread conditions and forward state
        width = getattr(blocks[0].cross_attn.o, "in_features", None)
        for name, term in self._terms.items():
            cfg = getattr(term.module, "cfg", None) if term is not None else None
            n, dim = getattr(cfg, "num_blocks", None), getattr(cfg, "dim", None)
            if name in self._cross and n is not None and n != self.num_blocks:
                raise ValueError(f"the {name} adapter has {n} blocks but the DiT has {self.num_blocks}; "
                                 f"use adapter weights made for this Wan model")
            if dim is not None and width is not None and dim != width:
                raise ValueError(f"the {name} adapter is {dim} wide but the DiT is {width}; "
                                 f"use adapter weights made for this Wan model (14B: 5120)")
        self._originals: dict[str, type] = {}

    def _state(self) -> threading.local:
        st = self._local
        if not hasattr(st, "terms"):
            st.terms = {k: None if t is None else Term(t.module, t.condition, t.scale) for k, t in self._terms.items()}
            st.queries, st.applied = [None] * self.num_blocks, [False] * self.num_blocks
            st.grids, st.scope = [], None
        return st

    def term(self, name: str) -> Term | None:
        """This thread's term of adapter ``name`` (None when that adapter is not attached)."""
        return self._state().terms[name]

    def __getattr__(self, name: str) -> Term | None:  # att.audio, att.identity, ...: one per registry entry
        if name in ADAPTERS:
            return self.term(name)
        raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")

    # -- patches ---------------------------------------------------------------------------
    def patches(self) -> dict[str, type]:
        """``{"<module path>.__class__": patched class}``, paths relative to the DiT; in ComfyUI
        prefix them with ``diffusion_model.`` for ``add_object_patch``."""
        wanted: list[tuple[str, str, int]] = []
        if isinstance(getattr(self.dit, "patch_embedding", None), nn.Module):
            wanted.append(("patch_embedding", "grid", 0))
        if any(self._terms[n] is not None for n in self._cross):
            for i in range(self.num_blocks):
                wanted += [(f"blocks.{i}", "block", i), (f"blocks.{i}.cross_attn.norm_q", "query", i),
                           (f"blocks.{i}.cross_attn.o", "output", i)]
        if any(self._terms[n] is not None for n in self._time):
            wanted.append(("time_embedding", "time", 0))
        out = {}
        for path, role, index in wanted:
            base = self._resolve(path + ".__class__")
            if getattr(base, "_ft_hook", None) is not None:
                raise RuntimeError(
                    "this model already has FantasyTalking adapters attached; attach to the original model "
                    "(in ComfyUI, connect the loader's MODEL, not the output of another FantasyTalking Apply)")
            out[path + ".__class__"] = type(f"FT_{role}_{base.__name__}", (base,),
                                            {"forward": _ROLES[role](base), "_ft_hook": (self, index),
                                             "__module__": base.__module__})
        return out

    def apply(self) -> "Attachment":
        """Patch the DiT in place (outside ComfyUI); :meth:`remove` restores it."""
        if self._originals:
            return self
        for path, cls in self.patches().items():
            self._originals[path] = set_path(self.dit, path, cls)
        return self

    def remove(self) -> None:
        for path, cls in self._originals.items():
            set_path(self.dit, path, cls)
        self._originals.clear()
        st = self._state()
        st.queries = [None] * self.num_blocks

    def __enter__(self) -> "Attachment":
        return self.apply()

    def __exit__(self, *exc) -> None:
        self.remove()

    # -- conditions ------------------------------------------------------------------------
    @contextmanager
    def conditioned(self, **values) -> Iterator["Attachment"]:
        """Set conditions/scales for the duration of a block: per registry entry its name for the
        condition and its ``scale_key`` for the scale (``audio=, audio_scale=, identity=, id_scale=,
        motion=, motion_scale=``); the previous values come back afterwards."""
        names = {}
        for name, spec in ADAPTERS.items():
            names[name], names[spec.scale_key] = (name, "condition"), (name, "scale")
        saved = []
        for key, value in values.items():
            if key not in names:
                raise TypeError(f"unknown condition {key!r}; use one of {sorted(names)}")
            term_name, field = names[key]
            term = self.term(term_name)
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

    @contextmanager
    def forward_scope(self, frames: int | None = None, options: dict | None = None) -> Iterator["Attachment"]:
        """One host forward: ``frames`` = the video's own latent frames (before any frames the host
        appends), ``options`` = the dict the host fills during the forward (``grid_sizes``)."""
        st = self._state()
        saved = st.scope, st.grids
        st.scope, st.grids = (frames, options if options is not None else {}), []
        try:
            yield self
        finally:
            st.scope, st.grids = saved

    # -- called from inside the patched modules ---------------------------------------------
    def _record_grid(self, grid: tuple[int, ...]) -> None:
        st = self._state()
        if st.scope is None:
            st.grids = [grid]  # no host scope: one patch embedding per forward (our DiT)
        else:
            st.grids.append(grid)

    def _video_span(self, length: int) -> tuple[int, int, int | None]:
        """``(start, stop, frames)``: which of the ``length`` tokens the blocks see are the video's."""
        st = self._state()
        frames, options = st.scope if st.scope is not None else (None, {})
        grid = options.get("grid_sizes")
        grid = tuple(int(g) for g in grid) if grid is not None else (st.grids[0] if st.grids else None)
        if grid is None:
            return 0, length, frames
        frames = grid[0] if frames is None else frames
        tail = sum(math.prod(g) for g in st.grids[1:])
        front = length - math.prod(grid) - tail
        if front < 0 or frames > grid[0]:
            raise RuntimeError(
                f"{self.host} gave the blocks {length} tokens, which do not hold a latent grid of {grid} with "
                f"{frames} video frames; FantasyTalking cannot tell which tokens are the video's (report this "
                f"with the workflow)")
        return front, front + frames * grid[1] * grid[2], frames

    def _block_extra(self, index: int, x: torch.Tensor) -> torch.Tensor | None:
        st = self._state()
        q, st.queries[index] = st.queries[index], None
        terms = [t for n in self._cross if (t := st.terms[n]) is not None and t.active()]
        if not terms:
            return None
        if q is None:
            raise RuntimeError(
                f"FantasyTalking could not capture the cross-attention query of block {index}: {self.host}'s "
                f"cross-attention did not call norm_q before o. The adapters need Wan2.1's cross-attention layout.")
        start, stop, frames = self._video_span(q.shape[1])
        for name in self._cross:
            term = st.terms[name]
            windows = getattr(term.condition, "num_latent_frames", None) if term is not None and term.active() else None
            if windows is not None and frames is not None and windows != frames:
                raise ValueError(
                    f"the {name} has windows for {windows} latent frames but the video has {frames} "
                    f"({video_frames(frames)} video frames); encode the {name} for the video's frame count")
        qv = q if (start, stop) == (0, q.shape[1]) else q[:, start:stop]
        extra = None
        for term in terms:
            # the query in the host's dtype: `attention` casts it to the adapter's (fp16 host, bf16 adapter)
            out = term.module.attend(index, qv, term.condition, self.num_heads[index]).to(q.dtype)
            out = out * _row_scale(term.scale, out)
            extra = out if extra is None else extra + out
        if qv is not q:
            extra = torch.nn.functional.pad(extra, (0, 0, start, q.shape[1] - stop))  # zero on other tokens
        st.applied[index] = True
        return extra

    def _check_block(self, index: int) -> None:
        st = self._state()
        if st.applied[index]:
            return
        missing = [n for n in self._cross if st.terms[n] is not None and st.terms[n].active()]
        if missing:
            raise RuntimeError(
                f"FantasyTalking's {' and '.join(missing)} did not reach block {index}: {self.host} ran the block "
                f"without calling the cross-attention modules FantasyTalking patches (cross_attn.norm_q and "
                f"cross_attn.o), e.g. through a fused or compiled cross-attention, a replayed CUDA graph or a "
                f"replaced block, so the video would silently lose the {missing[0]}. Turn off the option or node "
                f"that replaces them, or use a host version whose Wan I2V cross-attention calls norm_q and o as "
                f"modules, and report the version.")

    def _time_extra(self, e: torch.Tensor) -> torch.Tensor | None:
        st, extra = self._state(), None
        for name in self._time:
            term = st.terms[name]
            if term is None or not term.active():
                continue
            out = term.module.embed(term.condition).to(e.device)
            out = out * _row_scale(term.scale, out)
            extra = out if extra is None else extra + out
        return extra


def find_attachment(dit: nn.Module) -> Attachment | None:
    """The Attachment currently patched into ``dit`` in place (``apply()`` / context manager), if any."""
    try:
        hook = getattr(dit.blocks[0].cross_attn.norm_q, "_ft_hook", None)
    except (AttributeError, IndexError, TypeError):
        return None
    return hook[0] if hook else None


def attach_adapters(dit: nn.Module, resolve: Callable[[str], Any] | None = None, host: str = "this model",
                    **modules: nn.Module | None) -> Attachment:
    """Attach adapters to a Wan-layout DiT, given by their registry names (``audio=``,
    ``identity=``, ``motion=``; None = not attached). Use the result as a context manager to patch
    in place, or hand ``.patches()`` to a host that applies object patches (ComfyUI's ModelPatcher,
    with ``resolve`` = its ``get_model_object`` under ``diffusion_model.``)."""
    return Attachment(dit, modules, resolve=resolve, host=host)
