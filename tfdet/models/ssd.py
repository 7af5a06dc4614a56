"""SSD300 and SSD512 networks: VGG16 base, extra feature layers, 3x3 heads.

Liu et al., "SSD: Single Shot MultiBox Detector", ECCV 2016. This module
builds the network only (images -> raw per-default-box outputs); default
boxes are ``tfdet.core.anchors.ssd_default_boxes`` /
``ssd512_default_boxes``, and losses, matching and decoding live elsewhere.

Source maps and boxes per location:

========  ================================================  ===================
model     source maps (size at the default input)           boxes per location
========  ================================================  ===================
SSD300    conv4_3 38, conv7 19, conv8_2 10, conv9_2 5,       4, 6, 6, 6, 4, 4
          conv10_2 3, conv11_2 1                            (8732 in all)
SSD512    conv4_3 64, conv7 32, conv8_2 16, conv9_2 8,       4, 6, 6, 6, 6, 4, 4
          conv10_2 4, conv11_2 2, conv12_2 1                 (24564 in all)
========  ================================================  ===================

Extra layers (1x1 then 3x3 or 4x4, bias and ReLU on both). Convolutions
that Caffe pads by 1 on every side are an explicit ``ZeroPadding2D(1)``
followed by a ``valid`` convolution: for stride 2 on an even map Keras'
``same`` would pad only the bottom/right and shift every window by a pixel
relative to the reference, so reference weights would not line up.

* SSD300: conv8_1 1x1 256, conv8_2 3x3/2 pad 1 512; conv9_1 1x1 128,
  conv9_2 3x3/2 pad 1 256; conv10_1 1x1 128, conv10_2 3x3 valid 256;
  conv11_1 1x1 128, conv11_2 3x3 valid 256.
* SSD512: conv8 and conv9 as SSD300; conv10 and conv11 like conv9 (3x3/2
  pad 1); conv12_1 1x1 128, conv12_2 4x4 stride 1 pad 1 256.

Heads: on every source map, one 3x3 ``same`` convolution with bias for
class logits (``n * (num_classes + 1)`` channels) and one for box deltas
(``n * 4`` channels), ``n`` the map's boxes per location.

Output layout. Channel ``b * C + c`` of a head at location ``(y, x)`` is
value ``c`` of box ``b`` there; each head output ``[B, H, W, n * C]`` is
reshaped to ``[B, H * W * n, C]`` (row-major: y, then x, then b) and the
maps are concatenated in the table's order. This is exactly the order of
``ssd_default_boxes``: map, then row y, column x, then the boxes of one
location (the two squares, then ratio ``a`` and ``1 / a`` per ratio), so
index ``i`` of the outputs belongs to default box ``i``.

Classes. ``class_logits[..., 0]`` is **background**; ``[..., k + 1]`` is
foreground class ``k`` (``0..num_classes - 1``, tfdet's in-model ids).
``num_classes`` counts foreground classes only (20 for VOC).

Parameter counts (measured, and checked by hand in the tests): SSD300 with
``num_classes=20``: 26,285,486; with 90: 35,641,826. SSD512 with 20:
27,188,676.
"""

from __future__ import annotations

import keras
from keras import layers

from tfdet.backbones.vgg import scaled_channels, vgg16_ssd_backbone

__all__ = [
    "SSD300_BOXES_PER_LOCATION",
    "SSD512_BOXES_PER_LOCATION",
    "ssd300_network",
    "ssd512_network",
]

SSD300_BOXES_PER_LOCATION = (4, 6, 6, 6, 4, 4)
SSD512_BOXES_PER_LOCATION = (4, 6, 6, 6, 6, 4, 4)

# (block number, 1x1 filters, second filters, second kernel, stride, pad).
_SSD300_EXTRAS = (
    (8, 256, 512, 3, 2, 1),
    (9, 128, 256, 3, 2, 1),
    (10, 128, 256, 3, 1, 0),
    (11, 128, 256, 3, 1, 0),
)
_SSD512_EXTRAS = (
    (8, 256, 512, 3, 2, 1),
    (9, 128, 256, 3, 2, 1),
    (10, 128, 256, 3, 2, 1),
    (11, 128, 256, 3, 2, 1),
    (12, 128, 256, 4, 1, 1),
)


def _extra_layers(x, spec, width_multiplier):
    """Appends the extra blocks to ``x``; returns the list of their second-conv outputs."""
    outputs = []
    for block, filters_1, filters_2, kernel, stride, pad in spec:
        filters_1 = scaled_channels(filters_1, width_multiplier)
        filters_2 = scaled_channels(filters_2, width_multiplier)
        x = layers.Conv2D(filters_1, 1, activation="relu", name=f"conv{block}_1")(x)
        if pad:
            x = layers.ZeroPadding2D(pad, name=f"conv{block}_2_pad")(x)
        x = layers.Conv2D(
            filters_2, kernel, strides=stride, padding="valid", activation="relu", name=f"conv{block}_2"
        )(x)
        outputs.append(x)
    return outputs


