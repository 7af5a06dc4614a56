"""Pascal VOC average precision: the devkit's matching rule, 11-point and all-point AP.

The core works per class on NumPy arrays (host-side evaluation, nothing here
runs inside a model). Boxes are ``yxyx`` absolute pixels as everywhere in
tfdet; IoU is symmetric in the two axes, so the same functions serve ``xyxy``
boxes as long as detections and ground truth share one layout.

Rules, as in the VOC devkit (``VOCevaldet.m`` / ``VOCap.m``):

* detections of one class are visited in descending score order; each is
  compared with every ground-truth box of its image and class, and the one
  with the highest IoU decides: IoU ``>=`` threshold and that box not yet
  matched -> true positive (the box is now matched); already matched ->
  false positive (duplicate); below threshold -> false positive. The
  detection does not fall back to the second-best box.
* a detection whose best box is ``difficult`` is neither TP nor FP, and
  difficult boxes do not count as positives.
* 11-point AP (VOC2007): mean over ``t`` in ``0, 0.1, ..., 1`` of the highest
  precision at recall ``>= t`` (0 where recall never reaches ``t``); ``t`` is
  the float64 ``k * 0.1`` (see ``average_precision``).
* all-point AP (VOC2010 and later): area under the precision envelope, the
  precision made monotone non-increasing in recall.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Hashable, Iterable, Mapping, Optional, Sequence, Union

import numpy as np

from tfdet.evaluation.coco_format import load_json, load_results, xywh_to_yxyx

METHODS = ("11point", "allpoint")

def pairwise_iou(boxes_a: np.ndarray, boxes_b: np.ndarray, pixel_offset: float = 0.0) -> np.ndarray:
    """IoU between every box of ``boxes_a`` and every box of ``boxes_b``.

    Evaluation has its own host-side IoU instead of the model's
    ``tfdet.core.box_ops`` one: it runs on NumPy arrays outside any graph,
    in float64 so that published reference values are reproduced to the last
    digit, and it needs the devkit's ``pixel_offset`` convention, which the
    model side never uses.

    Args:
        boxes_a: ``[N, 4]`` boxes, ``yxyx`` (or ``xyxy``) absolute pixels.
        boxes_b: ``[M, 4]`` boxes in the same layout as ``boxes_a``.
        pixel_offset: added to every width and height (and to the
            intersection's). ``1.0`` is the VOC devkit's convention for
            integer pixel indices, where a box from pixel 1 to pixel 3 is 3
            pixels wide; ``0.0`` treats coordinates as continuous, which is
            what tfdet's float boxes are.

    Returns:
        ``[N, M]`` float64 IoU; 0 where boxes do not overlap.
    """
    a = np.asarray(boxes_a, dtype=np.float64).reshape(-1, 4)
    b = np.asarray(boxes_b, dtype=np.float64).reshape(-1, 4)
    area_a = (a[:, 2] - a[:, 0] + pixel_offset) * (a[:, 3] - a[:, 1] + pixel_offset)
    area_b = (b[:, 2] - b[:, 0] + pixel_offset) * (b[:, 3] - b[:, 1] + pixel_offset)
    low = np.maximum(a[:, None, :2], b[None, :, :2])
    high = np.minimum(a[:, None, 2:], b[None, :, 2:])
    extent = high - low + pixel_offset
    # The devkit counts an overlap only when both extents are positive.
    overlaps = (extent[..., 0] > 0) & (extent[..., 1] > 0)
    intersection = np.where(overlaps, extent[..., 0] * extent[..., 1], 0.0)
    union = area_a[:, None] + area_b[None, :] - intersection
    with np.errstate(divide="ignore", invalid="ignore"):
        iou = np.where(overlaps, intersection / union, 0.0)
    return iou


def match_detections(
    det_image_ids: Sequence[Hashable],
    det_scores: np.ndarray,
    det_boxes: np.ndarray,
    gt_image_ids: Sequence[Hashable],
    gt_boxes: np.ndarray,
    gt_difficult: Optional[np.ndarray] = None,
    iou_threshold: float = 0.5,
    pixel_offset: float = 0.0,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Greedy VOC matching of one class's detections to its ground truth.

    Args:
        det_image_ids: ``[D]`` image of each detection (any hashable ids).
        det_scores: ``[D]`` confidence of each detection.
        det_boxes: ``[D, 4]`` ``yxyx`` absolute pixels.
        gt_image_ids: ``[G]`` image of each ground-truth box.
        gt_boxes: ``[G, 4]`` ``yxyx`` absolute pixels.
        gt_difficult: ``[G]`` bool, ``True`` for VOC ``difficult`` boxes;
            ``None`` means none is difficult.
        iou_threshold: a match needs IoU ``>=`` this (the devkit's rule).
        pixel_offset: see ``pairwise_iou``.

    Returns:
        ``(order, true_positive, false_positive)``: ``order`` ``[D]`` int, the
        detection indices by descending score (a stable sort, so ties keep
        input order); ``true_positive`` and ``false_positive`` ``[D]`` bool in
        that order. A detection that is neither was ignored (its best box is
        difficult).
    """
    det_scores = np.asarray(det_scores, dtype=np.float64).reshape(-1)
    det_boxes = np.asarray(det_boxes, dtype=np.float64).reshape(-1, 4)
    gt_boxes = np.asarray(gt_boxes, dtype=np.float64).reshape(-1, 4)
    if gt_difficult is None:
        gt_difficult = np.zeros(len(gt_boxes), dtype=bool)
    gt_difficult = np.asarray(gt_difficult, dtype=bool).reshape(-1)
    if not len(det_image_ids) == len(det_scores) == len(det_boxes):
        raise ValueError("detections: image ids, scores and boxes differ in length")
    if not len(gt_image_ids) == len(gt_boxes) == len(gt_difficult):
        raise ValueError("ground truth: image ids, boxes and difficult flags differ in length")

    order = np.argsort(-det_scores, kind="stable")
    true_positive = np.zeros(len(order), dtype=bool)
    false_positive = np.zeros(len(order), dtype=bool)

    gt_of_image: dict[Hashable, list[int]] = {}
    for index, image_id in enumerate(gt_image_ids):
        gt_of_image.setdefault(image_id, []).append(index)
    dets_of_image: dict[Hashable, list[int]] = {}
    for rank, det_index in enumerate(order):
        dets_of_image.setdefault(det_image_ids[det_index], []).append(rank)

    # Images are independent, so each is matched on its own IoU matrix; within
    # an image, ranks ascend, which is the global descending-score order.
    for image_id, ranks in dets_of_image.items():
        gt_indices = gt_of_image.get(image_id)
        if not gt_indices:
            false_positive[ranks] = True
            continue
        iou = pairwise_iou(det_boxes[order[ranks]], gt_boxes[gt_indices], pixel_offset)
        difficult = gt_difficult[gt_indices]
        matched = np.zeros(len(gt_indices), dtype=bool)
        for row, rank in enumerate(ranks):
            best = int(np.argmax(iou[row]))  # first maximum, as the devkit's max()
            if iou[row, best] >= iou_threshold:
                if difficult[best]:
                    continue
                if matched[best]:
                    false_positive[rank] = True
                else:
                    true_positive[rank] = True
                    matched[best] = True
            else:
                false_positive[rank] = True
    return order, true_positive, false_positive


def precision_recall(
    true_positive: np.ndarray, false_positive: np.ndarray, num_positives: int
) -> tuple[np.ndarray, np.ndarray]:
    """Cumulative precision and recall down a score-ordered detection list.

    Ignored detections (neither TP nor FP) are dropped: they would repeat the
    previous point, which changes neither AP (the devkit's NaN-skipping
    ``max`` gives the same result).

    Args:
        true_positive: ``[D]`` bool, in descending score order.
        false_positive: ``[D]`` bool, same order.
        num_positives: non-difficult ground-truth boxes of the class.

    Returns:
        ``(precision, recall)``, each ``[D']`` float64 with ``D'`` the counted
        detections. Recall is NaN everywhere when ``num_positives`` is 0.
    """
    true_positive = np.asarray(true_positive, dtype=bool)
    false_positive = np.asarray(false_positive, dtype=bool)
    counted = true_positive | false_positive
    tp = np.cumsum(true_positive[counted], dtype=np.float64)
    fp = np.cumsum(false_positive[counted], dtype=np.float64)
    precision = tp / np.maximum(tp + fp, np.finfo(np.float64).tiny)
    recall = tp / num_positives if num_positives > 0 else np.full_like(tp, np.nan)
    return precision, recall


def average_precision(precision: np.ndarray, recall: np.ndarray, method: str = "allpoint") -> float:
    """AP from a precision/recall curve.

    Args:
        precision: ``[D]`` precision down the score-ordered detections.
        recall: ``[D]`` recall, non-decreasing, same order.
        method: ``"11point"`` (VOC2007: mean of the highest precision at
            recall ``>= t`` for ``t = k * 0.1``, ``k = 0..10``, computed in
            float64 so that ``6 * 0.1 > 0.6``) or ``"allpoint"``
            (VOC2010+: area under the monotone precision envelope).

    Returns:
        AP in ``[0, 1]``; NaN when recall is NaN (the class has no positives).
    """
    precision = np.asarray(precision, dtype=np.float64).reshape(-1)
    recall = np.asarray(recall, dtype=np.float64).reshape(-1)
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    if recall.size and np.isnan(recall).any():
        return math.nan
    if method == "11point":
        total = 0.0
        # The thresholds are the float64 products k * 0.1, as in the common
        # Python VOC07 code (np.arange(0, 1.1, 0.1)): 3 * 0.1, 6 * 0.1 and
        # 7 * 0.1 land just above 0.3, 0.6 and 0.7, so a recall of exactly
        # 3/5 does not reach "0.6". The published metrics_reference values
        # depend on this (test_case_1, IoU .1: 0.3333 here, 0.3689 with exact
        # decimals k / 10); we keep it to reproduce them and those tools.
        for threshold in np.arange(11) * 0.1:
            reached = recall >= threshold
            total += float(precision[reached].max()) if reached.any() else 0.0
        return total / 11.0
    # Sentinels: the curve starts at recall 0 and ends at recall 1 with precision 0.
    mrec = np.concatenate(([0.0], recall, [1.0]))
    mpre = np.concatenate(([0.0], precision, [0.0]))
    mpre = np.maximum.accumulate(mpre[::-1])[::-1]
    steps = np.flatnonzero(mrec[1:] != mrec[:-1])
    return float(np.sum((mrec[steps + 1] - mrec[steps]) * mpre[steps + 1]))


@dataclasses.dataclass
class ClassResult:
    """One class's VOC evaluation.

    Attributes:
        name: class name.
        ap: average precision (NaN without positives).
        precision: ``[D']`` precision curve, counted detections by descending score.
        recall: ``[D']`` recall curve, same order.
        scores: ``[D']`` the scores along the curve.
        num_positives: non-difficult ground-truth boxes.
        num_detections: detections of the class, ignored ones included.
        num_true_positives: detections matched to a box.
    """

    name: str
    ap: float
    precision: np.ndarray
    recall: np.ndarray
    scores: np.ndarray
    num_positives: int
    num_detections: int
    num_true_positives: int


def evaluate_class(
    name: str,
    det_image_ids: Sequence[Hashable],
    det_scores: np.ndarray,
    det_boxes: np.ndarray,
    gt_image_ids: Sequence[Hashable],
    gt_boxes: np.ndarray,
    gt_difficult: Optional[np.ndarray] = None,
    iou_threshold: float = 0.5,
    method: str = "allpoint",
    pixel_offset: float = 0.0,
) -> ClassResult:
    """Match, build the PR curve and compute AP for one class.

    Args: as ``match_detections`` (boxes ``yxyx`` absolute pixels, ``[D, 4]``
    and ``[G, 4]``), plus ``name`` and ``method`` (see ``average_precision``).

    Returns:
        The class's ``ClassResult``.
    """
    if gt_difficult is None:
        gt_difficult = np.zeros(len(gt_image_ids), dtype=bool)
    gt_difficult = np.asarray(gt_difficult, dtype=bool).reshape(-1)
    order, tp, fp = match_detections(
        det_image_ids, det_scores, det_boxes, gt_image_ids, gt_boxes, gt_difficult, iou_threshold, pixel_offset
    )
    num_positives = int(np.count_nonzero(~gt_difficult))
    precision, recall = precision_recall(tp, fp, num_positives)
    scores = np.asarray(det_scores, dtype=np.float64).reshape(-1)[order][tp | fp]
    ap = average_precision(precision, recall, method) if num_positives > 0 else math.nan
    return ClassResult(
        name=name,
        ap=ap,
        precision=precision,
        recall=recall,
        scores=scores,
        num_positives=num_positives,
        num_detections=len(order),
        num_true_positives=int(np.count_nonzero(tp)),
    )


class VocEvaluator:
    """Accumulates per-image predictions and ground truth; returns VOC AP per class and mAP.

    The same object serves training-time evaluation (feed padded model outputs
    image by image or batch by batch) and the ``tfdet metrics voc`` command
    (fed from a COCO annotation file and result list).

    Classes: predictions and ground truth use model class indices
    ``0..K-1`` (``class_names[k]`` names index ``k``); padded ground-truth
    slots have class ``-1`` and are skipped.
    """

    def __init__(
        self,
        class_names: Sequence[str],
        iou_threshold: float = 0.5,
        method: str = "allpoint",
        pixel_offset: float = 0.0,
    ):
        """Args:
        class_names: ``K`` names, index ``k`` for model class ``k``.
        iou_threshold: IoU a detection needs to match (``>=``).
        method: ``"11point"`` (VOC2007) or ``"allpoint"`` (VOC2010+).
        pixel_offset: IoU convention, see ``pairwise_iou`` (0 for tfdet's
            continuous float boxes, 1 for the devkit's integer pixels).
        """
        if method not in METHODS:
            raise ValueError(f"method must be one of {METHODS}, got {method!r}")
        self.class_names = list(class_names)
        self.iou_threshold = float(iou_threshold)
        self.method = method
        self.pixel_offset = float(pixel_offset)
        self.reset()

    def reset(self) -> None:
        """Forget everything added so far."""
        num_classes = len(self.class_names)
        self._dets: list[list] = [[] for _ in range(num_classes)]  # (image, score, box)
        self._gts: list[list] = [[] for _ in range(num_classes)]  # (image, box, difficult)
        self._next_image = 0

    def add_groundtruth(
        self,
        image_id: Hashable,
        boxes: Any,
        classes: Any,
        difficult: Any = None,
    ) -> None:
        """Adds ground-truth boxes of one image (padded or not).

        Args:
            image_id: any hashable id, shared with the image's predictions.
            boxes: ``[G, 4]`` ``yxyx`` absolute pixels.
            classes: ``[G]`` model classes ``0..K-1``; ``-1`` marks padding.
            difficult: ``[G]`` 0/1 VOC difficult flags, or ``None`` (none difficult).
        """
        gt_boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
        gt_classes = _as_classes(classes)
        flags = (
            np.zeros(len(gt_classes), dtype=bool)
            if difficult is None
            else np.asarray(difficult).astype(bool).reshape(-1)
        )
        if not len(gt_boxes) == len(gt_classes) == len(flags):
            raise ValueError("ground truth: boxes, classes and difficult flags differ in length")
        for box, cls, flag in zip(gt_boxes, gt_classes, flags):
            if cls >= 0:
                self._gts[self._check_class(cls)].append((image_id, box, bool(flag)))

    def add_predictions(
        self,
        image_id: Hashable,
        boxes: Any,
        scores: Any,
        classes: Any,
        num_detections: Any = None,
    ) -> None:
        """Adds one image's padded predictions.

        Args:
            image_id: any hashable id, shared with the image's ground truth.
            boxes: ``[D, 4]`` predicted boxes, ``yxyx`` absolute pixels.
            scores: ``[D]`` confidences.
            classes: ``[D]`` model classes ``0..K-1`` (float classes are rounded).
            num_detections: valid leading entries; ``None`` means all ``D``.
        """
        det_boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
        det_scores = np.asarray(scores, dtype=np.float64).reshape(-1)
        det_classes = _as_classes(classes)
        count = len(det_scores) if num_detections is None else int(np.asarray(num_detections))
        for box, score, cls in zip(det_boxes[:count], det_scores[:count], det_classes[:count]):
            self._dets[self._check_class(cls)].append((image_id, float(score), box))

    def add_image(
        self,
        groundtruth_boxes: Any,
        groundtruth_classes: Any,
        boxes: Any,
        scores: Any,
        classes: Any,
        num_detections: Any = None,
        groundtruth_difficult: Any = None,
        image_id: Optional[Hashable] = None,
    ) -> Hashable:
        """Adds one image's ground truth and padded predictions together.

        Args: as ``add_groundtruth`` and ``add_predictions``; ``image_id``
        ``None`` assigns a fresh id.

        Returns:
            The image id used.
        """
        if image_id is None:
            image_id = ("image", self._next_image)
            self._next_image += 1
        self.add_groundtruth(image_id, groundtruth_boxes, groundtruth_classes, groundtruth_difficult)
        self.add_predictions(image_id, boxes, scores, classes, num_detections)
        return image_id

    def add_batch(
        self,
        groundtruth: Mapping[str, Any],
        predictions: Mapping[str, Any],
        image_ids: Optional[Sequence[Hashable]] = None,
    ) -> None:
        """Adds a batch of padded model outputs and padded ground truth.

        Args:
            groundtruth: ``boxes [B, G, 4]`` yxyx absolute, ``classes [B, G]``
                (``-1`` pads), optionally ``difficult [B, G]``.
            predictions: ``boxes [B, D, 4]`` yxyx absolute, ``scores [B, D]``,
                ``classes [B, D]``, ``num_detections [B]``.
            image_ids: ``B`` ids, or ``None`` for fresh ones.
        """
        gt_boxes = np.asarray(groundtruth["boxes"])
        difficult = groundtruth.get("difficult")
        num = predictions.get("num_detections")
        for b in range(gt_boxes.shape[0]):
            self.add_image(
                gt_boxes[b],
                np.asarray(groundtruth["classes"])[b],
                np.asarray(predictions["boxes"])[b],
                np.asarray(predictions["scores"])[b],
                np.asarray(predictions["classes"])[b],
                None if num is None else np.asarray(num)[b],
                None if difficult is None else np.asarray(difficult)[b],
                None if image_ids is None else image_ids[b],
            )

    def _check_class(self, cls: int) -> int:
        if not 0 <= cls < len(self.class_names):
            raise ValueError(f"class {cls} outside 0..{len(self.class_names) - 1}")
        return int(cls)

    def evaluate_classes(self) -> list[ClassResult]:
        """Per-class results, one per class name, in class order."""
        results = []
        for k, name in enumerate(self.class_names):
            dets, gts = self._dets[k], self._gts[k]
            results.append(
                evaluate_class(
                    name,
                    [d[0] for d in dets],
                    np.array([d[1] for d in dets], dtype=np.float64),
                    np.array([d[2] for d in dets], dtype=np.float64).reshape(-1, 4),
                    [g[0] for g in gts],
                    np.array([g[1] for g in gts], dtype=np.float64).reshape(-1, 4),
                    np.array([g[2] for g in gts], dtype=bool),
                    self.iou_threshold,
                    self.method,
                    self.pixel_offset,
                )
            )
        return results

    def evaluate(self) -> dict[str, float]:
        """``{'mAP': ..., 'AP/<name>': ...}``, fractions in ``[0, 1]``.

        Classes without a single non-difficult ground-truth box have no AP:
        they are left out of the dict and of the mean (the mean of the others).
        ``mAP`` is NaN when no class has ground truth.
        """
        return metrics_dict(self.evaluate_classes())


def metrics_dict(results: Iterable[ClassResult]) -> dict[str, float]:
    """``{'mAP', 'AP/<name>'}`` from per-class results, skipping classes without positives."""
    per_class = {f"AP/{r.name}": float(r.ap) for r in results if r.num_positives > 0}
    mean = float(np.mean(list(per_class.values()))) if per_class else math.nan
    return {"mAP": mean, **per_class}


def _as_classes(classes: Any) -> np.ndarray:
    """``[N]`` int64 classes from ints or the float classes models emit."""
    return np.rint(np.asarray(classes, dtype=np.float64)).astype(np.int64).reshape(-1)


def evaluator_from_coco(
    groundtruth: Union[str, Mapping],
    results: Union[str, list],
    iou_threshold: float = 0.5,
    method: str = "allpoint",
    pixel_offset: float = 0.0,
) -> VocEvaluator:
    """A ``VocEvaluator`` filled from a COCO annotation file and a COCO result list.

    Class ``k`` is the ``k``-th category by ascending category id. A ground
    truth annotation counts as VOC ``difficult`` when it carries a true
    ``difficult``, ``ignore`` or ``iscrowd`` field (converters from VOC write
    one of these; crowd regions are not single objects).

    Args:
        groundtruth: COCO annotation dict or path (``images``, ``annotations``
            with ``bbox`` ``[x, y, w, h]``, ``categories``).
        results: COCO result list or path: dicts with ``image_id``,
            ``category_id``, ``bbox`` ``[x, y, w, h]`` and ``score``.
        iou_threshold, method, pixel_offset: see ``VocEvaluator``.

    Returns:
        The filled evaluator; call ``evaluate()``.
    """
    gt = load_json(groundtruth)
    detections = load_results(results)
    categories = sorted(gt["categories"], key=lambda c: c["id"])
    index_of = {c["id"]: k for k, c in enumerate(categories)}
    evaluator = VocEvaluator([c["name"] for c in categories], iou_threshold, method, pixel_offset)
    image_ids = {image["id"] for image in gt["images"]}
    for ann in gt["annotations"]:
        difficult = bool(ann.get("difficult", 0) or ann.get("ignore", 0) or ann.get("iscrowd", 0))
        evaluator.add_groundtruth(ann["image_id"], xywh_to_yxyx(ann["bbox"]), [index_of[ann["category_id"]]], [difficult])
    for det in detections:
        if det["image_id"] not in image_ids:
            raise ValueError(f"result for image {det['image_id']!r}, which is not in the ground truth")
        if det["category_id"] not in index_of:
            raise ValueError(f"result with category {det['category_id']!r}, which is not in the ground truth")
        evaluator.add_predictions(
            det["image_id"], xywh_to_yxyx(det["bbox"]), [det["score"]], [index_of[det["category_id"]]]
        )
    return evaluator
