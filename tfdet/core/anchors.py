"""Anchor (prior, default box) generators for every detector family.

Every generator returns ``yxyx`` boxes in absolute pixels, float32, as a
``keras.ops`` tensor computed from static Python configuration: image sizes,
levels, scales and ratios are Python numbers, so the result has a static
shape, folds to a constant under XLA and is identical under every backend.

Flat anchor tensors ``[A, 4]`` are ordered **level first, then grid row y,
then grid column x, then the boxes of one location** (their order is given by
each function). A head whose outputs are reshaped from ``[B, H, W, n * C]``
per level and concatenated over levels lines up with them index for index.

Grid sizes: a level with stride ``s`` has ``ceil(h / s) x ceil(w / s)``
locations, the size a stride-``s`` backbone with ``same`` padding produces.
Cell ``(i, j)`` is centred at ``((i + offset) * s, (j + offset) * s)``;
``offset = 0.5`` (the default) puts anchors at cell centres.

References:
    FPN / RetinaNet: Lin et al., "Feature Pyramid Networks", CVPR 2017;
    "Focal Loss for Dense Object Detection", ICCV 2017.
    EfficientDet: Tan et al., CVPR 2020 (anchor_scale 4, 3 scales, 3 ratios).
    Faster R-CNN: Ren et al., NeurIPS 2015.
    SSD: Liu et al., "SSD: Single Shot MultiBox Detector", ECCV 2016.
    YOLOv3: Redmon & Farhadi, "YOLOv3: An Incremental Improvement", 2018.
"""

from __future__ import annotations

import math

from keras import ops

__all__ = [
    "multilevel_anchors",
    "rpn_anchors",
    "ssd_default_boxes",
    "ssd512_default_boxes",
    "SSD300_REFERENCE_SCALES",
    "SSD300_REFERENCE_STEPS",
    "SSD512_REFERENCE_SCALES",
    "SSD512_REFERENCE_STEPS",
    "YOLOV3_PRIORS",
    "YOLOV3_STRIDES",
    "yolo_priors",
    "yolo_anchor_grids",
    "yolo_anchors",
]

# The Caffe SSD300 reference (weiliu89/caffe, ssd_pascal.py): min_sizes
# 30, 60, 111, 162, 213, 264 and max_sizes 60, ..., 315 pixels of 300, i.e.
# conv4_3 at 0.1, the other maps linear from 0.2 in whole-percent steps of 17,
# and 1.05 as the "next" scale of the last map.
SSD300_REFERENCE_SCALES = (0.1, 0.2, 0.37, 0.54, 0.71, 0.88, 1.05)
# Its per-map centre spacing in pixels (38 * 8 = 304, not 300: the reference
# uses these steps rather than the paper's ``(i + 0.5) / |f_k|``).
SSD300_REFERENCE_STEPS = (8, 16, 32, 64, 100, 300)
# The common SSD512 configuration: min_sizes 35.84, 76.8, 153.6, ..., 460.8
# and max_sizes 76.8, ..., 537.6 pixels of 512, i.e. conv4_3 at 0.07 and
# 0.15..0.9 in steps of 0.15 after it; centres every 8, 16, ..., 512 pixels.
SSD512_REFERENCE_SCALES = (0.07, 0.15, 0.30, 0.45, 0.60, 0.75, 0.90, 1.05)
SSD512_REFERENCE_STEPS = (8, 16, 32, 64, 128, 256, 512)

# YOLOv3's COCO priors as (width, height) pixels at 416x416, smallest first;
# priors 3l..3l+2 belong to the output of stride YOLOV3_STRIDES[l].
YOLOV3_PRIORS = ((10, 13), (16, 30), (33, 23), (30, 61), (62, 45), (59, 119), (116, 90), (156, 198), (373, 326))
YOLOV3_STRIDES = (8, 16, 32)


def _pair(size, name):
    """``int`` or ``(h, w)`` -> ``(h, w)`` Python numbers."""
    if isinstance(size, (int, float)):
        return size, size
    if len(size) != 2:
        raise ValueError(f"{name} must be a number or (height, width), got {size!r}")
    return size[0], size[1]


