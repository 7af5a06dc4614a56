"""COCO box and mask AP through the reference COCOeval, from padded model outputs or result lists.

The numbers are COCOeval's own: this module only converts tfdet outputs to a
COCO result list and runs ``evaluate / accumulate / summarize``. When the
``faster_coco_eval`` package is importable its ``COCOeval_faster`` runs
instead; it is a C++ port of the same algorithm that its authors keep
numerically identical to pycocotools, so the 12 numbers are the same (the
tests compare against plain pycocotools; ``use_faster=False`` forces it).

Conversions done here, and only here:

* boxes ``yxyx`` absolute pixels -> COCO ``[x, y, width, height]``;
* model class ``k`` (``0..K-1``) -> ``category_ids[k]``; by default the
  ground truth's categories sorted by id, which is the converter's default
  label map (COCO ids renumbered ``1..K`` in that order);
* image-sized mask probabilities or 0/1 masks -> compressed RLE (threshold 0.5).

Mask results are written without a ``bbox`` so that COCOeval takes their
area from the mask (it takes it from the box whenever a box is present).
"""

from __future__ import annotations

import contextlib
import copy
import io
from typing import Any, Mapping, Optional, Sequence, Union

import numpy as np

from tfdet.evaluation.coco_format import load_results, yxyx_to_xywh

STAT_KEYS = ("AP", "AP50", "AP75", "APs", "APm", "APl", "AR1", "AR10", "AR100", "ARs", "ARm", "ARl")
IOU_TYPES = ("bbox", "segm")


def faster_coco_eval_available() -> bool:
    """Whether ``faster_coco_eval`` can be imported."""
    try:
        import faster_coco_eval  # noqa: F401
    except ImportError:
        return False
    return True


def _backend(use_faster: Optional[bool]):
    """``(COCO, COCOeval)`` classes: faster_coco_eval's when wanted and present, else pycocotools'."""
    if use_faster is None:
        use_faster = faster_coco_eval_available()
    if use_faster:
        from faster_coco_eval import COCO, COCOeval_faster

        return COCO, COCOeval_faster
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    return COCO, COCOeval


@contextlib.contextmanager
def _quiet(verbose: bool):
    """Swallows the COCO API's progress prints unless ``verbose``."""
    if verbose:
        yield
        return
    with contextlib.redirect_stdout(io.StringIO()):
        yield


def masks_to_rle(masks: Any, threshold: float = 0.5) -> list[dict]:
    """Image-sized masks -> compressed RLE dicts, JSON-ready (``counts`` as str).

    Args:
        masks: ``[N, H, W]`` probabilities or 0/1 values; a pixel is inside
            when its value is ``>= threshold``.
        threshold: binarisation threshold.

    Returns:
        ``N`` dicts ``{'size': [H, W], 'counts': str}``.
    """
    from pycocotools import mask as mask_utils

    masks = np.asarray(masks)
    if masks.ndim != 3:
        raise ValueError(f"masks must be [N, H, W], got shape {masks.shape}")
    binary = np.asfortranarray((masks >= threshold).transpose(1, 2, 0).astype(np.uint8))
    encoded = mask_utils.encode(binary) if len(masks) else []
    return [{"size": [int(r["size"][0]), int(r["size"][1])], "counts": r["counts"].decode("ascii")} for r in encoded]


def predictions_to_results(
    image_id: int,
    boxes: Any,
    scores: Any,
    classes: Any,
    category_ids: Sequence[int],
    num_detections: Any = None,
    masks: Any = None,
    mask_threshold: float = 0.5,
) -> list[dict]:
    """One image's padded model outputs -> COCO result dicts.

    Args:
        image_id: the COCO image id.
        boxes: ``[D, 4]`` ``yxyx`` absolute pixels.
        scores: ``[D]`` confidences.
        classes: ``[D]`` model classes ``0..K-1`` (float classes are rounded).
        category_ids: ``K`` COCO category ids, entry ``k`` for class ``k``.
        num_detections: valid leading entries; ``None`` means all ``D``.
        masks: ``[D, H, W]`` image-sized mask probabilities for segm results,
            or ``None`` for box results.
        mask_threshold: binarisation threshold for ``masks``.

    Returns:
        With ``masks``: ``{image_id, category_id, segmentation, score}``
        dicts (no bbox, see the module docstring); without:
        ``{image_id, category_id, bbox [x, y, w, h], score}``.
    """
    scores = np.asarray(scores, dtype=np.float64).reshape(-1)
    count = len(scores) if num_detections is None else int(np.asarray(num_detections))
    xywh = yxyx_to_xywh(boxes)[:count]
    labels = np.rint(np.asarray(classes, dtype=np.float64)).astype(np.int64).reshape(-1)[:count]
    if np.any((labels < 0) | (labels >= len(category_ids))):
        raise ValueError(f"detection classes must lie in 0..{len(category_ids) - 1}")
    categories = [int(category_ids[k]) for k in labels]
    if masks is not None:
        rles = masks_to_rle(np.asarray(masks)[:count], mask_threshold)
        return [
            {"image_id": image_id, "category_id": c, "segmentation": r, "score": float(s)}
            for c, r, s in zip(categories, rles, scores[:count])
        ]
    return [
        {"image_id": image_id, "category_id": c, "bbox": [float(v) for v in b], "score": float(s)}
        for c, b, s in zip(categories, xywh, scores[:count])
    ]


