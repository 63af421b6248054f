import math
import types

import pytest
import torch
import torch.nn as nn

from _factories import tiny_audio, tiny_wan, wan_inputs
from fantasytalking_core.adapters import AudioCondition, AudioAdapter, attach_adapters
from fantasytalking_core.adapters.audio import AudioAdapterConfig


def _frame_condition(frames: int, proj_dim: int = 32, win: int = 6, seed: int = 5, lens=None):
    g = torch.Generator().manual_seed(seed)
    tokens = torch.randn(1, frames, win, proj_dim, generator=g)
    k_lens = torch.tensor(lens if lens is not None else [win - (i % 3) for i in range(frames)])
    for t, n in enumerate(k_lens.tolist()):
        tokens[:, t, n:] = 0  # padding is zero, as the released windowing makes it
    return AudioCondition(tokens, k_lens)


def _softmax_attend(q, k, v, heads, keep=None):
    """Explicit attention for [L, dim] q and [M, dim] k/v."""
    d = q.shape[-1] // heads
    qh, kh, vh = (x.double().view(x.shape[0], heads, d).transpose(0, 1) for x in (q, k, v))
    scores = qh @ kh.transpose(1, 2) / math.sqrt(d)
    if keep is not None:
        scores = scores.masked_fill(~keep[None, None, :], float("-inf"))
    return (torch.softmax(scores, -1) @ vh).transpose(0, 1).reshape(q.shape[0], -1).float()


def _reference_cross_attn(attn, proc, cond, scale, frames):
    """The official WanCrossAttentionProcessor, written out with explicit softmax (batch 1)."""

    def forward(x, context, clip_tokens=0):
        x = x.to(attn.q.weight.dtype)[0]
        ctx_img, ctx = context[0, :clip_tokens], context[0, clip_tokens:]
        q = attn.norm_q(attn.q(x))
        text = _softmax_attend(q, attn.norm_k(attn.k(ctx)), attn.v(ctx), attn.num_heads)
        img = _softmax_attend(q, attn.norm_k_img(attn.k_img(ctx_img)), attn.v_img(ctx_img), attn.num_heads)
        per = q.shape[0] // frames
        audio = []
        for t in range(frames):
            tok = cond.tokens[0, t]
            keep = torch.arange(tok.shape[0]) < cond.k_lens[t]
            audio.append(_softmax_attend(q[t * per:(t + 1) * per], proc.k_proj(tok), proc.v_proj(tok), attn.num_heads, keep))
        return attn.o(text + img + scale * torch.cat(audio))[None]

    return forward


def test_attached_audio_matches_the_official_formula():
    model = tiny_wan()
    audio = tiny_audio(model.cfg)
    inputs = wan_inputs(model.cfg)
    cond = _frame_condition(3)
    with attach_adapters(model, audio=audio) as att, att.conditioned(audio=cond, audio_scale=0.7):
        ours = model(**inputs)
    for i, block in enumerate(model.blocks):
        block.cross_attn.forward = _reference_cross_attn(block.cross_attn, audio.processor(i), cond, 0.7, 3)
    reference = model(**inputs)
    torch.testing.assert_close(ours, reference, atol=2e-4, rtol=2e-4)


def test_zero_scale_no_audio_and_untrained_adapter_equal_plain_wan_exactly():
    model = tiny_wan()
    inputs = wan_inputs(model.cfg)
    plain = model(**inputs)
    cond = _frame_condition(3)
    att = attach_adapters(model, audio=tiny_audio(model.cfg))
    with att:
        with att.conditioned(audio=cond, audio_scale=0.0):
            assert torch.equal(model(**inputs), plain)
        assert torch.equal(model(**inputs), plain)  # no audio condition set
        with att.conditioned(audio=cond, audio_scale=1.0):
            assert not torch.allclose(model(**inputs), plain)
    fresh = AudioAdapter(AudioAdapterConfig.for_wan(model.cfg, proj_dim=32))  # zero-initialised k/v
    with attach_adapters(model, audio=fresh) as att2, att2.conditioned(audio=cond, audio_scale=1.0):
        assert torch.equal(model(**inputs), plain)
    assert torch.equal(model(**inputs), plain)  # detached again


