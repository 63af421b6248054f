import math

import pytest
import torch

from _factories import tiny_audio, tiny_wan, wan_inputs
from fantasytalking_core import checkpoints as ck
from fantasytalking_core.adapters import (
    AudioCondition,
    IdentityAdapter,
    MotionAdapter,
    IdentityAdapterConfig,
    MotionAdapterConfig,
    attach_adapters,
)
from fantasytalking_core.wan import init_random_


def tiny_identity(cfg, seed=4, random=True):
    module = IdentityAdapter(IdentityAdapterConfig.for_wan(cfg, id_dim=32, num_queries=4, heads=4, face_dim=16))
    return init_random_(module, seed=seed, std=0.2).eval() if random else module.eval()


def tiny_motion(cfg, seed=6, random=True):
    module = MotionAdapter(MotionAdapterConfig.for_wan(cfg, freq_dim=32, hidden=48))
    return init_random_(module, seed=seed, std=0.2).eval() if random else module.eval()


def _explicit(q, k, v, heads):
    d = q.shape[-1] // heads
    qh, kh, vh = (x.double().view(x.shape[0], x.shape[1], heads, d).transpose(1, 2) for x in (q, k, v))
    w = torch.softmax(qh @ kh.transpose(-1, -2) / math.sqrt(d), -1)
    return (w @ vh).transpose(1, 2).reshape(q.shape).float()


def test_untrained_identity_and_motion_leave_the_model_unchanged():
    model = tiny_wan()
    inputs = wan_inputs(model.cfg)
    plain = model(**inputs)
    ident, motion = tiny_identity(model.cfg, random=False), tiny_motion(model.cfg, random=False)
    tokens = ident.condition(torch.randn(16))
    with attach_adapters(model, identity=ident, motion=motion) as att:
        with att.conditioned(identity=tokens, id_scale=0.5, motion=motion.condition(0.9, 0.1)):
            assert torch.equal(model(**inputs), plain)


def test_identity_attention_matches_explicit_reference_and_adds_to_audio():
    model = tiny_wan(num_layers=1)
    ident, audio = tiny_identity(model.cfg), tiny_audio(model.cfg)
    face = torch.randn(2, 16)
    tokens = ident.condition(face)
    assert tokens.shape == (2, 4, 32)
    q = torch.randn(2, 10, model.cfg.dim)
    block = ident.blocks[0]
    ref = _explicit(q, block.k_id(tokens), block.v_id(tokens), model.cfg.num_heads)
    torch.testing.assert_close(ident.attend(0, q, tokens, model.cfg.num_heads), ref, atol=1e-5, rtol=1e-5)

    # Eq. 4: o(text + image + l1 * audio + l2 * identity); check on the block's cross-attention.
    inputs = wan_inputs(model.cfg)
    cond = AudioCondition(torch.randn(1, 6, 32))
    cross = model.blocks[0].cross_attn
    x = torch.randn(1, 18, model.cfg.dim)
    ctx = model.embed_context(inputs["context"], inputs["clip_fea"])
    with attach_adapters(model, audio=audio, identity=ident) as att:
        with att.conditioned(audio=cond, audio_scale=1.0, identity=tokens[:1], id_scale=0.0):
            with_audio = cross(x, ctx, 257)
        with att.conditioned(audio=cond, audio_scale=0.0, identity=tokens[:1], id_scale=0.5):
            with_id = cross(x, ctx, 257)
        with att.conditioned(audio=cond, audio_scale=1.0, identity=tokens[:1], id_scale=0.5):
            both = cross(x, ctx, 257)
    plain = cross(x, ctx, 257)
    # o is affine: o(s + a + i) = o(s + a) + o(s + i) - o(s)
    torch.testing.assert_close(both, with_audio + with_id - plain, atol=1e-4, rtol=1e-4)
    assert not torch.allclose(with_id, plain)


