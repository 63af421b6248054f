"""End-to-end FantasyTalking outside ComfyUI: portrait + audio (+ prompt) -> talking video.

The loop, top to bottom (`Generation` plans a video, `FantasyTalkingPipeline.frames` makes it):
1. the portrait is resized as the official code does (`resize_official`: longest edge `size`, both
   sides rounded up to multiples of 16, the image stretched to them; `resize="crop"` centre-crops
   instead); the frame count comes from the audio length by the official formula
   `int(fps * seconds // 4) * 4 + 5`: the whole recording by default, `max_frames` caps it (and says
   what it cut); the frames are cut into segments (`segments.plan_segments`);
2. text (prompt and FantasyTalking's negative prompt, UMT5, trimmed to their true length), the CLIP
   image tokens of the portrait and the wav2vec2 features of the whole recording are encoded once;
3. per segment (`segments.run_segments`): its audio windows (`segments.segment_audio`) ->
   `AudioAdapter`, Wan's I2V conditioning `y = [mask, vae.encode(held frames + zeros)]` (an
   untiled encode, as the official code; the first segment holds the portrait, later ones the
   previous segment's last `motion_frames` frames), flow-matching sampling (Euler by default, as
   `infer.py`) with text and audio guidance (`sampling.Guidance`; the passes of a step run as one
   batch, audio switched off per row), VAE decode (tiled by `load_components`, as the official
   decode), colour matching (`segments.match_segment`);
4. the frames stream out segment by segment: `FantasyTalkingPipeline.write` writes them to the mp4 as they come
   (`video.VideoWriter`; the audio track encoded with each segment), so no run holds every frame.
"""

from __future__ import annotations

import math
from contextlib import contextmanager, nullcontext
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Callable, Iterator

import torch
import torch.nn as nn
from einops import rearrange
from tqdm.auto import tqdm

from .adapters import AudioAdapter, AudioAdapterConfig, attach_adapters
from .audio import SAMPLE_RATE, AudioTrack, fit_to_frames, read_audio
from .checkpoints import WHERE_FT, WHERE_WAN, load_audio_adapter, load_wan
from .devices import pick_device
from .encoders import (WHERE_CLIP, WHERE_TEXT, WHERE_VAE, WHERE_WAV2VEC, ClipImageEncoder, ImageEncoder, TextEncoder,
                       UMT5TextEncoder, VideoVAE, Wav2VecEncoder, load_clip_vision, load_text_encoder, load_vae,
                       load_wav2vec, pad_context, require)
from .frames import cut_note, latent_frames, plan_frames
from .images import (RESIZE_MODES, frames_to_tensor, image_to_tensor, load_image, resize_portrait,
                     video_to_frames)
from .motion_control import TrainingFreeControls, amplify_i2v
from .perf import configured
from .sampling import (OLD_SOLVER_NAMES, SOLVERS, Guidance, composite, flow_sigmas, guided_model, initial_noise,
                       inpainting, run_passes_batched, solver_name)
from .speakers import SpeakerPlan, Speakers
from .segments import (SegmentPlan, fill_video, held_video, i2v_y, output_frames, plan_segments, run_segments,
                       segment_audio, segment_seed)
from .video import VideoWriter, write_video
from .wan import WanConfig, WanModel, init_random_

DEFAULT_PROMPT = "A person is talking."
# the negative prompt of the official FantasyTalking infer.py (Wan's default, "figure motionless" first)
NEGATIVE_PROMPT = ("人物静止不动，静止，色调艳丽，过曝，静态，细节模糊不清，字幕，风格，作品，画作，画面，静止，整体发灰，"
                   "最差质量，低质量，JPEG压缩残留，丑陋的，残缺的，多余的手指，画得不好的手部，画得不好的脸部，畸形的，"
                   "毁容的，形态畸形的肢体，手指融合，静止不动的画面，杂乱的背景，三条腿，背景人很多，倒着走")
TINY_BANNER = "UNTRAINED tiny preset: random weights, checks the pipeline only; the video is noise"


_GUIDANCE = Guidance()  # the guidance defaults live in sampling.Guidance only


def _setting(default: Any, help: str, **extra: Any) -> Any:
    """A GenerationConfig field whose help (and choices) the CLI reads (``__main__``)."""
    return field(default=default, metadata={"help": help, **extra})


