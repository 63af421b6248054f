"""API-format graph -> the LiteGraph workflow JSON that ComfyUI's frontend loads (UI format 0.4).

Widget order comes from each node's declaration: ours from INPUT_TYPES, core's from the
/object_info recorded per host in tests/data/comfy_core_nodes_<version>.json (``--record-core`` of
scripts/example_workflows.py refreshes them). The files follow the newest recorded host; older
hosts read the same widgets_values by position and ignore the trailing values of widgets they do
not have (checked in tests/test_workflows.py and, in a real browser, by scripts/frontend_check.py).

What the current frontend (1.49.6) reads besides the graph:
- ``properties.models`` on a loader node, ``[{name, url, directory}]``: the missing-models panel
  offers the download when ``name`` is the widget's value and ends in .safetensors/.sft/.ckpt/
  .pth/.pt and ``url`` is on huggingface.co or civitai; ``directory`` is the models/ sub-folder
  (it must equal the folder the frontend knows for core loaders, e.g. ``diffusion_models`` for
  UNETLoader). Folder-valued widgets (a wav2vec2 folder, an insightface pack) are never listed.
- a MarkdownNote node (frontend-only, never sent to the server) for the text users read first.
- node sizes: a media node grows to show its preview (Load Image to 314 px high at width 340),
  so those sizes are reserved here and the layout never lets a grown node cover another.
"""

from __future__ import annotations

import json
import re
import uuid
from pathlib import Path
from typing import Any, Iterator, Mapping

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "tests" / "data"
HOSTS = ("0.3.64", "0.33.0")  # ComfyUI versions whose core declarations are recorded, oldest first
SCALARS = {"INT", "FLOAT", "STRING", "BOOLEAN", "COMBO"}
DYNAMIC_COMBO = "COMFY_DYNAMICCOMBO_V3"  # 0.33's SaveVideo "format": a combo whose options carry more widgets
MODEL_EXTENSIONS = (".safetensors", ".sft", ".ckpt", ".pt", ".pth", ".bin", ".onnx", ".gguf")  # what the frontend scans
PACK_ID = "comfyui-fantasytalking"  # registry id (pyproject name): lets the frontend offer to install a missing pack

# Layout. Columns: model loaders, the user's media and controls, then by depth in the graph, the
# video output chain last; nodes stack in graph order with GAP between them (TITLE px above each).
WIDTH, COLUMN, GAP, TITLE, LEFT, TOP = 340, 400, 40, 30, 40, 40
NOTE_WIDTH = 440
LOADERS = {"UNETLoader", "CLIPLoader", "VAELoader", "CLIPVisionLoader", "LoraLoaderModelOnly",
           "FantasyTalkingModelLoader", "FantasyTalkingWav2VecLoader"}
MEDIA = {"LoadImage", "LoadAudio", "LoadVideo", "FantasyTalkingMotionIntensity"}
OUTPUT_CHAIN = {"VAEDecode", "VAEDecodeTiled", "CreateVideo", "SaveVideo"}
# Heights the frontend grows these nodes to once media is shown (measured in 1.49.6 at width 340:
# Load Image 314 with a square image, Load Audio 142 with its player, Save Video 462 and Load
# Video about 400 with a square video), so the layout keeps room for them from the start; prompts get room to be read. (1.49.6
# recomputes Save Video's height on load; the layout keeps it and Preview Image last in a column.)
MIN_HEIGHT = {"LoadImage": 360, "LoadAudio": 150, "LoadVideo": 420, "SaveVideo": 480, "PreviewImage": 360,
              "CLIPTextEncode": 150}


# ------------------------------------------------------------------------------ declarations
def core_declarations(version: str = HOSTS[-1]) -> dict:
    path = DATA / f"comfy_core_nodes_{version}.json"
    return {k: v for k, v in json.loads(path.read_text()).items() if not k.startswith("_")}


def pack_declarations() -> dict:
    """Our nodes' declarations, read from the code (the repo's ``nodes`` package)."""
    import nodes

    return {name: {"input": cls.INPUT_TYPES(), "output": list(cls.RETURN_TYPES),
                   "output_name": list(cls.RETURN_NAMES), "output_node": getattr(cls, "OUTPUT_NODE", False)}
            for name, cls in nodes.NODE_CLASS_MAPPINGS.items()}


def object_info(version: str = HOSTS[-1]) -> dict:
    """What /object_info of that host says about the nodes the templates use (ours: from the code)."""
    return {**core_declarations(version), **pack_declarations()}