def test_qformer_depth_is_configurable_and_trains():
    cfg = tiny_wan().cfg
    for depth in (1, 3):
        ident = IdentityAdapter(IdentityAdapterConfig.for_wan(cfg, id_dim=32, num_queries=4, heads=4, face_dim=16, depth=depth))
        assert len(ident.qformer.layers) == depth
    ident = tiny_identity(cfg)
    q = torch.randn(1, 6, cfg.dim)
    ident.attend(0, q, ident.condition(torch.randn(16)), 2).pow(2).sum().backward()
    assert ident.qformer.layers[0].q.weight.grad.abs().sum() > 0


def test_identity_rejects_bad_embeddings():
    ident = tiny_identity(tiny_wan().cfg)
    with pytest.raises(ValueError, match=r"\[B, 16\].*ArcFace"):
        ident.condition(torch.randn(1, 512))
    with pytest.raises(ValueError, match="NaN"):
        ident.condition(torch.full((16,), float("nan")))


def test_motion_is_added_to_the_timestep_embedding():
    model = tiny_wan()
    motion = tiny_motion(model.cfg)
    t = torch.tensor([300.0])
    e_plain, _ = model.embed_time(t)
    omegas = motion.condition(0.8, 0.3)
    with attach_adapters(model, motion=motion) as att, att.conditioned(motion=omegas, motion_scale=1.0):
        e_motion, e0_motion = model.embed_time(t)
    torch.testing.assert_close(e_motion, e_plain + motion.embed(omegas), atol=1e-6, rtol=1e-6)
    torch.testing.assert_close(e0_motion, model.time_projection(e_motion).unflatten(1, (6, model.cfg.dim)))
    # Different intensities give different embeddings; face and body are told apart.
    assert not torch.allclose(motion.embed(motion.condition(0.8, 0.3)), motion.embed(motion.condition(0.3, 0.8)))
    inputs = wan_inputs(model.cfg)
    with attach_adapters(model, motion=motion) as att:
        with att.conditioned(motion=motion.condition(0.1, 0.1)):
            low = model(**inputs)
        with att.conditioned(motion=motion.condition(0.9, 0.9)):
            high = model(**inputs)
    assert not torch.allclose(low, high)


def test_motion_sliders_are_validated():
    with pytest.raises(ValueError, match=r"omega_l \(facial motion\) must be in \[0, 1\]"):
        MotionAdapter.condition(1.5, 0.5)
    with pytest.raises(ValueError, match="omega_b"):
        MotionAdapter.condition(0.5, float("nan"))
    assert MotionAdapter.condition(torch.tensor([0.2, 0.4]), torch.tensor([0.5, 0.6])).shape == (2, 2)


def test_adapter_file_carries_all_modules_together_or_apart(tmp_path):
    cfg = tiny_wan().cfg
    audio, ident, motion = tiny_audio(cfg), tiny_identity(cfg), tiny_motion(cfg)
    norm = {"omega_l": {"low": 0.001, "high": 0.02}, "omega_b": {"low": 0.0, "high": 0.05}}
    both = ck.save_adapters(tmp_path / "all.safetensors", {"audio": audio, "identity": ident, "motion": motion},
                            extra={"motion_normalization": norm})
    modules, extra = ck.load_adapters(both)
    assert set(modules) == {"audio", "identity", "motion"} and extra["motion_normalization"] == norm
    for name, original in (("audio", audio), ("identity", ident), ("motion", motion)):
        assert modules[name].cfg == original.cfg
        for k, v in original.state_dict().items():
            assert torch.equal(modules[name].state_dict()[k], v), (name, k)
    alone = ck.save_adapters(tmp_path / "motion.safetensors", {"motion": motion})
    modules, _ = ck.load_adapters(alone)
    assert set(modules) == {"motion"}
    assert ck.describe(both)["format"] == "fantasytalking_adapters"


def test_adapters_sized_for_another_model_are_refused():
    model = tiny_wan()
    other = tiny_wan(dim=128, num_heads=1).cfg
    with pytest.raises(ValueError, match="identity adapter is 128 wide but the DiT is 256"):
        attach_adapters(model, identity=tiny_identity(other))
    with pytest.raises(ValueError, match="motion adapter is 128 wide"):
        attach_adapters(model, motion=tiny_motion(other))
