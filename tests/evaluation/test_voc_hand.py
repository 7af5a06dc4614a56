"""VOC matching and AP on cases small enough to work out by hand (the arithmetic is in the comments)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from tfdet.evaluation.voc import (VocEvaluator, average_precision, evaluate_class, match_detections,
                                  pairwise_iou, precision_recall)


def test_iou_continuous_and_devkit_convention():
    a = np.array([[0.0, 0.0, 10.0, 10.0]])
    b = np.array([[0.0, 5.0, 10.0, 15.0], [20.0, 20.0, 30.0, 30.0], [10.0, 0.0, 20.0, 10.0]])
    # Continuous: overlap 10 x 5 = 50, union 100 + 100 - 50 = 150.
    np.testing.assert_allclose(pairwise_iou(a, b), [[50 / 150, 0.0, 0.0]], rtol=0, atol=1e-15)
    # Devkit (+1): areas 11 x 11 = 121, overlap 11 x 6 = 66, union 176. Touching boxes
    # (shared edge at 10) overlap by one pixel row there: 1 x 11 = 11, union 231.
    np.testing.assert_allclose(pairwise_iou(a, b, pixel_offset=1.0), [[66 / 176, 0.0, 11 / 231]], rtol=0, atol=1e-15)


def test_matching_duplicates_difficult_and_misses():
    # Image "a": box A (normal) and box B (difficult); image "b": box C.
    gt_ids = ["a", "a", "b"]
    gt_boxes = np.array([[0, 0, 10, 10], [50, 50, 60, 60], [0, 0, 10, 10]], dtype=float)
    difficult = np.array([False, True, False])
    # Scores out of order on purpose; by score: d1 .9 on A (TP), d2 .8 on A again (duplicate -> FP),
    # d3 .7 on B (difficult -> ignored), d4 .6 on nothing (FP), d5 .5 on C (TP).
    det_ids = ["b", "a", "a", "a", "a"]
    det_scores = np.array([0.5, 0.6, 0.8, 0.9, 0.7])
    det_boxes = np.array([[0, 0, 10, 10], [100, 100, 110, 110], [1, 0, 10, 10], [0, 0, 10, 10], [50, 50, 60, 60]], float)
    order, tp, fp = match_detections(det_ids, det_scores, det_boxes, gt_ids, gt_boxes, difficult)
    assert order.tolist() == [3, 2, 4, 1, 0]
    assert tp.tolist() == [True, False, False, False, True]
    assert fp.tolist() == [False, True, False, True, False]

    precision, recall = precision_recall(tp, fp, num_positives=2)
    # Counted: TP, FP, FP, TP -> precision 1, 1/2, 1/3, 1/2; recall 1/2, 1/2, 1/2, 1.
    np.testing.assert_allclose(precision, [1, 1 / 2, 1 / 3, 1 / 2])
    np.testing.assert_allclose(recall, [0.5, 0.5, 0.5, 1.0])
    # All-point: envelope 1 up to recall 1/2, then 1/2 up to 1 -> 0.5 * 1 + 0.5 * 0.5.
    assert average_precision(precision, recall, "allpoint") == pytest.approx(0.75, abs=1e-15)
    # 11-point: t = 0 .. 0.5 (6 points) reach precision 1; t = 0.6 .. 1 (5 points) reach 1/2.
    assert average_precision(precision, recall, "11point") == pytest.approx((6 + 2.5) / 11, abs=1e-15)

    result = evaluate_class("x", det_ids, det_scores, det_boxes, gt_ids, gt_boxes, difficult)
    assert (result.num_positives, result.num_detections, result.num_true_positives) == (2, 5, 2)
    assert result.ap == pytest.approx(0.75, abs=1e-15)


def test_best_box_decides_without_fallback():
    # The second detection overlaps the already matched A most (100 / 110) and the free D less
    # (overlap 10 x 9 = 90, union 110 + 100 - 90 = 120); the devkit makes it a duplicate FP
    # instead of matching D.
    gt_boxes = np.array([[0, 0, 10, 10], [0, 2, 10, 12]], dtype=float)
    det_boxes = np.array([[0, 0, 10, 10], [0, 0, 10, 11]], dtype=float)
    np.testing.assert_allclose(pairwise_iou(det_boxes[1:], gt_boxes), [[100 / 110, 90 / 120]])
    _, tp, fp = match_detections(["i", "i"], np.array([0.9, 0.8]), det_boxes, ["i", "i"], gt_boxes)
    assert tp.tolist() == [True, False] and fp.tolist() == [False, True]


def test_iou_exactly_at_threshold_matches():
    # 10 x 10 inside 10 x 20: IoU = 100 / 200 = 0.5 exactly; the devkit's rule is >=.
    _, tp, _ = match_detections(["i"], np.array([1.0]), np.array([[0, 0, 10, 10.0]]),
                                ["i"], np.array([[0, 0, 10, 20.0]]), iou_threshold=0.5)
    assert tp.tolist() == [True]


def test_eleven_point_thresholds_are_float_products():
    # 5 positives, three perfect detections: recall 0.2, 0.4, 0.6 at precision 1. The thresholds
    # are k * 0.1 in float64 and 6 * 0.1 = 0.6000000000000001 > 3/5, so only k = 0..5 are reached:
    # AP = 6/11 (exact decimals would give 7/11; the published test_case_1 value needs 6/11's rule).
    precision = np.ones(3)
    recall = np.array([1, 2, 3]) / 5
    assert 6 * 0.1 > recall[-1]
    assert average_precision(precision, recall, "11point") == pytest.approx(6 / 11, abs=1e-15)
    # All-point: 0.6 under precision 1.
    assert average_precision(precision, recall, "allpoint") == pytest.approx(0.6, abs=1e-15)


def test_no_detections_and_no_positives():
    assert average_precision(np.array([]), np.array([]), "allpoint") == 0.0
    assert average_precision(np.array([]), np.array([]), "11point") == 0.0
    only_difficult = evaluate_class("x", ["i"], np.array([0.9]), np.array([[0, 0, 5, 5.0]]),
                                    ["i"], np.array([[0, 0, 5, 5.0]]), np.array([True]))
    assert math.isnan(only_difficult.ap) and only_difficult.num_positives == 0


def test_evaluator_mean_skips_classes_without_ground_truth():
    evaluator = VocEvaluator(["cat", "dog", "bird"], method="allpoint")
    # cat: one box found (AP 1). dog: two boxes, one found at the first rank and one false
    # positive after it -> precision 1 at recall 1/2 -> AP 0.5. bird: no ground truth, one detection.
    evaluator.add_image(
        groundtruth_boxes=np.array([[0, 0, 10, 10], [20, 20, 30, 30], [40, 40, 50, 50], [0, 0, 0, 0]], float),
        groundtruth_classes=np.array([0, 1, 1, -1]),
        boxes=np.array([[0, 0, 10, 10], [20, 20, 30, 30], [70, 70, 80, 80], [90, 90, 99, 99]], float),
        scores=np.array([0.9, 0.8, 0.7, 0.6]),
        classes=np.array([0.0, 1.0, 1.0, 2.0]),
        num_detections=4,
    )
    metrics = evaluator.evaluate()
    assert set(metrics) == {"mAP", "AP/cat", "AP/dog"}
    assert metrics["AP/cat"] == 1.0 and metrics["AP/dog"] == pytest.approx(0.5, abs=1e-15)
    assert metrics["mAP"] == pytest.approx(0.75, abs=1e-15)

    evaluator.reset()
    assert math.isnan(evaluator.evaluate()["mAP"])


def test_add_batch_matches_add_image():
    gt = {"boxes": np.array([[[0, 0, 10, 10], [0, 0, 0, 0]], [[5, 5, 15, 15], [30, 30, 40, 40]]], float),
          "classes": np.array([[0, -1], [0, 0]]), "difficult": np.array([[0, 0], [0, 1]])}
    pred = {"boxes": np.array([[[0, 0, 10, 9], [50, 50, 60, 60]], [[5, 5, 15, 15], [30, 30, 40, 40]]], float),
            "scores": np.array([[0.9, 0.3], [0.8, 0.7]]), "classes": np.array([[0, 0], [0, 0]]),
            "num_detections": np.array([1, 2])}
    batched = VocEvaluator(["obj"])
    batched.add_batch(gt, pred)
    single = VocEvaluator(["obj"])
    for b in range(2):
        single.add_image(gt["boxes"][b], gt["classes"][b], pred["boxes"][b], pred["scores"][b],
                         pred["classes"][b], pred["num_detections"][b], gt["difficult"][b])
    # Image 0: TP (IoU 0.9). Image 1: TP, then a detection on the difficult box, ignored. AP = 1.
    assert batched.evaluate() == single.evaluate() == {"mAP": 1.0, "AP/obj": 1.0}


def test_invalid_inputs_are_refused():
    with pytest.raises(ValueError, match="method"):
        VocEvaluator(["a"], method="voc12")
    with pytest.raises(ValueError, match="class 3"):
        VocEvaluator(["a"]).add_predictions("i", np.zeros((1, 4)), [0.5], [3])
