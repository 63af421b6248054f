"""A real ComfyUI's peak memory against the length of the recording: the long-audio template through
FantasyTalking Long Video Sampler (to file) (segments written into an mp4 as they are made) and
through the IMAGE path (Long Video Sampler -> CreateVideo -> SaveVideo: every frame in one IMAGE).

Each row starts a fresh ComfyUI (``main.py --cpu``, the host's own interpreter) with the pack and the
smoke suite's tiny random-weight files (scripts/comfy_tiny_models.py: Wan DiT and VAE at their real
channel widths, wav2vec2-base's shapes), runs template 03 on a recording made of
assets/speech_en_16k.wav said again and again up to the length asked for, at a small size, and reads
the server's peak resident memory (VmHWM) when the prompt is done, with the wall time of the prompt.
To keep 600 s of speech (171 segments) within reach of a CPU, the VAE is a narrow Wan VAE
(``--vae-dim``, 8 channels where the real one has 96; ComfyUI 0.33 reads the width from the file),
sampling takes 1 step with cfg_text and cfg_audio 1 (one DiT pass): neither changes what is measured
(one segment's frames in memory at a time, or every frame).
The table then gives, per path, how much the peak grew from the shortest to each longer recording,
against what an IMAGE of the extra frames weighs (float32 H x W x 3): the target of issue 25 is growth
below 10% of that for the file, at least half of it for the IMAGE (so the harness sees what it measures).

    python -m benchmarks.comfy_long_video_memory --comfyui /path/to/ComfyUI              # 60 s and 600 s, 64 px
    python -m benchmarks.comfy_long_video_memory --comfyui C --seconds 10 60 --paths file --results rows.jsonl

Rows are appended to ``--results`` (JSON lines) as they finish, and rows already there are not run
again, so a long run can be resumed and its table printed at any point (``--table-only``).
"""

from __future__ import annotations

if __name__ == "__main__" and not __package__:  # run by path: run again as `python -m <folder>.<name>` (scripts/__init__.py)
    import os, sys  # noqa: E401
    here, name = os.path.split(os.path.splitext(os.path.abspath(__file__))[0])
    os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [os.path.dirname(here), os.environ.get("PYTHONPATH")]))
    os.execv(sys.executable, [sys.executable, "-m", f"{os.path.basename(here)}.{name}", *sys.argv[1:]])

import argparse
import json
import re
import sys
import tempfile
import threading
import time
from dataclasses import replace
from pathlib import Path

from scripts import comfy_smoke_workflows as wfs
from scripts import example_workflows as ew
from scripts.comfy_host import ComfyServer, comfy_python, host_version, make_base
from scripts.comfy_tiny_models import MODEL_FILES, random_state, wan_vae_shapes
from scripts.comfyui_smoke import link_models, model_files, peak_rss_mib, proc_status_mib

PATHS = ("file", "image")
KINDS = ("wan_dit", "clip_l", "wav2vec2", "ft_ckpt")
FPS = 23.0


def make_recording(path: Path, seconds: float) -> Path:
    """The speech sample said again and again, cut to `seconds`."""
    import numpy as np
    import soundfile

    wave, rate = soundfile.read(str(wfs.SPEECH_WAV), dtype="float32")
    reps = int(np.ceil(seconds * rate / len(wave)))
    soundfile.write(str(path), np.tile(wave, reps)[: round(seconds * rate)], rate, subtype="PCM_16")
    return path


def narrow_vae(models_dir: Path, dim: int) -> Path:
    """A Wan2.1 VAE file `dim` channels wide (random weights), made once."""
    from safetensors.torch import save_file

    path = models_dir / "vae" / f"bench_wan21_vae_dim{dim}.safetensors"
    if not path.is_file():
        path.parent.mkdir(parents=True, exist_ok=True)
        save_file({k: v.contiguous() for k, v in random_state(wan_vae_shapes(dim), 1).items()}, str(path))
    return path


def graph(path: str, audio: str, size: int, steps: int, vae: str) -> dict:
    """Template 03 at `size` px; `image`: the IMAGE path (Long Video Sampler -> CreateVideo -> SaveVideo)."""
    files = replace(ew.Files(), wan=MODEL_FILES["wan_dit"][1], fantasytalking=MODEL_FILES["ft_ckpt"][1],
                    wav2vec=MODEL_FILES["wav2vec2"][1], vae=vae,
                    text_encoder=MODEL_FILES["clip_l"][1], text_encoder_type="sd3", clip_vision=None,
                    image="bench_portrait.png", audio=audio)
    g = ew.api_graphs(files, ew.Size(width=size, height=size, steps=steps))["03_long_audio"]
    g["save"]["inputs"]["filename_prefix"] = f"bench/{path}"
    g["long"]["inputs"].update(cfg_text=1.0, cfg_audio=1.0)  # one DiT pass per step
    if path == "image":
        inputs = {k: v for k, v in g["long"]["inputs"].items() if k not in ew.FILE_OUTPUT}
        g["long"] = {"class_type": "FantasyTalkingLongVideoSampler", "inputs": inputs}
        g["video"] = {"class_type": "CreateVideo", "inputs": {"images": ["long", 0], "fps": FPS, "audio": ["long", 1]}}
        g["save"]["inputs"]["video"] = ["video", 0]
    return g


