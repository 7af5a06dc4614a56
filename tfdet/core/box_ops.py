"""Box geometry: areas, overlaps (IoU, GIoU, DIoU, CIoU), clipping, conversions.

Boxes are ``[..., 4]`` tensors in ``yxyx`` order (``ymin, xmin, ymax, xmax``),
absolute pixels, float32, unless a function's name says otherwise. Every
function takes arbitrary leading dimensions, uses ``keras.ops`` only, compiles
under XLA and runs under ``KERAS_BACKEND=jax``.

Boxes are assumed well formed (``ymin <= ymax``, ``xmin <= xmax``). A box with a
zero or negative extent has area 0 and overlaps nothing: every ratio here
uses a division that returns 0 where the denominator is 0, so degenerate
boxes (e.g. zero padding of ground truth) give 0 and never NaN, in values
and in gradients.

References:
    GIoU: Rezatofighi et al., "Generalized Intersection over Union", CVPR 2019.
    DIoU, CIoU: Zheng et al., "Distance-IoU Loss", AAAI 2020.
"""

from __future__ import annotations

import math

import keras
from keras import ops

__all__ = [
    "area",
    "pairwise_iou",
    "matched_iou",
    "pairwise_giou",
    "matched_giou",
    "matched_diou",
    "matched_ciou",
    "clip_boxes",
    "yxyx_to_xyxy",
    "xyxy_to_yxyx",
    "xywh_to_yxyx",
    "yxyx_to_xywh",
    "cxcywh_to_yxyx",
    "yxyx_to_cxcywh",
    "normalize_boxes",
    "denormalize_boxes",
]


# ---------------------------------------------------------------------------
# Helpers
# ---------------------------------------------------------------------------


def _as_float(x):
    """``x`` as a tensor; integer inputs become float32 so that ratios are exact."""
    x = ops.convert_to_tensor(x)
    if not keras.backend.standardize_dtype(x.dtype).startswith(("float", "bfloat")):
        x = ops.cast(x, "float32")
    return x


def _safe_divide(numerator, denominator):
    """``numerator / denominator`` where ``denominator > 0``, else 0.

    The denominator is replaced by 1 before dividing (not only the result
    masked afterwards) so that the gradient of the unused branch is finite too.
    """
    positive = denominator > 0
    safe_denominator = ops.where(positive, denominator, ops.ones_like(denominator))
    return ops.where(positive, numerator / safe_denominator, ops.zeros_like(numerator))


def _coordinates(boxes):
    """Splits ``[..., 4]`` into four ``[...]`` tensors, in stored order."""
    return ops.unstack(boxes, num=4, axis=-1)


def _extents(boxes):
    """Heights and widths ``[...]`` of yxyx boxes, clamped at 0."""
    ymin, xmin, ymax, xmax = _coordinates(boxes)
    return ops.maximum(ymax - ymin, 0.0), ops.maximum(xmax - xmin, 0.0)


def _intersection_and_union(boxes1, boxes2):
    """Intersection and union areas of broadcast-compatible box tensors.

    Args:
        boxes1: ``[..., 4]`` yxyx.
        boxes2: ``[..., 4]`` yxyx, broadcastable against ``boxes1``.

    Returns:
        ``(intersection, union)``, each of the broadcast shape ``[...]``.
    """
    ymin1, xmin1, ymax1, xmax1 = _coordinates(boxes1)
    ymin2, xmin2, ymax2, xmax2 = _coordinates(boxes2)
    overlap_h = ops.maximum(ops.minimum(ymax1, ymax2) - ops.maximum(ymin1, ymin2), 0.0)
    overlap_w = ops.maximum(ops.minimum(xmax1, xmax2) - ops.maximum(xmin1, xmin2), 0.0)
    intersection = overlap_h * overlap_w
    union = area(boxes1) + area(boxes2) - intersection
    return intersection, union