def _grid_boxes(grid_h, grid_w, step_y, step_x, heights, widths, offset):
    """Boxes of given sizes centred on every cell of a regular grid.

    Args:
        grid_h, grid_w: grid rows and columns (Python ints).
        step_y, step_x: pixels between neighbouring centres (Python numbers).
        heights, widths: ``n`` box sizes in pixels (Python numbers), the boxes
            of one location in order.
        offset: the first centre is at ``offset * step``.

    Returns:
        ``[grid_h, grid_w, n, 4]`` yxyx float32 boxes.
    """
    n = len(heights)
    cy = (ops.arange(grid_h, dtype="float32") + offset) * float(step_y)
    cx = (ops.arange(grid_w, dtype="float32") + offset) * float(step_x)
    half_h = ops.convert_to_tensor([h * 0.5 for h in heights], dtype="float32")
    half_w = ops.convert_to_tensor([w * 0.5 for w in widths], dtype="float32")
    shape = (grid_h, grid_w, n)
    cy = ops.broadcast_to(ops.reshape(cy, (grid_h, 1, 1)), shape)
    cx = ops.broadcast_to(ops.reshape(cx, (1, grid_w, 1)), shape)
    half_h = ops.broadcast_to(ops.reshape(half_h, (1, 1, n)), shape)
    half_w = ops.broadcast_to(ops.reshape(half_w, (1, 1, n)), shape)
    return ops.stack([cy - half_h, cx - half_w, cy + half_h, cx + half_w], axis=-1)


def _flatten(grids):
    """Concatenates ``[H, W, n, 4]`` grids into ``[sum(H * W * n), 4]``."""
    return ops.concatenate([ops.reshape(g, (-1, 4)) for g in grids], axis=0)


def _ratio_sizes(size, aspect_ratio):
    """``(height, width)`` of area ``size**2`` with ``height / width = aspect_ratio``."""
    root = math.sqrt(aspect_ratio)
    return size * root, size / root


def multilevel_anchors(
    image_size,
    min_level=3,
    max_level=7,
    num_scales=3,
    aspect_ratios=(0.5, 1.0, 2.0),
    anchor_scale=4.0,
    offset=0.5,
):
    """FPN anchors of RetinaNet and EfficientDet.

    Level ``l`` has stride ``s = 2**l`` and base size ``anchor_scale * s``.
    Each location holds ``num_scales * len(aspect_ratios)`` anchors: for
    scale ``i`` (outer loop) and ratio ``r`` (inner loop) the size is
    ``base * 2**(i / num_scales)`` and the shape has ``height / width = r`` at
    the same area, i.e. ``height = size * sqrt(r)``, ``width = size / sqrt(r)``.

    Order: level ``min_level..max_level``, then row y, column x, then
    ``(scale, ratio)`` with the ratio varying fastest.

    Args:
        image_size: ``int`` or ``(height, width)`` in pixels.
        min_level, max_level: pyramid levels, inclusive.
        num_scales: octave scales per level (RetinaNet and EfficientDet: 3).
        aspect_ratios: height / width ratios.
        anchor_scale: base size in units of the stride (RetinaNet: 4, i.e.
            32 pixels on P3 up to 512 on P7).
        offset: centre of cell ``i`` at ``(i + offset) * stride``.

    Returns:
        ``[A, 4]`` yxyx float32 pixels, ``A = sum_l ceil(h / 2**l) *
        ceil(w / 2**l) * num_scales * len(aspect_ratios)`` (49104 for 512x512
        with the defaults, EfficientDet-D0's count).
    """
    height, width = _pair(image_size, "image_size")
    grids = []
    for level in range(min_level, max_level + 1):
        stride = 2**level
        heights, widths = [], []
        for scale_index in range(num_scales):
            size = anchor_scale * stride * 2.0 ** (scale_index / num_scales)
            for ratio in aspect_ratios:
                box_h, box_w = _ratio_sizes(size, ratio)
                heights.append(box_h)
                widths.append(box_w)
        grid_h, grid_w = math.ceil(height / stride), math.ceil(width / stride)
        grids.append(_grid_boxes(grid_h, grid_w, stride, stride, heights, widths, offset))
    return _flatten(grids)


def rpn_anchors(image_size, sizes=(32, 64, 128, 256, 512), aspect_ratios=(0.5, 1.0, 2.0), min_level=2, offset=0.5):
    """Faster R-CNN with FPN: one anchor size per level, several ratios.

    Level ``min_level + k`` (stride ``2**(min_level + k)``) has anchors of
    area ``sizes[k]**2`` and ``height / width`` in ``aspect_ratios``; the
    defaults are FPN's P2..P6 with 32..512 pixels.

    Order: level, then row y, column x, then ratio.

    Note:
        Centres are at ``(i + offset) * stride``. Detectron2 and torchvision
        put them at ``i * stride`` (their ``offset`` 0.0); pass ``offset=0.0``
        to reproduce their anchors exactly.

    Args:
        image_size: ``int`` or ``(height, width)`` in pixels.
        sizes: anchor side length (square root of area) per level, pixels.
        aspect_ratios: height / width ratios.
        min_level: the level of ``sizes[0]``.
        offset: centre of cell ``i`` at ``(i + offset) * stride``.

    Returns:
        ``[A, 4]`` yxyx float32 pixels, ``A = sum_k ceil(h / s_k) *
        ceil(w / s_k) * len(aspect_ratios)``.
    """
    height, width = _pair(image_size, "image_size")
    grids = []
    for k, size in enumerate(sizes):
        stride = 2 ** (min_level + k)
        shapes = [_ratio_sizes(size, ratio) for ratio in aspect_ratios]
        grid_h, grid_w = math.ceil(height / stride), math.ceil(width / stride)
        grids.append(
            _grid_boxes(grid_h, grid_w, stride, stride, [s[0] for s in shapes], [s[1] for s in shapes], offset)
        )
    return _flatten(grids)


