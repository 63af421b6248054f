"""SyncNet Sync-C / Sync-D: layout, MFCC, crops and scores against literal transcriptions of
joonson/syncnet_python and python_speech_features, on random-weight stand-ins."""

from __future__ import annotations

import decimal
import math

import numpy as np
import pytest
import torch

from evaluation import syncnet as S
from evaluation.weights import MissingModelError, find_model

# ------------------------------------------------------------------ literal references


def psf_mfcc(signal, samplerate=16000):
    """python_speech_features.mfcc with its defaults, transcribed loop by loop."""
    from scipy.fftpack import dct

    def round_half_up(n):
        return int(decimal.Decimal(n).quantize(decimal.Decimal("1"), rounding=decimal.ROUND_HALF_UP))

    signal = np.append(signal[0], signal[1:] - 0.97 * signal[:-1])
    frame_len, frame_step = round_half_up(0.025 * samplerate), round_half_up(0.01 * samplerate)
    slen = len(signal)
    numframes = 1 if slen <= frame_len else 1 + int(math.ceil((1.0 * slen - frame_len) / frame_step))
    padsignal = np.concatenate((signal, np.zeros((int((numframes - 1) * frame_step + frame_len) - slen,))))
    indices = np.tile(np.arange(0, frame_len), (numframes, 1)) + np.tile(
        np.arange(0, numframes * frame_step, frame_step), (frame_len, 1)).T
    frames = padsignal[indices.astype(np.int32)]
    pspec = 1.0 / 512 * np.square(np.absolute(np.fft.rfft(frames, 512)))
    energy = np.sum(pspec, 1)
    energy = np.where(energy == 0, np.finfo(float).eps, energy)
    hz2mel = lambda hz: 2595 * np.log10(1 + hz / 700.0)  # noqa: E731
    mel2hz = lambda mel: 700 * (10 ** (mel / 2595.0) - 1)  # noqa: E731
    melpoints = np.linspace(hz2mel(0), hz2mel(samplerate / 2), 28)
    bins = np.floor((512 + 1) * mel2hz(melpoints) / samplerate)
    fbank = np.zeros([26, 257])
    for j in range(26):
        for i in range(int(bins[j]), int(bins[j + 1])):
            fbank[j, i] = (i - bins[j]) / (bins[j + 1] - bins[j])
        for i in range(int(bins[j + 1]), int(bins[j + 2])):
            fbank[j, i] = (bins[j + 2] - i) / (bins[j + 2] - bins[j + 1])
    feat = np.dot(pspec, fbank.T)
    feat = np.where(feat == 0, np.finfo(float).eps, feat)
    feat = dct(np.log(feat), type=2, axis=1, norm="ortho")[:, :13]
    feat = (1 + (22 / 2.0) * np.sin(np.pi * np.arange(13) / 22)) * feat
    feat[:, 0] = np.log(energy)
    return feat


def ref_evaluate(model, im, audio, vshift=15, batch_size=20):
    """SyncNetInstance.evaluate from the loaded frames on: the same loops and reductions."""
    mfcc = np.stack([np.array(i) for i in zip(*psf_mfcc(audio, 16000))])
    cct = torch.from_numpy(np.expand_dims(np.expand_dims(mfcc, 0), 0).astype(float)).float()
    imtv = torch.from_numpy(np.transpose(np.expand_dims(np.stack(list(im), axis=3), 0), (0, 3, 4, 1, 2)).astype(float)).float()
    lastframe = min(len(im), math.floor(len(audio) / 640)) - 5
    im_feat, cc_feat = [], []
    with torch.no_grad():
        for i in range(0, lastframe, batch_size):
            im_in = torch.cat([imtv[:, :, v:v + 5, :, :] for v in range(i, min(lastframe, i + batch_size))], 0)
            im_feat.append(model.forward_lip(im_in))
            cc_in = torch.cat([cct[:, :, :, v * 4:v * 4 + 20] for v in range(i, min(lastframe, i + batch_size))], 0)
            cc_feat.append(model.forward_aud(cc_in))
    return ref_offsets(torch.cat(im_feat, 0), torch.cat(cc_feat, 0), vshift)


