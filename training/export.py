"""Trainable weights -> the files the nodes load.

- `fantasytalking_adapters.safetensors`: our adapter file (`checkpoints.save_adapters`): the audio,
  identity and motion modules, with `extra` holding the motion normalisation the dataset used
  (omega_l/omega_b sliders mean what they meant in training) and how the face embeddings were made;
- `wan_lora.safetensors` (trainable: lora): ComfyUI LoRA keys `diffusion_model.<module>.lora_A.weight`,
  `.lora_B.weight`, `.alpha`;
- `wan_dit.safetensors` (trainable: full): the DiT with Wan's own keys, for UNETLoader / `load_wan`.

`python -m training.export --run-dir RUN [--checkpoint DIR] --out FOLDER` exports any complete
checkpoint in one CPU process (no GPU, no torchrun); the trainer exports at the end of training.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from .config import TrainConfig
from .lora import lora_state
from .model import adapter_configs, wan_config

ADAPTER_FILE, LORA_FILE, DIT_FILE = "fantasytalking_adapters.safetensors", "wan_lora.safetensors", "wan_dit.safetensors"


def gather_trainable(model) -> dict[str, torch.Tensor]:
    """Collective: the full trainable state on every rank's CPU (FSDP shards gathered)."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

    return get_model_state_dict(model, options=StateDictOptions(full_state_dict=True, cpu_offload=True,
                                                                ignore_frozen_params=True))


def write_exports(state: dict[str, torch.Tensor], cfg: TrainConfig, dataset_info: dict, out_dir: str | Path,
                  step: int, overwrite: bool = True, dit_dtype: torch.dtype | None = None) -> list[Path]:
    """Write the export files of a trainable state (keys `audio.*`, `identity.*`, `motion.*`, `dit.*`).
    A fully trained DiT is written in `dit_dtype` (default: bf16 after bf16 training, else fp32)."""
    from fantasytalking_core.adapters.registry import ADAPTERS
    from fantasytalking_core.checkpoints import load_strict, save_adapters

    from .store import write_safetensors

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    modules = {}
    for name, acfg in adapter_configs(cfg.model, wan_config(cfg.model)).items():
        module = ADAPTERS[name].build(acfg)
        load_strict(module, {k[len(name) + 1:]: v for k, v in state.items() if k.startswith(name + ".")},
                    f"the checkpoint's {name} adapter")
        modules[name] = module
    extra = {"motion_normalization": dataset_info["motion_normalization"],
             "face_embedding": dataset_info.get("face_embedding", ""),
             "training": {"step": step, "trainable": cfg.model.trainable, "run_dir": cfg.run_dir,
                          "stages": [s.name for s in cfg.stages]}}
    written = [save_adapters(out / ADAPTER_FILE, modules, extra=extra, overwrite=overwrite)]
    if cfg.model.trainable == "lora":
        written.append(write_safetensors(out / LORA_FILE, lora_state(state, cfg.model.lora_alpha),
                                         {"format": "comfyui-lora", "base": "wan2.1_i2v"}, overwrite))
    if cfg.model.trainable == "full":
        dit_dtype = dit_dtype or (torch.bfloat16 if cfg.model.precision == "bf16" else torch.float32)
        dit = {k[len("dit."):]: v.to(dit_dtype).contiguous() for k, v in state.items() if k.startswith("dit.")}
        written.append(write_safetensors(out / DIT_FILE, dit, None, overwrite))
    return written


def read_checkpoint(path: Path) -> dict[str, torch.Tensor]:
    """A checkpoint's trainable weights as full tensors, in one process (no process group needed)."""
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.metadata import TensorStorageMetadata

    meta = dcp.FileSystemReader(str(path)).read_metadata()
    state = {k: torch.empty(m.size, dtype=m.properties.dtype) for k, m in meta.state_dict_metadata.items()
             if k.startswith("model.") and isinstance(m, TensorStorageMetadata)}
    nested = {"model": {k[len("model."):]: v for k, v in state.items()}}
    dcp.load(nested, checkpoint_id=str(path), no_dist=True)
    return nested["model"]


def main(argv: list[str] | None = None) -> int:
    from . import checkpointing

    ap = argparse.ArgumentParser(prog="python -m training.export", description=__doc__.split("\n\n")[0])
    ap.add_argument("--run-dir", required=True, help="the training run folder (holds config.yaml and checkpoints/)")
    ap.add_argument("--checkpoint", help="a checkpoint folder (default: the latest complete one of the run)")
    ap.add_argument("--out", required=True, help="output folder for the exported files")
    ap.add_argument("--overwrite", action="store_true", help="replace existing export files")
    args = ap.parse_args(argv)
    run = Path(args.run_dir).expanduser()
    if not (run / "config.yaml").is_file():
        raise SystemExit(f"error: {run} has no config.yaml; give the folder a training run wrote (its run_dir)")
    cfg = TrainConfig.load(run / "config.yaml")
    ckpt = Path(args.checkpoint).expanduser() if args.checkpoint else checkpointing.latest(run / "checkpoints")
    if ckpt is None or not (ckpt / "train_state.json").is_file():
        raise SystemExit(f"error: no complete checkpoint {'at ' + str(ckpt) if ckpt else 'in ' + str(run / 'checkpoints')}")
    step = json.loads((ckpt / "train_state.json").read_text())["step"]
    info = json.loads((run / "dataset.json").read_text())  # the dataset's settings, copied at the start
    for path in write_exports(read_checkpoint(ckpt), cfg, info, args.out, step, overwrite=args.overwrite):
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
