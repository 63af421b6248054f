#!/usr/bin/env python3
"""Run this node pack inside real ComfyUIs, headless on CPU, on tiny random-weight model files.

    python scripts/comfyui_smoke.py --comfyui /path/A --comfyui /path/B [--gguf /path/ComfyUI-GGUF]
    python scripts/comfyui_smoke.py --list                               # the workflows it knows
    python scripts/comfyui_smoke.py --comfyui A --only core_wan_i2v --models-dir /tmp/smoke-models --keep /tmp/smoke

For every host (``--comfyui``, repeatable; else $COMFYUI_PATH, several joined with ``:``) it lays
out a temporary ComfyUI base directory (models/ linking the tiny files, input/, output/,
custom_nodes/ with a link to this pack and, with ``--gguf``, a copy of city96's ComfyUI-GGUF),
starts ``main.py --cpu`` on a free local port with that host's own interpreter
(``$HOST/.venv/bin/python``; ``--python`` when one host is given), checks that every node of the
pack's NODE_CLASS_MAPPINGS is served by /object_info, and runs the workflows of
scripts/comfy_smoke_workflows.py. Then it prints one table, a column per host and its version,
and the details, and exits 1 on any failure (with the tail of that server's log). A workflow an
older host cannot run passes only when the pack refuses it with the message that names the
version needed. Nothing is downloaded; the host trees are not written to.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import traceback
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))  # the sibling modules, however this file is loaded
import comfy_smoke_sequences as seqs  # noqa: E402
import comfy_smoke_workflows as wfs  # noqa: E402
from comfy_smoke_workflows import PACK_ROOT, SPEECH_WAV, Context, SmokeFailure, expected_refusal  # noqa: E402
from comfy_tiny_models import MODEL_FILES, ensure_model, gguf_names  # noqa: E402

WORKFLOWS = wfs.WORKFLOWS + seqs.WORKFLOWS

PACK_DIR_NAME = "ComfyUI-FantasyTalking"
GGUF_DIR_NAME = "ComfyUI-GGUF"


# ------------------------------------------------------------------------------------- server
def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def comfy_python(comfyui: Path, explicit: str | None = None) -> str:
    """ComfyUI's interpreter: --python, $COMFYUI_PYTHON, $COMFYUI/.venv/bin/python, else ours."""
    for cand in (explicit, os.environ.get("COMFYUI_PYTHON")):
        if cand:
            return cand
    venv = comfyui / ".venv" / "bin" / "python"
    return str(venv) if venv.exists() else sys.executable


def host_version(comfyui: Path) -> str:
    m = re.search(r'__version__\s*=\s*"([^"]+)"', (comfyui / "comfyui_version.py").read_text()) \
        if (comfyui / "comfyui_version.py").is_file() else None
    return m.group(1) if m else "unknown"