def test_frame_level_window_t_only_changes_latent_frame_t():
    model = tiny_wan(num_layers=1)  # after its cross-attention a block only mixes within a token
    audio = tiny_audio(model.cfg)
    inputs = wan_inputs(model.cfg, frames=4)
    cond = _frame_condition(4)
    att = attach_adapters(model, audio=audio)
    with att, att.conditioned(audio=cond):
        base = model(**inputs)
        for t in range(4):
            bumped = AudioCondition(cond.tokens.clone(), cond.k_lens)
            bumped.tokens[0, t, 0] += 3.0
            with att.conditioned(audio=bumped):
                changed = (model(**inputs) - base).abs().amax(dim=(0, 1, 3, 4)) > 1e-6
            assert changed.tolist() == [i == t for i in range(4)]
        # Padded positions beyond k_lens are masked: changing them changes nothing.
        padded = AudioCondition(cond.tokens.clone(), cond.k_lens)
        padded.tokens[0, 1, cond.k_lens[1]:] = 7.0
        with att.conditioned(audio=padded):
            assert torch.equal(model(**inputs), base)


def test_clip_level_every_token_sees_all_audio():
    model = tiny_wan(num_layers=1)
    audio = tiny_audio(model.cfg)
    inputs = wan_inputs(model.cfg, frames=3)
    tokens = torch.randn(1, 9, 32)
    att = attach_adapters(model, audio=audio)
    with att, att.conditioned(audio=AudioCondition(tokens)):
        base = model(**inputs)
        bumped = tokens.clone()
        bumped[0, 8] += 3.0
        with att.conditioned(audio=AudioCondition(bumped)):
            changed = (model(**inputs) - base).abs().amax(dim=(0, 1, 3, 4)) > 1e-6
    assert changed.all()
    # Against explicit attention for one block's audio term.
    q = torch.randn(2, 12, model.cfg.dim)
    proc = audio.processor(0)
    out = proc(q, AudioCondition(tokens), model.cfg.num_heads)
    ref = _softmax_attend(q[1], proc.k_proj(tokens[0]), proc.v_proj(tokens[0]), model.cfg.num_heads)
    torch.testing.assert_close(out[1], ref, atol=1e-5, rtol=1e-5)


def test_per_row_scales_equal_separate_runs():
    model = tiny_wan()
    audio = tiny_audio(model.cfg)
    one = wan_inputs(model.cfg)
    three = {k: torch.cat([v] * 3) for k, v in one.items()}
    cond = _frame_condition(3)
    att = attach_adapters(model, audio=audio)
    with att:
        with att.conditioned(audio=cond, audio_scale=torch.tensor([0.0, 1.0, 0.5])):
            batched = model(**three)
        separate = []
        for s in (0.0, 1.0, 0.5):
            with att.conditioned(audio=cond, audio_scale=s):
                separate.append(model(**one))
    torch.testing.assert_close(batched, torch.cat(separate), atol=1e-5, rtol=1e-5)


def test_patches_keep_state_dict_keys_and_share_weights():
    model = tiny_wan()
    keys = list(model.state_dict())
    att = attach_adapters(model, audio=tiny_audio(model.cfg))
    patches = att.patches()
    assert set(patches) == {f"blocks.{i}.cross_attn.{m}" for i in range(2) for m in ("norm_q", "o")} | {"patch_embedding"}
    original_o = model.blocks[0].cross_attn.o
    with att:
        assert list(model.state_dict()) == keys
        patched_o = model.blocks[0].cross_attn.o
        assert patched_o is not original_o and patched_o.weight is original_o.weight
        # A host that swaps a weight on the patched module (as LoRA patching does) is seen by it.
        patched_o.weight = nn.Parameter(torch.zeros_like(patched_o.weight))
        assert torch.equal(original_o.weight, patched_o.weight)
        with pytest.raises(RuntimeError, match="already has FantasyTalking adapters"):
            attach_adapters(model, audio=tiny_audio(model.cfg)).patches()
    assert model.blocks[0].cross_attn.o is original_o


