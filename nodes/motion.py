"""Motion intensity: omega_l (face) and omega_b (body) from sliders or measured from frames."""

from __future__ import annotations

from fantasytalking_core.motion import from_sliders, measure_motion
from fantasytalking_core.motion_control import AMPLITUDE_RANGE, AUDIO_GUIDANCE_RANGE, AUDIO_SCALE_RANGE

from . import _host
from .contracts import MotionIntensity

CATEGORY = "FantasyTalking"


def _span(span: tuple[float, float]) -> str:
    return f"{span[0]:g}..{span[1]:g}"


class FantasyTalkingMotionIntensity:
    DESCRIPTION = ("Sets how much the face (omega_l) and the body (omega_b) move, 0..1 (0.5 is neutral, as in the "
                   "paper). Connect a video (IMAGE batch) to measure both from it instead, with the normalisation "
                   "stored in the adapter file when one is connected. With adapter weights that have a motion module "
                   "the values drive it; with the released fantasytalking_model.ckpt (audio only) they drive "
                   "training-free controls: omega_l the audio strength, omega_b the motion amplitude of the I2V "
                   "conditioning. FantasyTalking Apply's status output says which (docs/motion.md).")
    RETURN_TYPES = ("FANTASYTALKING_MOTION", "FLOAT", "FLOAT")
    RETURN_NAMES = ("motion", "omega_l", "omega_b")
    OUTPUT_TOOLTIPS = ("Motion intensities, for FantasyTalking Apply.", "Facial motion used.", "Body motion used.")
    FUNCTION = "intensity"
    CATEGORY = CATEGORY

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "omega_l": ("FLOAT", {"default": 0.5, "min": 0.0, "max": 1.0, "step": 0.01, "display": "slider",
                                      "tooltip": "Facial expression motion: 0 still, 0.5 neutral, 1 lively. Without a "
                                                 "motion module (the released weights): the audio strength, "
                                                 f"audio_scale x {_span(AUDIO_SCALE_RANGE)} and audio guidance "
                                                 f"(cfg_audio - 1) x {_span(AUDIO_GUIDANCE_RANGE)}; 0.5 changes "
                                                 "nothing."}),
                "omega_b": ("FLOAT", {"default": 0.5, "min": 0.0, "max": 1.0, "step": 0.01, "display": "slider",
                                      "tooltip": "Head and body motion: 0 still, 0.5 neutral, 1 lively. Without a "
                                                 "motion module (the released weights): the motion amplitude of the "
                                                 f"I2V conditioning, {_span(AMPLITUDE_RANGE)} (PainterI2V's formula); "
                                                 "0.5 changes nothing."}),
            },
            "optional": {
                "reference_video": ("IMAGE", {"tooltip": "Frames of a video to copy the motion intensity from "
                                                         "(overrides the sliders; with any weights, the measured "
                                                         "values act as the sliders would)."}),
                "fantasytalking_model": ("FANTASYTALKING_MODEL", {
                    "tooltip": "Adapter weights whose stored normalisation maps measured motion to 0..1."}),
            },
        }

    def intensity(self, omega_l: float = 0.5, omega_b: float = 0.5, reference_video=None, fantasytalking_model=None):
        if reference_video is None:
            m = from_sliders(omega_l, omega_b)
        else:
            if reference_video.shape[0] < 2:
                raise ValueError("reference_video has 1 frame; motion is measured over time: give at least 2 frames "
                                 "(e.g. from a video loader), or disconnect it to use the sliders")
            _host.check_interrupt()
            norm = getattr(fantasytalking_model, "normalization", None)
            m = measure_motion(reference_video, normalization=norm, backend=_host.mediapipe_backend())
        return (MotionIntensity(m), m.omega_l, m.omega_b)