def _enclosing_extents(boxes1, boxes2):
    """Height and width ``[...]`` of the smallest box enclosing both boxes."""
    ymin1, xmin1, ymax1, xmax1 = _coordinates(boxes1)
    ymin2, xmin2, ymax2, xmax2 = _coordinates(boxes2)
    height = ops.maximum(ops.maximum(ymax1, ymax2) - ops.minimum(ymin1, ymin2), 0.0)
    width = ops.maximum(ops.maximum(xmax1, xmax2) - ops.minimum(xmin1, xmin2), 0.0)
    return height, width


def _iou(boxes1, boxes2):
    intersection, union = _intersection_and_union(boxes1, boxes2)
    return _safe_divide(intersection, union)


def _giou(boxes1, boxes2):
    intersection, union = _intersection_and_union(boxes1, boxes2)
    iou = _safe_divide(intersection, union)
    enclosing_h, enclosing_w = _enclosing_extents(boxes1, boxes2)
    enclosing_area = enclosing_h * enclosing_w
    # GIoU = IoU - |C \ (A u B)| / |C|; C of area 0 means both boxes are one
    # point, and the penalty is then 0.
    return iou - _safe_divide(enclosing_area - union, enclosing_area)


def _centre_distance_penalty(boxes1, boxes2):
    """``rho^2 / c^2``: squared centre distance over squared enclosing diagonal."""
    ymin1, xmin1, ymax1, xmax1 = _coordinates(boxes1)
    ymin2, xmin2, ymax2, xmax2 = _coordinates(boxes2)
    # Differences of doubled centres avoid four multiplications by 0.5.
    dy = (ymin1 + ymax1 - ymin2 - ymax2) * 0.5
    dx = (xmin1 + xmax1 - xmin2 - xmax2) * 0.5
    enclosing_h, enclosing_w = _enclosing_extents(boxes1, boxes2)
    diagonal_sq = enclosing_h * enclosing_h + enclosing_w * enclosing_w
    return _safe_divide(dy * dy + dx * dx, diagonal_sq)


def _aspect_angle(boxes):
    """``arctan(w / h)`` of each box, ``[...]``, defined for every box.

    ``arctan2`` handles ``h == 0``; a box with ``h == w == 0`` is given angle
    0 through a stand-in ``h = 1``, because ``arctan2``'s gradient is NaN at
    the origin.
    """
    height, width = _extents(boxes)
    empty = (height + width) <= 0
    safe_height = ops.where(empty, ops.ones_like(height), height)
    return ops.arctan2(width, safe_height)


# ---------------------------------------------------------------------------
# Areas and overlaps
# ---------------------------------------------------------------------------


def area(boxes):
    """Areas of yxyx boxes.

    Args:
        boxes: ``[..., 4]`` yxyx.

    Returns:
        ``[...]`` areas; a zero or negative extent gives 0.
    """
    height, width = _extents(_as_float(boxes))
    return height * width


def pairwise_iou(boxes1, boxes2):
    """Intersection over union of every box in ``boxes1`` with every box in ``boxes2``.

    Args:
        boxes1: ``[..., N, 4]`` yxyx.
        boxes2: ``[..., M, 4]`` yxyx; leading dims broadcast against ``boxes1``'s.

    Returns:
        ``[..., N, M]`` IoU in ``[0, 1]``; 0 where the union is empty.
    """
    boxes1, boxes2 = _as_float(boxes1), _as_float(boxes2)
    return _iou(ops.expand_dims(boxes1, -2), ops.expand_dims(boxes2, -3))


def matched_iou(boxes1, boxes2):
    """Intersection over union of corresponding boxes.

    Args:
        boxes1: ``[..., N, 4]`` yxyx.
        boxes2: ``[..., N, 4]`` yxyx (broadcastable against ``boxes1``).

    Returns:
        ``[..., N]`` IoU in ``[0, 1]``; 0 where the union is empty.
    """
    return _iou(_as_float(boxes1), _as_float(boxes2))


