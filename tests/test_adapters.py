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


def test_global_audio_every_token_sees_all_audio():
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


def test_patches_change_only_the_class_of_the_hosts_own_modules():
    """No copies: the host keeps one object per module, so its per-module state cannot go stale."""
    model = tiny_wan()
    keys = list(model.state_dict())
    att = attach_adapters(model, audio=tiny_audio(model.cfg))
    patches = att.patches()
    paths = {f"blocks.{i}.cross_attn.{m}" for i in range(2) for m in ("norm_q", "o")} | {"patch_embedding"}
    assert set(patches) == {p + ".__class__" for p in paths | {"blocks.0", "blocks.1"}}
    original_o = model.blocks[0].cross_attn.o
    weight = original_o.weight
    with att:
        assert list(model.state_dict()) == keys
        patched_o = model.blocks[0].cross_attn.o
        assert patched_o is original_o and patched_o.weight is weight
        assert type(patched_o) is not nn.Linear and isinstance(patched_o, nn.Linear)
        # A host that swaps a weight on the module (as LoRA patching does) is seen by the adapters' forward.
        patched_o.weight = nn.Parameter(torch.zeros_like(weight))
        assert model.blocks[0].cross_attn.o.weight.abs().sum() == 0
        with pytest.raises(RuntimeError, match="already has FantasyTalking adapters"):
            attach_adapters(model, audio=tiny_audio(model.cfg)).patches()
    assert type(model.blocks[0].cross_attn.o) is nn.Linear and type(model.blocks[0]).__name__ == "WanAttentionBlock"
    assert model.blocks[0].cross_attn.o is original_o


def test_applying_patches_by_path_equals_the_context_manager():
    model = tiny_wan()
    audio = tiny_audio(model.cfg)
    inputs = wan_inputs(model.cfg)
    cond = _frame_condition(3)
    with attach_adapters(model, audio=audio) as att, att.conditioned(audio=cond):
        expected = model(**inputs)
    att = attach_adapters(model, audio=audio)
    for path, cls in att.patches().items():  # what a host's object patches do: set the attribute by path
        owner, _, leaf = path.rpartition(".")
        setattr(model.get_submodule(owner), leaf, cls)
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


class _FusedCrossAttention(_HostCrossAttention):
    """A host whose cross-attention computes norm_q and o from their weights without calling them as
    modules (a fused kernel, a compiled graph or a future core would look like this to the patches)."""

    def forward(self, x):
        q = self.q(x)
        q = nn.functional.layer_norm(q, q.shape[-1:], self.norm_q.weight, self.norm_q.bias, self.norm_q.eps)
        return nn.functional.linear(torch.tanh(q), self.o.weight, self.o.bias)


class _HostBlock(nn.Module):
    def __init__(self, cross):
        super().__init__()
        self.cross_attn = cross

    def forward(self, x):
        return x + self.cross_attn(x)


def _foreign_host(dim, heads, cross_cls):
    host = nn.Module()
    host.blocks = nn.ModuleList([_HostBlock(cross_cls(dim, heads)) for _ in range(2)])
    return host


def test_a_host_that_bypasses_the_patched_modules_is_an_error_not_a_silent_no_op():
    dim, heads = 256, 2
    audio = tiny_audio(types.SimpleNamespace(dim=dim, num_layers=2))
    cond = AudioCondition(torch.randn(1, 5, 32))
    x = torch.randn(1, 10, dim)
    normal, fused = _foreign_host(dim, heads, _HostCrossAttention), _foreign_host(dim, heads, _FusedCrossAttention)
    fused.load_state_dict(normal.state_dict())
    plain = normal.blocks[0](x)
    assert torch.allclose(fused.blocks[0](x), plain, atol=1e-6)  # the same host computation, only fused
    with attach_adapters(normal, audio=audio) as att, att.conditioned(audio=cond):
        assert not torch.allclose(normal.blocks[0](x), plain, atol=1e-4)  # the audio acts
    with attach_adapters(fused, audio=audio, host="ComfyUI 9.9.9") as att:
        assert torch.equal(fused.blocks[0](x), plain)  # no audio condition: nothing to lose
        with att.conditioned(audio=cond, audio_scale=0.0):
            assert torch.equal(fused.blocks[0](x), plain)  # audio scale 0: nothing to lose
        with att.conditioned(audio=cond), pytest.raises(
                RuntimeError, match=r"audio did not reach block 0: ComfyUI 9\.9\.9 ran the block without calling "
                                    r"the cross-attention modules .*norm_q.*silently lose the audio"):
            fused.blocks[0](x)


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


class _TokenHost(nn.Module):
    """A core-like host: the grid from its patch embedding (also left in ``options["grid_sizes"]``),
    reference tokens in front of the video and in-context latents after it (embedded by the same
    patch embedding, as ComfyUI 0.33 does). Blocks act per token, so video tokens do not depend on
    the others and a run without the extra tokens is an exact reference."""

    def __init__(self, dim, heads):
        super().__init__()
        self.patch_embedding = nn.Conv3d(4, dim, kernel_size=(1, 2, 2), stride=(1, 2, 2))
        self.blocks = nn.ModuleList([_HostBlock(_HostCrossAttention(dim, heads)) for _ in range(2)])

    def forward(self, x, front=None, context_latents=(), options=None):
        tokens = self.patch_embedding(x)
        if options is not None:
            options["grid_sizes"] = tokens.shape[2:]
        tokens = tokens.flatten(2).transpose(1, 2)
        if front is not None:
            tokens = torch.cat([front, tokens], dim=1)
        for lat in context_latents:
            tokens = torch.cat([tokens, self.patch_embedding(lat).flatten(2).transpose(1, 2)], dim=1)
        for block in self.blocks:
            tokens = block(tokens)
        return tokens


