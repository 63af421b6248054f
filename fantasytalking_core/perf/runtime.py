"""The DiT forward with the runtime options: :class:`Runtime`, built by :func:`configure`.

``rt = configure(model, RuntimeOptions(...))`` prepares a ``wan.WanModel`` (attention kernel,
fp8 weights, block swap, sequence-parallel group) and returns a :class:`Runtime`; calling
``rt(x, t, context, clip_fea, y)`` runs the model's own steps (``WanModel.join_inputs``,
``embed_video``, ..., ``head``, ``unpatchify``) with sequence parallelism, the step cache, block
swap, compiled blocks and the RoPE choice woven in. ``model(...)`` itself stays the plain forward.
``unconfigure(model)`` (or leaving ``with configured(...)``) undoes everything but fp8, which is a
one-way quantisation of the weights.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import torch
import torch.nn as nn

from ..adapters.attach import find_attachment
from ..attention import CUDA_BACKENDS
from ..frames import video_frames
from ..wan.model import WanModel, WanSelfAttention, rope_cos_sin, rope_freqs, rope_grid
from .blockswap import BlockSwap, adapter_modules
from .fp8 import to_fp8
from .options import RuntimeOptions
from .parallel import SequenceParallel
from .stepcache import StepCache

_ATTRIBUTE = "perf_runtime"  # the Runtime configured on a model, so a second configure can undo the first


class Runtime:
    """The model's forward with the options; call it like the model. Built by :func:`configure`."""

    def __init__(self, model: WanModel, options: RuntimeOptions, adapters: Sequence[nn.Module] = ()):
        self.model = model
        self.options = options
        self.parallel = None
        self.swap: BlockSwap | None = None
        self.cache: StepCache | None = None
        self._rotations: dict[tuple, torch.Tensor] = {}
        if options.seq_parallel:
            self.parallel = SequenceParallel()
            if model.cfg.patch_size[0] != 1:
                raise ValueError(f"sequence parallel splits latent frames; it needs a temporal patch of 1, "
                                 f"got {model.cfg.patch_size}")
        if options.step_cache is not None:
            reduce = self.parallel.all_reduce_sum if self.parallel is not None else None
            self.cache = StepCache(options.step_cache, reduce)
        if options.block_swap:
            device = next(p.device for p in model.head.parameters())
            self.swap = BlockSwap(model.blocks, options.block_swap, device, options.swap_prefetch,
                                  adapter_modules(adapters))
        # compiled wrappers of the blocks (the model's own blocks stay as they are)
        self.blocks: list[nn.Module] = list(model.blocks)
        if options.compile:
            self.blocks = [torch.compile(b, mode=options.compile_mode, backend=options.compile_backend, dynamic=False)
                           for b in model.blocks]

    # -- the forward ---------------------------------------------------------------------------
    def __call__(self, x, t, context, clip_fea=None, y=None) -> torch.Tensor:
        """``WanModel.forward`` with the options: same inputs, same output."""
        model = self.model
        x = model.join_inputs(x, clip_fea, y)  # [B, in_dim, F, H, W]
        frames = x.shape[2]
        start, stop = 0, frames
        if self.parallel is not None:
            _, ph, pw = model.cfg.patch_size
            start, stop = self.parallel.begin(frames, (x.shape[3] // ph) * (x.shape[4] // pw))
            x = x[:, :, start:stop]  # this rank's latent frames
        tokens, grid = model.embed_video(x)  # [B, L_rank, dim], grid (f_rank, h, w)
        rotations = self.rotations((frames, *grid[1:]), start, stop, tokens.device)
        e, e0 = model.embed_time(model.batch_timesteps(t, tokens))
        clip_tokens = clip_fea.shape[1] if clip_fea is not None else 0
        context = model.embed_context(context, clip_fea)
        with self.local_conditions(frames, start, stop):
            tokens = self.run_blocks(tokens, e0, rotations, context, clip_tokens, t)
        out = model.unpatchify(model.head(tokens, e), grid)
        if self.parallel is not None:
            out = self.parallel.gather_frames(out, frames)
        return out

    def run_blocks(self, x, e0, rotations, context, clip_tokens: int, t) -> torch.Tensor:
        """The block loop, with the step cache deciding whether it runs and block swap around each block."""
        cache = self.cache
        if cache is not None:
            cache.begin(float(torch.as_tensor(t).reshape(-1)[0]))
            residual = cache.skip(self.indicator(x, e0), x)
            if residual is not None:
                return x + residual
        x_in = x
        for i, block in enumerate(self.blocks):
            if self.swap is not None:
                self.swap.before(i)
            x = block(x, e0, rotations, context, clip_tokens)
            if self.swap is not None:
                self.swap.after(i)
        if cache is not None:
            cache.store(x - x_in)
        return x

    def indicator(self, x: torch.Tensor, e0: torch.Tensor) -> torch.Tensor:
        """What the step cache compares between calls: block 0's modulated input, or e0."""
        if self.options.step_cache.indicator == "time":
            return e0
        block = self.model.blocks[0]
        e = (block.modulation.to(x.device).float() + e0).chunk(6, dim=1)
        return block.norm1(x).float() * (1 + e[1]) + e[0]

    def rotations(self, grid, start: int, stop: int, device) -> torch.Tensor:
        """RoPE table of tokens in latent frames ``[start, stop)`` of the full ``grid``: complex
        (Wan's float64 path) or float32 (cos, sin) with ``fast_rope``; cached per shape."""
        key = (grid, start, stop, str(device), self.options.fast_rope)
        if key not in self._rotations:
            per_frame = grid[1] * grid[2]
            table = rope_grid(rope_freqs(self.model.cfg.head_dim), grid)[start * per_frame: stop * per_frame]
            table = rope_cos_sin(table) if self.options.fast_rope else table
            self._rotations = {key: table.to(device)}  # one shape at a time: no growing cache
        return self._rotations[key]

    @contextmanager
    def local_conditions(self, frames: int, start: int, stop: int) -> Iterator[None]:
        """Under sequence parallel, hand the attached frame-level audio only this rank's windows."""
        att = find_attachment(self.model)
        audio = getattr(att, "audio", None) if att is not None else None
        cond = getattr(audio, "condition", None)
        if self.parallel is None or cond is None or not getattr(cond, "frame_level", False):
            yield
            return
        if cond.tokens.shape[1] != frames:
            raise ValueError(f"the audio has windows for {cond.tokens.shape[1]} latent frames but the video has "
                             f"{frames} ({video_frames(frames)} video frames); encode the audio for the video's "
                             f"frame count")
        lens = cond.k_lens
        local = dataclasses.replace(cond, tokens=cond.tokens[:, start:stop],
                                    k_lens=None if lens is None else lens[..., start:stop])
        with att.conditioned(audio=local):
            yield

    def reset(self) -> None:
        """Start a new sampling run (the step cache also resets by itself when t goes up)."""
        if self.cache is not None:
            self.cache.reset()

    def close(self) -> None:
        """Undo what :func:`configure` changed on the model (fp8 stays); the runtime is spent."""
        model = self.model
        if self.swap is not None:
            self.swap.close()
            self.swap = None
        for m in model.modules():
            if isinstance(m, WanSelfAttention):
                m.parallel = None
                m.backend = model.cfg.attention_backend
        self.blocks = list(model.blocks)
        if getattr(model, _ATTRIBUTE, None) is self:
            delattr(model, _ATTRIBUTE)


def configure(model: WanModel, options: RuntimeOptions = RuntimeOptions(),
              adapters: Sequence[nn.Module] = ()) -> Runtime:
    """Apply ``options`` to our ``WanModel`` and return the :class:`Runtime` to call instead of it.

    ``adapters`` (``AudioAdapter``, ``IdentityAdapter``) have per-block weights that
    block swap streams with their block. Call it after moving model and adapters to their device
    and dtype, and before ``attach_adapters`` when fp8 is on (attach then wraps the quantised
    layers). Sequence parallel finds an attachment applied in place by itself. A model has one
    runtime at a time: configuring again closes the previous one first. While block swap is on,
    call the runtime, not the model (the swapped blocks' weights are in CPU memory between calls).
    """
    if not isinstance(model, WanModel):
        raise TypeError(f"perf.configure works on fantasytalking_core.wan.WanModel, got {type(model).__name__}; "
                        "in ComfyUI use its own model options (attention, fp8, offloading)")
    if isinstance(options, dict):
        options = RuntimeOptions.from_dict(options)
    _check(model, options)
    unconfigure(model)
    for m in model.modules():
        if isinstance(m, WanSelfAttention):
            m.backend = options.attention
    if options.fp8 != "none":
        to_fp8(model, fast=options.fp8 == "e4m3fn_fast")
    runtime = Runtime(model, options, adapters)
    if runtime.parallel is not None:
        for block in model.blocks:
            block.self_attn.parallel = runtime.parallel
    setattr(model, _ATTRIBUTE, runtime)
    return runtime


def _check(model: WanModel, options: RuntimeOptions) -> None:
    """Refuse what cannot work before anything is changed."""
    device = next(model.head.parameters()).device
    if options.attention in CUDA_BACKENDS and device.type != "cuda":
        raise ValueError(f"attention {options.attention!r} needs a CUDA model, this one is on {device}; "
                         "use 'auto' or 'sdpa'")
    if options.block_swap > len(model.blocks):
        raise ValueError(f"block_swap must be between 0 and the number of blocks ({len(model.blocks)}), "
                         f"got {options.block_swap}")
    if options.fp8 != "none" and find_attachment(model) is not None:
        raise RuntimeError("fp8 must be configured before the FantasyTalking adapters are attached: call "
                           "perf.configure(model, RuntimeOptions(fp8=...)) first, then attach_adapters")
    if options.seq_parallel:
        import torch.distributed as dist

        if not dist.is_available() or not dist.is_initialized():
            raise RuntimeError("seq_parallel needs torch.distributed initialised: launch with "
                               "`torchrun --nproc-per-node N script.py` and call "
                               "torch.distributed.init_process_group('nccl' or 'gloo') before perf.configure")


def configured_runtime(model: WanModel) -> Runtime | None:
    """The :class:`Runtime` currently configured on ``model``, if any."""
    return getattr(model, _ATTRIBUTE, None)


def unconfigure(model: WanModel) -> None:
    """Close the model's runtime, if any: swapped blocks return to the device, the attention kernel
    and sequence-parallel group are reset (fp8 weights stay fp8)."""
    runtime = configured_runtime(model)
    if runtime is not None:
        runtime.close()


@contextmanager
def configured(model: WanModel, options: RuntimeOptions, adapters: Sequence[nn.Module] = ()) -> Iterator[Runtime]:
    """``with configured(model, options) as rt:`` call ``rt(...)``; afterwards the model is as before."""
    runtime = configure(model, options, adapters)
    try:
        yield runtime
    finally:
        unconfigure(model)


__all__ = ["Runtime", "configure", "configured", "configured_runtime", "find_attachment", "unconfigure"]
