#!/usr/bin/env python3
"""Run this node pack inside real ComfyUIs, headless on CPU, on tiny random-weight model files.

    python -m scripts.comfyui_smoke --comfyui /path/A --comfyui /path/B [--gguf /path/ComfyUI-GGUF]
    python -m scripts.comfyui_smoke --list                               # the workflows it knows
    python -m scripts.comfyui_smoke --comfyui A --only core_wan_i2v --models-dir /tmp/smoke-models --keep /tmp/smoke

For every host (``--comfyui``, repeatable; else $COMFYUI_PATH, several joined with ``:``) it lays
out a temporary ComfyUI base directory (models/ linking the tiny files, input/, output/,
custom_nodes/ with a link to this pack and, with ``--gguf``, a copy of city96's ComfyUI-GGUF),
starts ``main.py --cpu`` on a free local port with that host's own interpreter
(``$HOST/.venv/bin/python``; ``--python`` when one host is given), checks that every node of the
pack's NODE_CLASS_MAPPINGS is served by /object_info, and runs the workflows of
scripts/comfy_smoke_workflows.py. Then it prints one table, a column per host and its version,
and the details, and exits 1 on any failure (with the tail of that server's log). A workflow an
older host cannot run passes only when the pack refuses it with the message that names the
version needed. Nothing is downloaded; the host trees are not written to. The base directory,
the server and the host's interpreter are scripts/comfy_host.py's.

Run it from the repository root as a module (``python -m scripts.comfyui_smoke``: scripts/ is a
package, see scripts/__init__.py); ``python scripts/comfyui_smoke.py`` runs itself that way.
"""

from __future__ import annotations

if __name__ == "__main__" and not __package__:  # run by path: run again as `python -m <folder>.<name>` (scripts/__init__.py)
    import os, sys  # noqa: E401
    here, name = os.path.split(os.path.splitext(os.path.abspath(__file__))[0])
    os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [os.path.dirname(here), os.environ.get("PYTHONPATH")]))
    os.execv(sys.executable, [sys.executable, "-m", f"{os.path.basename(here)}.{name}", *sys.argv[1:]])

import argparse
import functools
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import traceback
from dataclasses import dataclass
from pathlib import Path

from scripts import comfy_smoke_sequences as seqs
from scripts import comfy_smoke_workflows as wfs
from scripts.comfy_host import (PACK_DIR_NAME, PACK_ROOT, ComfyServer, SmokeFailure, comfy_python, host_version,
                                run_from, make_base)
from scripts.comfy_smoke_workflows import SPEECH_WAV, Context, expected_refusal
from scripts.comfy_tiny_models import MODEL_FILES, ensure_model, gguf_names

WORKFLOWS = wfs.WORKFLOWS + seqs.WORKFLOWS

GGUF_DIR_NAME = "ComfyUI-GGUF"


def pack_node_names(python: str, comfyui: Path, pack: Path) -> list[str]:
    """The pack's NODE_CLASS_MAPPINGS keys, imported the way ComfyUI imports it, in its interpreter
    (scripts/comfy_host_checks.py --nodes)."""
    r = subprocess.run(**run_from(comfyui, python, "scripts.comfy_host_checks", "--nodes", "--pack", str(pack)),
                       capture_output=True, text=True, timeout=300)
    for line in r.stdout.splitlines():
        if line.startswith("NODES="):
            return json.loads(line[6:])
    raise SmokeFailure(f"importing the pack failed (code {r.returncode}):\n{r.stderr[-3000:]}")


def check_pack_nodes(server: ComfyServer, python: str, comfyui: Path, pack: Path, object_info: dict) -> str:
    names = pack_node_names(python, comfyui, pack)
    served = {k for k, v in object_info.items() if str(v.get("python_module", "")).endswith(PACK_DIR_NAME)}
    missing = sorted(set(names) - set(object_info))
    if missing:
        raise SmokeFailure(f"{len(missing)} of {len(names)} pack nodes are not in /object_info: {missing}")
    extra = sorted(served - set(names))
    if extra:
        raise SmokeFailure(f"ComfyUI serves pack nodes that NODE_CLASS_MAPPINGS lacks: {extra}")
    log = server.log_path.read_text(errors="replace")
    if "IMPORT FAILED" in log and PACK_DIR_NAME in log.split("IMPORT FAILED", 1)[1].splitlines()[0]:
        raise SmokeFailure("ComfyUI reports IMPORT FAILED for the pack")
    return f"{len(names)} nodes registered"


