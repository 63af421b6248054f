"""`python -m training.prepare --videos DIR --out DATASET`: talking videos -> a training dataset.

Per video: the soundtrack (16 kHz), the caption (a captions file or a `<video>.txt` sidecar; empty
is allowed) and its embedding, then frames at `fps` cut into pieces of `num_frames`. Per piece, the
filters of the paper (a confident face, the face tracked through the piece, audio-visual sync,
and the minimum length: a video shorter than one piece gives none), then the tensors
(`featurize.featurize_piece`), written atomically (see store.py). Re-running skips finished videos
and finished pieces, so a crashed or killed run simply continues; `--shard i/n` splits the videos
between processes (e.g. one per GPU) writing into the same dataset.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
from pathlib import Path

import numpy as np
import torch

from fantasytalking_core.audio import SAMPLE_RATE, read_audio
from fantasytalking_core.motion import MotionNormalization, fit_normalization
from fantasytalking_core.video import frames_at_fps

from .config import PrepareConfig, renamed_prepare_keys
from .featurize import ARCFACE_MISSING, Encoders, Rejected, encoder_dims, featurize_piece
from .store import (DATASET_FORMAT, VERSION, DatasetLayout, read_piece, remove_stale_tmp, write_json_atomic,
                    write_jsonl_atomic, write_safetensors, write_tensors_atomic)
from .sync import EnergySync, SyncNetScorer
from .videos import caption_for, find_source_videos, load_captions, video_info, video_key


def _check_or_create_info(layout: DatasetLayout, cfg: PrepareConfig, enc: Encoders) -> dict:
    """dataset.json: created on the first run; later runs must use the same settings and encoders."""
    fixed = {k: v for k, v in cfg.to_dict().items() if k != "motion_normalization"}
    if layout.info.is_file():
        info = layout.read_info()
        stored = renamed_prepare_keys(info["prepare"])  # a dataset prepared before the key renames
        diff = {k: (stored.get(k), v) for k, v in fixed.items() if stored.get(k) != v}
        if info.get("face_embedding") != enc.face_embedding:
            diff["face_embedding source"] = (info.get("face_embedding"), enc.face_embedding)
        if diff:
            changes = ", ".join(f"{k}: {a!r} -> {b!r}" for k, (a, b) in diff.items())
            raise ValueError(f"{layout.root} was prepared with other settings ({changes}); use the same settings to "
                             "continue it, or another --out")
        return info
    dims = encoder_dims(enc)
    info = {"format": DATASET_FORMAT, "version": VERSION, "prepare": fixed, **dims, "latent_channels": 16,
            "face_embedding": enc.face_embedding, "encoders": enc.sources,
            "motion_normalization": MotionNormalization.default().to_dict()}
    layout.make()
    with torch.no_grad():
        null = enc.text_encoder([""])[0].float().cpu()
    write_safetensors(layout.null_text, {"text": null}, {"what": "embedding of the empty prompt"}, overwrite=True)
    write_json_atomic(layout.info, info)
    return info


def prepare_video(path: Path, root: Path, layout: DatasetLayout, cfg: PrepareConfig, enc: Encoders, captions: dict,
                  sync, progress: bool = True) -> dict:
    """Process one video (skipping pieces already written); returns its record (also written)."""
    from tqdm.auto import tqdm

    key = video_key(path, root)
    record = {"video": path.relative_to(root).as_posix(), "key": key, "clips": [], "rejected": [], "video_rejected": None}
    info = video_info(path)
    wave = None
    try:
        wave = read_audio(path).to_16k(align_to_video=True) if info.has_audio else None
    except ValueError as err:  # an audio stream without samples, a damaged one
        record["video_rejected"] = f"audio track unreadable: {err}"
    if wave is None:
        record["video_rejected"] = record["video_rejected"] or "no audio track"
    elif info.duration is not None and info.duration + 0.5 / cfg.fps < cfg.shortest:
        record["video_rejected"] = (f"{info.duration:.2f} s is shorter than the minimum length {cfg.shortest:.2f} s "
                                    f"(min_seconds {cfg.min_seconds}, one piece {cfg.seconds:.2f} s)")
    if record["video_rejected"] is not None:
        write_json_atomic(layout.record_path(key), record)
        return record
    caption = caption_for(path, root, captions)
    with torch.no_grad():
        text = enc.text_encoder([caption])[0].float().cpu()  # [L, text_dim]
    expected = None
    if info.duration is not None:
        expected = max(0, (int(info.duration * cfg.fps + 0.5) - cfg.num_frames) // cfg.stride + 1)
        expected = min(expected, cfg.max_pieces_per_video or expected)
    bar = tqdm(total=expected, desc=key[:40], unit="piece", leave=False, disable=not progress)
    buffer: list = []
    start = index = to_skip = 0
    samples = int(cfg.num_frames / cfg.fps * SAMPLE_RATE)  # as audio.fit_to_frames cuts a piece's audio
    for frame in frames_at_fps(path, cfg.fps, max(cfg.analysis_size, cfg.size)):
        if to_skip:  # the gap between pieces when piece_stride > num_frames
            to_skip -= 1
            continue
        buffer.append(frame)
        if len(buffer) < cfg.num_frames:
            continue
        piece_id = f"{key}_c{index:04d}"
        piece_path = layout.piece_path(piece_id)
        row = {"clip_id": piece_id, "file": piece_path.relative_to(layout.root).as_posix(), "video": record["video"],
               "start_frame": start, "num_frames": cfg.num_frames, "fps": cfg.fps, "caption": caption}
        if piece_path.is_file():  # finished by an earlier run
            row.update(read_piece(piece_path)[1])
            record["clips"].append(row)
        else:
            a0 = int(start / cfg.fps * SAMPLE_RATE)
            piece_wave = wave[a0:a0 + samples]
            result = (Rejected("the audio ends before the piece does") if piece_wave.numel() < samples else
                      featurize_piece(np.stack(buffer[:cfg.num_frames]), piece_wave, text, enc, cfg, sync))
            if isinstance(result, Rejected):
                record["rejected"].append({"clip_id": piece_id, "start_frame": start, "reason": result.reason})
            else:
                tensors, stats = result
                row.update(stats)
                write_tensors_atomic(piece_path, tensors, row)
                record["clips"].append(row)
        bar.update(1)
        index += 1
        start += cfg.stride
        buffer = buffer[cfg.stride:]
        to_skip = max(0, cfg.stride - cfg.num_frames)
        if cfg.max_pieces_per_video is not None and index >= cfg.max_pieces_per_video:
            break
    bar.close()
    if index == 0:
        record["video_rejected"] = f"fewer than {cfg.num_frames} frames at {cfg.fps} fps"
    write_json_atomic(layout.record_path(key), record)
    return record


def build_manifest(layout: DatasetLayout, cfg: PrepareConfig) -> dict:
    """manifest.jsonl, rejected.jsonl and the motion normalisation in dataset.json, from the records."""
    records = [json.loads(p.read_text()) for p in sorted(layout.records.glob("*.json"))]
    rows = [c for r in records for c in r["clips"]]
    rejected = [{"video": r["video"], "reason": r["video_rejected"]} for r in records if r["video_rejected"]]
    rejected += [{"video": r["video"], **c} for r in records for c in r["rejected"]]
    info = layout.read_info()
    norm = MotionNormalization.default()
    if cfg.motion_normalization == "fit":
        raw_l = [r["raw_l"] for r in rows if r.get("raw_l") is not None]
        raw_b = [r["raw_b"] for r in rows if r.get("raw_b") is not None]
        try:
            norm = fit_normalization(raw_l, raw_b)
        except ValueError as err:
            print(f"motion normalisation: the default constants are kept ({err})")
    for r in rows:
        r["omega_l"] = 0.5 if r.get("raw_l") is None else round(norm.omega_l(r["raw_l"]), 4)
        r["omega_b"] = 0.5 if r.get("raw_b") is None else round(norm.omega_b(r["raw_b"]), 4)
    info["motion_normalization"] = norm.to_dict()
    write_json_atomic(layout.info, info)
    write_jsonl_atomic(layout.manifest, rows)
    write_jsonl_atomic(layout.rejected, rejected)
    return {"videos": len(records), "clips": len(rows), "rejected_clips": sum(len(r["rejected"]) for r in records),
            "rejected_videos": sum(1 for r in records if r["video_rejected"])}


def prepare_dataset(videos: str | Path, out: str | Path, cfg: PrepareConfig, enc: Encoders,
                    captions: dict | None = None, sync="default", shard: tuple[int, int] = (0, 1),
                    progress: bool = True) -> dict:
    """Prepare (or continue preparing) `out` from the videos under `videos`; returns counts."""
    from tqdm.auto import tqdm

    root = Path(videos).expanduser()
    layout = DatasetLayout(out)
    files = find_source_videos(root)
    if not files:
        raise FileNotFoundError(f"no videos ({', '.join(('.mp4', '.mov', '.mkv', '...'))}) under {root}")
    if cfg.face_embedding == "arcface" and enc.face is None:
        raise ValueError(ARCFACE_MISSING)
    if cfg.face_embedding == "fallback" and enc.face is not None:
        raise ValueError(f"face_embedding is 'fallback' but ArcFace models were given ({enc.face.model_path}); "
                         "use face_embedding 'arcface'")
    _check_or_create_info(layout, cfg, enc)
    remove_stale_tmp(layout.clips)
    remove_stale_tmp(layout.records)
    if sync == "default" and cfg.sync == "syncnet":
        raise ValueError("sync 'syncnet' needs the SyncNet weights: pass --syncnet syncnet_v2.model (from "
                         "joonson/syncnet_python), or use sync 'energy' (the proxy)")
    if sync == "default":
        sync = EnergySync(search=2 * cfg.sync_max_offset, min_motion=cfg.sync_min_lip_motion) if cfg.sync == "energy" \
            else None
    mine = files[shard[0]::shard[1]]
    done = skipped = 0
    for path in tqdm(mine, desc="videos", unit="video", disable=not progress):
        if layout.record_path(video_key(path, root)).is_file():
            skipped += 1
            continue
        prepare_video(path, root, layout, cfg, enc, captions or {}, sync, progress)
        done += 1
    counts = build_manifest(layout, cfg)
    return {"processed_videos": done, "skipped_videos": skipped, **counts}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m training.prepare", description=__doc__.split("\n\n")[0])
    ap.add_argument("--videos", required=True, help="folder of talking videos (searched recursively)")
    ap.add_argument("--out", required=True, help="dataset folder (created; re-running continues it)")
    ap.add_argument("--preset", choices=("paper", "tiny"), default="paper",
                    help="paper: 81 frames at 512 px; tiny: 17 frames at 128 px with the random tiny encoders")
    ap.add_argument("--captions", help="JSON {video: caption} or JSONL; otherwise <video>.txt sidecars")
    for name in ("vae", "text-encoder", "tokenizer", "clip-vision", "wav2vec", "insightface-pack"):
        ap.add_argument(f"--{name}", help=f"{name.replace('-', ' ')} file or folder (real encoders)")
    ap.add_argument("--syncnet", help="SyncNet weights (syncnet_v2.model): filter sync by Sync-C instead of the proxy")
    ap.add_argument("--fallback-face-embedding", action="store_true",
                    help="no ArcFace: a named pixel-projection embedding (tests and demos only)")
    ap.add_argument("--device", default="auto", help="auto (the first CUDA GPU when there is one, else the CPU), cpu, "
                                                    "cuda or cuda:N")
    ap.add_argument("--shard", default="0/1", help="i/n: process every n-th video starting at i")
    ap.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE",
                    help="override a PrepareConfig field, e.g. --set num_frames=49 --set sync_min_score=0.4")
    ap.add_argument("--no-progress", action="store_true")
    args = ap.parse_args(argv)

    import yaml

    base = PrepareConfig.tiny() if args.preset == "tiny" else PrepareConfig.paper()
    changes = {}
    for item in args.set:
        k, sep, v = item.partition("=")
        k = next(iter(renamed_prepare_keys({k: None}, f"--set {item}")))
        if not sep or k not in {f.name for f in dataclasses.fields(PrepareConfig)}:
            raise SystemExit(f"error: --set {item!r}: use FIELD=VALUE with a field of {sorted(base.to_dict())}")
        changes[k] = yaml.safe_load(v)
    if args.fallback_face_embedding:
        changes["face_embedding"] = "fallback"
    if args.syncnet:
        changes["sync"] = "syncnet"
    i, _, n = args.shard.partition("/")
    if not (i.isdigit() and n.isdigit() and int(i) < int(n)):
        raise SystemExit(f"error: --shard {args.shard!r} must be i/n with 0 <= i < n")
    try:  # bad input raises with a message that says what to do
        cfg = dataclasses.replace(base, **changes)
        if args.preset == "tiny":
            if cfg.face_embedding != "fallback":
                raise ValueError("the tiny preset has no ArcFace models; it uses --fallback-face-embedding")
            enc = Encoders.tiny()
        else:
            missing = [n for n in ("vae", "text_encoder", "clip_vision", "wav2vec") if getattr(args, n) is None]
            if missing:
                raise ValueError(f"real encoders need --{', --'.join(m.replace('_', '-') for m in missing)} "
                                 "(or --preset tiny for the tiny model)")
            if args.insightface_pack is None and cfg.face_embedding != "fallback":
                raise ValueError(ARCFACE_MISSING)
            enc = Encoders.load(args.vae, args.text_encoder, args.clip_vision, args.wav2vec,
                                None if cfg.face_embedding == "fallback" else args.insightface_pack, args.tokenizer,
                                args.device)
        sync = SyncNetScorer.load(args.syncnet, str(enc.device)) if args.syncnet else "default"
        counts = prepare_dataset(args.videos, args.out, cfg, enc, load_captions(args.captions), sync=sync,
                                 shard=(int(i), int(n)), progress=not args.no_progress)
    except (FileNotFoundError, ImportError, RuntimeError, ValueError) as err:
        raise SystemExit(f"error: {err}") from None
    print(json.dumps(counts))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
