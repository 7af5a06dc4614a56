"""Training augmentations that keep boxes, masks and image consistent.

Every function takes and returns an example dict (see ``tfdet.data.reader``):
``image`` ``[h, w, 3]`` (uint8 or float32, values 0..255), ``boxes`` float32
``[N, 4]`` yxyx pixels, ``classes``/``is_crowd``/``difficult`` int32 ``[N]``
and optionally ``masks`` uint8 ``[N, h, w]``; other keys pass through.

All randomness is stateless: each function takes ``seed``, an int ``[2]``
tensor, and draws with ``tf.random.stateless_*`` from seeds folded out of it.
The pipeline derives the seed from ``(dataset seed, element index)``, so an
element is augmented the same way in every run, whatever the thread timing.

Geometry works on whole pixels: crop and expand windows have integer corners,
so a box and the bounding box of its mask move together exactly. Objects
whose box centre leaves a crop are dropped; the others are clipped to it.

The chains (``augment``):

* ``"flip"``: horizontal flip with probability 0.5.
* ``"scale_jitter"``: flip, then scale by ``r * min(H/h, W/w)`` with ``r`` in
  ``[0.1, 2.0]``, random crop to ``H x W``, pad bottom/right with 0 (the
  EfficientDet/RetinaNet recipe); the output is already model-input sized.
* ``"ssd"``: zoom-out expand (probability 0.5, ratio 1..4, filled with the
  dataset mean), IoU-constrained crop (Liu et al., SSD, ECCV 2016, section
  2.2: min IoU drawn from {0.1, 0.3, 0.5, 0.7, 0.9} or the whole image), flip,
  all as one window that ``resize.resize_window`` samples straight into the
  model input; then the photometric distortion of the SSD Caffe code
  (composed into one affine colour transform, see ``photometric_distortion``).
* ``"yolo"``: flip; after resizing, HSV jitter (hue +-0.1 of the circle,
  saturation and exposure scaled by up to 1.5 either way, as Darknet's
  YOLOv3 cfg), applied as a linear colour matrix (``colour_matrix``).

Photometric steps run after the resize, on the model-input image: they are
per-pixel and linear, so they commute with bilinear resampling, and the model
input is usually smaller than the source. (Unlike the Caffe order, the zoom-out
fill is colour-transformed too.)

Measured CPU cost per image on 2 shared cores, 500 x 375 JPEG to 300 x 300
(``benchmarks/pipeline.py``): JPEG decode alone 1.3 ms; the reader (parse,
decode, error naming) 1.8 ms; the "none" chain in all (reader, resize, pad,
batch) 3.4-4 ms; the "ssd" chain in all about 6.4 ms.
"""

import math

import tensorflow as tf

from tfdet.data.resize import place_on_canvas, resize_masks_to

AUGMENTATIONS = ("none", "flip", "scale_jitter", "ssd", "yolo")
OBJECT_KEYS = ("boxes", "classes", "is_crowd", "difficult")

# The SSD Caffe mean pixel (104, 117, 123 in BGR), in RGB: the expand fill.
SSD_MEAN_RGB = (123.0, 117.0, 104.0)
# The paper's sampling options; None keeps the whole image.
SSD_MIN_IOUS = (None, 0.1, 0.3, 0.5, 0.7, 0.9)


class AugmentationError(ValueError):
    """An unknown augmentation name or invalid augmentation parameters."""


def sub_seed(seed, salt):
    """A new stateless seed ``[2]`` folded out of ``seed`` for draw number ``salt``."""
    return tf.random.experimental.stateless_fold_in(tf.cast(seed, tf.int64), salt)


def _uniform(seed, salt, shape=(), minval=0.0, maxval=1.0):
    return tf.random.stateless_uniform(list(shape), sub_seed(seed, salt), minval=minval, maxval=maxval)


def _random_int(seed, salt, upper, shape=()):
    """Integers uniform in ``[0, upper]`` (inclusive); ``upper`` an int32 tensor >= 0."""
    draw = _uniform(seed, salt, shape)
    value = tf.cast(tf.floor(draw * tf.cast(upper + 1, tf.float32)), tf.int32)
    return tf.minimum(value, upper)  # draw < 1, but float rounding could reach upper + 1