# (measure, IoU range, area, max detections) of the 12 standard numbers, in STAT_KEYS order.
_SUMMARY_ROWS = (
    ("Average Precision  (AP)", "0.50:0.95", "all", 100),
    ("Average Precision  (AP)", "0.50", "all", 100),
    ("Average Precision  (AP)", "0.75", "all", 100),
    ("Average Precision  (AP)", "0.50:0.95", "small", 100),
    ("Average Precision  (AP)", "0.50:0.95", "medium", 100),
    ("Average Precision  (AP)", "0.50:0.95", "large", 100),
    ("Average Recall     (AR)", "0.50:0.95", "all", 1),
    ("Average Recall     (AR)", "0.50:0.95", "all", 10),
    ("Average Recall     (AR)", "0.50:0.95", "all", 100),
    ("Average Recall     (AR)", "0.50:0.95", "small", 100),
    ("Average Recall     (AR)", "0.50:0.95", "medium", 100),
    ("Average Recall     (AR)", "0.50:0.95", "large", 100),
)


def format_summary(metrics: Mapping[str, float]) -> str:
    """The standard 12-line COCOeval table (as pycocotools prints it) from the numbers by name."""
    lines = [
        f" {measure} @[ IoU={iou:<9} | area={area:>6s} | maxDets={max_dets:>3d} ] = {metrics[key]:0.3f}"
        for key, (measure, iou, area, max_dets) in zip(STAT_KEYS, _SUMMARY_ROWS)
    ]
    return "\n".join(lines) + "\n"


