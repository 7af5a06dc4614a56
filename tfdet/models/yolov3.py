"""YOLOv3 and YOLOv3-tiny networks: images to raw per-scale head outputs.

Redmon & Farhadi, "YOLOv3: An Incremental Improvement", 2018. The graphs
follow the official ``yolov3.cfg`` and ``yolov3-tiny.cfg`` layer for layer,
so Darknet ``.weights`` files load with ``tfdet.weights.darknet.load_darknet``
(convolutions are named ``conv_{i}`` in cfg order, see
``tfdet.backbones.darknet``).

Outputs are the raw outputs of the last 1x1 convolution of each scale, before
Darknet's ``[yolo]`` transform (sigmoid of x, y, objectness and classes;
exp of w, h): a dict of ``[B, H/s, W/s, 3 * (5 + K)]`` tensors keyed ``"p5"``
(stride 32), ``"p4"`` (16), ``"p3"`` (8). The channel axis holds the three
priors of the scale one after another, each as
``(tx, ty, tw, th, objectness, class_0 .. class_{K-1})`` in Darknet's order
(x before y); priors ``YOLOV3_PRIORS[3l:3l+3]`` (``tfdet.core.anchors``)
belong to the scale of stride ``YOLOV3_STRIDES[l]``.
"""

from __future__ import annotations

import keras
from keras import layers

from tfdet.backbones.darknet import ConvCounter, darknet_conv, darknet53_features, yolov3_tiny_features

__all__ = ["yolov3_network", "yolov3_tiny_network"]

PRIORS_PER_SCALE = 3


def _output_conv(x, num_classes, counter):
    """The head's 1x1 output convolution: bias, no BN, linear."""
    return darknet_conv(x, PRIORS_PER_SCALE * (5 + num_classes), 1, counter, batch_normalize=False,
                        activation="linear")


def _five_convs(x, filters, counter):
    """1x1 (F), 3x3 (2F), 1x1 (F), 3x3 (2F), 1x1 (F); the last feeds both the
    output branch and the upsampling branch."""
    for size in (1, 3, 1, 3, 1):
        x = darknet_conv(x, filters if size == 1 else 2 * filters, size, counter)
    return x


def _upsample_concat(x, skip, filters, counter, tag):
    """1x1 conv, nearest 2x upsampling, then ``[route] layers=-1, skip``:
    the upsampled map comes first on the channel axis, as in Darknet."""
    x = darknet_conv(x, filters, 1, counter)
    x = layers.UpSampling2D(2, interpolation="nearest", name=f"upsample_{tag}")(x)
    return layers.Concatenate(axis=-1, name=f"route_{tag}")([x, skip])


def yolov3_network(num_classes=80, input_shape=(None, None, 3), name="yolov3", width_multiplier=1.0):
    """YOLOv3: Darknet-53 with three detection scales.

    Args:
        num_classes: ``K``.
        input_shape: ``(H, W, 3)``, ``H`` and ``W`` divisible by 32 (or ``None``).
        name: model name.
        width_multiplier: scales the hidden convolutions' channels
            (``ConvCounter``); 1.0 is the published network.

    Returns:
        ``keras.Model`` mapping float ``[B, H, W, 3]`` RGB images in ``[0, 1]``
        to a dict: ``"p5"`` ``[B, H/32, W/32, 3 * (5 + K)]``, ``"p4"``
        ``[B, H/16, W/16, 3 * (5 + K)]``, ``"p3"`` ``[B, H/8, W/8, 3 * (5 + K)]``
        raw head outputs (see the module docstring). 75 convolutions,
        ``conv_0`` .. ``conv_74`` in cfg order.
    """
    inputs = keras.Input(shape=input_shape, name="images")
    counter = ConvCounter(width_multiplier)
    c3, c4, c5 = darknet53_features(inputs, counter)
    outputs = {}
    x = c5
    # The cfg's order: scale 32 entirely, then its upsampling branch, etc.
    for key, skip, filters in (("p5", c4, 512), ("p4", c3, 256), ("p3", None, 128)):
        x = _five_convs(x, filters, counter)
        head = darknet_conv(x, 2 * filters, 3, counter)
        outputs[key] = _output_conv(head, num_classes, counter)
        if skip is not None:
            x = _upsample_concat(x, skip, filters // 2, counter, key)
    return keras.Model(inputs, outputs, name=name)


def yolov3_tiny_network(num_classes=80, input_shape=(None, None, 3), name="yolov3_tiny", width_multiplier=1.0):
    """YOLOv3-tiny: the conv/max-pool trunk with two detection scales.

    Args:
        num_classes: ``K``.
        input_shape: ``(H, W, 3)``, ``H`` and ``W`` divisible by 32 (or ``None``).
        name: model name.
        width_multiplier: scales the hidden convolutions' channels
            (``ConvCounter``); 1.0 is the published network.

    Returns:
        ``keras.Model`` mapping float ``[B, H, W, 3]`` RGB images in ``[0, 1]``
        to a dict: ``"p5"`` ``[B, H/32, W/32, 3 * (5 + K)]`` and ``"p4"``
        ``[B, H/16, W/16, 3 * (5 + K)]`` (13 and 26 at 416). 13 convolutions,
        ``conv_0`` .. ``conv_12`` in cfg order.
    """
    inputs = keras.Input(shape=input_shape, name="images")
    counter = ConvCounter(width_multiplier)
    c4, c5 = yolov3_tiny_features(inputs, counter)
    x = darknet_conv(c5, 256, 1, counter)
    head = darknet_conv(x, 512, 3, counter)
    outputs = {"p5": _output_conv(head, num_classes, counter)}
    # [route] layers=-4 takes the 1x1/256 conv (x), then [route] -1, 8.
    x = _upsample_concat(x, c4, 128, counter, "p5")
    x = darknet_conv(x, 256, 3, counter)
    outputs["p4"] = _output_conv(x, num_classes, counter)
    return keras.Model(inputs, outputs, name=name)
