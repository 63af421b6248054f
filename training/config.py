"""Training configuration: typed dataclasses with named presets, read from YAML.

A YAML file mirrors `TrainConfig` section by section; unknown keys are errors that name the key
and the keys that exist, so a typo never silently falls back to a default. `--set a.b=value` on the
command line overrides single values (the value is parsed as YAML: `--set optim.lr=1e-3`).
"""

from __future__ import annotations

import dataclasses
import typing
import warnings
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any

import yaml

from fantasytalking_core.adapters.audio import AUDIO_MODES, OLD_AUDIO_MODES, audio_mode
from fantasytalking_core.adapters.registry import ADAPTER_NAMES
from fantasytalking_core.frames import check_frames

TRAINABLE = ("adapters", "lora", "full")
PRECISIONS = ("fp32", "bf16")
# Prepare keys renamed when "clip" came to mean only CLIP (a training video piece is a "piece"):
# old -> new. Old --set lines and datasets prepared before still work.
RENAMED_PREPARE_KEYS = {"clip_stride": "piece_stride", "max_clips_per_video": "max_pieces_per_video"}


def renamed_prepare_keys(values: dict, source: str | None = None) -> dict:
    """``values`` with old PrepareConfig keys under their new names; with a ``source`` (what the
    user wrote), a FutureWarning names the new key."""
    out = {}
    for key, value in values.items():
        new = RENAMED_PREPARE_KEYS.get(key)
        if new is not None and source is not None:
            warnings.warn(f"{source}: {key!r} is now called {new!r} (the old name still works and will be removed)",
                          FutureWarning, stacklevel=2)
        out[new or key] = value
    return out


