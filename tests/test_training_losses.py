"""Training math: flow-matching inputs, the lip-masked loss against a hand computation, the
per-sample draws (dropout rates, sigma distribution, determinism), the data order, the configs."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch

from training.config import LossConfig, PrepareConfig, StageConfig, TrainConfig
from training.dataset import PositionPlan, piece_at
from fantasytalking_core.sampling import shift_sigma
from training.losses import draw, masked_mse, noisy_latents, sample_losses

CONFIGS = Path(__file__).resolve().parents[1] / "training" / "configs"


def test_noisy_latents_follow_wan_flow_matching():
    g = torch.Generator().manual_seed(0)
    x0, noise = torch.randn(2, 16, 3, 4, 4, generator=g), torch.randn(2, 16, 3, 4, 4, generator=g)
    sigma = torch.tensor([0.25, 0.9])
    x_t, target = noisy_latents(x0, noise, sigma)
    for b in range(2):
        s = float(sigma[b])
        assert torch.allclose(x_t[b], (1 - s) * x0[b] + s * noise[b], atol=1e-6)
    assert torch.equal(target, noise - x0)
    # the sampler's Euler step from sigma to 0 with the true velocity recovers x0 exactly
    assert torch.allclose(x_t - sigma.view(-1, 1, 1, 1, 1) * target, x0, atol=1e-5)


def test_masked_loss_equals_hand_computation():
    g = torch.Generator().manual_seed(1)
    B, C, T, H, W = 3, 4, 2, 3, 5
    pred, target = torch.randn(B, C, T, H, W, generator=g), torch.randn(B, C, T, H, W, generator=g)
    mask = torch.rand(B, T, H, W, generator=g)
    mask[1] = (mask[1] > 0.6).float()  # a binary mask
    mask[2] = 0.0  # no lips found: plain MSE
    got = masked_mse(pred, target, mask)
    for b in range(B):
        num = den = 0.0
        for c in range(C):
            for t in range(T):
                for h in range(H):
                    for w in range(W):
                        m = float(mask[b, t, h, w])
                        num += m * float(pred[b, c, t, h, w] - target[b, c, t, h, w]) ** 2
                        den += m
        plain = sum(float(v) ** 2 for v in (pred[b] - target[b]).flatten()) / (C * T * H * W)
        want = num / den if den > 0 else plain
        assert math.isclose(float(got[b]), want, rel_tol=1e-5), (b, float(got[b]), want)
    # an all-ones mask is the plain MSE; a mask scaled by a constant gives the same loss
    ones = torch.ones(B, T, H, W)
    assert torch.allclose(masked_mse(pred, target, ones), (pred - target).pow(2).mean(dim=(1, 2, 3, 4)))
    assert torch.allclose(masked_mse(pred, target, mask * 0.3), got, rtol=1e-5)
    # per sample: masked where asked, plain elsewhere
    use = torch.tensor([True, False, True])
    mixed = sample_losses(pred, target, mask, use)
    assert torch.allclose(mixed[0], got[0]) and torch.allclose(mixed[2], got[2])
    assert torch.allclose(mixed[1], (pred[1] - target[1]).pow(2).mean())


def test_masked_loss_counts_only_lip_cells():
    pred = torch.zeros(1, 16, 2, 4, 4)
    target = torch.zeros(1, 16, 2, 4, 4)
    target[0, :, 1, 2, 2] = 3.0  # the only error sits inside the mask
    target[0, :, 0, 0, 0] = 100.0  # a huge error outside the mask is ignored
    mask = torch.zeros(1, 2, 4, 4)
    mask[0, 1, 2, 2] = 1.0
    assert float(masked_mse(pred, target, mask)[0]) == pytest.approx(9.0)


def test_dropout_rates_measured_over_many_draws():
    cfg = LossConfig(drop_image=0.1, drop_audio=0.1, drop_prompt=0.1, eta=0.2)
    n = 20000
    d = [draw(seed=3, position=p, latent_shape=(1,), cfg=cfg) for p in range(n)]
    drop = {k: np.array([1.0 - getattr(x, f"keep_{k}") for x in d]) for k in ("image", "audio", "prompt")}
    tol = 4 * math.sqrt(0.1 * 0.9 / n)
    for k, v in drop.items():
        assert abs(v.mean() - 0.1) < tol, (k, v.mean())
    for a, b in (("image", "audio"), ("image", "prompt"), ("audio", "prompt")):  # independent coins
        assert abs((drop[a] * drop[b]).mean() - 0.01) < 4 * math.sqrt(0.01 * 0.99 / n)
    masked = np.array([x.p > cfg.eta for x in d])
    assert abs(masked.mean() - 0.8) < 4 * math.sqrt(0.16 / n)
    # sigma = shift(u) with u uniform: undoing the shift gives a uniform sample
    from scipy.stats import kstest

    sigma = np.array([x.sigma for x in d])
    u = sigma / (cfg.shift - (cfg.shift - 1) * sigma)
    assert kstest(u, "uniform").pvalue > 1e-3
    assert np.allclose(shift_sigma(torch.tensor(u), cfg.shift).numpy(), sigma, atol=1e-9)
    assert np.median(sigma) == pytest.approx(5 * 0.5 / (1 + 4 * 0.5), abs=0.02)  # shift 5 pushes sigma up


def test_draws_depend_only_on_seed_and_position():
    cfg = LossConfig()
    a, b = draw(0, 17, (16, 2, 4, 4), cfg), draw(0, 17, (16, 2, 4, 4), cfg)
    assert torch.equal(a.noise, b.noise) and a.sigma == b.sigma and a.p == b.p
    c = draw(0, 18, (16, 2, 4, 4), cfg)
    d = draw(1, 17, (16, 2, 4, 4), cfg)
    assert not torch.equal(a.noise, c.noise) and not torch.equal(a.noise, d.noise)
    assert a.noise.std().item() == pytest.approx(1.0, abs=0.15)
    off = draw(0, 17, (16, 2, 4, 4), LossConfig(drop_image=0.0, drop_audio=0.0, drop_prompt=0.0))
    assert off.keep_image == off.keep_audio == off.keep_prompt == 1.0


def test_data_order_is_one_stream_whatever_the_world_size():
    n = 7
    for epoch in range(3):
        assert sorted(piece_at(5, n, epoch * n + i) for i in range(n)) == list(range(n))  # a permutation
    assert [piece_at(5, n, i) for i in range(n)] != [piece_at(5, n, n + i) for i in range(n)]  # reshuffled
    for step in range(3):
        world2 = [k for r in range(2) for k in PositionPlan(5, n, 2, r, 1, 1).keys(step * 2, 0)]
        accum2 = [k for m in range(2) for k in PositionPlan(5, n, 1, 0, 1, 2).keys(step * 2, m)]
        assert sorted(world2) == sorted(accum2)
        assert sorted(p for p, _ in world2) == [step * 2, step * 2 + 1]
    # the iterator walks steps of world * batch * accum positions from `start`
    plan = PositionPlan(5, n, world=2, rank=1, batch_size=2, grad_accum=3, start=12)
    it = iter(plan)
    first = [next(it) for _ in range(4)]
    assert [[p for p, _ in b] for b in first] == [[14, 15], [18, 19], [22, 23], [26, 27]]


def test_configs_load_and_reject_typos(tmp_path):
    paper = TrainConfig.load(CONFIGS / "paper.yaml")
    assert [(s.steps, s.audio, s.lip_mask_loss) for s in paper.stages] == [(80000, "global", False), (20000, "frame", True)]
    assert paper.optim.lr == 1e-4 and paper.loss.eta == 0.2 and paper.model.audio_scale == 1.0
    assert paper.model.id_scale == 0.5 and paper.model.trainable == "adapters" and paper.model.precision == "bf16"
    assert (paper.loss.drop_image, paper.loss.drop_audio, paper.loss.drop_prompt) == (0.1, 0.1, 0.1)
    assert paper.stage_at(79999)[1].name == "stage1" and paper.stage_at(80000)[1].name == "stage2"
    tiny = TrainConfig.load(CONFIGS / "tiny.yaml")
    assert tiny == TrainConfig.tiny().with_(stages=tiny.stages, run_dir=tiny.run_dir)
    assert tiny.total_steps == 80 and tiny.model.trainable == "full"
    bad = tmp_path / "bad.yaml"
    bad.write_text("optim:\n  lr: 1e-3\n  warmpu_steps: 3\n")
    with pytest.raises(ValueError, match=r"unknown setting optim\.'warmpu_steps'.*warmup_steps"):
        TrainConfig.load(bad)
    over = TrainConfig.from_dict({"preset": "tiny"}, ["optim.lr=2e-3", "model.trainable=lora", "model.lora_rank=4"])
    assert over.optim.lr == 2e-3 and over.model.trainable == "lora" and over.model.lora_rank == 4
    with pytest.raises(ValueError, match="model.trainable must be one of"):
        TrainConfig.from_dict({"preset": "tiny"}, ["model.trainable=everything"])
    with pytest.raises(ValueError, match="audio must be one of"):
        StageConfig("s", 3, "window")
    # the names before "clip" came to mean only CLIP still load, with a note naming the new one
    with pytest.warns(FutureWarning, match="'clip' is now called 'global'"):
        old = TrainConfig.from_dict({"preset": "tiny"}, ["stages=[{name: s1, steps: 2, audio: clip}]"])
    assert old.stages[0].audio == "global"
    from training.config import renamed_prepare_keys

    with pytest.warns(FutureWarning, match="'clip_stride' is now called 'piece_stride'"):
        assert renamed_prepare_keys({"clip_stride": 9, "fps": 23.0}, "--set") == {"piece_stride": 9, "fps": 23.0}
    with pytest.raises(ValueError, match="4k\\+1"):
        PrepareConfig(num_frames=80)
    saved = tmp_path / "saved.yaml"
    over.save(saved)
    assert TrainConfig.load(saved) == over
