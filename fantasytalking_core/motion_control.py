"""Training-free motion controls: what the omega_l / omega_b sliders drive when the adapter weights
carry no learned motion module (the released ``fantasytalking_model.ckpt`` holds the audio adapter
alone). docs/motion.md explains the choices and what is not measured yet.

- **omega_l (face and lips)** -> the audio branch's strength: the audio attention weight
  ``audio_scale`` times ``0.8 + 0.4 * omega_l`` (0.8 .. 1.2) and the audio guidance's excess over 1,
  ``cfg_audio - 1``, times ``0.75 + 0.5 * omega_l`` (official 5 -> 4 .. 6). The official tips tie
  lip-sync strength to the audio guidance; both ranges stay close to the trained and official values.
- **omega_b (head and body)** -> the motion amplitude of Wan's I2V conditioning,
  ``a = 0.75 + 0.5 * omega_b`` (0.75 .. 1.25), applied per latent frame t after the known (held) ones
  (`amplify_motion`): with ``z0`` the last known latent frame and ``d = z_t - z0``,
  ``z_t' = clamp(z0 + a * (d - mean(d)) + mean(d), -6, 6)``, the mean over channels and pixels of
  frame t. The formula is PainterI2V's (github.com/princepainter/ComfyUI-PainterI2V, ``nodes.py``:
  it amplifies Wan I2V motion that step-distilled LoRAs flatten, a >= 1 there); a < 1 damps it.
  It acts in the latent space the DiT sees (Wan's normalised latents), so the command line and
  ComfyUI (whose conditioning holds raw VAE latents: see `amplify_concat`) compute the same thing.

Every control is exactly neutral at 0.5: the functions return their input objects untouched, so
0.5 gives the official result bit for bit. All three maps are linear, hence monotonic.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Any

import torch

NEUTRAL = 0.5
AUDIO_SCALE_RANGE = (0.8, 1.2)  # audio_scale gain at omega_l 0 and 1
AUDIO_GUIDANCE_RANGE = (0.75, 1.25)  # gain of cfg_audio - 1 at omega_l 0 and 1
AMPLITUDE_RANGE = (0.75, 1.25)  # motion amplitude at omega_b 0 and 1
LATENT_LIMIT = 6.0  # the clamp of the amplified latents (PainterI2V's)
# the ranges in words, for tooltips and help texts
TRAINING_FREE = (f"omega_l scales the audio strength (audio_scale x {AUDIO_SCALE_RANGE[0]:g}..{AUDIO_SCALE_RANGE[1]:g}, "
                 f"audio guidance cfg_audio - 1 x {AUDIO_GUIDANCE_RANGE[0]:g}..{AUDIO_GUIDANCE_RANGE[1]:g}), omega_b "
                 f"the motion amplitude of the I2V conditioning ({AMPLITUDE_RANGE[0]:g}..{AMPLITUDE_RANGE[1]:g})")


def _gain(omega: float, span: tuple[float, float]) -> float:
    """Linear from span[0] at 0 to span[1] at 1, exactly 1.0 at NEUTRAL."""
    return 1.0 if omega == NEUTRAL else span[0] + (span[1] - span[0]) * omega


def _check_omega(name: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) \
            or not 0.0 <= value <= 1.0:
        raise ValueError(f"{name} must be a number in [0, 1] (0.5 is neutral), got {value!r}")
    return float(value)


@dataclass(frozen=True)
class TrainingFreeControls:
    """The sliders' training-free meaning for one generation (see the module docstring)."""

    omega_l: float = NEUTRAL
    omega_b: float = NEUTRAL
    source: str = "sliders"  # where the omegas came from: "sliders" or "video" (a measured reference video)

    def __post_init__(self) -> None:
        _check_omega("omega_l (facial motion)", self.omega_l)
        _check_omega("omega_b (body motion)", self.omega_b)

    @property
    def audio_scale_gain(self) -> float:
        return _gain(self.omega_l, AUDIO_SCALE_RANGE)

    @property
    def audio_guidance_gain(self) -> float:
        return _gain(self.omega_l, AUDIO_GUIDANCE_RANGE)

    @property
    def amplitude(self) -> float:
        return _gain(self.omega_b, AMPLITUDE_RANGE)

    def audio_scale(self, scale: float) -> float:
        """The audio attention weight to use for the user's ``scale``."""
        return scale if self.omega_l == NEUTRAL else scale * self.audio_scale_gain

    def cfg_audio(self, cfg_audio: float) -> float:
        """The audio guidance scale to use for the user's ``cfg_audio`` (1 stays 1: guidance off)."""
        return cfg_audio if self.omega_l == NEUTRAL else 1.0 + (cfg_audio - 1.0) * self.audio_guidance_gain

    def guidance(self, guidance: Any) -> Any:
        """A `sampling.Guidance` (any dataclass with ``cfg_audio``) with the audio guidance scaled;
        the same object at neutral."""
        return guidance if self.omega_l == NEUTRAL else replace(guidance, cfg_audio=self.cfg_audio(guidance.cfg_audio))

    def describe(self, audio_scale: float = 1.0, cfg_audio: float | None = None) -> str:
        """What the sliders do, in one line (for the node's status output and the console)."""
        face = (f"omega_l {self.omega_l:.2f} neutral: audio strength as given" if self.omega_l == NEUTRAL else
                f"omega_l {self.omega_l:.2f} -> audio_scale {audio_scale:g} x {self.audio_scale_gain:.3f} = "
                f"{self.audio_scale(audio_scale):.3f}, audio guidance (cfg_audio - 1) x {self.audio_guidance_gain:.3f}"
                + (f" ({cfg_audio:g} -> {self.cfg_audio(cfg_audio):.3f})" if cfg_audio is not None else ""))
        body = (f"omega_b {self.omega_b:.2f} neutral: I2V conditioning untouched" if self.omega_b == NEUTRAL else
                f"omega_b {self.omega_b:.2f} -> I2V conditioning motion amplitude {self.amplitude:.3f}")
        origin = "measured on the reference video" if self.source == "video" else "from the sliders"
        return f"training-free controls ({origin}): {face}; {body}"


