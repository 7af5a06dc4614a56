"""Darknet backbones: Darknet-53 (YOLOv3) and the YOLOv3-tiny stack.

Redmon & Farhadi, "YOLOv3: An Incremental Improvement", 2018; the layer
sequence follows the official ``yolov3.cfg`` / ``yolov3-tiny.cfg``.

Every convolution is Darknet's ``[convolutional]`` with
``batch_normalize=1, activation=leaky``: ``Conv2D(use_bias=False)``, then
``BatchNormalization`` and ``LeakyReLU(0.1)``.

Layer names (the contract ``tfdet.weights.darknet.load_darknet`` relies on):
the ``i``-th convolution in the Darknet cfg order (counting only
``[convolutional]`` sections, from 0) is the ``Conv2D`` named ``conv_{i}``
and, when batch-normalised, its ``BatchNormalization`` is ``bn_{i}``. The
builders here take a ``counter`` (a one-element list holding the next index)
so a detector that continues the graph (the YOLOv3 heads) keeps counting in
cfg order.

Padding: Darknet pads a ``k x k`` convolution by ``k // 2`` on every side and
computes ``out = (in + 2 * pad - k) // stride + 1``; for the stride-2 3x3
convolutions the last bottom/right padding row is never read, so the
equivalent is zero padding of one row on top and one column on the left,
``ZeroPadding2D(((1, 0), (1, 0)))``, then a ``valid`` convolution. Keras'
``same`` would pad bottom/right instead and shift every feature by a pixel
relative to Darknet weights. Stride-1 convolutions are symmetric, so
``same`` is exact for them.

Darknet's ``[maxpool]`` pads ``size - 1`` pixels, all on the bottom/right
(its offset is ``-(size - 1) // 2 == 0`` for ``size=2``) and ignores them;
that is Keras ``MaxPooling2D(padding="same")`` for ``size=2``.
"""

from __future__ import annotations

import keras
from keras import layers

__all__ = ["BN_EPSILON", "ConvCounter", "darknet_conv", "darknet53", "darknet53_features", "yolov3_tiny_backbone",
           "yolov3_tiny_features"]

# Darknet's inference normalisation (CPU and GPU) is (x - mean) /
# (sqrt(var) + 1e-6); Keras computes (x - mean) / sqrt(var + eps). With eps =
# 1e-6 the two differ by under 1e-6 relative wherever var >= 1 and stay close
# down to var ~ 1e-4, while Keras' default 1e-3 would visibly change
# converted models.
BN_EPSILON = 1e-6
LEAKY_SLOPE = 0.1


class ConvCounter:
    """Numbers a network's convolutions in cfg order and sets their widths.

    Args:
        width_multiplier: channels of every batch-normalised (hidden)
            convolution become ``max(8, round(F * m))``; the output
            convolutions keep theirs. 1.0 is the published network; smaller
            values give the same topology, cheaper (tests, small devices).
    """

    def __init__(self, width_multiplier: float = 1.0):
        if width_multiplier <= 0:
            raise ValueError(f"width_multiplier must be positive, got {width_multiplier}")
        self.next_index = 0
        self.width_multiplier = float(width_multiplier)

    def take(self) -> int:
        """The next convolution's cfg index."""
        index = self.next_index
        self.next_index += 1
        return index

    def channels(self, filters: int) -> int:
        """``filters`` scaled by the width multiplier."""
        if self.width_multiplier == 1.0:
            return filters
        return max(8, int(round(filters * self.width_multiplier)))


def darknet_conv(x, filters, size, counter, strides=1, batch_normalize=True, activation="leaky"):
    """One Darknet ``[convolutional]`` section.

    Args:
        x: ``[B, H, W, C]`` tensor.
        filters: output channels ``F``.
        size: kernel size ``k`` (1 or 3).
        counter: the network's ``ConvCounter``: gives this convolution's
            cfg index and, for batch-normalised ones, scales ``F``.
        strides: 1, or 2 for Darknet's top-left-padded downsampling.
        batch_normalize: ``True``: no bias, BatchNormalization; ``False``: a
            bias (the YOLO output convolutions).
        activation: ``"leaky"`` (slope 0.1) or ``"linear"``.

    Returns:
        ``[B, H / strides, W / strides, F]`` tensor.
    """
    index = counter.take()
    if batch_normalize:
        filters = counter.channels(filters)
    if strides == 1:
        padding = "same"
    else:
        # Darknet pads top/left only in effect (see the module docstring).
        x = layers.ZeroPadding2D(((1, 0), (1, 0)), name=f"pad_{index}")(x)
        padding = "valid"
    x = layers.Conv2D(filters, size, strides=strides, padding=padding, use_bias=not batch_normalize,
                      name=f"conv_{index}")(x)
    if batch_normalize:
        x = layers.BatchNormalization(epsilon=BN_EPSILON, name=f"bn_{index}")(x)
    if activation == "leaky":
        x = layers.LeakyReLU(negative_slope=LEAKY_SLOPE, name=f"leaky_{index}")(x)
    elif activation != "linear":
        raise ValueError(f"unsupported Darknet activation {activation!r}")
    return x


