"""Data preparation on videos the tests make: filters, the stored tensors against the encoders run
independently, idempotent re-runs, crash safety, resampling to the training frame rate."""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from _training_helpers import copy_dataset, one_thread, prepare_config, tiny_dataset  # noqa: F401 (fixture)
from fantasytalking_core.images import crop_geometry
from training.featurize import ARCFACE_MISSING, FALLBACK_FACE, Encoders
from training.prepare import main as prepare_main
from training.prepare import prepare_dataset
from training.store import DatasetLayout, read_piece


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def data(tmp_path_factory, speech):
    return tiny_dataset(tmp_path_factory, speech)


def _manifest(dataset: Path) -> list[dict]:
    return DatasetLayout(dataset).read_manifest()


def test_filters_keep_talking_faces_and_say_why_others_go(data):
    _, dataset, counts = data
    rows = _manifest(dataset)
    assert [r["clip_id"] for r in rows] == ["a_c0000", "a_c0001", "b_c0000", "b_c0001"]
    assert counts["clips"] == 4 and counts["rejected_videos"] == 1 and counts["rejected_clips"] == 3
    reasons = {json.loads(line)["video"]: json.loads(line)["reason"] for line in (dataset / "rejected.jsonl").open()}
    assert "no face at confidence >= 0.9" in reasons["cat.mp4"]
    assert "sync" in reasons["dub.mp4"] and "need >= 0.7" in reasons["dub.mp4"]
    assert "the mouth does not move" in reasons["still.mp4"]
    assert "shorter than the minimum length 0.74 s" in reasons["short.mp4"]
    for r in rows:
        assert r["face_score"] >= 0.9 and r["sync_score"] >= 0.7 and abs(r["sync_offset"]) <= 3
        assert r["face_embedding"] == FALLBACK_FACE and r["face_frames"] >= 0.9
        assert r["num_frames"] == 17 and r["fps"] == 23.0 and r["latent_shape"] == [16, 5, 16, 16]
        assert 0 <= r["omega_l"] <= 1 and 0 <= r["omega_b"] <= 1 and r["lip_area"] > 0
    assert [r["start_frame"] for r in rows[:2]] == [0, 17]
    info = DatasetLayout(dataset).read_info()
    assert info["face_embedding"] == FALLBACK_FACE  # the fallback is named, never silent
    assert info["text_dim"] == 64 and info["clip_dim"] == 64 and info["audio_dim"] == 768


def test_clip_tensors_match_the_encoders_run_independently(data):
    from PIL import Image

    from fantasytalking_core.audio import prepare_waveform
    from fantasytalking_core.motion import MotionNormalization
    from fantasytalking_core.images import image_to_tensor, resize_and_crop
    from fantasytalking_core.pipeline import i2v_condition
    from fantasytalking_core.video import read_video

    videos, dataset, _ = data
    enc = Encoders.tiny()  # the same seeded random encoders
    t, info = read_piece(dataset / "clips" / "a_c0001.safetensors")
    frames, fps, audio, sr = read_video(videos / "a.mp4")
    assert fps == pytest.approx(23.0)
    clip = frames[17:34]
    video = torch.stack([image_to_tensor(resize_and_crop(Image.fromarray(f), 128))[0] for f in clip], dim=1)[None]
    with torch.no_grad():
        assert torch.allclose(t["latents"], enc.vae.encode(video)[0], atol=1e-5)
        assert torch.allclose(t["first_latent"], i2v_condition(enc.vae, video[:, :, 0], 17)[0, 4:], atol=1e-5)
        assert torch.allclose(t["clip_fea"], enc.clip_encoder(video[:, :, 0])[0], atol=1e-5)
        wave = prepare_waveform(audio, sr)
        a0, n = int(17 / 23 * 16000), int(17 / 23 * 16000)
        assert torch.allclose(t["audio"], enc.wav2vec.encode(wave[a0:a0 + n])[0], atol=1e-4)
        assert torch.allclose(t["text"], enc.text_encoder(["A woman talks."])[0], atol=1e-6)  # the sidecar caption
        tb, _ = read_piece(dataset / "clips" / "b_c0000.safetensors")  # no caption: the empty prompt
        assert torch.allclose(tb["text"], enc.text_encoder([""])[0], atol=1e-6)
    assert info["audio_tokens"] == t["audio"].shape[0] == 36
    assert t["face_crop"].dtype == torch.uint8 and tuple(t["face_crop"].shape) == (112, 112, 3)
    assert float(t["face_embedding"].norm()) == pytest.approx(1.0, abs=1e-5)
    norm = MotionNormalization.from_dict(DatasetLayout(dataset).read_info()["motion_normalization"])
    assert norm.omega_l(float(t["motion_raw"][0])) == pytest.approx(_manifest(dataset)[1]["omega_l"], abs=1e-4)


