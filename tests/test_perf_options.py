"""Runtime options: each gives the plain model's output within its dtype's tolerance."""

import pytest
import torch

from _factories import tiny_audio, tiny_wan, wan_inputs
from fantasytalking_core.adapters import AudioCondition, attach_adapters
from fantasytalking_core.attention import attention, resolve_backend
from fantasytalking_core.perf import (RuntimeOptions, StepCacheConfig, configure, configured, configured_runtime,
                                      unconfigure)
from fantasytalking_core.perf.fp8 import FP8_MAX, FP8Linear, convert_linear, fp8_linear, quantize
from fantasytalking_core.wan.model import rope_apply, rope_apply_real, rope_cos_sin, rope_freqs, rope_grid


def _audio_cond(frames=3, win=5, dim=32, seed=3):
    g = torch.Generator().manual_seed(seed)
    return AudioCondition(torch.randn(1, frames, win, dim, generator=g), torch.tensor([5, 3, 4])[:frames])


def _run(model, inputs, audio=None, cond=None, scale=None, call=None):
    """``call`` (the model's perf Runtime) or the model itself, with the audio attached to the model."""
    call = call or model
    with torch.no_grad():
        if audio is None:
            return call(**inputs)
        with attach_adapters(model, audio=audio) as att, att.conditioned(audio=cond, audio_scale=scale):
            return call(**inputs)


def test_options_validate_with_clear_errors():
    with pytest.raises(ValueError, match="attention must be one of"):
        RuntimeOptions(attention="triton")
    with pytest.raises(ValueError, match="fp8 must be one of"):
        RuntimeOptions(fp8="e5m2")
    with pytest.raises(ValueError, match="block_swap must be an int >= 0"):
        RuntimeOptions(block_swap=-1)
    with pytest.raises(ValueError, match="threshold must be >= 0"):
        StepCacheConfig(threshold=-0.1)
    with pytest.raises(ValueError, match="unknown runtime options \\['swap'\\]"):
        RuntimeOptions.from_dict({"swap": 3})
    with pytest.raises(ValueError, match="reduce-overhead"):
        RuntimeOptions(compile=True, compile_mode="reduce-overhead", block_swap=2)
    assert RuntimeOptions(fp8=True).fp8 == "e4m3fn_fast" and RuntimeOptions(fp8=False).fp8 == "none"
    assert RuntimeOptions(step_cache=0.1).step_cache == StepCacheConfig(threshold=0.1)
    opts = RuntimeOptions.from_dict({"fast_rope": True, "step_cache": {"threshold": 0.2, "indicator": "time"}})
    assert opts.step_cache.indicator == "time" and opts.fast_rope


def test_cuda_only_attention_is_refused_on_a_cpu_model():
    model = tiny_wan()
    with pytest.raises(ValueError, match="needs a CUDA model"):
        configure(model, RuntimeOptions(attention="flash3"))
    assert configured_runtime(model) is None
    x = torch.randn(1, 4, 2, 8)
    with pytest.raises(RuntimeError, match="CUDA"):
        attention(x, x, x, backend="cudnn")
    assert resolve_backend("auto", "cpu") == "sdpa"


def test_math_and_sdpa_attention_agree_with_padding():
    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(3, 7, 2, 16, generator=g) for _ in range(3))
    lens = torch.tensor([7, 2, 1])
    torch.testing.assert_close(attention(q, k, v, lens, backend="math"), attention(q, k, v, lens, backend="sdpa"),
                               atol=1e-6, rtol=1e-5)


def test_real_rope_equals_wans_complex_rope():
    table = rope_grid(rope_freqs(128), (3, 2, 4))
    x = torch.randn(2, 24, 2, 128, dtype=torch.float64)
    ref = rope_apply(x, table)  # float32 out of Wan's float64 rotation
    ours = rope_apply_real(x.float(), rope_cos_sin(table))
    torch.testing.assert_close(ours, ref, atol=2e-6, rtol=1e-5)
    assert rope_apply_real(x.bfloat16(), rope_cos_sin(table)).dtype == torch.bfloat16


