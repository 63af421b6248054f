"""FLOPs from the config: the paper-scale number, and an exact match with PyTorch's FLOP counter."""

import pytest
import torch
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils.flop_counter import FlopCounterMode

from _factories import tiny_audio, tiny_wan, wan_inputs
from fantasytalking_core.adapters import attach_adapters
from fantasytalking_core.audio import split_windows
from fantasytalking_core.perf import TokenGrid, forward_flops, step_flops
from fantasytalking_core.wan import WanConfig


def test_14b_forward_at_512x512x81_is_about_0_91_pflop():
    cfg = WanConfig.wan21_i2v_14b()
    grid = TokenGrid.for_video(cfg, 512, 512, 81)
    assert (grid.frames, grid.height, grid.width, grid.tokens) == (21, 32, 32, 21504)
    total = forward_flops(cfg, grid, audio_window=17)["total"]
    assert total == pytest.approx(0.91e15, rel=0.02)
    # the four big terms written out by hand: 12 L D^2 + 4 L D F + 4 L^2 D + 4 L (512 + 257) D, 40 blocks
    L, D, F = 21504, 5120, 13824
    by_hand = 40 * (12 * L * D * D + 4 * L * D * F + 4 * L * L * D + 4 * L * 769 * D)
    assert total == pytest.approx(by_hand, rel=0.01)
    assert step_flops(cfg, grid, passes=3, audio_window=17) == pytest.approx(2.73e15, rel=0.02)


@pytest.mark.parametrize("batch", [1, 2])
def test_tiny_count_equals_flop_counter_on_a_real_forward(batch):
    model = tiny_wan()
    audio = tiny_audio(model.cfg, proj_dim=32)
    inputs = wan_inputs(model.cfg, batch=batch, frames=3, h=4, w=6)
    windows = split_windows(torch.randn(1, 40, 32), 9)  # 9 video frames -> 3 latent frames
    from fantasytalking_core.adapters import AudioCondition

    cond = AudioCondition(windows.tokens, windows.k_lens)
    counter = FlopCounterMode(display=False)
    with torch.no_grad(), attach_adapters(model, audio=audio) as att, att.conditioned(audio=cond):
        with sdpa_kernel(SDPBackend.MATH), counter:  # the math kernel is made of counted bmm's
            model(**inputs)
    grid = TokenGrid(3, 2, 3)
    expected = forward_flops(model.cfg, grid, batch=batch, audio_window=windows.tokens.shape[2], audio_dim=32)
    assert counter.get_total_flops() == expected["total"]


def test_token_grid_rejects_bad_video_sizes():
    cfg = WanConfig.tiny()
    with pytest.raises(ValueError, match="4k\\+1"):
        TokenGrid.for_video(cfg, 64, 64, 80)
    with pytest.raises(ValueError, match="multiples of 16"):
        TokenGrid.for_video(cfg, 60, 64, 81)
    with pytest.raises(ValueError, match="passes"):
        step_flops(cfg, TokenGrid(1, 1, 1), passes=0)