def test_audio_goes_only_to_the_videos_own_tokens_when_the_host_adds_tokens():
    dim, heads, frames = 256, 2, 3
    torch.manual_seed(0)
    host = _TokenHost(dim, heads)
    audio = tiny_audio(types.SimpleNamespace(dim=dim, num_layers=2))
    cond = _frame_condition(frames)
    x = torch.randn(1, 4, frames, 4, 6)  # 3 frames of 2x3 tokens
    front = torch.randn(1, 5, dim)  # e.g. reference-latent tokens
    context = [torch.randn(1, 4, 2, 4, 6)]  # e.g. one in-context latent of 2 frames
    appended = torch.randn(1, 4, 1, 4, 6)  # e.g. time_dim_concat: a frame appended to the video's
    with torch.no_grad(), attach_adapters(host, audio=audio) as att:
        with att.conditioned(audio=cond):
            want = host(x)  # the video alone
        plain = host(x, front, context)  # no audio at all
        for options in ({}, None):  # grid from the host's grid_sizes, or from the first patch embedding
            with att.forward_scope(frames, options), att.conditioned(audio=cond):
                got = host(x, front, context, options=options)
            torch.testing.assert_close(got[:, 5:5 + 18], want)
            assert torch.equal(got[:, :5], plain[:, :5]) and torch.equal(got[:, 5 + 18:], plain[:, 5 + 18:])
        with att.forward_scope(frames, {}), att.conditioned(audio=cond):
            got = host(torch.cat([x, appended], dim=2), front)  # the host appends a frame to the grid
        torch.testing.assert_close(got[:, 5:5 + 18], want)
        assert torch.equal(got[:, 5 + 18:], host(torch.cat([x, appended], dim=2), front)[:, 5 + 18:])
        with att.forward_scope(frames + 1, {}), att.conditioned(audio=cond), pytest.raises(
                ValueError, match="windows for 3 latent frames but the video has 4"):
            host(torch.cat([x, appended], dim=2))


def test_audio_condition_checks_its_lengths_once_on_the_host():
    """Every window holds at least one token: checked where the condition is made, so no attention
    call reads k_lens on the device (a sync per block on a GPU)."""
    tokens = torch.randn(1, 3, 4, 8)
    with pytest.raises(ValueError, match=r"k_lens must be between 1 and the window length 4, got \[4, 0, 2\]"):
        AudioCondition(tokens, torch.tensor([4, 0, 2]))
    with pytest.raises(ValueError, match=r"between 1 and the window length 4, got \[4, 5, 2\]"):
        AudioCondition(tokens, torch.tensor([4, 5, 2]))
    cond = AudioCondition(tokens, torch.tensor([4, 1, 2]))
    assert cond.to(dtype=torch.float64).k_lens.device.type == "cpu"
    meta = AudioCondition(tokens.to("meta"), torch.tensor([4, 1, 2]))  # the lengths stay host values
    assert meta.k_lens.device.type == "cpu"


def test_a_new_registry_entry_is_attached_and_conditioned_with_nothing_else_changed(monkeypatch):
    # "adding an adapter is one entry": a second audio-like and a second motion-like entry, added to
    # the registry only, act exactly like the built-in ones they copy
    from fantasytalking_core.adapters import MotionAdapter, MotionAdapterConfig
    from fantasytalking_core.adapters.registry import ADAPTERS, AdapterSpec

    model = tiny_wan()
    audio = tiny_audio(model.cfg)
    motion = MotionAdapter(MotionAdapterConfig.for_wan(model.cfg, freq_dim=32, hidden=48))
    torch.nn.init.normal_(motion.out.weight, std=0.5)  # zero-initialised: it would change nothing
    inputs, cond, omegas = wan_inputs(model.cfg), _frame_condition(3), MotionAdapter.condition(0.9, 0.2)
    with attach_adapters(model, audio=audio, motion=motion) as att, \
            att.conditioned(audio=cond, audio_scale=0.7, motion=omegas, motion_scale=0.5):
        builtin = model(**inputs)
    monkeypatch.setitem(ADAPTERS, "voice", AdapterSpec("voice", AudioAdapter, AudioAdapterConfig, 1, "cross_attn",
                                                       "voice_scale"))
    monkeypatch.setitem(ADAPTERS, "pose", AdapterSpec("pose", MotionAdapter, MotionAdapterConfig, 1, "time",
                                                      "pose_scale"))
    with attach_adapters(model, voice=audio, pose=motion) as att, \
            att.conditioned(voice=cond, voice_scale=0.7, pose=omegas, pose_scale=0.5):
        assert att.voice.module is audio and att.audio is None
        added = model(**inputs)
    torch.testing.assert_close(added, builtin, atol=1e-6, rtol=1e-6)
    plain = model(**inputs)
    assert not torch.allclose(added, plain)
    with pytest.raises(TypeError, match="unknown adapters \\['lips'\\]"):
        attach_adapters(model, lips=audio)
    with pytest.raises(ValueError, match="site must be one of"):
        AdapterSpec("x", AudioAdapter, AudioAdapterConfig, 1, "ffn", "x_scale")


def test_the_training_config_has_one_settings_field_per_registry_entry():
    from dataclasses import fields

    from fantasytalking_core.adapters.registry import ADAPTER_NAMES
    from training.config import ModelConfig

    names = {f.name for f in fields(ModelConfig)}
    assert set(ADAPTER_NAMES) <= names and ModelConfig().adapters == ADAPTER_NAMES