@dataclass(frozen=True)
class PrepareConfig:
    """How `python -m training.prepare` cuts source videos into training pieces and filters them.
    Every field but `motion_normalization` is fixed for a dataset: a re-run with other values is
    refused."""

    fps: float = 23.0
    num_frames: int = 81  # 4k+1 (Wan's VAE packs 4 frames per latent after the first)
    piece_stride: int | None = None  # frames between piece starts; None = num_frames (no overlap)
    max_pieces_per_video: int | None = None
    min_seconds: float | None = None  # shortest video kept; None: one piece (num_frames / fps)
    size: int = 512  # longest edge of the training frames (multiple of 16), as inference
    analysis_size: int = 512  # longest edge of the frames MediaPipe analyses
    face_confidence: float = 0.9  # a face at this detector confidence in the reference frame
    max_faces: int = 1  # more confident faces than this in the reference frame: rejected
    min_face_frames: float = 0.9  # fraction of frames in which face mesh must find the face
    sync: str = "energy"  # energy (lip-motion / audio-energy correlation proxy) | syncnet (--syncnet FILE) | none
    sync_min_score: float = 0.3  # energy proxy: the correlation
    syncnet_min_confidence: float = 3.0  # syncnet: Sync-C
    sync_max_offset: int = 3  # frames
    sync_min_lip_motion: float = 0.01  # std of the inner-lip gap, in eye-corner distances
    lip_dilation: int = 0  # pixels (at `size`) to grow the lip masks by
    face_crop_size: int = 224
    face_embedding: str = "arcface"  # arcface (an insightface pack) | fallback (tests and demos only)
    store_dtype: str = "fp32"  # fp32 | bf16 | fp16 for the stored latents and embeddings
    motion_normalization: str = "default"  # default | fit (percentiles of this dataset's raw values)

    def __post_init__(self) -> None:
        check_frames(self.num_frames)
        if self.size < 16 or self.size % 16:
            raise ValueError(f"size must be a multiple of 16, got {self.size}")
        if self.piece_stride is not None and self.piece_stride < 1:
            raise ValueError(f"piece_stride must be >= 1, got {self.piece_stride}")
        if not 0.0 < self.face_confidence <= 1.0 or not 0.0 <= self.min_face_frames <= 1.0:
            raise ValueError(f"face_confidence must be in (0, 1] and min_face_frames in [0, 1], got "
                             f"{self.face_confidence}, {self.min_face_frames}")
        for name, allowed in (("sync", ("energy", "syncnet", "none")), ("face_embedding", ("arcface", "fallback")),
                              ("store_dtype", ("fp32", "bf16", "fp16")), ("motion_normalization", ("default", "fit"))):
            if getattr(self, name) not in allowed:
                raise ValueError(f"{name} must be one of {allowed}, got {getattr(self, name)!r}")

    @property
    def stride(self) -> int:
        return self.piece_stride or self.num_frames

    @property
    def seconds(self) -> float:
        """Length of one piece."""
        return self.num_frames / self.fps

    @property
    def shortest(self) -> float:
        """The shortest video kept: `min_seconds`, and never shorter than one piece."""
        return max(self.min_seconds or 0.0, self.seconds)

    @classmethod
    def paper(cls) -> "PrepareConfig":
        return cls()

    @classmethod
    def tiny(cls) -> "PrepareConfig":
        """17-frame 128 px pieces, for the tiny model on CPU."""
        return cls(num_frames=17, size=128, analysis_size=256, lip_dilation=4, face_crop_size=112,
                   face_embedding="fallback")

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class ModelConfig:
    """The DiT, the adapters attached to it and which weights train."""

    wan: str = "tiny"  # "tiny" (random init from `seed`) or a Wan2.1 I2V single file / sharded folder
    seed: int = 0  # initialisation of the tiny DiT, of new adapters and of LoRA
    adapters: tuple[str, ...] = ADAPTER_NAMES
    init_adapters: str | None = None  # start from an adapter file or fantasytalking_model.ckpt
    # one dict per registry entry (adapters.registry): changes to that adapter's config
    audio: dict = field(default_factory=dict)  # AudioAdapterConfig fields, e.g. {proj_dim: 64}
    identity: dict = field(default_factory=dict)  # IdentityAdapterConfig fields
    motion: dict = field(default_factory=dict)  # MotionAdapterConfig fields
    trainable: str = "adapters"  # adapters | lora (adapters + LoRA on the DiT) | full
    lora_rank: int = 32
    lora_alpha: float = 32.0
    lora_targets: tuple[str, ...] = ("self_attn.q", "self_attn.k", "self_attn.v", "self_attn.o", "cross_attn.q",
                                     "cross_attn.k", "cross_attn.v", "cross_attn.o", "ffn.0", "ffn.2")
    audio_scale: float = 1.0  # lambda_1, weight of the audio attention
    id_scale: float = 0.5  # lambda_2, weight of the identity attention
    gradient_checkpointing: bool = True
    precision: str = "bf16"  # autocast dtype of the forward: bf16 | fp32
    frozen_dtype: str = "bf16"  # storage dtype of the frozen DiT weights: bf16 | fp32

    def __post_init__(self) -> None:
        if self.trainable not in TRAINABLE:
            raise ValueError(f"model.trainable must be one of {TRAINABLE}, got {self.trainable!r}")
        bad = [a for a in self.adapters if a not in ADAPTER_NAMES]
        if bad or not self.adapters:
            raise ValueError(f"model.adapters must be a non-empty subset of {ADAPTER_NAMES}, got {list(self.adapters)}")
        for name in ("precision", "frozen_dtype"):
            if getattr(self, name) not in PRECISIONS:
                raise ValueError(f"model.{name} must be one of {PRECISIONS}, got {getattr(self, name)!r}")
        if self.precision == "fp32" and self.frozen_dtype != "fp32":
            raise ValueError("model.precision fp32 needs model.frozen_dtype fp32 (a bf16 frozen DiT computes in "
                             "bf16); set both to fp32, or precision to bf16")
        if self.lora_rank < 1:
            raise ValueError(f"model.lora_rank must be >= 1, got {self.lora_rank}")


@dataclass(frozen=True)
class DataConfig:
    dataset: str = "outputs/datasets/tiny"  # a folder made by `python -m training.prepare`
    batch_size: int = 1  # pieces per rank per micro-step (pieces of one batch must share their shape)
    num_workers: int = 0  # DataLoader worker processes per rank

    def __post_init__(self) -> None:
        if self.batch_size < 1 or self.num_workers < 0:
            raise ValueError(f"data.batch_size must be >= 1 and data.num_workers >= 0, got {self.batch_size}, "
                             f"{self.num_workers}")


@dataclass(frozen=True)
class OptimConfig:
    lr: float = 1e-4
    betas: tuple[float, float] = (0.9, 0.999)
    weight_decay: float = 0.01
    eps: float = 1e-8
    warmup_steps: int = 500  # linear warm-up from 0 to lr, then constant
    grad_clip: float = 1.0  # max global gradient norm; 0 disables clipping
    grad_accum: int = 1  # micro-steps per optimizer step

    def __post_init__(self) -> None:
        if not self.lr > 0 or self.warmup_steps < 0 or self.grad_accum < 1 or self.grad_clip < 0:
            raise ValueError(f"optim needs lr > 0, warmup_steps >= 0, grad_accum >= 1, grad_clip >= 0; got "
                             f"{self.lr}, {self.warmup_steps}, {self.grad_accum}, {self.grad_clip}")