# ------------------------------------------------------------------------------ widgets
def is_widget(spec: list | tuple) -> bool:
    return isinstance(spec[0], list) or spec[0] in SCALARS or spec[0] == DYNAMIC_COMBO


def options(spec) -> dict:
    return (spec[1] if len(spec) > 1 else None) or {}


def choices(spec) -> list | None:
    """The allowed values of a combo widget (old list form, COMBO or dynamic combo), else None."""
    if isinstance(spec[0], list):
        return spec[0]
    if spec[0] == DYNAMIC_COMBO:
        return [o["key"] for o in options(spec)["options"]]
    return options(spec).get("options") if spec[0] == "COMBO" else None


def default_value(spec):
    """What the frontend shows for a widget without a value: its default, else a combo's first choice."""
    opts = options(spec)
    if "default" in opts:
        return opts["default"]
    c = choices(spec)
    return c[0] if c else None


def widgets(decl_input: Mapping, values: Mapping, prefix: str = "") -> Iterator[tuple[str, list, Any]]:
    """(name, spec, value) of each widget in the frontend's order; a dynamic combo is followed by
    the widgets of its chosen option, named ``parent.child``. A value comes from ``values`` by its
    full name, else (nested) by its own name: API graphs write SaveVideo's codec at the top level
    for every host; a hidden widget, and one without a value, keeps the declaration's default."""
    for section in ("required", "optional"):
        for name, spec in decl_input.get(section, {}).items():
            if not is_widget(spec):
                continue
            full = prefix + name
            shown = default_value(spec)
            value = shown if options(spec).get("hidden") else values.get(full, values.get(name, shown))
            yield full, spec, value
            if spec[0] == DYNAMIC_COMBO:
                option = next(o for o in options(spec)["options"] if o["key"] == value)
                yield from widgets(option["inputs"], values, full + ".")


def stored_values(spec, value) -> list:
    """The widget's value plus the extra values the frontend stores after some widgets."""
    opts = options(spec)
    out = [value]
    if opts.get("control_after_generate"):
        out.append("fixed")
    if opts.get("image_upload") or opts.get("video_upload"):
        out.append("image")
    if opts.get("audio_upload"):
        out += [None, None]  # the audio player and the upload button
    return out


def is_link(value) -> bool:
    return isinstance(value, list) and len(value) == 2 and isinstance(value[0], str)


# ------------------------------------------------------------------------------ UI workflow
def to_ui(name: str, graph: dict, info: dict, downloads: Mapping[str, Any] = {}, note: str = "") -> dict:
    """API graph -> LiteGraph workflow: nodes, typed links, widget values in order, model links
    (``downloads``: file name -> object with ``folder`` and ``url``), a MarkdownNote, a layout."""
    ids = {key: i + 1 for i, key in enumerate(graph)}
    links, node_list, out_links = [], [], {}
    for idx, (key, node) in enumerate(graph.items()):
        decl = info[node["class_type"]]
        inputs = []
        for section in ("required", "optional"):
            for inp, spec in decl["input"].get(section, {}).items():
                value = node["inputs"].get(inp)
                if is_widget(spec) and not is_link(value):
                    continue
                entry = {"name": inp, "type": spec[0] if not is_widget(spec) else _widget_type(spec), "link": None}
                if is_widget(spec):  # a widget turned into an input keeps its slot in widgets_values
                    entry["widget"] = {"name": inp}
                if section == "optional":
                    entry["shape"] = 7
                if is_link(value):
                    src, slot = value
                    link_id = len(links) + 1
                    links.append([link_id, ids[src], slot, ids[key], len(inputs), info[graph[src]["class_type"]]["output"][slot]])
                    out_links.setdefault((src, slot), []).append(link_id)
                    entry["link"] = link_id
                inputs.append(entry)
        values = {k: v for k, v in node["inputs"].items() if not is_link(v)}
        widget_list = list(widgets(decl["input"], values))
        stored = [v for _, spec, value in widget_list for v in stored_values(spec, value)]
        names = decl.get("output_name") or decl["output"]
        outputs = [{"name": names[i], "type": t, "slot_index": i, "links": None} for i, t in enumerate(decl["output"])]
        height = 46 + 24 * (max(len(inputs), len(outputs)) + len(widget_list))
        height = max(height, MIN_HEIGHT.get(node["class_type"], 0))
        properties = {"Node name for S&R": node["class_type"]}
        if node["class_type"].startswith("FantasyTalking"):
            properties["cnr_id"] = PACK_ID
        models = [{"name": v, "url": downloads[v].url, "directory": downloads[v].folder}
                  for v in values.values() if isinstance(v, str) and v in downloads]
        if models:
            properties["models"] = models
        node_list.append({"id": ids[key], "type": node["class_type"], "pos": [0, 0], "size": [WIDTH, height],
                          "flags": {}, "order": idx, "mode": 0, "inputs": inputs, "outputs": outputs,
                          "properties": properties, "widgets_values": stored})
    for key, n in zip(graph, node_list):  # links to a node's outputs are known once every node is read
        for o in n["outputs"]:
            o["links"] = out_links.get((key, o["slot_index"]))
    _layout(graph, node_list, x0=LEFT + (NOTE_WIDTH + COLUMN - WIDTH if note else 0))
    if note:
        node_list.append(_note_node(len(node_list) + 1, note))
    return {"id": str(uuid.uuid5(uuid.NAMESPACE_URL, f"{PACK_ID}/{name}")), "revision": 0,
            "last_node_id": len(node_list), "last_link_id": len(links), "nodes": node_list, "links": links,
            "groups": [], "config": {}, "extra": {"ds": {"scale": 0.75, "offset": [80, 70]}}, "version": 0.4}


