"""End-to-end pipeline: image rules, Wan's I2V conditioning, batched guidance, seeds, long audio,
the mp4 it writes, the real-format encoder loaders (tiny files in the real key layouts) and the CLI."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import numpy as np
import pytest
import soundfile
import torch
from PIL import Image

from fantasytalking_core.__main__ import main
from fantasytalking_core.encoders import (ClipImageEncoder, WanVAE, clean_prompt, load_clip_vision, load_text_encoder,
                                          load_vae)
from fantasytalking_core.images import crop_geometry, frames_to_tensor, resize_and_crop, resize_official
from fantasytalking_core.pipeline import (NEGATIVE_PROMPT, TINY_BANNER, FantasyTalkingPipeline, GenerationConfig,
                                          ModelPaths, TinyCausalVAE, i2v_condition, load_components, tiny_components)
from fantasytalking_core.segments import i2v_mask, i2v_y
from fantasytalking_core.sampling import Guidance
from fantasytalking_core.video import probe

FAST = dict(size=32, steps=2)  # 4x4 latents: every test below runs in about a second


def portrait(w: int = 96, h: int = 80) -> np.ndarray:
    """A synthetic face-like drawing: gradient background, a disc, two eyes."""
    yy, xx = np.mgrid[0:h, 0:w]
    img = np.stack([xx / w, yy / h, 0.5 * np.ones_like(xx, dtype=float)], -1) * 255
    img[(xx - w / 2) ** 2 + (yy - h / 2) ** 2 < (min(w, h) / 3) ** 2] = (230, 180, 150)
    for ex in (w / 2 - w / 9, w / 2 + w / 9):
        img[(xx - ex) ** 2 + (yy - h / 2.3) ** 2 < (min(w, h) / 25) ** 2] = (20, 20, 20)
    return img.astype(np.uint8)


@pytest.fixture(scope="module")
def pipe() -> FantasyTalkingPipeline:
    return FantasyTalkingPipeline(tiny_components(seed=0))


# ----------------------------------------------------------------------------- image and I2V


@pytest.mark.parametrize("w,h,official,crop", [
    # official: int(side * 512 / longest), then rounded UP to a multiple of 16 (stretched);
    # crop: round(side * 512 / longest), then cut DOWN to a multiple of 16
    (800, 1000, (416, 512), (400, 512)),  # 4:5: 409.6 -> 409 -> 416 | 410 -> 400
    (1200, 800, (512, 352), (512, 336)),  # 3:2: 341.33 -> 341 -> 352 | 341 -> 336
    (1920, 1080, (512, 288), (512, 288)),  # 16:9: 288 exactly
    (1080, 1920, (288, 512), (288, 512)),  # 9:16
    (1000, 1000, (512, 512), (512, 512)),  # 1:1
    (1000, 600, (512, 320), (512, 304)),  # 307.2 -> 307 -> 320 | 307 -> 304
    (300, 200, (512, 352), (512, 336)),  # upscaled: 341.33 -> 341 -> 352 | 341 -> 336
    (97, 61, (512, 336), (512, 320)),  # odd sides, upscaled: 321.98 -> 321 -> 336 | 322 -> 320
    (2000, 100, (512, 32), (512, 16)),  # 25.6 -> 25 -> 32 | 26 -> 16
    (2000, 1, (512, 16), (512, 16)),  # 0.256 -> 0, at least 1 px -> 16 | at least one 16-px row
])
def test_resize_table_official_and_crop(w, h, official, crop):
    image = Image.fromarray(portrait(w, h))
    assert resize_official(image, 512).size == official
    assert resize_and_crop(image, 512).size == crop


def test_official_resize_is_lanczos_then_a_bicubic_stretch():
    img = Image.fromarray(portrait(800, 1000))
    out = np.asarray(resize_official(img, 512), dtype=np.float64)
    ref = img.resize((409, 512), Image.LANCZOS).resize((416, 512), Image.BICUBIC)  # utils.py, then encode_image
    np.testing.assert_array_equal(out, np.asarray(ref, dtype=np.float64))
    exact = Image.fromarray(portrait(1920, 1080))  # already multiples of 16: one LANCZOS resize only
    np.testing.assert_array_equal(np.asarray(resize_official(exact, 512)),
                                  np.asarray(exact.resize((512, 288), Image.LANCZOS)))
    with pytest.raises(ValueError, match="multiple of 16"):
        resize_official(img, 500)
    with pytest.raises(ValueError, match="resize must be one of"):
        GenerationConfig(resize="pad")


@pytest.mark.parametrize("w,h,expect", [
    (1000, 600, (512, 304)),  # 600*0.512 = 307.2 -> 307 -> cropped to 304
    (600, 1000, (304, 512)),
    (512, 512, (512, 512)),
    (300, 200, (512, 336)),  # upscaled: 341.3 -> 341 -> 336
    (2000, 100, (512, 16)),  # 25.6 -> 26 -> 16 (never below one 16-px row)
])
def test_resize_and_crop_rules(w, h, expect):
    out = resize_and_crop(Image.fromarray(portrait(w, h)), 512)
    assert out.size == expect
    assert out.size[0] % 16 == 0 and out.size[1] % 16 == 0 and max(out.size) == 512
    g = crop_geometry(w, h, 512)  # the geometry the trainer maps face points with: the same picture
    assert (g.width, g.height) == expect
    scaled = (round(w * g.scale_x), round(h * g.scale_y))
    assert max(scaled) == 512 and (scaled[0] - g.width) // 2 == g.left and (scaled[1] - g.height) // 2 == g.top


def test_i2v_y_is_the_mask_then_the_latents():
    latents = torch.randn(2, 16, 5, 3, 4)
    for known in (1, 5):
        y = i2v_y(latents, known=known)
        assert y.shape == (2, 20, 5, 3, 4) and torch.equal(y[:, 4:], latents)
        assert torch.equal(y[:, :4], i2v_mask(17, 3, 4, known=known).expand(2, -1, -1, -1, -1))


def test_resize_crops_the_centre_and_uses_lanczos():
    img = Image.fromarray(portrait(1000, 600))
    out = np.asarray(resize_and_crop(img, 512), dtype=np.float64)
    ref = np.asarray(img.resize((512, 307), Image.LANCZOS), dtype=np.float64)[1:305]  # (307-304)//2 = 1 row off
    np.testing.assert_array_equal(out, ref)
    with pytest.raises(ValueError, match="multiple of 16"):
        resize_and_crop(img, 500)
    with pytest.raises(ValueError, match="multiple of 16"):
        GenerationConfig(size=100)


@pytest.mark.parametrize("num_frames", [5, 13, 81])
def test_i2v_mask_matches_hand_computation(num_frames):
    lat_h, lat_w = 3, 2
    mask = i2v_mask(num_frames, lat_h, lat_w)
    t_lat = (num_frames - 1) // 4 + 1
    assert mask.shape == (4, t_lat, lat_h, lat_w)
    # hand: per-frame flags [1, 0, 0, ...]; frame 0 is counted 4 times; group in fours; entry [j, t] = seq[4t + j]
    seq = [1.0] * 4 + [0.0] * (num_frames - 1)
    for t in range(t_lat):
        for j in range(4):
            assert torch.all(mask[j, t] == seq[4 * t + j])
    assert mask[:, 0].eq(1).all() and mask[:, 1:].eq(0).all()


class RecordingVAE(TinyCausalVAE):
    def __init__(self):
        super().__init__()
        self.inputs: list[torch.Tensor] = []

    def encode(self, video):
        self.inputs.append(video.clone())
        return super().encode(video)


def test_i2v_condition_is_mask_then_latents_of_image_and_black_frames():
    vae = RecordingVAE()
    first = torch.rand(1, 3, 16, 24) * 2 - 1
    y = i2v_condition(vae, first, 9)
    video = vae.inputs[0]
    assert video.shape == (1, 3, 9, 16, 24)
    assert torch.equal(video[:, :, 0], first) and video[:, :, 1:].eq(0).all()
    assert y.shape == (1, 20, 3, 2, 3)
    assert torch.equal(y[0, :4], i2v_mask(9, 2, 3))
    assert torch.equal(y[:, 4:], TinyCausalVAE.encode(vae, video))


def test_tiny_vae_keeps_wans_stride_and_causality():
    vae = TinyCausalVAE()
    video = torch.rand(1, 3, 9, 16, 16) * 2 - 1
    z = vae.encode(video)
    assert z.shape == (1, 16, 3, 2, 2) and vae.decode(z).shape == video.shape
    later = video.clone()
    later[:, :, 5:] = 0  # changing frames 5..8 must leave latent frames 0 and 1 (frames 0..4) unchanged
    assert torch.equal(vae.encode(later)[:, :, :2], z[:, :, :2])


# ----------------------------------------------------------------------------- sampling


def test_defaults_are_the_official_settings(pipe, speech_path):
    cfg = GenerationConfig()
    assert (cfg.resize, cfg.solver, cfg.steps, cfg.shift, cfg.seed, cfg.fps, cfg.size) == \
        ("stretch", "euler", 30, 5.0, 1111, 23.0, 512)
    assert cfg.guidance() == Guidance()  # guidance defaults come from sampling.Guidance (cfg 5 / 5, three passes)
    assert (cfg.cfg_text, cfg.cfg_audio, cfg.two_pass_shortcut) == (5.0, 5.0, False)
    assert GenerationConfig(two_pass_shortcut=True, cfg_audio=1.0).guidance() == \
        Guidance(cfg_audio=1.0, two_pass_shortcut=True)
    # the default solver is Euler: the default run equals an explicit Euler run, not UniPC's
    short = dict(num_frames=5, **FAST)
    default = pipe.generate(portrait(), speech_path, config=GenerationConfig(**short), progress=False).frames
    euler = pipe.generate(portrait(), speech_path, config=GenerationConfig(solver="euler", **short), progress=False)
    unipc = pipe.generate(portrait(), speech_path, config=GenerationConfig(solver="uni_pc", **short), progress=False)
    assert GenerationConfig(solver="unipc").solver == "uni_pc"  # the old spelling (saved CLI lines) still works
    assert torch.equal(default, euler.frames) and not torch.equal(default, unipc.frames)


@pytest.mark.parametrize("resize, width", [("stretch", 112), ("crop", 96)])
def test_pipeline_resizes_the_portrait_as_configured(speech_path, resize, width):
    comps = tiny_components(seed=0)
    comps.vae = RecordingVAE()
    cfg = GenerationConfig(size=128, steps=1, num_frames=5, resize=resize)
    image = Image.fromarray(portrait(80, 100))  # 4:5 -> 102.4 px wide: 112 stretched, 96 cropped
    res = FantasyTalkingPipeline(comps).generate(image, speech_path, config=cfg, progress=False)
    assert comps.vae.inputs[0].shape == (1, 3, 5, 128, width) and res.frames.shape[1:] == (128, width, 3)
    expect = resize_official(image, 128) if resize == "stretch" else resize_and_crop(image, 128)
    torch.testing.assert_close(comps.vae.inputs[0][0, :, 0], frames_to_tensor(
        torch.from_numpy(np.asarray(expect, dtype=np.float32) / 255))[0], atol=1e-6, rtol=0)


def test_batched_guidance_equals_sequential_passes(pipe, speech_path):
    cfg = GenerationConfig(num_frames=9, **FAST)
    batched = pipe.generate(portrait(), speech_path, config=cfg, progress=False)
    one_by_one = pipe.generate(portrait(), speech_path, config=GenerationConfig(num_frames=9, max_batch=1, **FAST),
                               progress=False)
    torch.testing.assert_close(batched.frames, one_by_one.frames, atol=2e-5, rtol=0)
    no_audio_cfg = pipe.generate(portrait(), speech_path, config=GenerationConfig(num_frames=9, cfg_audio=1.0, **FAST),
                                 progress=False)
    assert (no_audio_cfg.frames - batched.frames).abs().max() > 1e-3  # the audio passes do matter


def test_seed_reproduces_bit_for_bit(pipe, speech_path):
    cfg = GenerationConfig(num_frames=9, solver="euler", **FAST)
    a = pipe.generate(portrait(), speech_path, config=cfg, progress=False)
    b = pipe.generate(portrait(), speech_path, config=cfg, progress=False)
    c = pipe.generate(portrait(), speech_path, config=GenerationConfig(num_frames=9, seed=7, solver="euler", **FAST),
                      progress=False)
    assert torch.equal(a.frames, b.frames)
    assert not torch.equal(a.frames, c.frames)


def test_runtime_options_apply_for_the_call_only(pipe, speech_path):
    from fantasytalking_core.__main__ import runtime_options
    from fantasytalking_core.perf import RuntimeOptions, StepCacheConfig, configured_runtime

    cfg = GenerationConfig(num_frames=9, solver="euler", **FAST)
    plain = pipe.generate(portrait(), speech_path, config=cfg, progress=False)
    exact = RuntimeOptions(attention="math", fast_rope=True, block_swap=1, step_cache=StepCacheConfig(threshold=0.0))
    fast = pipe.generate(portrait(), speech_path, config=cfg, progress=False, runtime=exact)
    torch.testing.assert_close(fast.frames, plain.frames, atol=1e-4, rtol=0)
    skipping = pipe.generate(portrait(), speech_path, config=cfg, progress=False,
                             runtime=RuntimeOptions(step_cache=StepCacheConfig(threshold=10.0)))
    assert (skipping.frames - plain.frames).abs().max() > 1e-4  # the cache really skipped steps
    assert configured_runtime(pipe.c.dit) is None  # nothing of the options is left on the model
    assert torch.equal(pipe.generate(portrait(), speech_path, config=cfg, progress=False).frames, plain.frames)
    assert runtime_options({}, 30) is None
    opts = runtime_options({"compile": True, "step_cache": 0.1, "block_swap": 2}, 30)
    assert opts.compile and opts.block_swap == 2 and opts.step_cache == StepCacheConfig(threshold=0.1, end_step=29)


def test_should_stop_interrupts(pipe, speech_path):
    with pytest.raises(InterruptedError):
        pipe.generate(portrait(), speech_path, config=GenerationConfig(num_frames=9, **FAST),
                      should_stop=lambda: True, progress=False)


# ----------------------------------------------------------------------------- long audio


def test_later_clips_start_from_the_previous_clips_frame(speech_path):
    comps = tiny_components(seed=0)
    comps.vae = RecordingVAE()
    cfg = GenerationConfig(num_frames=21, segment_frames=9, trim_to_audio=False, **FAST)
    res = FantasyTalkingPipeline(comps).generate(portrait(), speech_path, config=cfg, progress=False)
    plans = [(p.start_frame, p.num_frames, p.motion_frames) for p in res.plans]
    assert plans == [(0, 9, 0), (8, 9, 1), (16, 5, 1)]
    assert res.frames.shape[0] == res.generated_frames == 21
    starts = [v[:, :, 0] for v in comps.vae.inputs]  # the I2V first frame of each clip
    for k, plan in enumerate(res.plans[1:], start=1):  # equals the stitched frame at the clip's start
        assert torch.allclose(starts[k], frames_to_tensor(res.frames[plan.start_frame]), atol=1e-6)


# ----------------------------------------------------------------------------- the written video


def test_tiny_pipeline_writes_mp4_matching_the_audio(pipe, speech_path, tmp_path, capsys):
    seconds = soundfile.info(str(speech_path)).duration
    cfg = GenerationConfig(size=64, steps=3, max_frames=0)  # the whole audio: two segments
    result = pipe.generate(portrait(), speech_path, config=cfg, progress=False)
    assert TINY_BANNER in capsys.readouterr().out
    assert len(result.plans) == 2 and result.frames.shape[1:] == (64, 64, 3)  # 96x80 -> 64x53 -> stretched to 64x64
    out = result.save(tmp_path / "talk.mp4")
    info = probe(out)
    fps = 23.0
    assert info["video"]["frames"] == math.ceil(seconds * fps)
    assert abs(info["video"]["duration"] - seconds) <= 1 / fps
    assert abs(info["audio"]["duration"] - seconds) <= 1 / fps
    assert info["audio"]["sample_rate"] == 16000
    with pytest.raises(FileExistsError):
        result.save(out)


# ----------------------------------------------------------------------------- real-format loaders


def _tiny_diffusers_vae():
    from diffusers import AutoencoderKLWan

    torch.manual_seed(0)
    model = AutoencoderKLWan(base_dim=4, z_dim=16).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.02)
    return model


def _wan_vae_names(model) -> dict[str, torch.Tensor]:
    """Wan's own VAE key names for a diffusers state dict (the inverse of diffusers' converter,
    computed by pushing index tensors through it)."""
    from diffusers.loaders.single_file_utils import convert_wan_vae_to_diffusers

    sd = model.state_dict()
    # Wan's names, listed from wan/modules/vae.py's module tree for dim_mult [1, 2, 4, 4]
    names = ["encoder.conv1.weight", "encoder.conv1.bias", "conv1.weight", "conv1.bias", "conv2.weight", "conv2.bias"]
    for part, n_blocks in (("encoder", 11), ("decoder", 15)):
        names += [f"{part}.middle.{i}.residual.{j}.{w}" for i in (0, 2) for j, w in
                  ((0, "gamma"), (2, "weight"), (2, "bias"), (3, "gamma"), (6, "weight"), (6, "bias"))]
        names += [f"{part}.middle.1.{n}" for n in
                  ("norm.gamma", "to_qkv.weight", "to_qkv.bias", "proj.weight", "proj.bias")]
        names += [f"{part}.head.0.gamma", f"{part}.head.2.weight", f"{part}.head.2.bias"]
        resample = {"encoder": {2: False, 5: True, 8: True}, "decoder": {3: True, 7: True, 11: False}}[part]
        shortcut = {"encoder": (3, 6), "decoder": (4,)}[part]
        kind = "downsamples" if part == "encoder" else "upsamples"
        for i in range(n_blocks):
            if i in resample:
                names += [f"{part}.{kind}.{i}.resample.1.{w}" for w in ("weight", "bias")]
                names += [f"{part}.{kind}.{i}.time_conv.{w}" for w in ("weight", "bias")] if resample[i] else []
            else:
                names += [f"{part}.{kind}.{i}.residual.{j}.{w}" for j, w in
                          ((0, "gamma"), (2, "weight"), (2, "bias"), (3, "gamma"), (6, "weight"), (6, "bias"))]
                names += [f"{part}.{kind}.{i}.shortcut.{w}" for w in ("weight", "bias")] if i in shortcut else []
        names += [f"decoder.conv1.{w}" for w in ("weight", "bias")] if part == "decoder" else []
    index = convert_wan_vae_to_diffusers({n: torch.tensor(i) for i, n in enumerate(names)})
    assert sorted(index) == sorted(sd), "Wan's VAE names do not map onto the diffusers model"
    return {names[int(i)]: sd[k].clone() for k, i in index.items()}


def test_vae_loads_wan_and_comfy_single_files_and_diffusers_folders(tmp_path):
    from safetensors.torch import save_file

    model = _tiny_diffusers_vae()
    wan = _wan_vae_names(model)
    assert len(wan) == 194  # as many tensors as Wan2.1_VAE.pth
    save_file(wan, str(tmp_path / "wan_2.1_vae.safetensors"))
    torch.save(wan, tmp_path / "Wan2.1_VAE.pth")
    model.save_pretrained(str(tmp_path / "diffusers_vae"))
    ref = WanVAE(model)
    video = torch.rand(1, 3, 5, 16, 16) * 2 - 1
    z_ref = ref.encode(video)
    # Wan's normalisation: (mu - mean) / std with the config's per-channel constants
    mu = model.encode(video).latent_dist.mode()
    mean, std = torch.tensor(model.config.latents_mean), torch.tensor(model.config.latents_std)
    torch.testing.assert_close(z_ref, (mu - mean.view(1, -1, 1, 1, 1)) / std.view(1, -1, 1, 1, 1))
    for source in ("wan_2.1_vae.safetensors", "Wan2.1_VAE.pth", "diffusers_vae"):
        vae = load_vae(tmp_path / source)
        assert torch.equal(vae.encode(video), z_ref)
        torch.testing.assert_close(vae.decode(z_ref), ref.decode(z_ref))
    assert load_vae(tmp_path / "Wan2.1_VAE.pth", tiling=True).tiled_decode


def test_vae_encode_is_never_tiled_and_decode_tiles_when_asked():
    """The official pipeline encodes the first frame untiled; tiles would change its latents."""
    model = _tiny_diffusers_vae()
    model.enable_tiling(tile_sample_min_height=32, tile_sample_min_width=32, tile_sample_stride_height=16,
                        tile_sample_stride_width=16)  # tiles well inside a 64x64 frame
    vae = WanVAE(model, tiled_decode=True)
    video = torch.rand(1, 3, 5, 64, 64, generator=torch.Generator().manual_seed(0)) * 2 - 1
    mean = torch.tensor(model.config.latents_mean).view(1, -1, 1, 1, 1)
    std = torch.tensor(model.config.latents_std).view(1, -1, 1, 1, 1)
    z = vae.encode(video)
    with torch.no_grad():
        model.disable_tiling()
        whole = (model.encode(video).latent_dist.mode() - mean) / std
        whole_video = model.decode(z * std + mean).sample.clamp(-1, 1)
        model.enable_tiling()
        tiled = (model.encode(video).latent_dist.mode() - mean) / std
        tiled_video = model.decode(z * std + mean).sample.clamp(-1, 1)
    assert torch.equal(z, whole) and not torch.allclose(z, tiled, atol=1e-4)  # the tiles would show
    assert torch.equal(vae.decode(z), tiled_video) and not torch.allclose(tiled_video, whole_video, atol=1e-4)
    assert torch.equal(WanVAE(model, tiled_decode=False).decode(z), whole_video)


def test_prompts_are_cleaned_with_ftfy_as_the_official_prompter():
    # ftfy.fix_text turns the full-width commas of the official negative prompt into ASCII commas
    assert "，" in NEGATIVE_PROMPT
    assert clean_prompt(NEGATIVE_PROMPT) == NEGATIVE_PROMPT.replace("，", ",")
    assert clean_prompt("  A  person&amp;amp;talks \n\t caf\u00c3\u00a9 ") == "A person&talks café"


def test_prompt_cleaning_without_ftfy_names_the_fix(monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "ftfy", None)  # import ftfy raises ImportError
    with pytest.raises(ImportError, match="pip install ftfy"):
        clean_prompt("hello")


def _tiny_umt5():
    from transformers import UMT5Config, UMT5EncoderModel

    torch.manual_seed(0)
    cfg = UMT5Config(vocab_size=40, d_model=32, d_kv=8, d_ff=48, num_heads=4, num_layers=2,
                     feed_forward_proj="gated-gelu", tie_word_embeddings=False)
    return UMT5EncoderModel(cfg).eval()


def _tokenizer_folder(folder: Path) -> Path:
    """A tiny fast tokenizer (one token per letter, end token 1 appended), saved like google/umt5-xxl."""
    from tokenizers import Tokenizer, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    vocab = {"<pad>": 0, "</s>": 1, "<unk>": 2, **{c: i + 3 for i, c in enumerate("abcdefghijklmnopqrstuvwxyz")}}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Split("", "isolated")
    tok.post_processor = processors.TemplateProcessing(single="$A </s>", special_tokens=[("</s>", 1)])
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", eos_token="</s>", unk_token="<unk>")
    fast.save_pretrained(str(folder))
    return folder


def _wan_t5_names(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """transformers UMT5 names -> Wan's T5Encoder names (wan/modules/t5.py)."""
    table = [(r"shared\.weight", "token_embedding.weight"), (r"encoder\.final_layer_norm\.weight", "norm.weight"),
             (r"encoder\.block\.(\d+)\.layer\.0\.layer_norm\.weight", r"blocks.\1.norm1.weight"),
             (r"encoder\.block\.(\d+)\.layer\.0\.SelfAttention\.([qkvo])\.weight", r"blocks.\1.attn.\2.weight"),
             (r"encoder\.block\.(\d+)\.layer\.0\.SelfAttention\.relative_attention_bias\.weight",
              r"blocks.\1.pos_embedding.embedding.weight"),
             (r"encoder\.block\.(\d+)\.layer\.1\.layer_norm\.weight", r"blocks.\1.norm2.weight"),
             (r"encoder\.block\.(\d+)\.layer\.1\.DenseReluDense\.wi_0\.weight", r"blocks.\1.ffn.gate.0.weight"),
             (r"encoder\.block\.(\d+)\.layer\.1\.DenseReluDense\.wi_1\.weight", r"blocks.\1.ffn.fc1.weight"),
             (r"encoder\.block\.(\d+)\.layer\.1\.DenseReluDense\.wo\.weight", r"blocks.\1.ffn.fc2.weight")]
    out = {}
    for k, v in sd.items():
        for pat, rep in table:
            if re.fullmatch(pat, k):
                out[re.sub(pat, rep, k)] = v.clone()
    return out


