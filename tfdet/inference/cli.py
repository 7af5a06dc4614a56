"""``tfdet predict``: an exported detector on an image, a folder of images or a video.

``tfdet.cli`` adds the subcommand with ``add_predict_parser`` and calls
``run_predict``; TensorFlow loads only when the command runs.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any


def add_predict_parser(commands: Any) -> argparse.ArgumentParser:
    """Adds the ``predict`` subcommand to an ``add_subparsers()`` object; returns its parser."""
    parser = commands.add_parser(
        "predict",
        help="run an exported detector on images, a folder or a video",
        description="Draw an exported detector's boxes, class names and scores on images (PNG) or a video (mp4), "
        "and write the detections as COCO results (detections.json) with the image list (images.json).",
    )
    parser.add_argument("--model", required=True, metavar="EXPORT_DIR",
                        help="a SavedModel written by tfdet export (DIR or DIR/saved_model)")
    parser.add_argument("--input", required=True, nargs="+", metavar="PATH",
                        help="an image, a folder of images, a video, or several images")
    parser.add_argument("--output", required=True, metavar="DIR", help="output folder")
    parser.add_argument("--threshold", type=float, default=0.3, help="lowest score drawn and written (default 0.3)")
    parser.add_argument("--label-map", default=None, help="label map overriding the export's own")
    return parser


def run_predict(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    """Runs ``tfdet predict``; prints a summary; returns the exit status (1 when nothing could be read)."""
    if not 0.0 <= args.threshold <= 1.0:
        parser.error("--threshold must lie in [0, 1]")
    from tfdet.inference.exported import PredictError
    from tfdet.inference.inputs import InputError
    from tfdet.inference.predictor import predict

    inputs = args.input[0] if len(args.input) == 1 else args.input
    try:
        summary = predict(args.model, inputs, args.output, threshold=args.threshold, label_map=args.label_map)
    except (InputError, PredictError, OSError) as error:
        print(f"tfdet predict: error: {error}", file=sys.stderr)
        return 1
    unit = "frames" if summary["kind"] == "video" else "images"
    print(f"{summary['images']} {unit}, {summary['detections']} detections (score >= {summary['threshold']:g}) "
          f"-> {args.output}")
    for item in summary["skipped"]:
        print(f"skipped {item['file']}: {item['reason']}", file=sys.stderr)
    if summary["num_skipped"]:
        print(f"{summary['num_skipped']} input(s) skipped", file=sys.stderr)
    print(f"COCO results: {summary['results']} (images: {summary['images_json']})")
    return 0 if summary["images"] else 1
