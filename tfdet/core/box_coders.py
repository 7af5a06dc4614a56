"""Box coders: boxes relative to anchors, the regression targets of detection heads.

Boxes and anchors are ``[..., 4]`` yxyx absolute pixels, float32. Every coder
takes arbitrary leading dimensions (e.g. ``[B, A, 4]`` boxes against ``[A, 4]``
anchors, which broadcast), uses ``keras.ops`` only, compiles under XLA and runs
under ``KERAS_BACKEND=jax``.

- ``DeltaCoder``: Faster R-CNN (Girshick 2015; Ren et al. 2015), targets
  ``(dy, dx, dh, dw)`` times weights.
- ``CenterSizeCoder``: SSD (Liu et al. 2016), the same targets divided by
  "variances".
- ``yolo_encode`` / ``yolo_decode``: YOLOv3 (Redmon & Farhadi 2018), centres
  as sigmoid offsets inside a grid cell, sizes relative to an anchor.

Encoding a box with a zero height or width (e.g. zero padding of ground truth)
stays finite: sizes are floored at ``_MIN_SIZE`` before the logarithm, so such
targets are large and negative, never ``-inf``, and a masked loss over them
stays free of NaN.
"""

from __future__ import annotations

import math

import keras
from keras import ops

__all__ = ["DeltaCoder", "CenterSizeCoder", "yolo_encode", "yolo_decode"]

# Floor for heights and widths before log/division: keeps targets of empty
# boxes finite (log(1e-8) is about -18.4).
_MIN_SIZE = 1e-8

# log(1000 / 16): Detectron's and torchvision's bound on dh, dw before exp,
# so a decoded box is at most 62.5 times its anchor and exp never overflows.
DEFAULT_SCALE_CLIP = math.log(1000.0 / 16)


def _as_float(x):
    """``x`` as a tensor; integer inputs become float32."""
    x = ops.convert_to_tensor(x)
    if not keras.backend.standardize_dtype(x.dtype).startswith(("float", "bfloat")):
        x = ops.cast(x, "float32")
    return x


def _centre_size(boxes):
    """yxyx ``[..., 4]`` -> ``(cy, cx, h, w)``, each ``[...]``; sizes floored at ``_MIN_SIZE``."""
    ymin, xmin, ymax, xmax = ops.unstack(boxes, num=4, axis=-1)
    height = ops.maximum(ymax - ymin, _MIN_SIZE)
    width = ops.maximum(xmax - xmin, _MIN_SIZE)
    return (ymin + ymax) * 0.5, (xmin + xmax) * 0.5, height, width


def _centre_size_to_yxyx(cy, cx, height, width):
    """``(cy, cx, h, w)``, each ``[...]`` -> yxyx ``[..., 4]``."""
    half_h, half_w = height * 0.5, width * 0.5
    return ops.stack([cy - half_h, cx - half_w, cy + half_h, cx + half_w], axis=-1)


def _broadcast_all(tensors):
    """Broadcasts ``[...]`` tensors to one shape, so that ``stack`` accepts them."""
    total = tensors[0]
    for tensor in tensors[1:]:
        total = total + tensor
    shape = ops.shape(total)
    return [ops.broadcast_to(tensor, shape) for tensor in tensors]


def _clamp_log_scale(log_scale, scale_clip):
    """Upper-bounds a log size ratio before ``exp``; ``None`` leaves it alone."""
    if scale_clip is None:
        return log_scale
    return ops.minimum(log_scale, scale_clip)


def _encode_centre_size(boxes, anchors, scales):
    """Shared encoder: ``(dy/h_a, dx/w_a, log(h/h_a), log(w/w_a)) * scales``.

    Args:
        boxes: ``[..., 4]`` yxyx.
        anchors: ``[..., 4]`` yxyx, broadcastable against ``boxes``.
        scales: four Python floats, multiplied into (dy, dx, dh, dw).

    Returns:
        ``[..., 4]`` targets (dy, dx, dh, dw).
    """
    boxes = _as_float(boxes)
    anchors = ops.cast(anchors, boxes.dtype)
    cy, cx, height, width = _centre_size(boxes)
    cy_a, cx_a, height_a, width_a = _centre_size(anchors)
    targets = [
        (cy - cy_a) / height_a * scales[0],
        (cx - cx_a) / width_a * scales[1],
        ops.log(height / height_a) * scales[2],
        ops.log(width / width_a) * scales[3],
    ]
    return ops.stack(_broadcast_all(targets), axis=-1)