def test_text_encoder_layouts_match_transformers(tmp_path):
    from safetensors.torch import save_file

    model = _tiny_umt5()
    sd = {k: v for k, v in model.state_dict().items() if k != "encoder.embed_tokens.weight"}
    wan_dir = tmp_path / "Wan2.1-I2V-14B-480P"
    _tokenizer_folder(wan_dir / "google" / "umt5-xxl")
    torch.save(_wan_t5_names(sd), wan_dir / "models_t5_umt5-xxl-enc-bf16.pth")
    tok = _tokenizer_folder(tmp_path / "tok")
    save_file({k: v.contiguous() for k, v in sd.items()}, str(tmp_path / "umt5_xxl_fp16.safetensors"))
    hf_dir = tmp_path / "hf"
    model.save_pretrained(str(hf_dir))
    _tokenizer_folder(hf_dir)

    ids = [10, 7, 14, 14, 17, 2, 25, 17, 20, 14, 6, 1]  # "hello world" + end token (space is <unk>)
    with torch.no_grad():
        ref = model(input_ids=torch.tensor([ids])).last_hidden_state[0]
    for path, tokenizer in ((wan_dir, None), (tmp_path / "umt5_xxl_fp16.safetensors", tok), (hf_dir, None)):
        enc = load_text_encoder(path, tokenizer, dtype=torch.float32)
        assert not any(t.is_meta for t in list(enc.model.parameters()) + list(enc.model.buffers()))
        out = enc(["  hello   world "])  # Wan's whitespace clean
        assert len(out) == 1 and out[0].shape == (12, 32)  # trimmed to the true length
        torch.testing.assert_close(out[0], ref)
    with pytest.raises(FileNotFoundError, match="tokenizer"):
        load_text_encoder(tmp_path / "umt5_xxl_fp16.safetensors")


