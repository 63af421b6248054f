"""Block swap: same output as no swap; only the running block (and the prefetched ones) resident."""

import pytest
import torch

from _factories import tiny_audio, tiny_wan, wan_inputs
from fantasytalking_core.adapters import AudioCondition, attach_adapters
from fantasytalking_core.perf import RuntimeOptions, configure, unconfigure
from fantasytalking_core.perf.blockswap import BlockSwap, adapter_modules


def _cond(frames=3, win=4, dim=32):
    g = torch.Generator().manual_seed(7)
    return AudioCondition(torch.randn(1, frames, win, dim, generator=g), torch.tensor([4, 2, 3]))


@pytest.mark.parametrize("swapped", [1, 3])
def test_block_swap_with_attached_adapters_equals_no_swap_exactly(swapped):
    model = tiny_wan(num_layers=3)
    audio = tiny_audio(model.cfg)
    inputs = wan_inputs(model.cfg, batch=2)
    with torch.no_grad(), attach_adapters(model, audio=audio) as att, att.conditioned(audio=_cond()):
        ref = model(**inputs)
        runtime = configure(model, RuntimeOptions(block_swap=swapped), adapters=[audio])
        swap = runtime.swap
        assert swap.swapped == list(range(3 - swapped, 3))  # the last blocks are swapped
        seen = []
        hooks = [b.register_forward_pre_hook(
            lambda m, a: seen.append(([swap.resident(j) for j in range(3)], sorted(swap._loaded))))
            for b in model.blocks]
        out = runtime(**inputs)
        for h in hooks:
            h.remove()
        assert torch.equal(out, ref)
        for i, (resident, prefetched) in enumerate(seen):
            assert resident[i], f"block {i} ran without its weights"
            # of the swapped blocks only the running one is in place, and only the next one is being copied
            assert [j for j in swap.swapped if resident[j]] == [j for j in swap.swapped if j == i]
            assert prefetched == [j for j in swap.swapped if j == i + 1]
        assert not any(swap.resident(j) for j in swap.swapped)  # all back on their masters after the forward
        # the adapter's per-block weights move with their block (configure(..., adapters=[audio]))
        proc = audio.processor(2).k_proj.weight
        assert any(proc.data_ptr() == m.data_ptr() for m in swap._masters[2])
        unconfigure(model)
        assert torch.equal(model(**inputs), ref)


def test_swap_moves_the_host_parameters_that_attach_shadows_share():
    model = tiny_wan()
    audio = tiny_audio(model.cfg)
    swap = BlockSwap(model.blocks, 1, "cpu")
    with torch.no_grad(), attach_adapters(model, audio=audio):
        shadow_o = model.blocks[1].cross_attn.o  # attach's patched copy of the host module
        master = swap._masters[1][[id(t) for t in swap._tensors[1]].index(id(shadow_o.weight))]
        assert shadow_o.weight.data_ptr() == master.data_ptr()
        swap.before(1)
        assert shadow_o.weight.data_ptr() != master.data_ptr()
        swap.after(1)
        assert shadow_o.weight.data_ptr() == master.data_ptr()


def test_block_swap_refuses_training_and_bad_counts():
    model = tiny_wan()
    inputs = wan_inputs(model.cfg)
    runtime = configure(model, RuntimeOptions(block_swap=1))
    with pytest.raises(RuntimeError, match="inference"):
        runtime(**inputs)  # grad enabled and the weights require grad
    with pytest.raises(ValueError, match="between 0 and the number of blocks"):
        configure(model, RuntimeOptions(block_swap=5))


def test_adapter_modules_are_block_i_of_each_adapter():
    from fantasytalking_core.adapters.identity import IdentityAdapter, IdentityAdapterConfig
    from fantasytalking_core.adapters.motion import MotionAdapter, MotionAdapterConfig

    model = tiny_wan()
    audio = tiny_audio(model.cfg)
    identity = IdentityAdapter(IdentityAdapterConfig.for_wan(model.cfg, id_dim=32, heads=2))
    motion = MotionAdapter(MotionAdapterConfig(dim=model.cfg.dim))  # no per-block weights
    parts = adapter_modules([audio, identity, motion])(1)
    assert parts[0] is audio.processor(1) and parts[1] is identity.blocks[1] and len(parts) == 2
