"""Mask R-CNN's per-class mask loss (He et al. 2017)."""

from __future__ import annotations

from keras import ops

from tfdet.losses.classification import sigmoid_cross_entropy


def mask_bce(mask_targets, mask_logits, classes, weights):
    """Per-RoI mean pixel BCE on the ground-truth class's mask channel.

    Mask R-CNN predicts one ``M x M`` mask per class and scores only the
    channel of the RoI's ground-truth class, so classes do not compete for
    pixels. The channel is picked with a one-hot product (no gather), which
    keeps shapes static.

    Args:
        mask_targets: float ``[B, R, M, M]`` targets in ``[0, 1]`` (binary or
            the soft values of a RoIAlign-resampled mask).
        mask_logits: float ``[B, R, M, M, K]`` (one channel per foreground
            class ``0..K-1``), or ``[B, R, M, M]`` already holding each RoI's
            class channel (class-agnostic heads, or selected upstream).
        classes: int ``[B, R]`` ground-truth class of each RoI, ``0..K-1``;
            ``-1`` (padding or background) gives loss 0. Unused for the
            ``[B, R, M, M]`` form except for that ``-1`` check.
        weights: float ``[B, R]``, typically 1 for positive sampled RoIs and 0
            otherwise.

    Returns:
        Float ``[B, R]``: ``weights * mean over M x M of BCE``, 0 where
        ``classes < 0``. Mask R-CNN's loss ("average binary cross-entropy")
        is ``normalize_by(result, ops.sum(weights))`` (do not pass
        ``weights`` again).
    """
    mask_logits = ops.convert_to_tensor(mask_logits)
    dtype = mask_logits.dtype
    classes = ops.convert_to_tensor(classes)
    if len(mask_logits.shape) == 5:
        num_classes = mask_logits.shape[-1]
        # one_hot of -1 is all zeros, so padded RoIs select logit 0 (then weighted 0).
        selector = ops.one_hot(ops.cast(classes, "int32"), num_classes, dtype=dtype)  # [B, R, K]
        mask_logits = ops.sum(mask_logits * selector[:, :, None, None, :], axis=-1)  # [B, R, M, M]
    per_pixel = sigmoid_cross_entropy(mask_targets, mask_logits)
    per_roi = ops.mean(per_pixel, axis=(-2, -1))
    valid = ops.cast(classes >= 0, dtype)
    return per_roi * ops.cast(weights, dtype) * valid
