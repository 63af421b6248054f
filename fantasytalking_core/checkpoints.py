"""Every weight file the project loads, detected by its keys, with errors a user can act on.

Formats:
- Wan2.1 DiT: single safetensors files (fp32, fp16, bf16, fp8_e4m3fn/e5m2, ComfyUI "fp8 scaled" with
  per-weight ``scale_weight``), with or without a ``model.diffusion_model.`` prefix, and the
  official sharded folders (``diffusion_pytorch_model.safetensors.index.json``).
- FantasyTalking audio weights: the released ``fantasytalking_model.ckpt`` (a torch pickle, read
  with ``weights_only=True`` only, so a file that would run code is refused), its official
  safetensors layout (``proj_model.*``, ``audio_processor.*``), the flat community repackaging
  (``proj_model.*``, ``blocks.N.cross_attn.k_proj.weight``) and our own adapter files.
- Our adapter file: safetensors, keys prefixed by module (``audio.``, ``identity.``, ``motion.``,
  the names of `adapters.registry`), a metadata header naming the format, each module's version
  and config, and extra JSON (such as motion normalisation constants) that must travel with the weights.

Every weight file is read here (`open_state`, `read_state_dict`: safetensors, or a torch pickle
with ``weights_only=True``) and every module is loaded by `load_strict` (no key missing, none
left over, every shape right, or an error naming the file). The key-name tables of the encoders'
layouts (T5, CLIP, wav2vec2) are in `keymaps.py` beside this module. docs/formats.md lists the formats.
"""

from __future__ import annotations

import json
import math
import os
import pickle
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Iterable

import torch
import torch.nn as nn

from .adapters.audio import AudioAdapter, AudioAdapterConfig
from .adapters.registry import ADAPTERS, adapter_spec
from .wan.config import WanConfig
from .wan.model import WanModel

ADAPTER_FORMAT = "fantasytalking-adapters"
ADAPTER_FORMAT_VERSION = "1"
WAN_PREFIXES = ("model.diffusion_model.", "diffusion_model.", "model.")
SCALE_SUFFIXES = (".scale_weight", ".weight_scale", ".scale_input", ".input_scale", ".comfy_quant")
FP8 = {"F8_E4M3": torch.float8_e4m3fn, "F8_E5M2": torch.float8_e5m2}
WHERE_WAN = (
    "Use a Wan2.1-I2V-14B-480P or -720P single file (for example wan2.1_i2v_480p_14B_bf16.safetensors "
    "from Comfy-Org/Wan_2.1_ComfyUI_repackaged on Hugging Face) in ComfyUI/models/diffusion_models/, "
    "or the Wan-AI/Wan2.1-I2V-14B-480P folder."
)
WHERE_FT = (
    "Use fantasytalking_model.ckpt from the acvlab/FantasyTalking repository on Hugging Face, in "
    "ComfyUI/models/model_patches/ (diffusion_models/ is also searched)."
)


class CheckpointError(ValueError):
    """A weight file is missing, unsafe, or not what was expected; the message says what to do."""


# -- reading -------------------------------------------------------------------------------------
@dataclass
class StateSource:
    """Tensors of one checkpoint, read lazily from safetensors or held from a (safe) pickle."""

    path: Path
    shapes: dict[str, tuple[int, ...]]
    dtypes: dict[str, str]
    metadata: dict[str, str] = field(default_factory=dict)
    _files: dict[str, Path] = field(default_factory=dict)
    _tensors: dict[str, torch.Tensor] | None = None

    def keys(self) -> list[str]:
        return list(self.shapes)

    def get(self, key: str) -> torch.Tensor:
        if self._tensors is not None:
            return self._tensors[key]
        from safetensors import safe_open

        with safe_open(str(self._files[key]), framework="pt", device="cpu") as f:
            return f.get_tensor(key)

    def tensors(self) -> dict[str, torch.Tensor]:
        """Every tensor, read now."""
        return {k: self.get(k) for k in self.shapes}

    def num_params(self) -> int:
        return sum(math.prod(s) for k, s in self.shapes.items() if not k.endswith(SCALE_SUFFIXES) and k != "scaled_fp8")


def _read_safetensors_header(path: Path) -> tuple[dict, dict]:
    try:
        with open(path, "rb") as f:
            n = int.from_bytes(f.read(8), "little")
            if n <= 0 or n > 200_000_000:
                raise ValueError(f"header length {n}")
            header = json.loads(f.read(n))
    except (OSError, ValueError) as err:
        raise CheckpointError(f"{path} is not a readable safetensors file ({err}); it may be truncated: download it again") from err
    meta = header.pop("__metadata__", None) or {}
    return header, meta