def _decode_centre_size(deltas, anchors, scales, scale_clip):
    """Shared decoder, the inverse of ``_encode_centre_size``.

    Args:
        deltas: ``[..., 4]`` (dy, dx, dh, dw) scaled by ``scales``.
        anchors: ``[..., 4]`` yxyx, broadcastable against ``deltas``.
        scales: four Python floats that ``deltas`` were multiplied by.
        scale_clip: upper bound on the unscaled dh, dw before ``exp``, or None.

    Returns:
        ``[..., 4]`` yxyx boxes.
    """
    deltas = _as_float(deltas)
    anchors = ops.cast(anchors, deltas.dtype)
    dy, dx, dh, dw = ops.unstack(deltas, num=4, axis=-1)
    cy_a, cx_a, height_a, width_a = _centre_size(anchors)
    # The clamp applies to the log size ratio itself, after undoing the
    # scaling, so its meaning (at most exp(clip) times the anchor) does not
    # depend on the weights.
    dh = _clamp_log_scale(dh / scales[2], scale_clip)
    dw = _clamp_log_scale(dw / scales[3], scale_clip)
    cy = cy_a + (dy / scales[0]) * height_a
    cx = cx_a + (dx / scales[1]) * width_a
    height = height_a * ops.exp(dh)
    width = width_a * ops.exp(dw)
    return _centre_size_to_yxyx(*_broadcast_all([cy, cx, height, width]))


class DeltaCoder:
    """The Faster R-CNN box coder.

    ``encode`` gives, for box centre ``(cy, cx)`` and size ``(h, w)`` against
    an anchor's ``(cy_a, cx_a, h_a, w_a)``::

        dy = wy * (cy - cy_a) / h_a      dh = wh * log(h / h_a)
        dx = wx * (cx - cx_a) / w_a      dw = ww * log(w / w_a)

    in the order ``(dy, dx, dh, dw)``. The second stage uses the default
    weights ``(10, 10, 5, 5)``; the RPN uses ``(1, 1, 1, 1)``.

    Args:
        weights: ``(wy, wx, wh, ww)``, Python floats.
        scale_clip: in ``decode``, ``dh / wh`` and ``dw / ww`` are clamped from
            above at this value before ``exp``; ``None`` disables the clamp.
    """

    def __init__(self, weights=(10.0, 10.0, 5.0, 5.0), scale_clip=DEFAULT_SCALE_CLIP):
        if len(weights) != 4:
            raise ValueError(f"weights must have 4 values (wy, wx, wh, ww), got {weights!r}")
        self.weights = tuple(float(w) for w in weights)
        self.scale_clip = None if scale_clip is None else float(scale_clip)

    def encode(self, boxes, anchors):
        """Boxes relative to anchors.

        Args:
            boxes: ``[..., 4]`` yxyx.
            anchors: ``[..., 4]`` yxyx, broadcastable against ``boxes``.

        Returns:
            ``[..., 4]`` deltas ``(dy, dx, dh, dw)`` times the weights.
        """
        return _encode_centre_size(boxes, anchors, self.weights)

    def decode(self, deltas, anchors):
        """Boxes from deltas; the inverse of ``encode`` (up to the clamp).

        Args:
            deltas: ``[..., 4]`` ``(dy, dx, dh, dw)`` times the weights.
            anchors: ``[..., 4]`` yxyx, broadcastable against ``deltas``.

        Returns:
            ``[..., 4]`` yxyx boxes, finite for finite deltas.
        """
        return _decode_centre_size(deltas, anchors, self.weights, self.scale_clip)

    def __repr__(self):
        return f"DeltaCoder(weights={self.weights}, scale_clip={self.scale_clip})"


class CenterSizeCoder:
    """The SSD box coder.

    ``encode`` gives ``(dy / h_a / v0, dx / w_a / v1, log(h / h_a) / v2,
    log(w / w_a) / v3)`` with ``(v0, v1, v2, v3)`` the "variances", which are
    plain scale factors (the SSD paper's name for them), not statistics.

    Args:
        variances: ``(v0, v1, v2, v3)``, positive Python floats.
        scale_clip: in ``decode``, the log size ratios are clamped from above
            at this value before ``exp`` (so a decoded box is at most
            ``exp(scale_clip)`` times its anchor and stays finite); ``None``
            reproduces the unclamped SSD decoder.
    """

    def __init__(self, variances=(0.1, 0.1, 0.2, 0.2), scale_clip=DEFAULT_SCALE_CLIP):
        if len(variances) != 4 or any(v <= 0 for v in variances):
            raise ValueError(f"variances must be 4 positive values, got {variances!r}")
        self.variances = tuple(float(v) for v in variances)
        self.scale_clip = None if scale_clip is None else float(scale_clip)
        # Dividing by a variance is multiplying by its inverse: the same
        # arithmetic as DeltaCoder's weights.
        self._scales = tuple(1.0 / v for v in self.variances)

    def encode(self, boxes, anchors):
        """Boxes relative to anchors.

        Args:
            boxes: ``[..., 4]`` yxyx.
            anchors: ``[..., 4]`` yxyx, broadcastable against ``boxes``.

        Returns:
            ``[..., 4]`` targets ``(dy, dx, dh, dw)`` divided by the variances.
        """
        return _encode_centre_size(boxes, anchors, self._scales)

    def decode(self, deltas, anchors):
        """Boxes from targets; the inverse of ``encode`` (up to the clamp).

        Args:
            deltas: ``[..., 4]`` targets as ``encode`` returns them.
            anchors: ``[..., 4]`` yxyx, broadcastable against ``deltas``.

        Returns:
            ``[..., 4]`` yxyx boxes.
        """
        return _decode_centre_size(deltas, anchors, self._scales, self.scale_clip)

    def __repr__(self):
        return f"CenterSizeCoder(variances={self.variances}, scale_clip={self.scale_clip})"


