"""FantasyTalking adapters and the one function that attaches them to a Wan-layout DiT."""

from .attach import Attachment, attach_adapters
from .audio import AudioAdapterConfig, AudioAttention, AudioCondition, AudioProjModel, FantasyTalkingAudio
from .identity import FantasyTalkingIdentity, IdentityAdapterConfig
from .motion import FantasyTalkingMotion, MotionAdapterConfig

__all__ = [
    "Attachment",
    "attach_adapters",
    "AudioAdapterConfig",
    "AudioAttention",
    "AudioCondition",
    "AudioProjModel",
    "FantasyTalkingAudio",
    "FantasyTalkingIdentity",
    "IdentityAdapterConfig",
    "FantasyTalkingMotion",
    "MotionAdapterConfig",
]