def pairwise_giou(boxes1, boxes2):
    """Generalised IoU of every box in ``boxes1`` with every box in ``boxes2``.

    ``GIoU = IoU - (|C| - |A u B|) / |C|`` with ``C`` the smallest box
    enclosing both (Rezatofighi et al. 2019).

    Args:
        boxes1: ``[..., N, 4]`` yxyx.
        boxes2: ``[..., M, 4]`` yxyx; leading dims broadcast against ``boxes1``'s.

    Returns:
        ``[..., N, M]`` GIoU in ``[-1, 1]``.
    """
    boxes1, boxes2 = _as_float(boxes1), _as_float(boxes2)
    return _giou(ops.expand_dims(boxes1, -2), ops.expand_dims(boxes2, -3))


def matched_giou(boxes1, boxes2):
    """Generalised IoU of corresponding boxes (see ``pairwise_giou``).

    Args:
        boxes1: ``[..., N, 4]`` yxyx.
        boxes2: ``[..., N, 4]`` yxyx (broadcastable against ``boxes1``).

    Returns:
        ``[..., N]`` GIoU in ``[-1, 1]``.
    """
    return _giou(_as_float(boxes1), _as_float(boxes2))


def matched_diou(boxes1, boxes2):
    """Distance-IoU of corresponding boxes (Zheng et al. 2020).

    ``DIoU = IoU - rho^2 / c^2``: ``rho`` the distance between the box
    centres, ``c`` the diagonal of the smallest enclosing box.

    Args:
        boxes1: ``[..., N, 4]`` yxyx.
        boxes2: ``[..., N, 4]`` yxyx (broadcastable against ``boxes1``).

    Returns:
        ``[..., N]`` DIoU in ``[-1, 1]``.
    """
    boxes1, boxes2 = _as_float(boxes1), _as_float(boxes2)
    return _iou(boxes1, boxes2) - _centre_distance_penalty(boxes1, boxes2)


def matched_ciou(boxes1, boxes2):
    """Complete-IoU of corresponding boxes (Zheng et al. 2020, AAAI).

    ``CIoU = IoU - rho^2 / c^2 - alpha * v`` with the aspect-ratio term
    ``v = 4 / pi^2 * (arctan(w1 / h1) - arctan(w2 / h2))^2`` and the trade-off
    ``alpha = v / ((1 - IoU) + v)``. As in the paper, ``alpha`` is a constant
    for gradients (``stop_gradient``). ``v`` is symmetric, so the order of the
    two arguments (prediction, target) does not matter.

    Args:
        boxes1: ``[..., N, 4]`` yxyx.
        boxes2: ``[..., N, 4]`` yxyx (broadcastable against ``boxes1``).

    Returns:
        ``[..., N]`` CIoU in ``(-2, 1]`` (the DIoU part is at least -1, and
        ``alpha * v <= v < 1``); 1 for identical boxes.
    """
    boxes1, boxes2 = _as_float(boxes1), _as_float(boxes2)
    iou = _iou(boxes1, boxes2)
    angle_difference = _aspect_angle(boxes1) - _aspect_angle(boxes2)
    v = (4.0 / (math.pi * math.pi)) * angle_difference * angle_difference
    alpha = ops.stop_gradient(_safe_divide(v, (1.0 - iou) + v))
    return iou - _centre_distance_penalty(boxes1, boxes2) - alpha * v


# ---------------------------------------------------------------------------
# Clipping and scaling
# ---------------------------------------------------------------------------


def clip_boxes(boxes, height, width):
    """Clips yxyx boxes to an image ``[0, height] x [0, width]``.

    Args:
        boxes: ``[..., 4]`` yxyx absolute pixels.
        height: image height, a scalar or a tensor broadcastable against
            ``boxes[..., 0]`` (e.g. ``[B, 1]`` for ``boxes`` of ``[B, N, 4]``).
        width: image width, like ``height``.

    Returns:
        ``[..., 4]`` yxyx (broadcast shape), every coordinate inside the image.
    """
    boxes = _as_float(boxes)
    height = ops.cast(height, boxes.dtype)
    width = ops.cast(width, boxes.dtype)
    ymin, xmin, ymax, xmax = _coordinates(boxes)
    return _stack_broadcast(
        [_clip(ymin, height), _clip(xmin, width), _clip(ymax, height), _clip(xmax, width)]
    )


def _clip(coordinate, upper):
    """``coordinate`` limited to ``[0, upper]``."""
    return ops.minimum(ops.maximum(coordinate, 0.0), upper)


