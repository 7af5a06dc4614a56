"""YOLOv3 loss terms over already-assigned targets (Redmon & Farhadi 2018).

The anchor assignment (which anchor of which scale is responsible for each
ground-truth box, and the encoded targets) is the target assigner's job; the
functions here only score predictions against those targets. All scales are
flattened and concatenated into one anchor axis ``A`` so shapes stay static.

Coordinates follow tfdet's ``yx`` order: YOLO's ``(tx, ty)`` and
``(tw, th)`` are stored as ``(ty, tx)`` and ``(th, tw)``.
"""

from __future__ import annotations

from keras import ops

from tfdet.core import box_ops
from tfdet.losses.classification import sigmoid_cross_entropy
from tfdet.losses.normalization import safe_divide
from tfdet.losses.regression import giou_loss

BOX_LOSSES = ("darknet", "giou")


def yolo_v3_ignore_mask(pred_boxes, gt_boxes, gt_classes, ignore_threshold=0.5):
    """Predictions to leave out of the no-object loss.

    A prediction whose decoded box overlaps some ground truth with
    ``IoU > ignore_threshold`` is a good box that merely was not the assigned
    anchor; YOLOv3 neither rewards nor penalises its objectness.

    Args:
        pred_boxes: float ``[B, A, 4]`` decoded predicted boxes, yxyx pixels.
        gt_boxes: float ``[B, G, 4]`` ground truth, yxyx pixels, ``G >= 1``.
        gt_classes: int ``[B, G]`` class ids, ``-1`` for padding slots (which
            never cause an ignore).
        ignore_threshold: Python float, YOLOv3 uses 0.5.

    Returns:
        Float ``[B, A]``: 1 where ignored, else 0. No gradient flows through it.
    """
    pred_boxes = ops.stop_gradient(ops.convert_to_tensor(pred_boxes))
    gt_boxes = ops.cast(gt_boxes, pred_boxes.dtype)
    valid = ops.cast(ops.expand_dims(gt_classes, 1) >= 0, pred_boxes.dtype)  # [B, 1, G]
    # IoU >= 0, so zeroing padded slots removes them from the maximum.
    iou = box_ops.pairwise_iou(pred_boxes, gt_boxes) * valid  # [B, A, G]
    best_iou = ops.max(iou, axis=-1)
    return ops.cast(best_iou > ignore_threshold, pred_boxes.dtype)


