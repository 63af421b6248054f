"""Command line: ``python -m fantasytalking_core {inspect,convert,generate,dub} ...``.

Each command imports the core modules it needs inside its function, so ``--help`` and ``inspect``
start without loading torch models, the pipeline or the dub; the only core module allowed to do so
(tests/test_architecture.py), and no circle hides behind it.
"""

from __future__ import annotations

import argparse
import json
import sys
import typing
from typing import Any


def _inspect(args: argparse.Namespace) -> int:
    from .checkpoints import describe

    info = describe(args.file)
    if args.json:
        print(json.dumps(info, indent=2))
        return 0
    print(f"file:       {info['file']}")
    print(f"format:     {info['format']}")
    print(f"dtype:      {', '.join(f'{d} ({n} tensors)' for d, n in sorted(info['dtypes'].items()))}")
    print(f"parameters: {info['parameters']:,} ({info['parameters'] / 1e9:.3f} B)")
    print(f"blocks:     {info['blocks']}")
    if "config" in info:
        cfg = info["config"]
        print(f"model:      Wan2.1 {cfg['model_type'].upper()} dim {cfg['dim']}, {cfg['num_heads']} heads, "
              f"ffn {cfg['ffn_dim']}, in_dim {cfg['in_dim']}")
    for note in info["notes"]:
        print(f"note:       {note}")
    return 0


def _convert(args: argparse.Namespace) -> int:
    from .checkpoints import convert

    out = convert(args.input, args.output, layout=args.layout, overwrite=args.overwrite)
    print(f"wrote {out}")
    return 0


_GEN_PATHS = ("wan", "fantasytalking", "wav2vec", "vae", "text_encoder", "clip_vision", "tokenizer")
_SPEED = ("attention", "fast_rope", "compile", "fp8", "block_swap", "step_cache")
_GEN_OTHER = ("prompt", "negative_prompt", "preset", "image", "audio", "device", "timing", "mask", "region_guidance")
TINY_SIZE = 128
_PRESET_NOTES = {"size": f"; {TINY_SIZE} with --preset tiny"}


def config_fields() -> dict[str, tuple[type, Any]]:
    """GenerationConfig's fields: name -> (value type, the field) for the CLI and config files."""
    from dataclasses import fields

    from .pipeline import GenerationConfig

    hints = typing.get_type_hints(GenerationConfig)
    out = {}
    for f in fields(GenerationConfig):
        kinds = [k for k in typing.get_args(hints[f.name]) if k is not type(None)] or [hints[f.name]]
        out[f.name] = (kinds[0], f)
    return out


def add_config_flags(p: argparse.ArgumentParser, only: tuple[str, ...] | None = None) -> None:
    """One flag per GenerationConfig field (or per field in `only`), its name, type, choices, default
    and help taken from the field (``--cfg-audio``, ``--color-match/--no-color-match``, ...). Flags
    default to None, so a value in --config is only replaced by a flag actually given."""
    for name, (kind, f) in config_fields().items():
        if only is not None and name not in only:
            continue
        flag = "--" + name.replace("_", "-")
        shown = "none" if f.default is None else f"{f.default:g}" if isinstance(f.default, float) else f.default
        text = f"{f.metadata.get('help', '')} (default {shown}{_PRESET_NOTES.get(name, '')})"
        if kind is bool:
            p.add_argument(flag, action=argparse.BooleanOptionalAction, default=None, help=text)
        else:
            p.add_argument(flag, type=kind, choices=f.metadata.get("choices"), default=None,
                           metavar=None if "choices" in f.metadata else kind.__name__.upper(), help=text)


def _read_config(path: str) -> dict:
    """Settings from JSON (or YAML when PyYAML is installed); keys are the option names, - or _."""
    from pathlib import Path

    p = Path(path).expanduser()
    if not p.is_file():
        raise FileNotFoundError(f"config file not found: {p}")
    text = p.read_text(encoding="utf-8")
    if p.suffix.lower() in (".yaml", ".yml"):
        try:
            import yaml
        except ImportError:
            raise ValueError(f"{p} is YAML but PyYAML is not installed; pip install pyyaml or use JSON") from None
        data = yaml.safe_load(text)
    else:
        data = json.loads(text)
    if not isinstance(data, dict):
        raise ValueError(f"{p} must hold a mapping of option names to values, got {type(data).__name__}")
    return {k.replace("-", "_"): v for k, v in data.items()}