@dataclass(frozen=True)
class GenerationConfig:
    """Every knob of one generation; defaults are the official FantasyTalking inference settings
    (`infer.py` with DiffSynth's WanVideoPipeline). Each field's ``help`` says where a non-default
    value departs from the official code; the CLI's ``generate`` flags are made from these fields.

    The whole recording becomes video by default (max_frames 0), segment after segment; max_frames
    N caps it as the official code does (81), and the plan says what was cut. num_frames > 0 is an
    exact frame count (4k+1); 0 follows the audio (`frames.plan_frames`, the one rule).
    segment_frames is the most frames one segment samples (81 for Wan2.1); each later segment holds
    the previous one's last motion_frames frames (4j+1; `segments`).
    """

    size: int = _setting(512, "longest edge in pixels, a multiple of 16")
    resize: str = _setting("stretch", "stretch: the official rule (sides rounded up to multiples of 16, the image "
                           "stretched to them); crop: keep the aspect ratio and centre-crop the sides down instead",
                           choices=RESIZE_MODES)
    fps: float = _setting(23.0, "frames per second")
    max_frames: int = _setting(0, "0: the whole recording, segment after segment; N (4k+1): stop after N frames "
                               "and drop the rest of the audio (the official code caps at 81)")
    num_frames: int = _setting(0, "exact frame count (4k+1) instead of the audio length; 0: follow the audio")
    segment_frames: int = _setting(81, "most frames one segment samples (4k+1; Wan2.1 was trained on 81)")
    motion_frames: int = _setting(1, "frames a segment holds from the end of the previous one (4j+1): 1 the last "
                                  "frame (Wan's I2V as trained), 5 or 9 more motion context")
    steps: int = _setting(30, "sampling steps")
    shift: float = _setting(5.0, "schedule shift")
    solver: str = _setting("euler", "euler: the official sampler; uni_pc: Wan2.1's own default (not the official "
                           "FantasyTalking value; the old spelling unipc is still read)",
                           choices=tuple(SOLVERS) + tuple(OLD_SOLVER_NAMES))
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
    omega_l: float = _setting(0.5, "facial motion 0..1, 0.5 the official result: the audio strength (training-free; "
                              "audio_scale x 0.8..1.2, audio guidance cfg_audio - 1 x 0.75..1.25; docs/motion.md)")
    omega_b: float = _setting(0.5, "head and body motion 0..1, 0.5 the official result: the motion amplitude of the "
                              "I2V conditioning, 0.75..1.25 (training-free; docs/motion.md)")
    max_batch: int | None = _setting(None, "most rows per DiT call (1: guidance passes one by one)")
    color_match: bool = _setting(True, "colour-match each later segment to the frames it holds and ease it to the "
                                 "portrait's colours (no drift over many segments)")
    trim_to_audio: bool = _setting(True, "drop frames past the end of the audio (ffmpeg -shortest); not with "
                                   "num_frames")

    def __post_init__(self) -> None:
        if self.size < 16 or self.size % 16:
            raise ValueError(f"size must be a multiple of 16 and at least 16, got {self.size}")
        if self.resize not in RESIZE_MODES:
            raise ValueError(f"resize must be one of {RESIZE_MODES}, got {self.resize!r}")
        object.__setattr__(self, "solver", solver_name(self.solver))  # one spelling from here on
        if not (math.isfinite(self.fps) and self.fps > 0):
            raise ValueError(f"fps must be > 0, got {self.fps}")
        self.guidance()  # validates
        self.controls()  # validates the omegas
        plan_frames(0.0, self.fps, self.num_frames, self.max_frames)  # validates both counts
        plan_segments(self.segment_frames, self.segment_frames, self.motion_frames)  # validates both

    def guidance(self) -> Guidance:
        return Guidance(self.cfg_text, self.cfg_audio, self.audio_start, self.audio_end, self.two_pass_shortcut)

    def controls(self) -> TrainingFreeControls:
        """The motion sliders' training-free controls (the pipeline runs the audio adapter alone)."""
        return TrainingFreeControls(self.omega_l, self.omega_b)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> "GenerationConfig":
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"unknown generation settings {unknown}; known: {sorted(known)}")
        return cls(**values)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


# ------------------------------------------------------------------------------------- I2V