def yolo_v3_losses(y_true, y_pred, image_size, ignore_threshold=0.5, box_loss="darknet", giou_weight=1.0,
                   normalizer=None):
    """The four YOLOv3 loss terms, each summed over anchors and divided by ``B``.

    Layout (``B`` batch, ``A`` anchors of all scales concatenated, ``G``
    ground-truth slots, ``K`` classes):

    ``y_true`` (from the target assigner):
        ``"objectness"``: float ``[B, A]``, 1 for the anchor responsible for a
            ground truth, else 0.
        ``"yx"``: float ``[B, A, 2]``, the box centre's offset inside its grid
            cell, ``(ty, tx)`` in ``(0, 1)``; read only at positives.
        ``"hw"``: float ``[B, A, 2]``, ``log(h / anchor_h), log(w / anchor_w)``;
            read only at positives.
        ``"boxes"``: float ``[B, A, 4]``, the assigned ground-truth box, yxyx
            pixels; gives the ``2 - w h`` weight; read only at positives.
        ``"classes"``: float ``[B, A, K]``, one-hot or multi-hot.
        ``"gt_boxes"``: float ``[B, G, 4]``, all ground truth of the image,
            yxyx pixels (for the ignore mask).
        ``"gt_classes"``: int ``[B, G]``, ``-1`` marks padding slots.

    ``y_pred`` (from the head, per anchor):
        ``"objectness"``: float ``[B, A]`` logits.
        ``"yx"``: float ``[B, A, 2]`` logits of the in-cell offsets (the
            offset is their sigmoid).
        ``"hw"``: float ``[B, A, 2]`` raw log-scale outputs.
        ``"classes"``: float ``[B, A, K]`` logits.
        ``"boxes"``: float ``[B, A, 4]`` the decoded boxes, yxyx pixels: for
            the ignore mask (no gradient flows through it) and, with
            ``box_loss="giou"``, for the GIoU term (gradient flows).

    Terms, with positives ``P`` (``y_true["objectness"] == 1``) and
    ``s = 2 - w h`` (``w, h`` of the ground truth as fractions of the image,
    so small boxes weigh up to 2, as in darknet):

    - ``loss/yx``: ``sum_P s * BCE(yx_true, sigmoid(yx_logits))`` over both
      coordinates (keras-yolo3; the darknet paper's "sum of squared error"
      reads the same gradient through a sigmoid).
    - ``loss/hw``: ``sum_P s * 0.5 * (hw_true - hw_pred)^2`` over both (the
      0.5 makes the gradient darknet's ``s * (t - p)``).
    - ``loss/objectness``: BCE over positives (target 1) and over negatives
      (target 0) whose decoded box has ``IoU <= ignore_threshold`` with every
      ground truth; ignored negatives contribute nothing.
    - ``loss/class``: ``sum_P sum_k BCE(classes_true, sigmoid(class_logits))``.
    - with ``box_loss="giou"``, ``loss/giou`` replaces ``loss/yx`` and
      ``loss/hw``: ``giou_weight * sum_P s * (1 - GIoU(boxes_true, boxes_pred))``.
    - ``loss``: the sum of the terms.

    Each term is divided by the batch size ``B`` (darknet, keras-yolo3), not by
    a positive count, so an image with no objects still trains its
    no-object term and every term is finite.

    Args:
        y_true: dict as above.
        y_pred: dict as above.
        image_size: ``(height, width)`` of the network input in pixels (numbers
            or scalar tensors).
        ignore_threshold: Python float, 0.5 in YOLOv3.
        box_loss: ``"darknet"`` (``loss/yx`` and ``loss/hw``) or ``"giou"``.
        giou_weight: multiplies ``loss/giou``.
        normalizer: the divisor instead of ``B``; under a distribution
            strategy the global batch size, so that summing the replicas'
            gradients gives the one-device step.

    Returns:
        Dict of scalar float tensors: ``loss/yx`` and ``loss/hw`` (or
        ``loss/giou``), ``loss/objectness``, ``loss/class`` and ``loss``.
    """
    if box_loss not in BOX_LOSSES:
        raise ValueError(f"box_loss must be one of {BOX_LOSSES}, got {box_loss!r}")
    obj_logits = ops.convert_to_tensor(y_pred["objectness"])
    dtype = obj_logits.dtype
    positive = ops.cast(y_true["objectness"], dtype)  # [B, A]

    height = ops.cast(image_size[0], dtype)
    width = ops.cast(image_size[1], dtype)
    ymin, xmin, ymax, xmax = ops.unstack(ops.cast(y_true["boxes"], dtype), num=4, axis=-1)
    box_scale = 2.0 - ((ymax - ymin) / height) * ((xmax - xmin) / width)  # [B, A]
    box_weight = positive * box_scale

    ignore = yolo_v3_ignore_mask(y_pred["boxes"], y_true["gt_boxes"], y_true["gt_classes"], ignore_threshold)
    negative = (1.0 - positive) * (1.0 - ignore)
    obj_bce = sigmoid_cross_entropy(positive, obj_logits)
    obj_loss = (positive + negative) * obj_bce

    class_loss = ops.sum(sigmoid_cross_entropy(y_true["classes"], y_pred["classes"]), axis=-1)

    if normalizer is None:
        batch_size = ops.cast(ops.shape(obj_logits)[0], dtype)
    else:
        batch_size = ops.cast(normalizer, dtype)
    if box_loss == "darknet":
        yx_loss = ops.sum(sigmoid_cross_entropy(y_true["yx"], y_pred["yx"]), axis=-1)
        hw_error = ops.cast(y_true["hw"], dtype) - ops.convert_to_tensor(y_pred["hw"])
        hw_loss = 0.5 * ops.sum(ops.square(hw_error), axis=-1)
        terms = {
            "loss/yx": safe_divide(ops.sum(box_weight * yx_loss), batch_size),
            "loss/hw": safe_divide(ops.sum(box_weight * hw_loss), batch_size),
        }
    else:
        per_anchor = giou_loss(ops.cast(y_true["boxes"], dtype), y_pred["boxes"])  # [B, A]
        terms = {"loss/giou": giou_weight * safe_divide(ops.sum(box_weight * per_anchor), batch_size)}
    terms["loss/objectness"] = safe_divide(ops.sum(obj_loss), batch_size)
    terms["loss/class"] = safe_divide(ops.sum(positive * class_loss), batch_size)
    terms["loss"] = sum(terms.values())
    return terms