def test_text_encoder_reads_comfy_fp8_scaled(tmp_path):
    from safetensors.torch import save_file

    model = _tiny_umt5()
    sd, dequant = {}, {}
    for k, v in model.state_dict().items():
        if k == "encoder.embed_tokens.weight":
            continue
        if v.ndim == 2 and "relative_attention_bias" not in k and k != "shared.weight":
            scale = v.abs().max() / 448
            q = (v / scale).to(torch.float8_e4m3fn)
            sd[k], sd[k[: -len("weight")] + "scale_weight"] = q, scale.reshape(1)
            dequant[k] = q.float() * scale
        else:
            sd[k] = dequant[k] = v.clone()
    save_file({"scaled_fp8": torch.zeros(0, dtype=torch.float8_e4m3fn), **sd}, str(tmp_path / "umt5_fp8.safetensors"))
    enc = load_text_encoder(tmp_path / "umt5_fp8.safetensors", _tokenizer_folder(tmp_path / "tok"), dtype=torch.float32)
    model.load_state_dict({**dequant, "encoder.embed_tokens.weight": dequant["shared.weight"]})
    with torch.no_grad():
        ref = model(input_ids=torch.tensor([[3, 4, 5, 1]])).last_hidden_state[0]
    torch.testing.assert_close(enc(["abc"])[0], ref)


