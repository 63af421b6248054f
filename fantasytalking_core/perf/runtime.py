"""The runtime options on the DiT: :class:`Runtime`, installed by :func:`configure`.

``rt = configure(model, RuntimeOptions(...))`` prepares a ``wan.WanModel`` (attention kernel and
sequence-parallel group on its attention modules, fp8 weights) and installs a :class:`Runtime` as
``model.runner``, the one hook ``WanModel.forward`` consults: the runtime supplies only what the
options change (this rank's latent frames, the RoPE table, the block loop with the step cache,
block swap and compiled blocks, the gather of the output); the forward itself stays the model's.
So ``model(...)`` runs with the options while they are configured (``rt(...)`` is the same call).
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
from ..wan.model import Runner, WanModel, WanSelfAttention
from .blockswap import BlockSwap, adapter_modules
from .memory import predict_dit
from .fp8 import to_fp8
from .options import RuntimeOptions
from .parallel import SequenceParallel
from .stepcache import StepCache


class Runtime(Runner):
    """What the options change in ``WanModel.forward``; installed as ``model.runner`` by :func:`configure`."""

    def __init__(self, model: WanModel, options: RuntimeOptions, adapters: Sequence[nn.Module] = ()):
        super().__init__(fast_rope=options.fast_rope)
        self.model = model
        self.options = options
        self.parallel = None
        self.swap: BlockSwap | None = None
        self.cache: StepCache | None = None
        self._rotations: dict[tuple, torch.Tensor] = {}
        self._span = (0, 0, 0)  # (frames, start, stop) of the current forward
        if options.seq_parallel:
            self.parallel = SequenceParallel()
            if model.cfg.patch_size[0] != 1:
                raise ValueError(f"sequence parallel splits latent frames; it needs a temporal patch of 1, "
                                 f"got {model.cfg.patch_size}")
        if options.step_cache is not None:
            reduce = self.parallel.all_reduce_sum if self.parallel is not None else None
            self.cache = StepCache(options.step_cache, reduce)
        self._adapters = list(adapters)
        self._grid = (0, 0, 0)  # the latent grid of the current forward (set by rotations)
        self.plan = None  # perf.memory.MemoryPlan behind block_swap="auto", once decided
        if options.block_swap and options.block_swap != "auto":
            self.start_swap(options.block_swap)
        # compiled wrappers of the blocks (the model's own blocks stay as they are)
        self.blocks: list[nn.Module] = list(model.blocks)
        if options.compile:
            self.blocks = [torch.compile(b, mode=options.compile_mode, backend=options.compile_backend, dynamic=False)
                           for b in model.blocks]

    # -- the hooks of WanModel.forward ----------------------------------------------------------
    def __call__(self, x, t, context, clip_fea=None, y=None) -> torch.Tensor:
        """The model's forward (with these options, as long as they are configured)."""
        return self.model(x, t, context, clip_fea, y)

    def frames(self, frames: int, tokens_per_frame: int) -> tuple[int, int]:
        """Sequence parallel: this rank's share of the latent frames; else all of them."""
        start, stop = 0, frames
        if self.parallel is not None:
            start, stop = self.parallel.begin(frames, tokens_per_frame)
        self._span = (frames, start, stop)
        return start, stop

    def gather(self, out: torch.Tensor, frames: int) -> torch.Tensor:
        """Sequence parallel: every rank returns the whole prediction."""
        return self.parallel.gather_frames(out, frames) if self.parallel is not None else out

    def start_swap(self, swapped: int) -> None:
        """Stream the last ``swapped`` blocks (and the adapters' share of them) from the CPU."""
        if swapped:
            device = next(p.device for p in self.model.head.parameters())
            self.swap = BlockSwap(self.model.blocks, swapped, device, self.options.swap_prefetch,
                                  adapter_modules(self._adapters))

    def auto_swap(self, x: torch.Tensor, context: torch.Tensor) -> int:
        """``block_swap="auto"``: the blocks to swap so this forward's predicted peak fits the GPU."""
        device = x.device
        if device.type != "cuda":
            return 0
        model, (frames, h, w) = self.model, self._grid
        _, ph, pw = model.cfg.patch_size
        att = find_attachment(model)
        cond = getattr(getattr(att, "audio", None), "condition", None) if att is not None else None
        window = cond.tokens.shape[2] if cond is not None and cond.frame_level else 17
        self.plan = predict_dit(model.cfg, (frames, h * ph, w * pw), batch=x.shape[0], dtype=model.dtype,
                                fp8=self.options.fp8, fast_rope=self.options.fast_rope,
                                text_tokens=context.shape[1] - model.cfg.clip_tokens, audio_window=window)
        total = torch.cuda.get_device_properties(device).total_memory
        others = max(0, torch.cuda.memory_allocated(device) - self.plan.weights)  # encoders, VAE, latents
        swapped = self.plan.swap_for(total - others, self.options.swap_prefetch)
        if swapped is None:
            raise RuntimeError(f"the DiT does not fit this GPU even with every block swapped: predicted "
                               f"{self.plan.peak(len(model.blocks)) / 2**30:.1f} GiB with "
                               f"{others / 2**30:.1f} GiB of other models on a {total / 2**30:.1f} GiB card; "
                               f"use fp8, a smaller size or fewer frames, or move the encoders to the CPU")
        return swapped

    def run_blocks(self, model, x, e0, rotations, context, clip_tokens: int, t) -> torch.Tensor:
        """The block loop, with the step cache deciding whether it runs and block swap around each block."""
        if self.options.block_swap == "auto" and self.plan is None and self.swap is None:
            self.start_swap(self.auto_swap(x, context))
        cache = self.cache
        if cache is not None:
            cache.begin(float(torch.as_tensor(t).reshape(-1)[0]))
            residual = cache.skip(self.indicator(x, e0), x)
            if residual is not None:
                return x + residual
        x_in = x
        with self.local_conditions(*self._span):
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

    def rotations(self, head_dim: int, grid, start: int, stop: int, device) -> torch.Tensor:
        """RoPE table of tokens in latent frames ``[start, stop)`` of the full ``grid``: complex
        (Wan's float64 path) or float32 (cos, sin) with ``fast_rope``; cached per shape."""
        self._grid = (stop - start, grid[1], grid[2])
        key = (grid, start, stop, str(device), self.options.fast_rope)
        if key not in self._rotations:  # one shape at a time: no growing cache
            self._rotations = {key: super().rotations(head_dim, grid, start, stop, device)}
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
        if model.runner is self:
            model.runner = Runner()


