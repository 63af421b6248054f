"""FantasyTalking adapters and the one function that attaches them to a Wan-layout DiT."""

from .attach import Attachment, attach_adapters
from .audio import AudioAdapterConfig, AudioAttention, AudioCondition, AudioProjModel, FantasyTalkingAudio

__all__ = [
    "Attachment",
    "attach_adapters",
    "AudioAdapterConfig",
    "AudioAttention",
    "AudioCondition",
    "AudioProjModel",
    "FantasyTalkingAudio",
]
