"""``tfdet``: the model zoo's command line."""

from __future__ import annotations

import argparse
import sys
from typing import Optional, Sequence


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="tfdet", description="TensorFlow 2 / Keras 3 object detection.")
    commands = parser.add_subparsers(dest="command", required=True)
    demo = commands.add_parser("demo", help="run the flow on the bundled raccoon images (no download)")
    demo.add_argument("--out", default="demo_output", help="output folder (default: ./demo_output)")
    demo.add_argument("--workers", type=int, default=None, help="converter worker processes (default: all cores)")
    demo.add_argument("--quiet", action="store_true", help="no progress bars")
    # Only argparse/json load here; pycocotools, NumPy and matplotlib load when the command runs.
    from tfdet.evaluation.cli import add_metrics_parser
    from tfdet.models_cli import add_models_parser

    add_metrics_parser(commands)
    add_models_parser(commands)
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command == "metrics":
        from tfdet.evaluation.cli import run_metrics

        return run_metrics(args, parser)
    if args.command == "models":
        from tfdet.models_cli import run_models

        return run_models(args, parser)
    if args.command == "demo":
        from tfdet.demo import run_demo

        run_demo(args.out, workers=args.workers, progress=not args.quiet)
        print(f"\ndone: records, label map and manifests in {args.out}/records, pictures in {args.out}/inspect")
    return 0


def entry_point() -> int:
    """The console script: ``main`` with a closed pipe (``tfdet models | head``) ending quietly."""
    try:
        return main()
    except BrokenPipeError:
        # Python would print a traceback while flushing stdout at exit; point it at devnull.
        import os

        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0


if __name__ == "__main__":
    sys.exit(entry_point())