def proc_status_mib(pid: int, field: str = "VmHWM") -> float | None:
    """A memory line of a process's /proc status (Linux: VmHWM its peak resident memory, VmRSS the
    present one) in MiB; None where unknown."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return None
    m = re.search(rf"^{field}:\s+(\d+) kB", status, re.M)
    return int(m.group(1)) / 1024 if m else None


def peak_rss_mib(server: "ComfyServer", field: str = "VmHWM") -> float | None:
    """The server process's peak resident memory in MiB (`field`: another line, `proc_status_mib`)."""
    proc = getattr(server, "proc", None)
    return None if proc is None else proc_status_mib(proc.pid, field)


# ------------------------------------------------------------------------------------ one host
@dataclass
class Row:
    check: str
    ok: bool | None  # None: skipped
    seconds: float
    detail: str


def model_files(kinds: list[str], models_dir: Path, gguf: Path | None, python: str) -> dict[str, Path]:
    """The tiny files (cached in ``models_dir``), and the GGUF versions of the DiT with ``gguf``."""
    paths = {k: ensure_model(k, models_dir) for k in kinds}
    if gguf is not None:
        dit = ensure_model("wan_dit", models_dir)
        out = dit.parent
        made = [out / n for n in gguf_names(dit.name).values()]
        if not all(p.is_file() and p.stat().st_mtime >= dit.stat().st_mtime for p in made):
            subprocess.run([python, "-m", "scripts.comfy_tiny_models", "gguf", "--src", str(dit), "--tools",
                            str(gguf / "tools"), "--out", str(out)], cwd=PACK_ROOT, check=True, capture_output=True,
                           text=True, env={**os.environ, "PYTHONDONTWRITEBYTECODE": "1"})
        paths.update({f"gguf_{p.stem.rsplit('-', 1)[1]}": p for p in made})
    return paths


def link_models(base: Path, paths: dict[str, Path]) -> None:
    """models/<folder>/<name> links to the cached files, plus the fresh-run names prompt_order needs."""
    for kind, src in paths.items():
        folder, name = (MODEL_FILES[kind][0], MODEL_FILES[kind][1]) if kind in MODEL_FILES else ("diffusion_models", src.name)
        names = [name] + ([seqs.suffixed(name, suffix) for suffix in seqs.fresh_suffixes()]
                          if kind == "wan_dit" or kind.startswith("gguf_") else [])
        for n in names:
            dst = base / "models" / folder / n
            dst.parent.mkdir(parents=True, exist_ok=True)
            if not dst.exists():
                dst.symlink_to(src.resolve())


