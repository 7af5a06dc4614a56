"""Mask R-CNN mask targets and pasting predicted masks back into the image.

Both directions use the same coordinate convention as ``roi_align`` with
``aligned=True``: image pixel ``i`` covers ``[i, i + 1]`` (centre
``i + 0.5``), and cell ``k`` of an ``M x M`` mask covers the box fraction
``[k / M, (k + 1) / M]`` (centre at ``(k + 0.5) / M`` of the box). So
pasting a target and taking the target of a pasted mask are approximately
inverse operations.
"""

from __future__ import annotations

from keras import ops

# The RoIAlign kernel and its helpers are shared on purpose: targets must be
# sampled exactly as roi_align samples features.
from .roi_align import (
    _axis_interpolation,
    _batch_index,
    _bilinear_bin_average,
    _box_bins,
    _check_sampling_ratio,
    _static_dims,
)

# Pasting: a pixel whose centre lies in the box reads the mask, border cells
# replicated up to the box edge; one whose centre lies outside reads zero.
# In mask-index units (cell k at k) the box spans [-0.5, M - 0.5].
_PASTE_MARGIN = 0.5


def mask_targets(
    gt_masks, matched_gt_indices, rois, mask_size: int = 28, sampling_ratio: int = 2, binarize: bool = True
):
    """The ``M x M`` training target of every RoI (He et al. 2017, sec. 3).

    Each RoI's matched ground-truth mask is RoIAligned to the RoI (bilinear,
    ``aligned=True``, the same kernel as :func:`tfdet.core.roi_align.roi_align`
    on the mask as a one-channel map), without materialising one image-sized
    mask per RoI: the gather indexes straight into the matched mask.

    Args:
        gt_masks: ``[B, G, H, W]`` image-sized instance masks, 0/1 (any
            numeric dtype; cast to float32). ``G``, ``H``, ``W`` static.
        matched_gt_indices: int ``[B, R]``, the gt slot of each RoI. Values
            are clipped to ``[0, G - 1]``, so negatives (background RoIs) get
            slot 0's crop; the caller masks their loss out.
        rois: float32 ``[B, R, 4]`` yxyx, image pixels.
        mask_size: ``M``, the target's side (28 in Mask R-CNN).
        sampling_ratio: bilinear samples per bin along each axis.
        binarize: ``True`` (Mask R-CNN): targets are ``soft >= 0.5`` as
            0.0/1.0. ``False``: the soft bilinear average in ``[0, 1]``.

    Returns:
        float32 ``[B, R, M, M]``.
    """
    sampling_ratio = _check_sampling_ratio(sampling_ratio)
    num_gt, height, width = _static_dims(gt_masks, (1, 2, 3), "mask_targets gt_masks")
    flat = ops.reshape(ops.cast(gt_masks, "float32"), (-1, 1))
    slot = ops.clip(ops.cast(matched_gt_indices, "int32"), 0, num_gt - 1)
    # Row where mask [b, slot] starts in the flattened [B * G * H * W] table.
    base = (_batch_index(slot) * num_gt + slot) * (height * width)
    y_start, x_start, bin_h, bin_w = _box_bins(rois, 1.0, mask_size, mask_size, aligned=True)
    soft = _bilinear_bin_average(
        flat, base, height, width, y_start, x_start, bin_h, bin_w, mask_size, mask_size, sampling_ratio
    )[..., 0]
    if binarize:
        return ops.cast(soft >= 0.5, "float32")
    return soft


def _paste_weights(start, end, mask_size: int, image_size: int):
    """Interpolation matrix from mask cells to image pixels along one axis.

    Args:
        start, end: float32 ``[B, D]``, the box edges on this axis (pixels).

    Returns:
        float32 ``[B, D, image_size, mask_size]``: row ``i`` holds the
        bilinear weights pixel ``i`` gives the mask cells (all zero when the
        pixel centre lies outside the box).
    """
    extent = end - start
    # Empty boxes (padding detections) paste nothing; the maximum only keeps
    # the division finite for them.
    scale = mask_size / ops.maximum(extent, 1e-6)
    centres = ops.arange(image_size, dtype="float32") + 0.5  # [image_size]
    coords = (centres - start[..., None]) * scale[..., None] - 0.5  # [B, D, image_size], cell k at k
    low, high, w_low, w_high = _axis_interpolation(coords, mask_size, _PASTE_MARGIN)
    w_low = w_low * ops.cast(extent > 0.0, "float32")[..., None]
    w_high = w_high * ops.cast(extent > 0.0, "float32")[..., None]
    return (
        ops.one_hot(low, mask_size, dtype="float32") * w_low[..., None]
        + ops.one_hot(high, mask_size, dtype="float32") * w_high[..., None]
    )


def paste_masks(masks, boxes, image_height: int, image_width: int):
    """Pastes ``M x M`` mask probabilities into image-sized masks.

    Every image pixel whose centre lies inside its box samples the mask
    bilinearly at its position within the box (mask cells at their centres,
    border cells held up to the box edge); pixels outside the box are zero.

    Bilinear interpolation is separable, so this is two small matrix
    products per detection, ``Wy [H, M] @ mask [M, M] @ Wx[W, M]^T``, with
    at most two non-zeros per row of ``Wy``/``Wx``. That is dense, static,
    XLA-friendly work (``2 * M`` multiply-adds per output pixel) and never
    builds a ``[B, D, H, W, 4]`` gather index.

    Args:
        masks: float ``[B, D, M, M]`` probabilities; ``M`` static.
        boxes: float32 ``[B, D, 4]`` yxyx, image pixels.
        image_height, image_width: Python ints, the output size.

    Returns:
        float32 ``[B, D, image_height, image_width]``; threshold (e.g. at
        0.5) for binary masks.
    """
    (mask_size,) = _static_dims(masks, (2,), "paste_masks masks")
    boxes = ops.cast(boxes, "float32")
    weights_y = _paste_weights(boxes[..., 0], boxes[..., 2], mask_size, int(image_height))  # [B, D, H, M]
    weights_x = _paste_weights(boxes[..., 1], boxes[..., 3], mask_size, int(image_width))  # [B, D, W, M]
    rows = ops.matmul(weights_y, ops.cast(masks, "float32"))  # [B, D, H, M]
    return ops.matmul(rows, ops.swapaxes(weights_x, -1, -2))  # [B, D, H, W]
