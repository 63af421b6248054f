import copy
import math

import pytest
import torch

from _factories import official_wan_shapes, tiny_wan, wan_inputs
from fantasytalking_core.attention import attention
from fantasytalking_core.wan import WanConfig, WanModel
from fantasytalking_core.wan.model import rope_apply, rope_freqs, rope_grid, sinusoidal_embedding_1d


@pytest.mark.parametrize("preset", ["wan21_i2v_14b", "wan21_t2v_14b", "wan21_t2v_1_3b"])
def test_full_size_keys_and_shapes_match_official_layout(preset):
    cfg = WanConfig.preset(preset)
    with torch.device("meta"):
        model = WanModel(cfg)
    ours = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    official = official_wan_shapes(cfg)
    assert sorted(set(ours) - set(official)) == []
    assert sorted(set(official) - set(ours)) == []
    assert ours == official
    # A plain strict load of a state dict with exactly the official keys and shapes is accepted.
    with torch.device("meta"):
        fake = {k: torch.empty(s) for k, s in official.items()}
    model.load_state_dict(fake, strict=True, assign=True)


def test_i2v_14b_parameter_count():
    cfg = WanConfig.wan21_i2v_14b()
    total = sum(math.prod(s) for s in official_wan_shapes(cfg).values())
    with torch.device("meta"):
        model = WanModel(cfg)
    assert sum(p.numel() for p in model.parameters()) == total
    assert 16.3e9 < total < 16.5e9  # Wan2.1-I2V-14B is 16.4 B parameters with its image branch


def _explicit_attention(q, k, v, k_lens=None):
    b, lq, n, d = q.shape
    scores = torch.einsum("bqnd,bknd->bnqk", q.double(), k.double()) / math.sqrt(d)
    if k_lens is not None:
        keep = torch.arange(k.shape[1])[None, :] < k_lens[:, None]
        scores = scores.masked_fill(~keep[:, None, None, :], float("-inf"))
    weights = torch.softmax(scores, dim=-1)
    return torch.einsum("bnqk,bknd->bqnd", weights, v.double()).float()


