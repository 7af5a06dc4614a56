"""``tfdet``: the model zoo's command line.

``tfdet train|evaluate|export|predict|models|data|metrics|demo``. Each
subcommand lives beside the code it drives (``tfdet/training/cli.py``,
``tfdet/export/cli.py``, ...) as an ``add_*_parser(commands)`` /
``run_*(args, parser)`` pair; building the parser imports only argparse-level
code, so ``tfdet --help`` answers without loading TensorFlow.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from typing import Optional, Sequence

# command -> (module, parser adder, runner); "train" and "evaluate" share a module.
COMMANDS = {
    "train": ("tfdet.training.cli", "add_train_parser", "run_train"),
    "evaluate": ("tfdet.training.cli", "add_evaluate_parser", "run_evaluate"),
    "export": ("tfdet.export.cli", "add_export_parser", "run_export"),
    "predict": ("tfdet.inference.cli", "add_predict_parser", "run_predict"),
    "models": ("tfdet.models_cli", "add_models_parser", "run_models"),
    "data": ("tfdet.data.cli", "add_data_parser", "run_data"),
    "metrics": ("tfdet.evaluation.cli", "add_metrics_parser", "run_metrics"),
}


def _add_demo_parser(commands) -> None:
    demo = commands.add_parser(
        "demo",
        help="the whole flow on bundled and synthetic data: convert, train, evaluate, export, predict (no download)",
        description="Converts the bundled raccoon images, writes a synthetic shapes set, trains a small detector "
        "on the CPU, evaluates it on held-out images (COCO AP), exports a SavedModel and predicts with it.",
    )
    demo.add_argument("--output-dir", "--out", dest="out", default="demo_output",
                      help="output folder (default: ./demo_output)")
    demo.add_argument("--model", default="ssd",
                      help="ssd (default), yolo, retinanet, efficientdet, or a registry name with demo settings")
    demo.add_argument("--steps", type=int, default=None, help="training steps (default: the model's demo setting)")
    demo.add_argument("--workers", type=int, default=None, help="converter worker processes (default: all cores)")
    demo.add_argument("--quiet", action="store_true", help="no progress bars")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="tfdet", description="TensorFlow 2 / Keras 3 object detection.")
    commands = parser.add_subparsers(dest="command", required=True)
    _add_demo_parser(commands)
    for module, adder, _ in COMMANDS.values():
        getattr(importlib.import_module(module), adder)(commands)
    return parser


def _run_demo(args) -> int:
    from tfdet.demo import run_demo

    try:
        report = run_demo(args.out, model=args.model, workers=args.workers, progress=not args.quiet, steps=args.steps)
    except ValueError as error:
        print(f"tfdet demo: error: {error}", file=sys.stderr)
        return 2
    metrics = report["metrics"]
    print(f"\ndone in {report['seconds']:.0f} s: {report['model']} reached COCO AP {metrics.get('AP', float('nan')):.3f}, "
          f"AP50 {metrics.get('AP50', float('nan')):.3f} on held-out images.")
    print(f"  {args.out}/metrics.json, {report['saved_model']}/ (SavedModel), {report['predictions']}/ (pictures),")
    print(f"  {report['model_dir']}/ (checkpoints; tensorboard --logdir {report['model_dir']})")
    return 0


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command == "demo":
        return _run_demo(args)
    module, _, runner = COMMANDS[args.command]
    return getattr(importlib.import_module(module), runner)(args, parser)


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