def _select_objects(example, keep):
    """Keeps the objects where ``keep`` (bool ``[N]``) is True, masks included."""
    example = dict(example)
    for key in OBJECT_KEYS + ("masks",):
        if key in example:
            example[key] = tf.boolean_mask(example[key], keep)
    return example


# --------------------------------------------------------------------------- flip

def flip_left_right(example):
    """Mirrors image, masks and boxes horizontally (always)."""
    example = dict(example)
    width = tf.cast(tf.shape(example["image"])[1], tf.float32)
    example["image"] = tf.reverse(example["image"], axis=[1])
    ymin, xmin, ymax, xmax = tf.unstack(example["boxes"], num=4, axis=-1)
    example["boxes"] = tf.stack([ymin, width - xmax, ymax, width - xmin], axis=-1)
    if "masks" in example:
        example["masks"] = tf.reverse(example["masks"], axis=[2])
    return example


def horizontal_flip(example, seed, probability=0.5):
    """Flips with ``probability``; returns the example unchanged otherwise."""
    return tf.cond(
        _uniform(seed, 1) < probability, lambda: flip_left_right(example), lambda: dict(example)
    )


# --------------------------------------------------------------------------- windows

def apply_window(example, top, left, height, width, fill=(0.0, 0.0, 0.0)):
    """Cuts the window ``[top, top + height) x [left, left + width)`` out of the image.

    The window may reach outside the image (negative ``top``/``left`` or past
    the far edge); those pixels take ``fill`` (one value per channel) and mask
    pixels 0 (a window larger than the image is the SSD zoom-out canvas).
    Boxes are shifted into the window; an object whose box centre lies outside
    the window is dropped, the others are clipped to the window.

    Args:
      example: example dict.
      top, left: int32 scalars, window corner in image pixels.
      height, width: int32 scalars >= 1, window size.
      fill: three numbers, the colour outside the image.

    Returns:
      The example with ``image`` ``[height, width, 3]`` (same dtype) and
      ``masks`` ``[N', height, width]``.
    """
    example = dict(example)
    image = example["image"]
    shape = tf.shape(image)
    image_h, image_w = shape[0], shape[1]
    y0 = tf.clip_by_value(top, 0, image_h)
    x0 = tf.clip_by_value(left, 0, image_w)
    y1 = tf.clip_by_value(top + height, y0, image_h)
    x1 = tf.clip_by_value(left + width, x0, image_w)
    pad_top, pad_left = y0 - top, x0 - left
    paddings = [[pad_top, height - pad_top - (y1 - y0)], [pad_left, width - pad_left - (x1 - x0)]]

    example["image"] = place_on_canvas(image[y0:y1, x0:x1], pad_top, pad_left, height, width,
                                       tf.constant(fill, tf.float32))
    if "masks" in example:
        example["masks"] = tf.pad(example["masks"][:, y0:y1, x0:x1], [[0, 0]] + paddings)

    return window_objects(example, tf.stack([top, left, height, width]))


def window_objects(example, window):
    """Moves the boxes into a window; drops objects whose centre is outside it.

    Args:
      example: example dict (its image and masks are left as they are,
        except that dropped objects' masks go too).
      window: int32 ``[4]`` ``(top, left, height, width)`` in image pixels.

    Returns:
      The example with boxes in window pixels, clipped to the window.
    """
    example = dict(example)
    top, left, height, width = tf.unstack(tf.cast(window, tf.float32))
    boxes = example["boxes"] - tf.stack([top, left, top, left])
    size = tf.stack([height, width])
    centre = (boxes[:, :2] + boxes[:, 2:]) / 2.0
    keep = tf.reduce_all((centre > 0.0) & (centre < size), axis=-1)
    example["boxes"] = tf.clip_by_value(boxes, 0.0, tf.concat([size, size], axis=0))
    return _select_objects(example, keep)


