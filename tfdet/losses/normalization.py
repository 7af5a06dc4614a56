"""Reducing per-element losses to scalars without dividing by zero.

Detection losses are sums over anchors, RoIs or pixels divided by a count
(positive anchors, sampled RoIs, valid instances). A batch can hold no
positives at all, and a plain ``sum / count`` then gives ``0 / 0 = NaN``
whose gradient poisons every weight. The helpers here return exactly 0 for
such a batch, with zero (not NaN) gradients.

Cross-replica note: under a distribution strategy each replica divides by its
own count. Callers that want a global normaliser sum the count across
replicas first and pass it in.
"""

from __future__ import annotations

from keras import ops


def safe_divide(numerator, denominator):
    """Elementwise ``numerator / denominator``, and 0 where ``denominator <= 0``.

    Denominators here are counts, so a non-positive one means "nothing to
    average" and the quotient is defined as 0. The division uses a
    denominator of 1 at those places before the result is masked, so neither
    the value nor the gradient (with respect to either argument) is NaN or
    infinite: the masked branch is finite, and ``where`` sends it zero
    gradient.

    Args:
        numerator: float tensor, any shape broadcastable with ``denominator``.
        denominator: float tensor (or number), broadcastable with
            ``numerator``.

    Returns:
        Float tensor of the broadcast shape.
    """
    numerator = ops.convert_to_tensor(numerator)
    denominator = ops.cast(denominator, numerator.dtype)
    positive = denominator > 0
    # Double-where: the division never sees a zero, so its gradient stays finite.
    safe_denominator = ops.where(positive, denominator, ops.ones_like(denominator))
    quotient = numerator / safe_denominator
    return ops.where(positive, quotient, ops.zeros_like(quotient))


def _broadcast_weights(weights, losses):
    """Appends trailing unit axes so ``weights`` [B, A] broadcasts over losses [B, A, K]."""
    weights = ops.cast(weights, losses.dtype)
    while len(weights.shape) < len(losses.shape):
        weights = ops.expand_dims(weights, -1)
    return weights


def normalize_by(losses, count, weights=None):
    """``sum(losses * weights) / count``, and 0 when ``count <= 0``.

    This is the reduction of RetinaNet (focal loss summed over all anchors and
    classes, divided by the number of positive anchors), of the Faster R-CNN
    box losses (summed, divided by the number of sampled anchors or RoIs) and
    of Mask R-CNN (per-RoI mean pixel BCE summed, divided by positive RoIs).

    With no positives the result is exactly 0, so a batch without objects
    contributes no loss, not even from its negatives. Callers who want the
    Detectron behaviour of still training negatives pass
    ``ops.maximum(count, 1.0)`` as the count.

    Args:
        losses: float tensor ``[...]``, e.g. per-element ``[B, A, K]`` or
            per-anchor ``[B, A]``.
        count: scalar (tensor or number), the normaliser.
        weights: optional float tensor whose shape is a leading prefix of
            ``losses``' shape (``[B, A]`` for losses ``[B, A, K]``) or
            broadcastable to it; trailing axes are added so it broadcasts.

    Returns:
        Scalar float tensor.
    """
    losses = ops.convert_to_tensor(losses)
    if weights is not None:
        losses = losses * _broadcast_weights(weights, losses)
    return safe_divide(ops.sum(losses), count)


def weighted_mean(losses, weights):
    """``sum(losses * weights) / sum(weights)``, and 0 when the weights sum to 0.

    Args:
        losses: float tensor ``[...]``.
        weights: non-negative float tensor, a leading prefix of ``losses``'
            shape or broadcastable to it (see ``normalize_by``). The count is
            the sum of ``weights`` as given, not of their broadcast, so
            weights ``[B, A]`` over losses ``[B, A, 4]`` average per anchor.

    Returns:
        Scalar float tensor.
    """
    losses = ops.convert_to_tensor(losses)
    weights = ops.cast(weights, losses.dtype)
    return normalize_by(losses, ops.sum(weights), weights)