def yolo_decode(raw, cell_yx, anchor_hw, stride, scale_clip=DEFAULT_SCALE_CLIP):
    """YOLOv3 head outputs to boxes.

    ``cy = (sigmoid(ty) + row) * stride``, ``cx = (sigmoid(tx) + col) * stride``,
    ``h = anchor_h * exp(th)``, ``w = anchor_w * exp(tw)``.

    Args:
        raw: ``[..., 4]`` raw outputs ``(tx, ty, tw, th)`` (YOLO's x-first order).
        cell_yx: ``[..., 2]`` ``(row, col)`` of each prediction's grid cell,
            broadcastable against ``raw[..., :2]``.
        anchor_hw: ``[..., 2]`` anchor ``(height, width)`` in pixels,
            broadcastable against ``raw[..., :2]``.
        stride: pixels per grid cell, a scalar or a tensor broadcastable
            against ``raw[..., 0]``.
        scale_clip: ``th``, ``tw`` are clamped from above at this value before
            ``exp`` so that boxes stay finite (the default allows 62.5 times
            the anchor); ``None`` is YOLOv3's unclamped decoder.

    Returns:
        ``[..., 4]`` yxyx boxes in pixels.
    """
    raw = _as_float(raw)
    cell_yx = ops.cast(cell_yx, raw.dtype)
    anchor_hw = ops.cast(anchor_hw, raw.dtype)
    stride = ops.cast(stride, raw.dtype)
    tx, ty, tw, th = ops.unstack(raw, num=4, axis=-1)
    row, col = ops.unstack(cell_yx, num=2, axis=-1)
    anchor_h, anchor_w = ops.unstack(anchor_hw, num=2, axis=-1)
    cy = (ops.sigmoid(ty) + row) * stride
    cx = (ops.sigmoid(tx) + col) * stride
    height = anchor_h * ops.exp(_clamp_log_scale(th, scale_clip))
    width = anchor_w * ops.exp(_clamp_log_scale(tw, scale_clip))
    return _centre_size_to_yxyx(*_broadcast_all([cy, cx, height, width]))


def yolo_encode(boxes, cell_yx, anchor_hw, stride):
    """YOLOv3 regression targets of boxes assigned to grid cells and anchors.

    Returns in-cell centre OFFSETS, not logits: ``x_offset = cx / stride - col``
    lies in ``(0, 1)`` when the box centre is inside the cell, and is the
    target of YOLOv3's binary cross-entropy on ``tx`` (``sigmoid(tx)`` is
    compared with it; ``yolo_decode`` applies that sigmoid). Sizes are
    ``log(w / anchor_w)``, ``log(h / anchor_h)``, the targets of ``tw``, ``th``.

    Args:
        boxes: ``[..., 4]`` yxyx pixels.
        cell_yx: ``[..., 2]`` ``(row, col)`` of the responsible grid cell,
            broadcastable against ``boxes[..., :2]``.
        anchor_hw: ``[..., 2]`` anchor ``(height, width)`` in pixels,
            broadcastable against ``boxes[..., :2]``.
        stride: pixels per grid cell, a scalar or a tensor broadcastable
            against ``boxes[..., 0]``.

    Returns:
        ``[..., 4]`` targets ``(x_offset, y_offset, log(w / anchor_w),
        log(h / anchor_h))``, in ``raw``'s order ``(tx, ty, tw, th)``.
    """
    boxes = _as_float(boxes)
    cell_yx = ops.cast(cell_yx, boxes.dtype)
    anchor_hw = ops.cast(anchor_hw, boxes.dtype)
    stride = ops.cast(stride, boxes.dtype)
    cy, cx, height, width = _centre_size(boxes)
    row, col = ops.unstack(cell_yx, num=2, axis=-1)
    anchor_h, anchor_w = ops.unstack(anchor_hw, num=2, axis=-1)
    targets = [
        cx / stride - col,
        cy / stride - row,
        ops.log(width / ops.maximum(anchor_w, _MIN_SIZE)),
        ops.log(height / ops.maximum(anchor_h, _MIN_SIZE)),
    ]
    return ops.stack(_broadcast_all(targets), axis=-1)
