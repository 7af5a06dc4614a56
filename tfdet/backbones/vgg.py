"""VGG16 as the SSD base network, with conv6/conv7 and conv4_3 L2 normalisation.

The layout follows Liu et al., "SSD: Single Shot MultiBox Detector" (ECCV
2016), section 3 and the authors' Caffe reference network:

* conv1_1 .. conv5_3: 3x3 convolutions, ``same`` padding, bias, ReLU, in
  five blocks of 2, 2, 3, 3, 3 layers with 64, 128, 256, 512, 512 channels.
* pool1, pool2, pool4: 2x2 max pooling, stride 2, no padding (Caffe floors).
* pool3: 2x2 max pooling, stride 2, in Caffe's *ceil* mode, so the 75x75
  map of a 300x300 image becomes 38x38 (not 37x37). Here it is a
  ``same``-padded pool: Keras pads only at the bottom/right edge, exactly the
  one extra row/column that Caffe's ceil mode adds, and padded cells never
  win the max. At 512x512 (an even 128x128 map) nothing is padded.
* pool5: 3x3 max pooling, stride 1, ``same`` (Caffe: pad 1), so the size
  stays (19x19 at 300, 32x32 at 512).
* conv6: 3x3 with dilation 6 (the "atrous" fc6), 1024 channels, ReLU.
* conv7: 1x1, 1024 channels, ReLU (the reduced fc7).
* conv4_3 is L2-normalised per location with a learned per-channel scale
  initialised to 20 (``L2Normalization``, from ParseNet, Liu et al. 2015),
  because its activations are much larger than those of later maps.

The network takes images ``[B, H, W, 3]`` and returns a two-output
``keras.Model``: ``[normalised conv4_3 [B, H/8, W/8, 512],
conv7 [B, H/16, W/16, 1024]]`` (for 300x300: 38x38 and 19x19).
"""

from __future__ import annotations

import keras
from keras import layers, ops

__all__ = ["L2Normalization", "scaled_channels", "vgg16_ssd_backbone"]


@keras.saving.register_keras_serializable(package="tfdet")
class L2Normalization(layers.Layer):
    """Channel-wise L2 normalisation with a learned per-channel scale.

    ``y[..., c] = gamma[c] * x[..., c] / sqrt(sum_c' x[..., c']**2 + epsilon)``
    at every spatial location (ParseNet; SSD applies it to conv4_3). The sum
    runs over the last (channel) axis only; ``gamma`` has one entry per
    channel and starts at ``scale_init`` (20 in SSD).

    Args:
        scale_init: initial value of every ``gamma[c]``.
        epsilon: added under the square root so an all-zero location (common
            after ReLU) maps to zero instead of NaN.
        **kwargs: ``keras.layers.Layer`` arguments (``name``, ``dtype``, ...).

    Input shape:
        ``[..., C]``.

    Output shape:
        ``[..., C]``, the same as the input.
    """

    def __init__(self, scale_init=20.0, epsilon=1e-10, **kwargs):
        super().__init__(**kwargs)
        self.scale_init = float(scale_init)
        self.epsilon = float(epsilon)

    def build(self, input_shape):
        channels = input_shape[-1]
        if channels is None:
            raise ValueError("L2Normalization needs a known channel dimension")
        self.gamma = self.add_weight(
            name="gamma",
            shape=(channels,),
            initializer=keras.initializers.Constant(self.scale_init),
            trainable=True,
        )

    def call(self, inputs):
        sum_sq = ops.sum(ops.square(inputs), axis=-1, keepdims=True)
        return inputs * ops.rsqrt(sum_sq + self.epsilon) * self.gamma

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        config = super().get_config()
        config.update({"scale_init": self.scale_init, "epsilon": self.epsilon})
        return config


# (block, layers per block, channels) of VGG16's convolutional part.
_VGG16_BLOCKS = ((1, 2, 64), (2, 2, 128), (3, 3, 256), (4, 3, 512), (5, 3, 512))


def scaled_channels(filters, width_multiplier):
    """``filters`` times the width multiplier, at least 8 (1.0: unchanged)."""
    if width_multiplier == 1.0:
        return filters
    return max(8, int(round(filters * width_multiplier)))


def _conv(x, filters, kernel, name, **kwargs):
    return layers.Conv2D(filters, kernel, padding="same", activation="relu", name=name, **kwargs)(x)


def vgg16_ssd_backbone(input_shape=(300, 300, 3), weights=None, l2_scale_init=20.0, name="vgg16_ssd",
                       width_multiplier=1.0):
    """VGG16 up to conv7 as used by SSD300/SSD512 (see the module docstring).

    Args:
        input_shape: ``(H, W, 3)``; ``None`` sizes are allowed (the network is
            fully convolutional).
        weights: ``None`` (random initialisation, Keras defaults: Glorot
            uniform kernels, zero biases, ``gamma`` = ``l2_scale_init``) or
            the path of a local Keras weights file (``*.weights.h5``) saved
            from a model built by this function with the same arguments;
            loaded with ``model.load_weights``. Nothing is downloaded.
        l2_scale_init: initial per-channel scale of the conv4_3
            normalisation.
        name: the model's name.
        width_multiplier: every convolution's channels scaled
            (``scaled_channels``): the same topology, cheaper; 1.0 is VGG16.

    Returns:
        A ``keras.Model`` from images ``[B, H, W, 3]`` (float, preprocessing
        is the caller's) to ``[conv4_3_norm, conv7]``: ``[B, H4, W4, 512]``
        and ``[B, H5, W5, 1024]`` with, per side, ``H1 = floor(H / 2)``,
        ``H2 = floor(H1 / 2)``, ``H4 = ceil(H2 / 2)``, ``H5 = floor(H4 / 2)``
        (300 -> 38, 19; 512 -> 64, 32).
    """
    images = keras.Input(shape=input_shape, name="images")
    x = images
    conv4_3 = None
    for block, count, filters in _VGG16_BLOCKS:
        for index in range(1, count + 1):
            x = _conv(x, scaled_channels(filters, width_multiplier), 3, f"conv{block}_{index}")
        if block == 4:
            conv4_3 = x
        if block == 5:
            # pool5: 3x3 stride 1 keeps the size (Caffe: kernel 3, stride 1, pad 1).
            x = layers.MaxPooling2D(3, strides=1, padding="same", name="pool5")(x)
        elif block == 3:
            # Caffe's ceil mode (75 -> 38 at 300x300): "same" pads the bottom/right only.
            x = layers.MaxPooling2D(2, strides=2, padding="same", name="pool3")(x)
        else:
            x = layers.MaxPooling2D(2, strides=2, padding="valid", name=f"pool{block}")(x)
    x = _conv(x, scaled_channels(1024, width_multiplier), 3, "conv6", dilation_rate=6)
    conv7 = _conv(x, scaled_channels(1024, width_multiplier), 1, "conv7")
    conv4_3_norm = L2Normalization(scale_init=l2_scale_init, name="conv4_3_norm")(conv4_3)
    model = keras.Model(images, [conv4_3_norm, conv7], name=name)
    if weights is not None:
        model.load_weights(weights)
    return model