def _ssd_scales(num_maps, s_min, s_max):
    """The SSD paper's ``s_k = s_min + (s_max - s_min) (k - 1) / (m - 1)``, plus ``s_{m+1}``.

    ``s_{m+1}``, needed by the last map's extra ratio-1 box, is not defined by
    the paper; it continues the line by one step (as the reference's 1.05
    does after 0.88).
    """
    if num_maps == 1:
        return [s_min, s_max]
    step = (s_max - s_min) / (num_maps - 1)
    return [s_min + step * k for k in range(num_maps + 1)]


def ssd_default_boxes(
    image_size=300,
    feature_map_sizes=(38, 19, 10, 5, 3, 1),
    s_min=0.2,
    s_max=0.9,
    aspect_ratio_sets=((2,), (2, 3), (2, 3), (2, 3), (2,), (2,)),
    scales=None,
    steps=None,
    clip=False,
):
    """SSD default boxes (Liu et al. 2016, section 2.2), SSD300 by default.

    Map ``k`` of ``m`` has scale ``s_k`` (a fraction of the image side). Every
    location holds, in this order: a square box of side ``s_k``; a square box
    of side ``sqrt(s_k * s_{k+1})``; then for each ``a`` in the map's set, a
    box of ratio ``a`` and one of ratio ``1 / a``. A box of ratio ``a`` has
    width ``s sqrt(a)`` and height ``s / sqrt(a)`` (the paper's definition,
    width / height; the set is symmetric so only the order depends on it).
    Hence ``2 + 2 * len(set)`` boxes per location: 4 or 6, 8732 in all for
    SSD300.

    Order: map, then row y, column x, then the boxes above.

    Scales. By default ``s_k`` is linear from ``s_min`` (first map) to
    ``s_max`` (last map) over ALL maps, exactly as the paper writes it, so
    the first map (conv4_3) gets 0.2. The authors' reference implementation
    instead gives conv4_3 the scale 0.1 and spreads 0.2..0.9 over the other
    maps in whole-percent steps; pass ``scales=SSD300_REFERENCE_SCALES`` (and
    ``steps=SSD300_REFERENCE_STEPS``) to reproduce its boxes. ``s_{m+1}``,
    which the paper leaves undefined, continues the line by one step.

    Centres. By default the paper's ``((i + 0.5) / |f_k|, (j + 0.5) / |f_k|)``
    of the image; with ``steps``, ``(i + 0.5) * step`` pixels as in the
    reference.

    Clipping. ``clip=False`` (default) leaves boxes that extend past the image
    unclipped, as the reference's SSD300 configuration does; clipping would
    change their centres and shapes, and with them the regression targets.
    ``clip=True`` clips to the image, as torchvision's default does.

    Args:
        image_size: ``int`` or ``(height, width)`` pixels; scales are
            fractions of each side, so non-square images get non-square boxes.
        feature_map_sizes: per map, ``int`` or ``(rows, cols)``.
        s_min, s_max: scales of the first and last map (ignored with ``scales``).
        aspect_ratio_sets: per map, the ratios ``a > 1`` used with ``1 / a``.
        scales: ``m + 1`` explicit scales ``s_1..s_{m+1}``, or None.
        steps: per map, pixel spacing of centres (``int`` or ``(y, x)``), or None.
        clip: clip boxes to the image.

    Returns:
        ``[A, 4]`` yxyx float32 pixels.
    """
    height, width = _pair(image_size, "image_size")
    num_maps = len(feature_map_sizes)
    if len(aspect_ratio_sets) != num_maps:
        raise ValueError(f"{num_maps} feature maps but {len(aspect_ratio_sets)} aspect ratio sets")
    if scales is None:
        scales = _ssd_scales(num_maps, s_min, s_max)
    if len(scales) != num_maps + 1:
        raise ValueError(f"scales must have {num_maps + 1} values (one more than the maps), got {len(scales)}")
    if steps is not None and len(steps) != num_maps:
        raise ValueError(f"steps must have {num_maps} values, got {len(steps)}")
    grids = []
    for k, map_size in enumerate(feature_map_sizes):
        rows, cols = _pair(map_size, "feature map size")
        if steps is None:
            step_y, step_x = height / rows, width / cols
        else:
            step_y, step_x = _pair(steps[k], "step")
        # (scale, width/height ratio) of each box at one location.
        shapes = [(scales[k], 1.0), (math.sqrt(scales[k] * scales[k + 1]), 1.0)]
        for ratio in aspect_ratio_sets[k]:
            shapes += [(scales[k], float(ratio)), (scales[k], 1.0 / ratio)]
        heights = [s / math.sqrt(a) * height for s, a in shapes]
        widths = [s * math.sqrt(a) * width for s, a in shapes]
        grids.append(_grid_boxes(rows, cols, step_y, step_x, heights, widths, 0.5))
    boxes = _flatten(grids)
    if clip:
        limits = ops.convert_to_tensor([height, width, height, width], dtype="float32")
        boxes = ops.minimum(ops.maximum(boxes, 0.0), limits)
    return boxes