def normalize_boxes(boxes, height, width):
    """Absolute-pixel yxyx boxes to ``[0, 1]`` coordinates.

    Args:
        boxes: ``[..., 4]`` yxyx absolute pixels.
        height: image height, a scalar or a tensor broadcastable against
            ``boxes[..., 0]``.
        width: image width, like ``height``.

    Returns:
        ``[..., 4]`` yxyx normalised by the image size.
    """
    boxes = _as_float(boxes)
    height = ops.cast(height, boxes.dtype)
    width = ops.cast(width, boxes.dtype)
    ymin, xmin, ymax, xmax = _coordinates(boxes)
    return _stack_broadcast([ymin / height, xmin / width, ymax / height, xmax / width])


def denormalize_boxes(boxes, height, width):
    """``[0, 1]`` yxyx boxes to absolute pixels (the inverse of ``normalize_boxes``).

    Args:
        boxes: ``[..., 4]`` yxyx normalised.
        height: image height, a scalar or a tensor broadcastable against
            ``boxes[..., 0]``.
        width: image width, like ``height``.

    Returns:
        ``[..., 4]`` yxyx absolute pixels.
    """
    boxes = _as_float(boxes)
    height = ops.cast(height, boxes.dtype)
    width = ops.cast(width, boxes.dtype)
    ymin, xmin, ymax, xmax = _coordinates(boxes)
    return _stack_broadcast([ymin * height, xmin * width, ymax * height, xmax * width])


def _stack_broadcast(coordinates):
    """Stacks four ``[...]`` tensors on a new last axis, broadcasting them first.

    A per-image ``height`` may broadcast a coordinate to a larger shape than
    the others, and ``stack`` needs equal shapes.
    """
    shape = ops.shape(coordinates[0] + coordinates[1] + coordinates[2] + coordinates[3])
    return ops.stack([ops.broadcast_to(c, shape) for c in coordinates], axis=-1)


# ---------------------------------------------------------------------------
# Format conversions
# ---------------------------------------------------------------------------


def yxyx_to_xyxy(boxes):
    """``[..., 4]`` (ymin, xmin, ymax, xmax) -> (xmin, ymin, xmax, ymax)."""
    ymin, xmin, ymax, xmax = _coordinates(_as_float(boxes))
    return ops.stack([xmin, ymin, xmax, ymax], axis=-1)


def xyxy_to_yxyx(boxes):
    """``[..., 4]`` (xmin, ymin, xmax, ymax) -> (ymin, xmin, ymax, xmax)."""
    xmin, ymin, xmax, ymax = _coordinates(_as_float(boxes))
    return ops.stack([ymin, xmin, ymax, xmax], axis=-1)


def xywh_to_yxyx(boxes):
    """``[..., 4]`` (x, y, width, height), x/y the top-left corner (COCO) -> yxyx."""
    x, y, width, height = _coordinates(_as_float(boxes))
    return ops.stack([y, x, y + height, x + width], axis=-1)


def yxyx_to_xywh(boxes):
    """``[..., 4]`` yxyx -> (x, y, width, height), x/y the top-left corner (COCO)."""
    ymin, xmin, ymax, xmax = _coordinates(_as_float(boxes))
    return ops.stack([xmin, ymin, xmax - xmin, ymax - ymin], axis=-1)


def cxcywh_to_yxyx(boxes):
    """``[..., 4]`` (centre x, centre y, width, height) -> yxyx."""
    cx, cy, width, height = _coordinates(_as_float(boxes))
    half_h, half_w = height * 0.5, width * 0.5
    return ops.stack([cy - half_h, cx - half_w, cy + half_h, cx + half_w], axis=-1)


def yxyx_to_cxcywh(boxes):
    """``[..., 4]`` yxyx -> (centre x, centre y, width, height)."""
    ymin, xmin, ymax, xmax = _coordinates(_as_float(boxes))
    return ops.stack([(xmin + xmax) * 0.5, (ymin + ymax) * 0.5, xmax - xmin, ymax - ymin], axis=-1)
