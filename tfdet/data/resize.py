"""Resizing an image to the detector's static input size.

Two modes, chosen by the detector (``detector.resize_mode``):

* ``"stretch"`` (SSD): the image is resized to ``H x W`` ignoring its aspect
  ratio; ``scale = (H / h, W / w)``.
* ``"letterbox"`` (YOLOv3, RetinaNet, EfficientDet): the aspect ratio is kept
  with ``s = min(H / h, W / w)``; the resized content sits at the top-left
  corner and the bottom/right is padded with 0; ``scale = (s, s)``.

In both modes a box in original pixels maps to model-input pixels by
``box * [sy, sx, sy, sx]`` (yxyx), and back by dividing. Because the content is
anchored at the top-left, no offset is ever needed. The same function is used
by the training/eval pipeline and by the exported serving graph, so the two
cannot disagree.
"""

import tensorflow as tf

RESIZE_MODES = ("stretch", "letterbox")


class ResizeModeError(ValueError):
    """An unknown resize mode was asked for."""


def _check_mode(mode):
    if mode not in RESIZE_MODES:
        raise ResizeModeError(f"resize mode {mode!r}: expected one of {RESIZE_MODES}")


def place_on_canvas(content, top, left, height, width, fill):
    """``content`` ``[h, w, C]`` placed at (top, left) of a ``height x width`` canvas of ``fill``.

    ``fill`` is one value per channel ``[C]``; the content must fit inside.

    Built from concatenated blocks: measured on 300 x 300 x 3 float32,
    ``tf.pad`` with tensor paddings (plus the arithmetic a per-channel fill
    needs) cost 1.9 ms a call, concatenation about 0.2 ms.
    """
    shape = tf.shape(content)
    content_h, content_w, channels = shape[0], shape[1], shape[2]
    fill = tf.cast(fill, content.dtype)

    def block(rows, cols):
        return tf.broadcast_to(fill, tf.stack([rows, cols, channels]))

    middle = tf.concat([block(content_h, left), content, block(content_h, width - left - content_w)], axis=1)
    return tf.concat([block(top, width), middle, block(height - top - content_h, width)], axis=0)


def letterbox_content_size(height, width, target_size):
    """Size of the resized content inside a letterbox, and its scale.

    Args:
      height: int32 scalar tensor, original image height ``h``.
      width: int32 scalar tensor, original image width ``w``.
      target_size: ``(H, W)`` Python ints.

    Returns:
      ``(new_h, new_w, s)``: int32 scalars with ``new_h = round(h * s)`` (at most
      ``H``, at least 1) and likewise for the width; ``s`` float32 scalar
      ``min(H / h, W / w)``.
    """
    target_h, target_w = (int(v) for v in target_size)
    h = tf.cast(height, tf.float32)
    w = tf.cast(width, tf.float32)
    s = tf.minimum(target_h / h, target_w / w)
    # Rounding (not flooring) keeps an exact fit exact when s * h lands a hair
    # below the target through float error; the clamp keeps it inside.
    new_h = tf.clip_by_value(tf.cast(tf.round(h * s), tf.int32), 1, target_h)
    new_w = tf.clip_by_value(tf.cast(tf.round(w * s), tf.int32), 1, target_w)
    return new_h, new_w, s


def resize_image(image, target_size, mode):
    """Resize one image to a static size.

    Args:
      image: uint8 or float tensor ``[h, w, 3]`` (any static or dynamic h, w),
        values 0..255.
      target_size: ``(H, W)`` Python ints, the model input size.
      mode: ``"stretch"`` or ``"letterbox"``.

    Returns:
      ``(resized, scale)``: ``resized`` float32 ``[H, W, 3]`` with values 0..255
      (bilinear, no antialiasing; letterbox padding is exactly 0) and ``scale``
      float32 ``[2]`` = ``(sy, sx)``: ``(H / h, W / w)`` for stretch, ``(s, s)``
      with ``s = min(H / h, W / w)`` for letterbox.

    Raises:
      ResizeModeError: for a mode other than the two above.
    """
    _check_mode(mode)
    target_h, target_w = (int(v) for v in target_size)
    image = tf.convert_to_tensor(image)
    image = tf.cast(image, tf.float32)
    shape = tf.shape(image)
    height, width = shape[0], shape[1]
    if mode == "stretch":
        resized = tf.image.resize(image, (target_h, target_w), method="bilinear")
        scale = tf.stack([
            target_h / tf.cast(height, tf.float32),
            target_w / tf.cast(width, tf.float32),
        ])
    else:
        new_h, new_w, s = letterbox_content_size(height, width, (target_h, target_w))
        content = tf.image.resize(image, tf.stack([new_h, new_w]), method="bilinear")
        resized = place_on_canvas(content, 0, 0, target_h, target_w, tf.zeros([3]))
        scale = tf.stack([s, s])
    resized = tf.ensure_shape(resized, [target_h, target_w, 3])
    return tf.cast(resized, tf.float32), tf.cast(scale, tf.float32)


def resize_masks(masks, target_size, mode):
    """Resize instance masks exactly as ``resize_image`` resizes their image.

    Args:
      masks: uint8 ``[N, h, w]`` with values 0/1 (N may be 0).
      target_size: ``(H, W)`` Python ints.
      mode: ``"stretch"`` or ``"letterbox"``.

    Returns:
      uint8 ``[N, H, W]`` 0/1: bilinear resampling thresholded at 0.5 (smoother
      edges than nearest neighbour), letterbox padding 0.
    """
    _check_mode(mode)
    target_h, target_w = (int(v) for v in target_size)
    masks = tf.convert_to_tensor(masks)
    shape = tf.shape(masks)
    if mode == "stretch":
        resized = resize_masks_to(masks, (target_h, target_w))
    else:
        new_h, new_w, _ = letterbox_content_size(shape[1], shape[2], (target_h, target_w))
        content = resize_masks_to(masks, tf.stack([new_h, new_w]))
        resized = tf.pad(content, [[0, 0], [0, target_h - new_h], [0, target_w - new_w]])
    return tf.ensure_shape(resized, [None, target_h, target_w])


