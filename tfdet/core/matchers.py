"""Matching anchors to ground truth.

``ArgmaxMatcher`` is the threshold matcher of Faster R-CNN, RetinaNet, SSD and
EfficientDet: every anchor takes the ground truth it is most similar to, and
the similarity decides whether it is a positive, a negative or ignored.
``yolo_best_anchor_match`` is YOLOv3's rule: every ground-truth box goes to
the one prior whose shape fits it best.

Batched and static: ``[B, A, G]`` similarities in, ``[B, A]`` decisions out;
padded ground-truth slots are masked by a ``[B, G]`` validity mask rather
than removed. ``keras.ops`` only; compiles under XLA, runs under JAX.
"""

from __future__ import annotations

from keras import ops

from .box_ops import pairwise_iou

__all__ = ["POSITIVE", "NEGATIVE", "IGNORE", "ArgmaxMatcher", "yolo_best_anchor_match"]

# Values of the ``labels`` the matcher returns.
POSITIVE = 1
NEGATIVE = 0
IGNORE = -1


def _first_argmax(values, maximum):
    """Index of the first maximum along the last axis, int32.

    ``argmax`` leaves the winner among ties unspecified on some backends;
    the smallest index of an equal value is the same everywhere.

    Args:
        values: ``[..., N]``.
        maximum: ``[...]``, the maximum of ``values`` along the last axis.

    Returns:
        ``[...]`` int32 in ``[0, N)``.
    """
    size = values.shape[-1]
    index = ops.arange(size, dtype="int32")
    first = ops.min(ops.where(values == ops.expand_dims(maximum, -1), index, size), axis=-1)
    # A NaN row equals nothing; keep the index in range for later gathers.
    return ops.minimum(first, size - 1)


class ArgmaxMatcher:
    """Threshold matcher on a similarity matrix (usually IoU).

    For each anchor, ``best`` is its highest similarity over the valid
    ground-truth columns:

    - ``best >= positive_threshold``: positive, matched to that column;
    - ``best < negative_threshold``: negative;
    - in between: ignored (neither positive nor negative in the losses).

    With ``allow_low_quality_matches`` (the Faster R-CNN RPN rule), every
    valid ground truth additionally makes positive the anchor(s) with its
    highest similarity, ties included, so no object is left without an
    anchor. As in Detectron2, such an anchor is matched to ITS best ground
    truth (usually the one that forced it); with ``forced_match="forcing"``
    (the SSD reference's bipartite step) it is matched to the ground truth
    that forced it instead (the most similar one if several did), so no
    forcing ground truth is left without an anchor. A ground truth whose highest
    similarity is 0 or less overlaps no anchor and forces nothing, rather
    than making every non-overlapping anchor positive.

    Typical settings: RPN ``(0.7, 0.3, True)``; Fast R-CNN RoIs ``(0.5, 0.5)``;
    RetinaNet ``(0.5, 0.4)``; SSD ``(0.5, 0.5, True, forced_match="forcing")``.

    Args:
        positive_threshold: lowest similarity of a positive.
        negative_threshold: similarities below it are negatives; defaults to
            ``positive_threshold`` (no ignore band). Must not exceed it.
        allow_low_quality_matches: force each ground truth's best anchor(s)
            to be positive.
        forced_match: whom a forced anchor is matched to: ``"own_best"``
            (its own best ground truth, Detectron2) or ``"forcing"`` (the
            ground truth that forced it, SSD).
    """

    def __init__(self, positive_threshold, negative_threshold=None, allow_low_quality_matches=False,
                 forced_match="own_best"):
        if forced_match not in ("own_best", "forcing"):
            raise ValueError(f"forced_match must be 'own_best' or 'forcing', got {forced_match!r}")
        if negative_threshold is None:
            negative_threshold = positive_threshold
        if negative_threshold > positive_threshold:
            raise ValueError(
                f"negative_threshold {negative_threshold} must not exceed positive_threshold {positive_threshold}"
            )
        self.positive_threshold = float(positive_threshold)
        self.negative_threshold = float(negative_threshold)
        self.allow_low_quality_matches = bool(allow_low_quality_matches)
        self.forced_match = forced_match

    def match(self, similarity, valid):
        """Matches anchors (rows) to ground truth (columns).

        Args:
            similarity: ``[B, A, G]`` float, e.g. IoU of anchor ``a`` with
                ground truth ``g``.
            valid: ``[B, G]`` bool; False marks padded columns, which never
                match and never force a low-quality match.

        Returns:
            ``(matched_gt, labels)``:
            ``matched_gt`` ``[B, A]`` int32, the ground-truth column of each
            positive (the first one on ties), -1 for every other anchor;
            ``labels`` ``[B, A]`` int32, ``POSITIVE`` (1), ``NEGATIVE`` (0) or
            ``IGNORE`` (-1). An image without valid ground truth is all
            negative.
        """
        similarity = ops.cast(similarity, "float32")
        valid = ops.expand_dims(ops.cast(valid, "bool"), 1)  # [B, 1, G]
        # Padded columns become -inf: they lose every max and every argmax,
        # and a row with no valid column has best = -inf, a negative.
        masked = ops.where(valid, similarity, float("-inf"))
        best = ops.max(masked, axis=-1)  # [B, A]
        best_gt = _first_argmax(masked, best)
        positive = best >= self.positive_threshold
        negative = best < self.negative_threshold
        if self.allow_low_quality_matches:
            best_per_gt = ops.max(masked, axis=1, keepdims=True)  # [B, 1, G]
            # Equality with the column maximum keeps ties: every anchor that
            # shares a ground truth's best similarity is forced.
            is_best = ops.logical_and(masked == best_per_gt, best_per_gt > 0)
            forcing = ops.logical_and(is_best, valid)  # [B, A, G]
            forced = ops.any(forcing, axis=-1)
            if self.forced_match == "forcing":
                forcing_similarity = ops.where(forcing, masked, float("-inf"))
                forcing_gt = _first_argmax(forcing_similarity, ops.max(forcing_similarity, axis=-1))
                best_gt = ops.where(forced, forcing_gt, best_gt)
            positive = ops.logical_or(positive, forced)
            negative = ops.logical_and(negative, ops.logical_not(forced))
        labels = ops.where(positive, POSITIVE, ops.where(negative, NEGATIVE, IGNORE))
        matched_gt = ops.where(positive, best_gt, -1)
        return ops.cast(matched_gt, "int32"), ops.cast(labels, "int32")

    def __repr__(self):
        return (
            f"ArgmaxMatcher(positive_threshold={self.positive_threshold}, "
            f"negative_threshold={self.negative_threshold}, "
            f"allow_low_quality_matches={self.allow_low_quality_matches}, "
            f"forced_match={self.forced_match!r})"
        )