def ssd512_default_boxes(image_size=512, s_min=0.15, s_max=0.9, scales=None, steps=None, clip=False):
    """SSD512 default boxes: seven maps 64, 32, 16, 8, 4, 2, 1; 24564 boxes.

    The same construction as ``ssd_default_boxes`` with the SSD512 layout:
    ratio sets ``{2}``, four times ``{2, 3}``, then ``{2}`` twice. The default
    scale range 0.15..0.9 is the common SSD512 range for the maps after
    conv4_3, but spread by the paper's linear rule over every map; pass
    ``scales=SSD512_REFERENCE_SCALES, steps=SSD512_REFERENCE_STEPS`` for the
    common configuration with conv4_3 at 0.07.

    Args:
        image_size: ``int`` or ``(height, width)`` pixels.
        s_min, s_max: scales of the first and last map.
        scales: 8 explicit scales, or None.
        steps: 7 per-map pixel spacings, or None for the paper's centres.
        clip: clip boxes to the image.

    Returns:
        ``[24564, 4]`` yxyx float32 pixels.
    """
    return ssd_default_boxes(
        image_size,
        feature_map_sizes=(64, 32, 16, 8, 4, 2, 1),
        s_min=s_min,
        s_max=s_max,
        aspect_ratio_sets=((2,), (2, 3), (2, 3), (2, 3), (2, 3), (2,), (2,)),
        scales=scales,
        steps=steps,
        clip=clip,
    )


def yolo_priors(priors=YOLOV3_PRIORS, num_levels=3):
    """YOLOv3 anchor priors grouped by output level.

    Args:
        priors: ``(width, height)`` pixel pairs, smallest level first; the
            default is YOLOv3's nine COCO priors.
        num_levels: output levels; the priors split evenly among them.

    Returns:
        ``[L, n, 2]`` float32 ``(width, height)`` pixels; ``[l]`` belongs to the
        output of stride ``YOLOV3_STRIDES[l]`` (8, 16, 32 by default: the
        three smallest priors at stride 8).
    """
    if len(priors) % num_levels:
        raise ValueError(f"{len(priors)} priors do not split evenly into {num_levels} levels")
    per_level = len(priors) // num_levels
    return ops.reshape(ops.convert_to_tensor(priors, dtype="float32"), (num_levels, per_level, 2))


def yolo_anchor_grids(image_size, priors=YOLOV3_PRIORS, strides=YOLOV3_STRIDES):
    """YOLOv3 anchors as per-level grids: every prior at every cell centre.

    Args:
        image_size: ``int`` or ``(height, width)`` pixels.
        priors: ``(width, height)`` pixel pairs, ``len(strides)`` equal groups,
            smallest stride's group first.
        strides: output strides, one per level.

    Returns:
        A list with, per level ``l``, ``[ceil(h / s_l), ceil(w / s_l), n, 4]``
        yxyx float32 pixels: the prior ``[l, a]`` centred on cell ``(y, x)``.
    """
    height, width = _pair(image_size, "image_size")
    if len(priors) % len(strides):
        raise ValueError(f"{len(priors)} priors do not split evenly into {len(strides)} levels")
    per_level = len(priors) // len(strides)
    grids = []
    for level, stride in enumerate(strides):
        group = priors[level * per_level : (level + 1) * per_level]
        grid_h, grid_w = math.ceil(height / stride), math.ceil(width / stride)
        grids.append(_grid_boxes(grid_h, grid_w, stride, stride, [p[1] for p in group], [p[0] for p in group], 0.5))
    return grids


def yolo_anchors(image_size, priors=YOLOV3_PRIORS, strides=YOLOV3_STRIDES):
    """``yolo_anchor_grids`` flattened: ``[A, 4]`` yxyx pixels, ordered level, y, x, prior."""
    return _flatten(yolo_anchor_grids(image_size, priors, strides))
