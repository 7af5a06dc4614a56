"""``tfdet export``: a trained model as a SavedModel (TF OD API signatures), TFLite and/or ONNX.

``tfdet.cli`` adds the subcommand with ``add_export_parser`` and calls
``run_export``; TensorFlow and the model code load only when the command runs.

Output layout under ``--output DIR``: ``DIR/saved_model/`` (always written
first; the other formats are converted from the detector at the same
settings), ``DIR/model.tflite``, ``DIR/model.onnx``.
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any

FORMATS = ("saved_model", "tflite", "onnx")


def add_export_parser(commands: Any) -> argparse.ArgumentParser:
    """Adds the ``export`` subcommand to an ``add_subparsers()`` object; returns its parser."""
    parser = commands.add_parser(
        "export",
        help="export a trained detector (SavedModel, TFLite, ONNX)",
        description="Export a training run's checkpoint or a .keras detector as a SavedModel with the TF Object "
        "Detection API signatures (serving_default, encoded_image_string_tensor, tf_example), and optionally as "
        "TFLite (builtin ops) and ONNX (needs tf2onnx).",
    )
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--checkpoint-dir", metavar="MODEL_DIR",
                        help="a training run's model_dir (config.yaml + checkpoints/)")
    source.add_argument("--model", metavar="X.keras", help="a detector saved with detector.save('x.keras')")
    parser.add_argument("--checkpoint", default="latest",
                        help="with --checkpoint-dir: latest (default), best, a folder or a ckpt-N prefix")
    parser.add_argument("--output", required=True, metavar="DIR", help="output folder")
    parser.add_argument("--format", nargs="+", choices=FORMATS, default=None,
                        help="formats to write (default: the config's export.formats, else saved_model)")
    parser.add_argument("--image-size", default=None, metavar="S|HxW",
                        help="model input size for detectors built for any size (YOLO); default: the training "
                        "size, else 416")
    parser.add_argument("--label-map", default=None, help="label map (default: the run's; class_N names otherwise)")
    parser.add_argument("--max-detections", type=int, default=None,
                        help="detections per image (default: config/model)")
    parser.add_argument("--score-threshold", type=float, default=None, help="NMS score threshold (default: config/model)")
    parser.add_argument("--tflite-input-dtype", choices=("uint8", "float32"), default="uint8",
                        help="input dtype of the TFLite/ONNX models (default uint8)")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing export")
    return parser


def _image_size(parser: argparse.ArgumentParser, text: Any):
    if text is None:
        return None
    try:
        parts = [int(part) for part in str(text).lower().split("x")]
    except ValueError:
        parts = []
    if len(parts) not in (1, 2) or min(parts) < 1:
        parser.error(f"--image-size: expected S or HxW (positive integers), got {text!r}")
    return parts[0] if len(parts) == 1 else tuple(parts)


def _first(*values):
    return next((value for value in values if value is not None), None)


def run_export(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    """Runs ``tfdet export``; prints the written paths; returns the exit status."""
    image_size = _image_size(parser, args.image_size)
    if args.max_detections is not None and args.max_detections < 1:
        parser.error("--max-detections must be >= 1")
    from tfdet.export.errors import ExportError

    try:
        written = _export(args, image_size)
    except ExportError as error:
        print(f"tfdet export: error: {error}", file=sys.stderr)
        return 1
    for kind, path in written:
        print(f"{kind}: {path}")
    return 0


def _export(args: argparse.Namespace, image_size) -> list[tuple[str, str]]:
    from tfdet.export.saved_model import export_saved_model
    from tfdet.export.sources import any_size_export_size, detector_from_keras, detector_from_model_dir

    config, label_map = None, args.label_map
    if args.checkpoint_dir:
        detector, config, names = detector_from_model_dir(args.checkpoint_dir, args.checkpoint)
        label_map = label_map or names
    else:
        detector = detector_from_keras(args.model)
    formats = args.format or (list(config.export.formats) if config is not None else None) or ["saved_model"]
    export = config.export if config is not None else None
    max_detections = _first(args.max_detections, export and export.max_detections)
    score_threshold = _first(args.score_threshold, export and export.score_threshold)
    if None in tuple(detector.image_size):
        image_size = _first(image_size, any_size_export_size(config))
    settings = {"max_detections": max_detections, "score_threshold": score_threshold, "image_size": image_size}
    os.makedirs(args.output, exist_ok=True)
    written = []
    saved_model = os.path.join(args.output, "saved_model")
    written.append(("saved_model", export_saved_model(detector, saved_model, label_map=label_map, config=config,
                                                      overwrite=args.overwrite, **settings)))
    for kind in formats:
        if kind == "tflite":
            from tfdet.export.tflite import export_tflite

            path = _target(os.path.join(args.output, "model.tflite"), args.overwrite)
            written.append(("tflite", export_tflite(detector, path, input_dtype=args.tflite_input_dtype, **settings)))
        elif kind == "onnx":
            from tfdet.export.onnx import export_onnx

            path = _target(os.path.join(args.output, "model.onnx"), args.overwrite)
            written.append(("onnx", export_onnx(detector, path, input_dtype=args.tflite_input_dtype, **settings)))
    return written


def _target(path: str, overwrite: bool) -> str:
    from tfdet.export.errors import ExportError

    if os.path.exists(path) and not overwrite:
        raise ExportError(f"{path}: already exists (pass --overwrite to replace it)")
    return path
