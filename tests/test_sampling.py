"""Sampling: schedule numbers, solvers on an exactly solvable flow, guidance formulas, batching, seeds."""

import math

import numpy as np
import pytest
import torch

from fantasytalking_core.sampling import (
    AudioGuidanceSchedule,
    Guidance,
    flow_sigmas,
    guided_model,
    initial_noise,
    run_passes_batched,
    sample_euler,
    sample_uni_pc,
    step_index,
)

# ----------------------------------------------------------------------------- schedule


@pytest.mark.parametrize("steps", [1, 4, 30, 50])
@pytest.mark.parametrize("shift", [1.0, 3.0, 5.0, 7.5])
def test_flow_sigmas_matches_shift_formula(steps, shift):
    sig = flow_sigmas(steps, shift)
    assert sig.shape == (steps + 1,) and sig.dtype == torch.float32
    assert sig[0].item() == 1.0 and sig[-1].item() == 0.0
    assert bool((sig[1:] < sig[:-1]).all())
    # independent: float64 numpy, unshifted t = 1 - k/steps for k < steps
    t = 1.0 - np.arange(steps) / steps
    ref = np.append(shift * t / (1 + (shift - 1) * t), 0.0)
    np.testing.assert_allclose(sig.double().numpy(), ref, rtol=0, atol=1e-6)


def test_flow_sigmas_range_and_errors():
    sig = flow_sigmas(10, 5.0, sigma_max=0.999, sigma_min=0.0)
    assert math.isclose(sig[0].item(), 5 * 0.999 / (1 + 4 * 0.999), rel_tol=1e-6)  # Wan's start
    with pytest.raises(ValueError, match="steps"):
        flow_sigmas(0)
    with pytest.raises(ValueError, match="shift"):
        flow_sigmas(10, shift=0.0)
    with pytest.raises(ValueError, match="sigma_min"):
        flow_sigmas(10, sigma_max=0.5, sigma_min=0.6)


# ----------------------------------------------------------------------------- solvers
# Data x0 ~ N(mu, sd^2) per dimension, x_t = (1-t) x0 + t eps. Then
#   E[x0 | x_t] = mu + (1-t) sd^2 / ((1-t)^2 sd^2 + t^2) * (x_t - (1-t) mu)
#   v(x_t, t) = E[eps - x0 | x_t] = (x_t - E[x0 | x_t]) / t
# and the ODE keeps z = (x_t - (1-t) mu) / std_t fixed, so noise eps lands exactly on mu + sd * eps.

MU = torch.tensor([0.5, -1.0, 2.0], dtype=torch.float64)
SD = torch.tensor([0.7, 1.0, 1.5], dtype=torch.float64)


def gaussian_velocity(x, sigma):
    t = float(sigma)
    xd = x.double()
    x0 = MU + (1 - t) * SD**2 / ((1 - t) ** 2 * SD**2 + t**2) * (xd - (1 - t) * MU)
    return ((xd - x0) / t).to(x.dtype)


@pytest.fixture(scope="module")
def noise():
    return initial_noise((4096, 3), seed=7)


def _err(sample, noise):
    return (sample.double() - (MU + SD * noise.double())).abs().max().item()


def test_euler_many_steps_recovers_gaussian(noise):
    out = sample_euler(gaussian_velocity, noise, flow_sigmas(400, shift=3.0))
    assert _err(out, noise) < 0.03
    # statistics: 4096 draws, so the sample mean/std themselves scatter by about sd / 64
    torch.testing.assert_close(out.double().mean(0), MU, atol=0.06, rtol=0)
    torch.testing.assert_close(out.double().std(0), SD, atol=0.06, rtol=0)


def test_unipc_few_steps_recovers_gaussian_and_beats_euler(noise):
    for steps in (10, 20):
        sig = flow_sigmas(steps, shift=3.0)
        e_unipc = _err(sample_uni_pc(gaussian_velocity, noise, sig), noise)
        e_euler = _err(sample_euler(gaussian_velocity, noise, sig), noise)
        assert e_unipc < e_euler / 2, (steps, e_unipc, e_euler)
    out = sample_uni_pc(gaussian_velocity, noise, flow_sigmas(20, shift=3.0))
    assert _err(out, noise) < 0.07
    torch.testing.assert_close(out.double().mean(0), MU, atol=0.06, rtol=0)
    torch.testing.assert_close(out.double().std(0), SD, atol=0.06, rtol=0)
    # third order is also convergent on the FantasyTalking schedule (shift 5, starts at sigma 1)
    assert _err(sample_uni_pc(gaussian_velocity, noise, flow_sigmas(40, 5.0), order=3), noise) < 0.05