def test_lip_mask_sits_on_the_mouth(data):
    from training.synthetic import mouth_centre
    from _training_helpers import portrait

    _, dataset, _ = data
    t, _ = read_piece(dataset / "clips" / "a_c0000.safetensors")
    m = t["lip_mask"]  # [T_lat, 16, 16]
    assert tuple(m.shape) == (5, 16, 16) and float(m.min()) >= 0 and float(m.max()) <= 1
    assert (m.sum(dim=(1, 2)) > 0).all()  # lips in every latent frame
    (cx, cy), _ = mouth_centre(portrait(256))
    sx, sy, left, top, _, _ = crop_geometry(256, 256, 128)
    ys, xs = torch.meshgrid(torch.arange(16.0) + 0.5, torch.arange(16.0) + 0.5, indexing="ij")
    w = m[0] / m[0].sum()
    centre = (float((w * xs).sum()) * 8, float((w * ys).sum()) * 8)  # latent cells -> training pixels
    assert abs(centre[0] - (cx * sx - left)) < 8 and abs(centre[1] - (cy * sy - top)) < 8


def test_rerun_skips_finished_work(data, tmp_path):
    videos, dataset, _ = data
    ds = copy_dataset(dataset, tmp_path / "ds")
    before = {p.name: p.stat().st_mtime_ns for p in (ds / "clips").iterdir()}
    info = json.loads((ds / "dataset.json").read_text())  # a dataset.json written before the key renames reruns
    info["prepare"] = {{"piece_stride": "clip_stride", "max_pieces_per_video": "max_clips_per_video"}.get(k, k): v
                       for k, v in info["prepare"].items()}
    (ds / "dataset.json").write_text(json.dumps(info))
    counts = prepare_dataset(videos, ds, prepare_config(), Encoders.tiny(), progress=False)
    assert counts["processed_videos"] == 0 and counts["skipped_videos"] == 6 and counts["clips"] == 4
    assert {p.name: p.stat().st_mtime_ns for p in (ds / "clips").iterdir()} == before
    # the motion normalisation may be refit from the dataset's own raw values at any re-run
    from fantasytalking_core.motion import MotionNormalization
    from training.config import LossConfig
    from training.dataset import PieceDataset

    prepare_dataset(videos, ds, dataclasses.replace(prepare_config(), motion_normalization="fit"), Encoders.tiny(),
                    progress=False)
    norm = MotionNormalization.from_dict(DatasetLayout(ds).read_info()["motion_normalization"])
    rows = _manifest(ds)
    assert norm.source.startswith("fit_normalization") and norm.lip_low == pytest.approx(
        np.percentile([r["raw_l"] for r in rows], 5))
    items = PieceDataset(str(ds), 0, LossConfig())
    for i, r in enumerate(rows):
        assert items[(0, i)]["omegas"].tolist() == pytest.approx([r["omega_l"], r["omega_b"]], abs=1e-4)
    with pytest.raises(ValueError, match=r"other settings \(num_frames: 17 -> 21\)"):
        prepare_dataset(videos, ds, dataclasses.replace(prepare_config(), num_frames=21), Encoders.tiny(),
                        progress=False)