def _tiny_clip():
    from transformers import CLIPVisionConfig, CLIPVisionModel

    torch.manual_seed(0)
    cfg = CLIPVisionConfig(hidden_size=128, intermediate_size=96, num_hidden_layers=3, num_attention_heads=2,
                           image_size=56, patch_size=14, hidden_act="gelu")
    return CLIPVisionModel(cfg).eval()


def _plain(sd: dict) -> dict:
    """CLIPVisionModel names without the vision_model. prefix (transformers 4 has it, 5 does not)."""
    return {k.removeprefix("vision_model."): v for k, v in sd.items() if not k.endswith("position_ids")}


def test_clip_vision_layouts_match_transformers(tmp_path):
    from safetensors.torch import save_file

    model = _tiny_clip()
    sd = _plain(model.state_dict())
    comfy = {"vision_model." + k: v.contiguous() for k, v in sd.items()}
    comfy["visual_projection.weight"] = torch.randn(32, 128)  # CLIPVisionModelWithProjection, unused
    save_file(comfy, str(tmp_path / "clip_vision_h.safetensors"))
    wan = {"visual.cls_embedding": sd["embeddings.class_embedding"].view(1, 1, -1),
           "visual.pos_embedding": sd["embeddings.position_embedding.weight"][None],
           "visual.patch_embedding.weight": sd["embeddings.patch_embedding.weight"],
           "visual.head": torch.randn(128, 32), "log_scale": torch.tensor(4.6)}
    for ours, theirs in (("pre_layrnorm", "pre_norm"), ("post_layernorm", "post_norm")):
        for w in ("weight", "bias"):
            wan[f"visual.{theirs}.{w}"] = sd[f"{ours}.{w}"]
    for i in range(3):
        p = f"encoder.layers.{i}."
        for w in ("weight", "bias"):
            qkv = [sd[f"{p}self_attn.{n}_proj.{w}"] for n in "qkv"]
            wan[f"visual.transformer.{i}.attn.to_qkv.{w}"] = torch.cat(qkv)  # Wan fuses q, k, v
            for ours, theirs in (("self_attn.out_proj", "attn.proj"), ("layer_norm1", "norm1"),
                                 ("layer_norm2", "norm2"), ("mlp.fc1", "mlp.0"), ("mlp.fc2", "mlp.2")):
                wan[f"visual.transformer.{i}.{theirs}.{w}"] = sd[f"{p}{ours}.{w}"]
    torch.save(wan, tmp_path / "models_clip_open-clip-xlm-roberta-large-vit-huge-14.pth")
    model.save_pretrained(str(tmp_path / "image_encoder"))  # a transformers folder with its config.json

    image = torch.rand(1, 3, 40, 70) * 2 - 1
    x = torch.nn.functional.interpolate(image, size=(56, 56), mode="bicubic", align_corners=False)
    mean = torch.tensor([0.48145466, 0.4578275, 0.40821073]).view(1, 3, 1, 1)
    std = torch.tensor([0.26862954, 0.26130258, 0.27577711]).view(1, 3, 1, 1)
    with torch.no_grad():  # Wan: penultimate block output, no post-norm
        ref = model(pixel_values=(x * 0.5 + 0.5 - mean) / std, output_hidden_states=True).hidden_states[-2]
    torch.testing.assert_close(ClipImageEncoder(model)(image), ref)
    for source in ("clip_vision_h.safetensors", "models_clip_open-clip-xlm-roberta-large-vit-huge-14.pth",
                   "image_encoder"):
        out = load_clip_vision(tmp_path / source, dtype=torch.float32)(image)
        assert out.shape == (1, 17, 128)
        torch.testing.assert_close(out, ref)


