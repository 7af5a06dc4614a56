"""CocoEvaluator against plain pycocotools on coco_tiny (470 boxes, polygon and RLE crowd masks).

Synthetic detections come from the ground truth with a fixed seed: jittered
boxes, shifted masks, dropped objects, random false positives and random
scores. The test builds the COCO result list for plain pycocotools itself
(xywh boxes, category ids, RLE from the mask bits), and feeds CocoEvaluator
the padded model-output form (yxyx boxes, class indices, image-sized mask
probabilities, padding past num_detections). The 12 numbers must be identical.
"""

from __future__ import annotations

import contextlib
import copy
import io
import json

import numpy as np
import pytest
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from tfdet.evaluation.coco import STAT_KEYS, CocoEvaluator, evaluate_results

from ..conftest import dataset_path

PAD = 3  # padding slots per image, filled with confident junk that must not count


@pytest.fixture(scope="module")
def gt_path():
    return str(dataset_path("coco_tiny") / "annotations" / "instances_train2017.json")


@pytest.fixture(scope="module")
def gt_coco(gt_path):
    with contextlib.redirect_stdout(io.StringIO()):
        return COCO(gt_path)


def plain_pycocotools(gt_coco, results, iou_type):
    with contextlib.redirect_stdout(io.StringIO()):
        coco_eval = COCOeval(gt_coco, gt_coco.loadRes(copy.deepcopy(results)), iou_type)
        coco_eval.evaluate()
        coco_eval.accumulate()
        coco_eval.summarize()
    return dict(zip(STAT_KEYS, map(float, coco_eval.stats)))


def synthetic(gt_coco, with_masks, seed=7, num_images=None):
    """Per image: (result dicts for pycocotools, padded model outputs for tfdet).

    ``num_images`` limits detections to the first images (the others keep
    their ground truth, all of it missed), to keep the mask case fast.
    """
    rng = np.random.default_rng(seed)
    category_ids = sorted(gt_coco.getCatIds())
    index_of = {c: k for k, c in enumerate(category_ids)}
    per_image = {}
    for image_id in sorted(gt_coco.getImgIds())[:num_images]:
        info = gt_coco.imgs[image_id]
        height, width = info["height"], info["width"]
        results, boxes, scores, classes, masks = [], [], [], [], []
        for ann in gt_coco.imgToAnns[image_id]:
            if rng.random() < 0.15:
                continue  # a missed object
            x, y, w, h = ann["bbox"]
            jitter = rng.normal(0.0, 0.08, 4) * [w, h, w, h]
            box = [x + jitter[0], y + jitter[1], max(w + jitter[2], 1.0), max(h + jitter[3], 1.0)]
            category = ann["category_id"] if rng.random() > 0.1 else int(rng.choice(category_ids))
            score = float(rng.random())
            mask = None
            if with_masks:
                dy, dx = rng.integers(-4, 5, 2)
                mask = np.roll(gt_coco.annToMask(ann), (dy, dx), axis=(0, 1))
            results.append((box, category, score, mask))
        for _ in range(int(rng.integers(0, 4))):  # false positives
            w, h = rng.uniform(5, width / 2), rng.uniform(5, height / 2)
            box = [rng.uniform(0, width - w), rng.uniform(0, height - h), w, h]
            mask = None
            if with_masks:
                mask = np.zeros((height, width), np.uint8)
                x0, y0 = int(box[0]), int(box[1])
                mask[y0:y0 + int(h), x0:x0 + int(w)] = 1
            results.append((box, int(rng.choice(category_ids)), float(rng.random()), mask))

        plain = []
        for (x, y, w, h), category, score, mask in results:
            entry = {"image_id": image_id, "category_id": category, "score": score}
            if with_masks:
                rle = mask_utils.encode(np.asfortranarray(mask))
                entry["segmentation"] = {"size": rle["size"], "counts": rle["counts"].decode()}
            else:
                entry["bbox"] = [x, y, w, h]
            plain.append(entry)
            boxes.append([y, x, y + h, x + w])
            scores.append(score)
            classes.append(index_of[category])
            if with_masks:
                # Probabilities on both sides of the threshold: 0.5 itself counts as inside.
                masks.append(np.where(mask > 0, 0.5, 0.49))
        count = len(boxes)
        model = {
            "boxes": np.array(boxes + [[0, 0, height, width]] * PAD, np.float64).reshape(-1, 4),
            "scores": np.array(scores + [1.0] * PAD, np.float32),
            "classes": np.array(classes + [0] * PAD, np.float32),
            "num_detections": np.int32(count),
        }
        if with_masks:
            model["masks"] = np.concatenate(
                [np.array(masks, np.float32).reshape(-1, height, width), np.ones((PAD, height, width), np.float32)])
        per_image[image_id] = (plain, model)
    return per_image


