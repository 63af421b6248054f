"""The example workflows, written once as API-format graphs and exported in ComfyUI's UI format.

    python scripts/example_workflows.py           # (re)write example_workflows/*.json
    python scripts/example_workflows.py --check   # exit 1 if the files differ from what this makes

The same graphs, with tiny model files swapped in, are what scripts/comfyui_smoke.py posts to a
real ComfyUI, so the templates users open are the graphs that were run. Widget order comes from
each node's declaration (ours from INPUT_TYPES, core's from tests/data/comfy_core_nodes.json).
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass, replace
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
OUT_DIR = ROOT / "example_workflows"
CORE_NODES = ROOT / "tests" / "data" / "comfy_core_nodes.json"
SCALARS = {"INT", "FLOAT", "STRING", "BOOLEAN", "COMBO"}


@dataclass(frozen=True)
class Files:
    """File names in ComfyUI's folders (defaults: the real files users download)."""

    wan: str = "wan2.1_i2v_480p_14B_fp8_e4m3fn.safetensors"
    fantasytalking: str = "fantasytalking_model.ckpt"
    adapters_with_identity: str = "fantasytalking_adapters.safetensors"
    wav2vec: str = "wav2vec2-base-960h"
    vae: str = "wan_2.1_vae.safetensors"
    text_encoder: str = "umt5_xxl_fp8_e4m3fn_scaled.safetensors"
    text_encoder_type: str = "wan"
    clip_vision: str | None = "clip_vision_h.safetensors"
    image: str = "portrait.png"
    audio: str = "speech.wav"
    video: str = "talking.mp4"
    insightface_pack: str = "antelopev2"


@dataclass(frozen=True)
class Size:
    width: int = 512
    height: int = 512
    steps: int = 30
    max_frames: int = 81


PROMPT = "A person is talking to the camera, natural expression, clear lip movements."
NEGATIVE = "bright tones, overexposed, static, blurred details, subtitles, worst quality, low quality, ugly, deformed"


def _portrait_video(f: Files, s: Size, *, identity: bool = False, long_audio: bool = False) -> dict:
    g = {
        "image": {"class_type": "LoadImage", "inputs": {"image": f.image}},
        "audio": {"class_type": "LoadAudio", "inputs": {"audio": f.audio}},
        "wan": {"class_type": "UNETLoader", "inputs": {"unet_name": f.wan, "weight_dtype": "default"}},
        "clip": {"class_type": "CLIPLoader", "inputs": {"clip_name": f.text_encoder, "type": f.text_encoder_type,
                                                         "device": "default"}},
        "pos": {"class_type": "CLIPTextEncode", "inputs": {"clip": ["clip", 0], "text": PROMPT}},
        "neg": {"class_type": "CLIPTextEncode", "inputs": {"clip": ["clip", 0], "text": NEGATIVE}},
        "vae": {"class_type": "VAELoader", "inputs": {"vae_name": f.vae}},
        "ft": {"class_type": "FantasyTalkingModelLoader",
               "inputs": {"model_name": f.adapters_with_identity if identity else f.fantasytalking, "precision": "auto"}},
        "w2v": {"class_type": "FantasyTalkingWav2VecLoader", "inputs": {"model_name": f.wav2vec, "device": "auto"}},
        "enc": {"class_type": "FantasyTalkingAudioEncode",
                "inputs": {"audio": ["audio", 0], "wav2vec": ["w2v", 0], "fps": 23.0, "frames": 0,
                           "max_frames": 0 if long_audio else s.max_frames}},
        "i2v": {"class_type": "WanImageToVideo",
                "inputs": {"positive": ["pos", 0], "negative": ["neg", 0], "vae": ["vae", 0], "start_image": ["image", 0],
                           "width": s.width, "height": s.height, "length": ["enc", 1], "batch_size": 1}},
        "apply": {"class_type": "FantasyTalkingApply",
                  "inputs": {"model": ["wan", 0], "fantasytalking_model": ["ft", 0], "audio_features": ["enc", 0],
                             "audio_scale": 1.0, "audio_mode": "frame"}},
        "sampler": {"class_type": "FantasyTalkingSampler",
                    "inputs": {"model": ["apply", 0], "positive": ["i2v", 0], "negative": ["i2v", 1],
                               "latent_image": ["i2v", 2], "seed": 1111, "steps": s.steps, "cfg_text": 5.0,
                               "cfg_audio": 4.5, "audio_guidance_start": 0.0, "audio_guidance_end": 1.0,
                               "sampler_name": "uni_pc", "scheduler": "simple", "shift": 5.0, "denoise": 1.0}},
        "decode": {"class_type": "VAEDecode", "inputs": {"samples": ["sampler", 0], "vae": ["vae", 0]}},
        "video": {"class_type": "CreateVideo", "inputs": {"images": ["decode", 0], "fps": 23.0, "audio": ["enc", 2]}},
        "save": {"class_type": "SaveVideo", "inputs": {"video": ["video", 0], "filename_prefix": "video/FantasyTalking",
                                                         "format": "mp4", "codec": "h264"}},
    }
    if f.clip_vision:
        g["clipv"] = {"class_type": "CLIPVisionLoader", "inputs": {"clip_name": f.clip_vision}}
        g["clipv_enc"] = {"class_type": "CLIPVisionEncode",
                          "inputs": {"clip_vision": ["clipv", 0], "image": ["image", 0], "crop": "none"}}
        g["i2v"]["inputs"]["clip_vision_output"] = ["clipv_enc", 0]
    if identity:
        g["face"] = {"class_type": "FantasyTalkingFaceEmbed",
                     "inputs": {"image": ["image", 0], "insightface_pack": f.insightface_pack,
                                "min_confidence": 0.5, "crop_scale": 1.5}}
        g["motion"] = {"class_type": "FantasyTalkingMotionIntensity", "inputs": {"omega_l": 0.6, "omega_b": 0.4}}
        g["apply"]["inputs"].update(face=["face", 0], id_scale=0.5, motion=["motion", 0])
        g["face_preview"] = {"class_type": "PreviewImage", "inputs": {"images": ["face", 1]}}
    if long_audio:
        # The whole audio in one video (frames follow the audio, no cap) and a tiled decode. Core's
        # WanContextWindowsManual (Oct 2025) does not cut Wan I2V's concat image per window, so
        # it cannot run this graph there; Apply already gives each window its own audio frames.
        g["decode"] = {"class_type": "VAEDecodeTiled",
                       "inputs": {"samples": ["sampler", 0], "vae": ["vae", 0], "tile_size": 512, "overlap": 64,
                                  "temporal_size": 64, "temporal_overlap": 8}}
    return g


