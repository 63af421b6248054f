"""Batch mode: every video of a folder -> one report folder each and one CSV row each.

Companions are found by file stem next to each video: `<stem>.wav|.flac|.ogg` is used as its
audio (else the video's own stream), `<stem>.png|.jpg|...` as its reference (else the
`reference` given for all). With `real` (a folder of ground-truth videos) FID and FVD are
computed once over the whole set, as papers report them, and written in the final `MEAN` row,
which also holds the mean of every per-video number. A video that fails is recorded with its
error in the `error` column and the others go on.
"""

from __future__ import annotations

import csv
import os
from pathlib import Path
from typing import Any

import numpy as np

from fantasytalking_core.video import VIDEO_EXTENSIONS

from .config import EvalConfig, eval_models_dir, find_insightface_pack
from .media import AUDIO_EXTENSIONS, IMAGE_EXTENSIONS, load_input
from .report import write_json

SET_METRICS = ("fid", "fvd")


def find_videos(folder: str | os.PathLike) -> list[Path]:
    root = Path(folder).expanduser()
    if not root.is_dir():
        raise NotADirectoryError(f"--videos {root} is not a folder; give the folder holding the videos")
    videos = sorted(p for p in root.iterdir() if p.suffix.lower() in VIDEO_EXTENSIONS and not p.name.startswith("."))
    if not videos:
        raise FileNotFoundError(f"no videos ({', '.join(VIDEO_EXTENSIONS)}) in {root}")
    return videos


def companion(video: Path, extensions: tuple[str, ...]) -> Path | None:
    for ext in extensions:
        for cand in (video.with_suffix(ext), video.with_suffix(ext.upper())):
            if cand.is_file():
                return cand
    return None


def _mean_row(rows: list[dict[str, Any]], columns: list[str]) -> dict[str, Any]:
    row: dict[str, Any] = {"video": "MEAN"}
    for c in columns:
        vals = [r.get(c) for r in rows if isinstance(r.get(c), (int, float)) and not isinstance(r.get(c), bool)]
        vals = [v for v in vals if np.isfinite(v)]
        if vals:
            row[c] = float(np.mean(vals))
    return row


def _cell(v: Any) -> Any:
    if isinstance(v, float):
        return "" if not np.isfinite(v) else f"{v:.6g}"
    return "" if v is None else v


def write_csv(rows: list[dict[str, Any]], path: Path) -> Path:
    columns = ["video"] + sorted({k for r in rows for k in r if k not in ("video", "error")}) + ["error"]
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "w", newline="", encoding="utf-8") as f:
        w = csv.DictWriter(f, fieldnames=columns)
        w.writeheader()
        for r in rows:
            w.writerow({c: _cell(r.get(c)) for c in columns})
    os.replace(tmp, path)
    return path


def evaluate_folder(folder: str | os.PathLike, out_dir: str | os.PathLike, config: EvalConfig | None = None,
                    reference: str | os.PathLike | None = None, real: str | os.PathLike | None = None,
                    log: Any = print) -> dict[str, Any]:
    """Evaluate every video in `folder`; returns {"csv", "summary", "rows", "set_metrics"}."""
    from .identity import make_embedder
    from .paper import PaperModels, fid_features, fid_from_features, fvd_features, fvd_from_features
    from .runner import evaluate, write_report

    cfg = config or EvalConfig()
    videos = find_videos(folder)
    real_videos = find_videos(real) if real is not None else []
    out = Path(out_dir).expanduser()
    out.mkdir(parents=True, exist_ok=True)
    per_video_cfg = cfg.with_changes(paper_metrics=tuple(m for m in cfg.paper_metrics if m not in SET_METRICS))
    set_wanted = [m for m in SET_METRICS if m in cfg.paper_metrics]
    embedder = make_embedder(find_insightface_pack(cfg.insightface_pack))
    models = PaperModels(eval_models_dir(cfg.models_dir), cfg.device)
    feats: dict[str, list[np.ndarray]] = {m: [] for m in set_wanted}
    set_errors: dict[str, str] = {}
    rows = []
    for i, video in enumerate(videos):
        log(f"[{i + 1}/{len(videos)}] {video.name}")
        try:
            inp = load_input(video, companion(video, AUDIO_EXTENSIONS),
                             companion(video, IMAGE_EXTENSIONS) or reference)
            report = evaluate(inp, per_video_cfg, embedder=embedder, models=models)
            write_report(report, out / video.stem, plots=cfg.plots)
            rows.append({"video": video.name, **report["metrics"]})
        except (ValueError, FileNotFoundError, RuntimeError, OSError) as exc:
            rows.append({"video": video.name, "error": f"{type(exc).__name__}: {exc}"})
            log(f"  failed: {exc}")
            continue
        for m in [m for m in set_wanted if m not in set_errors and real_videos]:
            try:
                feats[m].append(fid_features(models, inp.frames, cfg.paper_max_frames) if m == "fid"
                                else fvd_features(models, inp.frames, cfg.fvd_clip_frames))
            except (FileNotFoundError, ValueError) as exc:
                set_errors[m] = str(exc)
    set_metrics: dict[str, Any] = {}
    for m in set_wanted:
        if not real_videos:
            set_metrics[m] = {"available": False, "reason": "pass --real DIR (ground-truth videos) for set-level "
                                                            f"{m.upper()}"}
        elif m in set_errors or not feats[m]:
            set_metrics[m] = {"available": False, "reason": set_errors.get(m, "no video could be evaluated")}
        else:
            try:
                ref = [fid_features(models, load_input(v).frames, cfg.paper_max_frames) if m == "fid"
                       else fvd_features(models, load_input(v).frames, cfg.fvd_clip_frames) for v in real_videos]
                fn = fid_from_features if m == "fid" else fvd_from_features
                gen, refs = np.concatenate(feats[m]), np.concatenate(ref)
                set_metrics[m] = {"available": True, "value": fn(gen, refs), "samples": [len(gen), len(refs)]}
            except (FileNotFoundError, ValueError) as exc:
                set_metrics[m] = {"available": False, "reason": str(exc)}
    ok_rows = [r for r in rows if "error" not in r]
    columns = sorted({k for r in ok_rows for k in r if k != "video"})
    mean = _mean_row(ok_rows, columns)
    for m, res in set_metrics.items():
        mean[m] = res.get("value")
    all_rows = rows + [mean]
    csv_path = write_csv(all_rows, out / "summary.csv")
    summary = write_json({"folder": str(Path(folder).expanduser()), "real": None if real is None else str(real),
                          "rows": all_rows, "set_metrics": set_metrics, "config": cfg.to_dict()},
                         out / "summary.json")
    return {"csv": csv_path, "summary": summary, "rows": all_rows, "set_metrics": set_metrics}