def configure(model: WanModel, options: RuntimeOptions = RuntimeOptions(),
              adapters: Sequence[nn.Module] = ()) -> Runtime:
    """Apply ``options`` to our ``WanModel`` (its forward runs with them from now on) and return the
    :class:`Runtime` installed as ``model.runner``.

    ``adapters`` (``AudioAdapter``, ``IdentityAdapter``) have per-block weights that
    block swap streams with their block. Call it after moving model and adapters to their device
    and dtype, and before ``attach_adapters`` when fp8 is on (attach then wraps the quantised
    layers). Sequence parallel finds an attachment applied in place by itself. A model has one
    runtime at a time: configuring again closes the previous one first.
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
    model.runner = runtime
    return runtime


def _check(model: WanModel, options: RuntimeOptions) -> None:
    """Refuse what cannot work before anything is changed."""
    device = next(model.head.parameters()).device
    if options.attention in CUDA_BACKENDS and device.type not in ("cuda", "meta"):  # meta: the dry run's GPU
        raise ValueError(f"attention {options.attention!r} needs a CUDA model, this one is on {device}; "
                         "use 'auto' or 'sdpa'")
    if options.block_swap != "auto" and options.block_swap > len(model.blocks):
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
    runner = getattr(model, "runner", None)
    return runner if isinstance(runner, Runtime) else None


def unconfigure(model: WanModel) -> None:
    """Close the model's runtime, if any: swapped blocks return to the device, the attention kernel
    and sequence-parallel group are reset (fp8 weights stay fp8)."""
    runtime = configured_runtime(model)
    if runtime is not None:
        runtime.close()


@contextmanager
def configured(model: WanModel, options: RuntimeOptions, adapters: Sequence[nn.Module] = ()) -> Iterator[Runtime]:
    """``with configured(model, options) as rt:`` the model runs with the options; afterwards it is as before."""
    runtime = configure(model, options, adapters)
    try:
        yield runtime
    finally:
        unconfigure(model)


__all__ = ["Runtime", "configure", "configured", "configured_runtime", "find_attachment", "unconfigure"]