def _lip_mask_preview(f: Files, s: Size) -> dict:
    return {
        "video": {"class_type": "LoadVideo", "inputs": {"file": f.video}},
        "parts": {"class_type": "GetVideoComponents", "inputs": {"video": ["video", 0]}},
        "lips": {"class_type": "FantasyTalkingLipMask",
                 "inputs": {"images": ["parts", 0], "dilation": 2, "missing_face": "interpolate"}},
        "preview": {"class_type": "PreviewImage", "inputs": {"images": ["lips", 1]}},
        "mask_image": {"class_type": "MaskToImage", "inputs": {"mask": ["lips", 0]}},
        "mask_preview": {"class_type": "PreviewImage", "inputs": {"images": ["mask_image", 0]}},
    }


def api_graphs(files: Files = Files(), size: Size = Size()) -> dict[str, dict]:
    """{workflow name: API-format graph}."""
    return {
        "01_portrait_audio_to_talking_video": _portrait_video(files, size),
        "02_identity_and_motion_sliders": _portrait_video(files, size, identity=True),
        "03_long_audio_one_pass": _portrait_video(files, size, long_audio=True),
        "04_lip_mask_preview": _lip_mask_preview(files, size),
    }


# ------------------------------------------------------------------------------ UI format
def object_info() -> dict:
    """Declarations of our nodes (from the classes) and of the core nodes used (recorded)."""
    sys.path.insert(0, str(ROOT))
    import nodes

    info = {k: v for k, v in json.loads(CORE_NODES.read_text()).items() if not k.startswith("_")}
    for name, cls in nodes.NODE_CLASS_MAPPINGS.items():
        info[name] = {"input": cls.INPUT_TYPES(), "output": list(cls.RETURN_TYPES),
                      "output_name": list(cls.RETURN_NAMES), "output_node": getattr(cls, "OUTPUT_NODE", False)}
    return info


def is_widget(spec: list | tuple) -> bool:
    return isinstance(spec[0], list) or spec[0] in SCALARS