def test_unipc_convergence_order_and_corrector(noise):
    def err(steps, **kw):
        return _err(sample_uni_pc(gaussian_velocity, noise, flow_sigmas(steps, shift=1.0), **kw), noise)

    e40, e80 = err(40), err(80)
    assert e40 / e80 > 3.5, (e40, e80)  # at least second order (Euler halves: ratio 2)
    # order 1: the predictor is Euler (below), so what beats Euler is UniC, at no extra model call
    euler40 = _err(sample_euler(gaussian_velocity, noise, flow_sigmas(40, shift=1.0)), noise)
    assert err(40, order=1) < 0.7 * euler40, (err(40, order=1), euler40)


def test_unipc_first_order_predictor_is_euler(noise):
    # UniP-1 is DDIM, x_t = (1-s_t) x0 + s_t eps, which equals an Euler step on the linear path; a
    # step with no earlier step has no UniC, so each first step of a schedule is the predictor alone
    sig = flow_sigmas(12, shift=5.0)
    for i in (0, 5, 11):
        a = sample_uni_pc(gaussian_velocity, noise, sig[i:i + 2], order=1)
        b = sample_euler(gaussian_velocity, noise, sig[i:i + 2])
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)
    assert not torch.allclose(sample_uni_pc(gaussian_velocity, noise, sig, order=1),
                              sample_euler(gaussian_velocity, noise, sig), atol=1e-4)  # UniC on later steps


@pytest.mark.parametrize("sampler", [sample_euler, sample_uni_pc])
def test_callback_and_interrupt(sampler, noise):
    sig = flow_sigmas(6)
    seen = []
    sampler(gaussian_velocity, noise, sig, callback=lambda i, n, x, d: seen.append((i, n, x.shape, d.shape)))
    assert seen == [(i, 6, noise.shape, noise.shape) for i in range(6)]

    calls = []

    def model(x, s):
        calls.append(float(s))
        return gaussian_velocity(x, s)

    with pytest.raises(InterruptedError, match="step 4 of 6"):
        sampler(model, noise, sig, should_stop=lambda: len(calls) == 3)
    assert len(calls) == 3

    def cb(i, n, x, d):
        if i == 1:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        sampler(gaussian_velocity, noise, sig, callback=cb)


def test_solver_input_errors(noise):
    with pytest.raises(ValueError, match="decreasing"):
        sample_euler(gaussian_velocity, noise, torch.tensor([0.5, 0.7, 0.0]))
    with pytest.raises(ValueError, match="order"):
        sample_uni_pc(gaussian_velocity, noise, flow_sigmas(4), order=4)


# ----------------------------------------------------------------------------- guidance


def test_audio_schedule_window_edges():
    s = AudioGuidanceSchedule(4.5, start=0.2, end=0.7)
    active = [i for i in range(30) if s.active(i, 30)]
    assert active == list(range(6, 21))  # 6/30 == 0.2 inclusive, 21/30 == 0.7 exclusive
    assert s.value(6, 30) == 4.5 and s.value(5, 30) == 1.0 and s.value(21, 30) == 1.0
    assert [i for i in range(30) if AudioGuidanceSchedule(5, 0.0, 0.1).active(i, 30)] == [0, 1, 2]
    assert all(AudioGuidanceSchedule(5).active(i, 7) for i in range(7))
    assert not any(AudioGuidanceSchedule(5, 0.5, 0.5).active(i, 10) for i in range(10))
    with pytest.raises(ValueError, match="start"):
        AudioGuidanceSchedule(5, 0.8, 0.2)
    with pytest.raises(ValueError, match="step"):
        s.value(30, 30)


def _outputs(seed=0):
    g = torch.Generator().manual_seed(seed)
    return {k: torch.randn(2, 3, 4, generator=g) for k in ("pos_audio", "pos_noaudio", "neg_noaudio", "neg_audio")}