def _window_iou(window, boxes):
    """IoU of windows ``[T, 4]`` with boxes ``[N, 4]`` (yxyx) -> ``[T, N]``.

    A tf twin of ``tfdet.core.box_ops.pairwise_iou``: that one is keras.ops,
    which under ``KERAS_BACKEND=jax`` cannot run inside a tf.data graph.
    """
    window = window[:, None, :]
    boxes = boxes[None, :, :]
    top_left = tf.maximum(window[..., :2], boxes[..., :2])
    bottom_right = tf.minimum(window[..., 2:], boxes[..., 2:])
    extent = tf.maximum(bottom_right - top_left, 0.0)
    intersection = extent[..., 0] * extent[..., 1]
    area_w = (window[..., 2] - window[..., 0]) * (window[..., 3] - window[..., 1])
    area_b = (boxes[..., 2] - boxes[..., 0]) * (boxes[..., 3] - boxes[..., 1])
    union = area_w + area_b - intersection
    return tf.math.divide_no_nan(intersection, union)


def sample_iou_crop_window(
    boxes, height, width, seed, *, min_ious=SSD_MIN_IOUS, min_scale=0.3, max_scale=1.0,
    min_aspect=0.5, max_aspect=2.0, trials=50,
):
    """Samples an SSD crop window over an image of ``height x width``.

    One option is drawn uniformly from ``min_ious``. ``None`` keeps the whole
    image. Otherwise ``trials`` patches are drawn, side scale ``s`` in
    ``[min_scale, max_scale]`` and aspect ratio ``a`` (w/h) in
    ``[min_aspect, max_aspect]`` clamped to ``[s^2, 1/s^2]`` so the patch fits
    (the SSD Caffe sampler); the first patch whose IoU with some ground-truth
    box is at least the option's minimum and that contains some box centre
    is used. When none qualifies (or there are no boxes) the whole image is.

    Args:
      boxes: float32 ``[N, 4]`` yxyx pixels.
      height, width: int32 scalars, the image (or zoom-out canvas) size.
      seed: int ``[2]`` stateless seed.
      min_ious: options; ``None`` for the whole image.

    Returns:
      int32 ``[4]``: ``(top, left, bottom, right)``, whole pixels.
    """
    options = tf.constant([-1.0 if v is None else float(v) for v in min_ious], tf.float32)
    choice = _random_int(seed, 10, tf.constant(len(min_ious) - 1, tf.int32))
    min_iou = options[choice]

    h = tf.cast(height, tf.float32)
    w = tf.cast(width, tf.float32)
    scale = _uniform(seed, 11, [trials], min_scale, max_scale)
    aspect = _uniform(seed, 12, [trials], min_aspect, max_aspect)
    aspect = tf.clip_by_value(aspect, scale ** 2, 1.0 / scale ** 2)
    crop_h = tf.clip_by_value(tf.round(h * scale / tf.sqrt(aspect)), 1.0, h)
    crop_w = tf.clip_by_value(tf.round(w * scale * tf.sqrt(aspect)), 1.0, w)
    top = tf.floor(_uniform(seed, 13, [trials]) * (h - crop_h + 1.0))
    left = tf.floor(_uniform(seed, 14, [trials]) * (w - crop_w + 1.0))
    top = tf.minimum(top, h - crop_h)
    left = tf.minimum(left, w - crop_w)
    windows = tf.stack([top, left, top + crop_h, left + crop_w], axis=-1)

    iou = _window_iou(windows, boxes)  # [T, N]
    centre = (boxes[:, :2] + boxes[:, 2:]) / 2.0
    inside = tf.reduce_all(
        (centre[None] > windows[:, None, :2]) & (centre[None] < windows[:, None, 2:]), axis=-1)  # [T, N]
    good = tf.reduce_any(iou >= min_iou, axis=1) & tf.reduce_any(inside, axis=1) & (min_iou >= 0.0)
    first = tf.argmax(tf.cast(good, tf.int32), output_type=tf.int32)
    whole = tf.stack([0.0, 0.0, h, w])
    window = tf.where(tf.reduce_any(good), windows[first], whole)
    return tf.cast(window, tf.int32)


