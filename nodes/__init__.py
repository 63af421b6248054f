"""FantasyTalking nodes for ComfyUI: thin adapters over fantasytalking_core (V1 node classes)."""

from .apply import FantasyTalkingApply
from .audio import FantasyTalkingAudioEncode
from .dub import FantasyTalkingDubMask, FantasyTalkingDubSampler
from .face import FantasyTalkingFaceEmbed
from .lipmask import FantasyTalkingLipMask
from .loaders import FantasyTalkingModelLoader, FantasyTalkingWav2VecLoader
from .long_video import FantasyTalkingLongVideoSampler
from .motion import FantasyTalkingMotionIntensity
from .sampling import FantasyTalkingGuider, FantasyTalkingSampler
from .video_file import FantasyTalkingDubToFile, FantasyTalkingLongVideoToFile
from .speakers import FantasyTalkingSpeakerRegions, FantasyTalkingSpeakers

NODE_CLASS_MAPPINGS = {cls.__name__: cls for cls in (
    FantasyTalkingModelLoader, FantasyTalkingWav2VecLoader, FantasyTalkingAudioEncode, FantasyTalkingFaceEmbed,
    FantasyTalkingMotionIntensity, FantasyTalkingLipMask, FantasyTalkingApply, FantasyTalkingGuider,
    FantasyTalkingSampler, FantasyTalkingLongVideoSampler, FantasyTalkingDubMask, FantasyTalkingDubSampler,
    FantasyTalkingLongVideoToFile, FantasyTalkingDubToFile,
    FantasyTalkingSpeakerRegions, FantasyTalkingSpeakers,
)}

NODE_DISPLAY_NAME_MAPPINGS = {
    "FantasyTalkingModelLoader": "FantasyTalking Model Loader",
    "FantasyTalkingWav2VecLoader": "FantasyTalking Wav2Vec Loader",
    "FantasyTalkingAudioEncode": "FantasyTalking Audio Encode",
    "FantasyTalkingFaceEmbed": "FantasyTalking Face Embed",
    "FantasyTalkingMotionIntensity": "FantasyTalking Motion Intensity",
    "FantasyTalkingLipMask": "FantasyTalking Lip Mask",
    "FantasyTalkingApply": "FantasyTalking Apply",
    "FantasyTalkingGuider": "FantasyTalking Guider",
    "FantasyTalkingSampler": "FantasyTalking Sampler",
    "FantasyTalkingLongVideoSampler": "FantasyTalking Long Video Sampler",
    "FantasyTalkingDubMask": "FantasyTalking Dub Mask",
    "FantasyTalkingDubSampler": "FantasyTalking Dub Sampler",
    "FantasyTalkingLongVideoToFile": "FantasyTalking Long Video Sampler (to file)",
    "FantasyTalkingDubToFile": "FantasyTalking Dub Sampler (to file)",
    "FantasyTalkingSpeakerRegions": "FantasyTalking Speaker Regions",
    "FantasyTalkingSpeakers": "FantasyTalking Speakers",
}

__all__ = ["NODE_CLASS_MAPPINGS", "NODE_DISPLAY_NAME_MAPPINGS"]