class CocoEvaluator:
    """Accumulates COCO results, then runs COCOeval for the 12 standard numbers.

    Feed it padded model outputs (``add_predictions``, per image or
    ``add_batch``) during training, or a COCO result list or file
    (``add_results``) from the command line; ``evaluate()`` returns
    ``{'AP', 'AP50', 'AP75', 'APs', 'APm', 'APl', 'AR1', 'AR10', 'AR100',
    'ARs', 'ARm', 'ARl'}`` as fractions (-1 where COCOeval has nothing to
    measure, e.g. no small objects). After ``evaluate()``, ``summary`` holds
    COCOeval's printed table and ``coco_eval`` the evaluated object.
    """

    def __init__(
        self,
        groundtruth: Union[str, Mapping, Any],
        iou_type: str = "bbox",
        category_ids: Optional[Sequence[int]] = None,
        use_faster: Optional[bool] = None,
        verbose: bool = False,
        mask_threshold: float = 0.5,
    ):
        """Args:
        groundtruth: COCO annotation file path, its dict, or a loaded ``COCO`` object.
        iou_type: ``"bbox"`` or ``"segm"``.
        category_ids: ``K`` COCO category ids for model classes ``0..K-1``;
            ``None``: the ground truth's categories sorted by id.
        use_faster: ``True`` requires faster_coco_eval, ``False`` uses
            pycocotools, ``None`` uses faster_coco_eval when importable.
        verbose: let the COCO API print its progress and table.
        mask_threshold: binarisation threshold for predicted mask probabilities.
        """
        if iou_type not in IOU_TYPES:
            raise ValueError(f"iou_type must be one of {IOU_TYPES}, got {iou_type!r}")
        self.iou_type = iou_type
        self.verbose = verbose
        self.mask_threshold = mask_threshold
        self._coco_cls, self._eval_cls = _backend(use_faster)
        self.backend = "faster_coco_eval" if self._eval_cls.__module__.startswith("faster_coco_eval") else "pycocotools"
        self.coco_gt = self._load_groundtruth(groundtruth)
        categories = sorted(self.coco_gt.dataset["categories"], key=lambda c: c["id"])
        self.category_ids = [int(c["id"]) for c in categories] if category_ids is None else list(category_ids)
        self.category_names = {int(c["id"]): c["name"] for c in categories}
        self.summary = ""
        self.coco_eval = None
        self.reset()

    def _load_groundtruth(self, groundtruth: Any):
        if isinstance(groundtruth, Mapping):
            coco = self._coco_cls()
            coco.dataset = copy.deepcopy(dict(groundtruth))
            with _quiet(self.verbose):
                coco.createIndex()
            return coco
        if isinstance(groundtruth, (str, bytes)) or hasattr(groundtruth, "__fspath__"):
            with _quiet(self.verbose):
                return self._coco_cls(str(groundtruth))
        return groundtruth  # an already loaded COCO object

    def reset(self) -> None:
        """Forget the results added so far (the ground truth stays)."""
        self._results: list[dict] = []

    @property
    def results(self) -> list[dict]:
        """The COCO result list accumulated so far."""
        return self._results

    def add_results(self, results: Union[str, list]) -> None:
        """Adds a COCO result list, or the path of a result file.

        Args:
            results: dicts with ``image_id``, ``category_id``, ``score`` and
                ``bbox`` ``[x, y, w, h]`` (bbox) or ``segmentation`` RLE (segm).
        """
        loaded = load_results(results)
        # Deep copies: loadRes writes area/id/iscrowd into the dicts it gets.
        self._results.extend(copy.deepcopy(loaded))

    def add_predictions(
        self,
        image_id: int,
        boxes: Any,
        scores: Any,
        classes: Any,
        num_detections: Any = None,
        masks: Any = None,
    ) -> None:
        """Adds one image's padded model outputs.

        Args:
            image_id: the COCO image id in the ground truth.
            boxes: ``[D, 4]`` ``yxyx`` absolute pixels.
            scores: ``[D]``.
            classes: ``[D]`` model classes ``0..K-1``.
            num_detections: valid leading entries; ``None`` means all ``D``.
            masks: ``[D, H, W]`` image-sized mask probabilities; needed for segm.
        """
        if self.iou_type == "segm" and masks is None:
            raise ValueError("segm evaluation needs masks")
        self._results.extend(
            predictions_to_results(
                int(image_id), boxes, scores, classes, self.category_ids, num_detections,
                masks if self.iou_type == "segm" else None, self.mask_threshold,
            )
        )

    def add_batch(self, image_ids: Sequence[int], predictions: Mapping[str, Any]) -> None:
        """Adds a batch of padded model outputs.

        Args:
            image_ids: ``B`` COCO image ids.
            predictions: ``boxes [B, D, 4]`` yxyx absolute, ``scores [B, D]``,
                ``classes [B, D]``, ``num_detections [B]``, and for segm
                ``masks [B, D, H, W]`` (image-sized; images of one batch share H, W).
        """
        arrays = {key: np.asarray(value) for key, value in predictions.items()}
        for b, image_id in enumerate(image_ids):
            self.add_predictions(
                image_id,
                arrays["boxes"][b],
                arrays["scores"][b],
                arrays["classes"][b],
                arrays["num_detections"][b] if "num_detections" in arrays else None,
                arrays["masks"][b] if "masks" in arrays else None,
            )

    def _load_results(self):
        if self._results:
            with _quiet(self.verbose):
                return self.coco_gt.loadRes(copy.deepcopy(self._results))
        # loadRes cannot take an empty list; an empty result set still has a
        # defined score (0 where there is ground truth), so build it directly.
        empty = self._coco_cls()
        empty.dataset = {
            "images": list(self.coco_gt.dataset["images"]),
            "categories": copy.deepcopy(self.coco_gt.dataset["categories"]),
            "annotations": [],
        }
        with _quiet(self.verbose):
            empty.createIndex()
        return empty

    def evaluate(self) -> dict[str, float]:
        """Runs COCOeval on everything added; returns the 12 standard numbers by name."""
        coco_dt = self._load_results()
        coco_eval = self._eval_cls(self.coco_gt, coco_dt, self.iou_type)
        with _quiet(self.verbose):
            coco_eval.evaluate()
            coco_eval.accumulate()
        with _quiet(False):
            coco_eval.summarize()
        metrics = {key: float(value) for key, value in zip(STAT_KEYS, coco_eval.stats)}
        # Formatted here, not captured from summarize(): faster_coco_eval logs
        # rather than prints, and the table must not depend on the backend.
        self.summary = format_summary(metrics)
        if self.verbose:
            print(self.summary, end="")
        self.coco_eval = coco_eval
        return metrics

    def pr_curves(self, iou_threshold: float = 0.5) -> dict[str, tuple[np.ndarray, np.ndarray]]:
        """Per-category precision over COCO's 101 recall points, from the last ``evaluate()``.

        Area range ``all``, 100 detections per image, at the IoU threshold of
        COCOeval's list closest to ``iou_threshold``. Categories without
        ground truth are left out.

        Returns:
            ``{category name: (recall [101], precision [101])}``.
        """
        if self.coco_eval is None:
            raise RuntimeError("call evaluate() first")
        params = self.coco_eval.params
        t = int(np.argmin(np.abs(np.asarray(params.iouThrs) - iou_threshold)))
        area = list(params.areaRngLbl).index("all")
        dets = int(np.argmax(params.maxDets))
        precision = self.coco_eval.eval["precision"]  # [T, R, K, A, M], -1 = no ground truth
        recall = np.asarray(params.recThrs, dtype=np.float64)
        curves = {}
        for k, category_id in enumerate(params.catIds):
            values = np.asarray(precision[t, :, k, area, dets], dtype=np.float64)
            if np.all(values < 0):
                continue
            curves[self.category_names.get(int(category_id), str(category_id))] = (recall, np.clip(values, 0, None))
        return curves


def evaluate_results(
    groundtruth: Union[str, Mapping],
    results: Union[str, list],
    iou_type: str = "bbox",
    use_faster: Optional[bool] = None,
    verbose: bool = False,
) -> dict[str, float]:
    """The 12 COCO numbers for a COCO result list (or file) against an annotation file (or dict)."""
    evaluator = CocoEvaluator(groundtruth, iou_type=iou_type, use_faster=use_faster, verbose=verbose)
    evaluator.add_results(results)
    return evaluator.evaluate()