@pytest.mark.parametrize(
    "t, a, shortcut, passes",
    [
        (5.0, 4.5, False, ("pos_audio", "pos_noaudio", "neg_noaudio")),
        (5.0, 1.0, False, ("pos_audio", "pos_noaudio", "neg_noaudio")),  # official: three passes at a == 1 too
        (5.0, 1.0, True, ("pos_audio", "neg_audio")),
        (5.0, 4.5, True, ("pos_audio", "pos_noaudio", "neg_noaudio")),  # the shortcut only acts where a == 1
        (1.0, 4.5, False, ("pos_audio", "pos_noaudio")),
        (1.0, 1.0, False, ("pos_audio",)),
    ],
)
def test_guidance_formula_per_case(t, a, shortcut, passes):
    g = Guidance(cfg_text=t, cfg_audio=a, two_pass_shortcut=shortcut)
    assert g.passes(0, 10) == passes
    o = _outputs()
    pa, pn, nn, na = (o[k].double() for k in ("pos_audio", "pos_noaudio", "neg_noaudio", "neg_audio"))
    expected = {
        3: nn + t * (pn - nn) + a * (pa - pn),
        2: na + t * (pa - na) if t != 1 else pn + a * (pa - pn),
        1: pa,
    }[len(passes)]
    got = g.combine({k: o[k] for k in passes}, 0, 10)
    torch.testing.assert_close(got.double(), expected, atol=1e-5, rtol=1e-5)


def test_guidance_defaults_are_the_official_infer_py():
    g = Guidance()
    assert (g.cfg_text, g.cfg_audio, g.audio_start, g.audio_end, g.two_pass_shortcut) == (5.0, 5.0, 0.0, 1.0, False)


def test_guidance_at_cfg_audio_1_is_the_official_three_pass_value():
    # official loop (wan_video.py): noaudio + 5 * (noaudio - no_cond) ... with audio_cfg_scale 1.0
    o = _outputs(2)
    got = Guidance(cfg_text=5.0, cfg_audio=1.0).combine(o, 3, 10)
    hand = o["neg_noaudio"] + 5.0 * (o["pos_noaudio"] - o["neg_noaudio"]) + 1.0 * (o["pos_audio"] - o["pos_noaudio"])
    torch.testing.assert_close(got, hand)
    short = Guidance(cfg_text=5.0, cfg_audio=1.0, two_pass_shortcut=True).combine(o, 3, 10)
    assert (short - hand).abs().max() > 0.1  # a different value, hence opt-in


def test_guidance_audio_window_inside_and_outside():
    g = Guidance(cfg_text=5.0, cfg_audio=4.5, audio_start=0.0, audio_end=0.5)
    assert [len(g.passes(i, 10)) for i in range(10)] == [3] * 10
    o = _outputs(1)
    pa, pn, nn = o["pos_audio"], o["pos_noaudio"], o["neg_noaudio"]
    torch.testing.assert_close(g.combine(o, 2, 10), nn + 5.0 * (pn - nn) + 4.5 * (pa - pn))  # inside
    torch.testing.assert_close(g.combine(o, 7, 10), nn + 5.0 * (pn - nn) + 1.0 * (pa - pn))  # outside: a = 1
    fast = Guidance(cfg_text=5.0, cfg_audio=4.5, audio_start=0.0, audio_end=0.5, two_pass_shortcut=True)
    assert [len(fast.passes(i, 10)) for i in range(10)] == [3] * 5 + [2] * 5
    torch.testing.assert_close(fast.combine(o, 7, 10), o["neg_audio"] + 5.0 * (o["pos_audio"] - o["neg_audio"]))
    with pytest.raises(KeyError, match="neg_noaudio"):
        g.combine({"pos_audio": o["pos_audio"], "pos_noaudio": o["pos_noaudio"]}, 0, 10)


def test_step_index_from_schedule():
    sig = flow_sigmas(9)
    assert [step_index(sig[i], sig) for i in range(9)] == list(range(9))
    assert step_index((sig[3] + sig[4]) / 2, sig) == 3
    assert step_index(float(sig[0]), sig) == 0