def resize_masks_to(masks, size):
    """Masks uint8 ``[N, h, w]`` 0/1 -> ``[N, size[0], size[1]]``: bilinear, thresholded at 0.5."""
    resized = tf.image.resize(tf.cast(masks[..., None], tf.float32), size, method="bilinear")
    return tf.cast(resized[..., 0] >= 0.5, tf.uint8)


def _placement(window_start, window_extent, image_extent, out_extent):
    """Where the image's part of a window lands in an output of ``out_extent`` pixels.

    Returns int32 ``(source_start, source_end, out_start, out_end)``: the rows
    (or columns) of the image inside the window and the output pixels they
    resample into (rounded to whole pixels, at least one).
    """
    source_start = tf.clip_by_value(window_start, 0, image_extent)
    source_end = tf.clip_by_value(window_start + window_extent, source_start, image_extent)
    ratio = tf.cast(out_extent, tf.float32) / tf.cast(window_extent, tf.float32)
    out_start = tf.cast(tf.round(tf.cast(source_start - window_start, tf.float32) * ratio), tf.int32)
    out_end = tf.cast(tf.round(tf.cast(source_end - window_start, tf.float32) * ratio), tf.int32)
    out_start = tf.clip_by_value(out_start, 0, out_extent - 1)
    out_end = tf.clip_by_value(out_end, out_start + 1, out_extent)
    return source_start, tf.maximum(source_end, source_start + 1), out_start, out_end


def resize_window(image, window, target_size, mode, *, fill=(0.0, 0.0, 0.0), flip=False, masks=None):
    """Resize a window of the image (possibly reaching outside it) to the model input.

    Equivalent to cutting the window out (``augment.apply_window``: outside
    the image ``fill``, masks 0), mirroring it left-right when ``flip``, and
    ``resize_image``/``resize_masks`` -- but a window larger than the image
    (the SSD zoom-out canvas, up to 16 times the pixels) is never built: only
    the image's part of the window is resized, into its place in the output.
    A window inside the image gives exactly ``resize_image`` of the cut; when
    it reaches outside, the image part's edges are rounded to whole output
    pixels (under half a pixel of misplacement).

    Args:
      image: uint8 or float ``[h, w, 3]``, values 0..255.
      window: int32 ``[4]``: ``(top, left, height, width)`` in image pixels.
      target_size: ``(H, W)`` Python ints.
      mode: ``"stretch"`` or ``"letterbox"`` (applied to the window's size).
      fill: three numbers, the colour outside the image.
      flip: bool scalar: mirror the window left-right.
      masks: optional uint8 ``[N, h, w]`` 0/1.

    Returns:
      ``(resized, scale, resized_masks)``: float32 ``[H, W, 3]``, float32
      ``[2]`` (sy, sx) from window pixels to output pixels, and uint8
      ``[N, H, W]`` (None without ``masks``). Boxes in window pixels map by
      ``box * [sy, sx, sy, sx]`` (after mirroring ``x -> width - x`` when
      flipped).
    """
    _check_mode(mode)
    target_h, target_w = (int(v) for v in target_size)
    window = tf.cast(window, tf.int32)
    top, left, height, width = tf.unstack(window)
    if mode == "stretch":
        out_h, out_w = tf.constant(target_h), tf.constant(target_w)
        scale = tf.stack([target_h / tf.cast(height, tf.float32), target_w / tf.cast(width, tf.float32)])
    else:
        out_h, out_w, s = letterbox_content_size(height, width, (target_h, target_w))
        scale = tf.stack([s, s])
    shape = tf.shape(image)
    y0, y1, oy0, oy1 = _placement(top, height, shape[0], out_h)
    x0, x1, ox0, ox1 = _placement(left, width, shape[1], out_w)
    flip = tf.convert_to_tensor(flip)
    # Mirroring the window mirrors where the image part lands.
    ox0, ox1 = tf.where(flip, out_w - ox1, ox0), tf.where(flip, out_w - ox0, ox1)

    content = tf.image.resize(tf.cast(image[y0:y1, x0:x1], tf.float32), tf.stack([oy1 - oy0, ox1 - ox0]))
    content = tf.cond(flip, lambda: tf.reverse(content, axis=[1]), lambda: content)
    # The window's content (image part and fill), then the letterbox's zero padding.
    canvas = place_on_canvas(content, oy0, ox0, out_h, out_w, tf.constant(fill, tf.float32))
    if mode == "letterbox":
        canvas = place_on_canvas(canvas, 0, 0, target_h, target_w, tf.zeros([3]))
    resized = tf.ensure_shape(canvas, [target_h, target_w, 3])

    resized_masks = None
    if masks is not None:
        planes = resize_masks_to(masks[:, y0:y1, x0:x1], tf.stack([oy1 - oy0, ox1 - ox0]))
        planes = tf.cond(flip, lambda: tf.reverse(planes, axis=[2]), lambda: planes)
        paddings = [[0, 0], [oy0, target_h - oy1], [ox0, target_w - ox1]]
        resized_masks = tf.ensure_shape(tf.pad(planes, paddings), [None, target_h, target_w])
    return resized, tf.cast(scale, tf.float32), resized_masks