def _torch_load_safely(path: Path) -> dict:
    try:
        return torch.load(str(path), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        if "Weights only load failed" in str(err):
            raise CheckpointError(
                f"refused to load {path}: it is a pickle that contains Python objects other than tensors, "
                f"so reading it could run code. Nothing in it was executed. Use the official file or a "
                f"safetensors version of it ({err.__class__.__name__}: {str(err).splitlines()[0][:200]})"
            ) from err
        raise CheckpointError(f"{path} could not be read as a torch checkpoint ({err}); it may be truncated or "
                              "another kind of file: download it again") from err
    except Exception as err:  # truncated or another file type: zip, struct, EOF errors by torch version
        raise CheckpointError(f"{path} could not be read as a torch checkpoint ({err.__class__.__name__}: {err}); it "
                              "may be truncated or another kind of file: download it again") from err


def _flatten(obj, prefix: str = "", out: dict | None = None) -> dict[str, torch.Tensor]:
    out = {} if out is None else out
    if isinstance(obj, torch.Tensor):
        out[prefix[:-1]] = obj
    elif isinstance(obj, dict):
        for k, v in obj.items():
            _flatten(v, f"{prefix}{k}.", out)
    return out


def open_state(path: str | os.PathLike) -> StateSource:
    """Open a checkpoint file or sharded folder without loading its tensors (safetensors)."""
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"checkpoint {path} does not exist")
    if path.is_dir():
        index = sorted(path.glob("*.safetensors.index.json"))
        shards = sorted(path.glob("*.safetensors"))
        if not index and len(shards) != 1:
            raise CheckpointError(f"folder {path} has no *.safetensors.index.json and {len(shards)} safetensors files")
        path = index[0] if index else shards[0]
    if path.name.endswith(".index.json"):
        weight_map = json.loads(path.read_text())["weight_map"]
        shapes, dtypes, files = {}, {}, {}
        for shard in sorted(set(weight_map.values())):
            header, _ = _read_safetensors_header(path.parent / shard)
            for k, v in header.items():
                shapes[k], dtypes[k], files[k] = tuple(v["shape"]), v["dtype"], path.parent / shard
        return StateSource(path, shapes, dtypes, {}, files)
    if path.suffix in (".safetensors", ".sft"):
        header, meta = _read_safetensors_header(path)
        shapes = {k: tuple(v["shape"]) for k, v in header.items()}
        return StateSource(path, shapes, {k: v["dtype"] for k, v in header.items()}, meta, {k: path for k in header})
    if path.suffix in (".ckpt", ".pt", ".pth", ".bin", ".model"):
        obj = _torch_load_safely(path)
        if isinstance(obj, dict) and set(obj) <= {"state_dict", "module", "model"} and obj:
            obj = next(iter(obj.values()))
        tensors = _flatten(obj)
        if not tensors:
            raise CheckpointError(f"{path} holds no tensors")
        return StateSource(path, {k: tuple(v.shape) for k, v in tensors.items()},
                           {k: str(v.dtype).replace("torch.", "") for k, v in tensors.items()}, {}, {}, tensors)
    raise CheckpointError(f"{path}: unknown file type {path.suffix!r}; expected .safetensors, .ckpt, .pt, .pth, .bin "
                          "or .model")