# ------------------------------------------------------------------------------------- amplitude


def amplify_motion(latents: torch.Tensor, amplitude: float, known: int = 1,
                   limit: float = LATENT_LIMIT) -> torch.Tensor:
    """Wan I2V conditioning latents ``[B, C, T, H, W]`` with the frames after the first ``known``
    moved ``amplitude`` times as far from the last known frame, around each frame's mean difference
    (the module docstring's formula). The known frames come back exactly; ``amplitude`` 1 or no frame
    to change returns ``latents`` itself (the same object, untouched)."""
    if not math.isfinite(amplitude) or amplitude < 0:
        raise ValueError(f"the motion amplitude must be a finite number >= 0, got {amplitude!r}")
    if latents.ndim != 5:
        raise ValueError(f"I2V conditioning latents must be [B, C, T, H, W], got {tuple(latents.shape)}")
    if amplitude == 1.0 or not 1 <= known < latents.shape[2]:
        return latents
    base = latents[:, :, known - 1:known].float()  # [B, C, 1, H, W]
    diff = latents[:, :, known:].float() - base  # [B, C, T - known, H, W]
    mean = diff.mean(dim=(1, 3, 4), keepdim=True)  # per batch row and frame
    moved = (base + amplitude * (diff - mean) + mean).clamp(-limit, limit)
    return torch.cat([latents[:, :, :known], moved.to(latents.dtype)], dim=2)


def known_frames(known_mask: torch.Tensor) -> int:
    """The leading latent frames fully known in a mask ``[..., T, H, W]`` (1 = known, Wan's I2V
    mask as the DiT gets it): the frames `amplify_motion` keeps."""
    per_frame = known_mask.reshape(-1, *known_mask.shape[-3:]).amin(dim=(0, 2, 3))  # [T]
    unknown = torch.nonzero(per_frame < 1).flatten()
    return int(unknown[0]) if unknown.numel() else int(per_frame.numel())


def amplify_i2v(y: torch.Tensor, amplitude: float) -> torch.Tensor:
    """Wan's I2V input ``y = [mask (4), latents (16)]`` ``[B, 20, T, H, W]`` (the pipeline's) with the
    latents' motion amplitude set; the known frames read from its own mask. ``y`` itself at 1."""
    if amplitude == 1.0:
        return y
    latents = amplify_motion(y[:, 4:], amplitude, known_frames(y[:, :4]))
    return y if latents is y[:, 4:] else torch.cat([y[:, :4], latents], dim=1)


def amplify_concat(image: torch.Tensor, concat_mask: torch.Tensor | None, amplitude: float,
                   to_model: Any = None, from_model: Any = None) -> torch.Tensor:
    """ComfyUI's ``concat_latent_image`` (raw VAE latents ``[B, 16, T, H, W]``) with the motion
    amplitude set in the DiT's latent space: ``to_model`` / ``from_model`` are the model's latent
    format maps (core's ``process_in`` / ``process_out``; None: the identity). ``concat_mask`` is core's
    (0 on known frames; None: the first frame known, as core's Wan model assumes). The known frames
    come back exactly (not through the round trip); ``image`` itself at amplitude 1."""
    if amplitude == 1.0:
        return image
    known = 1 if concat_mask is None else known_frames(1.0 - concat_mask.float())
    if not 1 <= known < image.shape[2]:
        return image
    z = image if to_model is None else to_model(image)
    moved = amplify_motion(z, amplitude, known)
    raw = moved if from_model is None else from_model(moved)
    return torch.cat([image[:, :, :known], raw[:, :, known:].to(image.dtype)], dim=2)