def _one_line_errors(run: typing.Callable[[], int]) -> int:
    """run(), with the errors a user can fix printed as one line (exit status 2), not a traceback."""
    from .checkpoints import CheckpointError

    try:
        return run()
    except (CheckpointError, FileExistsError, FileNotFoundError, NotImplementedError, ValueError,
            InterruptedError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2


def _generate(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    return _one_line_errors(lambda: _check_generate(args, parser))


def _check_generate(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    from pathlib import Path

    settings = _read_config(args.config) if args.config else {}
    allowed = set(config_fields()) | set(_GEN_PATHS) | set(_SPEED) | set(_GEN_OTHER)
    unknown = sorted(set(settings) - allowed)
    if unknown:
        raise ValueError(f"{args.config}: unknown settings {unknown}; known: {sorted(allowed)}")
    # options given on the command line win over the file (every option defaults to None)
    settings.update({key: value for key, value in vars(args).items() if value is not None})
    for key in ("image", "audio", "out"):
        if not settings.get(key):
            parser.error(f"generate needs --{key} (on the command line or in --config)")
    out = Path(settings["out"]).expanduser()
    if out.exists() and not settings.get("overwrite"):
        raise FileExistsError(f"{out} already exists; pass --overwrite to replace it or choose another --out")
    for key in ("image", "audio", "mask"):  # before any model is built
        for path in _listed(settings.get(key)):
            if not Path(path).expanduser().is_file():
                raise FileNotFoundError(f"--{key} file not found: {path}")
    return _run_generate(settings, out)


def _listed(value: typing.Any) -> list:
    """A repeatable option's value (the command line gives a list, a --config file one value or a list)."""
    return [] if value is None else list(value) if isinstance(value, (list, tuple)) else [value]


def speakers_audio(audio: typing.Any, timing: str | None, masks: typing.Any, region_guidance: bool = False) -> typing.Any:
    """What `generate` and `dub` give the pipeline for their --audio: one recording as it is, or, with
    several --audio, a --timing or --mask, the speakers (speakers.py: their tracks and regions)."""
    audios, masks = _listed(audio), _listed(masks)
    if len(audios) == 1 and not timing and not masks and not region_guidance:
        return audios[0]
    from .speakers import Speakers, Timing, arrange_tracks, read_mask

    tracks = arrange_tracks(audios, Timing.parse(timing or "turns"))
    return Speakers(tracks, [read_mask(m) for m in masks] or None, region_guidance=bool(region_guidance))


def runtime_options(settings: dict, steps: int):
    """perf.RuntimeOptions from the speed flags, or None when none is given (the plain DiT)."""
    from .perf import RuntimeOptions, StepCacheConfig

    given = {k: settings.get(k) for k in _SPEED if settings.get(k) not in (None, False)}
    if not given:
        return None
    if "step_cache" in given:
        given["step_cache"] = StepCacheConfig(threshold=given["step_cache"], end_step=steps - 1)
    return RuntimeOptions(**given)


def _components(get, command: str):
    """The models of `--preset tiny` (random weights; the frames print the UNTRAINED banner) or of the
    given model paths, whose absence is named. `get(key)`: the command's setting (None when not given)."""
    if get("preset") == "tiny":
        from .pipeline import tiny_components

        return tiny_components(device=get("device") or "cpu")
    missing = [f"--{k.replace('_', '-')}" for k in _GEN_PATHS[:-1] if not get(k)]
    if missing:
        raise ValueError(f"{command} needs the model files {', '.join(missing)} (or --preset tiny to check the "
                         f"pipeline with random weights); see README 'Model files'")
    from .pipeline import ModelPaths, load_components

    return load_components(ModelPaths(**{k: get(k) for k in _GEN_PATHS}), device=get("device"))


def _run_generate(settings: dict, out) -> int:
    import time

    from .pipeline import DEFAULT_PROMPT, NEGATIVE_PROMPT, FantasyTalkingPipeline, Generation, GenerationConfig

    tiny = settings.get("preset") == "tiny"
    values = {k: settings[k] for k in config_fields() if settings.get(k) is not None}
    if tiny:
        values.setdefault("size", TINY_SIZE)
    config = GenerationConfig.from_dict(values)
    start = time.perf_counter()
    audio = speakers_audio(settings["audio"], settings.get("timing"), settings.get("mask"),
                           bool(settings.get("region_guidance")))
    gen = Generation(settings["image"], audio, config)  # the plan, before any model is loaded
    print(gen.describe())
    for note in gen.notes:
        print(f"note: {note}")
    components = _components(settings.get, "generate")
    out.parent.mkdir(parents=True, exist_ok=True)
    path = FantasyTalkingPipeline(components).write(
        gen, out, settings.get("prompt") or DEFAULT_PROMPT, settings.get("negative_prompt") or NEGATIVE_PROMPT,
        overwrite=bool(settings.get("overwrite")), runtime=runtime_options(settings, config.steps))
    w, h = gen.portrait.size
    print(f"wrote {path}: {gen.frames} frames {w}x{h} at {config.fps:g} fps ({gen.frames / config.fps:.2f} s of video "
          f"for {gen.seconds:.2f} s of audio) in {len(gen.plans)} segment(s), {time.perf_counter() - start:.1f} s")
    return 0


# ------------------------------------------------------------------------------------- dub

# the GenerationConfig fields that mean something for a dub (the length and colour come from the video)
_DUB_CONFIG = ("size", "segment_frames", "motion_frames", "steps", "shift", "solver", "seed", "cfg_text", "cfg_audio",
               "audio_start", "audio_end", "two_pass_shortcut", "audio_scale", "max_batch", "omega_l", "omega_b")


def _dub(args: argparse.Namespace) -> int:
    return _one_line_errors(lambda: _check_dub(args))


def _check_dub(args: argparse.Namespace) -> int:
    from pathlib import Path

    out = Path(args.out).expanduser()
    for key in ("video", "audio", "mask"):
        for path in _listed(getattr(args, key)):
            if not Path(path).expanduser().is_file():
                raise FileNotFoundError(f"--{key} file not found: {path}")
    if out.exists() and out.resolve() == Path(args.video).expanduser().resolve():
        raise FileExistsError(f"--out {out} is the input video; the dub never replaces its source: choose another "
                              f"--out")
    if out.exists() and not args.overwrite:
        raise FileExistsError(f"{out} already exists; pass --overwrite to replace it or choose another --out")
    return _run_dub(args, out)


def _run_dub(args: argparse.Namespace, out) -> int:
    import time

    from .audio import read_audio
    from .dub import DubJob, dub_frames, mouth_masks, plan_dub
    from .dub_speakers import dub_speakers
    from .lipmask import face_mesh_track
    from .pipeline import DEFAULT_PROMPT, NEGATIVE_PROMPT, FantasyTalkingPipeline, GenerationConfig
    from .speakers import Speakers
    from .video import VideoWriter, read_video

    tiny = args.preset == "tiny"
    values = {k: getattr(args, k) for k in _DUB_CONFIG if getattr(args, k) is not None}
    if tiny:
        values.setdefault("size", TINY_SIZE)
    config = GenerationConfig.from_dict(values)
    start = time.perf_counter()
    voices = speakers_audio(args.audio, args.timing, args.mask, bool(args.region_guidance))
    speakers = voices if isinstance(voices, Speakers) else None  # several people talking (dub_speakers.py)
    source = read_video(args.video)  # every frame in memory (uint8)
    track = speakers.tracks.soundtrack if speakers else read_audio(voices, max_channels=2)
    audio = None if speakers else track.to_16k()
    plan = plan_dub(len(source.frames), source.fps, speakers.tracks.seconds if speakers else audio.numel() / 16000,
                    args.fit, config.segment_frames, config.motion_frames, config.fps)
    print(plan.describe())
    faces = speakers.tracks.count if speakers else 1
    mesh = face_mesh_track(source.frames, max_faces=faces)  # every speaker's mouth, and their faces
    masks = mouth_masks(source.frames, args.dilation, args.jaw, args.feather, track=mesh, faces=faces)
    notes = plan.notes + masks.notes
    if speakers:
        audio = dub_speakers(speakers, source.frames[0], mesh.faces)
        notes += speakers.tracks.notes + [f"speaker regions: {audio.regions.source}"]
    for note in notes:
        print(f"note: {note}")
    job = DubJob(source.frames, masks.masks, plan, config.size, paste_back=args.paste_back)
    components = _components(lambda key: getattr(args, key, None), "dub")
    out.parent.mkdir(parents=True, exist_ok=True)
    pipe = FantasyTalkingPipeline(components)
    with VideoWriter(out, plan.source_fps, track.waveform, track.sample_rate, overwrite=args.overwrite) as writer:
        for chunk in dub_frames(pipe, job, audio, config, args.prompt or DEFAULT_PROMPT,
                                args.negative_prompt or NEGATIVE_PROMPT, runtime=runtime_options(vars(args), config.steps)):
            writer.write(chunk)
    h, w = source.frames.shape[1:3]
    print(f"wrote {writer.path}: {plan.frames} frames {w}x{h} at {plan.source_fps:g} fps ({plan.seconds:.2f} s), "
          f"mouth regenerated in {int(masks.found.sum())} of {len(masks.found)} source frames at {job.width}x"
          f"{job.height}, {len(plan.plans)} segment(s), {time.perf_counter() - start:.1f} s")
    return 0


def _add_model_paths(p: argparse.ArgumentParser) -> None:
    for name, where in (("wan", "diffusion_models/ Wan2.1-I2V-14B file or folder"),
                        ("fantasytalking", "model_patches/fantasytalking_model.ckpt"),
                        ("wav2vec", "audio_encoders/ wav2vec2-base-960h folder or file"),
                        ("vae", "vae/wan_2.1_vae.safetensors or Wan2.1_VAE.pth"),
                        ("text-encoder", "text_encoders/umt5_xxl_*.safetensors, Wan's .pth or a folder"),
                        ("tokenizer", "google/umt5-xxl tokenizer folder (if not beside the text encoder)"),
                        ("clip-vision", "clip_vision/clip_vision_h.safetensors or Wan's .pth")):
        p.add_argument(f"--{name}", metavar="PATH", help=where)
    p.add_argument("--device", help="cuda, cuda:1, cpu (default: cuda if available)")


def _add_dub(sub) -> None:
    from .dub import FIT_MODES

    p = sub.add_parser("dub", help="an existing video + new speech -> the same video, only the mouth regenerated "
                                   "(docs/dubbing.md)")
    p.add_argument("--video", required=True, help="the source video (mp4, mov, mkv, ...): its frame rate and size "
                                                  "are kept")
    p.add_argument("--audio", required=True, action="append",
                   help="the new speech: any file PyAV decodes; once per speaker for several people talking (up to "
                        "4, each voice moving only its own face; docs/speakers.md)")
    _add_speakers(p, "the video's size (a frame of it)", "the faces found on the first frame, numbered left to right "
                                                         "and followed from frame to frame")
    p.add_argument("--out", required=True, help="output .mp4; never the input, never replaced unless --overwrite")
    p.add_argument("--overwrite", action="store_true", help="replace OUT if it exists (never the input video)")
    p.add_argument("--fit", choices=FIT_MODES, default="cut",
                   help="when the new audio and the video differ in length: cut (default: the video's length, the "
                        "audio cut or padded with silence), loop (the audio's length, the video looped), hold (the "
                        "audio's length, the last frame held); loop and hold cut the video to a shorter audio")
    p.add_argument("--dilation", type=int, default=8, help="grow the mouth mask by this many pixels (default 8)")
    p.add_argument("--jaw", action=argparse.BooleanOptionalAction, default=True,
                   help="regenerate the lower face from the jaw line to the nose, not just the lips (default on)")
    p.add_argument("--feather", type=int, default=8, help="soft edge of the mask in pixels (default 8)")
    p.add_argument("--paste-back", action=argparse.BooleanOptionalAction, default=True,
                   help="outside the mask keep the source's own pixels (default); off: the model's frames everywhere "
                        "(the VAE round trip outside the mask)")
    p.add_argument("--prompt", help="what the video shows (default: 'A person is talking.')")
    p.add_argument("--negative-prompt", help="default: the official FantasyTalking negative prompt")
    p.add_argument("--preset", choices=("tiny",), help="tiny: built-in random weights, CPU, checks the pipeline only")
    _add_model_paths(p)
    add_config_flags(p.add_argument_group("sampling settings (pipeline.GenerationConfig; the model runs at 23 fps)"),
                     only=_DUB_CONFIG)
    _add_speed(p)
    p.set_defaults(func=_dub)


def _swap_count(value: str) -> int | str:
    """--block-swap: a block count or 'auto'."""
    if value == "auto":
        return value
    try:
        return int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number of blocks or 'auto', got {value!r}") from None


def _add_speed(p: argparse.ArgumentParser) -> None:
    from .attention import BACKENDS
    from .perf.options import FP8_MODES

    speed = p.add_argument_group("speed and memory (fantasytalking_core.perf; docs/performance.md)")
    speed.add_argument("--attention", choices=BACKENDS, help="attention kernel (default auto)")
    speed.add_argument("--fast-rope", action="store_true", default=None, help="float32 RoPE (fusable by --compile)")
    speed.add_argument("--compile", action="store_true", default=None, help="torch.compile every DiT block")
    speed.add_argument("--fp8", choices=FP8_MODES, help="fp8 block weights; e4m3fn_fast also fp8 matmuls (sm >= 8.9)")
    speed.add_argument("--block-swap", type=_swap_count, metavar="N|auto",
                       help="keep N blocks on the CPU and stream them in; auto: as few as this GPU needs (from the "
                            "peak predicted for the model, batch and size)")
    speed.add_argument("--step-cache", type=float, metavar="THRESHOLD",
                       help="skip steps whose input changed less than THRESHOLD (0 = never; the last step always runs)")


def _add_speakers(p: argparse.ArgumentParser, size: str = "the portrait's size",
                  automatic: str = "the faces found on the portrait, numbered left to right") -> None:
    g = p.add_argument_group("several speakers (docs/speakers.md)")
    g.add_argument("--timing", help="how the speakers' audio lies in time: turns (default with several --audio: one "
                                    "after the other), turns:GAP (GAP seconds between), together (all from the start, "
                                    "overlaps allowed), channels (one stereo recording, a speaker per channel), or who "
                                    "speaks when in one recording: '0-3.2:1, 3.2-7.5:2' (seconds:speaker)")
    g.add_argument("--mask", action="append", help=f"speaker's region: an image file (white = the speaker) at "
                                                   f"{size}, once per speaker in order; default: {automatic}")
    g.add_argument("--region-guidance", action="store_true", default=None,
                   help="apply cfg_audio only inside the speakers' regions (motion leaking elsewhere is not amplified)")


def _add_generate(sub) -> None:
    p = sub.add_parser("generate", help="portrait + audio (+ prompt) -> talking video (mp4 with the audio)")
    p.add_argument("--image", help="portrait image (png, jpg, ...)")
    p.add_argument("--audio", action="append",
                   help="speech audio: any file PyAV decodes (wav, flac, ogg, mp3, m4a, opus, a video's sound); give "
                        "it once per speaker for several people talking (up to 4; docs/speakers.md)")
    _add_speakers(p)
    p.add_argument("--prompt", help="what the video shows (default: 'A person is talking.')")
    p.add_argument("--negative-prompt", help="default: the official FantasyTalking negative prompt")
    p.add_argument("--out", help="output .mp4; never replaced unless --overwrite")
    p.add_argument("--overwrite", action="store_true", default=None, help="replace OUT if it exists")
    p.add_argument("--preset", choices=("tiny",), help="tiny: built-in random weights, CPU, checks the pipeline only")
    p.add_argument("--config", help="JSON (or YAML) file of these options, e.g. {\"steps\": 30, \"wan\": \"...\"}")
    _add_model_paths(p)
    add_config_flags(p.add_argument_group(
        "generation settings (pipeline.GenerationConfig; the defaults follow the official FantasyTalking code)"))
    _add_speed(p)
    p.set_defaults(func=_generate)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m fantasytalking_core", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("inspect", help="print a weight file's detected format, dtype, parameter and block counts")
    p.add_argument("file")
    p.add_argument("--json", action="store_true", help="print the description as JSON")
    p.set_defaults(func=_inspect)
    p = sub.add_parser("convert", help="convert FantasyTalking weights (e.g. the official .ckpt) to safetensors")
    p.add_argument("input")
    p.add_argument("output")
    p.add_argument("--layout", choices=("adapters", "official"), default="adapters",
                   help="'adapters': this project's adapter file; 'official': proj_model.*/audio_processor.* keys")
    p.add_argument("--overwrite", action="store_true", help="replace OUTPUT if it exists")
    p.set_defaults(func=_convert)
    _add_generate(sub)
    _add_dub(sub)
    args = parser.parse_args(argv)
    if args.func is _generate:
        return _generate(args, parser)
    if args.func is _dub:
        return _dub(args)
    from .checkpoints import CheckpointError

    try:
        return args.func(args)
    except (CheckpointError, FileExistsError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