@pytest.mark.parametrize("iou_type", ["bbox", "segm"])
def test_padded_outputs_equal_plain_pycocotools(gt_path, gt_coco, iou_type):
    data = synthetic(gt_coco, with_masks=iou_type == "segm", num_images=None if iou_type == "bbox" else 20)
    plain_results = [entry for plain, _ in data.values() for entry in plain]
    expected = plain_pycocotools(gt_coco, plain_results, iou_type)

    evaluator = CocoEvaluator(gt_coco, iou_type=iou_type, use_faster=False)
    for image_id, (_, model) in data.items():
        evaluator.add_predictions(image_id, model["boxes"], model["scores"], model["classes"],
                                  model["num_detections"], model.get("masks"))
    got = evaluator.evaluate()
    assert list(got) == list(STAT_KEYS)
    # Not a trivial case: jitter and false positives keep AP well between 0 and 1.
    assert 0.1 < expected["AP"] < 0.9 and expected["APs"] >= 0
    if iou_type == "bbox":
        assert got == pytest.approx(expected, rel=0, abs=1e-12)
    else:
        assert got == expected  # same RLEs in, same numbers out
    assert "Average Precision" in evaluator.summary and evaluator.backend == "pycocotools"


def test_result_list_and_file_equal_plain_pycocotools(gt_path, gt_coco, tmp_path):
    data = synthetic(gt_coco, with_masks=False, seed=11, num_images=15)
    results = [entry for plain, _ in data.values() for entry in plain]
    path = tmp_path / "results.json"
    path.write_text(json.dumps(results))
    expected = plain_pycocotools(gt_coco, results, "bbox")
    before = copy.deepcopy(results)
    assert evaluate_results(gt_path, results, "bbox", use_faster=False) == expected
    assert results == before  # the caller's list is not mutated by loadRes
    with open(gt_path) as stream:
        gt_dict = json.load(stream)
    assert evaluate_results(gt_dict, str(path), "bbox", use_faster=False) == expected
    # The same through an already loaded COCO object.
    assert evaluate_results(gt_coco, str(path), "bbox", use_faster=False) == expected


def test_no_detections_scores_zero(gt_coco):
    # Every area range of coco_tiny has ground truth, so each number is 0 (COCOeval's value), not -1.
    metrics = CocoEvaluator(gt_coco, use_faster=False).evaluate()
    assert metrics == dict.fromkeys(STAT_KEYS, 0.0)


def test_verbose_off_prints_nothing(gt_path, gt_coco, capsys):
    data = synthetic(gt_coco, with_masks=False, seed=3, num_images=10)
    evaluator = CocoEvaluator(gt_path, use_faster=False)
    evaluator.add_results([entry for plain, _ in data.values() for entry in plain])
    evaluator.evaluate()
    assert capsys.readouterr().out == ""
    curves = evaluator.pr_curves(0.5)
    recall, precision = next(iter(curves.values()))
    assert recall.shape == precision.shape == (101,) and precision.min() >= 0
    assert set(curves) <= {c["name"] for c in gt_coco.dataset["categories"]}


def test_faster_coco_eval_gives_the_same_numbers(gt_path, gt_coco):
    pytest.importorskip("faster_coco_eval")
    data = synthetic(gt_coco, with_masks=False, seed=5)
    results = [entry for plain, _ in data.values() for entry in plain]
    fast = CocoEvaluator(gt_path, use_faster=True)
    fast.add_results(results)
    assert fast.backend == "faster_coco_eval"
    assert fast.evaluate() == pytest.approx(plain_pycocotools(gt_coco, results, "bbox"), rel=0, abs=1e-12)


@pytest.mark.parametrize("use_faster", [False, True])
def test_summary_table_is_the_one_pycocotools_prints(gt_path, gt_coco, use_faster):
    """The CLI's table must not depend on the backend (faster_coco_eval does not print it)."""
    if use_faster:
        pytest.importorskip("faster_coco_eval")
    data = synthetic(gt_coco, with_masks=False, seed=11)
    results = [entry for plain, _ in data.values() for entry in plain]
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        coco_eval = COCOeval(gt_coco, gt_coco.loadRes(copy.deepcopy(results)), "bbox")
        coco_eval.evaluate()
        coco_eval.accumulate()
        coco_eval.summarize()
    expected = [line for line in printed.getvalue().splitlines() if line.startswith(" Average")]
    evaluator = CocoEvaluator(gt_path, use_faster=use_faster)
    evaluator.add_results(results)
    evaluator.evaluate()
    assert evaluator.summary.splitlines() == expected