class RssTimeline(threading.Thread):
    """A process's resident memory every `interval` s, with how many segments its log has announced
    by then (the samplers' console line "...: segment N/M"), written as TSV: where the peak comes
    from (loading and encoding before segment 1, or the segments)."""

    SEGMENT = re.compile(rb": segment (\d+)/\d+")

    def __init__(self, pid: int, log: Path, out: Path, interval: float = 0.25):
        super().__init__(daemon=True)
        self.pid, self.log, self.out, self.interval = pid, log, out, interval
        self.samples: list[tuple[float, float, int]] = []  # (seconds, RSS MiB, segments announced)
        self._done = threading.Event()

    def run(self) -> None:
        t0, seen, offset = time.monotonic(), 0, 0
        while not self._done.wait(self.interval):
            rss = proc_status_mib(self.pid, "VmRSS")
            try:
                with open(self.log, "rb") as f:
                    f.seek(offset)
                    new = f.read()
            except OSError:
                continue
            cut = new.rfind(b"\n") + 1  # whole lines only
            offset += cut
            seen = max([seen] + [int(m) for m in self.SEGMENT.findall(new[:cut])])
            if rss is not None:
                self.samples.append((time.monotonic() - t0, rss, seen))

    def finish(self) -> dict:
        """Stop, write the TSV, and give the largest RSS before the first segment and the range during them."""
        self._done.set()
        self.join()
        self.out.write_text("seconds\trss_mib\tsegments\n" + "".join(f"{t:.2f}\t{r:.1f}\t{n}\n" for t, r, n in self.samples))
        before = [r for _, r, n in self.samples if n == 0]
        during = [r for _, r, n in self.samples if n > 0]
        return {"before_segments_max_mib": max(before, default=None),
                "segments_min_mib": min(during, default=None), "segments_max_mib": max(during, default=None)}


def run_row(comfyui: Path, path: str, seconds: float, args: argparse.Namespace) -> dict:
    """One prompt in a fresh server: its peak RSS before and after the prompt, its RSS after it (what
    it holds, ComfyUI's cache of the outputs included), the RSS sampled before and during the
    segments (`RssTimeline`, its TSV beside the server's log), the frames saved, the wall time."""
    from fantasytalking_core.video import probe

    python = comfy_python(comfyui)
    with tempfile.TemporaryDirectory(prefix="ft_bench_") as tmp:
        base = make_base(Path(tmp))
        link_models(base, model_files(list(KINDS), Path(args.models_dir), None, python))
        vae = narrow_vae(Path(args.models_dir), args.vae_dim)
        (base / "models" / "vae").mkdir(exist_ok=True)
        (base / "models" / "vae" / vae.name).symlink_to(vae)
        wfs.make_portrait(base / "input" / "bench_portrait.png")
        audio = make_recording(base / "input" / f"bench_speech_{seconds:g}s.wav", seconds).name
        log = Path(args.log_dir) / f"comfyui_{path}_{seconds:g}s.log"
        server = ComfyServer(comfyui, python, base, log)
        try:
            server.start()
            idle = peak_rss_mib(server)
            timeline = RssTimeline(server.proc.pid, log, log.with_suffix(".rss.tsv"))
            timeline.start()
            t0 = time.monotonic()
            outputs = server.run_prompt(graph(path, audio, args.size, args.steps, vae.name), timeout=args.timeout)
            wall = time.monotonic() - t0
            peak, held = peak_rss_mib(server), peak_rss_mib(server, "VmRSS")
            phases = timeline.finish()
        finally:
            server.stop()
        (video,) = wfs.saved_files(wfs.Context(base, {}, {}), outputs, "save")
        info = probe(video)
    return {"path": path, "seconds": seconds, "size": args.size, "steps": args.steps, "host": host_version(comfyui),
            "frames": info["video"]["frames"], "video_s": info["video"]["duration"],
            "audio_track_s": info["audio"]["duration"], "start_peak_mib": idle, "peak_mib": peak, "held_mib": held, "wall_s": wall, **phases}


def image_mib(frames: int, size: int) -> float:
    """What an IMAGE (float32 [frames, size, size, 3]) of these frames weighs."""
    return frames * size * size * 3 * 4 / 2**20