class ComfyServer:
    """``main.py --cpu`` on a free 127.0.0.1 port with every directory under ``base``."""

    def __init__(self, comfyui: Path, python: str, base: Path, log_path: Path):
        self.comfyui, self.python, self.base, self.log_path = comfyui, python, base, log_path
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.cmd = [python, "main.py", "--cpu", "--listen", "127.0.0.1", "--port", str(self.port),
                    "--base-directory", str(base), "--database-url", "sqlite:///:memory:",
                    "--disable-auto-launch", "--preview-method", "none"]
        self.proc: subprocess.Popen | None = None
        self.startup_s = float("nan")

    def start(self, timeout: float = 300.0) -> None:
        t0 = time.monotonic()
        self._log = open(self.log_path, "wb")
        self.proc = subprocess.Popen(self.cmd, cwd=self.comfyui, stdout=self._log, stderr=subprocess.STDOUT,
                                     env={**os.environ, "PYTHONUNBUFFERED": "1", "PYTHONDONTWRITEBYTECODE": "1"})
        while time.monotonic() - t0 < timeout:
            if self.proc.poll() is not None:
                raise SmokeFailure(f"ComfyUI exited with code {self.proc.returncode} while starting")
            try:
                with urllib.request.urlopen(self.url + "/system_stats", timeout=2):
                    self.startup_s = time.monotonic() - t0
                    return
            except (urllib.error.URLError, ConnectionError, TimeoutError, OSError):
                time.sleep(0.5)
        raise SmokeFailure(f"ComfyUI did not answer on {self.url} within {timeout:.0f} s")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        if getattr(self, "_log", None):
            self._log.close()

    def log_tail(self, lines: int = 60) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no server log)"

    def get(self, route: str, timeout: float = 30.0):
        with urllib.request.urlopen(self.url + route, timeout=timeout) as r:
            return json.loads(r.read())

    def post(self, route: str, payload: dict, timeout: float = 60.0):
        req = urllib.request.Request(self.url + route, data=json.dumps(payload).encode(),
                                     headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(req, timeout=timeout) as r:
                return json.loads(r.read())
        except urllib.error.HTTPError as e:  # 400: validation errors, in the body
            raise SmokeFailure(f"POST {route} -> HTTP {e.code}: {e.read().decode(errors='replace')[:3000]}") from None

    def run_prompt(self, graph: dict, timeout: float = 900.0) -> dict:
        """Queue an API-format graph and wait for it: the /history entry's ``outputs``."""
        prompt_id = self.post("/prompt", {"prompt": graph, "client_id": "fantasytalking-smoke"})["prompt_id"]
        t0 = time.monotonic()
        while time.monotonic() - t0 < timeout:
            if self.proc.poll() is not None:
                raise SmokeFailure(f"ComfyUI died (code {self.proc.returncode}) while running the prompt")
            entry = self.get(f"/history/{prompt_id}").get(prompt_id)
            if entry and entry.get("status", {}).get("completed") is not None:
                status = entry["status"]
                if status.get("status_str") != "success":
                    raise SmokeFailure("execution failed: " + _execution_error(status))
                return entry.get("outputs", {})
            time.sleep(0.3)
        self.post("/interrupt", {})
        raise SmokeFailure(f"prompt {prompt_id} did not finish within {timeout:.0f} s")


def _execution_error(status: dict) -> str:
    for kind, msg in status.get("messages", []):
        if kind == "execution_error":
            tb = "".join(msg.get("traceback", [])[-6:])
            return f"node {msg.get('node_id')} ({msg.get('node_type')}): {msg.get('exception_type')}: " \
                   f"{msg.get('exception_message')}\n{tb}"
    return json.dumps(status)[:2000]


def pack_node_names(python: str, comfyui: Path, pack: Path) -> list[str]:
    """The pack's NODE_CLASS_MAPPINGS keys, imported the way ComfyUI imports it (its interpreter,
    its modules first on sys.path, the pack as a package)."""
    code = (
        "import importlib.util, json, sys\n"
        f"sys.path.insert(0, {str(comfyui)!r})\n"
        "sys.argv = ['main.py', '--cpu']  # comfy.model_management needs --cpu on a machine without GPU\n"
        "import comfy.options; comfy.options.enable_args_parsing()\n"
        f"spec = importlib.util.spec_from_file_location('smoke_pack', {str(pack / '__init__.py')!r},"
        f" submodule_search_locations=[{str(pack)!r}])\n"
        "mod = importlib.util.module_from_spec(spec); sys.modules['smoke_pack'] = mod\n"
        "spec.loader.exec_module(mod)\n"
        "print('NODES=' + json.dumps(sorted(mod.NODE_CLASS_MAPPINGS)))\n"
    )
    r = subprocess.run([python, "-c", code], cwd=comfyui, capture_output=True, text=True, timeout=300,
                       env={**os.environ, "PYTHONDONTWRITEBYTECODE": "1"})
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


def peak_rss_mib(server: "ComfyServer") -> float | None:
    """The server process's peak resident memory (VmHWM, Linux), in MiB; None where unknown."""
    try:
        status = Path(f"/proc/{server.proc.pid}/status").read_text()
    except (OSError, AttributeError):
        return None
    m = re.search(r"^VmHWM:\s+(\d+) kB", status, re.M)
    return int(m.group(1)) / 1024 if m else None


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
            subprocess.run([python, str(Path(__file__).with_name("comfy_tiny_models.py")), "gguf", "--src", str(dit),
                            "--tools", str(gguf / "tools"), "--out", str(out)], check=True, capture_output=True,
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
        for sub in ("input", "output", "temp", "user", "custom_nodes", "models"):
            (base / sub).mkdir(parents=True, exist_ok=True)
        link = base / "custom_nodes" / PACK_DIR_NAME
        if not link.exists():
            link.symlink_to(Path(args.pack).resolve(), target_is_directory=True)
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
                      object_info=server.get("/object_info", timeout=120), prompt=server.run_prompt, python=python,
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