def ref_offsets(im_feat, cc_feat, vshift):
    win_size = vshift * 2 + 1
    feat2p = torch.nn.functional.pad(cc_feat, (0, 0, vshift, vshift))
    dists = [torch.nn.functional.pairwise_distance(im_feat[[i], :].repeat(win_size, 1), feat2p[i:i + win_size, :])
             for i in range(len(im_feat))]
    mdist = torch.mean(torch.stack(dists, 1), 1)
    minval, minidx = torch.min(mdist, 0)
    return int(vshift - minidx), float(torch.median(mdist) - minval), float(minval)


def ref_crops(frames_bgr, bboxes, cs=0.4):
    """run_pipeline.crop_video without the AVI writer."""
    import cv2
    from scipy import signal

    dets = {"x": [], "y": [], "s": []}
    for det in bboxes:
        dets["s"].append(max((det[3] - det[1]), (det[2] - det[0])) / 2)
        dets["y"].append((det[1] + det[3]) / 2)
        dets["x"].append((det[0] + det[2]) / 2)
    for k in dets:
        dets[k] = signal.medfilt(dets[k], kernel_size=13)
    out = []
    for fidx, image in enumerate(frames_bgr):
        bs = dets["s"][fidx]
        bsi = int(bs * (1 + 2 * cs))
        frame = np.pad(image, ((bsi, bsi), (bsi, bsi), (0, 0)), "constant", constant_values=(110, 110))
        my, mx = dets["y"][fidx] + bsi, dets["x"][fidx] + bsi
        face = frame[int(my - bs):int(my + bs * (1 + 2 * cs)), int(mx - bs * (1 + cs)):int(mx + bs * (1 + cs))]
        out.append(cv2.resize(face, (224, 224)))
    return np.stack(out)


# ------------------------------------------------------------------ tests


def test_module_names_and_shapes_are_syncnet_models():
    sd = S.SyncNet().state_dict()
    expected = {"netcnnaud.0.weight": (64, 1, 3, 3), "netcnnaud.18.weight": (512, 256, 5, 4),
                "netfcaud.3.weight": (1024, 512), "netcnnlip.0.weight": (96, 3, 5, 7, 7),
                "netcnnlip.18.weight": (512, 256, 1, 6, 6), "netfclip.1.running_var": (512,)}
    for k, shape in expected.items():
        assert tuple(sd[k].shape) == shape, k
    assert {k.split(".")[0] for k in sd} == {"netcnnaud", "netfcaud", "netfclip", "netcnnlip"}


def test_mfcc_matches_python_speech_features():
    rng = np.random.default_rng(0)
    audio = np.round(rng.normal(0, 3000, 16000 + 123)).clip(-32768, 32767)
    audio[5000:6000] = 0  # silence stays finite
    ours, ref = S.mfcc(audio), psf_mfcc(audio)
    assert ours.shape == ref.shape == (1 + math.ceil((len(audio) - 400) / 160), 13)
    assert np.allclose(ours, ref, rtol=1e-10, atol=1e-9)
    assert S.mel_filterbank().shape == (26, 257)


def test_offset_and_confidence_match_the_reference_and_find_a_known_shift():
    rng = np.random.default_rng(1)
    audio_feat = torch.from_numpy(rng.normal(size=(60, 32))).float()
    for k in (-4, 0, 3):
        video_feat = torch.zeros_like(audio_feat)
        for i in range(60):  # video frame i shows what audio frame i - k says
            if 0 <= i - k < 60:
                video_feat[i] = audio_feat[i - k]
        video_feat += 0.05 * torch.randn(video_feat.shape, generator=torch.Generator().manual_seed(k + 5))
        res = S.offset_confidence(video_feat, audio_feat, 15)
        assert (res["offset"], res["sync_c"], res["sync_d"]) == pytest.approx(ref_offsets(video_feat, audio_feat, 15))
        assert res["offset"] == k and res["sync_c"] > 1.0 and len(res["mean_dists"]) == 31


def test_crops_follow_run_pipeline_geometry():
    rng = np.random.default_rng(2)
    frames = rng.integers(0, 255, (20, 120, 160, 3), dtype=np.uint8)
    boxes = np.stack([[40 + i, 30 + 0.5 * i, 90 + i, 85 + 0.3 * i] for i in range(20)])
    boxes[7] += 15  # a jump the 13-frame median filter removes
    ours = S.syncnet_crops(frames, boxes)
    assert np.array_equal(ours, ref_crops(frames[..., ::-1], boxes))


