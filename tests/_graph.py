"""A small executor for API-format graphs, run the way ComfyUI runs them, plus stand-ins for the
core nodes a FantasyTalking graph needs (tiny random models, the plain host of _plain_host.py)."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import torch

import nodes
from fantasytalking_core.pipeline import TinyCausalVAE
from _factories import tiny_wan
from _plain_host import PlainModelPatcher

SCALARS = {"INT": int, "FLOAT": (int, float), "STRING": str, "BOOLEAN": bool}


def input_spec_errors(name: str, cls: type) -> list[str]:
    """ComfyUI's rules for a V1 node's declaration, as messages (empty when valid)."""
    errors = []
    for attr in ("RETURN_TYPES", "FUNCTION", "CATEGORY", "DESCRIPTION", "INPUT_TYPES"):
        if not hasattr(cls, attr):
            errors.append(f"{name}: no {attr}")
    if errors:
        return errors
    n = len(cls.RETURN_TYPES)
    for attr in ("RETURN_NAMES", "OUTPUT_TOOLTIPS"):
        if len(getattr(cls, attr, ())) != n:
            errors.append(f"{name}: {attr} has {len(getattr(cls, attr, ()))} entries for {n} outputs")
    if not callable(getattr(cls, cls.FUNCTION, None)):
        errors.append(f"{name}: FUNCTION {cls.FUNCTION!r} is not a method")
    spec = cls.INPUT_TYPES()
    for section, inputs in spec.items():
        if section not in ("required", "optional", "hidden"):
            errors.append(f"{name}: unknown section {section!r}")
        for key, decl in inputs.items():
            kind, opts = decl[0], (decl[1] if len(decl) > 1 else {})
            if section != "hidden" and not opts.get("tooltip"):
                errors.append(f"{name}.{key}: no tooltip")
            if isinstance(kind, list):
                if not kind or not all(isinstance(v, str) for v in kind):
                    errors.append(f"{name}.{key}: combo must be a non-empty list of strings")
                elif "default" in opts and opts["default"] not in kind:
                    errors.append(f"{name}.{key}: default {opts['default']!r} not among the choices")
            elif kind in ("INT", "FLOAT"):
                d, lo, hi = opts.get("default"), opts.get("min"), opts.get("max")
                if d is None or lo is None or hi is None or not lo <= d <= hi:
                    errors.append(f"{name}.{key}: default {d} outside [{lo}, {hi}]")
                if kind == "INT" and not all(isinstance(v, int) for v in (d, lo, hi)):
                    errors.append(f"{name}.{key}: INT bounds must be ints")
            elif not isinstance(kind, str) or not kind.isupper():
                errors.append(f"{name}.{key}: type {kind!r} is not a ComfyUI type name")
    return errors


def _check_widget(node: str, key: str, kind, opts: dict, value) -> None:
    if isinstance(kind, list):
        if value not in kind:
            raise ValueError(f"{node}.{key}: {value!r} not in {kind}")
    elif kind in SCALARS:
        if not isinstance(value, SCALARS[kind]) or isinstance(value, bool) and kind != "BOOLEAN":
            raise ValueError(f"{node}.{key}: {value!r} is not {kind}")
        if kind in ("INT", "FLOAT") and not opts.get("min", -np.inf) <= value <= opts.get("max", np.inf):
            raise ValueError(f"{node}.{key}: {value} outside [{opts.get('min')}, {opts.get('max')}]")
    else:
        raise ValueError(f"{node}.{key}: a {kind} input needs a link, got the value {value!r}")


def run_graph(graph: dict, classes: dict | None = None, ui: dict | None = None,
              extra_pnginfo: dict | None = None) -> dict[str, tuple]:
    """Validate and execute ``{id: {"class_type", "inputs"}}``; links are ``[source_id, output_index]``.
    Hidden inputs as core gives them (PROMPT: the graph, EXTRA_PNGINFO, UNIQUE_ID: the node's id); a node
    answering ``{"ui", "result"}`` puts its ui into ``ui[node_id]``."""
    classes = classes or {**nodes.NODE_CLASS_MAPPINGS, **STANDINS}
    done: dict[str, tuple] = {}

    def run(node_id: str, stack: tuple = ()) -> tuple:
        if node_id in done:
            return done[node_id]
        if node_id in stack:
            raise ValueError(f"cycle through node {node_id}")
        entry = graph[node_id]
        cls = classes[entry["class_type"]]
        spec = cls.INPUT_TYPES()
        declared = {**spec.get("required", {}), **spec.get("optional", {})}
        kwargs = {}
        for key, value in entry["inputs"].items():
            if key not in declared:
                raise ValueError(f"{entry['class_type']}: unknown input {key!r}")
            kind, opts = declared[key][0], (declared[key][1] if len(declared[key]) > 1 else {})
            if isinstance(value, list) and len(value) == 2 and isinstance(value[0], str):
                src = graph[value[0]]["class_type"]
                out_type = classes[src].RETURN_TYPES[value[1]]
                if isinstance(kind, list) or out_type != kind:
                    raise ValueError(f"{entry['class_type']}.{key} takes {kind}, linked to {src} output {out_type}")
                kwargs[key] = run(value[0], stack + (node_id,))[value[1]]
            else:
                _check_widget(entry["class_type"], key, kind, opts, value)
                kwargs[key] = value
        missing = [k for k in spec.get("required", {}) if k not in kwargs]
        if missing:
            raise ValueError(f"{entry['class_type']} ({node_id}): required inputs missing: {missing}")
        hidden = {"PROMPT": graph, "EXTRA_PNGINFO": extra_pnginfo, "UNIQUE_ID": node_id}
        kwargs.update({k: hidden[v] for k, v in spec.get("hidden", {}).items()})
        out = getattr(cls(), cls.FUNCTION)(**kwargs)
        if isinstance(out, dict) and "result" in out:
            if ui is not None:
                ui[node_id] = out.get("ui")
            out = out["result"]
        if not isinstance(out, tuple) or len(out) != len(cls.RETURN_TYPES):
            raise ValueError(f"{entry['class_type']} returned {type(out).__name__} of wrong length")
        done[node_id] = out
        return out

    for node_id in graph:
        run(node_id)
    return done


# ------------------------------------------------------------------ stand-ins for core nodes
class _Standin:
    CATEGORY = "test"
    DESCRIPTION = "test stand-in for a core node"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {}}


class TestTinyWan(_Standin):
    """UNETLoader stand-in: the tiny Wan2.1 I2V DiT in our plain host."""
    RETURN_TYPES, FUNCTION = ("MODEL",), "load"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"seed": ("INT", {"default": 0, "min": 0, "max": 99})}}

    def load(self, seed=0):
        return (PlainModelPatcher(tiny_wan(seed)),)


class TestAudio(_Standin):
    """LoadAudio stand-in: a waveform as core's AUDIO dict."""
    RETURN_TYPES, FUNCTION = ("AUDIO",), "load"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"path": ("STRING", {"default": ""})}}

    def load(self, path):
        import soundfile

        data, rate = soundfile.read(path, dtype="float32", always_2d=True)
        return ({"waveform": torch.from_numpy(data.T.copy())[None], "sample_rate": rate},)


