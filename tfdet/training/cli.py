"""``tfdet train`` and ``tfdet evaluate``.

``tfdet.cli`` adds the subcommands with :func:`add_train_parser` /
:func:`add_evaluate_parser` and calls :func:`run_train` / :func:`run_evaluate`;
TensorFlow loads only when a command runs. Exit status: 0 done, 1 training
stopped on a non-finite loss, 2 a config or setup error (one line on stderr).
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

STRATEGY_CHOICES = ("auto", "one_device", "mirrored", "multi_worker_mirrored", "tpu")


def _add_config_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", required=True, help="experiment YAML (see tfdet.config)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="override a config value, e.g. --set train.steps=2000 (repeatable)")
    parser.add_argument("--model-dir", default=None, help="runtime.model_dir (checkpoints, logs, metrics)")
    parser.add_argument("--strategy", choices=STRATEGY_CHOICES, default=None, help="runtime.strategy")
    parser.add_argument("--tpu", default=None, metavar="ADDR", help="runtime.tpu: TPU name or grpc address")


def add_train_parser(commands: Any) -> argparse.ArgumentParser:
    """Adds ``train`` to an ``add_subparsers()`` object; returns its parser."""
    parser = commands.add_parser(
        "train", help="train a detector from a config (resumes from the model directory)",
        description="Train with the custom distributed loop; a run restarted on the same model directory "
        "resumes from its newest checkpoint.",
    )
    _add_config_arguments(parser)
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    return parser


def add_evaluate_parser(commands: Any) -> argparse.ArgumentParser:
    """Adds ``evaluate`` to an ``add_subparsers()`` object; returns its parser."""
    parser = commands.add_parser(
        "evaluate", help="COCO/VOC metrics of a checkpoint on data.eval_files",
        description="Evaluate a checkpoint of the model directory (EMA weights when the run used EMA).",
    )
    _add_config_arguments(parser)
    parser.add_argument("--checkpoint", default="latest", metavar="PATH|latest|best",
                        help="latest (default), best, a folder, or a ckpt-N prefix")
    parser.add_argument("--json", action="store_true", help="print the metrics as one JSON object")
    return parser


def _load(args: argparse.Namespace):
    from tfdet.config import load_config

    config = load_config(args.config, overrides=list(args.set))
    if args.model_dir is not None:
        config.runtime.model_dir = args.model_dir
    if args.strategy is not None:
        config.runtime.strategy = args.strategy
    if args.tpu is not None:
        config.runtime.tpu = args.tpu
    return config


def _fail(command: str, error: BaseException, status: int) -> int:
    print(f"tfdet {command}: error: {error}", file=sys.stderr)
    return status


def run_train(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    """Runs ``tfdet train``; returns the exit status."""
    try:
        config = _load(args)
        from tfdet.training.trainer import NonFiniteLossError, train

        try:
            result = train(config, progress=not args.quiet)
        except NonFiniteLossError as error:
            return _fail("train", error, 1)
    except (ValueError, OSError) as error:
        # ConfigError, StrategyError, TrainingSetupError, DataPipelineError, ... are ValueErrors naming the key.
        return _fail("train", error, 2)
    metrics = result.get("metrics") or {}
    summary = ", ".join(f"{k} {v:.4f}" for k, v in metrics.items() if isinstance(v, float) and not k.startswith("AP/"))
    print(f"done: step {result['step']}, checkpoint {result['checkpoint']}" + (f"; {summary}" if summary else ""))
    return 0


def run_evaluate(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    """Runs ``tfdet evaluate``; returns the exit status."""
    try:
        config = _load(args)
        from tfdet.training.trainer import evaluate

        metrics = evaluate(config, checkpoint=args.checkpoint)
    except (ValueError, OSError) as error:
        return _fail("evaluate", error, 2)
    if args.json:
        print(json.dumps({k: (None if v != v else v) for k, v in metrics.items()}, allow_nan=False))
    else:
        for key, value in metrics.items():
            print(f"{key:<24}{value:.4f}")
    return 0
