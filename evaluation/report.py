"""The report on disk: `report.json` with every number, and PNG plots a person can read.

Plots are drawn with matplotlib's object API on an Agg canvas (no pyplot, no global backend).
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any

import numpy as np

SCHEMA = "fantasytalking-eval/1"


def to_jsonable(x: Any) -> Any:
    """numpy/torch values -> plain JSON types; NaN and infinities -> null."""
    if isinstance(x, dict):
        return {str(k): to_jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [to_jsonable(v) for v in x]
    if hasattr(x, "detach"):
        x = x.detach().cpu().numpy()
    if isinstance(x, np.ndarray):
        return to_jsonable(x.tolist())
    if isinstance(x, (np.bool_, bool)):
        return bool(x)
    if isinstance(x, (np.integer, int)):
        return int(x)
    if isinstance(x, (np.floating, float)):
        return None if not math.isfinite(float(x)) else float(x)
    if isinstance(x, Path):
        return str(x)
    return x


def write_json(data: dict, path: str | os.PathLike) -> Path:
    p = Path(path)
    tmp = p.with_name(f".{p.name}.tmp")
    tmp.write_text(json.dumps(to_jsonable(data), indent=2, allow_nan=False), encoding="utf-8")
    os.replace(tmp, p)
    return p


def require_matplotlib() -> None:
    """The plots need the optional matplotlib package; a clear error naming the fix without it."""
    try:
        import matplotlib  # noqa: F401
    except ImportError as err:
        raise ImportError(f"the evaluation plots need matplotlib ({err}): pip install \"matplotlib>=3.7\", or pass "
                          "--no-plots to write report.json only") from err


def _figure(rows: int, height: float):
    require_matplotlib()
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(10, height), dpi=100, layout="constrained")
    FigureCanvasAgg(fig)
    return fig, fig.subplots(rows, 1, squeeze=False)[:, 0]


def plot_lipsync(path: str | os.PathLike, series: dict, fps: float, result: dict, title: str = "") -> Path:
    """Mouth opening (left axis) and audio loudness (right axis, also shifted by the best
    offset) over time, and correlation against offset."""
    fig, (ax, ax2) = _figure(2, 6.5)
    mouth = series["mouth_opening"]
    t = np.arange(len(mouth)) / fps
    lines = ax.plot(t, mouth, color="tab:red", lw=1.6, label="mouth opening (inner-lip gap / eye distance)")
    ax.set_ylabel("mouth opening")
    energy = series.get("audio_energy_db")
    best = (result.get("energy") or {}).get("offset_frames")
    if energy is not None:
        axr = ax.twinx()
        lines += axr.plot(t, energy, color="tab:blue", lw=1.0, alpha=0.7, label="audio loudness (dB below peak)")
        if best:
            lines += axr.plot(t + best / fps, energy, color="tab:blue", lw=1.0, ls="--",
                              label=f"loudness shifted by the best offset, {best:+d} frames")
        axr.set_ylabel("loudness (dB)")
    ax.set_xlabel("time (s)")
    ax.set_title(title or "lip-sync proxy")
    ax.legend(lines, [ln.get_label() for ln in lines], loc="upper right", fontsize=8)
    ax.grid(alpha=0.3)
    for key, color, label in (("energy", "tab:blue", "mouth opening vs loudness"),
                              ("onset", "tab:green", "mouth rise vs onsets")):
        r = result.get(key)
        if r and r.get("offsets"):
            curve = np.array([np.nan if c is None else c for c in r["curve"]], np.float64)
            ax2.plot(r["offsets"], curve, marker="o", ms=3, color=color, label=label)
            if r.get("offset_frames") is not None:
                ax2.axvline(r["offset_frames"], color=color, ls=":", lw=1)
    if not result.get("available", True):
        ax2.text(0.5, 0.5, "lip sync unavailable:\n" + str(result.get("reason", "")), ha="center", va="center",
                 transform=ax2.transAxes, wrap=True)
    ax2.set_xlabel("offset (frames; > 0: video lags audio)")
    ax2.set_ylabel("Pearson correlation")
    if ax2.get_legend_handles_labels()[0]:
        ax2.legend(loc="upper right", fontsize=8)
    elif result.get("available", True):
        ax2.text(0.5, 0.5, "no correlation: " + "; ".join(result.get("notes", [])), ha="center", va="center",
                 transform=ax2.transAxes, wrap=True)
    ax2.grid(alpha=0.3)
    fig.savefig(str(path))
    return Path(path)


def plot_dynamics(path: str | os.PathLike, subject: np.ndarray, background: np.ndarray, whole: np.ndarray,
                  fps: float, title: str = "") -> Path:
    """Per-frame-pair mean flow magnitude in the subject, the background and the whole frame."""
    fig, (ax,) = _figure(1, 4.0)
    t = (np.arange(len(whole)) + 0.5) / fps
    ax.plot(t, subject, color="tab:red", label="subject (person mask)")
    ax.plot(t, background, color="tab:blue", label="background")
    ax.plot(t, whole, color="0.5", lw=0.8, ls="--", label="whole frame")
    ax.set_xlabel("time (s)")
    ax.set_ylabel("flow magnitude (% of diagonal / frame)")
    ax.set_title(title or "subject and background dynamics (Farneback flow)")
    ax.legend(loc="upper right", fontsize=8)
    ax.grid(alpha=0.3)
    fig.savefig(str(path))
    return Path(path)