def sample_expand(height, width, seed, *, max_ratio=4.0, probability=0.5):
    """Samples an SSD zoom-out canvas for an image of ``height x width``.

    Returns:
      int32 ``[4]``: ``(canvas_h, canvas_w, image_top, image_left)``; the
      canvas is the image itself when the draw says no expansion.
    """
    ratio = tf.where(_uniform(seed, 20) < probability, _uniform(seed, 21, (), 1.0, max_ratio), 1.0)
    canvas_h = tf.cast(tf.round(tf.cast(height, tf.float32) * ratio), tf.int32)
    canvas_w = tf.cast(tf.round(tf.cast(width, tf.float32) * ratio), tf.int32)
    canvas_h, canvas_w = tf.maximum(canvas_h, height), tf.maximum(canvas_w, width)
    top = _random_int(seed, 22, canvas_h - height)
    left = _random_int(seed, 23, canvas_w - width)
    return tf.stack([canvas_h, canvas_w, top, left])


def random_expand(example, seed, *, max_ratio=4.0, probability=0.5, fill=SSD_MEAN_RGB):
    """SSD zoom-out: the image placed at random on a canvas up to ``max_ratio`` times larger."""
    shape = tf.shape(example["image"])
    canvas = sample_expand(shape[0], shape[1], seed, max_ratio=max_ratio, probability=probability)
    return apply_window(example, -canvas[2], -canvas[3], canvas[0], canvas[1], fill)


def iou_constrained_crop(example, seed, **window_options):
    """SSD random crop (see ``sample_iou_crop_window`` for the options)."""
    shape = tf.shape(example["image"])
    window = sample_iou_crop_window(example["boxes"], shape[0], shape[1], seed, **window_options)
    return apply_window(example, window[0], window[1], window[2] - window[0], window[3] - window[1])


def ssd_window(example, seed, *, max_ratio=4.0, expand_probability=0.5, min_ious=SSD_MIN_IOUS):
    """Zoom-out expand, IoU-constrained crop and flip, the SSD geometric chain, as a window.

    The crop is sampled on the virtual zoom-out canvas; nothing is cut here.
    ``resize.resize_window(image, window, ..., fill=SSD_MEAN_RGB, flip=flip)``
    then samples the model input straight from the source image, so the (up
    to 16 times larger) canvas is never built, and ``apply_window`` followed
    by ``flip_left_right`` gives the same example at window resolution.

    Returns:
      ``(example, window, flip)``: the example with boxes in window pixels
      (objects whose centre left the window dropped, the rest clipped, and
      mirrored when ``flip``) and its image and masks untouched; ``window``
      int32 ``[4]`` ``(top, left, height, width)`` in image pixels (it may
      reach outside the image); ``flip`` a bool scalar.
    """
    shape = tf.shape(example["image"])
    canvas = sample_expand(shape[0], shape[1], sub_seed(seed, 30), max_ratio=max_ratio,
                           probability=expand_probability)
    canvas_h, canvas_w, image_top, image_left = tf.unstack(canvas)
    shift = tf.cast(tf.stack([image_top, image_left, image_top, image_left]), tf.float32)
    crop = sample_iou_crop_window(example["boxes"] + shift, canvas_h, canvas_w, sub_seed(seed, 31),
                                  min_ious=min_ious)
    window = tf.stack([crop[0] - image_top, crop[1] - image_left, crop[2] - crop[0], crop[3] - crop[1]])
    example = window_objects(example, window)
    flip = _uniform(seed, 32) < 0.5
    width = tf.cast(window[3], tf.float32)
    ymin, xmin, ymax, xmax = tf.unstack(example["boxes"], num=4, axis=-1)
    mirrored = tf.stack([ymin, width - xmax, ymax, width - xmin], axis=-1)
    example["boxes"] = tf.where(flip, mirrored, example["boxes"])
    return example, window, flip


# --------------------------------------------------------------------------- scale jitter

