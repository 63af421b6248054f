"""Step cache: threshold 0 is the plain model; a skipped call reuses the last residual exactly."""

import torch

from _factories import tiny_audio, tiny_wan, wan_inputs
from fantasytalking_core.adapters import AudioCondition, attach_adapters
from fantasytalking_core.perf import RuntimeOptions, StepCacheConfig, configure, unconfigure
from fantasytalking_core.sampling import Guidance, flow_sigmas, guided_model, run_passes_batched, sample_euler


def _sample(model, audio, inputs, steps=6, max_batch=None, call=None):
    """A guided Euler run (three passes per step, audio off per row) like pipeline.sample_latents, through
    ``call`` (a perf Runtime) or the model."""
    call = call or model
    cond = AudioCondition(torch.randn(1, 3, 4, 32, generator=torch.Generator().manual_seed(1)), torch.tensor([4, 3, 2]))
    ctx = {"pos": inputs["context"], "neg": inputs["context"].flip(1)}
    conds = {name: {"context": ctx[name[:3]], "audio_scale": torch.tensor([1.0 if name == "pos_audio" else 0.0])}
             for name in ("pos_audio", "pos_noaudio", "neg_noaudio")}
    sigmas = flow_sigmas(steps, 5.0)
    with torch.no_grad(), attach_adapters(model, audio=audio) as att:
        def model_fn(x, sigma, context, audio_scale):
            n = x.shape[0]
            with att.conditioned(audio=cond, audio_scale=audio_scale):
                return call(x, sigma * 1000, context, inputs["clip_fea"].expand(n, -1, -1),
                             inputs["y"].expand(n, -1, -1, -1, -1))

        fn = guided_model(lambda x, s, p: run_passes_batched(model_fn, x, s, p, conds, max_batch=max_batch),
                          Guidance(5.0, 4.5), sigmas)
        return sample_euler(fn, inputs["x"], sigmas)


def test_threshold_zero_is_exactly_the_plain_sampler():
    model = tiny_wan()
    audio = tiny_audio(model.cfg)
    inputs = wan_inputs(model.cfg)
    ref = _sample(model, audio, inputs)
    runtime = configure(model, RuntimeOptions(step_cache=StepCacheConfig(threshold=0.0)))
    assert torch.equal(_sample(model, audio, inputs, call=runtime), ref)
    assert runtime.cache.skipped == 0 and runtime.cache.computed == 6


def test_positive_threshold_skips_steps_and_stays_close():
    model = tiny_wan()
    audio = tiny_audio(model.cfg)
    inputs = wan_inputs(model.cfg)
    ref = _sample(model, audio, inputs, steps=8)
    runtime = configure(model, RuntimeOptions(step_cache=StepCacheConfig(threshold=0.5, max_consecutive=2)))
    out = _sample(model, audio, inputs, steps=8, call=runtime)
    cache = runtime.cache
    assert cache.skipped > 0 and cache.computed + cache.skipped == 8
    assert [s for s, _, skip in cache.history if skip] and not cache.history[0][2]  # step 0 always runs
    assert not torch.equal(out, ref)
    assert ((out - ref).norm() / ref.norm()) < 0.5


def test_time_indicator_decisions_follow_the_rule_by_hand():
    model = tiny_wan()
    inputs = wan_inputs(model.cfg)
    ts = [1000.0, 960.0, 930.0, 905.0, 880.0, 700.0, 690.0, 400.0]
    with torch.no_grad():
        e0s = [model.embed_time(torch.tensor([t]))[1] for t in ts]
    rel = [float((a - b).abs().sum() / b.abs().sum()) for a, b in zip(e0s[1:], e0s[:-1])]
    threshold = sorted(rel)[len(rel) // 2] * 1.5
    expect, acc = [False], 0.0  # by hand: add up rel while skipping, run and reset when the sum reaches it
    for r in rel:
        acc += r
        expect.append(acc < threshold)
        acc = acc if expect[-1] else 0.0
    runtime = configure(model, RuntimeOptions(step_cache=StepCacheConfig(threshold=threshold, indicator="time")))
    with torch.no_grad():
        for t in ts:
            for _ in range(2):  # two calls per step (passes one by one): two slots, same decisions
                runtime(**{**inputs, "t": torch.tensor([t])})
    hist = runtime.cache.history
    assert [(s, k) for s, k, _ in hist] == [(i, k) for i in range(len(ts)) for k in (0, 1)]
    assert [skip for _, k, skip in hist if k == 0] == expect == [skip for _, k, skip in hist if k == 1]
    assert any(expect) and not all(expect[1:])
    runtime(**{**inputs, "t": torch.tensor([1000.0])})  # t went up: a new run, the cache starts over
    assert runtime.cache.history == [(0, 0, False)]


def test_a_skipped_call_adds_the_stored_residual_and_runs_no_block():
    model = tiny_wan()
    inputs = wan_inputs(model.cfg)
    runtime = configure(model, RuntimeOptions(step_cache=StepCacheConfig(threshold=1e9)))
    calls = []
    for block in model.blocks:
        block.register_forward_hook(lambda *a: calls.append(1))
    with torch.no_grad():
        runtime(**inputs)  # t = 700: computed, residual stored
        n = len(calls)
        out = runtime(**{**inputs, "t": torch.tensor([650.0])})  # skipped
        assert len(calls) == n == len(model.blocks)
        unconfigure(model)
        # the same by hand: residual of the blocks at t=700, added to the tokens, head at t=650
        x = model.join_inputs(inputs["x"], inputs["clip_fea"], inputs["y"])
        tokens, grid = model.embed_video(x)
        from fantasytalking_core.wan.model import rope_freqs, rope_grid

        rot = rope_grid(rope_freqs(model.cfg.head_dim), grid)
        ctx = model.embed_context(inputs["context"], inputs["clip_fea"])
        h = tokens
        _, e0 = model.embed_time(torch.tensor([700.0]))
        for block in model.blocks:
            h = block(h, e0, rot, ctx, inputs["clip_fea"].shape[1])
        e650, _ = model.embed_time(torch.tensor([650.0]))
        expect = model.unpatchify(model.head(tokens + (h - tokens), e650), grid)
    torch.testing.assert_close(out, expect, atol=0, rtol=0)
