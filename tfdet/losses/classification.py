"""Classification losses on logits: sigmoid and softmax cross-entropy, focal loss.

All functions take raw logits and work in log space (``log_sigmoid``,
``log_softmax``), so logits of +-100 give finite values and finite gradients
where ``log(sigmoid(x))`` would give ``log(0) = -inf``. They return
per-element losses, unreduced; reduce with ``tfdet.losses.normalize_by``.
"""

from __future__ import annotations

from keras import ops


def _smooth_binary(labels, label_smoothing):
    """Squeezes binary targets towards 0.5, as ``keras.losses.BinaryCrossentropy`` does."""
    if label_smoothing:
        return labels * (1.0 - label_smoothing) + 0.5 * label_smoothing
    return labels


def sigmoid_cross_entropy(labels, logits, label_smoothing=0.0):
    """Per-element binary cross-entropy of independent sigmoids.

    ``loss = -(y log p + (1 - y) log(1 - p))`` with ``p = sigmoid(logits)``,
    computed as ``-(y log_sigmoid(x) + (1 - y) log_sigmoid(-x))``.

    Elementwise, so any shape works (``[B, A]`` objectness, ``[B, A, K]``
    classes, ``[B, R, M, M]`` masks).

    Args:
        labels: float tensor ``[..., K]``, targets in ``[0, 1]`` (one-hot,
            multi-hot or soft).
        logits: float tensor ``[..., K]``, the shape of ``labels``.
        label_smoothing: float in ``[0, 1]``; targets become
            ``y (1 - s) + s / 2`` (Keras' ``BinaryCrossentropy`` convention).

    Returns:
        Float tensor ``[..., K]``, not reduced. Keras' ``BinaryCrossentropy``
        equals its mean over the last axis.
    """
    logits = ops.convert_to_tensor(logits)
    labels = _smooth_binary(ops.cast(labels, logits.dtype), label_smoothing)
    return -(labels * ops.log_sigmoid(logits) + (1.0 - labels) * ops.log_sigmoid(-logits))


def sigmoid_focal_loss(labels, logits, alpha=0.25, gamma=2.0):
    """Per-element sigmoid focal loss (Lin et al. 2017, RetinaNet).

    ``FL = -alpha_t (1 - p_t)^gamma log(p_t)``, where for target 1
    ``p_t = p, alpha_t = alpha`` and for target 0 ``p_t = 1 - p,
    alpha_t = 1 - alpha``. Both factors are evaluated from logits:
    ``log p = log_sigmoid(x)``, ``log(1 - p) = log_sigmoid(-x)`` and
    ``(1 - p_t)^gamma = exp(gamma log(1 - p_t))``, so the gradient stays finite
    at any logit and for any ``gamma >= 0`` (``pow(0, gamma - 1)`` never
    appears).

    Soft targets ``y`` in ``(0, 1)`` mix the two cases linearly:
    ``y * FL(target 1) + (1 - y) * FL(target 0)``. For 0/1 targets this is
    exactly Lin et al. and ``keras.losses.BinaryFocalCrossentropy(
    apply_class_balancing=True)``; for soft targets Keras instead puts the
    soft target inside ``p_t``, so the two differ there. (Keras also means
    over the last axis and clips probabilities at 1e-7, which caps its
    loss near 16 where this one keeps growing linearly in the logit.)

    Args:
        labels: float tensor ``[..., K]``, one-hot or multi-hot targets
            (background is all zeros; RetinaNet has no background column).
        logits: float tensor ``[..., K]``.
        alpha: weight of the positive term, ``1 - alpha`` weighs the negative
            term; ``None`` for no class balancing. RetinaNet: 0.25.
        gamma: focusing exponent, ``>= 0``; 0 gives (alpha-weighted) BCE.
            RetinaNet: 2.0.

    Returns:
        Float tensor ``[..., K]``, not reduced. RetinaNet's loss is
        ``normalize_by(loss, num_positive_anchors)`` (sum over anchors and
        classes, anchors marked "ignore" given weight 0).
    """
    logits = ops.convert_to_tensor(logits)
    labels = ops.cast(labels, logits.dtype)
    log_p = ops.log_sigmoid(logits)
    log_not_p = ops.log_sigmoid(-logits)
    # Target 1: (1 - p)^gamma * -log p ; target 0: p^gamma * -log(1 - p).
    positive = -log_p * ops.exp(gamma * log_not_p)
    negative = -log_not_p * ops.exp(gamma * log_p)
    if alpha is not None:
        positive = alpha * positive
        negative = (1.0 - alpha) * negative
    return labels * positive + (1.0 - labels) * negative


def softmax_cross_entropy(labels, logits, label_smoothing=0.0):
    """Per-example softmax cross-entropy, ``-sum_k y_k log_softmax(x)_k``.

    Args:
        labels: either integer class ids ``[...]`` (rank one less than
            ``logits``; ids outside ``0..K-1``, such as the padding id -1,
            give loss 0), or one-hot / probability targets ``[..., K]`` (same
            rank as ``logits``; an all-zero row gives loss 0). The two are
            told apart by rank.
        logits: float tensor ``[..., K]``.
        label_smoothing: float in ``[0, 1]``; a target row ``y`` becomes
            ``y (1 - s) + s / K * sum(y)`` (Keras' ``CategoricalCrossentropy``
            convention for one-hot rows; the ``sum(y)`` factor keeps padded
            all-zero rows at zero).

    Returns:
        Float tensor ``[...]`` (the class axis summed out), equal to Keras'
        ``CategoricalCrossentropy`` / ``SparseCategoricalCrossentropy`` with
        ``from_logits=True`` and ``reduction=None``.
    """
    logits = ops.convert_to_tensor(logits)
    num_classes = logits.shape[-1]
    labels = ops.convert_to_tensor(labels)
    if len(labels.shape) == len(logits.shape) - 1:
        # one_hot gives an all-zero row for ids out of range (padding -1).
        labels = ops.one_hot(ops.cast(labels, "int32"), num_classes, dtype=logits.dtype)
    else:
        labels = ops.cast(labels, logits.dtype)
    if label_smoothing:
        row_mass = ops.sum(labels, axis=-1, keepdims=True)
        labels = labels * (1.0 - label_smoothing) + row_mass * (label_smoothing / num_classes)
    return -ops.sum(labels * ops.log_softmax(logits, axis=-1), axis=-1)
