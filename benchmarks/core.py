"""Benchmark of the detection core: NMS, RoIAlign and COCO evaluation, each against its reference.

Three comparisons, each in one process so that machine noise hits both sides alike, each printing
times and the ratio reference / ours (> 1: ours faster):

* NMS: ``tfdet.core.nms.non_max_suppression`` (XLA-compiled) against
  ``tf.image.non_max_suppression_padded`` (see ``benchmarks/nms.py``).
* RoIAlign: ``tfdet.core.roi_align`` single-level and FPN (XLA-compiled) against a
  ``tf.image.crop_and_resize`` RoIAlign (see ``benchmarks/roi_align.py``).
* COCO evaluation: ``tfdet.evaluation.CocoEvaluator`` against plain pycocotools
  (``loadRes`` + ``COCOeval``) on the same ground truth and detections; the 12 numbers
  must be equal, the time of the wrapper is what is measured.

Usage::

    python benchmarks/core.py            # all three
    python benchmarks/core.py --quick    # fewer repeats, for a smoke run
    python benchmarks/core.py --only eval
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import statistics
import sys
import time

import numpy as np

BENCHMARKS_DIR = os.path.dirname(os.path.abspath(__file__))
REPO_ROOT = os.path.dirname(BENCHMARKS_DIR)
sys.path[:0] = [BENCHMARKS_DIR, REPO_ROOT]

COCO_STATS = ("AP", "AP50", "AP75", "APs", "APm", "APl", "AR1", "AR10", "AR100", "ARs", "ARm", "ARl")


def synthetic_detections(groundtruth: dict, per_image: int, seed: int = 0) -> list[dict]:
    """COCO results: every GT box jittered (a likely hit) plus random boxes (misses), random scores."""
    rng = np.random.default_rng(seed)
    category_ids = [category["id"] for category in groundtruth["categories"]]
    by_image: dict[int, list[dict]] = {}
    for annotation in groundtruth["annotations"]:
        by_image.setdefault(annotation["image_id"], []).append(annotation)
    results = []
    for image in groundtruth["images"]:
        width, height = image["width"], image["height"]
        for annotation in by_image.get(image["id"], []):
            x, y, w, h = annotation["bbox"]
            jitter = rng.normal(0.0, 0.1, 4) * [w, h, w, h]
            results.append({"image_id": image["id"], "category_id": annotation["category_id"],
                            "bbox": [float(x + jitter[0]), float(y + jitter[1]),
                                     float(max(1.0, w + jitter[2])), float(max(1.0, h + jitter[3]))],
                            "score": float(rng.uniform(0.3, 1.0))})
        for _ in range(per_image):
            w, h = rng.uniform(8, width / 2), rng.uniform(8, height / 2)
            results.append({"image_id": image["id"], "category_id": int(rng.choice(category_ids)),
                            "bbox": [float(rng.uniform(0, width - w)), float(rng.uniform(0, height - h)),
                                     float(w), float(h)],
                            "score": float(rng.uniform(0.0, 0.6))})
    return results


def plain_pycocotools(groundtruth_path: str, results: list[dict]) -> dict:
    """The reference: what a user of pycocotools writes by hand."""
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    with contextlib.redirect_stdout(io.StringIO()):
        ground_truth = COCO(groundtruth_path)
        detections = ground_truth.loadRes(results)
        evaluation = COCOeval(ground_truth, detections, "bbox")
        evaluation.evaluate()
        evaluation.accumulate()
        evaluation.summarize()
    return dict(zip(COCO_STATS, (float(value) for value in evaluation.stats)))


def ours(groundtruth_path: str, results: list[dict]) -> dict:
    from tfdet.evaluation import CocoEvaluator

    evaluator = CocoEvaluator(groundtruth_path, iou_type="bbox", use_faster=False)
    evaluator.add_results(results)
    return evaluator.evaluate()


def benchmark_evaluation(datasets: str, repeats: int, per_image: int) -> int:
    groundtruth_path = os.path.join(datasets, "coco_tiny", "annotations", "instances_train2017.json")
    if not os.path.isfile(groundtruth_path):
        print(f"evaluation: skipped, {groundtruth_path} not found")
        return 0
    with open(groundtruth_path, encoding="utf-8") as stream:
        groundtruth = json.load(stream)
    results = synthetic_detections(groundtruth, per_image)
    times = {"pycocotools": [], "ours": []}
    numbers = {}
    for repeat in range(repeats):
        for name, function in (("pycocotools", plain_pycocotools), ("ours", ours))[:: 1 if repeat % 2 == 0 else -1]:
            start = time.perf_counter()
            numbers[name] = function(groundtruth_path, results)
            times[name].append(time.perf_counter() - start)
    if any(abs(numbers["ours"][key] - numbers["pycocotools"][key]) > 1e-12 for key in COCO_STATS):
        print(f"evaluation: FAILED, the numbers differ: {numbers}")
        return 1
    reference, mine = statistics.median(times["pycocotools"]), statistics.median(times["ours"])
    print(f"\nCOCO bbox evaluation, coco_tiny ({len(groundtruth['images'])} images, {len(results)} detections),"
          f" median of {repeats}:")
    print(f"  plain pycocotools {reference * 1e3:8.1f} ms   ours {mine * 1e3:8.1f} ms   ratio {reference / mine:.2f}"
          f"   (AP {numbers['ours']['AP']:.4f}, identical 12 numbers)")
    return 0


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--only", choices=("nms", "roi_align", "eval"), help="run one comparison")
    parser.add_argument("--quick", action="store_true", help="fewer repeats and RoIs: a smoke run")
    parser.add_argument("--datasets", default=os.path.join(REPO_ROOT, "..", "shared", "datasets"))
    args = parser.parse_args(argv)
    status = 0
    if args.only in (None, "nms"):
        import nms as nms_benchmark

        print("== NMS ==")
        status |= nms_benchmark.main(["--repeats", "5" if args.quick else "25"]) or 0
    if args.only in (None, "roi_align"):
        import roi_align as roi_align_benchmark

        print("\n== RoIAlign ==")
        status |= roi_align_benchmark.main(["--quick"] if args.quick else []) or 0
    if args.only in (None, "eval"):
        print("\n== COCO evaluation ==")
        status |= benchmark_evaluation(args.datasets, 3 if args.quick else 7, 20 if args.quick else 100)
    return status


if __name__ == "__main__":
    sys.exit(main())