def test_load_components_from_real_layouts_and_generate(tmp_path, speech_path):
    """Tiny files in the layouts users have (ComfyUI DiT, official .ckpt, wav2vec2-base-960h folder,
    Wan's VAE, the Wan-AI folder's T5, ComfyUI's clip_vision) -> load_components -> a short video."""
    from safetensors.torch import save_file

    from tests._audio_helpers import tiny_wav2vec, write_ctc_folder
    from tests._factories import official_ckpt_dict, tiny_audio, tiny_wan

    dit = tiny_wan()
    save_file({"model.diffusion_model." + k: v.contiguous() for k, v in dit.state_dict().items()},
              str(tmp_path / "wan2.1_i2v_480p_14B_bf16.safetensors"))
    torch.save(official_ckpt_dict(tiny_audio(dit.cfg)), tmp_path / "fantasytalking_model.ckpt")
    write_ctc_folder(tiny_wav2vec(), tmp_path / "wav2vec2-base-960h")
    save_file(_wan_vae_names(_tiny_diffusers_vae()), str(tmp_path / "wan_2.1_vae.safetensors"))
    from transformers import CLIPVisionConfig, CLIPVisionModel, UMT5Config, UMT5EncoderModel

    t5 = UMT5EncoderModel(UMT5Config(vocab_size=40, d_model=dit.cfg.text_dim, d_kv=16, d_ff=48, num_heads=2,
                                     num_layers=1, feed_forward_proj="gated-gelu", tie_word_embeddings=False))
    wan_dir = tmp_path / "Wan2.1-I2V-14B-480P"
    _tokenizer_folder(wan_dir / "google" / "umt5-xxl")
    torch.save(_wan_t5_names(t5.state_dict()), wan_dir / "models_t5_umt5-xxl-enc-bf16.pth")
    clip = CLIPVisionModel(CLIPVisionConfig(hidden_size=dit.cfg.clip_dim, intermediate_size=96, num_hidden_layers=2,
                                            num_attention_heads=1, image_size=224, patch_size=14, hidden_act="gelu"))
    save_file({"vision_model." + k: v.contiguous() for k, v in _plain(clip.state_dict()).items()},
              str(tmp_path / "clip_vision_h.safetensors"))
    paths = ModelPaths(wan=str(tmp_path / "wan2.1_i2v_480p_14B_bf16.safetensors"),
                       fantasytalking=str(tmp_path / "fantasytalking_model.ckpt"),
                       wav2vec=str(tmp_path / "wav2vec2-base-960h"), vae=str(tmp_path / "wan_2.1_vae.safetensors"),
                       text_encoder=str(wan_dir), clip_vision=str(tmp_path / "clip_vision_h.safetensors"))
    comps = load_components(paths, device="cpu")
    assert not comps.untrained and comps.dit.blocks[0].ffn[0].weight.dtype == torch.float32  # fp32 on the CPU
    res = FantasyTalkingPipeline(comps).generate(portrait(), speech_path, "hello",
                                                 config=GenerationConfig(num_frames=5, **FAST), progress=False)
    assert res.frames.shape == (5, 32, 32, 3) and torch.isfinite(res.frames).all()  # 96x80 -> 32x26 -> 32x32