def test_frames_are_resampled_to_25_fps():
    assert S.indices_at_25fps(30, 25.0).tolist() == list(range(30))
    assert S.indices_at_25fps(10, 50.0).tolist() == [0, 2, 4, 6, 8]
    idx = S.indices_at_25fps(23, 23.0)
    assert len(idx) == 25 and idx[-1] == 22 and np.all(np.diff(idx) >= 0) and len(set(idx.tolist())) == 23


def test_scores_of_a_random_syncnet_equal_the_reference_evaluation():
    torch.manual_seed(0)
    model = S.SyncNet().eval()
    for m in model.modules():  # non-trivial running statistics
        if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
            m.running_mean.uniform_(-0.1, 0.1)
            m.running_var.uniform_(0.5, 1.5)
    rng = np.random.default_rng(3)
    crops = rng.integers(0, 255, (12, 224, 224, 3), dtype=np.uint8)
    wave = rng.uniform(-0.3, 0.3, 12 * 640 + 100).astype(np.float32)
    res = S.syncnet_scores(model, crops, wave, vshift=15)
    offset, conf, dist = ref_evaluate(model, crops, S.to_int16_scale(wave))
    assert res["windows"] == 7 and res["offset"] == offset
    assert res["sync_c"] == pytest.approx(conf, rel=1e-4, abs=1e-6) and res["sync_d"] == pytest.approx(dist, rel=1e-5)
    with pytest.raises(ValueError, match="at least 6 frames"):
        S.syncnet_scores(model, crops[:5], wave)


def test_weights_load_from_a_state_dict_and_missing_files_are_explained(tmp_path):
    sd = {k: v for k, v in S.SyncNet().state_dict().items() if not k.endswith("num_batches_tracked")}  # 2016 file
    torch.save(sd, tmp_path / "syncnet_v2.model")
    model = S.load_syncnet(find_model("sync", tmp_path))
    assert torch.equal(model.state_dict()["netfclip.3.weight"], sd["netfclip.3.weight"]) and not model.training
    torch.save({"foo": torch.zeros(1)}, tmp_path / "bad.model")
    with pytest.raises(ValueError, match="not a SyncNet"):
        S.load_syncnet(tmp_path / "bad.model")
    with pytest.raises(MissingModelError) as err:
        find_model("sync", tmp_path / "empty")
    msg = str(err.value)
    assert "syncnet_v2.model" in msg and str((tmp_path / "empty").resolve()) in msg and "syncnet_python" in msg


@pytest.mark.filterwarnings("ignore:SymbolDatabase.GetPrototype:UserWarning")
def test_paper_sync_crops_the_tracked_face_at_25_fps(tmp_path, monkeypatch):
    from evaluation import paper as P
    from evaluation.config import EvalConfig
    from evaluation.media import EvalInput
    from fantasytalking_core.lipmask import face_mesh_track
    from tests.test_eval_synth import mouth_video, syllables, voiced_audio

    torch.manual_seed(0)
    torch.save(S.SyncNet().state_dict(), tmp_path / "syncnet_v2.model")
    env = syllables(15, seed=2)
    frames, audio = mouth_video(env, 192), voiced_audio(env, fps=30.0)  # 15 frames at 30 fps -> 12 at 25 fps
    track = face_mesh_track(frames)
    seen = {}
    real_scores = S.syncnet_scores
    monkeypatch.setattr(S, "syncnet_scores", lambda model, crops, wave, *a, **k: seen.update(crops=crops, wave=wave)
                        or real_scores(model, crops, wave, *a, **k))
    res = P.evaluate_paper(EvalInput(frames, 30.0, audio), track, P.PaperModels(tmp_path),
                           EvalConfig(paper_metrics=("sync",)))["sync"]
    idx = S.indices_at_25fps(15, 30.0)
    expected = S.syncnet_crops(frames[idx], P.boxes_from_landmarks(track.landmarks, track.found)[idx])
    assert np.array_equal(seen["crops"], expected) and seen["wave"] is not None and len(idx) == 12
    assert res["available"] and res["windows"] == 7 and -15 <= res["offset"] <= 15 and res["sync_d"] > 0
    assert res["value"] == res["sync_c"] and P.paper_headline({"sync": res})["sync_offset"] == res["offset"]
