"""fantasytalking_core.encoders.wav2vec: every file layout loads to the reference model, clear errors,
ComfyUI core's encoder output, the token count, long recordings in pieces."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from fantasytalking_core import audio as A
from fantasytalking_core import encoders as E
from tests._audio_helpers import legacy_keys, official_windows, tiny_wav2vec, write_ctc_folder

SR = 16000


@pytest.fixture(scope="module")
def wav2vec_files(tmp_path_factory):
    """The tiny model as every file layout we accept, and its reference features."""
    from safetensors.torch import save_file
    from transformers import Wav2Vec2FeatureExtractor

    root = tmp_path_factory.mktemp("w2v")
    model = tiny_wav2vec()
    model.save_pretrained(root / "hf")  # config.json + model.safetensors
    write_ctc_folder(model, root / "ctc")
    sd = {k: v.contiguous() for k, v in model.state_dict().items()}
    save_file(sd, str(root / "comfy.safetensors"))  # ComfyUI layout: no prefix, no config
    prefixed = {f"wav2vec2.{k}": v for k, v in legacy_keys(sd).items()}
    prefixed["lm_head.weight"] = torch.zeros(32, 768)
    save_file(prefixed, str(root / "comfy_ctc.safetensors"))
    (root / "noconfig").mkdir()
    save_file(sd, str(root / "noconfig" / "model.safetensors"))
    wave = torch.from_numpy(np.random.default_rng(1).standard_normal(SR).astype(np.float32) * 0.1)
    fe = Wav2Vec2FeatureExtractor(do_normalize=True, return_attention_mask=False)
    with torch.no_grad():
        ref = model(fe(wave.numpy(), sampling_rate=SR, return_tensors="pt").input_values).last_hidden_state
    return root, model, wave, ref


@pytest.mark.parametrize("rel", ["hf", "ctc", "comfy.safetensors", "comfy_ctc.safetensors",
                                 "noconfig", "hf/model.safetensors"])
def test_all_layouts_load_and_match_reference(wav2vec_files, rel):
    root, model, wave, ref = wav2vec_files
    enc = E.load_wav2vec(root / rel)
    assert enc.hidden_size == 768
    got = enc.encode(wave)
    assert got.shape == (1, E.wav2vec_num_tokens(wave.numel()), 768) == ref.shape
    assert torch.allclose(got, ref, atol=1e-5, rtol=0)


def test_inferred_config_matches_original(wav2vec_files):
    root, model, _, _ = wav2vec_files
    got = E.load_wav2vec(root / "comfy.safetensors").model.config
    want = model.config
    for key in ("hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size",
                "conv_dim", "conv_kernel", "conv_stride", "conv_bias", "feat_extract_norm",
                "do_stable_layer_norm", "num_conv_pos_embeddings", "num_conv_pos_embedding_groups"):
        assert tuple(np.atleast_1d(getattr(got, key))) == tuple(np.atleast_1d(getattr(want, key))), key


def test_token_count_formula_matches_model(wav2vec_files):
    model = wav2vec_files[1]
    for n in [399, 400, 401, 719, 720, 16000, 56347, 106096]:
        assert E.wav2vec_num_tokens(n) == max(int(model._get_feat_extract_output_lengths(n)), 0)
    assert E.wav2vec_num_tokens(int(81 / 23 * SR)) == 175


def test_encoder_errors(wav2vec_files, tmp_path):
    from safetensors.torch import save_file

    root = wav2vec_files[0]
    with pytest.raises(FileNotFoundError) as err:
        E.load_wav2vec(tmp_path / "wav2vec2-base-960h.safetensors")
    msg = str(err.value)
    assert "wav2vec2-base-960h.safetensors" in msg and "models/audio_encoders" in msg
    assert "facebook/wav2vec2-base-960h" in msg
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="no model.safetensors"):
        E.load_wav2vec(tmp_path / "empty")
    small = tiny_wav2vec(hidden=32, heads=1)
    save_file({k: v.contiguous() for k, v in small.state_dict().items()}, str(tmp_path / "s.safetensors"))
    with pytest.raises(ValueError, match="32-d wav2vec2 model.*768-d"):
        E.load_wav2vec(tmp_path / "s.safetensors")
    save_file({"blocks.0.weight": torch.zeros(2)}, str(tmp_path / "other.safetensors"))
    with pytest.raises(ValueError, match="not a wav2vec2 checkpoint"):
        E.load_wav2vec(tmp_path / "other.safetensors")
    (tmp_path / "junk.bin").write_bytes(b"junk")
    with pytest.raises(ValueError, match="junk.bin could not be read as a torch checkpoint"):
        E.load_wav2vec(tmp_path / "junk.bin")
    enc = E.load_wav2vec(root / "hf")
    with pytest.raises(ValueError, match="at least 400"):
        enc.encode(torch.zeros(399))


def test_core_encoder_output_gives_same_windows(wav2vec_files):
    root, _, wave, _ = wav2vec_files
    feats = E.load_wav2vec(root / "comfy.safetensors").encode(wave)
    core = {"encoded_audio": feats.clone(), "encoded_audio_all_layers": (feats, feats),
            "audio_samples": wave.numel()}
    with pytest.warns(UserWarning, match="without normalising"):
        got = E.from_comfy_encoder_output(core)
    assert torch.equal(got, feats)
    a, b = A.split_windows(got, 25), A.split_windows(feats, 25)
    assert torch.equal(a.tokens, b.tokens) and torch.equal(a.k_lens, b.k_lens)
    for bad, match in [({"encoded_audio": torch.zeros(1, 10, 1024)}, "1024-d"),
                       ({"encoded_audio": torch.zeros(10, 768)}, r"\[1, L, 768\]"),
                       ({"encoded_audio": torch.zeros(2, 10, 768)}, "batch 2"),
                       ({"waveform": torch.zeros(1, 1, 10)}, "encoded_audio")]:
        with pytest.raises(ValueError, match=match):
            E.from_comfy_encoder_output(bad)


def test_fixture_speech_end_to_end(wav2vec_files, speech):
    fitted = A.fit_to_frames(speech, 81, fps=23)
    assert fitted.action == "trimmed" and fitted.waveform.numel() == 56347
    feats = E.load_wav2vec(wav2vec_files[0] / "ctc").encode(fitted.waveform)
    assert feats.shape == (1, 175, 768)
    win = A.split_windows(feats, 81)
    ref, k_lens, _ = official_windows(feats, 81, 4)
    assert torch.equal(win.tokens, ref) and torch.equal(win.k_lens, k_lens)


@pytest.mark.parametrize("norm", ["group", "layer"])
def test_long_recordings_encode_in_pieces_as_in_one_pass(speech, norm):
    """Past `chunk_tokens` the encoder runs piece by piece (memory for minutes of audio: about two
    copies of the features): the features equal one pass through the model, for wav2vec2-base
    (GroupNorm with statistics over the whole recording, post-norm layers) and for the LayerNorm
    variant (local norms, pre-norm layers), every token still attending to all of them."""
    from transformers import Wav2Vec2Config, Wav2Vec2Model

    torch.manual_seed(0)
    model = Wav2Vec2Model(Wav2Vec2Config(hidden_size=64, num_hidden_layers=2, num_attention_heads=2,
                                         intermediate_size=64, conv_dim=(24,) * 7, num_conv_pos_embeddings=16,
                                         num_conv_pos_embedding_groups=4, feat_extract_norm=norm,
                                         do_stable_layer_norm=norm == "layer")).eval()
    with torch.no_grad():  # random everywhere (norm affines included), so a wrongly applied one shows
        for name, p in model.named_parameters():
            p.copy_(torch.randn_like(p) * 0.1 + (1.0 if name.endswith("norm.weight") else 0.0))
    wave = speech[:100_000]  # 312 tokens: past chunk_tokens, pieces of a quarter of it
    one = E.Wav2VecEncoder(model, torch.device("cpu"), torch.float32, "tiny", chunk_tokens=10_000).encode(wave)
    with torch.no_grad():
        ref = model(A.normalize_like_processor(wave)[None]).last_hidden_state
    assert torch.equal(one, ref)  # short enough: the model's own forward
    for chunk_tokens, piece in ((50, 12), (20, 5)):  # pieces longer, then shorter, than the positional conv's halo (8)
        calls, whole = [], []
        hooks = [model.feature_extractor.conv_layers[-1].register_forward_hook(lambda *a: calls.append(1)),
                 model.encoder.register_forward_hook(lambda *a: whole.append(1))]
        pieces = E.Wav2VecEncoder(model, torch.device("cpu"), torch.float32, "tiny", chunk_tokens=chunk_tokens).encode(wave)
        for h in hooks:
            h.remove()
        assert len(calls) == -(-E.wav2vec_num_tokens(100_000) // piece)  # the piece path ran: one call per piece
        assert not whole  # and the transformer never saw the whole sequence at once
        assert pieces.shape == ref.shape == (1, E.wav2vec_num_tokens(100_000), 64)
        torch.testing.assert_close(pieces, ref, atol=2e-5, rtol=1e-5)