class TestImage(_Standin):
    """LoadImage stand-in: a real portrait (scikit-image's astronaut) as IMAGE."""
    RETURN_TYPES, FUNCTION = ("IMAGE",), "load"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"size": ("INT", {"default": 64, "min": 16, "max": 512})}}

    def load(self, size=64):
        from _media_helpers import portrait

        return (torch.from_numpy(portrait(size)).float().div(255)[None],)


class TestWanImageToVideo(_Standin):
    """WanImageToVideo stand-in: conds with concat_latent_image/concat_mask/clip_vision_output, and the latent."""
    RETURN_TYPES, FUNCTION = ("CONDITIONING", "CONDITIONING", "LATENT"), "encode"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"image": ("IMAGE",), "length": ("INT", {"default": 9, "min": 1, "max": 401}),
                             "seed": ("INT", {"default": 0, "min": 0, "max": 99})}}

    def encode(self, image, length=9, seed=0):
        cfg = tiny_wan().cfg
        g = torch.Generator().manual_seed(seed)
        frames = image.permute(3, 0, 1, 2)[None] * 2 - 1  # [1, 3, 1, H, W]
        video = torch.cat([frames, torch.zeros(1, 3, length - 1, *frames.shape[-2:])], dim=2)
        lat = vae().encode(video).detach()  # [1, 16, T_lat, h, w]
        mask = torch.ones(1, 1, lat.shape[2], *lat.shape[-2:])
        mask[:, :, 0] = 0.0
        clip = SimpleNamespace(penultimate_hidden_states=torch.randn(1, 257, cfg.clip_dim, generator=g))
        extra = {"concat_latent_image": lat, "concat_mask": mask, "clip_vision_output": clip}
        pos = [[torch.randn(1, 5, cfg.text_dim, generator=g), dict(extra)]]
        neg = [[torch.randn(1, 7, cfg.text_dim, generator=g), dict(extra)]]
        return (pos, neg, {"samples": torch.zeros_like(lat)})


_VAE = {}


def vae() -> TinyCausalVAE:
    if "vae" not in _VAE:
        torch.manual_seed(3)
        _VAE["vae"] = TinyCausalVAE().eval()
    return _VAE["vae"]


class TestVAEDecode(_Standin):
    RETURN_TYPES, FUNCTION = ("IMAGE",), "decode"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"samples": ("LATENT",)}}

    def decode(self, samples):
        with torch.no_grad():
            video = vae().decode(samples["samples"])  # [1, 3, T, H, W] in -1..1
        return (((video[0].permute(1, 2, 3, 0) + 1) / 2).clamp(0, 1),)


STANDINS = {c.__name__: c for c in (TestTinyWan, TestAudio, TestImage, TestWanImageToVideo, TestVAEDecode)}