@pytest.mark.parametrize("field,name,folder", [
    ("wan", "Wan2.1 I2V model", "ComfyUI/models/diffusion_models/"),
    ("fantasytalking", "FantasyTalking weights", "ComfyUI/models/model_patches/"),
    ("wav2vec", "wav2vec2 model", "ComfyUI/models/audio_encoders/"), ("vae", "Wan VAE", "ComfyUI/models/vae/"),
    ("text_encoder", "UMT5 text encoder", "ComfyUI/models/text_encoders/"),
    ("clip_vision", "CLIP vision model", "ComfyUI/models/clip_vision/"),
])
def test_missing_files_name_file_folder_and_source(tmp_path, field, name, folder):
    paths = {}
    for f in ("wan", "fantasytalking", "wav2vec", "vae", "text_encoder", "clip_vision"):
        paths[f] = tmp_path / f"{f}.safetensors"
        if f != field:
            paths[f].write_bytes(b"")  # existence is checked for every file before any is read
    with pytest.raises(FileNotFoundError) as err:
        load_components(ModelPaths(**{k: str(v) for k, v in paths.items()}), device="cpu")
    msg = str(err.value)
    assert f"{field}.safetensors" in msg and name in msg and folder in msg and "Hugging Face" in msg


def test_missing_encoder_files_name_file_folder_and_source(tmp_path):
    from fantasytalking_core.encoders import load_wav2vec

    for load, folder, source in ((load_vae, "ComfyUI/models/vae/", "Wan_2.1_ComfyUI_repackaged"),
                                 (load_text_encoder, "ComfyUI/models/text_encoders/", "Wan_2.1_ComfyUI_repackaged"),
                                 (load_clip_vision, "ComfyUI/models/clip_vision/", "Wan_2.1_ComfyUI_repackaged"),
                                 (load_wav2vec, "ComfyUI/models/audio_encoders/", "facebook/wav2vec2-base-960h")):
        with pytest.raises(FileNotFoundError) as err:
            load(tmp_path / "nope.safetensors")
        assert "nope.safetensors" in str(err.value) and folder in str(err.value) and source in str(err.value)


