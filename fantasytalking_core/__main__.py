"""Command line: ``python -m fantasytalking_core {inspect,convert} ...``."""

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
    args = parser.parse_args(argv)
    from .checkpoints import CheckpointError

    try:
        return args.func(args)
    except (CheckpointError, FileExistsError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
