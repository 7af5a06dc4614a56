"""``tfdet metrics coco|voc``: COCO or VOC AP of a COCO result file against a COCO annotation file.

``tfdet.cli`` adds the subcommand with ``add_metrics_parser`` and calls
``run_metrics``; the evaluation modules load only when the command runs.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from typing import Any


def add_metrics_parser(commands: Any) -> argparse.ArgumentParser:
    """Adds the ``metrics`` subcommand to an ``add_subparsers()`` object; returns its parser."""
    parser = commands.add_parser(
        "metrics",
        help="COCO or Pascal VOC AP of a COCO result file",
        description="Evaluate a COCO result list (image_id, category_id, bbox [x,y,w,h], score[, segmentation]) "
        "against a COCO annotation file, with COCOeval (coco) or the Pascal VOC devkit rules (voc).",
    )
    parser.add_argument("protocol", choices=("coco", "voc"), help="coco: the 12 COCOeval numbers; voc: per-class AP and mAP")
    parser.add_argument("--gt", required=True, help="COCO annotation JSON (ground truth)")
    parser.add_argument("--detections", required=True, help="COCO result JSON (a list of detections)")
    parser.add_argument("--iou-type", choices=("bbox", "segm"), default=None, help="coco only: bbox (default) or segm")
    parser.add_argument("--iou", type=float, default=None, help="voc only: IoU threshold (default 0.5)")
    parser.add_argument("--method", choices=("11point", "allpoint"), default=None,
                        help="voc only: 11point (VOC2007) or allpoint (VOC2010+, default)")
    parser.add_argument("--pixel-offset", type=float, default=None,
                        help="voc only: added to box widths/heights in IoU; 1 = VOC devkit integer pixels, "
                        "0 = continuous coordinates (default 0)")
    parser.add_argument("--plots", default=None, metavar="DIR", help="write precision-recall PNGs (per class and summary) here")
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of the table")
    return parser


def _check_options(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    if args.protocol == "coco":
        given = [flag for flag, value in (("--iou", args.iou), ("--method", args.method),
                                          ("--pixel-offset", args.pixel_offset)) if value is not None]
        if given:
            parser.error(f"{', '.join(given)}: voc only (coco averages IoU 0.50:0.95 with its own rules)")
    elif args.iou_type is not None and args.iou_type != "bbox":
        parser.error("voc evaluates boxes only; --iou-type segm needs coco")
    if args.iou is not None and not 0.0 < args.iou <= 1.0:
        parser.error("--iou must lie in (0, 1]")


def _finite_or_none(value: float) -> Any:
    # JSON has no NaN; a class-less mAP prints as null.
    return None if isinstance(value, float) and math.isnan(value) else value


def _run_coco(args: argparse.Namespace) -> tuple[dict, str, Any]:
    from tfdet.evaluation.coco import CocoEvaluator

    evaluator = CocoEvaluator(args.gt, iou_type=args.iou_type or "bbox")
    evaluator.add_results(args.detections)
    metrics = evaluator.evaluate()
    table = f"COCO {evaluator.iou_type} evaluation ({evaluator.backend})\n{evaluator.summary}"
    plots = None
    if args.plots:
        plots = (evaluator.pr_curves(0.5), None, f"COCO {evaluator.iou_type} IoU 0.5")
    return metrics, table, plots


def _run_voc(args: argparse.Namespace) -> tuple[dict, str, Any]:
    from tfdet.evaluation.curves import voc_curves
    from tfdet.evaluation.voc import evaluator_from_coco, metrics_dict

    iou = 0.5 if args.iou is None else args.iou
    method = args.method or "allpoint"
    offset = 0.0 if args.pixel_offset is None else args.pixel_offset
    evaluator = evaluator_from_coco(args.gt, args.detections, iou, method, offset)
    results = evaluator.evaluate_classes()
    metrics = metrics_dict(results)
    name = {"11point": "11-point (VOC2007)", "allpoint": "all-point (VOC2010+)"}[method]
    lines = [f"Pascal VOC AP, IoU >= {iou:g}, {name}, pixel offset {offset:g}",
             f"{'class':<24}{'gt':>7}{'dets':>8}{'tp':>7}{'AP %':>9}"]
    for result in results:
        if result.num_positives > 0:
            lines.append(f"{result.name:<24}{result.num_positives:>7}{result.num_detections:>8}"
                         f"{result.num_true_positives:>7}{100 * result.ap:>9.2f}")
    skipped = sum(1 for r in results if r.num_positives == 0)
    mean = metrics["mAP"]
    lines.append(f"{'mAP':<46}{'n/a' if math.isnan(mean) else f'{100 * mean:.2f}':>9}")
    if skipped:
        lines.append(f"({skipped} classes without ground truth left out)")
    plots = None
    if args.plots:
        curves, aps = voc_curves(results)
        plots = (curves, aps, f"VOC IoU {iou:g}")
    return metrics, "\n".join(lines) + "\n", plots


def run_metrics(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    """Runs ``tfdet metrics``; prints the table or JSON; returns the exit status."""
    _check_options(parser, args)
    try:
        metrics, table, plots = (_run_coco if args.protocol == "coco" else _run_voc)(args)
    except (OSError, ValueError, KeyError, TypeError, AssertionError) as error:
        # pycocotools reports foreign image ids with a bare assert; name the inputs instead of a traceback.
        reason = str(error) or type(error).__name__
        if isinstance(error, AssertionError):
            reason = f"results do not match the ground truth ({reason})"
        print(f"tfdet metrics: error: {reason}", file=sys.stderr)
        return 1
    written = []
    if plots is not None:
        from tfdet.evaluation.curves import plot_pr_curves

        curves, aps, title = plots
        written = plot_pr_curves(curves, args.plots, aps=aps, title=title)
    if args.json:
        print(json.dumps({key: _finite_or_none(value) for key, value in metrics.items()}, allow_nan=False))
    else:
        print(table, end="")
        if written:
            print(f"{len(written)} precision-recall plots in {args.plots}")
    return 0