def yolo_best_anchor_match(gt_boxes, valid, priors):
    """YOLOv3: each ground truth goes to the single prior of the best shape.

    The shape IoU of a box ``(h, w)`` and a prior ``(ph, pw)`` is the IoU of
    the two boxes centred on the same point,
    ``min(h, ph) min(w, pw) / (h w + ph pw - min(h, ph) min(w, pw))``; the
    prior with the highest one is chosen, the lowest index on ties. Its
    level names the output scale and grid; the cell is the one containing
    the box centre (the caller's job).

    Args:
        gt_boxes: ``[B, G, 4]`` yxyx pixels.
        valid: ``[B, G]`` bool; False marks padding.
        priors: ``[L, n, 2]`` ``(width, height)`` pixels (``anchors.yolo_priors()``).

    Returns:
        ``(level, anchor)``, each ``[B, G]`` int32: the output level
        ``0..L-1`` and the prior's index ``0..n-1`` within it; -1 for padding.
    """
    gt_boxes = ops.cast(gt_boxes, "float32")
    priors = ops.cast(priors, "float32")
    num_levels, per_level = priors.shape[0], priors.shape[1]
    prior_w, prior_h = ops.unstack(ops.reshape(priors, (num_levels * per_level, 2)), num=2, axis=-1)
    ymin, xmin, ymax, xmax = ops.unstack(gt_boxes, num=4, axis=-1)
    half_h, half_w = (ymax - ymin) * 0.5, (xmax - xmin) * 0.5
    # Both sets centred on the origin, so IoU compares shapes only.
    centred_gt = ops.stack([-half_h, -half_w, half_h, half_w], axis=-1)  # [B, G, 4]
    centred_priors = ops.stack([-prior_h * 0.5, -prior_w * 0.5, prior_h * 0.5, prior_w * 0.5], axis=-1)  # [P, 4]
    shape_iou = pairwise_iou(centred_gt, centred_priors)  # [B, G, P]
    best = _first_argmax(shape_iou, ops.max(shape_iou, axis=-1))
    valid = ops.cast(valid, "bool")
    level = ops.where(valid, best // per_level, -1)
    anchor = ops.where(valid, best % per_level, -1)
    return ops.cast(level, "int32"), ops.cast(anchor, "int32")
