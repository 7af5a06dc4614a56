"""Anchor targets: which anchors are objects, of which class, and where the box is.

``assign`` combines a similarity (IoU by default), a matcher and a box coder
into the training targets of an anchor-based head (RPN, RetinaNet, SSD,
EfficientDet, the RoI head with proposals as "anchors"):

- padded ground truth (class -1) is invisible: it matches nothing;
- crowd ground truth (``is_crowd``) is never a positive. An anchor whose
  best-matching valid ground truth is a crowd box, with a similarity at or
  above the matcher's ``negative_threshold``, is IGNORED rather than made
  negative (or positive): a crowd region holds unlabelled objects, so
  calling an anchor on it background would teach the wrong thing. An anchor
  that touches a crowd box only below the negative threshold stays a
  negative. This is the COCO crowd rule of Detectron's RPN and the TF Object
  Detection API's crowd handling, stated for a static batched matcher.
  Crowd boxes also never force low-quality matches.

Class targets, ``[B, A]`` int32:

- ``0..K-1``: a positive, the class of its ground truth;
- ``BACKGROUND`` (-1): a negative;
- ``IGNORED`` (-2): neither (between thresholds, or on a crowd region).

``keras.ops`` only; static shapes; compiles under XLA, runs under JAX.
"""

from __future__ import annotations

from keras import ops

from .box_ops import pairwise_iou
from .matchers import NEGATIVE, POSITIVE

__all__ = ["BACKGROUND", "IGNORED", "assign"]

BACKGROUND = -1
IGNORED = -2


def assign(anchors, gt_boxes, gt_classes, gt_is_crowd, matcher, coder, similarity=pairwise_iou):
    """Matches anchors to ground truth and encodes the regression targets.

    Args:
        anchors: ``[A, 4]`` (shared by the batch) or ``[B, A, 4]`` (per image,
            e.g. RoI proposals) yxyx pixels.
        gt_boxes: ``[B, G, 4]`` yxyx pixels.
        gt_classes: ``[B, G]`` int, ``0..K-1``; -1 (or any negative) marks padding.
        gt_is_crowd: ``[B, G]`` bool/int, or None (no crowd boxes).
        matcher: an ``ArgmaxMatcher`` (anything with
            ``match(similarity [B, A, G], valid [B, G]) -> (matched_gt, labels)``
            and a ``negative_threshold`` attribute).
        coder: a box coder with ``encode(boxes [..., 4], anchors [..., 4])``
            (``DeltaCoder``, ``CenterSizeCoder``).
        similarity: ``f(anchors, gt_boxes) -> [B, A, G]``, broadcasting a
            shared ``[A, 4]`` against ``[B, G, 4]`` as ``pairwise_iou`` does.

    Returns:
        A dict of:

        - ``class_targets``: ``[B, A]`` int32, class for positives,
          ``BACKGROUND`` (-1) for negatives, ``IGNORED`` (-2) otherwise;
        - ``box_targets``: ``[B, A, 4]`` float32, ``coder.encode`` of the
          matched ground truth against the anchor for positives, 0 elsewhere;
        - ``matched_boxes``: ``[B, A, 4]`` float32 yxyx, the matched ground
          truth for positives, 0 elsewhere (for IoU-type box losses);
        - ``positive_mask``, ``negative_mask``, ``ignore_mask``: ``[B, A]``
          bool, exactly one True per anchor;
        - ``matched_gt``: ``[B, A]`` int32, the matched ground-truth slot for
          positives, -1 elsewhere.
    """
    anchors = ops.cast(anchors, "float32")
    gt_boxes = ops.cast(gt_boxes, "float32")
    gt_classes = ops.cast(gt_classes, "int32")
    valid = gt_classes >= 0
    if gt_is_crowd is None:
        crowd = ops.zeros_like(valid)
    else:
        crowd = ops.logical_and(ops.cast(gt_is_crowd, "bool"), valid)
    non_crowd = ops.logical_and(valid, ops.logical_not(crowd))

    scores = ops.cast(similarity(anchors, gt_boxes), "float32")  # [B, A, G]
    # The matcher never sees crowd columns: they can be neither a match nor
    # a low-quality force.
    matched_gt, labels = matcher.match(scores, non_crowd)

    neg_inf = float("-inf")
    best_crowd = ops.max(ops.where(ops.expand_dims(crowd, 1), scores, neg_inf), axis=-1)  # [B, A]
    best_any = ops.max(ops.where(ops.expand_dims(valid, 1), scores, neg_inf), axis=-1)
    # Ties between a crowd box and a labelled box go to the crowd box: when
    # in doubt, ignore rather than train on it.
    on_crowd = ops.logical_and(best_crowd >= best_any, best_crowd >= matcher.negative_threshold)

    not_crowd = ops.logical_not(on_crowd)
    positive = ops.logical_and(labels == POSITIVE, not_crowd)
    negative = ops.logical_and(labels == NEGATIVE, not_crowd)
    ignore = ops.logical_not(ops.logical_or(positive, negative))
    matched_gt = ops.where(positive, matched_gt, -1)

    # Gather with index 0 for non-positives; the results are masked below.
    gather_index = ops.maximum(matched_gt, 0)
    matched_classes = ops.take_along_axis(gt_classes, gather_index, axis=1)  # [B, A]
    matched_boxes = ops.take_along_axis(gt_boxes, ops.expand_dims(gather_index, -1), axis=1)  # [B, A, 4]
    positive_3d = ops.expand_dims(positive, -1)
    # Non-positives encode the anchor against itself, so the coder never sees
    # a padded (possibly empty) box and its output is finite everywhere.
    anchors_b = ops.broadcast_to(anchors, ops.shape(matched_boxes))
    encoded = coder.encode(ops.where(positive_3d, matched_boxes, anchors_b), anchors_b)
    box_targets = ops.where(positive_3d, encoded, 0.0)

    class_targets = ops.where(positive, matched_classes, ops.where(negative, BACKGROUND, IGNORED))
    return {
        "class_targets": ops.cast(class_targets, "int32"),
        "box_targets": ops.cast(box_targets, "float32"),
        "matched_boxes": ops.where(positive_3d, matched_boxes, 0.0),
        "positive_mask": positive,
        "negative_mask": negative,
        "ignore_mask": ignore,
        "matched_gt": ops.cast(matched_gt, "int32"),
    }
