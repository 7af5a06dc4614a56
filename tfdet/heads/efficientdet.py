"""EfficientDet's class and box networks, shared across pyramid levels.

Tan, Pang & Le, "EfficientDet", CVPR 2020, section 3.3 / 4.2, as the official
implementation (``ClassNet`` / ``BoxNet`` of google/automl) builds them.

Each network is a tower of ``depth`` repeats of: a 3x3 depthwise separable
convolution of ``width`` channels (with bias), BatchNormalization, swish;
then a 3x3 separable prediction convolution. The convolutions are **shared by
every level** (one layer object applied to P3..P7); the BatchNormalization is
**not**: each level has its own BN in each repeat, because the levels'
statistics differ.

* Class network: ``num_anchors * K`` logits per location; their bias starts at
  ``-log((1 - pi) / pi)`` with prior probability ``pi = 0.01``, so every
  anchor starts with a foreground probability of 0.01 (RetinaNet's
  initialisation, which keeps the focal loss of the many easy negatives small
  at the start).
* Box network: ``num_anchors * 4`` encoded box deltas per location, bias 0.

Separable kernels start from ``VarianceScaling(1.0)`` (the reference's
depthwise and pointwise initialisers).

Output layout: each level's ``[B, H, W, n * C]`` is reshaped to
``[B, H * W * n, C]`` (row y, column x, then anchor) and the levels are
concatenated from P3 to P7: exactly the order of
``tfdet.core.anchors.multilevel_anchors``.
"""

from __future__ import annotations

import math

import keras
from keras import layers

__all__ = ["box_net", "class_net", "efficientdet_heads"]


def _separable(filters, name, bias_initializer="zeros"):
    return layers.SeparableConv2D(
        filters,
        3,
        padding="same",
        depthwise_initializer=keras.initializers.VarianceScaling(1.0),
        pointwise_initializer=keras.initializers.VarianceScaling(1.0),
        bias_initializer=bias_initializer,
        name=name,
    )


def _shared_net(pyramid, outputs_per_anchor, num_anchors, width, depth, bias_initializer, name):
    """The tower and predictor applied to every level; returns ``[B, A, outputs_per_anchor]``."""
    convs = [_separable(width, f"{name}_conv_{repeat}") for repeat in range(depth)]
    predictor = _separable(num_anchors * outputs_per_anchor, f"{name}_predict", bias_initializer)
    parts = []
    for level_index, feature in enumerate(pyramid):
        level = level_index + 3
        x = feature
        for repeat, conv in enumerate(convs):
            x = conv(x)
            x = layers.BatchNormalization(name=f"{name}_bn_{repeat}_p{level}")(x)
            x = layers.Activation("swish", name=f"{name}_swish_{repeat}_p{level}")(x)
        x = predictor(x)
        parts.append(layers.Reshape((-1, outputs_per_anchor), name=f"{name}_flat_p{level}")(x))
    return layers.Concatenate(axis=1, name=name)(parts)


def class_net(pyramid, num_classes, num_anchors=9, width=64, depth=3, prior_probability=0.01, name="class_net"):
    """Class logits of every anchor.

    Args:
        pyramid: ``[P3, ..., P7]`` Keras tensors of ``width``-compatible maps.
        num_classes: foreground classes ``K`` (sigmoid per class, no background).
        num_anchors: anchors per location (9).
        width, depth: channels and repeats of the tower.
        prior_probability: initial foreground probability of every logit.
        name: layer-name prefix and the output layer's name.

    Returns:
        ``[B, A, K]`` logits, ``A = sum_l H_l * W_l * num_anchors``.
    """
    bias = -math.log((1.0 - prior_probability) / prior_probability)
    return _shared_net(pyramid, num_classes, num_anchors, width, depth, keras.initializers.Constant(bias), name)


def box_net(pyramid, num_anchors=9, width=64, depth=3, name="box_net"):
    """Encoded box deltas ``[B, A, 4]`` of every anchor (the coder's units)."""
    return _shared_net(pyramid, 4, num_anchors, width, depth, "zeros", name)


def efficientdet_heads(pyramid, num_classes, num_anchors=9, width=64, depth=3, prior_probability=0.01):
    """Both networks: ``{"class_logits": [B, A, K], "box_deltas": [B, A, 4]}``."""
    return {
        "class_logits": class_net(pyramid, num_classes, num_anchors, width, depth, prior_probability),
        "box_deltas": box_net(pyramid, num_anchors, width, depth),
    }