def test_a_crash_leaves_no_half_written_clip_and_the_rerun_finishes(data, tmp_path, monkeypatch):
    import training.prepare as prep

    src, dataset, _ = data
    videos = tmp_path / "videos"
    videos.mkdir()
    for name in ("a.mp4", "a.txt"):
        (videos / name).write_bytes((src / name).read_bytes())
    out = tmp_path / "ds"
    real = prep.featurize_piece
    calls = []

    def crash_on_second(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt("killed")
        return real(*args, **kwargs)

    monkeypatch.setattr(prep, "featurize_piece", crash_on_second)
    with pytest.raises(KeyboardInterrupt):
        prepare_dataset(videos, out, prepare_config(), Encoders.tiny(), progress=False)
    layout = DatasetLayout(out)
    assert [p.name for p in layout.clips.iterdir()] == ["a_c0000.safetensors"]  # nothing half-written
    assert not list(layout.records.iterdir()) and not layout.manifest.exists()
    first = (layout.clips / "a_c0000.safetensors").stat().st_mtime_ns
    # a hard kill of another process leaves a temporary file behind; the next run removes it
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    import socket

    stale = layout.clips / f".a_c0001.safetensors.tmp-{socket.gethostname()}-{dead.stdout.strip()}"
    stale.write_bytes(b"half a clip")
    monkeypatch.setattr(prep, "featurize_piece", real)
    counts = prepare_dataset(videos, out, prepare_config(), Encoders.tiny(), progress=False)
    assert counts["clips"] == 2 and not stale.exists()
    assert (layout.clips / "a_c0000.safetensors").stat().st_mtime_ns == first  # kept, not redone
    for row in _manifest(out):
        a, _ = read_piece(out / row["file"])
        b, _ = read_piece(dataset / row["file"])
        assert torch.equal(a["latents"], b["latents"]) and torch.equal(a["lip_mask"], b["lip_mask"])


def test_arcface_pack_embeddings_are_stored_and_named(data, tmp_path):
    from _media_helpers import tiny_arcface
    from fantasytalking_core.face import ArcFaceEmbedder, embed_reference
    from fantasytalking_core.video import read_video

    src, _, _ = data
    pack = tmp_path / "pack"
    pack.mkdir()
    tiny_arcface(pack / "glintr100.onnx")
    videos = tmp_path / "v"
    videos.mkdir()
    (videos / "b.mp4").write_bytes((src / "b.mp4").read_bytes())
    enc = dataclasses.replace(Encoders.tiny(), face=ArcFaceEmbedder.from_pack(pack))
    cfg = dataclasses.replace(prepare_config(), face_embedding="arcface", max_pieces_per_video=1)
    with pytest.raises(ValueError, match="ArcFace models not found"):
        prepare_dataset(videos, tmp_path / "no", cfg, Encoders.tiny(), progress=False)
    prepare_dataset(videos, tmp_path / "ds", cfg, enc, progress=False)
    row = _manifest(tmp_path / "ds")[0]
    assert row["face_embedding"] == "arcface:glintr100.onnx" == DatasetLayout(tmp_path / "ds").read_info()["face_embedding"]
    t, _ = read_piece(tmp_path / "ds" / row["file"])
    want = embed_reference(read_video(videos / "b.mp4").frames[0], embedder=enc.face, crop_size=112)
    assert np.allclose(t["face_embedding"].numpy(), want.embedding, atol=1e-6)
    assert np.array_equal(t["face_crop"].numpy(), want.crop)


def test_frames_are_resampled_to_the_training_rate(tmp_path):
    from fantasytalking_core.video import frames_at_fps, write_video

    n, src_fps = 40, 30
    frames = np.stack([np.full((32, 32, 3), 10 + 6 * i, np.uint8) for i in range(n)])
    path = write_video(frames, tmp_path / "ramp.mp4", fps=src_fps)
    got = [int(round((float(f.mean()) - 10) / 6)) for f in frames_at_fps(path, 23.0, 64)]
    want = [min(n - 1, int(np.floor(k * src_fps / 23 + 0.5))) for k in range(len(got))]
    assert got == want
    assert len(got) == int(np.floor((n - 1 + 0.5) / src_fps * 23)) + 1  # up to the last frame's half-period


def test_cli_explains_missing_models(tmp_path, capsys):
    videos = tmp_path / "v"
    videos.mkdir()
    with pytest.raises(SystemExit, match="--vae, --text-encoder, --clip-vision, --wav2vec"):
        prepare_main(["--videos", str(videos), "--out", str(tmp_path / "o")])
    with pytest.raises(SystemExit) as err:
        prepare_main(["--videos", str(videos), "--out", str(tmp_path / "o"), "--vae", "v", "--text-encoder", "t",
                      "--clip-vision", "c", "--wav2vec", "w"])
    assert ARCFACE_MISSING in str(err.value) and "--insightface-pack" in str(err.value)


def test_syncnet_weights_replace_the_proxy(data, tmp_path, capsys):
    """--syncnet FILE: clips are filtered by SyncNet's Sync-C (random weights here: the plumbing)."""
    from evaluation.syncnet import SyncNet

    src, _, _ = data
    torch.manual_seed(0)
    torch.save(SyncNet().state_dict(), tmp_path / "syncnet_v2.model")
    videos = tmp_path / "v"
    videos.mkdir()
    (videos / "b.mp4").write_bytes((src / "b.mp4").read_bytes())
    assert prepare_main(["--videos", str(videos), "--out", str(tmp_path / "o"), "--preset", "tiny", "--no-progress",
                         "--syncnet", str(tmp_path / "syncnet_v2.model"), "--set", "max_pieces_per_video=1",
                         "--set", "syncnet_min_confidence=1000"]) == 0
    rejected = [json.loads(line) for line in (tmp_path / "o" / "rejected.jsonl").open()]
    assert len(rejected) == 1 and "audio-visual sync syncnet score" in rejected[0]["reason"]
    assert "need >= 1000" in rejected[0]["reason"]
    assert DatasetLayout(tmp_path / "o").read_info()["prepare"]["sync"] == "syncnet"
    with pytest.raises(SystemExit, match="needs the SyncNet weights"):
        prepare_main(["--videos", str(videos), "--out", str(tmp_path / "o2"), "--preset", "tiny", "--set", "sync=syncnet"])


def test_cli_tiny_preset_prepares(data, tmp_path, capsys):
    src, _, _ = data
    videos = tmp_path / "v"
    videos.mkdir()
    (videos / "b.mp4").write_bytes((src / "b.mp4").read_bytes())
    assert prepare_main(["--videos", str(videos), "--out", str(tmp_path / "o"), "--preset", "tiny", "--no-progress",
                         "--set", "max_pieces_per_video=1"]) == 0
    counts = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert counts["clips"] == 1
    assert os.path.isfile(tmp_path / "o" / "clips" / "b_c0000.safetensors")
