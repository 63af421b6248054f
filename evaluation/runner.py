"""One video -> every metric -> a report (dict), and the report folder on disk.

One face-mesh pass (`lipmask.face_mesh_track`) serves lip sync, identity alignment, face-region
sharpness and the SyncNet crops; one flow pass serves dynamics and the warp flicker.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import numpy as np

from .config import EvalConfig, eval_models_dir, find_insightface_pack
from .media import EvalInput, resize_longer
from .report import SCHEMA, plot_dynamics, plot_lipsync, write_json


def evaluate(inp: EvalInput, config: EvalConfig | None = None, *, embedder: Any = None, models: Any = None,
             real: EvalInput | None = None) -> dict[str, Any]:
    """All metrics of `inp`. `embedder` (identity) and `models` (paper metrics) may be passed to
    reuse them across videos; by default they are built from `config`. `real`: ground-truth
    video for FID / FVD."""
    from fantasytalking_core.lipmask import face_mesh_track
    from .dynamics import farneback_flows, measure_dynamics, person_masks
    from .identity import make_embedder, measure_identity
    from .lipsync import measure_lipsync
    from .paper import PaperModels, evaluate_paper, paper_headline
    from .quality import measure_quality

    cfg = config or EvalConfig()
    timing: dict[str, float] = {}
    clock = time.perf_counter()

    def lap(name: str) -> None:
        nonlocal clock
        now = time.perf_counter()
        timing[name] = round(now - clock, 3)
        clock = now

    track = face_mesh_track(inp.frames)
    lap("face_mesh")
    lips = measure_lipsync(track.landmarks, track.found, inp.audio, inp.fps, cfg.max_offset_frames,
                           cfg.min_overlap_frames, audio_reason=inp.audio_source)
    lap("lipsync")
    embedder = embedder or make_embedder(find_insightface_pack(cfg.insightface_pack))
    ident = measure_identity(inp.frames, track.landmarks, track.found, embedder, inp.reference, cfg.identity_max_frames)
    lap("identity")
    size = min(cfg.analysis_size, max(inp.frames.shape[1:3]))
    small, scale = resize_longer(inp.frames, size)
    flows = farneback_flows(small, cfg.flow)
    masks = person_masks(small, cfg.mask_threshold)
    dyn = measure_dynamics(flows, masks, scale, cfg.boundary_px)
    lap("dynamics")
    qual = measure_quality(inp.frames, flows, small, track.landmarks, cfg.sharpness_max_frames)
    lap("quality")
    paper: dict[str, Any] = {}
    if cfg.paper_metrics:
        models = models or PaperModels(eval_models_dir(cfg.models_dir), cfg.device)
        paper = evaluate_paper(inp, track, models, cfg, real)
        paper["models_dir"] = str(models.folder)
        lap("paper")
    metrics = {"face_found_fraction": float(np.mean(track.found)), **lips.headline(), **ident.headline(),
               **dyn.headline(), **qual.headline(), **paper_headline(paper)}
    series = {**lips.series, "flow_subject": dyn.subject, "flow_background": dyn.background, "flow_whole": dyn.whole,
              "flicker_luma": qual.flicker_luma, "flicker_warp": qual.flicker_warp, "sharpness": qual.sharpness}
    return {"schema": SCHEMA, "video": inp.describe(), "metrics": metrics, "lipsync": lips.to_dict(),
            "identity": ident.to_dict(), "dynamics": dyn.to_dict(), "quality": qual.to_dict(), "paper": paper,
            "series": series, "config": cfg.to_dict(), "timing_s": timing}


def write_report(report: dict[str, Any], out_dir: str | os.PathLike, plots: bool = True) -> dict[str, Path]:
    """`report.json` (+ `lipsync.png`, `dynamics.png`) in `out_dir`, created if needed; files of
    the same names are replaced."""
    out = Path(out_dir).expanduser()
    if out.exists() and not out.is_dir():
        raise NotADirectoryError(f"--out {out} is a file; give a folder for the report")
    out.mkdir(parents=True, exist_ok=True)
    paths = {"json": write_json(report, out / "report.json")}
    if plots:
        s, fps, name = report["series"], report["video"]["fps"], report["video"]["name"]
        paths["lipsync_png"] = plot_lipsync(out / "lipsync.png", s, fps, report["lipsync"], f"lip-sync proxy: {name}")
        paths["dynamics_png"] = plot_dynamics(out / "dynamics.png", s["flow_subject"], s["flow_background"],
                                              s["flow_whole"], fps, f"dynamics: {name}")
    return paths
