#!/usr/bin/env python3
"""The example workflows as a user meets them: ComfyUI's own frontend in headless Chromium.

    /path/to/ComfyUI/.venv/bin/python -m scripts.frontend_check --comfyui /path/to/ComfyUI --out /tmp/fe

Starts that ComfyUI (``--cpu``, a temporary base directory holding this pack, a portrait, a speech
file and a short video in input/, no model files), opens its frontend in headless Chromium over the
DevTools protocol (``--chromium``, default ``chromium``; apt-get install chromium) and, for each
template, loads it the way the Templates browser does (``/api/workflow_templates/<pack>/<name>.json``
then ``app.loadGraphData``) and checks:
- no missing node: every node type is registered in the frontend;
- no shifted widget: each widget holds the graph's value for its name (the host's own /object_info
  says which widgets exist);
- model links: every model file the graph names shows in the frontend's missing-models list with
  its folder (and, where ``properties.models`` gives one, its download link);
- room for previews: after the input previews load and a saved video / preview images are shown
  (an ``executed`` message like the server's, pointing at files in input/), no two nodes overlap.
It writes screenshots (canvas, the missing-models panel, the Templates browser) to ``--out``,
prints a table and exits 1 on any failure. Nothing here runs in CI: it needs Chromium and a ComfyUI.
Run it from the repository root with ComfyUI's python (it has aiohttp); the base directory and the
server are scripts/comfy_host.py's, the still video fantasytalking_core.video's writer.
"""

from __future__ import annotations

if __name__ == "__main__" and not __package__:  # run by path: run again as `python -m <folder>.<name>` (scripts/__init__.py)
    import os, sys  # noqa: E401
    here, name = os.path.split(os.path.splitext(os.path.abspath(__file__))[0])
    os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [os.path.dirname(here), os.environ.get("PYTHONPATH")]))
    os.execv(sys.executable, [sys.executable, "-m", f"{os.path.basename(here)}.{name}", *sys.argv[1:]])

import argparse
import asyncio
import base64
import json
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import numpy as np
from PIL import Image

from fantasytalking_core.video import write_video
from scripts import example_workflows as ew
from scripts import workflow_ui as ui
from scripts.comfy_host import PACK_DIR_NAME, ComfyServer, free_port, make_base, serve

ROOT = ui.ROOT
FILES = ew.Files()  # the templates' own file names: inputs are put under these names