def i2v_condition(vae: VideoVAE, held: torch.Tensor, num_frames: int) -> torch.Tensor:
    """y = [mask, vae.encode(held frames, then black (0) frames up to num_frames)]: [1, 20, T_lat, H/8, W/8].

    `held` in -1..1: the first frame [1, 3, H, W] (Wan's I2V) or the first K frames [1, 3, K, H, W];
    the mask (`segments.i2v_y`) is 1 on exactly those frames."""
    held = held[:, :, None] if held.ndim == 4 else held
    video = held_video(held.float(), num_frames, fill=0.0, dim=2)
    latents = vae.encode(video)  # [1, 16, T_lat, h/8, w/8]
    h, w = video.shape[-2:]
    t_lat = latent_frames(num_frames)
    if tuple(latents.shape[2:]) != (t_lat, h // 8, w // 8):
        raise ValueError(f"the VAE returned latents {tuple(latents.shape)} for {num_frames} frames of {h}x{w}; "
                         f"expected [1, 16, {t_lat}, {h // 8}, {w // 8}] (stride 4, 8, 8)")
    return i2v_y(latents, known=held.shape[2])


# ------------------------------------------------------------------------------------- pipeline


@dataclass
class Components:
    """The models of one pipeline. Any object with the same call contract works (see encoders/wan.py)."""

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
        return write_video(self.frames, path, fps=self.fps, audio=self.audio, sample_rate=self.sample_rate,
                           overwrite=overwrite)


class Generation:
    """One video, planned from the portrait, the recording and the settings before any model runs:
    `frames` the video keeps, `generated` the frames sampled (4k+1), the segment `plans` and `notes`
    saying what was cut. `FantasyTalkingPipeline.frames` makes it."""

    def __init__(self, image: Any, audio: Any, config: GenerationConfig = GenerationConfig()):
        cfg = self.config = config
        picture = load_image(image)
        self.portrait = resize_portrait(picture, cfg.size, cfg.resize)  # PIL, the video's size
        speakers = audio if isinstance(audio, Speakers) else None  # several people talking (speakers.py)
        # the soundtrack: mono or stereo (several speakers: their mix)
        self.track: AudioTrack = speakers.tracks.soundtrack if speakers else read_audio(audio, max_channels=2)
        wave16k = speakers.tracks.tracks.sum(0) if speakers else self.track.to_16k()
        self.seconds = wave16k.numel() / SAMPLE_RATE
        self.generated, how = plan_frames(self.seconds, cfg.fps, cfg.num_frames, cfg.max_frames)
        self.wave16k = fit_to_frames(wave16k, self.generated, cfg.fps).waveform  # the official cut
        self.plans = plan_segments(self.generated, cfg.segment_frames, cfg.motion_frames)
        trim = cfg.trim_to_audio and not cfg.num_frames
        self.frames = min(self.generated, output_frames(self.seconds, cfg.fps)) if trim else self.generated
        self.notes = [note] if (note := cut_note(self.seconds, self.frames, cfg.fps, cfg.max_frames, how)) else []
        self.speakers: SpeakerPlan | None = None if speakers is None else speakers.plan(
            picture, self.portrait, lambda pic: resize_portrait(pic, cfg.size, cfg.resize), self.wave16k.numel())
        if speakers:
            self.notes += speakers.tracks.notes + [f"speaker regions: {self.speakers.regions.source}"]

    def describe(self) -> str:
        n, cfg = len(self.plans), self.config
        held = f", each later one holding {cfg.motion_frames} frame(s) of the one before" if n > 1 else ""
        return (f"audio {self.seconds:.2f} s -> {self.frames} frames at {cfg.fps:g} fps ({self.frames / cfg.fps:.2f} s) "
                f"in {n} segment(s) of up to {cfg.segment_frames} frames{held}")


class FantasyTalkingPipeline:
    def __init__(self, components: Components):
        self.c = components

    @torch.no_grad()
    def generate(self, image: Any, audio: Any, prompt: str = DEFAULT_PROMPT, negative_prompt: str = NEGATIVE_PROMPT,
                 config: GenerationConfig = GenerationConfig(), should_stop: Callable[[], bool] | None = None,
                 progress: bool = True, runtime: Any = None) -> GenerationResult:
        """Make the whole video in memory (see `frames` for the arguments; `write` streams to a file)."""
        gen = Generation(image, audio, config)
        w, h = gen.portrait.size
        video = fill_video(torch.empty(gen.frames, h, w, 3), self.frames(gen, prompt, negative_prompt, should_stop, progress,
                                                                   runtime))
        return GenerationResult(video, config.fps, gen.track.waveform, gen.track.sample_rate, gen.plans, gen.generated)

    def write(self, gen: Generation, path: str | Path, prompt: str = DEFAULT_PROMPT,
              negative_prompt: str = NEGATIVE_PROMPT, overwrite: bool = False, **kwargs: Any) -> Path:
        """Stream the video to an mp4 segment by segment (the audio with each segment); the file
        appears only when complete, and an existing one is replaced only with `overwrite`."""
        with VideoWriter(path, gen.config.fps, gen.track.waveform, gen.track.sample_rate, overwrite=overwrite) as out:
            for chunk in self.frames(gen, prompt, negative_prompt, **kwargs):
                out.write(chunk)
        return out.path

    def frames(self, gen: Generation, prompt: str = DEFAULT_PROMPT, negative_prompt: str = NEGATIVE_PROMPT,
               should_stop: Callable[[], bool] | None = None, progress: bool = True,
               runtime: Any = None) -> Iterator[torch.Tensor]:
        """The video's frames [n, H, W, 3] (0..1, CPU), segment after segment, `gen.frames` in all.

        `should_stop()` is polled before every step; it raises InterruptedError. `runtime`: a
        `perf.RuntimeOptions` (attention kernel, compile, fp8, step cache, block swap) applied to the
        DiT while the frames are made; the plain forward comes back afterwards (fp8 stays)."""
        with self.session(runtime) as (att, rt):
            yield from self._frames(att, rt, gen, prompt, negative_prompt, should_stop, progress)

    @contextmanager
    def session(self, runtime: Any = None) -> Iterator[tuple[Any, Any]]:
        """(attached adapters, perf runtime or None) for one video: the adapters attached once, so
        compiled blocks see one graph; `runtime` as in `frames`. `dub.dub_frames` runs in it too."""
        c = self.c
        with torch.no_grad(), (configured(c.dit, runtime, adapters=[c.audio]) if runtime is not None
                               else nullcontext()) as rt, attach_adapters(c.dit, audio=c.audio) as att:
            yield att, rt

    def conditioning(self, portrait: torch.Tensor, prompt: str, negative_prompt: str) -> tuple[dict, torch.Tensor]:
        """The text contexts {"pos", "neg"} (padded to one length) and the CLIP image tokens of
        `portrait` [1, 3, H, W] (-1..1), on the DiT's device: encoded once per video."""
        c = self.c
        device = next(c.dit.parameters()).device
        pos, neg = c.text_encoder([prompt, negative_prompt])
        length = max(pos.shape[0], neg.shape[0])  # zero rows are what the DiT pads with anyway
        context = {"pos": pad_context(pos, length)[None].to(device), "neg": pad_context(neg, length)[None].to(device)}
        clip_fea = c.clip_encoder(portrait).to(device)  # the portrait's tokens anchor every segment
        want = getattr(getattr(c.dit, "cfg", None), "clip_dim", clip_fea.shape[-1])
        if clip_fea.shape[-1] != want:
            raise ValueError(f"the CLIP encoder gives {clip_fea.shape[-1]}-d tokens but the DiT takes {want}-d: "
                             "Wan2.1 I2V needs CLIP ViT-H/14 (clip_vision_h.safetensors)")
        return context, clip_fea

    def _frames(self, att, rt, gen: Generation, prompt, negative_prompt, should_stop, progress) -> Iterator[torch.Tensor]:
        cfg, c = gen.config, self.c
        if c.untrained:
            print(TINY_BANNER)
        portrait = image_to_tensor(gen.portrait)  # [1, 3, H, W] in -1..1
        device = next(c.dit.parameters()).device
        context, clip_fea = self.conditioning(portrait, prompt, negative_prompt)
        speakers = gen.speakers
        # the whole recording, once: [1, L, 768]; several speakers: [K + 1, L, 768] (speakers.py)
        features = c.wav2vec.encode(gen.wave16k) if speakers is None else speakers.features(c.wav2vec)
        bar = tqdm(total=len(gen.plans), desc="segments", disable=not progress or len(gen.plans) == 1)

        def sample(plan: SegmentPlan, held: torch.Tensor) -> torch.Tensor:
            first = portrait if plan.index == 0 else frames_to_tensor(held)  # the portrait exactly, as official
            y = amplify_i2v(i2v_condition(c.vae, first.to(device), plan.num_frames), cfg.controls().amplitude)
            y = y.to(device)
            cond = (segment_audio(c.audio, features, plan, gen.generated, cfg.fps) if speakers is None else
                    speakers.condition(c.audio, features, plan, gen.generated, cfg.fps,
                                       (y.shape[-2] // 2, y.shape[-1] // 2), held))  # regions may follow the faces
            guidance = cfg.guidance() if speakers is None else speakers.guidance(cfg.guidance())
            if rt is not None:
                rt.reset()  # a new sampling run for the step cache
            steps = tqdm(total=cfg.steps, desc=f"segment {plan.index + 1}/{len(gen.plans)}", disable=not progress,
                         leave=False)
            latents = self.sample_latents(att, c.dit, y, clip_fea, context, cond, cfg, segment_seed(cfg.seed, plan.index),
                                          should_stop, steps, guidance=guidance)
            bar.update(1)
            return video_to_frames(c.vae.decode(latents))

        reference = video_to_frames(portrait[:, :, None])  # [1, H, W, 3] in 0..1
        with bar:
            yield from run_segments(gen.plans, reference, sample, reference, cfg.color_match, keep=gen.frames)

    def sample_latents(self, att, dit, y, clip_fea, context, cond, cfg: GenerationConfig, seed: int, should_stop,
                       bar, inpaint: tuple[torch.Tensor, torch.Tensor] | None = None,
                       guidance: Any = None) -> torch.Tensor:
        """One segment's flow-matching sampling with text/audio guidance -> latents [1, 16, T_lat, h, w].
        `dit` runs with the session's runtime options, if any (its `runner`). `inpaint` = (source latents, mask [T_lat, h, w],
        1 = generate): outside the mask the sample is held to the source at every step
        (`sampling.inpainting`) and the result there is the source latent exactly. `guidance`: in place of
        `cfg.guidance()` (several speakers: `speakers.RegionalGuidance`)."""
        noise = initial_noise((1, 16, *y.shape[2:]), seed, device=y.device)
        sigmas = flow_sigmas(cfg.steps, cfg.shift)
        controls = cfg.controls()  # omega_l: the audio strength (neutral: the values as given)
        s = controls.audio_scale(cfg.audio_scale)
        per_pass = {  # batch rows = passes: the text context and the audio weight differ per row
            "pos_audio": ("pos", s), "pos_noaudio": ("pos", 0.0), "neg_noaudio": ("neg", 0.0), "neg_audio": ("neg", s),
        }
        # the scales stay on the CPU: whether a pass has audio is decided there, with no device read
        conds = {name: {"context": context[text], "audio_scale": torch.tensor([scale])}
                 for name, (text, scale) in per_pass.items()}

        def model_fn(x, sigma, context, audio_scale):
            n = x.shape[0]
            with att.conditioned(audio=cond, audio_scale=audio_scale):
                return dit(x, sigma * 1000.0, context, clip_fea.expand(n, -1, -1), y.expand(n, -1, -1, -1, -1))

        def passes_fn(x, sigma, passes):
            return run_passes_batched(model_fn, x, sigma, passes, conds, max_batch=cfg.max_batch)

        fn = guided_model(passes_fn, controls.guidance(guidance or cfg.guidance()), sigmas)
        if inpaint is not None:
            source, mask = inpaint[0].to(noise), inpaint[1].to(noise)
            fn = inpainting(fn, source, mask, noise)
        with bar:
            out = SOLVERS[cfg.solver](fn, noise, sigmas, callback=lambda *a: bar.update(1), should_stop=should_stop)
        return out if inpaint is None else composite(out, source, mask)  # exact outside, not up to rounding


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


def load_components(paths: ModelPaths, device: str | torch.device | None = None) -> Components:
    """Load every model from local files on `device` (`devices.pick_device`: None/"auto" = the first
    CUDA GPU, else the CPU): the DiT in bf16 on CUDA, fp32 on the CPU. The VAE decode is tiled
    (bounded memory); the encode of the first frame is never tiled (as the official code)."""
    for path, what, where in ((paths.wan, "Wan2.1 I2V model", WHERE_WAN),  # all present before any loading
                              (paths.fantasytalking, "FantasyTalking weights", WHERE_FT),
                              (paths.wav2vec, "wav2vec2 model", WHERE_WAV2VEC), (paths.vae, "Wan VAE", WHERE_VAE),
                              (paths.text_encoder, "UMT5 text encoder", WHERE_TEXT),
                              (paths.clip_vision, "CLIP vision model", WHERE_CLIP)):
        require(path, what, where)
    device = pick_device(device)
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    dit = load_wan(paths.wan, dtype=dtype, device=device).eval()
    audio = load_audio_adapter(paths.fantasytalking)
    if dit.cfg.model_type != "i2v":
        raise ValueError(f"{paths.wan} is a Wan2.1 {dit.cfg.model_type.upper()} model; "
                         "FantasyTalking needs the I2V model")
    return Components(
        dit=dit,
        audio=audio.to(device=device, dtype=dtype).eval(),
        vae=load_vae(paths.vae, device=device, dtype=torch.float32, tiling=True),  # fp32 as Wan's VAE
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
