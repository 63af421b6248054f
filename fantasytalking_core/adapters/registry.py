"""The adapters FantasyTalking adds to a Wan DiT, by name: module class, config class, the file
version this code writes (and the newest it reads), where the adapter acts on the DiT and the
keyword of its scale. The attachment, adapter files, the node layer's model value and the trainer
all enumerate adapters from here, so adding one is one entry."""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any

import torch.nn as nn

from .audio import AudioAdapter, AudioAdapterConfig
from .identity import IdentityAdapter, IdentityAdapterConfig
from .motion import MotionAdapter, MotionAdapterConfig

_SET_BY_DIT = ("dim", "num_blocks")  # config fields that follow the DiT, never set by hand
# Where an adapter acts: "cross_attn" adds ``module.attend(block, q, condition, heads)`` to every
# block's text + image attention before ``o``; "time" adds ``module.embed(condition)`` to the
# timestep embedding.
SITES = ("cross_attn", "time")


@dataclass(frozen=True)
class AdapterSpec:
    name: str
    module: type[nn.Module]
    config: type
    version: int
    site: str  # one of SITES
    scale_key: str  # the keyword of its scale in Attachment.conditioned (its condition's is `name`)

    def __post_init__(self) -> None:
        if self.site not in SITES:
            raise ValueError(f"{self.name} adapter: site must be one of {SITES}, got {self.site!r}")

    def make_config(self, values: Any) -> Any:
        """A config object from itself or a dict of its fields (unknown fields are an error)."""
        if isinstance(values, self.config):
            return values
        known = {f.name for f in fields(self.config)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"{self.name} adapter: unknown settings {unknown}; known: {sorted(known)}")
        return self.config(**values)

    def build(self, config: Any) -> nn.Module:
        return self.module(self.make_config(config))

    def config_for_wan(self, wan_cfg: Any, changes: dict | None = None) -> Any:
        """The config sized for the DiT `wan_cfg`, with `changes` to the fields the DiT does not fix."""
        base = asdict(self.config.for_wan(wan_cfg))
        changes = dict(changes or {})
        fixed = set(_SET_BY_DIT) & set(base)
        bad = sorted((set(changes) - set(base)) | (fixed & set(changes)))
        if bad:
            raise ValueError(f"model.{self.name}: unknown or fixed settings {bad}; settable: {sorted(set(base) - fixed)}")
        return self.config(**{**base, **changes})


ADAPTERS: dict[str, AdapterSpec] = {
    "audio": AdapterSpec("audio", AudioAdapter, AudioAdapterConfig, 1, "cross_attn", "audio_scale"),
    "identity": AdapterSpec("identity", IdentityAdapter, IdentityAdapterConfig, 1, "cross_attn", "id_scale"),
    "motion": AdapterSpec("motion", MotionAdapter, MotionAdapterConfig, 1, "time", "motion_scale"),
}
ADAPTER_NAMES = tuple(ADAPTERS)


def adapter_spec(name: str) -> AdapterSpec:
    if name not in ADAPTERS:
        raise ValueError(f"unknown adapter module {name!r}; known: {list(ADAPTER_NAMES)}")
    return ADAPTERS[name]