def read_state_dict(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """Every tensor of a checkpoint file or sharded folder, on the CPU (see `open_state`)."""
    return open_state(path).tensors()


def check_fit(module: nn.Module, shapes: dict[str, tuple[int, ...]], path: str | os.PathLike, *,
              optional: Iterable[str] = (), hint: str = "") -> None:
    """Raise a CheckpointError naming the file and the first offending keys unless `shapes` (key ->
    shape, from a file header or a state dict) fits `module` exactly: no key missing (except those
    in `optional`), none left over, every shape equal. `hint` says where to get the right file."""
    expected = module.state_dict()
    optional = set(optional)
    missing = sorted(k for k in expected if k not in shapes and k not in optional)
    extra = sorted(set(shapes) - set(expected))
    bad = [f"{k} {tuple(shapes[k])} != {tuple(expected[k].shape)}" for k in expected
           if k in shapes and tuple(shapes[k]) != tuple(expected[k].shape)]
    if missing or extra or bad:
        more = lambda items, n: f"{items[:n]}{' ...' if len(items) > n else ''}"  # noqa: E731
        raise CheckpointError(
            f"{path}: weights do not fit {type(module).__name__}: missing {more(missing, 4)}, unexpected "
            f"{more(extra, 4)}, wrong shape {more(bad, 3)}. " + (hint or "The file may be truncated or made for "
                                                                       "another model."))


def load_strict(module: nn.Module, state: dict[str, torch.Tensor], path: str | os.PathLike, *,
                optional: Iterable[str] = (), assign: bool = False, hint: str = "") -> None:
    """The one way a module gets its weights: `check_fit`, then `load_state_dict`. Tensors are cast
    to the module's dtype for each key; with `assign=True` (a module built on the meta device) they
    are taken as they are, dtype included. Keys in `optional` that `state` lacks keep their values."""
    check_fit(module, {k: tuple(v.shape) for k, v in state.items()}, path, optional=optional, hint=hint)
    if not assign:
        expected = module.state_dict()
        state = {k: v.to(expected[k].dtype) for k, v in state.items()}
    module.load_state_dict(state, strict=not (set(optional) - set(state)), assign=assign)


# -- detection -----------------------------------------------------------------------------------
@dataclass
class Detected:
    kind: str  # wan_dit | fantasytalking_official | fantasytalking_flat | fantasytalking_adapters
    prefix: str = ""
    notes: list[str] = field(default_factory=list)


def detect(src: StateSource) -> Detected:
    keys = set(src.keys())
    if src.metadata.get("format") == ADAPTER_FORMAT:
        return Detected("fantasytalking_adapters")
    for prefix in ("",) + WAN_PREFIXES:
        if f"{prefix}patch_embedding.weight" in keys and f"{prefix}blocks.0.self_attn.q.weight" in keys:
            notes = []
            if f"{prefix}img_emb.emb_pos" in keys:
                raise CheckpointError(f"{src.path} is a Wan2.1 FLF2V model, which FantasyTalking does not use. {WHERE_WAN}")
            if "scaled_fp8" in keys or any(k.endswith((".scale_weight", ".weight_scale")) for k in keys):
                notes.append("fp8 scaled: weights are multiplied by their per-tensor scales when loaded")
            return Detected("wan_dit", prefix, notes)
    if any(k.startswith("audio_processor.") for k in keys) and "proj_model.proj.weight" in keys:
        return Detected("fantasytalking_official")
    if "proj_model.proj.weight" in keys and any(re.match(r"blocks\.\d+\.cross_attn\.k_proj\.weight$", k) for k in keys):
        return Detected("fantasytalking_flat")
    if any(k.startswith(("condition_embedder.", "blocks.0.attn1.")) for k in keys):
        raise CheckpointError(f"{src.path} is a diffusers-format Wan model; this loader reads Wan's original layout. {WHERE_WAN}")
    sample = ", ".join(sorted(keys)[:6])
    raise CheckpointError(
        f"{src.path} is neither a Wan2.1 DiT nor FantasyTalking weights (first keys: {sample}). {WHERE_WAN} {WHERE_FT}"
    )


def num_blocks(keys, prefix: str = "") -> int:
    found = {int(m.group(1)) for k in keys if (m := re.match(re.escape(prefix) + r"blocks\.(\d+)\.", k))}
    return max(found) + 1 if found else 0


def describe(path: str | os.PathLike) -> dict:
    """What ``python -m fantasytalking_core inspect`` prints."""
    src = open_state(path)
    det = detect(src)
    dtypes: dict[str, int] = {}
    for k, d in src.dtypes.items():
        if not k.endswith(SCALE_SUFFIXES) and k != "scaled_fp8":
            dtypes[d] = dtypes.get(d, 0) + 1
    info = {"file": str(src.path), "format": det.kind, "dtypes": dtypes, "parameters": src.num_params(), "notes": det.notes}
    if det.kind == "wan_dit":
        cfg = wan_config_from_state(src, det.prefix)
        info.update(blocks=cfg.num_layers, prefix=det.prefix, config=cfg.to_dict())
    else:
        info["blocks"] = num_blocks(_audio_state_keys(src, det), "audio_processor.")
    return info


# -- Wan DiT -------------------------------------------------------------------------------------
def wan_config_from_state(src: StateSource, prefix: str = "") -> WanConfig:
    """Infer the config from shapes; every Wan2.1 model uses head_dim 128 and text_len 512."""
    s = {k[len(prefix):]: v for k, v in src.shapes.items() if k.startswith(prefix)}
    dim, in_dim, *patch = s["patch_embedding.weight"]
    i2v = "img_emb.proj.1.weight" in s
    return WanConfig(
        model_type="i2v" if i2v else "t2v",
        dim=dim,
        ffn_dim=s["blocks.0.ffn.0.weight"][0],
        num_heads=max(dim // 128, 1),
        num_layers=num_blocks(s),
        in_dim=in_dim,
        out_dim=s["head.head.weight"][0] // math.prod(patch),
        text_dim=s["text_embedding.0.weight"][1],
        freq_dim=s["time_embedding.0.weight"][1],
        clip_dim=s["img_emb.proj.1.weight"][1] if i2v else 1280,
        patch_size=tuple(patch),
        qk_norm="blocks.0.self_attn.norm_q.weight" in s,
        cross_attn_norm="blocks.0.norm3.weight" in s,
    )


def wan_shapes(src: StateSource, prefix: str = "") -> dict[str, tuple[int, ...]]:
    """Model key (file prefix removed) -> shape, for a Wan file's tensors; fp8 scales left out."""
    return {k[len(prefix):]: v for k, v in src.shapes.items()
            if k.startswith(prefix) and not k.endswith(SCALE_SUFFIXES) and k != "scaled_fp8"}


def read_tensor(src: StateSource, key: str, dtype: torch.dtype) -> torch.Tensor:
    """One tensor in ``dtype``, fp8 weights multiplied by their per-tensor scale (ComfyUI's "fp8
    scaled" DiT and text-encoder files); a sharded loader reads a model tensor by tensor with it."""
    t = src.get(key)
    base = key[: -len(".weight")] if key.endswith(".weight") else None
    if t.dtype in FP8.values():
        t = t.to(torch.float32)
        for name in (".scale_weight", ".weight_scale"):
            if base is not None and base + name in src.shapes:
                t = t * src.get(base + name).to(torch.float32)
    return t.to(dtype)


def load_wan(path: str | os.PathLike, dtype: torch.dtype | None = None, device: str | torch.device = "cpu",
             config: WanConfig | None = None) -> "nn.Module":
    """Load a Wan2.1 DiT single file or sharded folder into our ``WanModel`` (strict)."""
    src = open_state(path)
    det = detect(src)
    if det.kind != "wan_dit":
        raise CheckpointError(f"{src.path} holds {det.kind.replace('_', ' ')} weights, not a Wan2.1 DiT. {WHERE_WAN}")
    cfg = config or wan_config_from_state(src, det.prefix)
    if dtype is None:
        stored = src.dtypes[det.prefix + "blocks.0.self_attn.q.weight"]
        dtype = torch.bfloat16 if stored in FP8 else {"F32": torch.float32, "F16": torch.float16}.get(stored, torch.bfloat16)
    with torch.device("meta"):
        model = WanModel(cfg)
    shapes = wan_shapes(src, det.prefix)
    hint = f"The file may be truncated or another model. {WHERE_WAN}"
    check_fit(model, shapes, src.path, hint=hint)  # from the header, before reading gigabytes
    state = {k: read_tensor(src, det.prefix + k, dtype) for k in shapes}
    load_strict(model, state, src.path, assign=True, hint=hint)
    return model.to(device)


# -- FantasyTalking adapters ---------------------------------------------------------------------
def _audio_state_keys(src: StateSource, det: Detected) -> list[str]:
    return list(_audio_state(src, det, load=False))


def _audio_state(src: StateSource, det: Detected, load: bool = True) -> dict:
    """Canonical keys of ``AudioAdapter`` -> tensors (or source keys when load=False)."""
    out = {}
    for key in src.keys():
        if det.kind == "fantasytalking_official" and key.startswith(("proj_model.", "audio_processor.")):
            name = key
        elif det.kind == "fantasytalking_flat":
            name = re.sub(r"^blocks\.(\d+)\.cross_attn\.", r"audio_processor.blocks.\1.cross_attn.processor.", key)
        elif det.kind == "fantasytalking_adapters" and key.startswith("audio."):
            name = key[len("audio."):]
        else:
            continue
        out[name] = src.get(key) if load else key
    return out


def audio_config_from_state(state: dict) -> AudioAdapterConfig:
    proj = state["proj_model.proj.weight"]
    k0 = state["audio_processor.blocks.0.cross_attn.processor.k_proj.weight"]
    return AudioAdapterConfig(audio_dim=proj.shape[1], proj_dim=proj.shape[0], dim=k0.shape[0],
                              num_blocks=num_blocks(state, "audio_processor."))


def load_audio_adapter(path: str | os.PathLike, dtype: torch.dtype = torch.float32) -> AudioAdapter:
    """Load FantasyTalking audio weights from any supported format."""
    src = open_state(path)
    det = detect(src)
    if det.kind == "wan_dit":
        raise CheckpointError(f"{src.path} is a Wan2.1 DiT, not FantasyTalking weights; load it as the model. {WHERE_FT}")
    state = _audio_state(src, det)
    if "proj_model.proj.weight" not in state:
        raise CheckpointError(f"{src.path} carries no audio adapter (no proj_model.proj.weight). {WHERE_FT}")
    module = AudioAdapter(audio_config_from_state(state))
    load_strict(module, state, src.path)
    return module.to(dtype)


def save_adapters(path: str | os.PathLike, modules: dict[str, nn.Module], extra: dict | None = None,
                  overwrite: bool = False) -> Path:
    """Write our adapter file atomically; refuse to replace an existing file unless asked."""
    path = Path(path)
    tensors, described = {}, {}
    for name, module in modules.items():
        described[name] = {"version": adapter_spec(name).version, "config": asdict(module.cfg)}
        for k, v in module.state_dict().items():
            tensors[f"{name}.{k}"] = v.detach().to("cpu").contiguous()
    meta = {"format": ADAPTER_FORMAT, "format_version": ADAPTER_FORMAT_VERSION,
            "modules": json.dumps(described), "extra": json.dumps(extra or {})}
    return _write_safetensors(tensors, path, meta, overwrite)


def _write_safetensors(tensors: dict, path: Path, metadata: dict | None, overwrite: bool) -> Path:
    """Write to a temporary name and rename, so a crash never leaves a half-written file."""
    from safetensors.torch import save_file

    if path.exists() and not overwrite:
        raise FileExistsError(f"{path} already exists; choose another name or pass overwrite=True")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        save_file(tensors, str(tmp), metadata=metadata)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def load_adapters(path: str | os.PathLike) -> tuple[dict[str, nn.Module], dict]:
    """Load every module in an adapter file (any supported format) -> ``({name: module}, extra)``."""
    src = open_state(path)
    det = detect(src)
    if det.kind in ("fantasytalking_official", "fantasytalking_flat"):
        return {"audio": load_audio_adapter(path)}, {}
    if det.kind != "fantasytalking_adapters":
        raise CheckpointError(f"{src.path} is a Wan2.1 DiT, not adapter weights. {WHERE_FT}")
    if src.metadata.get("format_version") != ADAPTER_FORMAT_VERSION:
        raise CheckpointError(f"{src.path} has adapter format version {src.metadata.get('format_version')}; "
                              f"this version reads {ADAPTER_FORMAT_VERSION}: update ComfyUI-FantasyTalking")
    described = json.loads(src.metadata.get("modules", "{}"))
    modules = {}
    for name, info in described.items():
        if name not in ADAPTERS or info.get("version", 0) > ADAPTERS[name].version:
            raise CheckpointError(f"{src.path} carries a {name!r} module (version {info.get('version')}) that this "
                                  f"version cannot read: update ComfyUI-FantasyTalking")
        module = ADAPTERS[name].build(info["config"])
        state = {k[len(name) + 1:]: src.get(k) for k in src.keys() if k.startswith(name + ".")}
        load_strict(module, state, src.path)
        modules[name] = module
    return modules, json.loads(src.metadata.get("extra", "{}"))


def convert(src_path: str | os.PathLike, out_path: str | os.PathLike, layout: str = "adapters",
            overwrite: bool = False) -> Path:
    """Convert FantasyTalking audio weights (e.g. the official .ckpt) to safetensors.

    ``layout="adapters"`` writes our adapter file; ``"official"`` writes the official safetensors
    layout (``proj_model.*``, ``audio_processor.*``), which the official code also reads.
    """
    audio = load_audio_adapter(src_path)
    if layout == "adapters":
        return save_adapters(out_path, {"audio": audio}, overwrite=overwrite)
    if layout != "official":
        raise ValueError(f"layout must be 'adapters' or 'official', got {layout!r}")
    tensors = {k: v.contiguous() for k, v in audio.state_dict().items()}
    return _write_safetensors(tensors, Path(out_path), None, overwrite)