def test_attention_matches_explicit_softmax_with_padding_masks():
    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(4, 5, 2, 8, generator=g) for _ in range(3))
    k_lens = torch.tensor([5, 3, 1, 2])
    torch.testing.assert_close(attention(q, k, v), _explicit_attention(q, k, v), atol=1e-5, rtol=1e-5)
    out = attention(q, k, v, k_lens)
    torch.testing.assert_close(out, _explicit_attention(q, k, v, k_lens), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(out[2], v[2, :1].expand(5, -1, -1))  # one key: its value, whatever q
    # Changing a padded key or value changes nothing.
    k2, v2 = k.clone(), v.clone()
    k2[1, 3:] += 10
    v2[1, 3:] -= 10
    assert torch.equal(attention(q, k2, v2, k_lens)[1], out[1])


def test_attention_rejects_bad_shapes_and_backends():
    q = torch.randn(1, 2, 8)
    with pytest.raises(ValueError, match=r"\[B, L, heads, head_dim\]"):
        attention(q, q, q)
    x = torch.randn(1, 2, 1, 8)
    with pytest.raises(ValueError, match="unknown"):
        attention(x, x, x, backend="triton")
    with pytest.raises(RuntimeError, match="CUDA"):
        attention(x, x, x, backend="flash")


def test_sinusoidal_embedding_formula():
    t = torch.tensor([0.0, 1.0, 999.0])
    emb = sinusoidal_embedding_1d(8, t)
    i = torch.arange(4, dtype=torch.float64)
    angles = t.double()[:, None] * 10000 ** (-i / 4)
    torch.testing.assert_close(emb, torch.cat([angles.cos(), angles.sin()], dim=1))


def test_rope_rotates_each_axis_band_by_its_own_position():
    head_dim = 128
    grid = (3, 4, 5)
    rot = rope_grid(rope_freqs(head_dim), grid)
    x = torch.randn(1, 60, 1, head_dim)
    out = rope_apply(x, rot)
    # token (f, h, w) = (2, 1, 3); bands: time 22 pairs, height 21, width 21 (Wan's split of 64)
    f, h, w = 2, 1, 3
    idx = (f * 4 + h) * 5 + w
    pairs = x[0, idx, 0].double().view(64, 2)
    dims = [(0, 22, 44, f), (22, 43, 42, h), (43, 64, 42, w)]
    expected = []
    for start, end, band_dim, pos in dims:
        j = torch.arange(end - start, dtype=torch.float64)
        theta = pos / 10000 ** (2 * j / band_dim)
        a, b = pairs[start:end, 0], pairs[start:end, 1]
        expected.append(torch.stack([a * theta.cos() - b * theta.sin(), a * theta.sin() + b * theta.cos()], 1))
    torch.testing.assert_close(out[0, idx, 0].double(), torch.cat(expected).flatten(), atol=1e-5, rtol=1e-5)


def test_forward_shapes_and_unpatchify_order():
    model = tiny_wan()
    inputs = wan_inputs(model.cfg, batch=2)
    out = model(**inputs)
    assert out.shape == (2, 16, 3, 4, 6) and out.dtype == torch.float32
    # model.unpatchify follows Wan's per-sample einsum 'fhwpqrc->cfphqwr' (wan/modules/model.py)
    tokens = torch.randn(2, 3 * 2 * 3, 64)
    ours = model.unpatchify(tokens, (3, 2, 3))
    for b in range(2):
        ref = torch.einsum("fhwpqrc->cfphqwr", tokens[b].view(3, 2, 3, 1, 2, 2, 16)).reshape(16, 3, 4, 6)
        assert torch.equal(ours[b], ref)


def test_t2v_variant_runs_without_image_inputs():
    model = tiny_wan(model_type="t2v")
    assert not hasattr(model, "img_emb")
    out = model(**wan_inputs(model.cfg))
    assert out.shape == (1, 16, 3, 4, 6)


def test_batch_rows_are_independent():
    model = tiny_wan()
    inputs = wan_inputs(model.cfg, batch=2)
    both = model(**inputs)
    first = model(**{k: v[:1] for k, v in inputs.items()})
    torch.testing.assert_close(both[:1], first, atol=1e-5, rtol=1e-5)


def test_time_embedding_projection_and_head_run_in_fp32_inside_bf16():
    """As the official DiT's float32 autocast regions: with bf16 weights, the time embedding, time
    projection and head equal a float32 model holding the same (bf16-valued) weights bit for bit,
    while the blocks compute in bf16 and the patch embedding's output stays bf16."""
    m16 = tiny_wan().to(torch.bfloat16)
    m32 = copy.deepcopy(m16).float()  # the same weight values, plain float32 layers
    t = torch.tensor([999.0, 420.5])
    (e16, e0_16), (e32, e0_32) = m16.embed_time(t), m32.embed_time(t)
    assert e16.dtype == e0_16.dtype == torch.float32
    assert torch.equal(e16, e32) and torch.equal(e0_16, e0_32)
    x = torch.randn(2, 24, m16.cfg.dim)
    head16 = m16.head(x, e16)
    assert head16.dtype == torch.float32 and torch.equal(head16, m32.head(x, e32))
    # computing the head in bf16 would differ: the test can tell
    w = m16.head.head
    mod = (m16.head.modulation.float() + e16.unsqueeze(1)).chunk(2, dim=1)
    in_bf16 = w((m16.head.norm(x) * (1 + mod[1]) + mod[0]).bfloat16()).float()
    assert not torch.equal(head16, in_bf16)
    inputs = wan_inputs(m16.cfg)
    tokens, _ = m16.embed_video(m16.join_inputs(inputs["x"], inputs["clip_fea"], inputs["y"]))
    assert tokens.dtype == torch.bfloat16  # rounded as under autocast; the residual stream is fp32 after block 0
    seen = []
    hook = m16.blocks[0].self_attn.q.register_forward_pre_hook(lambda mod, args: seen.append(args[0].dtype))
    block_out = m16.blocks[0](tokens, e0_16[:1], rope_grid(rope_freqs(128), (3, 2, 3)),
                              m16.embed_context(inputs["context"], inputs["clip_fea"]), 257)
    hook.remove()
    assert seen == [torch.bfloat16] and block_out.dtype == torch.float32  # bf16 matmuls, fp32 residual


def test_bf16_weights_run_close_to_fp32():
    model = tiny_wan()
    inputs = wan_inputs(model.cfg)
    ref = model(**inputs)
    out = model.to(torch.bfloat16)(**inputs)
    assert out.dtype == torch.float32
    assert (out - ref).abs().max() < 0.1 * ref.abs().max()


def test_bad_inputs_give_clear_errors():
    model = tiny_wan()
    inputs = wan_inputs(model.cfg)
    with pytest.raises(ValueError, match="clip_fea"):
        model(inputs["x"], inputs["t"], inputs["context"])
    with pytest.raises(ValueError, match="channels"):
        model(**{**inputs, "y": inputs["y"][:, :4]})
    with pytest.raises(ValueError, match="divisible by the patch size"):
        odd = wan_inputs(model.cfg, h=5)
        model(**odd)
    with pytest.raises(ValueError, match="at most 32"):
        model(**{**inputs, "context": torch.randn(1, 40, model.cfg.text_dim)})
    with pytest.raises(ValueError, match="UMT5"):
        model(**{**inputs, "context": torch.randn(1, 4, 10)})


def test_unknown_preset_and_bad_config():
    with pytest.raises(ValueError, match="unknown Wan preset"):
        WanConfig.preset("wan22")
    with pytest.raises(ValueError, match="divisible"):
        WanConfig(dim=100, num_heads=3)
