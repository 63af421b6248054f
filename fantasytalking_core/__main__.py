"""Command line: ``python -m fantasytalking_core {inspect,convert,generate} ...``."""

from __future__ import annotations

import argparse
import json
import sys


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


# generate: CLI name -> GenerationConfig field (None = not a config field)
_GEN_SETTINGS = {"steps": int, "seed": int, "cfg_text": float, "cfg_audio": float, "audio_start": float,
                 "audio_end": float, "audio_scale": float, "fps": float, "max_frames": int, "num_frames": int,
                 "segment_frames": int, "overlap_frames": int, "size": int, "shift": float, "max_batch": int}
_GEN_PATHS = ("wan", "fantasytalking", "wav2vec", "vae", "text_encoder", "clip_vision", "tokenizer")
TINY_SIZE = 128


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


def _generate(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    from pathlib import Path

    from .checkpoints import CheckpointError

    try:
        settings = _read_config(args.config) if args.config else {}
        allowed = set(_GEN_SETTINGS) | set(_GEN_PATHS) | {"solver", "prompt", "negative_prompt", "preset",
                                                          "image", "audio", "no_color_match", "device"}
        unknown = sorted(set(settings) - allowed)
        if unknown:
            raise ValueError(f"{args.config}: unknown settings {unknown}; known: {sorted(allowed)}")
        for key, value in vars(args).items():  # options given on the command line win over the file
            if value is not None and value is not False:
                settings[key] = value
        for key in ("image", "audio", "out"):
            if not settings.get(key):
                parser.error(f"generate needs --{key} (on the command line or in --config)")
        out = Path(settings["out"]).expanduser()
        if out.exists() and not settings.get("overwrite"):
            raise FileExistsError(f"{out} already exists; pass --overwrite to replace it or choose another --out")
        for key in ("image", "audio"):  # before any model is built
            if not Path(settings[key]).expanduser().is_file():
                raise FileNotFoundError(f"--{key} file not found: {settings[key]}")
        return _run_generate(settings, out)
    except (CheckpointError, FileExistsError, FileNotFoundError, NotImplementedError, ValueError,
            InterruptedError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2


def runtime_options(settings: dict, steps: int):
    """perf.RuntimeOptions from the speed flags, or None when none is given (the plain DiT)."""
    from .perf import RuntimeOptions, StepCacheConfig

    given = {k: settings.get(k) for k in ("attention", "fast_rope", "compile", "fp8", "block_swap", "step_cache")
             if settings.get(k) not in (None, False)}
    if not given:
        return None
    if "step_cache" in given:
        given["step_cache"] = StepCacheConfig(threshold=given["step_cache"], end_step=steps - 1)
    return RuntimeOptions(**given)


def _run_generate(settings: dict, out) -> int:
    import time

    from .pipeline import DEFAULT_PROMPT, NEGATIVE_PROMPT, FantasyTalkingPipeline, GenerationConfig, ModelPaths

    tiny = settings.get("preset") == "tiny"
    values = {k: settings[k] for k in _GEN_SETTINGS if settings.get(k) is not None}
    if tiny:
        values.setdefault("size", TINY_SIZE)
    if settings.get("solver"):
        values["solver"] = settings["solver"]
    if settings.get("no_color_match"):
        values["color_match"] = False
    config = GenerationConfig.from_dict(values)
    start = time.perf_counter()
    if tiny:
        from .pipeline import tiny_components  # generate() prints the UNTRAINED banner

        components = tiny_components(device=settings.get("device") or "cpu")
    else:
        missing = [f"--{k.replace('_', '-')}" for k in _GEN_PATHS[:-1] if not settings.get(k)]
        if missing:
            raise ValueError(f"generate needs the model files {', '.join(missing)} (or --preset tiny to check the "
                             f"pipeline with random weights); see README 'Model files and where they go'")
        from .pipeline import load_components

        paths = ModelPaths(**{k: settings.get(k) for k in _GEN_PATHS})
        components = load_components(paths, device=settings.get("device"))
    result = FantasyTalkingPipeline(components).generate(
        settings["image"], settings["audio"], settings.get("prompt") or DEFAULT_PROMPT,
        settings.get("negative_prompt") or NEGATIVE_PROMPT, config, runtime=runtime_options(settings, config.steps))
    out.parent.mkdir(parents=True, exist_ok=True)
    path = result.save(out, overwrite=bool(settings.get("overwrite")))
    h, w = result.frames.shape[1:3]
    print(f"wrote {path}: {result.frames.shape[0]} frames {w}x{h} at {config.fps:g} fps in {len(result.plans)} "
          f"segment(s), {time.perf_counter() - start:.1f} s")
    return 0


def _add_generate(sub) -> None:
    p = sub.add_parser("generate", help="portrait + audio (+ prompt) -> talking video (mp4 with the audio)")
    p.add_argument("--image", help="portrait image (png, jpg, ...)")
    p.add_argument("--audio", help="speech audio: any file PyAV decodes (wav, flac, ogg, mp3, m4a, opus, a video's sound)")
    p.add_argument("--prompt", help="what the video shows (default: 'A person is talking.')")
    p.add_argument("--negative-prompt", help="default: the official FantasyTalking negative prompt")
    p.add_argument("--out", help="output .mp4; never replaced unless --overwrite")
    p.add_argument("--overwrite", action="store_true", help="replace OUT if it exists")
    p.add_argument("--preset", choices=("tiny",), help="tiny: built-in random weights, CPU, checks the pipeline only")
    p.add_argument("--config", help="JSON (or YAML) file of these options, e.g. {\"steps\": 30, \"wan\": \"...\"}")
    for name, where in (("wan", "diffusion_models/ Wan2.1-I2V-14B file or folder"),
                        ("fantasytalking", "model_patches/fantasytalking_model.ckpt"),
                        ("wav2vec", "audio_encoders/ wav2vec2-base-960h folder or file"),
                        ("vae", "vae/wan_2.1_vae.safetensors or Wan2.1_VAE.pth"),
                        ("text-encoder", "text_encoders/umt5_xxl_*.safetensors, Wan's .pth or a folder"),
                        ("tokenizer", "google/umt5-xxl tokenizer folder (if not beside the text encoder)"),
                        ("clip-vision", "clip_vision/clip_vision_h.safetensors or Wan's .pth")):
        p.add_argument(f"--{name}", metavar="PATH", help=where)
    for name, kind in _GEN_SETTINGS.items():
        p.add_argument(f"--{name.replace('_', '-')}", type=kind, help=_GEN_HELP.get(name))
    p.add_argument("--solver", choices=("unipc", "euler"), help="default unipc")
    p.add_argument("--no-color-match", action="store_true", help="do not colour-match later segments to earlier ones")
    p.add_argument("--device", help="cuda, cuda:1, cpu (default: cuda if available)")
    from .attention import BACKENDS
    from .perf.options import FP8_MODES

    speed = p.add_argument_group("speed and memory (fantasytalking_core.perf; README 'Performance')")
    speed.add_argument("--attention", choices=BACKENDS, help="attention kernel (default auto)")
    speed.add_argument("--fast-rope", action="store_true", help="float32 RoPE (fusable by --compile)")
    speed.add_argument("--compile", action="store_true", help="torch.compile every DiT block")
    speed.add_argument("--fp8", choices=FP8_MODES, help="fp8 block weights; e4m3fn_fast also fp8 matmuls (sm >= 8.9)")
    speed.add_argument("--block-swap", type=int, metavar="N", help="keep N blocks on the CPU and stream them in")
    speed.add_argument("--step-cache", type=float, metavar="THRESHOLD",
                       help="skip steps whose input changed less than THRESHOLD (0 = never; the last step always runs)")
    p.set_defaults(func=_generate)


_GEN_HELP = {
    "steps": "sampling steps (default 30)", "seed": "noise seed (default 1111; segment i uses seed + i)",
    "cfg_text": "text guidance (default 5)", "cfg_audio": "audio guidance (default 4.5)",
    "audio_start": "audio guidance from this fraction of the steps (default 0)",
    "audio_end": "audio guidance until this fraction of the steps (default 1)",
    "audio_scale": "audio attention weight lambda_1 (default 1)", "fps": "frames per second (default 23)",
    "max_frames": "frame cap as the official code (default 81); 0: the whole audio, segment after segment",
    "num_frames": "exact frame count (4k+1) instead of the audio length",
    "segment_frames": "most frames per segment (default 81)", "overlap_frames": "frames shared by segments (4j+1, default 1)",
    "size": f"longest edge in pixels, multiple of 16 (default 512; {TINY_SIZE} with --preset tiny)",
    "shift": "schedule shift (default 5)", "max_batch": "most rows per DiT call (1: guidance passes one by one)",
}


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
    args = parser.parse_args(argv)
    if args.func is _generate:
        return _generate(args, parser)
    from .checkpoints import CheckpointError

    try:
        return args.func(args)
    except (CheckpointError, FileExistsError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