def _residual(x, filters, counter):
    """Darknet-53 residual block: 1x1 (F/2), 3x3 (F), ``[shortcut] from=-3``."""
    shortcut = x
    y = darknet_conv(x, filters // 2, 1, counter)
    y = darknet_conv(y, filters, 3, counter)
    return layers.Add(name=f"shortcut_{counter.next_index - 1}")([shortcut, y])


# (output channels, residual blocks) of the five downsampling stages.
DARKNET53_STAGES = ((64, 1), (128, 2), (256, 8), (512, 8), (1024, 4))


def darknet53_features(x, counter=None):
    """Darknet-53 (without its classifier) on a tensor, convolutions 0..51.

    Args:
        x: ``[B, H, W, 3]`` images, ``H`` and ``W`` divisible by 32.
        counter: the ``ConvCounter`` (see the module docstring); a fresh
            one starting at 0 when ``None``.

    Returns:
        ``[c3, c4, c5]``: ``[B, H/8, W/8, 256]``, ``[B, H/16, W/16, 512]``,
        ``[B, H/32, W/32, 1024]``, the outputs of the last residual block of
        stages 3, 4 and 5 (cfg layers 36, 61 and 74).
    """
    counter = ConvCounter() if counter is None else counter
    x = darknet_conv(x, 32, 3, counter)
    features = []
    for filters, blocks in DARKNET53_STAGES:
        x = darknet_conv(x, filters, 3, counter, strides=2)
        for _ in range(blocks):
            x = _residual(x, filters, counter)
        features.append(x)
    return features[2:]


def darknet53(input_shape=(None, None, 3), name="darknet53"):
    """Darknet-53 feature extractor as a model.

    Args:
        input_shape: ``(H, W, 3)``; ``H``, ``W`` divisible by 32 or ``None``.
        name: model name.

    Returns:
        ``keras.Model`` mapping ``[B, H, W, 3]`` to the list ``[c3, c4, c5]``
        of ``darknet53_features`` (strides 8, 16, 32).
    """
    inputs = keras.Input(shape=input_shape, name="images")
    return keras.Model(inputs, darknet53_features(inputs), name=name)


# yolov3-tiny.cfg: a 3x3 convolution before each of six 2x2 max pools, the
# sixth with stride 1 (13x13 stays 13x13 at 416), then a 3x3/1024 conv.
TINY_FILTERS = (16, 32, 64, 128, 256, 512)


def yolov3_tiny_features(x, counter=None):
    """The YOLOv3-tiny trunk on a tensor, convolutions 0..6.

    Args:
        x: ``[B, H, W, 3]`` images, ``H`` and ``W`` divisible by 32.
        counter: the ``ConvCounter``; a fresh one from 0 when ``None``.

    Returns:
        ``[c4, c5]``: ``[B, H/16, W/16, 256]`` (cfg layer 8, the conv before
        the fifth max pool, used by the upsampled branch) and
        ``[B, H/32, W/32, 1024]`` (cfg layer 12).
    """
    counter = ConvCounter() if counter is None else counter
    c4 = None
    for i, filters in enumerate(TINY_FILTERS):
        x = darknet_conv(x, filters, 3, counter)
        if i == 4:
            c4 = x
        # Darknet's stride-1 pool keeps the size by padding bottom/right,
        # which is Keras "same" for a 2x2 window.
        x = layers.MaxPooling2D(2, strides=2 if i < 5 else 1, padding="same", name=f"maxpool_{i}")(x)
    c5 = darknet_conv(x, 1024, 3, counter)
    return [c4, c5]


def yolov3_tiny_backbone(input_shape=(None, None, 3), name="yolov3_tiny_backbone"):
    """The YOLOv3-tiny trunk as a model: ``[B, H, W, 3]`` -> ``[c4, c5]``."""
    inputs = keras.Input(shape=input_shape, name="images")
    return keras.Model(inputs, yolov3_tiny_features(inputs), name=name)
