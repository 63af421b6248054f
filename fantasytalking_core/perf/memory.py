"""Device memory of the DiT predicted from the model itself: one forward on the meta device.

:func:`predict_dit` builds the model of a config on the meta device (no memory), attaches the
FantasyTalking audio adapter, runs one forward of the given batch and size under
:class:`~fantasytalking_core.perf.simulate.Simulation` and returns a :class:`MemoryPlan`:
resident weights, one block's weights, and the activations' peak above the weights. Block swap
moves whole blocks, so the peak with N blocks swapped is the plan's arithmetic
(:meth:`MemoryPlan.peak`), and :meth:`MemoryPlan.swap_for` is the smallest N that fits a budget:
what ``RuntimeOptions(block_swap="auto")`` uses on the card it runs on.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..adapters import AudioAdapter, AudioCondition, attach_adapters
from ..adapters.audio import AudioAdapterConfig
from ..wan.config import WanConfig
from ..wan.model import Runner, WanModel
from .fp8 import to_fp8
from .simulate import Simulation, module_bytes

GiB = 2**30
ALLOCATOR_SLACK = GiB  # the caching allocator's rounding and fragmentation, which the simulation cannot see


@dataclass(frozen=True)
class MemoryPlan:
    """Bytes of one DiT configuration on its device."""

    weights: int  # every weight resident (DiT + adapter)
    per_block: int  # one block's weights with the adapter's share (what block swap moves)
    activations: int  # the forward's peak above the resident weights
    blocks: int

    def peak(self, swapped: int = 0, prefetch: int = 1) -> int:
        """Peak bytes with ``swapped`` blocks streamed: the resident weights, the copies of the block
        running and the ones prefetched, the activations."""
        streaming = min(swapped, prefetch + 1)
        return self.weights - swapped * self.per_block + streaming * self.per_block + self.activations

    def swap_for(self, budget: int, prefetch: int = 1) -> int | None:
        """The fewest blocks to swap so the peak (plus the allocator's slack) fits ``budget`` bytes;
        None when even every block swapped does not fit."""
        for swapped in range(self.blocks + 1):
            if self.peak(swapped, prefetch) + ALLOCATOR_SLACK <= budget:
                return swapped
        return None


def predict_dit(cfg: WanConfig, latent: tuple[int, int, int], batch: int = 3, dtype: torch.dtype = torch.bfloat16,
                fp8: str = "none", fast_rope: bool = False, text_tokens: int = 512, audio_window: int = 17,
                audio_dim: int = 2048) -> MemoryPlan:
    """The memory of one forward of ``cfg`` on latents ``(T_lat, H/8, W/8)`` with ``batch`` rows (the
    guidance passes batched), FantasyTalking's frame-level audio attached (windows of
    ``audio_window`` tokens), weights in ``dtype`` (block linears in fp8 with ``fp8``)."""
    with torch.device("meta"):
        model = WanModel(cfg).to(dtype).eval()
        audio = AudioAdapter(AudioAdapterConfig.for_wan(cfg, proj_dim=audio_dim)).to(dtype).eval()
    if fp8 != "none":
        to_fp8(model, fast=fp8 == "e4m3fn_fast")
    model.runner = Runner(fast_rope=fast_rope)  # the only other option that changes the bytes
    per_block = module_bytes(model.blocks[0], audio.processor(0))
    t, h, w = latent
    x = torch.empty(batch, cfg.out_dim, t, h, w, device="meta")
    y = torch.empty(batch, cfg.in_dim - cfg.out_dim, t, h, w, device="meta") if cfg.model_type == "i2v" else None
    clip = torch.empty(batch, cfg.clip_tokens, cfg.clip_dim, device="meta") if cfg.model_type == "i2v" else None
    context = torch.empty(batch, text_tokens, cfg.text_dim, device="meta")
    windows = AudioCondition(torch.empty(1, t, audio_window, audio_dim, device="meta"),
                             torch.full((t,), audio_window))
    with Simulation(dit=model, audio=audio) as sim, torch.no_grad():
        weights = sim.resident()
        with attach_adapters(model, audio=audio) as att, att.conditioned(audio=windows, audio_scale=1.0):
            model(x, torch.tensor([999.0]), context, clip, y)
    return MemoryPlan(weights, per_block, sim.peak.bytes - weights, len(model.blocks))


__all__ = ["ALLOCATOR_SLACK", "GiB", "MemoryPlan", "predict_dit"]
