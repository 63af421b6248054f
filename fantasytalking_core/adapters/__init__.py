"""FantasyTalking adapters and the one function that attaches them to a Wan-layout DiT."""

from .attach import Attachment, attach_adapters
from .audio import AudioAdapterConfig, AudioAttention, AudioCondition, AudioProjModel, AudioAdapter
from .identity import IdentityAdapter, IdentityAdapterConfig
from .motion import MotionAdapter, MotionAdapterConfig

__all__ = [
    "Attachment",
    "attach_adapters",
    "AudioAdapterConfig",
    "AudioAttention",
    "AudioCondition",
    "AudioProjModel",
    "AudioAdapter",
    "IdentityAdapter",
    "IdentityAdapterConfig",
    "MotionAdapter",
    "MotionAdapterConfig",
]