# ----------------------------------------------------------------------------- CLI


def test_cli_tiny_generate_and_refuse_overwrite(tmp_path, speech_path, capsys):
    image = tmp_path / "portrait.png"
    Image.fromarray(portrait()).save(image)
    out = tmp_path / "out.mp4"
    config = tmp_path / "cfg.json"
    config.write_text(json.dumps({"steps": 2, "size": 32, "max-frames": 9}))
    args = ["generate", "--preset", "tiny", "--image", str(image), "--audio", str(speech_path), "--out", str(out),
            "--config", str(config)]
    assert main(args + ["--seed", "3"]) == 0
    assert TINY_BANNER in capsys.readouterr().out
    info = probe(out)
    assert info["video"]["frames"] == 9 and (info["video"]["width"], info["video"]["height"]) == (32, 32)  # stretched
    before = out.read_bytes()
    assert main(args) == 2  # exists: refused before any model is built
    err = capsys.readouterr()
    assert "--overwrite" in err.err and TINY_BANNER not in err.out
    assert out.read_bytes() == before
    assert main(args + ["--overwrite", "--seed", "4"]) == 0
    assert out.read_bytes() != before


def test_cli_errors_are_one_line(tmp_path, speech_path, capsys):
    out = tmp_path / "x.mp4"
    image = tmp_path / "portrait.png"
    Image.fromarray(portrait()).save(image)
    assert main(["generate", "--image", str(image), "--audio", str(speech_path), "--out", str(out)]) == 2
    assert "--wan" in capsys.readouterr().err  # no preset and no model files
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"stepz": 3}))
    assert main(["generate", "--preset", "tiny", "--image", "i", "--audio", "a", "--out", str(out),
                 "--config", str(bad)]) == 2
    assert "stepz" in capsys.readouterr().err
    assert main(["generate", "--preset", "tiny", "--image", str(tmp_path / "none.png"), "--audio", str(speech_path),
                 "--out", str(out), "--size", "32"]) == 2
    err = capsys.readouterr()
    assert "none.png" in err.err and TINY_BANNER not in err.out and not out.exists()