def print_table(rows: list[dict]) -> None:
    print("| path | host | audio s | frames | video s | audio track s | server peak MiB | growth MiB | IMAGE of the "
          "extra frames MiB | growth / IMAGE | held after MiB | prompt wall s |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for path in PATHS:
        mine = sorted((r for r in rows if r["path"] == path), key=lambda r: r["seconds"])
        for r in mine:
            first = mine[0]
            grow = r["peak_mib"] - first["peak_mib"]
            extra = image_mib(r["frames"] - first["frames"], r["size"])
            ratio = f"{100 * grow / extra:+.1f}%" if r is not first else ""
            label = "to file (VIDEO)" if path == "file" else "IMAGE + CreateVideo"
            held = f"{r['held_mib']:.0f}" if r.get("held_mib") else "?"
            print(f"| {label} | {r['host']} | {r['seconds']:g} | {r['frames']} | {r['video_s']:.3f} | "
                  f"{r['audio_track_s']:.3f} | {r['peak_mib']:.0f} | {'' if r is first else f'{grow:+.0f}'} | "
                  f"{'' if r is first else f'{extra:.0f}'} | {ratio} | {held} | {r['wall_s']:.0f} |")
    if any(r.get("segments_max_mib") for r in rows):
        print("\nRSS sampled every 0.25 s during the prompt (MiB): before the first segment (loading the models, "
              "encoding the audio), and while the segments run\n")
        print("| path | audio s | before the segments, max | during the segments, min | during the segments, max |")
        print("| --- | --- | --- | --- | --- |")
        for r in sorted(rows, key=lambda r: (PATHS.index(r["path"]), r["seconds"])):
            if r.get("segments_max_mib"):
                print(f"| {r['path']} | {r['seconds']:g} | {r['before_segments_max_mib'] or 0:.0f} | "
                      f"{r['segments_min_mib']:.0f} | {r['segments_max_mib']:.0f} |")
    verdicts = []
    for path, test, want in (("file", lambda g, e: g < 0.1 * e, "< 10%"), ("image", lambda g, e: g >= 0.5 * e, ">= 50%")):
        mine = sorted((r for r in rows if r["path"] == path), key=lambda r: r["seconds"])
        if len(mine) >= 2:
            g = mine[-1]["peak_mib"] - mine[0]["peak_mib"]
            e = image_mib(mine[-1]["frames"] - mine[0]["frames"], mine[-1]["size"])
            verdicts.append(f"{path}: {g:+.0f} MiB of {e:.0f} MiB ({100 * g / e:+.1f}%, target {want}): "
                            f"{'PASS' if test(g, e) else 'FAIL'}")
    print("\n" + "\n".join(verdicts))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--comfyui", type=Path, help="the ComfyUI to run (its .venv's python)")
    p.add_argument("--seconds", type=float, nargs="+", default=[60.0, 600.0], help="recording lengths (first = base)")
    p.add_argument("--paths", nargs="+", choices=PATHS, default=list(PATHS))
    p.add_argument("--size", type=int, default=64, help="video width and height (multiple of 16)")
    p.add_argument("--steps", type=int, default=1, help="sampling steps per segment")
    p.add_argument("--vae-dim", type=int, default=8, help="the Wan VAE's width (96 is the real one's)")
    p.add_argument("--models-dir", default=str(Path(tempfile.gettempdir()) / "ft_bench_models"),
                   help="where the tiny model files are made once")
    p.add_argument("--results", default="comfy_long_video_memory.jsonl", help="JSON lines, one per finished row")
    p.add_argument("--log-dir", default=tempfile.gettempdir(), help="the servers' logs")
    p.add_argument("--timeout", type=float, default=4 * 3600, help="seconds one prompt may take")
    p.add_argument("--table-only", action="store_true", help="print the table of the rows in --results")
    p.add_argument("--by-path", action="store_true", help="every length of the first path, then the next path")
    args = p.parse_args(argv)
    results = Path(args.results)
    rows = [json.loads(line) for line in results.read_text().splitlines() if line.strip()] if results.exists() else []
    if not args.table_only:
        if args.comfyui is None:
            p.error("--comfyui is required (or --table-only)")
        order = [(x, t) for x in args.paths for t in args.seconds] if args.by_path else \
            [(x, t) for t in args.seconds for x in args.paths]
        for path, seconds in order:
            if any(r["path"] == path and r["seconds"] == seconds and r["size"] == args.size for r in rows):
                continue
            row = run_row(args.comfyui, path, seconds, args)
            rows.append(row)
            with results.open("a") as f:
                f.write(json.dumps(row) + "\n")
            print(f"{path} {seconds:g} s: {row['frames']} frames, peak {row['peak_mib']:.0f} MiB, "
                  f"{row['wall_s']:.0f} s", flush=True)
    print(f"\nComfyUI {rows[0]['host'] if rows else '?'} --cpu, tiny random-weight files, {args.size} px, "
          f"{args.steps} step(s), cfg 1/1, VAE width {args.vae_dim}, segments of 81 frames, 1 motion frame; server "
          "peak RSS (VmHWM) after the prompt\n")
    print_table([r for r in rows if r["size"] == args.size])
    return 0


if __name__ == "__main__":
    sys.exit(main())