class Browser:
    """Headless Chromium driven over the DevTools protocol (aiohttp websocket, one page)."""

    def __init__(self, chromium: str, width: int = 1800, height: int = 1050):
        self.port, self.profile, self.n, self.errors = free_port(), tempfile.mkdtemp(prefix="ft_chromium_"), 0, []
        self.startup_errors: set[str] = set()
        self.proc = subprocess.Popen(
            [chromium, "--headless=new", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", "--mute-audio",
             f"--remote-debugging-port={self.port}", f"--window-size={width},{height}",
             f"--user-data-dir={self.profile}", "about:blank"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    async def __aenter__(self):
        import aiohttp

        for _ in range(150):
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/json/list", timeout=2) as r:
                    pages = [p for p in json.loads(r.read()) if p["type"] == "page"]
                if pages:
                    break
            except OSError:
                pass
            await asyncio.sleep(0.2)
        else:
            raise RuntimeError("Chromium did not open its DevTools port")
        self.session = aiohttp.ClientSession()
        self.ws = await self.session.ws_connect(pages[0]["webSocketDebuggerUrl"], max_msg_size=0)
        await self.call("Runtime.enable")
        return self

    async def __aexit__(self, *exc):
        await self.ws.close()
        await self.session.close()
        self.proc.terminate()
        self.proc.wait(20)
        shutil.rmtree(self.profile, ignore_errors=True)

    async def call(self, method: str, **params):
        self.n += 1
        await self.ws.send_json({"id": self.n, "method": method, "params": params})
        while True:
            msg = await self.ws.receive_json()
            if msg.get("id") == self.n:
                if "error" in msg:
                    raise RuntimeError(f"{method}: {msg['error']}")
                return msg["result"]
            if msg.get("method") == "Runtime.exceptionThrown":
                detail = msg["params"]["exceptionDetails"]
                self.errors.append(f"{detail.get('text', '?')} {detail.get('exception', {}).get('description', '')[:300]}")

    async def js(self, expression: str):
        r = await self.call("Runtime.evaluate", expression=expression, awaitPromise=True, returnByValue=True)
        if "exceptionDetails" in r:
            raise RuntimeError(f"page error: {json.dumps(r['exceptionDetails'])[:800]}")
        return r["result"].get("value")

    async def until(self, expression: str, timeout: float = 60.0):
        t0 = time.monotonic()
        while time.monotonic() - t0 < timeout:
            try:
                value = await self.js(expression)
                if value:
                    return value
            except RuntimeError:
                pass
            await asyncio.sleep(0.25)
        raise TimeoutError(f"waited {timeout:.0f} s for {expression}")

    async def screenshot(self, path: Path) -> None:
        path.write_bytes(base64.b64decode((await self.call("Page.captureScreenshot", format="png"))["data"]))


# Page-side helpers (plain JS, no framework internals beyond window.app / window.LiteGraph).
NODES_JS = """app.graph._nodes.map(n => ({id: n.id, type: n.type, pos: [n.pos[0], n.pos[1]],
  size: [n.size[0], n.size[1]], registered: n.type in LiteGraph.registered_node_types,
  widgets: Object.fromEntries((n.widgets || []).map(w => [w.name, w.value]))}))"""
# The missing-models list (1.49.6: a section of the Errors panel; 1.27: a dialog on load, a
# virtual list that is scrolled through): its text, and the URLs its Download / Copy URL buttons
# give (recorded instead of opened or copied; the page is thrown away afterwards).
MODELS_JS = """(async () => {const box = [...document.querySelectorAll('section, [role=dialog]')]
  .filter(e => /Missing Models/.test(e.innerText)).pop();
  if (!box) return null; const links = [], sleep = ms => new Promise(r => setTimeout(r, ms));
  HTMLAnchorElement.prototype.click = function () { links.push(this.href) };
  window.open = u => { links.push(String(u)); return null };
  if (navigator.clipboard) navigator.clipboard.writeText = async t => { links.push(String(t)) };
  const scroller = [...box.querySelectorAll('*')].find(e => e.scrollHeight > e.clientHeight + 4
    && /(auto|scroll)/.test(getComputedStyle(e).overflowY));
  let text = '';
  for (let i = 0; i < 50; i++) {
    text += '\\n' + box.innerText;
    for (const b of box.querySelectorAll('button'))
      if (/^(Download|Copy URL)/.test(b.innerText.trim()) && !b.disabled) b.click();
    if (!scroller || scroller.scrollTop + scroller.clientHeight >= scroller.scrollHeight - 1) break;
    scroller.scrollTop += scroller.clientHeight / 2; await sleep(200);
  }
  await sleep(500);
  return {text, links, dialog: box.getAttribute('role') === 'dialog'}})()"""
CLICK_JS = """(text => {const b = [...document.querySelectorAll('button, a, span, li')]
  .find(e => e.innerText && e.innerText.trim() === text); if (b) b.click(); return !!b})"""


def _same(a, b) -> bool:
    if isinstance(a, (int, float)) and isinstance(b, (int, float)) and not isinstance(a, bool):
        return abs(a - b) <= 1e-6 * max(1.0, abs(a))
    return a == b


async def check_template(b: Browser, url: str, name: str, graph: dict, info: dict, out: Path, tag: str) -> str:
    """Load one template in a fresh page; returns details, raises AssertionError with every problem."""
    await open_app(b, url)
    wf = await b.js(f"fetch('/api/workflow_templates/{PACK_DIR_NAME}/{name}.json').then(r => r.json())")
    await b.js(f"app.loadGraphData({json.dumps(wf)}, true, true, {json.dumps(name)})")
    await asyncio.sleep(4)  # previews of the chosen inputs load
    await b.screenshot(out / f"{tag}_{name}_open.png")
    problems = []
    by_id = {int(n["id"]): n for n in await b.js(NODES_JS)}
    ids = {key: i + 1 for i, key in enumerate(graph)}
    for key, node in graph.items():
        seen = by_id[ids[key]]
        if not seen["registered"]:
            problems.append(f"missing node {seen['type']}")
            continue
        values = {k: v for k, v in node["inputs"].items() if not ui.is_link(v)}
        for wname, _, value in ui.widgets(info[node["class_type"]]["input"], values):
            if wname in node["inputs"] and ui.is_link(node["inputs"][wname]):
                continue
            if wname not in seen["widgets"]:
                problems.append(f"{seen['type']}: no widget {wname}")
            elif not _same(seen["widgets"][wname], value):
                problems.append(f"{seen['type']}.{wname} = {seen['widgets'][wname]!r}, the graph says {value!r}")
    wanted = {v: ew.DOWNLOADS.get(v) for n in graph.values() for v in n["inputs"].values()
              if isinstance(v, str) and v.lower().endswith(ui.MODEL_EXTENSIONS)}
    panel = await b.js(MODELS_JS)  # older frontends open their missing-models dialog on load
    if panel:
        await b.screenshot(out / f"{tag}_{name}_models.png")
        await b.js(f"{CLICK_JS}('Close') || document.querySelector('[role=dialog] button[aria-label=Close]')?.click()")
        await b.call("Input.dispatchKeyEvent", type="keyDown", key="Escape", code="Escape", windowsVirtualKeyCode=27)
        await asyncio.sleep(1)
    # show outputs as the server would once the graph ran: a saved video, preview images
    shows = {"SaveVideo": {"images": [{"filename": Path(FILES.video).name, "subfolder": "", "type": "input"}],
                           "animated": [True]},
             "PreviewImage": {"images": [{"filename": FILES.image, "subfolder": "", "type": "input"}]}}
    for key, node in graph.items():
        if node["class_type"] in shows:
            message = {"node": str(ids[key]), "display_node": str(ids[key]), "output": shows[node["class_type"]],
                       "prompt_id": "frontend-check"}
            await b.js(f"app.api.dispatchCustomEvent('executed', {json.dumps(message)})")
    await b.js("app.extensionManager.command.execute('Comfy.Canvas.FitView')")  # off-screen previews render only in view
    await asyncio.sleep(3)
    nodes = await b.js(NODES_JS)
    for i, a in enumerate(nodes):
        for c in nodes[i + 1:]:
            if ui.boxes_overlap(a, c):
                problems.append(f"{a['type']} #{a['id']} overlaps {c['type']} #{c['id']}")
    grown = {n["type"]: n["size"][1] for n in nodes if n["type"] in ui.MIN_HEIGHT}
    await b.screenshot(out / f"{tag}_{name}_all.png")
    if not panel and wanted:  # 1.49.6: the Errors panel, opened from the "errors found" toast
        await b.js(f"{CLICK_JS}('View details')")
        await asyncio.sleep(2)
        await b.screenshot(out / f"{tag}_{name}_models.png")
        panel = await b.js(MODELS_JS)
    panel, refused = panel or {"text": "", "links": []}, []
    for v, d in wanted.items():
        if v not in panel["text"]:
            problems.append(f"model {v} not in the missing-models list")
        elif d and d.folder not in panel["text"]:
            problems.append(f"model {v}: folder {d.folder} not shown")
        elif d and d.url.startswith("https://huggingface.co/") and d.url not in panel["links"]:
            if v.endswith(".ckpt") and "Only allowed suffixes are: '.safetensors', '.sft'" in panel["text"]:
                refused.append(v)  # frontends before ~1.3x download only .safetensors/.sft
            else:
                problems.append(f"model {v}: its link {d.url} is not offered")
    listed = [v for v in wanted if v in panel["text"]]
    if problems:
        raise AssertionError("; ".join(problems))
    return (f"{len(graph)} nodes, widgets as in the graph, {len(listed)} model files listed"
            + (f" ({', '.join(refused)}: listed with its folder, but this frontend downloads only .safetensors/.sft)"
               if refused else "") + ", "
            f"no overlaps after previews ({', '.join(f'{k} {v:.0f} px' for k, v in sorted(grown.items()))})")


async def open_app(b: Browser, url: str) -> None:
    """A fresh page (no workflow restored from the last one); errors the frontend raises while
    starting are the host's, kept apart."""
    await b.js("location.protocol.startsWith('http') && (localStorage.clear(), sessionStorage.clear())")
    await b.call("Page.navigate", url=url)
    await b.until("!!(window.app && window.app.graph && window.app.canvas && window.LiteGraph)")
    await asyncio.sleep(2)
    await b.js("1")
    b.startup_errors.update(b.errors)
    # 1.49.6 keeps the Errors panel open from the last template (a stored setting): close it
    await b.js("app.extensionManager.setting?.get?.('Comfy.RightSidePanel.IsOpen') === true"
               " && app.extensionManager.setting.set('Comfy.RightSidePanel.IsOpen', false)")
    b.errors.clear()


async def templates_browser(b: Browser, url: str, out: Path, tag: str) -> str:
    await open_app(b, url)
    await b.js("app.extensionManager.command.execute('Comfy.BrowseTemplates')")
    await asyncio.sleep(2)
    await b.js(f"{CLICK_JS}({json.dumps(PACK_DIR_NAME)})")
    await asyncio.sleep(3)
    await b.screenshot(out / f"{tag}_templates_browser.png")
    # each of our cards: the template's name and, in the same card, its picture (not the placeholder)
    cards = await b.js(f"""({json.dumps(list(ew.TEMPLATES))}).map(n => {{
      const t = [...document.querySelectorAll('*')].find(e => !e.children.length && e.textContent.trim() === n);
      for (let c = t; c; c = c.parentElement) {{ const i = c.querySelector('img');
        if (i) return [n, /default-template/.test(i.currentSrc || i.src) ? 0 : i.naturalWidth] }}
      return [n, null]}})""")
    served = [await b.js(f"fetch('/api/workflow_templates/{PACK_DIR_NAME}/{n}.jpg').then(r => r.ok "
                         "&& r.headers.get('content-type'))") for n in ew.TEMPLATES]
    ours = [n for n, width in cards if width]
    if len(ours) < len(ew.TEMPLATES) or not all(t == "image/jpeg" for t in served):
        raise AssertionError(f"cards with their picture: {cards}; served as {served}")
    return f"all {len(ours)} cards show their thumbnail"


async def run_checks(server: ComfyServer, version: str, args, out: Path, tag: str) -> list[tuple[str, bool, str]]:
    rows = []
    info = server.get("/object_info", timeout=120)
    graphs = ew.api_graphs()
    names = args.only or list(graphs)
    async with Browser(args.chromium) as b:
        await open_app(b, server.url)
        frontend = await b.js("window.__COMFYUI_FRONTEND_VERSION__ || '?'")
        rows.append(("frontend", True, f"version {frontend}"))
        for name in names:
            needs = ew.TEMPLATES[name].min_comfyui
            runs = "" if ew.version_tuple(version) >= ew.version_tuple(needs) else f" (loads; runs on ComfyUI {needs}+)"
            try:
                rows.append((name, True, await check_template(b, server.url, name, graphs[name], info, out, tag) + runs))
            except (AssertionError, KeyError, RuntimeError, TimeoutError) as e:
                rows.append((name, False, f"{type(e).__name__}: {e}"))
        try:
            rows.append(("Templates browser", True, await templates_browser(b, server.url, out, tag)))
        except (AssertionError, RuntimeError) as e:
            rows.append(("Templates browser", False, str(e)))
        if b.startup_errors:
            rows.append(("frontend start (no template)", True, "the host's own errors while starting, also "
                         "without this pack: " + "; ".join(e.splitlines()[0] for e in sorted(b.startup_errors))))
        if b.errors:
            rows.append(("page errors", False, "; ".join(e.splitlines()[0] for e in b.errors[:5])))
    return rows


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--comfyui", required=True, type=Path, help="ComfyUI checkout (its .venv python is used)")
    ap.add_argument("--chromium", default="chromium")
    ap.add_argument("--out", type=Path, default=Path("frontend_check"), help="screenshots go here")
    ap.add_argument("--only", nargs="+", metavar="NAME", help="only these templates")
    args = ap.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="ft_frontend_") as tmp:
        base = make_base(Path(tmp))
        (base / "user" / "default").mkdir()
        shutil.copy(ROOT / "assets" / "portrait.png", base / "input" / FILES.image)
        shutil.copy(ROOT / "assets" / "speech_en_16k.wav", base / "input" / FILES.audio)
        # a one-second still video of the portrait, for Load Video and the simulated saved video
        portrait = np.asarray(Image.open(ROOT / "assets" / "portrait.png").convert("RGB"))
        write_video(np.stack([portrait] * 23), base / "input" / FILES.video, 23)
        # a returning user: no first-run tour or templates dialog over the canvas
        (base / "user" / "default" / "comfy.settings.json").write_text(json.dumps(
            {"Comfy.TutorialCompleted": True, "Comfy.Workflow.ShowMissingModelsWarning": True, "Comfy.Workflow.Persist": False,
             "Comfy.Minimap.Visible": False, "LiteGraph.Canvas.MinFontSizeForLOD": 0}))
        with serve(args.comfyui, base) as server:
            version = server.version()
            rows = asyncio.run(run_checks(server, version, args, args.out, f"comfyui-{version}"))
    print(f"\nComfyUI {version}, screenshots in {args.out}")
    for name, ok, detail in rows:
        print(f"{'ok  ' if ok else 'FAIL'} {name:36s} {detail}")
    return 0 if all(ok for _, ok, _ in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
