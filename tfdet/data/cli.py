"""``tfdet data synthetic``: write a synthetic shapes dataset as TFRecords.

``tfdet.cli`` adds the subcommand with ``add_data_parser`` and calls
``run_data``; ``main(argv)`` runs it on its own (``python -m tfdet.data.cli``).
Only argparse loads here; NumPy and Pillow load when the command runs, and
TensorFlow not at all.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any, Optional, Sequence


def _add_synthetic_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--output-dir", required=True, help="folder for the shards, label_map.pbtxt and manifest")
    parser.add_argument("--num-images", type=int, required=True, help="number of images to draw")
    parser.add_argument("--masks", action="store_true", help="also store one PNG instance mask per object")
    parser.add_argument("--image-size", type=int, default=128, help="side of the square images (default 128)")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    parser.add_argument("--split", default="train", help="split name, the shard prefix (e.g. train, validation)")
    parser.add_argument("--num-shards", type=int, default=2, help="number of shards (default 2)")
    parser.add_argument("--format", dest="image_format", choices=("jpeg", "png"), default="jpeg",
                        help="image encoding (default jpeg)")


def add_data_parser(commands: Any) -> argparse.ArgumentParser:
    """Adds the ``data`` subcommand to an ``add_subparsers()`` object; returns its parser."""
    parser = commands.add_parser(
        "data",
        help="dataset utilities (synthetic shapes)",
        description="Dataset utilities for tfdet.",
    )
    actions = parser.add_subparsers(dest="data_command", required=True)
    synthetic = actions.add_parser(
        "synthetic",
        help="write a synthetic shapes dataset (TFRecords, label map, manifest)",
        description="Draw 1-4 coloured circles, squares and triangles per image on a plain background and write "
        "them as TFRecords with the tfrecord-tools keys, label_map.pbtxt and a manifest.",
    )
    _add_synthetic_arguments(synthetic)
    return parser


def run_data(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    """Runs ``tfdet data ...``; prints what was written; returns the exit status."""
    if args.data_command != "synthetic":  # argparse already refuses others; kept for direct callers
        parser.error(f"unknown data command {args.data_command!r}")
    from tfdet.data.synthetic import write_synthetic_dataset

    try:
        manifest = write_synthetic_dataset(
            args.output_dir, args.num_images, image_size=args.image_size, masks=args.masks, seed=args.seed,
            num_shards=args.num_shards, split=args.split, image_format=args.image_format)
    except (OSError, ValueError) as error:
        print(f"tfdet data synthetic: error: {error}", file=sys.stderr)
        return 1
    print(f"wrote {args.num_images} images ({args.split}) to {args.output_dir}; manifest {manifest}")
    return 0


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Standalone entry point: ``python -m tfdet.data.cli synthetic --output-dir DIR --num-images N``."""
    parser = argparse.ArgumentParser(prog="tfdet")
    commands = parser.add_subparsers(dest="command", required=True)
    data_parser = add_data_parser(commands)
    return run_data(parser.parse_args(["data", *(argv if argv is not None else sys.argv[1:])]), data_parser)


if __name__ == "__main__":
    sys.exit(main())