@pytest.mark.parametrize("options, tol", [  # each option changes one thing; the forward stays the model's
    (RuntimeOptions(attention="math"), 1e-5),
    (RuntimeOptions(fast_rope=True), 1e-5),
    (RuntimeOptions(fast_rope=True, block_swap=1, step_cache=StepCacheConfig(0.0)), 1e-5),
])
def test_options_equal_the_plain_model_with_audio_attached(options, tol):
    model = tiny_wan()
    audio = tiny_audio(model.cfg)
    inputs = wan_inputs(model.cfg, batch=2)
    cond, scale = _audio_cond(), torch.tensor([1.0, 0.0])
    ref = _run(model, inputs, audio, cond, scale)
    keys = list(model.state_dict())
    with configured(model, options) as rt:
        assert configured_runtime(model) is rt and model.runner is rt
        out = _run(model, inputs, audio, cond, scale)  # the model's own forward, through its runner
        assert list(model.state_dict()) == keys  # state-dict keys never change (fp8 aside)
    torch.testing.assert_close(out, ref, atol=tol * ref.abs().max().item(), rtol=0)
    assert configured_runtime(model) is None
    assert torch.equal(_run(model, inputs, audio, cond, scale), ref)  # unconfigure restores the plain model


@pytest.mark.parametrize("backend", ["aot_eager", "inductor"])  # inductor: generated C++ kernels, ~10-30 s
def test_compile_option_gives_the_plain_output(backend):
    model = tiny_wan()
    inputs = wan_inputs(model.cfg)
    ref = _run(model, inputs)
    rt = configure(model, RuntimeOptions(fast_rope=True, compile=True, compile_backend=backend))
    # the runtime calls compiled wrappers of the model's blocks; the model's own blocks are untouched
    assert [b._orig_mod for b in rt.blocks] == list(model.blocks)
    assert not any(hasattr(b, "_orig_mod") for b in model.blocks)
    torch.testing.assert_close(_run(model, inputs), ref, atol=1e-5 * ref.abs().max().item(), rtol=0)
    unconfigure(model)
    assert torch.equal(_run(model, inputs), ref)  # the plain forward again
    assert rt.blocks == list(model.blocks) and configured_runtime(model) is None


def test_fp8_quantisation_is_per_tensor_e4m3fn_with_a_scale():
    w = torch.randn(32, 16) * 3
    w8, scale = quantize(w)
    assert w8.dtype == torch.float8_e4m3fn and scale.shape == ()
    assert w8.float().abs().max() == FP8_MAX  # the largest weight maps to e4m3fn's largest value
    torch.testing.assert_close(scale, w.abs().max() / 448)
    # e4m3fn keeps 3 mantissa bits: relative error at most 2^-4 for normal values
    dq = w8.float() * scale
    big = w.abs() > 2**-6 * scale * 8
    assert ((dq - w).abs()[big] <= w.abs()[big] * 2**-4 + 1e-7).all()


def test_fp8_linear_paths_equal_their_definitions():
    g = torch.Generator().manual_seed(0)
    lin = torch.nn.Linear(64, 48)
    x = torch.randn(2, 5, 64, generator=g)
    ref = lin(x)
    w8, scale = quantize(lin.weight)
    assert convert_linear(lin) is lin
    assert isinstance(lin, FP8Linear) and lin.weight.dtype == torch.float8_e4m3fn
    assert lin.compute_dtype == torch.float32 and "scale_weight" in dict(lin.named_buffers())
    # dequantising path: exactly F.linear with W8 * s
    torch.testing.assert_close(lin(x), torch.nn.functional.linear(x, w8.float() * scale, lin.bias), atol=0, rtol=0)
    # fp8 matmul path (torch._scaled_mm; runs on the CPU here): x quantised per tensor too
    x_scale = x.abs().max() / 448
    x8 = (x / x_scale).to(torch.float8_e4m3fn).float() * x_scale
    expect = x8 @ (w8.float() * scale).T + lin.bias
    torch.testing.assert_close(fp8_linear(x, w8, scale, lin.bias, torch.float32), expect, atol=1e-5, rtol=1e-5)
    assert (lin(x) - ref).abs().max() < 0.05 * ref.abs().max()


def test_fp8_model_is_close_to_bf16_and_refuses_attached_layers():
    model = tiny_wan()
    audio = tiny_audio(model.cfg)
    inputs = wan_inputs(model.cfg)
    cond = _audio_cond()
    ref = _run(model, inputs, audio, cond, 1.0)
    keys = set(model.state_dict())
    with attach_adapters(model, audio=audio):
        with pytest.raises(RuntimeError, match="before the FantasyTalking adapters are attached"):
            configure(model, RuntimeOptions(fp8="e4m3fn"))
    model = tiny_wan()
    configure(model, RuntimeOptions(fp8="e4m3fn"))
    added = set(model.state_dict()) - keys
    assert added and all(k.endswith(".scale_weight") and k.startswith("blocks.") for k in added)
    assert set(model.state_dict()) - added == keys
    assert model.blocks[0].ffn[0].weight.dtype == torch.float8_e4m3fn
    out = _run(model, inputs, audio, cond, 1.0)
    err = (out - ref).norm() / ref.norm()
    assert 0 < err < 0.05  # fp8 weights: a few percent on this random model, and not zero