def _head(feature, boxes, channels, name):
    """3x3 conv to ``boxes * channels``, then ``[B, H, W, boxes * channels] -> [B, H * W * boxes, channels]``."""
    x = layers.Conv2D(boxes * channels, 3, padding="same", name=name)(feature)
    return layers.Reshape((-1, channels), name=f"{name}_flat")(x)


def _ssd_network(image_size, num_classes, extras, boxes_per_location, backbone_weights, name, width_multiplier):
    if num_classes < 1:
        raise ValueError(f"num_classes counts foreground classes and must be >= 1, got {num_classes}")
    height, width = (image_size, image_size) if isinstance(image_size, int) else tuple(image_size)
    backbone = vgg16_ssd_backbone((height, width, 3), weights=backbone_weights, width_multiplier=width_multiplier)
    # Work on the backbone's own graph so its layers (and their names,
    # conv1_1 ...) are layers of this model, not one nested sub-model.
    images = backbone.input
    conv4_3_norm, conv7 = backbone.outputs
    sources = [conv4_3_norm, conv7] + _extra_layers(conv7, extras, width_multiplier)
    if len(sources) != len(boxes_per_location):
        raise AssertionError("one boxes-per-location entry per source map")
    source_names = ["conv4_3_norm", "conv7"] + [f"conv{spec[0]}_2" for spec in extras]
    class_parts, box_parts = [], []
    for feature, boxes, source in zip(sources, boxes_per_location, source_names):
        class_parts.append(_head(feature, boxes, num_classes + 1, f"{source}_class"))
        box_parts.append(_head(feature, boxes, 4, f"{source}_box"))
    class_logits = layers.Concatenate(axis=1, name="class_logits")(class_parts)
    box_deltas = layers.Concatenate(axis=1, name="box_deltas")(box_parts)
    return keras.Model(images, {"class_logits": class_logits, "box_deltas": box_deltas}, name=name)


def ssd300_network(num_classes=20, image_size=300, backbone_weights=None, name="ssd300", width_multiplier=1.0):
    """The SSD300 network (see the module docstring for layout and order).

    Args:
        num_classes: foreground classes ``K`` (20 for VOC, 80 or 90 for COCO).
            The classifier has ``K + 1`` outputs; index 0 is background.
        image_size: ``int`` or ``(height, width)``; 300 gives the paper's
            38, 19, 10, 5, 3, 1 maps and ``A = 8732``. Other sizes work while
            conv10_2 and conv11_2 still have 3x3 inputs (at least about 260
            pixels); the default boxes must then be built for the new map sizes.
        backbone_weights: ``None`` or a local ``*.weights.h5`` file of
            ``tfdet.backbones.vgg.vgg16_ssd_backbone`` (same input size).
        name: the model's name.
        width_multiplier: the base's and the extra blocks' channels scaled
            (``tfdet.backbones.vgg.scaled_channels``); 1.0 is the paper's.

    Returns:
        A ``keras.Model`` from images ``[B, H, W, 3]`` float to
        ``{"class_logits": [B, A, K + 1], "box_deltas": [B, A, 4]}``, float,
        raw (no softmax; deltas in the coder's encoded units).
    """
    return _ssd_network(image_size, num_classes, _SSD300_EXTRAS, SSD300_BOXES_PER_LOCATION, backbone_weights, name,
                        width_multiplier)


def ssd512_network(num_classes=20, image_size=512, backbone_weights=None, name="ssd512", width_multiplier=1.0):
    """The SSD512 network: maps 64, 32, 16, 8, 4, 2, 1 and ``A = 24564`` at 512x512.

    Args:
        num_classes: foreground classes ``K``; index 0 of the logits is
            background.
        image_size: ``int`` or ``(height, width)``; 512 gives the reference
            map sizes.
        backbone_weights: ``None`` or a local ``*.weights.h5`` file of
            ``tfdet.backbones.vgg.vgg16_ssd_backbone`` (same input size).
        name: the model's name.
        width_multiplier: the base's and the extra blocks' channels scaled
            (``tfdet.backbones.vgg.scaled_channels``); 1.0 is the paper's.

    Returns:
        A ``keras.Model`` from images ``[B, H, W, 3]`` to
        ``{"class_logits": [B, A, K + 1], "box_deltas": [B, A, 4]}``.
    """
    return _ssd_network(image_size, num_classes, _SSD512_EXTRAS, SSD512_BOXES_PER_LOCATION, backbone_weights, name,
                        width_multiplier)