def run_host(comfyui: Path, python: str, selected: list, args, work: Path) -> tuple[list[Row], ComfyServer | None]:
    base = work / "base"
    models_dir = Path(args.models_dir) if args.models_dir else work / "cache"
    rows: list[Row] = []
    server = None
    try:
        t0 = time.monotonic()
        make_base(base, Path(args.pack))
        gguf = Path(args.gguf).resolve() if args.gguf else None
        if gguf is not None and not (base / "custom_nodes" / GGUF_DIR_NAME).exists():
            shutil.copytree(gguf, base / "custom_nodes" / GGUF_DIR_NAME, ignore=shutil.ignore_patterns(".git", "__pycache__"))
        kinds = sorted({k for w in selected for k in w.needs})
        paths = model_files(kinds, models_dir, gguf if any(w.gguf for w in selected) else None, python)
        link_models(base, paths)
        wfs.make_portrait(base / "input" / "smoke_portrait.png")
        wfs.make_two_people(base / "input" / "smoke_two_people.png")
        shutil.copy(SPEECH_WAV, base / "input" / SPEECH_WAV.name)
        wfs.make_talking_video(base / "input" / "smoke_talking.mp4", base / "input" / "smoke_portrait.png")
        for name, repeats in wfs.LONG_INPUTS.values():
            wfs.make_long_speech(base / "input" / name, repeats)
        wfs.make_dub_video(base / "input" / wfs.DUB_VIDEO["name"], base / "input" / "smoke_portrait.png")
        wfs.make_two_people_video(base / "input" / wfs.DUB_TWO["name"], base / "input" / "smoke_two_people.png")
        rows.append(Row("model files", True, time.monotonic() - t0,
                        ", ".join(f"{k} {p.stat().st_size / 2**20:.0f} MiB" for k, p in paths.items())))

        server = ComfyServer(comfyui, python, base, work / "comfyui.log")
        server.start(timeout=args.startup_timeout)
        rows.append(Row("server start", True, server.startup_s, f"{python} main.py --cpu"))
        t0 = time.monotonic()
        ctx = Context(base=base, models={k: MODEL_FILES[k][1] for k in kinds if k in MODEL_FILES},
                      inputs={"image": "smoke_portrait.png", "audio": SPEECH_WAV.name, "video": "smoke_talking.mp4",
                              "two_people": "smoke_two_people.png",
                              "dub_video": wfs.DUB_VIDEO["name"],
                              **{k: name for k, (name, _) in wfs.LONG_INPUTS.items()}},
                      object_info=server.get("/object_info", timeout=120), python=python,
                      prompt=functools.partial(server.run_prompt, timeout=getattr(args, "prompt_timeout", 900.0)),
                      comfyui=comfyui, pack=Path(args.pack).resolve(), gguf=gguf is not None,
                      peak_rss_mib=lambda: peak_rss_mib(server))
        try:
            rows.append(Row("pack nodes in /object_info", True, time.monotonic() - t0,
                            check_pack_nodes(server, python, comfyui, Path(args.pack), ctx.object_info)))
        except SmokeFailure as e:
            rows.append(Row("pack nodes in /object_info", False, time.monotonic() - t0, str(e)))
        for wf in selected:
            rows.append(run_workflow(wf, ctx))
    except SmokeFailure as e:
        rows.append(Row("setup", False, 0.0, str(e)))
    except Exception as e:  # a bug or a broken environment: still stop the server and report
        rows.append(Row("setup", False, 0.0, "".join(traceback.format_exception(e)[-4:]).rstrip()))
    finally:
        if server is not None:
            server.stop()
    return rows, server


def run_workflow(wf, ctx: Context) -> Row:
    if wf.gguf and not ctx.gguf:
        return Row(wf.name, None, 0.0, "skipped: needs --gguf PATH (a checkout of city96/ComfyUI-GGUF)")
    expected = wf.expect(ctx)
    t0 = time.monotonic()
    try:
        detail = wf.run(ctx) if wf.run else wf.check(ctx, ctx.prompt(wf.build(ctx)))
        if expected:
            return Row(wf.name, False, time.monotonic() - t0, f"ran, but this host was expected to refuse it: {detail}")
        return Row(wf.name, True, time.monotonic() - t0, detail)
    except SmokeFailure as e:
        if expected_refusal(expected, str(e)):
            message = re.sub(r"^execution failed: node \S+ \(\w+\): ", "", str(e).splitlines()[0])
            return Row(wf.name, True, time.monotonic() - t0, "refused as expected: " + message)
        return Row(wf.name, False, time.monotonic() - t0, str(e))


# ------------------------------------------------------------------------------------ report
def _cell(row: Row | None) -> str:
    if row is None:
        return "-"
    return f"{'SKIP' if row.ok is None else 'PASS' if row.ok else 'FAIL'} {row.seconds:.1f} s"