def _note_node(node_id: int, text: str) -> dict:
    shown = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", text)  # markdown links show their text only
    lines = sum(1 + len(line) // 58 for line in shown.splitlines())
    return {"id": node_id, "type": "MarkdownNote", "pos": [LEFT, TOP + TITLE], "size": [NOTE_WIDTH, 60 + 20 * lines],
            "flags": {}, "order": node_id - 1, "mode": 0, "inputs": [], "outputs": [],
            "title": "Read me: files to get", "properties": {}, "widgets_values": [text],
            "color": "#432", "bgcolor": "#653"}


def columns(graph: dict) -> dict[str, int]:
    """Column of each node: loaders 0, media and user controls 1, others one right of their
    furthest source (at least 2), the decode -> video -> save chain after everything else."""
    col: dict[str, int] = {}

    def of(key: str) -> int:
        if key not in col:
            kind = graph[key]["class_type"]
            srcs = [v[0] for v in graph[key]["inputs"].values() if is_link(v)]
            if kind in LOADERS:
                col[key] = 0
            elif kind in MEDIA and not srcs:
                col[key] = 1
            else:
                col[key] = max([2] + [1 + of(s) for s in srcs])
        return col[key]

    for key in graph:
        of(key)
    last = 1 + max((c for k, c in col.items() if graph[k]["class_type"] not in OUTPUT_CHAIN), default=-1)
    col.update({k: last for k in graph if graph[k]["class_type"] in OUTPUT_CHAIN})
    used = sorted(set(col.values()))  # no empty columns
    return {k: used.index(c) for k, c in col.items()}


def _layout(graph: dict, node_list: list[dict], x0: int) -> None:
    """Place the nodes by ``columns``, each below the previous one's box (title bar included),
    in graph order except that nodes showing outputs come last."""
    tops: dict[int, int] = {}
    col = columns(graph)
    grows = {"SaveVideo", "PreviewImage"}  # last in their column: their preview may grow past the reserve
    order = sorted(zip(graph, node_list), key=lambda kn: graph[kn[0]]["class_type"] in grows)
    for key, node in order:
        c = col[key]
        y = tops.get(c, TOP + TITLE)
        node["pos"] = [x0 + COLUMN * c, y]
        tops[c] = y + node["size"][1] + TITLE + GAP


def box(node: dict) -> tuple[float, float, float, float]:
    """x0, y0, x1, y1 of a UI node on the canvas, its title bar (drawn above ``pos``) included."""
    (x, y), (w, h) = node["pos"], node["size"]
    return x, y - TITLE, x + w, y + h


def boxes_overlap(a: dict, b: dict) -> bool:
    (ax0, ay0, ax1, ay1), (bx0, by0, bx1, by1) = box(a), box(b)
    return ax0 < bx1 and bx0 < ax1 and ay0 < by1 and by0 < ay1


def _widget_type(spec) -> str:
    return "COMBO" if isinstance(spec[0], list) or spec[0] == DYNAMIC_COMBO else spec[0]
