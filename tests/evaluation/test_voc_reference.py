"""VOC AP against the values published with the metrics_reference cases (see its SOURCE.txt).

toyexample: 'cat', 12 ground-truth boxes in VOC XML, 12 detections.
test_case_1: 'object', 15 ground-truth boxes, 24 detections. Its txt files
hold ``left top width height`` (widths such as ``129 123 41 62`` cannot be a
right/bottom corner), and its published values need the VOC devkit's
``+1`` pixel convention (``pixel_offset=1``); continuous coordinates give
different numbers, which the last test pins down.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from tfdet.evaluation.voc import VocEvaluator, evaluate_class, evaluator_from_coco

from ..conftest import dataset_path
from .reference import read_txt_folder, read_voc_xml_folder

# Published, in percent with two decimals.
TOY_PUBLISHED = {(0.5, "11point"): 88.64, (0.5, "allpoint"): 89.58,
                 (0.75, "11point"): 49.24, (0.75, "allpoint"): 50.97}
# Published to ten decimals.
CASE1_PUBLISHED = {
    "11point": {0.1: 0.3333333333, 0.3: 0.2683982683, 0.5: 0.0303030303, 0.75: 0.0},
    "allpoint": {0.1: 0.3371980676, 0.3: 0.2456866804, 0.5: 0.0222222222, 0.75: 0.0},
}


@pytest.fixture(scope="module")
def reference():
    return dataset_path("metrics_reference")


@pytest.fixture(scope="module")
def toy(reference):
    gt = read_voc_xml_folder(reference / "toyexample" / "gts_vocpascal_format")
    dets = read_txt_folder(reference / "toyexample" / "dets_classname_abs_xyx2y2", with_score=True, layout="xyxy")
    assert len(gt[0]) == 12 and len(dets[0]) == 12 and set(gt[3]) == set(dets[3]) == {"cat"}
    return gt, dets


@pytest.fixture(scope="module")
def case1(reference):
    gt = read_txt_folder(reference / "test_case_1" / "gts", with_score=False, layout="xywh")
    dets = read_txt_folder(reference / "test_case_1" / "dets", with_score=True, layout="xywh")
    assert len(gt[0]) == 15 and len(dets[0]) == 24
    return gt, dets


@pytest.mark.parametrize("pixel_offset", [0.0, 1.0])
def test_toy_example_published_values(toy, pixel_offset):
    (gt_ids, gt_boxes, difficult, _), (det_ids, scores, det_boxes, _) = toy
    for (iou, method), published in TOY_PUBLISHED.items():
        result = evaluate_class("cat", det_ids, scores, det_boxes, gt_ids, gt_boxes, difficult,
                                iou_threshold=iou, method=method, pixel_offset=pixel_offset)
        assert round(100 * result.ap, 2) == published, (iou, method, result.ap)


def test_toy_example_through_evaluator_with_model_classes(toy):
    """The padded-output path: per image, yxyx boxes, class 0, GT padded with -1, detections past num_detections."""
    (gt_ids, gt_boxes, difficult, _), (det_ids, scores, det_boxes, _) = toy
    evaluator = VocEvaluator(["cat"], iou_threshold=0.5, method="allpoint")
    for image in sorted(set(gt_ids) | set(det_ids)):
        g = [i for i, x in enumerate(gt_ids) if x == image]
        d = [i for i, x in enumerate(det_ids) if x == image]
        pad_gt = np.concatenate([gt_boxes[g], np.zeros((3, 4))])
        pad_cls = np.array([0] * len(g) + [-1] * 3)
        # Padding slots hold a perfect-score copy of a GT box: counting them would change AP.
        junk = gt_boxes[g[:1]] if g else np.zeros((1, 4))
        pad_det = np.concatenate([det_boxes[d], np.repeat(junk, 4, axis=0)])
        pad_scores = np.concatenate([scores[d], np.ones(4)])
        evaluator.add_image(pad_gt, pad_cls, pad_det, pad_scores, np.zeros(len(pad_scores), np.float32),
                            num_detections=len(d), groundtruth_difficult=np.concatenate([difficult[g], np.zeros(3)]))
    metrics = evaluator.evaluate()
    assert set(metrics) == {"mAP", "AP/cat"}
    assert round(100 * metrics["AP/cat"], 2) == 89.58 and metrics["mAP"] == metrics["AP/cat"]


def test_toy_example_coco_json_files(reference):
    """The CLI's input path: the same case as COCO JSON (xywh boxes) gives the published values."""
    gt = reference / "toyexample" / "gts_coco_format" / "toy_example_coco.JSON"
    dets = reference / "toyexample" / "dets_coco_format" / "coco_dets.json"
    for (iou, method), published in TOY_PUBLISHED.items():
        metrics = evaluator_from_coco(str(gt), str(dets), iou, method).evaluate()
        assert round(100 * metrics["AP/cat"], 2) == published


@pytest.mark.parametrize("method", ["11point", "allpoint"])
@pytest.mark.parametrize("iou", [0.1, 0.3, 0.5, 0.75])
def test_case_1_published_values(case1, method, iou):
    (gt_ids, _, gt_boxes, _), (det_ids, scores, det_boxes, _) = case1
    result = evaluate_class("object", det_ids, scores, det_boxes, gt_ids, gt_boxes,
                            iou_threshold=iou, method=method, pixel_offset=1.0)
    assert result.ap == pytest.approx(CASE1_PUBLISHED[method][iou], abs=1e-9)
    assert result.num_positives == 15 and result.num_detections == 24


def test_case_1_needs_the_devkit_pixel_convention(case1):
    """Continuous coordinates (offset 0) do not give the published IoU .1 values: the convention matters."""
    (gt_ids, _, gt_boxes, _), (det_ids, scores, det_boxes, _) = case1
    for method in ("11point", "allpoint"):
        ap = evaluate_class("object", det_ids, scores, det_boxes, gt_ids, gt_boxes,
                            iou_threshold=0.1, method=method, pixel_offset=0.0).ap
        assert not math.isclose(ap, CASE1_PUBLISHED[method][0.1], abs_tol=1e-3)