@dataclass(frozen=True)
class LossConfig:
    """Flow matching as Wan trains it (see losses.py) and the condition dropout of the paper."""

    shift: float = 5.0  # sigma = shift*u / (1 + (shift-1)*u), u ~ U(0, 1): the sampling schedule's shift
    eta: float = 0.2  # stage 2: the lip-masked loss is used when a uniform draw p > eta
    drop_image: float = 0.1  # reference image (CLIP tokens, first-frame latent, face identity) dropped
    drop_audio: float = 0.1  # audio attention switched off for the sample (as inference's no-audio pass)
    drop_prompt: float = 0.1  # prompt replaced by the empty prompt's embedding

    def __post_init__(self) -> None:
        for name in ("eta", "drop_image", "drop_audio", "drop_prompt"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"loss.{name} must be in [0, 1], got {getattr(self, name)}")
        if not self.shift > 0:
            raise ValueError(f"loss.shift must be > 0, got {self.shift}")


@dataclass(frozen=True)
class StageConfig:
    """One training stage: how many optimizer steps, global or frame-level audio, lip-masked loss."""

    name: str = "stage1"
    steps: int = 80_000
    audio: str = "global"  # global (every video token sees all the piece's audio) | frame (per-latent-frame windows)
    lip_mask_loss: bool = False

    def __post_init__(self) -> None:
        if self.audio in OLD_AUDIO_MODES:
            warnings.warn(f"stage {self.name!r}: audio {self.audio!r} is now called "
                          f"{OLD_AUDIO_MODES[self.audio]!r} (the old name still works and will be removed)",
                          FutureWarning, stacklevel=3)
        if self.audio not in AUDIO_MODES and self.audio not in OLD_AUDIO_MODES:
            raise ValueError(f"stage {self.name!r}: audio must be one of {AUDIO_MODES}, got {self.audio!r}")
        object.__setattr__(self, "audio", audio_mode(self.audio))
        if self.steps < 1:
            raise ValueError(f"stage {self.name!r}: steps must be >= 1, got {self.steps}")


@dataclass(frozen=True)
class CheckpointConfig:
    every: int = 1000  # optimizer steps between checkpoints (and one at the end)
    keep_last: int = 3

    def __post_init__(self) -> None:
        if self.every < 1 or self.keep_last < 1:
            raise ValueError(f"checkpoint.every and checkpoint.keep_last must be >= 1, got {self.every}, "
                             f"{self.keep_last}")


@dataclass(frozen=True)
class LogConfig:
    every: int = 10  # print a line every N steps (metrics.jsonl gets every step)
    tensorboard: bool = True  # also write TensorBoard events when the tensorboard package is installed