def scale_jitter(example, seed, output_size, *, min_scale=0.1, max_scale=2.0):
    """Random scale, random crop and zero pad to ``output_size`` (EfficientDet recipe).

    The image is scaled by ``r * min(H/h, W/w)``, ``r`` uniform in
    ``[min_scale, max_scale]``; a random ``H x W`` window is cut (padded
    bottom/right with 0 where the scaled image is smaller).

    Returns:
      ``(example, scale)``: image float32 ``[H, W, 3]``; ``scale`` float32
      ``[2]`` (sy, sx), the factor from source pixels to output pixels.
    """
    target_h, target_w = (int(v) for v in output_size)
    shape = tf.shape(example["image"])
    h, w = tf.cast(shape[0], tf.float32), tf.cast(shape[1], tf.float32)
    ratio = _uniform(seed, 40, (), min_scale, max_scale)
    s = tf.minimum(target_h / h, target_w / w) * ratio
    new_h = tf.maximum(tf.cast(tf.round(h * s), tf.int32), 1)
    new_w = tf.maximum(tf.cast(tf.round(w * s), tf.int32), 1)
    scale = tf.stack([tf.cast(new_h, tf.float32) / h, tf.cast(new_w, tf.float32) / w])

    example = dict(example)
    example["image"] = tf.image.resize(example["image"], tf.stack([new_h, new_w]))
    example["boxes"] = example["boxes"] * tf.tile(scale, [2])
    if "masks" in example:
        example["masks"] = resize_masks_to(example["masks"], tf.stack([new_h, new_w]))
    top = _random_int(seed, 41, tf.maximum(new_h - target_h, 0))
    left = _random_int(seed, 42, tf.maximum(new_w - target_w, 0))
    example = apply_window(example, top, left, tf.constant(target_h), tf.constant(target_w))
    example["image"] = tf.ensure_shape(example["image"], [target_h, target_w, 3])
    return example, scale


# --------------------------------------------------------------------------- photometric

# RGB <-> YIQ (NTSC). Y is the luma; (I, Q) the chroma plane.
_RGB_TO_YIQ = (
    (0.299, 0.587, 0.114),
    (0.596, -0.274, -0.322),
    (0.211, -0.523, 0.312),
)


def colour_matrix(hue_degrees, saturation, value):
    """3x3 matrix ``M`` with ``rgb_out = M @ rgb`` for a hue/saturation/value change.

    Hue rotates the chroma plane of YIQ by ``hue_degrees``, saturation scales
    it, value scales everything: the linear HSV approximation of NVIDIA DALI's
    ``hsv`` operator. One matrix product per pixel instead of an RGB->HSV->RGB
    round trip (measured on 300 x 300: ~0.3 ms against 3-8 ms for
    ``tf.image.adjust_hue``/``rgb_to_hsv``), which kept the SSD pipeline at
    the speed of decoding. It differs from HSV arithmetic in how strongly
    each hue saturates, which does not matter for colour augmentation.

    Args:
      hue_degrees, saturation, value: float32 scalars (0, 1, 1 is identity).

    Returns:
      float32 ``[3, 3]``.
    """
    to_yiq = tf.constant(_RGB_TO_YIQ, tf.float32)
    angle = tf.cast(hue_degrees, tf.float32) * (math.pi / 180.0)
    cos, sin = tf.cos(angle) * saturation, tf.sin(angle) * saturation
    one, zero = tf.ones([]), tf.zeros([])
    rotate = tf.stack([
        tf.stack([one, zero, zero]),
        tf.stack([zero, cos, -sin]),
        tf.stack([zero, sin, cos]),
    ])
    return value * tf.linalg.inv(to_yiq) @ rotate @ to_yiq


def apply_colour_matrix(image, matrix, offset=0.0):
    """``clip(matrix @ rgb + offset)`` per pixel of a float ``[h, w, 3]`` image (0..255)."""
    image = tf.cast(image, tf.float32)
    mixed = tf.reshape(tf.matmul(tf.reshape(image, [-1, 3]), matrix, transpose_b=True), tf.shape(image))
    return tf.clip_by_value(mixed + offset, 0.0, 255.0)


