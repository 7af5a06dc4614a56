"""Box regression losses: smooth L1, Huber, and 1 - {G,D,C}IoU.

Every function returns one loss per box: the coordinate axis (last, of size
4 for encoded deltas or yxyx boxes) is summed out for smooth L1 / Huber, as
Fast R-CNN and Detectron sum the four coordinate terms, and the IoU losses
are per box by definition. Reduce with ``tfdet.losses.normalize_by`` (e.g.
over positive anchors).
"""

from __future__ import annotations

from keras import ops

from tfdet.core import box_ops


def smooth_l1(targets, predictions, beta=1.0):
    """Smooth L1 loss (Girshick, Fast R-CNN), summed over the last axis.

    Per element, with ``d = |targets - predictions|``:
    ``0.5 d^2 / beta`` if ``d < beta`` else ``d - 0.5 beta``.

    ``beta`` choices: 1.0 in Fast R-CNN's box head (the default here); 1/9 in
    Detectron's RPN (py-faster-rcnn wrote it as ``sigma = 3``,
    ``beta = 1 / sigma^2``); 0 gives plain L1 (Detectron2's default). The
    relation to Huber is ``smooth_l1(beta) == huber(delta=beta) / beta``.

    Args:
        targets: float tensor ``[..., C]`` (``C = 4`` encoded box deltas).
        predictions: float tensor ``[..., C]``.
        beta: non-negative Python float, where quadratic turns linear.

    Returns:
        Float tensor ``[...]``, the per-element terms summed over ``C``.
    """
    predictions = ops.convert_to_tensor(predictions)
    targets = ops.cast(targets, predictions.dtype)
    error = predictions - targets
    distance = ops.abs(error)
    if beta == 0:
        # The quadratic branch would divide by zero; its limit is L1.
        return ops.sum(distance, axis=-1)
    per_element = ops.where(distance < beta, 0.5 * ops.square(error) / beta, distance - 0.5 * beta)
    return ops.sum(per_element, axis=-1)


def huber(targets, predictions, delta=1.0):
    """Huber loss, summed over the last axis.

    Per element, with ``d = |targets - predictions|``:
    ``0.5 d^2`` if ``d <= delta`` else ``delta (d - 0.5 delta)``. This is the
    TF Object Detection API's box loss (``delta = 1``). Keras'
    ``keras.losses.Huber`` (``reduction=None``) is the *mean* over the last
    axis, i.e. this divided by ``C``.

    Args:
        targets: float tensor ``[..., C]``.
        predictions: float tensor ``[..., C]``.
        delta: positive Python float.

    Returns:
        Float tensor ``[...]``.
    """
    predictions = ops.convert_to_tensor(predictions)
    targets = ops.cast(targets, predictions.dtype)
    error = predictions - targets
    distance = ops.abs(error)
    per_element = ops.where(distance <= delta, 0.5 * ops.square(error), delta * (distance - 0.5 * delta))
    return ops.sum(per_element, axis=-1)


def giou_loss(boxes_true, boxes_pred):
    """``1 - GIoU`` of corresponding boxes (Rezatofighi et al. 2019).

    In ``[0, 2]``: 0 for identical boxes, 1 for disjoint boxes that touch,
    towards 2 as disjoint boxes move apart. Unlike ``1 - IoU`` it has a
    gradient for non-overlapping boxes. Degenerate (zero-area) boxes give
    finite values and gradients (see ``box_ops``), but weight padded
    targets to 0 when reducing.

    Args:
        boxes_true: float tensor ``[..., N, 4]`` yxyx absolute pixels.
        boxes_pred: float tensor ``[..., N, 4]`` yxyx absolute pixels.

    Returns:
        Float tensor ``[..., N]``.
    """
    return 1.0 - box_ops.matched_giou(boxes_pred, boxes_true)


def diou_loss(boxes_true, boxes_pred):
    """``1 - DIoU`` of corresponding boxes (Zheng et al. 2020), in ``[0, 2]``.

    DIoU subtracts the squared centre distance over the squared diagonal of
    the enclosing box, which pulls centres together directly.

    Args:
        boxes_true: float tensor ``[..., N, 4]`` yxyx absolute pixels.
        boxes_pred: float tensor ``[..., N, 4]`` yxyx absolute pixels.

    Returns:
        Float tensor ``[..., N]``.
    """
    return 1.0 - box_ops.matched_diou(boxes_pred, boxes_true)


def ciou_loss(boxes_true, boxes_pred):
    """``1 - CIoU`` of corresponding boxes (Zheng et al. 2020), in ``[0, 3)``.

    CIoU adds an aspect-ratio consistency term to DIoU; its trade-off weight
    is treated as a constant for gradients, as in the paper (YOLOv4/v5 box
    loss).

    Args:
        boxes_true: float tensor ``[..., N, 4]`` yxyx absolute pixels.
        boxes_pred: float tensor ``[..., N, 4]`` yxyx absolute pixels.

    Returns:
        Float tensor ``[..., N]``.
    """
    return 1.0 - box_ops.matched_ciou(boxes_pred, boxes_true)
