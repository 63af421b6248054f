"""A real ComfyUI for the scripts: its interpreter, a temporary base directory, a server on it.

The one home of what scripts/comfyui_smoke.py, scripts/example_workflows.py ``--record-core``,
scripts/frontend_check.py and scripts/gpu_check.py ``--comfyui`` share: ``make_base`` lays out a
base directory (``--base-directory``: models/, input/, output/, temp/, user/, custom_nodes/ with a
link to this pack), ``serve`` starts ``main.py --cpu`` on it on a free local port and stops it,
and ``run_from`` / ``continue_from`` run one of this repo's modules from another tree's folder
(a ComfyUI, the official FantasyTalking code) so that its modules come first, as for its own entry
point, and this repo's after them: no sys.path edits (scripts/__init__.py). A leaf: it imports
nothing of this repo.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

PACK_ROOT = Path(__file__).resolve().parents[1]
PACK_DIR_NAME = "ComfyUI-FantasyTalking"
BASE_DIRS = ("input", "output", "temp", "user", "custom_nodes", "models")


class SmokeFailure(Exception):
    """A check against a real ComfyUI failed, or the host did; the message says what and where."""


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def comfy_python(comfyui: Path, explicit: str | None = None) -> str:
    """ComfyUI's interpreter: ``explicit`` (--python), $COMFYUI_PYTHON, $COMFYUI/.venv/bin/python, else ours."""
    for cand in (explicit, os.environ.get("COMFYUI_PYTHON")):
        if cand:
            return cand
    venv = comfyui / ".venv" / ("Scripts/python.exe" if os.name == "nt" else "bin/python")
    return str(venv) if venv.exists() else sys.executable


def host_version(comfyui: Path) -> str:
    """The version a ComfyUI checkout declares (comfyui_version.py), without starting it."""
    m = re.search(r'__version__\s*=\s*"([^"]+)"', (comfyui / "comfyui_version.py").read_text()) \
        if (comfyui / "comfyui_version.py").is_file() else None
    return m.group(1) if m else "unknown"


def run_from(folder: Path, python: str, module: str, *args: str) -> dict:
    """``subprocess`` keywords that run ``python -m <module> args`` of this repo from ``folder``, so
    that folder's own modules come first, as they do for its entry point (a ComfyUI's main.py:
    core's ``nodes``, ``comfy``, ``folder_paths``; the official FantasyTalking's infer.py), and this
    repo after them on PYTHONPATH (``scripts``, ``fantasytalking_core``)."""
    path = os.pathsep.join(p for p in (str(PACK_ROOT), os.environ.get("PYTHONPATH")) if p)
    return {"args": [python, "-m", module, *args], "cwd": str(folder),
            "env": {**os.environ, "PYTHONPATH": path, "PYTHONDONTWRITEBYTECODE": "1"}}


def continue_from(folder: Path, marker: str, module: str, argv: list[str], path_flags: tuple[str, ...] = ()) -> None:
    """Replace this process by :func:`run_from` ``folder`` (the same interpreter and arguments)
    unless ``marker``, a top-level module of that folder, already comes from it. The values of
    ``path_flags`` in ``argv`` are made absolute first: the working directory changes."""
    spec = importlib.util.find_spec(marker)
    if spec is not None and spec.origin and Path(spec.origin).resolve().parent == folder.resolve():
        return
    fixed, path_next = [], False
    for a in argv:
        key, eq, value = a.partition("=")
        if path_next:
            a = str(Path(a).expanduser().resolve())
        elif eq and key in path_flags:
            a = f"{key}={Path(value).expanduser().resolve()}"
        path_next = a in path_flags
        fixed.append(a)
    run = run_from(folder, sys.executable, module, *fixed)
    sys.stdout.flush()
    os.chdir(run["cwd"])
    os.execve(sys.executable, run["args"], run["env"])


def make_base(base: Path, pack: Path | None = PACK_ROOT) -> Path:
    """A ComfyUI base directory: the folders main.py's ``--base-directory`` uses, ``pack`` linked
    into custom_nodes/ (None: none, core's nodes only). Existing contents are kept."""
    for sub in BASE_DIRS:
        (base / sub).mkdir(parents=True, exist_ok=True)
    link = base / "custom_nodes" / PACK_DIR_NAME
    if pack is not None and not link.exists():
        link.symlink_to(Path(pack).resolve(), target_is_directory=True)
    return base


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

    def version(self) -> str:
        """The running host's version, as it reports it."""
        return self.get("/system_stats")["system"]["comfyui_version"]

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
                    raise SmokeFailure("execution failed: " + execution_error(status))
                return entry.get("outputs", {})
            time.sleep(0.3)
        self.post("/interrupt", {})
        raise SmokeFailure(f"prompt {prompt_id} did not finish within {timeout:.0f} s")


def execution_error(status: dict) -> str:
    """The failing node, its exception and the end of its traceback, from a /history status."""
    for kind, msg in status.get("messages", []):
        if kind == "execution_error":
            tb = "".join(msg.get("traceback", [])[-6:])
            return f"node {msg.get('node_id')} ({msg.get('node_type')}): {msg.get('exception_type')}: " \
                   f"{msg.get('exception_message')}\n{tb}"
    return json.dumps(status)[:2000]


@contextmanager
def serve(comfyui: Path, base: Path, python: str | None = None, timeout: float = 300.0) -> Iterator[ComfyServer]:
    """A started server on ``base`` (see :func:`make_base`), its log in ``base``; stopped on exit."""
    server = ComfyServer(comfyui, comfy_python(comfyui, python), base, base / "comfyui.log")
    try:
        server.start(timeout)
        yield server
    finally:
        server.stop()