@dataclass(frozen=True)
class TrainConfig:
    run_dir: str = "outputs/runs/fantasytalking"
    seed: int = 0  # data order and every per-sample draw (noise, sigma, dropout, p) derive from it
    device: str = "auto"  # auto (cuda when available) | cpu | cuda
    model: ModelConfig = ModelConfig()
    data: DataConfig = DataConfig()
    optim: OptimConfig = OptimConfig()
    loss: LossConfig = LossConfig()
    stages: tuple[StageConfig, ...] = (StageConfig("stage1", 80_000, "global", False),
                                       StageConfig("stage2", 20_000, "frame", True))
    checkpoint: CheckpointConfig = CheckpointConfig()
    log: LogConfig = LogConfig()

    def __post_init__(self) -> None:
        if self.device not in ("auto", "cpu", "cuda"):
            raise ValueError(f"device must be 'auto', 'cpu' or 'cuda', got {self.device!r}")
        if not self.stages:
            raise ValueError("stages is empty; give at least one stage")

    @property
    def total_steps(self) -> int:
        return sum(s.steps for s in self.stages)

    def stage_at(self, step: int) -> tuple[int, StageConfig]:
        """(index, stage) that optimizer step `step` (0-based) belongs to."""
        end = 0
        for i, stage in enumerate(self.stages):
            end += stage.steps
            if step < end:
                return i, stage
        return len(self.stages) - 1, self.stages[-1]

    # -- presets -------------------------------------------------------------------------------
    @classmethod
    def paper(cls) -> "TrainConfig":
        """The paper's recipe: stage 1 global audio attention ~80k steps, stage 2 frame-level ~20k, lr 1e-4."""
        return cls()

    @classmethod
    def tiny(cls) -> "TrainConfig":
        """The tiny Wan preset trained from scratch on a tiny prepared dataset, on CPU, in minutes."""
        return cls(
            run_dir="outputs/runs/tiny", device="cpu",
            model=ModelConfig(wan="tiny", trainable="full", audio={"proj_dim": 64},
                              identity={"id_dim": 64, "heads": 2, "num_queries": 4, "depth": 1},
                              motion={"hidden": 64}, precision="fp32", frozen_dtype="fp32"),
            data=DataConfig(dataset="outputs/datasets/tiny"),
            optim=OptimConfig(lr=1e-3, warmup_steps=10),
            stages=(StageConfig("stage1", 60, "global", False), StageConfig("stage2", 20, "frame", True)),
            checkpoint=CheckpointConfig(every=20, keep_last=2), log=LogConfig(every=10))

    @classmethod
    def preset(cls, name: str) -> "TrainConfig":
        presets = {"paper": cls.paper, "tiny": cls.tiny}
        if name not in presets:
            raise ValueError(f"unknown training preset {name!r}; choose one of {sorted(presets)}")
        return presets[name]()

    # -- files ---------------------------------------------------------------------------------
    @classmethod
    def load(cls, path: str | Path, overrides: list[str] | None = None) -> "TrainConfig":
        """Read a YAML config (`preset: tiny` starts from a preset), then apply `a.b=value` overrides."""
        p = Path(path).expanduser()
        if not p.is_file():
            raise FileNotFoundError(f"config file not found: {p}; the shipped ones are in training/configs/")
        data = yaml.safe_load(p.read_text(encoding="utf-8")) or {}
        if not isinstance(data, dict):
            raise ValueError(f"{p} must hold a mapping of settings, got {type(data).__name__}")
        return cls.from_dict(data, overrides, source=str(p))

    @classmethod
    def from_dict(cls, data: dict, overrides: list[str] | None = None, source: str = "config") -> "TrainConfig":
        data = dict(data)
        base = cls.preset(data.pop("preset")).to_dict() if "preset" in data else cls().to_dict()
        merged = _merge(base, data, source)
        for item in overrides or []:
            key, sep, value = item.partition("=")
            if not sep or not key:
                raise ValueError(f"override {item!r} must look like section.key=value, e.g. optim.lr=1e-3")
            patch: Any = yaml.safe_load(value)
            for part in reversed(key.strip().split(".")):
                patch = {part: patch}
            merged = _merge(merged, patch, f"--set {item}")
        return _build(cls, merged, source)

    def to_dict(self) -> dict:
        return _plain(asdict(self))

    def save(self, path: str | Path) -> None:
        Path(path).write_text(yaml.safe_dump(self.to_dict(), sort_keys=False), encoding="utf-8")

    def with_(self, **changes) -> "TrainConfig":
        return replace(self, **changes)


def _plain(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def _merge(base: dict, patch: dict, source: str, where: str = "") -> dict:
    """`patch` over `base`; a key absent from `base` is an error (dict-valued fields take any key)."""
    out = dict(base)
    for key, value in patch.items():
        if key not in base:
            raise ValueError(f"{source}: unknown setting {where}{key!r}; known here: {sorted(base)}")
        if isinstance(base[key], dict) and isinstance(value, dict) and where + key not in _FREE_DICTS:
            out[key] = _merge(base[key], value, source, f"{where}{key}.")
        else:
            out[key] = value
    return out


_FREE_DICTS = {f"model.{name}" for name in ADAPTER_NAMES}  # each adapter's config changes: any key


def _build(cls: type, values: Any, source: str, where: str = "") -> Any:
    """Nested dict -> dataclass, converting lists to the declared tuples; errors name the setting."""
    hints = typing.get_type_hints(cls)
    kwargs = {}
    for f in fields(cls):
        if f.name not in values:
            continue
        kwargs[f.name] = _convert(hints[f.name], values[f.name], source, f"{where}{f.name}")
    try:
        return cls(**kwargs)
    except TypeError as err:
        raise ValueError(f"{source}: bad settings in {where.rstrip('.') or 'the top level'}: {err}") from err


def _convert(hint: Any, value: Any, source: str, name: str) -> Any:
    origin = typing.get_origin(hint)
    if dataclasses.is_dataclass(hint):
        if not isinstance(value, dict):
            raise ValueError(f"{source}: {name} must be a mapping, got {value!r}")
        return _build(hint, value, source, name + ".")
    if origin is tuple:
        args = typing.get_args(hint)
        if not isinstance(value, (list, tuple)):
            raise ValueError(f"{source}: {name} must be a list, got {value!r}")
        item = args[0]
        return tuple(_convert(item, v, source, f"{name}[{i}]") for i, v in enumerate(value))
    if hint is float and isinstance(value, str):  # YAML 1.1 reads 1e-4 (no dot) as a string
        try:
            return float(value)
        except ValueError:
            raise ValueError(f"{source}: {name} must be a number, got {value!r}") from None
    if hint is float and isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    if hint is int and isinstance(value, float) and value.is_integer():
        return int(value)
    return value