def test_cli_flags_are_made_from_the_generation_config_fields(tmp_path, speech_path, capsys):
    import argparse
    from dataclasses import fields

    from fantasytalking_core.__main__ import add_config_flags

    p = argparse.ArgumentParser()
    add_config_flags(p)
    assert sorted(vars(p.parse_args([]))) == sorted(f.name for f in fields(GenerationConfig))
    assert set(vars(p.parse_args([])).values()) == {None}  # a flag not given never overrides --config
    ns = p.parse_args(["--cfg-audio", "1", "--no-color-match", "--two-pass-shortcut", "--solver", "unipc",
                       "--max-batch", "2", "--resize", "crop", "--fps", "25"])
    assert (ns.cfg_audio, ns.color_match, ns.two_pass_shortcut, ns.solver, ns.max_batch, ns.resize, ns.fps) == \
        (1.0, False, True, "unipc", 2, "crop", 25.0)
    with pytest.raises(SystemExit):
        p.parse_args(["--solver", "heun"])  # choices come from sampling.SOLVERS
    capsys.readouterr()
    with pytest.raises(SystemExit):
        main(["generate", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    for f in fields(GenerationConfig):  # every field, with its help and default
        assert f"--{f.name.replace('_', '-')}" in text and " ".join(f.metadata["help"].split()) in text
    assert "(default euler)" in text and "(default stretch)" in text and "(default 5)" in text
    image = tmp_path / "portrait.png"
    Image.fromarray(portrait()).save(image)
    out = tmp_path / "crop.mp4"
    assert main(["generate", "--preset", "tiny", "--image", str(image), "--audio", str(speech_path), "--out",
                 str(out), "--size", "32", "--steps", "1", "--max-frames", "5", "--resize", "crop",
                 "--no-color-match", "--cfg-audio", "1"]) == 0
    assert (probe(out)["video"]["width"], probe(out)["video"]["height"]) == (32, 16)  # 96x80 -> 32x26 -> 32x16
