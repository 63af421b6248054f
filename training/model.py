"""The model under training: Wan2.1 I2V DiT + FantasyTalking adapters, the trainable set, gradient
checkpointing and FSDP2 sharding.

`TalkingModel` owns the DiT (`dit.*`) and the adapters (`audio.*`, `identity.*`, `motion.*`), so
its state-dict keys are the checkpoint keys of each part: `audio.*` are exactly the keys of our
adapter file, `dit.*` those of a Wan single file (plus `lora_A`/`lora_B` when LoRA is on). The
adapters are attached once with `fantasytalking_core.adapters.attach_adapters` (the same mechanism
inference uses); a forward sets the per-sample conditions and scales and calls the DiT.

Everything that runs must run on every rank in every step (FSDP's collectives pair up across
ranks), so a dropped condition is a zero row in the adapter's output (`Kept`), never a skipped
module. Gradient checkpointing wraps each block's `forward` on the instance (`torch.utils.checkpoint`,
use_reentrant=False), so no module is renamed; the recomputation in backward (possibly on another
thread: autograd's device threads) re-enters the same conditions through `attachment.conditioned`.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn
import torch.utils.checkpoint

from fantasytalking_core.adapters import AudioAdapter, IdentityAdapter, MotionAdapter, attach_adapters
from fantasytalking_core.adapters.registry import ADAPTERS
from fantasytalking_core.frames import video_frames
from fantasytalking_core.wan import WanConfig, WanModel, init_random_

from .config import ModelConfig
from .lora import LoRALinear, add_lora, init_lora_

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}


@dataclass
class KeptCondition:
    """An adapter condition with a per-sample keep flag [B] (1 kept, 0 dropped)."""

    inner: Any
    keep: torch.Tensor

    @property
    def num_latent_frames(self) -> int | None:  # read by the attachment's frame-count check
        return getattr(self.inner, "num_latent_frames", None)


class Kept:
    """An adapter as the attachment sees it: its attention output times the sample's keep flag.

    The scale stays a non-zero constant (lambda), so the attachment always runs the adapter, also
    when every sample of a micro-batch is dropped.
    """

    def __init__(self, adapter: nn.Module):
        self.adapter, self.cfg = adapter, adapter.cfg

    def attend(self, index: int, q: torch.Tensor, cond: KeptCondition, num_heads: int) -> torch.Tensor:
        out = self.adapter.attend(index, q, cond.inner, num_heads)  # [B, Lq, dim]
        return out * cond.keep.to(device=out.device, dtype=out.dtype).view(-1, 1, 1)


class TalkingModel(nn.Module):
    """The DiT with the adapters of the registry given by name (``audio=``, ``identity=``,
    ``motion=``; absent = not trained). Each is a submodule under its name, so trainer state keys
    are ``audio.*``, ``identity.*``, ... as in the adapter file."""

    audio: AudioAdapter | None
    identity: IdentityAdapter | None
    motion: MotionAdapter | None

    def __init__(self, dit: nn.Module, audio_scale: float = 1.0, id_scale: float = 0.5,
                 **adapters: nn.Module | None):
        super().__init__()
        unknown = sorted(set(adapters) - set(ADAPTERS))
        if unknown:
            raise TypeError(f"unknown adapters {unknown}; known: {list(ADAPTERS)}")
        self.dit = dit
        for name in ADAPTERS:
            setattr(self, name, adapters.get(name))
        self.audio_scale, self.id_scale = audio_scale, id_scale
        # cross-attention adapters see the per-sample keep flag (audio and image dropout)
        att = attach_adapters(dit, **{n: Kept(m) if ADAPTERS[n].site == "cross_attn" else m
                                      for n, m in adapters.items() if m is not None})
        object.__setattr__(self, "attachment", att.apply())  # plain attributes, not submodules
        object.__setattr__(self, "conditions", {})

    def forward(self, x_t: torch.Tensor, timestep: torch.Tensor, context: torch.Tensor, clip_fea: torch.Tensor,
                y: torch.Tensor, audio_features: torch.Tensor, face_embedding: torch.Tensor, omegas: torch.Tensor,
                keep_audio: torch.Tensor, keep_image: torch.Tensor, audio_mode: str) -> torch.Tensor:
        """Velocity prediction [B, 16, T_lat, H, W] (float32).

        x_t [B, 16, T_lat, H, W] noisy latents; timestep [B] = 1000*sigma; context [B, L, text_dim];
        clip_fea [B, 257, clip_dim]; y [B, 20, T_lat, H, W]; audio_features [B, L_a, 768] (wav2vec2);
        face_embedding [B, 512]; omegas [B, 2]; keep_audio / keep_image [B] in {0, 1} switch the audio
        and identity attention per sample; audio_mode "global" (stage 1) or "frame" (stage 2).
        """
        num_frames = video_frames(x_t.shape[2])
        values: dict[str, Any] = {}
        if self.audio is not None:
            cond = self.audio.condition(audio_features, num_frames, mode=audio_mode)
            values.update(audio=KeptCondition(cond, keep_audio), audio_scale=self.audio_scale)
        if self.identity is not None:
            values.update(identity=KeptCondition(self.identity.condition(face_embedding), keep_image),
                          id_scale=self.id_scale)
        if self.motion is not None:
            values.update(motion=MotionAdapter.condition(omegas[:, 0], omegas[:, 1]))
        object.__setattr__(self, "conditions", values)  # for blocks recomputed during backward
        with self.attachment.conditioned(**values):
            return self.dit(x_t, timestep, context, clip_fea, y)

    def adapter_modules(self) -> dict[str, nn.Module]:
        return {n: m for n in ADAPTERS if (m := getattr(self, n)) is not None}


# ------------------------------------------------------------------------------------- building


def wan_config(cfg: ModelConfig) -> WanConfig:
    """The DiT's config: the tiny preset, or read from the checkpoint's shapes."""
    if cfg.wan == "tiny":
        return WanConfig.tiny()
    from fantasytalking_core.checkpoints import WHERE_WAN, detect, open_state, wan_config_from_state

    path = Path(cfg.wan).expanduser()
    if not path.exists():
        raise FileNotFoundError(f"model.wan: Wan2.1 I2V model not found: {path}. {WHERE_WAN}")
    src = open_state(path)
    det = detect(src)
    if det.kind != "wan_dit":
        raise ValueError(f"model.wan: {path} holds {det.kind} weights, not a Wan2.1 DiT. {WHERE_WAN}")
    wcfg = wan_config_from_state(src, det.prefix)
    if wcfg.model_type != "i2v":
        raise ValueError(f"model.wan: {path} is a Wan2.1 {wcfg.model_type.upper()} model; FantasyTalking trains "
                         "on the I2V model")
    return wcfg


def adapter_configs(cfg: ModelConfig, wcfg: WanConfig) -> dict[str, object]:
    """Adapter configs sized for the DiT, with the changes given in the training config."""
    return {name: ADAPTERS[name].config_for_wan(wcfg, getattr(cfg, name)) for name in cfg.adapters}


def build_model(cfg: ModelConfig) -> TalkingModel:
    """Build on the CPU; a DiT read from a file is built on the meta device instead.

    A meta DiT gets its weights from `materialize` after sharding, tensor by tensor, so no rank
    ever holds the whole 14B model. New adapters and LoRA are initialised from `cfg.seed`,
    identically on every rank.
    """
    wcfg = wan_config(cfg)
    if cfg.wan == "tiny":
        dit = init_random_(WanModel(wcfg), seed=cfg.seed)
    else:
        with torch.device("meta"):
            dit = WanModel(wcfg)
    dit.to(DTYPES[cfg.frozen_dtype] if cfg.trainable != "full" else torch.float32)
    if cfg.trainable == "lora":
        add_lora(dit, cfg.lora_targets, cfg.lora_rank, cfg.lora_alpha, cfg.seed)
    model = TalkingModel(dit, audio_scale=cfg.audio_scale, id_scale=cfg.id_scale, **new_adapters(cfg, wcfg))
    set_trainable(model, cfg.trainable)
    return model


def new_adapters(cfg: ModelConfig, wcfg: WanConfig) -> dict[str, nn.Module]:
    torch.manual_seed(cfg.seed)  # nn.Linear initialises from the global generator: same on every rank
    modules = {name: ADAPTERS[name].build(c) for name, c in adapter_configs(cfg, wcfg).items()}
    if cfg.init_adapters:
        from fantasytalking_core.checkpoints import load_adapters

        loaded, _ = load_adapters(Path(cfg.init_adapters).expanduser())
        for name, module in loaded.items():
            if name not in modules:
                continue
            if asdict(module.cfg) != asdict(modules[name].cfg):
                raise ValueError(f"model.init_adapters: its {name} adapter is {asdict(module.cfg)} but this run "
                                 f"builds {asdict(modules[name].cfg)}; match model.{name} to the file")
            modules[name] = module.float()
    return modules


def set_trainable(model: TalkingModel, trainable: str) -> None:
    for module in model.adapter_modules().values():
        module.requires_grad_(True)
        module.float()
    model.dit.requires_grad_(trainable == "full")
    if trainable == "lora":
        for m in model.dit.modules():
            if isinstance(m, LoRALinear):
                m.lora_A.float().requires_grad_(True)
                m.lora_B.float().requires_grad_(True)


def checkpoint_blocks(model: TalkingModel) -> None:
    """Gradient checkpointing per DiT block: activations inside a block are recomputed in backward,
    under the conditions of the forward that made them."""
    for block in model.dit.blocks:
        def forward(*args, _inner=block.forward):
            values = model.conditions

            def run(*a):
                with model.attachment.conditioned(**values):
                    return _inner(*a)

            return torch.utils.checkpoint.checkpoint(run, *args, use_reentrant=False)

        block.forward = forward


# ------------------------------------------------------------------------------------- FSDP2


def shard(model: TalkingModel, mesh, precision: str) -> None:
    """FSDP2: one group per DiT block, per audio-attention block, per identity key/value projection
    and the Q-Former; the rest (embeddings, head, audio projection, motion net) in the root group.

    Each group's module must be *called* for FSDP to gather it, so the groups are the modules the
    forward calls; `motion.kind_embedding` is read as an attribute, hence stays in the root group.
    bf16 precision gathers parameters in bf16 and reduces gradients in fp32.
    """
    from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard

    mp = (MixedPrecisionPolicy(param_dtype=torch.bfloat16, reduce_dtype=torch.float32, cast_forward_inputs=False)
          if precision == "bf16" else MixedPrecisionPolicy())
    groups: list[nn.Module] = list(model.dit.blocks)
    if model.audio is not None:
        groups += [model.audio.processor(i) for i in range(model.audio.cfg.num_blocks)]
    if model.identity is not None:
        groups += [model.identity.qformer] + [lin for b in model.identity.blocks for lin in (b.k_id, b.v_id)]
    for module in groups:
        fully_shard(module, mesh=mesh, mp_policy=mp)
    fully_shard(model, mesh=mesh, mp_policy=mp)


def fill_param(param: torch.Tensor, full: torch.Tensor) -> None:
    """Write a full-size tensor into a (possibly FSDP-sharded) parameter: each rank keeps its shard."""
    from torch.distributed.tensor import DTensor, distribute_tensor

    with torch.no_grad():
        if isinstance(param, DTensor):
            local = distribute_tensor(full.to(param.dtype), param.device_mesh, param.placements, src_data_rank=None)
            param.to_local().copy_(local.to_local())
        else:
            param.copy_(full.to(device=param.device, dtype=param.dtype))


def materialize(model: TalkingModel, cfg: ModelConfig, device: torch.device, cpu_init: dict[str, torch.Tensor]) -> None:
    """After sharding a meta DiT: allocate, read the DiT tensor by tensor from its file, put back the
    adapters' initial values (`cpu_init`, taken before sharding) and initialise LoRA."""
    model.to_empty(device=device)
    load_dit_weights(model.dit, cfg.wan)
    params = dict(model.named_parameters())
    for name, value in cpu_init.items():
        fill_param(params[name], value)
    if cfg.trainable == "lora":
        init_lora_(model.dit, cfg.seed, fill=fill_param)


def load_dit_weights(dit: nn.Module, path: str) -> None:
    """Each parameter of `dit` (sharded or not) from a Wan2.1 file/folder, one tensor at a time."""
    from fantasytalking_core.checkpoints import WHERE_WAN, check_fit, detect, open_state, read_tensor, wan_shapes

    src = open_state(Path(path).expanduser())
    det = detect(src)
    shapes = wan_shapes(src, det.prefix)
    lora = [n for n, _ in dit.named_parameters() if ".lora_" in n]
    check_fit(dit, shapes, f"model.wan {path}", optional=lora,
              hint=f"It does not match the Wan2.1 I2V layout. {WHERE_WAN}")  # global shapes, also when sharded
    for name, param in dit.named_parameters():
        if ".lora_" not in name:
            fill_param(param, read_tensor(src, det.prefix + name, torch.float32))
