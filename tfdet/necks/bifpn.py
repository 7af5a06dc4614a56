"""BiFPN: EfficientDet's weighted bidirectional feature pyramid on P3-P7.

Tan, Pang & Le, "EfficientDet: Scalable and Efficient Object Detection",
CVPR 2020, section 3; details as in the official implementation
(``efficientdet_keras.py`` of google/automl).

Inputs: the backbone's ``C3, C4, C5`` (strides 8, 16, 32). ``P6`` is ``C5``
through a 1x1 convolution (with bias) and BatchNormalization to the BiFPN
width, then 3x3 stride-2 ``same`` max pooling; ``P7`` is ``P6`` max-pooled the
same way (no convolution: it already has the width).

One BiFPN layer (``bifpn_layer``), ``P_l`` its inputs, ``'`` top-down and
``out`` its outputs::

    P6' = node(P6, up(P7))           P4out = node(P4, P4', down(P3out))
    P5' = node(P5, up(P6'))          P5out = node(P5, P5', down(P4out))
    P4' = node(P4, up(P5'))          P6out = node(P6, P6', down(P5out))
    P3out = node(P3, up(P4'))        P7out = node(P7, down(P6out))

``up`` is nearest-neighbour 2x upsampling, ``down`` 3x3 stride-2 ``same`` max
pooling. A node is fast normalised fusion (:class:`FastNormalizedFusion`),
swish, a 3x3 depthwise separable convolution (with bias) to the BiFPN width
and BatchNormalization. In the first layer the backbone maps ``P3..P5`` still
have the backbone's channels: every use of such an input in a node first
passes its own 1x1 convolution (with bias) + BatchNormalization to the width,
as the official implementation does (so ``C4`` and ``C5``, used twice, get two
each).

Sizes: levels must halve exactly, so the input side must be a multiple of
``2**7 = 128`` (EfficientDet's sizes all are).
"""

from __future__ import annotations

import keras
from keras import layers, ops

__all__ = ["FastNormalizedFusion", "bifpn", "bifpn_layer", "pyramid_inputs"]

LEVELS = (3, 4, 5, 6, 7)


@keras.saving.register_keras_serializable(package="tfdet")
class FastNormalizedFusion(layers.Layer):
    """``sum_i w_i x_i / (epsilon + sum_j w_j)`` with ``w = relu(weights)``.

    The fast normalised fusion of EfficientDet (eq. 3): one learnable scalar
    per input, kept non-negative by a ReLU and normalised without a softmax.
    The weights start at 1, so the fusion starts near the plain mean.

    Args:
        epsilon: added to the weight sum (1e-4 in the paper).
        method: ``"fast"`` (the above) or ``"sum"`` (plain unweighted sum, no
            weights; the official code's choice for D6/D7, available for
            comparison).
        **kwargs: ``keras.layers.Layer`` arguments.

    Input shape:
        a list of ``n`` tensors of one shape ``[B, H, W, C]``; output the same shape.
    """

    def __init__(self, epsilon: float = 1e-4, method: str = "fast", **kwargs):
        super().__init__(**kwargs)
        if method not in ("fast", "sum"):
            raise ValueError(f"fusion method must be 'fast' or 'sum', got {method!r}")
        self.epsilon = float(epsilon)
        self.method = method

    def build(self, input_shape):
        if self.method == "fast":
            self.fusion_weights = self.add_weight(
                name="fusion_weights", shape=(len(input_shape),), initializer="ones", trainable=True
            )

    def call(self, inputs):
        if self.method == "sum":
            return ops.sum(ops.stack(inputs, axis=0), axis=0)
        weights = ops.relu(ops.cast(self.fusion_weights, inputs[0].dtype))
        weights = weights / (ops.sum(weights) + self.epsilon)
        return ops.sum(ops.stack(inputs, axis=-1) * weights, axis=-1)

    def compute_output_shape(self, input_shape):
        return input_shape[0]

    def get_config(self):
        config = super().get_config()
        config.update({"epsilon": self.epsilon, "method": self.method})
        return config