def photometric_distortion(image, seed):
    """The SSD photometric distortion on a float image of values 0..255.

    As the SSD Caffe code (and ssd.pytorch): brightness ``+delta``, delta in
    +-32 (p 0.5); contrast ``*alpha``, alpha in 0.5..1.5 (p 0.5); saturation
    0.5..1.5 (p 0.5) and hue +-18 degrees (p 0.5). All four are linear in
    the pixel, so they are composed into one affine colour transform
    (``alpha * M @ (rgb + delta)``, M from ``colour_matrix``; M keeps greys
    grey, so ``M @ delta = delta``) applied in one pass and clipped once; the
    Caffe code clips between steps, and its random order of contrast and
    hue/saturation makes no difference without those clips.
    """
    def gated(salt, value, identity):
        return tf.where(_uniform(seed, salt) < 0.5, value, identity)

    brightness = gated(50, _uniform(seed, 51, (), -32.0, 32.0), 0.0)
    contrast = gated(52, _uniform(seed, 53, (), 0.5, 1.5), 1.0)
    saturation = gated(54, _uniform(seed, 55, (), 0.5, 1.5), 1.0)
    hue = gated(56, _uniform(seed, 57, (), -18.0, 18.0), 0.0)
    matrix = colour_matrix(hue, saturation, contrast)
    return apply_colour_matrix(image, matrix, contrast * brightness)


def hsv_jitter(image, seed, *, hue=0.1, saturation=1.5, exposure=1.5):
    """Darknet's YOLOv3 colour jitter on a float image of values 0..255.

    Hue shifted by up to ``hue`` of the colour circle (0.1: +-36 degrees);
    saturation and value scaled by a factor in ``[1, saturation]`` (or
    ``exposure``), inverted with probability 0.5 (Darknet's ``rand_scale``).
    Applied through ``colour_matrix``.
    """
    def rand_scale(salt, limit):
        factor = _uniform(seed, salt, (), 1.0, limit)
        return tf.where(_uniform(seed, salt + 1) < 0.5, factor, 1.0 / factor)

    hue_degrees = _uniform(seed, 60, (), -hue, hue) * 360.0
    matrix = colour_matrix(hue_degrees, rand_scale(61, saturation), rand_scale(63, exposure))
    return apply_colour_matrix(image, matrix)


# --------------------------------------------------------------------------- chains

def check_augmentation(name):
    if name not in AUGMENTATIONS:
        raise AugmentationError(f"augmentation {name!r}: expected one of {AUGMENTATIONS}")


def augment_geometry(example, name, seed, output_size, scale_range=None):
    """The geometric part of a chain that is applied before resizing.

    ``"ssd"`` is not handled here: its window is resized in one step
    (``ssd_window`` + ``resize.resize_window``, see ``tfdet.data.pipeline``).

    Returns:
      ``(example, scale)``: ``scale`` is None except for ``"scale_jitter"``,
      whose output is already ``output_size`` (its scale from source pixels).
      ``scale_range``: ``(min, max)`` of ``"scale_jitter"`` (default 0.1..2.0).
    """
    check_augmentation(name)
    if name == "ssd":
        raise AugmentationError("the ssd chain runs through ssd_window and resize_window")
    if name == "none":
        return example, None
    if name == "scale_jitter":
        example = horizontal_flip(example, sub_seed(seed, 100))
        low, high = scale_range if scale_range is not None else (0.1, 2.0)
        return scale_jitter(example, sub_seed(seed, 101), output_size, min_scale=float(low), max_scale=float(high))
    return horizontal_flip(example, sub_seed(seed, 100)), None  # "flip" and "yolo"


def augment_photometric(image, name, seed):
    """The photometric part of a chain, on the resized float image (0..255)."""
    check_augmentation(name)
    if name == "ssd":
        return photometric_distortion(image, sub_seed(seed, 200))
    if name == "yolo":
        return hsv_jitter(image, sub_seed(seed, 201))
    return image