def print_table(results: dict[str, list[Row]]) -> None:
    hosts = list(results)
    checks = list(dict.fromkeys(r.check for rows in results.values() for r in rows))
    by = {h: {r.check: r for r in rows} for h, rows in results.items()}
    print("\n| check | " + " | ".join(hosts) + " |")
    print("| --- | " + " | ".join("---" for _ in hosts) + " |")
    for c in checks:
        print(f"| {c} | " + " | ".join(_cell(by[h].get(c)) for h in hosts) + " |")
    print("\ndetails:")
    for c in checks:
        for h in hosts:
            r = by[h].get(c)
            if r is not None and r.detail:
                first, *rest = r.detail.splitlines()
                print(f"  {c} [{h}]: {first}")
                for line in rest:
                    print(f"      {line}")
    failed = sum(r.ok is False for rows in results.values() for r in rows)
    passed = sum(r.ok is True for rows in results.values() for r in rows)
    skipped = sum(r.ok is None for rows in results.values() for r in rows)
    print(f"\n{passed} passed, {failed} failed, {skipped} skipped")


def run(args) -> int:
    hosts = [Path(h).expanduser().resolve() for h in args.comfyui]
    for h in hosts:
        if not (h / "main.py").is_file():
            print(f"error: --comfyui / COMFYUI_PATH {h} has no main.py; point it at a ComfyUI checkout", file=sys.stderr)
            return 2
    if args.python and len(hosts) > 1:
        print("error: --python names one interpreter; with several hosts each uses its own .venv", file=sys.stderr)
        return 2
    unknown = set(args.only or ()) - {w.name for w in WORKFLOWS}
    if unknown:
        print(f"error: unknown workflow(s) {sorted(unknown)}; known: {[w.name for w in WORKFLOWS]}", file=sys.stderr)
        return 2
    selected = [w for w in WORKFLOWS if (w.name in args.only if args.only else (w.default or args.all))]
    root = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="ft_comfy_smoke_"))
    results, servers = {}, {}
    for n, comfyui in enumerate(hosts):
        column = f"ComfyUI {host_version(comfyui)}"
        column = column if column not in results else f"{column} ({comfyui.name})"
        rows, servers[column] = run_host(comfyui, comfy_python(comfyui, args.python), selected, args, root / f"host{n}")
        results[column] = rows
    print_table(results)
    failed = False
    for column, rows in results.items():
        if any(r.ok is False for r in rows):
            failed = True
            server = servers[column]
            if server is not None:
                print(f"\n---- last lines of the {column} log ({server.log_path if args.keep else 'removed; --keep DIR keeps it'}) ----")
                print(server.log_tail())
    if args.keep:
        print(f"\nkept: {root}")
    else:
        shutil.rmtree(root, ignore_errors=True)
    return 1 if failed else 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--comfyui", action="append", help="a ComfyUI checkout; repeat for a host matrix (default "
                                                       "$COMFYUI_PATH, several joined with ':')")
    ap.add_argument("--python", help="the interpreter of the one --comfyui (default $COMFYUI_PYTHON, else its .venv)")
    ap.add_argument("--gguf", help="a checkout of city96/ComfyUI-GGUF: installs it in each run and adds the GGUF rows")
    ap.add_argument("--pack", default=str(PACK_ROOT), help="the pack folder linked into custom_nodes (default: this repo)")
    ap.add_argument("--only", nargs="+", metavar="NAME", help="run only these workflows")
    ap.add_argument("--all", action="store_true", help="also run the heavy workflows (default=False ones)")
    ap.add_argument("--models-dir", help="keep the tiny model files here between runs (default: a temp dir)")
    ap.add_argument("--keep", help="use this work dir and keep it (server logs, outputs) instead of a temp dir")
    ap.add_argument("--startup-timeout", type=float, default=300.0)
    ap.add_argument("--prompt-timeout", type=float, default=900.0, help="seconds one prompt may take (a loaded machine)")
    ap.add_argument("--list", action="store_true", help="list the workflows and exit")
    args = ap.parse_args(argv)
    if args.list:
        for w in WORKFLOWS:
            extra = "" if w.default else " (with --all)"
            extra += " (with --gguf)" if w.gguf else ""
            print(f"{w.name}{extra}: needs {', '.join(w.needs) or 'no model files'}")
        return 0
    if not args.comfyui:
        env = os.environ.get("COMFYUI_PATH")
        args.comfyui = [p for p in env.split(os.pathsep) if p] if env else None
    if not args.comfyui:
        ap.error("give --comfyui (repeatable) or set COMFYUI_PATH to a ComfyUI checkout")
    return run(args)


if __name__ == "__main__":
    sys.exit(main())