@pytest.mark.parametrize("sampler", [sample_euler, sample_uni_pc])
def test_guided_model_in_solver(sampler):
    sig = flow_sigmas(10)
    g = Guidance(cfg_text=3.0, cfg_audio=2.0, audio_end=0.3)
    log = []
    scale = {"pos_audio": 1.0, "pos_noaudio": 0.9, "neg_noaudio": 0.7, "neg_audio": 0.8}

    def denoise_passes(x, sigma, passes):
        log.append(passes)
        return {p: scale[p] * gaussian_velocity(x, sigma) for p in passes}

    x = initial_noise((8, 3), seed=3)
    out = sampler(guided_model(denoise_passes, g, sig), x, sig)
    assert [len(p) for p in log] == [3] * 10
    # the same run with the guided velocity written out by hand
    coef = [0.7 + 3 * (0.9 - 0.7) + 2 * (1.0 - 0.9)] * 3 + [0.7 + 3 * (0.9 - 0.7) + 1 * (1.0 - 0.9)] * 7
    ref = sampler(lambda x, s: coef[step_index(s, sig)] * gaussian_velocity(x, s), x, sig)
    torch.testing.assert_close(out, ref)


# ----------------------------------------------------------------------------- batching


def _toy_model(calls):
    w = torch.linspace(-1, 1, 5)

    def model_fn(x, sigma, context, audio_scale, mode="a"):
        calls.append(x.shape[0])
        assert sigma.shape == (x.shape[0],) and context.shape[0] == x.shape[0]
        out = x * (1 - sigma[:, None]) + context.sum(-1, keepdim=True) * w + audio_scale[:, None] ** 2
        return out if mode == "a" else -out

    return model_fn


def test_run_passes_batched_equals_separate_calls():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 5, generator=g)
    conds = {
        "pos_audio": {"context": torch.randn(2, 7, generator=g), "audio_scale": torch.ones(2), "mode": "a"},
        "pos_noaudio": {"context": torch.randn(2, 7, generator=g), "audio_scale": torch.zeros(2), "mode": "a"},
        "neg_noaudio": {"context": torch.randn(2, 7, generator=g), "audio_scale": torch.zeros(2), "mode": "a"},
    }
    passes = tuple(conds)
    calls = []
    model_fn = _toy_model(calls)
    sigma = torch.tensor(0.4)
    batched = run_passes_batched(model_fn, x, sigma, passes, conds)
    assert calls == [6]
    for p in passes:
        c = conds[p]
        ref = model_fn(x, sigma.expand(2), c["context"], c["audio_scale"], mode=c["mode"])
        torch.testing.assert_close(batched[p], ref)
    for mb in (1, 2, 4):
        calls.clear()
        chunked = run_passes_batched(model_fn, x, sigma, passes, conds.__getitem__, max_batch=mb)
        assert calls == [mb] * (6 // mb) + ([6 % mb] if 6 % mb else [])
        for p in passes:
            torch.testing.assert_close(chunked[p], batched[p])


def test_run_passes_batched_errors():
    x = torch.zeros(2, 5)
    calls = []
    ok = {"context": torch.zeros(2, 7), "audio_scale": torch.ones(2)}
    with pytest.raises(ValueError, match="mode"):
        run_passes_batched(_toy_model(calls), x, 0.5, ("a", "b"), {"a": {**ok, "mode": "a"}, "b": {**ok, "mode": "b"}})
    with pytest.raises(ValueError, match="leading dim 2"):
        run_passes_batched(_toy_model(calls), x, 0.5, ("a",), {"a": {**ok, "context": torch.zeros(3, 7)}})
    assert calls == []


# ----------------------------------------------------------------------------- noise


def test_initial_noise_reproducible():
    a = initial_noise((1, 16, 3, 8, 8), seed=1111)
    b = initial_noise((1, 16, 3, 8, 8), seed=1111)
    c = initial_noise((1, 16, 3, 8, 8), seed=1112)
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert a.dtype == torch.float32 and abs(a.std().item() - 1) < 0.1
    h = initial_noise((1, 16, 3, 8, 8), seed=1111, dtype=torch.bfloat16)
    assert h.dtype == torch.bfloat16 and torch.equal(h, a.to(torch.bfloat16))
    with pytest.raises(ValueError, match="seed"):
        initial_noise((2,), seed=-1)
