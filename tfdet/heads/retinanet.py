"""RetinaNet's classification and box subnets, shared across pyramid levels.

Lin et al., "Focal Loss for Dense Object Detection" (ICCV 2017, section 4,
"Classification Subnet", "Box Regression Subnet" and "Initialization"):

* each subnet is ``depth`` (4) 3x3 convolutions of ``width`` (256) channels
  with ReLU, then a 3x3 prediction convolution: ``A * K`` class logits or
  ``A * 4`` box deltas per location, ``A`` the anchors per location;
* the subnets' layers are **shared across levels**: the same layer objects
  are applied to P3..P7 (one set of weights), while the two subnets share
  nothing with each other;
* initialisation: every kernel ``N(0, 0.01)``, biases 0, except the class
  prediction's bias ``-log((1 - pi) / pi)`` with ``pi = 0.01``, so each
  anchor starts at foreground probability 0.01 and the many easy negatives
  do not swamp the first steps of the focal loss.

Output layout: each level's ``[B, H, W, A * C]`` becomes ``[B, H * W * A, C]``
(row y, column x, then anchor) and the levels are concatenated from the
finest: the order of ``tfdet.core.anchors.multilevel_anchors``.
"""

from __future__ import annotations

import math

import keras
from keras import layers

__all__ = ["PRIOR_PROBABILITY", "retinanet_head"]

PRIOR_PROBABILITY = 0.01


def _conv(filters, name, bias_initializer="zeros", activation=None):
    return layers.Conv2D(
        filters,
        3,
        padding="same",
        activation=activation,
        kernel_initializer=keras.initializers.RandomNormal(stddev=0.01),
        bias_initializer=bias_initializer,
        name=name,
    )


def _subnet(features, outputs_per_anchor, num_anchors, depth, width, name, bias_initializer):
    """Applies one shared tower to every level; returns ``[B, sum(H W A), outputs_per_anchor]``."""
    tower = [_conv(width, f"{name}_conv{i}", activation="relu") for i in range(depth)]
    predict = _conv(num_anchors * outputs_per_anchor, f"{name}_predict", bias_initializer=bias_initializer)
    flat = []
    for level, feature in enumerate(features):
        x = feature
        for conv in tower:
            x = conv(x)
        x = predict(x)
        flat.append(layers.Reshape((-1, outputs_per_anchor), name=f"{name}_flat{level}")(x))
    return layers.Concatenate(axis=1, name=name)(flat) if len(flat) > 1 else flat[0]


def retinanet_head(features, num_classes, num_anchors, depth=4, width=256, prior_probability=PRIOR_PROBABILITY,
                   name="retinanet"):
    """The class and box subnets on a list of pyramid levels (functional).

    Args:
        features: ``[P_min, ..., P_max]`` Keras tensors ``[B, H_l, W_l, C]``,
            finest first, all with the same ``C``.
        num_classes: ``K`` (sigmoid classes, no background).
        num_anchors: anchors per location ``A``.
        depth: 3x3 convolutions before each prediction (4).
        width: their channels (256).
        prior_probability: ``pi`` of the class bias initialisation.
        name: prefix of the layer names (``{name}_class_*``, ``{name}_box_*``).

    Returns:
        ``{"class_logits": [B, N, K], "box_deltas": [B, N, 4]}`` Keras
        tensors, ``N = sum_l H_l W_l A``.
    """
    bias = -math.log((1.0 - prior_probability) / prior_probability)
    class_logits = _subnet(features, num_classes, num_anchors, depth, width, f"{name}_class",
                           keras.initializers.Constant(bias))
    box_deltas = _subnet(features, 4, num_anchors, depth, width, f"{name}_box", "zeros")
    return {"class_logits": class_logits, "box_deltas": box_deltas}