def widget_values(spec: list | tuple, value) -> list:
    """The widget's value plus the extra values the frontend stores after some widgets."""
    opts = spec[1] if len(spec) > 1 else {}
    out = [value]
    if opts.get("control_after_generate"):
        out.append("fixed")
    if opts.get("image_upload") or opts.get("video_upload"):
        out.append("image")
    if opts.get("audio_upload"):
        out += [None, None]  # the audio player and the upload button
    return out


def to_ui(graph: dict, info: dict) -> dict:
    """API graph -> LiteGraph workflow (version 0.4): nodes, typed links, widget values in order."""
    ids = {key: i + 1 for i, key in enumerate(graph)}
    links, node_list, out_links = [], [], {}
    for idx, (key, node) in enumerate(graph.items()):
        decl = info[node["class_type"]]
        inputs, widgets = [], []
        for section in ("required", "optional"):
            for name, spec in decl["input"].get(section, {}).items():
                value = node["inputs"].get(name)
                linked = isinstance(value, list) and len(value) == 2 and isinstance(value[0], str)
                default = (spec[1] if len(spec) > 1 else {}).get("default")
                if is_widget(spec) and not linked:
                    widgets += widget_values(spec, default if value is None else value)
                    continue
                entry = {"name": name, "type": spec[0] if not is_widget(spec) else _widget_type(spec), "link": None}
                if is_widget(spec):  # a widget turned into an input keeps its slot in widgets_values
                    entry["widget"] = {"name": name}
                    widgets += widget_values(spec, default)
                if section == "optional":
                    entry["shape"] = 7
                if linked:
                    src, slot = value
                    link_id = len(links) + 1
                    links.append([link_id, ids[src], slot, ids[key], len(inputs), info[graph[src]["class_type"]]["output"][slot]])
                    out_links.setdefault((src, slot), []).append(link_id)
                    entry["link"] = link_id
                inputs.append(entry)
        names = decl.get("output_name") or decl["output"]
        outputs = [{"name": names[i], "type": t, "slot_index": i, "links": None} for i, t in enumerate(decl["output"])]
        height = 46 + 24 * (max(len(inputs), len(outputs)) + len(widgets))
        node_list.append({"id": ids[key], "type": node["class_type"], "pos": [0, 0], "size": [340, height], "flags": {},
                          "order": idx, "mode": 0, "inputs": inputs, "outputs": outputs,
                          "properties": {"Node name for S&R": node["class_type"]}, "widgets_values": widgets})
    _layout(graph, node_list, ids)
    for key, n in zip(graph, node_list):  # links to a node's outputs are known once every node is read
        for o in n["outputs"]:
            o["links"] = out_links.get((key, o["slot_index"]))
    return {"id": f"00000000-0000-4000-8000-{len(graph):012d}", "revision": 0, "last_node_id": len(node_list),
            "last_link_id": len(links), "nodes": node_list, "links": links, "groups": [], "config": {},
            "extra": {"ds": {"scale": 0.8, "offset": [0, 0]}}, "version": 0.4}


def _layout(graph: dict, node_list: list[dict], ids: dict) -> None:
    """Columns by depth in the graph (sources left), nodes stacked by their height: no overlaps."""
    depth: dict[str, int] = {}

    def level(key: str) -> int:
        if key not in depth:
            srcs = [v[0] for v in graph[key]["inputs"].values() if isinstance(v, list) and len(v) == 2]
            depth[key] = 1 + max((level(k) for k in srcs), default=-1)
        return depth[key]

    by_id = {n["id"]: n for n in node_list}
    tops: dict[int, int] = {}
    for key in graph:
        col = level(key)
        node = by_id[ids[key]]
        y = tops.get(col, 40)
        node["pos"] = [40 + 400 * col, y]
        tops[col] = y + node["size"][1] + 50


def _widget_type(spec) -> str:
    return "COMBO" if isinstance(spec[0], list) else spec[0]


def render() -> dict[str, str]:
    info = object_info()
    return {f"{name}.json": json.dumps(to_ui(graph, info), indent=1) + "\n" for name, graph in api_graphs().items()}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--check", action="store_true", help="compare instead of writing")
    args = p.parse_args(argv)
    stale = []
    for name, text in render().items():
        path = OUT_DIR / name
        if args.check:
            if not path.exists() or path.read_text() != text:
                stale.append(name)
        else:
            OUT_DIR.mkdir(exist_ok=True)
            path.write_text(text)
            print(f"wrote {path.relative_to(ROOT)}")
    if stale:
        print("out of date (run python scripts/example_workflows.py): " + ", ".join(stale))
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