def test_applying_patches_by_path_equals_the_context_manager():
    model = tiny_wan()
    audio = tiny_audio(model.cfg)
    inputs = wan_inputs(model.cfg)
    cond = _frame_condition(3)
    with attach_adapters(model, audio=audio) as att, att.conditioned(audio=cond):
        expected = model(**inputs)
    att = attach_adapters(model, audio=audio)
    for path, module in att.patches().items():  # what a host's object patches do
        parent, _, name = path.rpartition(".")
        setattr(model.get_submodule(parent), name, module)
    with att.conditioned(audio=cond):
        assert torch.equal(model(**inputs), expected)


class _HostCrossAttention(nn.Module):
    """A differently written host cross-attention with Wan's layout (as ComfyUI's is)."""

    def __init__(self, dim, heads, call_norm_q=True):
        super().__init__()
        self.num_heads, self.call_norm_q = heads, call_norm_q
        self.q, self.o = nn.Linear(dim, dim), nn.Linear(dim, dim)
        self.norm_q = nn.LayerNorm(dim)

    def forward(self, x):
        q = self.norm_q(self.q(x)) if self.call_norm_q else self.q(x)
        return self.o(torch.tanh(q))


def test_attach_works_on_a_foreign_wan_layout_and_fails_loudly_without_norm_q():
    dim, heads = 256, 2
    host = nn.Module()
    host.blocks = nn.ModuleList([nn.Module() for _ in range(2)])
    for block in host.blocks:
        block.cross_attn = _HostCrossAttention(dim, heads)
    audio = tiny_audio(types.SimpleNamespace(dim=dim, num_layers=2))
    cond = AudioCondition(torch.randn(1, 5, 32))
    x = torch.randn(1, 10, dim)
    cross = host.blocks[0].cross_attn
    q = cross.norm_q(cross.q(x))
    expected = cross.o(torch.tanh(q) + 0.5 * audio.processor(0)(q, cond, heads))
    with attach_adapters(host, audio=audio) as att, att.conditioned(audio=cond, audio_scale=0.5):
        torch.testing.assert_close(host.blocks[0].cross_attn(x), expected)
    host.blocks[1].cross_attn.call_norm_q = False
    with attach_adapters(host, audio=audio) as att, att.conditioned(audio=cond):
        with pytest.raises(RuntimeError, match="could not capture the cross-attention query of block 1"):
            host.blocks[1].cross_attn(x)
    with pytest.raises(TypeError, match="Wan2.1 DiT"):
        attach_adapters(nn.Linear(2, 2), audio=audio)


def test_mismatched_adapter_and_condition_errors():
    model = tiny_wan()
    with pytest.raises(ValueError, match="has 40 blocks but the DiT has 2"):
        attach_adapters(model, audio=AudioAdapter(AudioAdapterConfig(dim=256)))
    att = attach_adapters(model, audio=tiny_audio(model.cfg))
    with att, att.conditioned(audio=_frame_condition(2)):
        with pytest.raises(ValueError, match="windows for 2 latent frames but the video has 3"):
            model(**wan_inputs(model.cfg, frames=3))  # 18 tokens would split evenly into 2: must not
    with pytest.raises(ValueError, match="no identity adapter"):
        with att.conditioned(identity=torch.zeros(1)):
            pass
    with pytest.raises(ValueError, match=r"\[B, L, 768\]"):
        tiny_audio(model.cfg).project(torch.randn(1, 10, 512))


def test_conditions_are_per_thread():
    """Core may run the conds of one step in threads (one per GPU): one thread's conditions and
    captured queries must not leak into another's forward."""
    import threading

    dit = tiny_wan()
    audio = tiny_audio(dit.cfg)
    inp = wan_inputs(dit.cfg, frames=3)
    cond = audio.condition(torch.randn(1, 20, 768), 9)
    args = (inp["x"], inp["t"], inp["context"], inp["clip_fea"], inp["y"])
    with torch.no_grad(), attach_adapters(dit, audio=audio) as att:
        with att.conditioned(audio=cond, audio_scale=1.0):
            want_on = dit(*args)
        plain = dit(*args)
        seen = {}
        with att.conditioned(audio=cond, audio_scale=1.0):  # this thread: audio on
            other = threading.Thread(target=lambda: seen.setdefault("out", dit(*args)))  # no condition there
            other.start()
            other.join()
            here = dit(*args)
    assert torch.equal(seen["out"], plain)
    assert torch.allclose(here, want_on) and not torch.allclose(here, plain, atol=1e-4)
