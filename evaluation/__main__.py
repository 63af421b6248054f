"""Command line: ``python -m evaluation --video V.mp4 --out DIR`` (one video) or
``python -m evaluation --videos FOLDER --out DIR`` (batch, one CSV)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from .config import PAPER_METRICS, PRESETS

HEADLINE = ("lipsync_offset_frames", "lipsync_corr", "identity_to_reference", "identity_to_first", "identity_embedder",
            "subject_dynamics", "background_dynamics", "flicker_luma", "flicker_warp", "sharpness",
            "sync_c", "sync_d", "fid", "fvd", "idc", "aesthetic")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m evaluation",
        description="Measure talking videos: lip-sync proxy, identity, subject/background dynamics, flicker, "
                    "sharpness offline; Sync-C/D, FID, FVD, IDC and aesthetics when their weights are in --models.")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--video", help="one video file")
    src.add_argument("--videos", help="a folder of videos (batch mode: one report each and summary.csv)")
    p.add_argument("--out", required=True, help="report folder (created; report.json and PNGs are replaced)")
    p.add_argument("--reference", help="reference image of the person (identity to reference)")
    p.add_argument("--audio", help="driving audio (wav/flac/ogg or a video); default: the video's own audio")
    p.add_argument("--real", help="ground-truth video (or, with --videos, a folder of them) for FID / FVD")
    p.add_argument("--models", help="folder with the paper-metric weights (default: <models>/eval, where <models> "
                                    "is $FANTASYTALKING_MODELS_DIR, ComfyUI/models or ./models)")
    p.add_argument("--insightface", help="insightface pack folder for ArcFace identity (default: antelopev2 or "
                                         "buffalo_l in <models>/insightface/models, else the HOG fallback)")
    p.add_argument("--preset", choices=sorted(PRESETS), default="default")
    p.add_argument("--paper", default=None,
                   help=f"comma-separated paper metrics to attempt ({','.join(PAPER_METRICS)}), or 'none'; "
                        "default: all (each reports why when its weights are absent)")
    p.add_argument("--max-offset", type=int, default=None, help="lip-sync proxy search range, +- frames (15)")
    p.add_argument("--device", default=None, help="torch device for the paper metrics (cpu)")
    p.add_argument("--no-plots", action="store_true", help="write report.json only")
    return p


def _config(args: argparse.Namespace):
    cfg = PRESETS[args.preset]()
    changes = {"models_dir": args.models, "insightface_pack": args.insightface, "plots": not args.no_plots}
    if args.paper is not None:
        names = () if args.paper.strip().lower() in ("", "none") else tuple(s.strip() for s in args.paper.split(","))
        changes["paper_metrics"] = names
    if args.max_offset is not None:
        changes["max_offset_frames"] = args.max_offset
    if args.device:
        changes["device"] = args.device
    return cfg.with_changes(**{k: v for k, v in changes.items() if v is not None or k == "plots"})


def _fmt(v) -> str:
    return "-" if v is None else (f"{v:.4g}" if isinstance(v, float) else str(v))


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        cfg = _config(args)
        if cfg.plots:
            from .report import require_matplotlib

            require_matplotlib()  # before minutes of work, not after
        if args.videos:
            from .batch import evaluate_folder

            if args.audio:
                raise ValueError("--audio is per video; in batch mode put <stem>.wav next to each video")
            res = evaluate_folder(args.videos, args.out, cfg, reference=args.reference, real=args.real)
            print(f"wrote {res['csv']} ({len(res['rows']) - 1} videos) and {res['summary']}")
            for m, r in res["set_metrics"].items():
                print(f"{m}: {_fmt(r.get('value')) if r.get('available') else 'unavailable: ' + r['reason']}")
            return 1 if any("error" in r for r in res["rows"]) else 0
        from .media import load_input
        from .runner import evaluate, write_report

        inp = load_input(args.video, args.audio, args.reference)
        real = load_input(args.real) if args.real else None
        report = evaluate(inp, cfg, real=real)
        paths = write_report(report, args.out, plots=cfg.plots)
    except (ValueError, FileNotFoundError, NotADirectoryError, RuntimeError, ImportError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    m = report["metrics"]
    width = max(len(k) for k in HEADLINE)
    for k in HEADLINE:
        print(f"{k:<{width}}  {_fmt(m.get(k))}")
    if not report["lipsync"]["available"]:
        print(f"lip sync unavailable: {report['lipsync']['reason']}")
    for note in report["lipsync"]["notes"] + report["identity"]["notes"] + report["dynamics"]["notes"]:
        print(f"note: {note}")
    for name, res in report["paper"].items():
        if isinstance(res, dict) and not res.get("available"):
            print(f"{name}: unavailable ({res['reason'].split('. ')[0]})")
    print("wrote " + ", ".join(str(Path(p)) for p in paths.values()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