def _to_width(x, width, name):
    """1x1 convolution (bias) + BatchNormalization to ``width`` channels, if ``x`` has other channels."""
    if x.shape[-1] == width:
        return x
    x = layers.Conv2D(width, 1, padding="same", name=f"{name}_conv")(x)
    return layers.BatchNormalization(name=f"{name}_bn")(x)


def _down(x, name):
    return layers.MaxPooling2D(3, strides=2, padding="same", name=name)(x)


def _up(x, name):
    return layers.UpSampling2D(2, interpolation="nearest", name=name)(x)


def pyramid_inputs(features, width, name="bifpn"):
    """``[C3, C4, C5]`` -> ``[P3, P4, P5, P6, P7]``: P6/P7 from C5 (module docstring).

    P3..P5 are returned as given (with backbone channels); P6 and P7 have
    ``width`` channels.
    """
    c3, c4, c5 = features
    p6 = _down(_to_width(c5, width, f"{name}_p6_resample"), f"{name}_p6_pool")
    p7 = _down(p6, f"{name}_p7_pool")
    return [c3, c4, c5, p6, p7]


def _node(inputs, width, fusion, name):
    """Fusion, swish, 3x3 separable convolution (bias), BatchNormalization."""
    x = FastNormalizedFusion(method=fusion, name=f"{name}_fusion")(inputs)
    x = layers.Activation("swish", name=f"{name}_swish")(x)
    x = layers.SeparableConv2D(width, 3, padding="same", name=f"{name}_conv")(x)
    return layers.BatchNormalization(name=f"{name}_bn")(x)


def bifpn_layer(pyramid, width, fusion="fast", name="bifpn_layer"):
    """One BiFPN layer: five maps in, five maps of ``width`` channels out.

    Args:
        pyramid: ``[P3, P4, P5, P6, P7]``, each half the size of the previous;
            any channels (converted per use to ``width``, see the module docstring).
        width: the BiFPN width.
        fusion: ``"fast"`` (fast normalised fusion) or ``"sum"``.
        name: prefix of the layer names.

    Returns:
        ``[P3out, ..., P7out]``, ``[B, H_l, W_l, width]``.
    """
    inputs = dict(zip(LEVELS, pyramid))

    def lateral(level, node):
        return _to_width(inputs[level], width, f"{name}_{node}_p{level}_lateral")

    top_down = {7: lateral(7, "td")}
    for level in (6, 5, 4, 3):
        node = "out" if level == 3 else "td"
        upsampled = _up(top_down[level + 1], f"{name}_{node}_p{level}_up")
        top_down[level] = _node([lateral(level, node), upsampled], width, fusion, f"{name}_{node}_p{level}")
    outputs = {3: top_down[3]}
    for level in (4, 5, 6, 7):
        downsampled = _down(outputs[level - 1], f"{name}_out_p{level}_down")
        fused = [lateral(level, "out"), downsampled] if level == 7 else [lateral(level, "out"), top_down[level],
                                                                         downsampled]
        outputs[level] = _node(fused, width, fusion, f"{name}_out_p{level}")
    return [outputs[level] for level in LEVELS]


def bifpn(features, width, depth, fusion="fast", name="bifpn"):
    """The EfficientDet neck: P6/P7 from C5, then ``depth`` BiFPN layers.

    Args:
        features: the backbone's ``[C3, C4, C5]`` (Keras tensors, strides 8, 16, 32).
        width: BiFPN channels (D0: 64).
        depth: BiFPN layers (D0: 3).
        fusion: ``"fast"`` (fast normalised fusion, the paper) or ``"sum"``.
        name: prefix of the layer names.

    Returns:
        ``[P3, P4, P5, P6, P7]``, ``[B, H / 2**l, W / 2**l, width]``.
    """
    pyramid = pyramid_inputs(features, width, name)
    for index in range(depth):
        pyramid = bifpn_layer(pyramid, width, fusion, name=f"{name}_{index}")
    return pyramid
