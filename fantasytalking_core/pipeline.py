"""End-to-end FantasyTalking outside ComfyUI: portrait + audio (+ prompt) -> talking video.

The loop, top to bottom (`FantasyTalkingPipeline.generate`):
1. the portrait is resized as the official code does (`resize_official`: longest edge `size`, both
   sides rounded up to multiples of 16, the image stretched to them; `resize="crop"` centre-crops
   instead); the frame count comes from the audio length by the official formula
   `min(int(fps * seconds // 4) * 4 + 5, max_frames)`;
2. text (prompt and FantasyTalking's negative prompt, UMT5, trimmed to their true length) and the
   CLIP image tokens are encoded once;
3. the frames are cut into segments (`audio.plan_segments`); per segment: wav2vec2 features of the segment's
   audio -> `AudioAdapter.condition`, Wan's I2V conditioning `y = [mask, vae.encode(first
   frame + zeros)]` (an untiled encode, as the official code), flow-matching sampling (Euler by
   default, as `infer.py`) with text and audio guidance (`sampling.Guidance`; the passes of a step
   run as one batch, audio switched off per row), VAE decode (tiled by `load_components` to bound
   memory, as the official decode);
4. later segments start from the previous segment's frame where they overlap (its last frame by default)
   and are colour-matched to it (`match_color`); the segments are stitched with the overlap dropped.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
import torch.nn as nn
from einops import rearrange

from .adapters import AudioAdapter, attach_adapters
from .audio import SAMPLE_RATE, SegmentPlan, audio_for_segment, fit_to_frames, plan_frames, plan_segments, read_audio
from .encoders import ImageEncoder, TextEncoder, VideoVAE, pad_context
from .sampling import SOLVERS, Guidance, flow_sigmas, guided_model, initial_noise, run_passes_batched

DEFAULT_PROMPT = "A person is talking."
# the negative prompt of the official FantasyTalking infer.py (Wan's default, "figure motionless" first)
NEGATIVE_PROMPT = ("人物静止不动，静止，色调艳丽，过曝，静态，细节模糊不清，字幕，风格，作品，画作，画面，静止，整体发灰，"
                   "最差质量，低质量，JPEG压缩残留，丑陋的，残缺的，多余的手指，画得不好的手部，画得不好的脸部，畸形的，"
                   "毁容的，形态畸形的肢体，手指融合，静止不动的画面，杂乱的背景，三条腿，背景人很多，倒着走")
WHERE_WAV2VEC = ("Use wav2vec2-base-960h (a transformers folder, or one .safetensors file in ComfyUI/models/"
                 "audio_encoders/) from facebook/wav2vec2-base-960h (Hugging Face).")
TINY_BANNER = "UNTRAINED tiny preset: random weights, checks the pipeline only; the video is noise"


RESIZE_MODES = ("stretch", "crop")  # "stretch": the official rule (resize_official); "crop": resize_and_crop
_GUIDANCE = Guidance()  # the guidance defaults live in sampling.Guidance only


def _setting(default: Any, help: str, **extra: Any) -> Any:
    """A GenerationConfig field whose help (and choices) the CLI reads (``__main__``)."""
    return field(default=default, metadata={"help": help, **extra})


@dataclass(frozen=True)
class GenerationConfig:
    """Every knob of one generation; defaults are the official FantasyTalking inference settings
    (`infer.py` with DiffSynth's WanVideoPipeline). Each field's ``help`` says where a non-default
    value departs from the official code; the CLI's ``generate`` flags are made from these fields.

    max_frames caps the whole video as the official code does (the rest of the audio is dropped);
    0 generates the whole audio, segment after segment. num_frames > 0 is an exact frame count
    (4k+1); 0 follows the audio (`audio.plan_frames`, the one rule). segment_frames is the most frames one segment samples
    (81 for Wan2.1); consecutive segments share overlap_frames frames (4j+1; 1 = last-frame chaining).
    """

    size: int = _setting(512, "longest edge in pixels, a multiple of 16")
    resize: str = _setting("stretch", "stretch: the official rule (sides rounded up to multiples of 16, the image "
                           "stretched to them); crop: keep the aspect ratio and centre-crop the sides down instead",
                           choices=RESIZE_MODES)
    fps: float = _setting(23.0, "frames per second")
    max_frames: int = _setting(81, "frame cap, as the official code (the rest of the audio is dropped); "
                               "0: the whole audio, segment after segment")
    num_frames: int = _setting(0, "exact frame count (4k+1) instead of the audio length; 0: follow the audio")
    segment_frames: int = _setting(81, "most frames per segment")
    overlap_frames: int = _setting(1, "frames shared by consecutive segments (4j+1)")
    steps: int = _setting(30, "sampling steps")
    shift: float = _setting(5.0, "schedule shift")
    solver: str = _setting("euler", "euler: the official sampler; unipc: Wan2.1's own default (not the official "
                           "FantasyTalking value)", choices=tuple(SOLVERS))
    seed: int = _setting(1111, "noise seed (segment i uses seed + i)")
    cfg_text: float = _setting(_GUIDANCE.cfg_text, "text guidance, as the official code")
    cfg_audio: float = _setting(_GUIDANCE.cfg_audio, "audio guidance (official infer.py: 5; the paper reports 4.5); "
                                "1 keeps the official formula (three passes while cfg_text is not 1)")
    audio_start: float = _setting(_GUIDANCE.audio_start, "audio guidance from this fraction of the steps")
    audio_end: float = _setting(_GUIDANCE.audio_end, "audio guidance until this fraction of the steps")
    two_pass_shortcut: bool = _setting(_GUIDANCE.two_pass_shortcut,
                                       "where the audio scale is 1, run two passes (text guidance with the audio on) "
                                       "instead of the official three: faster, not the official value (for distilled "
                                       "LoRAs trained without audio guidance)")
    audio_scale: float = _setting(1.0, "audio attention weight lambda_1")
    max_batch: int | None = _setting(None, "most rows per DiT call (1: guidance passes one by one)")
    color_match: bool = _setting(True, "colour-match later segments to earlier ones")
    trim_to_audio: bool = _setting(True, "drop frames past the end of the audio (ffmpeg -shortest); not with "
                                   "num_frames")

    def __post_init__(self) -> None:
        if self.size < 16 or self.size % 16:
            raise ValueError(f"size must be a multiple of 16 and at least 16, got {self.size}")
        if self.resize not in RESIZE_MODES:
            raise ValueError(f"resize must be one of {RESIZE_MODES}, got {self.resize!r}")
        if self.solver not in SOLVERS:
            raise ValueError(f"solver must be one of {tuple(SOLVERS)}, got {self.solver!r}")
        if not (math.isfinite(self.fps) and self.fps > 0):
            raise ValueError(f"fps must be > 0, got {self.fps}")
        self.guidance()  # validates
        plan_frames(0.0, self.fps, self.num_frames, self.max_frames)  # validates both counts

    def guidance(self) -> Guidance:
        return Guidance(self.cfg_text, self.cfg_audio, self.audio_start, self.audio_end, self.two_pass_shortcut)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> "GenerationConfig":
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"unknown generation settings {unknown}; known: {sorted(known)}")
        return cls(**values)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


# ------------------------------------------------------------------------------------- image


def load_image(image: Any):
    """A path, PIL image, uint8 array [H, W, 3] or float tensor [H, W, 3] / [1, H, W, 3] (ComfyUI
    IMAGE, 0..1) -> PIL RGB. A file that is no image (a video, a text) is a clear error."""
    from PIL import Image, UnidentifiedImageError

    if isinstance(image, (str, Path)):
        p = Path(image).expanduser()
        if not p.is_file():
            raise FileNotFoundError(f"image file not found: {p}")
        try:
            with Image.open(p) as img:
                return img.convert("RGB")
        except (UnidentifiedImageError, OSError, Image.DecompressionBombError) as err:
            raise ValueError(f"{p} is not an image Pillow can read ({err.__class__.__name__}); give a PNG, JPEG or "
                             "WebP portrait (for a video, export one frame first)") from err
    if isinstance(image, Image.Image):
        return image.convert("RGB")
    if isinstance(image, torch.Tensor):
        t = image.detach().cpu().float()
        t = t[0] if t.ndim == 4 else t
        image = (t.clamp(0, 1) * 255 + 0.5).to(torch.uint8).numpy()
    if isinstance(image, np.ndarray) and image.ndim == 3 and image.shape[-1] in (3, 4):
        return Image.fromarray(np.ascontiguousarray(image[..., :3]).astype(np.uint8))
    raise TypeError(f"image must be a path, PIL image or [H, W, 3] array/tensor, got {type(image).__name__}"
                    f"{getattr(image, 'shape', '')}")


def resize_portrait(image, size: int = 512, mode: str = "stretch"):
    """The portrait at the video's size: :func:`resize_official` ("stretch") or :func:`resize_and_crop`."""
    if mode == "stretch":
        return resize_official(image, size)
    if mode == "crop":
        return resize_and_crop(image, size)
    raise ValueError(f"resize must be one of {RESIZE_MODES}, got {mode!r}")


def resize_official(image, size: int = 512, multiple: int = 16):
    """The official rule: LANCZOS to ``int(side * size / longest side)`` (`utils.py`
    `resize_image_by_longest_edge`), then each side rounded UP to a multiple of ``multiple`` and the
    image stretched to that (bicubic, PIL's default; `WanVideoPipeline.check_resize_height_width`
    and `encode_image`). A 4:5 portrait becomes 416x512, 3:2 becomes 512x352."""
    from PIL import Image

    if size < multiple or size % multiple:
        raise ValueError(f"size must be a multiple of {multiple}, got {size}")
    w, h = image.size
    scale = size / max(w, h)
    image = image.resize((max(1, int(w * scale)), max(1, int(h * scale))), Image.LANCZOS)
    up = lambda side: -(-side // multiple) * multiple  # noqa: E731
    target = (up(image.size[0]), up(image.size[1]))
    return image if target == image.size else image.resize(target, Image.BICUBIC)


def resize_and_crop(image, size: int = 512, multiple: int = 16):
    """Resize (LANCZOS) so the longest edge is `size`, then centre-crop the other side down to a
    multiple of `multiple` (at most multiple-1 pixels lost; the aspect ratio is kept). Not the
    official rule (:func:`resize_official`); GenerationConfig(resize="crop")."""
    from PIL import Image

    if size < multiple or size % multiple:
        raise ValueError(f"size must be a multiple of {multiple}, got {size}")
    w, h = image.size
    scale = size / max(w, h)
    nw, nh = (size, max(multiple, round(h * scale))) if w >= h else (max(multiple, round(w * scale)), size)
    image = image.resize((nw, nh), Image.LANCZOS)
    cw, ch = nw // multiple * multiple, nh // multiple * multiple
    left, top = (nw - cw) // 2, (nh - ch) // 2
    return image.crop((left, top, left + cw, top + ch))


def image_to_tensor(image) -> torch.Tensor:
    """PIL RGB -> [1, 3, H, W] float32 in -1..1 (Wan's `to_tensor().sub_(0.5).div_(0.5)`)."""
    arr = torch.from_numpy(np.asarray(image, dtype=np.uint8).copy()).float() / 255.0
    return rearrange(arr, "h w c -> 1 c h w").sub(0.5).div(0.5)


def frames_to_tensor(frame: torch.Tensor) -> torch.Tensor:
    """One frame [H, W, 3] in 0..1 -> [1, 3, H, W] in -1..1."""
    return rearrange(frame.float(), "h w c -> 1 c h w").mul(2).sub(1)


# ------------------------------------------------------------------------------------- I2V


def i2v_mask(num_frames: int, lat_h: int, lat_w: int) -> torch.Tensor:
    """Wan2.1's frame mask [4, T_lat, lat_h, lat_w]: frame 0 known (1), the others generated (0).

    As `wan/image2video.py`: a per-frame mask, frame 0 repeated 4 times (the VAE's first latent
    frame stands for one frame, the others for 4), viewed as [T_lat, 4, h, w] and transposed.
    """
    msk = torch.ones(1, num_frames, lat_h, lat_w)
    msk[:, 1:] = 0
    msk = torch.cat([torch.repeat_interleave(msk[:, 0:1], repeats=4, dim=1), msk[:, 1:]], dim=1)
    msk = msk.view(1, msk.shape[1] // 4, 4, lat_h, lat_w)
    return msk.transpose(1, 2)[0]


def i2v_condition(vae: VideoVAE, first: torch.Tensor, num_frames: int) -> torch.Tensor:
    """y = [mask, vae.encode(first frame, then num_frames-1 black frames)]: [1, 20, T_lat, H/8, W/8]."""
    _, _, h, w = first.shape
    video = torch.cat([first[:, :, None].float(), first.new_zeros(1, 3, num_frames - 1, h, w).float()], dim=2)
    latents = vae.encode(video)  # [1, 16, T_lat, h/8, w/8]
    mask = i2v_mask(num_frames, h // 8, w // 8).to(latents.device, latents.dtype)
    if latents.shape[2:] != mask.shape[1:]:
        raise ValueError(f"the VAE returned latents {tuple(latents.shape)} for {num_frames} frames of {h}x{w}; "
                         f"expected [1, 16, {mask.shape[1]}, {h // 8}, {w // 8}] (stride 4, 8, 8)")
    return torch.cat([mask[None], latents], dim=1)


def video_to_frames(video: torch.Tensor) -> torch.Tensor:
    """Decoded video [1, 3, T, H, W] in -1..1 -> frames [T, H, W, 3] float32 0..1 on the CPU."""
    return rearrange(video[0].float().cpu().add(1).div(2).clamp(0, 1), "c t h w -> t h w c")


# ------------------------------------------------------------------------------------- segments


def match_color(frames: torch.Tensor, new_ref: torch.Tensor, old_ref: torch.Tensor, eps: float = 1e-3) -> torch.Tensor:
    """Per-channel mean/std transfer: `(frames - mean(new_ref)) / std(new_ref) * std(old_ref) + mean(old_ref)`.

    `new_ref` are this segment's overlap frames, `old_ref` the same frames as the previous segment made
    them (all [N, H, W, 3], 0..1); the statistics are over all their pixels. A near-constant
    channel (std < eps) is shifted only. Result clipped to 0..1.
    """
    dims = (0, 1, 2)
    mu_n, mu_o = new_ref.mean(dims), old_ref.mean(dims)
    sd_n, sd_o = new_ref.std(dims), old_ref.std(dims)
    gain = torch.where(sd_n > eps, sd_o / sd_n.clamp_min(eps), torch.ones_like(sd_n))
    return ((frames - mu_n) * gain + mu_o).clamp(0, 1)


def stitch(segments: list[torch.Tensor], plans: list[SegmentPlan]) -> torch.Tensor:
    """Concatenate segments [T_i, H, W, 3], dropping each later segment's first `overlap_frames`."""
    parts = [c[p.overlap_frames:] for c, p in zip(segments, plans)]
    return torch.cat(parts, dim=0)


# ------------------------------------------------------------------------------------- pipeline


@dataclass
class Components:
    """The models of one pipeline. Any object with the same call contract works (see encoders.py)."""

    dit: nn.Module
    audio: AudioAdapter
    vae: VideoVAE
    text_encoder: TextEncoder
    clip_encoder: ImageEncoder
    wav2vec: Any  # .encode(wave16k [T]) -> [1, L, 768]
    untrained: bool = False  # the tiny preset: random weights


@dataclass
class GenerationResult:
    frames: torch.Tensor  # [T, H, W, 3] float32 0..1
    fps: float
    audio: torch.Tensor  # [C, N] float32, the soundtrack (starts with frame 0)
    sample_rate: int
    plans: list[SegmentPlan] = field(default_factory=list)
    generated_frames: int = 0  # before trimming to the audio

    def save(self, path: str | Path, overwrite: bool = False) -> Path:
        from .video import write_video

        return write_video(self.frames, path, fps=self.fps, audio=self.audio, sample_rate=self.sample_rate,
                           overwrite=overwrite)


class FantasyTalkingPipeline:
    def __init__(self, components: Components):
        self.c = components

    @torch.no_grad()
    def generate(self, image: Any, audio: Any, prompt: str = DEFAULT_PROMPT, negative_prompt: str = NEGATIVE_PROMPT,
                 config: GenerationConfig = GenerationConfig(), should_stop: Callable[[], bool] | None = None,
                 progress: bool = True, runtime: Any = None) -> GenerationResult:
        """Make the video. `should_stop()` is polled before every step; it raises InterruptedError.

        `runtime`: a `perf.RuntimeOptions` (attention kernel, compile, fp8, step cache, block swap)
        applied to the DiT for this call; the plain forward comes back afterwards (fp8 stays)."""
        from contextlib import nullcontext

        from .perf import configured

        c = self.c
        with (configured(c.dit, runtime, adapters=[c.audio]) if runtime is not None else nullcontext()) as rt, \
                attach_adapters(c.dit, audio=c.audio) as att:  # once per call: compiled blocks see one graph
            return self._generate(att, rt, image, audio, prompt, negative_prompt, config, should_stop, progress)

    def _generate(self, att, rt, image, audio, prompt, negative_prompt, config, should_stop, progress) -> GenerationResult:
        from tqdm.auto import tqdm

        cfg, c = config, self.c
        if c.untrained:
            print(TINY_BANNER)
        portrait = image_to_tensor(resize_portrait(load_image(image), cfg.size, cfg.resize))  # [1, 3, H, W]
        track = read_audio(audio, max_channels=2)  # the soundtrack: mono or stereo
        wave16k = track.to_16k()
        seconds = wave16k.numel() / SAMPLE_RATE
        total, _ = plan_frames(seconds, cfg.fps, cfg.num_frames, cfg.max_frames)
        segment_frames = min(cfg.segment_frames, total)
        plans = plan_segments(total, segment_frames, cfg.overlap_frames if total > segment_frames else 1, cfg.fps)
        device = next(c.dit.parameters()).device
        pos, neg = c.text_encoder([prompt, negative_prompt])
        length = max(pos.shape[0], neg.shape[0])  # zero rows are what the DiT pads with anyway
        context = {"pos": pad_context(pos, length)[None].to(device), "neg": pad_context(neg, length)[None].to(device)}
        clip_fea = c.clip_encoder(portrait).to(device)  # the portrait's tokens anchor every segment
        want = getattr(getattr(c.dit, "cfg", None), "clip_dim", clip_fea.shape[-1])
        if clip_fea.shape[-1] != want:
            raise ValueError(f"the CLIP encoder gives {clip_fea.shape[-1]}-d tokens but the DiT takes {want}-d: "
                             "Wan2.1 I2V needs CLIP ViT-H/14 (clip_vision_h.safetensors)")

        segments: list[torch.Tensor] = []
        first = portrait
        bar = tqdm(plans, desc="segments", disable=not progress or len(plans) == 1)
        for plan in bar:
            if plan.index:
                first = frames_to_tensor(segments[-1][-plan.overlap_frames])  # this segment's frame 0
            wave = fit_to_frames(wave16k, total, cfg.fps).waveform if len(plans) == 1 else audio_for_segment(wave16k, plan)
            cond = c.audio.condition(c.wav2vec.encode(wave), plan.num_frames)
            y = i2v_condition(c.vae, first.to(device), plan.num_frames).to(device)
            if rt is not None:
                rt.reset()  # a new sampling run for the step cache
            latents = self._sample(att, rt or c.dit, y, clip_fea, context, cond, cfg, cfg.seed + plan.index,
                                   should_stop, tqdm(total=cfg.steps, desc=f"segment {plan.index + 1}/{len(plans)}",
                                                     disable=not progress, leave=False))
            frames = video_to_frames(c.vae.decode(latents))
            if plan.index and cfg.color_match:
                ov = plan.overlap_frames
                frames = match_color(frames, frames[:ov], segments[-1][-ov:])
            segments.append(frames)
        video = stitch(segments, plans)
        generated = video.shape[0]
        if cfg.trim_to_audio and not cfg.num_frames:  # ceil(seconds * fps): the fewest covering the audio
            video = video[: max(1, math.ceil(round(seconds * cfg.fps, 6)))]
        return GenerationResult(video, cfg.fps, track.waveform, track.sample_rate, plans, generated)

    def _sample(self, att, dit, y, clip_fea, context, cond, cfg: GenerationConfig, seed: int, should_stop,
                bar) -> torch.Tensor:
        """One segment's flow-matching sampling with text/audio guidance -> latents [1, 16, T_lat, h, w].
        `dit` is the DiT or its perf.Runtime (same call)."""
        noise = initial_noise((1, 16, *y.shape[2:]), seed, device=y.device)
        sigmas = flow_sigmas(cfg.steps, cfg.shift)
        s = cfg.audio_scale
        per_pass = {  # batch rows = passes: the text context and the audio weight differ per row
            "pos_audio": ("pos", s), "pos_noaudio": ("pos", 0.0), "neg_noaudio": ("neg", 0.0), "neg_audio": ("neg", s),
        }
        conds = {name: {"context": context[text], "audio_scale": torch.tensor([scale], device=y.device)}
                 for name, (text, scale) in per_pass.items()}

        def model_fn(x, sigma, context, audio_scale):
            n = x.shape[0]
            with att.conditioned(audio=cond, audio_scale=audio_scale):
                return dit(x, sigma * 1000.0, context, clip_fea.expand(n, -1, -1), y.expand(n, -1, -1, -1, -1))

        def passes_fn(x, sigma, passes):
            return run_passes_batched(model_fn, x, sigma, passes, conds, max_batch=cfg.max_batch)

        fn = guided_model(passes_fn, cfg.guidance(), sigmas)
        with bar:
            return SOLVERS[cfg.solver](fn, noise, sigmas, callback=lambda *a: bar.update(1), should_stop=should_stop)


# ------------------------------------------------------------------------------------- components


@dataclass(frozen=True)
class ModelPaths:
    """Local weight files (ComfyUI folder in brackets). Nothing is ever downloaded."""

    wan: str  # [diffusion_models] Wan2.1-I2V-14B single file or sharded folder
    fantasytalking: str  # [model_patches] fantasytalking_model.ckpt or a safetensors layout
    wav2vec: str  # [audio_encoders] wav2vec2-base-960h folder or single file
    vae: str  # [vae] wan_2.1_vae.safetensors / Wan2.1_VAE.pth / diffusers folder
    text_encoder: str  # [text_encoders] umt5_xxl_*.safetensors / models_t5_umt5-xxl-enc-bf16.pth / folder
    clip_vision: str  # [clip_vision] clip_vision_h.safetensors / Wan's open-clip .pth / folder
    tokenizer: str | None = None  # google/umt5-xxl tokenizer folder, when not beside the text encoder


def load_components(paths: ModelPaths, device: str | torch.device | None = None,
                    dtype: torch.dtype | None = None, vae_tiling: bool = True) -> Components:
    """Load every model from local files on `device` (`devices.pick_device`: None/"auto" = the first
    CUDA GPU, else the CPU); `dtype` (default bf16 on CUDA, fp32 on CPU) is the DiT's. `vae_tiling`
    tiles the VAE decode (bounded memory); the encode of the first frame is never tiled (as the
    official code)."""
    from .audio import load_wav2vec
    from .checkpoints import WHERE_FT, WHERE_WAN, load_audio_adapter, load_wan
    from .devices import pick_device
    from .encoders import load_clip_vision, load_text_encoder, load_vae, require

    from .encoders import WHERE_CLIP, WHERE_TEXT, WHERE_VAE

    for path, what, where in ((paths.wan, "Wan2.1 I2V model", WHERE_WAN),  # all present before any loading
                              (paths.fantasytalking, "FantasyTalking weights", WHERE_FT),
                              (paths.wav2vec, "wav2vec2 model", WHERE_WAV2VEC), (paths.vae, "Wan VAE", WHERE_VAE),
                              (paths.text_encoder, "UMT5 text encoder", WHERE_TEXT),
                              (paths.clip_vision, "CLIP vision model", WHERE_CLIP)):
        require(path, what, where)
    device = pick_device(device)
    dtype = dtype or (torch.bfloat16 if device.type == "cuda" else torch.float32)
    dit = load_wan(paths.wan, dtype=dtype, device=device).eval()
    audio = load_audio_adapter(paths.fantasytalking)
    if dit.cfg.model_type != "i2v":
        raise ValueError(f"{paths.wan} is a Wan2.1 {dit.cfg.model_type.upper()} model; "
                         "FantasyTalking needs the I2V model")
    return Components(
        dit=dit,
        audio=audio.to(device=device, dtype=dtype).eval(),
        vae=load_vae(paths.vae, device=device, dtype=torch.float32, tiling=vae_tiling),  # fp32 as Wan's VAE
        text_encoder=load_text_encoder(paths.text_encoder, paths.tokenizer, device=device,
                                       dtype=torch.float32 if device.type == "cpu" else torch.bfloat16),
        clip_encoder=load_clip_vision(paths.clip_vision, device=device,
                                      dtype=torch.float32 if device.type == "cpu" else torch.float16),
        wav2vec=load_wav2vec(paths.wav2vec, device=device),
    )


class TinyCausalVAE(nn.Module):
    """A random stand-in for Wan's VAE with its contract: stride (4, 8, 8), causal in time (frame 0
    is encoded alone, as if repeated 4 times), 16 latent channels. One linear map each way."""

    def __init__(self, z_dim: int = 16):
        super().__init__()
        self.enc = nn.Conv3d(3 * 4 * 8 * 8, z_dim, 1)
        self.dec = nn.Conv3d(z_dim, 3 * 4 * 8 * 8, 1)

    def encode(self, video: torch.Tensor) -> torch.Tensor:
        x = torch.cat([video[:, :, :1].expand(-1, -1, 4, -1, -1), video[:, :, 1:]], dim=2)  # [B, 3, 4*T_lat, H, W]
        return self.enc(rearrange(x.float(), "b c (t a) (h p) (w q) -> b (c a p q) t h w", a=4, p=8, q=8))

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        x = rearrange(self.dec(latents.float()), "b (c a p q) t h w -> b c (t a) (h p) (w q)", c=3, a=4, p=8, q=8)
        return x[:, :, 3:].tanh()  # drop the 3 copies of frame 0: T = 4*(T_lat-1) + 1


def tiny_components(seed: int = 0, device: str | torch.device = "cpu") -> Components:
    """Random-weight components small enough for CPU: checks the pipeline, makes noise."""
    from transformers import (CLIPVisionConfig, CLIPVisionModel, UMT5Config, UMT5EncoderModel, Wav2Vec2Config,
                              Wav2Vec2Model)

    from .adapters import AudioAdapterConfig
    from .audio import Wav2VecEncoder
    from .encoders import ClipImageEncoder, UMT5TextEncoder
    from .wan import WanConfig, WanModel, init_random_

    torch.manual_seed(seed)  # transformers and nn initialise from the global generator
    cfg = WanConfig.tiny()
    dit = init_random_(WanModel(cfg), seed=seed).eval()
    audio = init_random_(AudioAdapter(AudioAdapterConfig.for_wan(cfg, proj_dim=64)), seed=seed + 1, std=0.2)
    t5 = UMT5EncoderModel(UMT5Config(vocab_size=260, d_model=cfg.text_dim, d_kv=32, d_ff=128, num_heads=2,
                                     num_layers=1, feed_forward_proj="gated-gelu"))
    clip = CLIPVisionModel(CLIPVisionConfig(hidden_size=cfg.clip_dim, intermediate_size=128, num_hidden_layers=2,
                                            num_attention_heads=1, image_size=224, patch_size=14, hidden_act="gelu"))
    w2v = Wav2Vec2Model(Wav2Vec2Config(hidden_size=768, num_hidden_layers=1, num_attention_heads=12,
                                       intermediate_size=256, conv_dim=(32,) * 7, num_conv_pos_embeddings=16,
                                       num_conv_pos_embedding_groups=16)).eval()
    device = torch.device(device)
    return Components(
        dit=dit.to(device), audio=audio.eval().to(device), vae=TinyCausalVAE().eval().to(device),
        text_encoder=UMT5TextEncoder(t5.to(device), lambda text: [2 + b for b in text.encode("utf-8")] + [1],
                                     text_len=cfg.text_len),
        clip_encoder=ClipImageEncoder(clip.to(device)),
        wav2vec=Wav2VecEncoder(model=w2v.to(device), device=device, dtype=torch.float32, source="tiny random"),
        untrained=True,
    )
