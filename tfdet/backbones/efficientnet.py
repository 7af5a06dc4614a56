"""EfficientNet B0-B6 as a detection backbone: features at strides 8, 16 and 32.

Tan & Le, "EfficientNet: Rethinking Model Scaling for Convolutional Neural
Networks", ICML 2019; the layout is the reference implementation's
(``efficientnet_builder.py`` of the TPU / AutoML repositories), which the
EfficientDet paper uses as its backbone.

Network:

* Stem: 3x3 stride-2 convolution (32 channels before width scaling, no bias),
  BatchNormalization, swish.
* Seven stages of MBConv blocks (table ``EFFICIENTNET_B0_STAGES``). A block:
  optional 1x1 expansion (``expand_ratio`` times the input channels, no bias,
  BN, swish); ``k x k`` depthwise convolution (stride of the stage's first
  block, ``same``, no bias, BN, swish); squeeze-excitation (global average,
  1x1 convolution to ``max(1, int(in_channels * 0.25))`` channels with bias and
  swish, 1x1 back to the expanded channels with bias and sigmoid, multiply);
  1x1 projection (no bias, BN, no activation). A block with stride 1 and equal
  input/output channels adds its input back, through drop-connect.
* Drop-connect (stochastic depth, :class:`DropConnect`): block ``i`` of ``n``
  (counted over all blocks after depth scaling, from 0) drops its residual
  branch with probability ``drop_connect_rate * i / n``, so the rate rises
  linearly from 0 to just under ``drop_connect_rate`` (0.2). Only in training;
  at inference it is the identity.
* The classification top (1x1 convolution to 1280, pooling, dropout, dense)
  is not built: detection uses the stage outputs only.

Scaling (``EFFICIENTNET_SCALING``): channels ``round_filters`` (multiples of
8, never below 90 % of the scaled value), repeats ``ceil(depth * repeats)``.

Features: the output of the last block at each stride. For B0: ``C3`` = stage
3 (40 channels, stride 8), ``C4`` = stage 5 (112, stride 16), ``C5`` = stage 7
(320, stride 32). Padding is ``same`` everywhere (TensorFlow's SAME, as the
reference), so a side of length ``n`` gives ``ceil(n / stride)``.

BatchNormalization uses momentum 0.99 and epsilon 1e-3, the reference values
(and Keras' defaults). Convolution kernels start from the reference's
``N(0, sqrt(2 / fan_out))``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import keras
from keras import layers, ops

__all__ = [
    "BlockSpec",
    "DropConnect",
    "EFFICIENTNET_B0_STAGES",
    "EFFICIENTNET_SCALING",
    "TINY_STAGES",
    "efficientnet_backbone",
    "round_filters",
    "round_repeats",
]


@dataclass(frozen=True)
class BlockSpec:
    """One stage of MBConv blocks, before width/depth scaling.

    Attributes:
        kernel: depthwise kernel size.
        repeats: blocks in the stage.
        input_filters, output_filters: channels into the first block and out of every block.
        expand_ratio: expansion of the 1x1 convolution (1: no expansion convolution).
        stride: stride of the stage's first block (the others use 1).
        se_ratio: squeeze channels as a fraction of the block's input channels.
    """

    kernel: int
    repeats: int
    input_filters: int
    output_filters: int
    expand_ratio: int
    stride: int
    se_ratio: float = 0.25


# The EfficientNet-B0 stages (reference ``_DEFAULT_BLOCKS_ARGS``).
EFFICIENTNET_B0_STAGES = (
    BlockSpec(3, 1, 32, 16, 1, 1),
    BlockSpec(3, 2, 16, 24, 6, 2),
    BlockSpec(5, 2, 24, 40, 6, 2),
    BlockSpec(3, 3, 40, 80, 6, 2),
    BlockSpec(5, 3, 80, 112, 6, 1),
    BlockSpec(5, 4, 112, 192, 6, 2),
    BlockSpec(3, 1, 192, 320, 6, 1),
)

# A small EfficientNet-like stack for CPU tests: the same block type (SE,
# swish, drop-connect on the one residual block), stem 16, strides to 32.
TINY_STAGES = (
    BlockSpec(3, 1, 16, 8, 1, 1),
    BlockSpec(3, 2, 8, 16, 4, 2),
    BlockSpec(3, 1, 16, 24, 4, 2),
    BlockSpec(3, 1, 24, 32, 4, 2),
    BlockSpec(3, 1, 32, 48, 4, 2),
)

# variant -> (width coefficient, depth coefficient): the published
# coefficients (the reference's ``efficientnet_params``); "tiny" is the test
# stack above, unscaled.
EFFICIENTNET_SCALING = {
    "b0": (1.0, 1.0),
    "b1": (1.0, 1.1),
    "b2": (1.1, 1.2),
    "b3": (1.2, 1.4),
    "b4": (1.4, 1.8),
    "b5": (1.6, 2.2),
    "b6": (1.8, 2.6),
    "tiny": (1.0, 1.0),
}

_DIVISOR = 8
_STEM_FILTERS = {"tiny": 16}


class EfficientNetError(ValueError):
    """An unknown variant or a weights file that does not fit."""


def round_filters(filters: int, width_coefficient: float, divisor: int = _DIVISOR) -> int:
    """Channels after width scaling: the nearest multiple of ``divisor``, at least 90 % of ``filters * width``."""
    scaled = filters * width_coefficient
    rounded = max(divisor, int(scaled + divisor / 2) // divisor * divisor)
    if rounded < 0.9 * scaled:
        rounded += divisor
    return int(rounded)


def round_repeats(repeats: int, depth_coefficient: float) -> int:
    """Blocks after depth scaling: ``ceil(depth * repeats)``."""
    return int(math.ceil(depth_coefficient * repeats))


@keras.saving.register_keras_serializable(package="tfdet")
class DropConnect(layers.Layer):
    """Drops a residual branch per example (stochastic depth), only in training.

    In training each example keeps its branch with probability ``1 - rate``
    and a kept branch is divided by ``1 - rate``, so the expectation is the
    input; at inference (``training=False``) the layer is the identity.
    Randomness comes from ``keras.random`` with a ``SeedGenerator``, so it
    compiles under XLA and runs under JAX.

    Args:
        rate: drop probability in ``[0, 1)``.
        seed: seed of the layer's generator.
        **kwargs: ``keras.layers.Layer`` arguments.

    Input shape:
        ``[B, ...]``; output the same.
    """

    def __init__(self, rate: float, seed: int | None = None, **kwargs):
        super().__init__(**kwargs)
        if not 0.0 <= float(rate) < 1.0:
            raise ValueError(f"DropConnect rate must be in [0, 1), got {rate}")
        self.rate = float(rate)
        self.seed = seed
        self.seed_generator = keras.random.SeedGenerator(seed)

    def call(self, inputs, training=False):
        if not training or self.rate == 0.0:
            return inputs
        keep = 1.0 - self.rate
        batch = ops.shape(inputs)[0]
        noise_shape = (batch,) + (1,) * (len(inputs.shape) - 1)
        # floor(keep + U[0, 1)) is 1 with probability `keep`, else 0.
        mask = ops.floor(keep + keras.random.uniform(noise_shape, seed=self.seed_generator, dtype=inputs.dtype))
        return inputs / keep * mask

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        config = super().get_config()
        config.update({"rate": self.rate, "seed": self.seed})
        return config


def _conv_initializer():
    # The reference: N(0, sqrt(2 / fan_out)), fan_out = k * k * output channels.
    return keras.initializers.VarianceScaling(2.0, mode="fan_out", distribution="untruncated_normal")


def _mbconv(x, spec: BlockSpec, input_filters, stride, drop_rate, name):
    """One MBConv block (module docstring); ``x`` has ``input_filters`` channels."""
    inputs = x
    expanded = input_filters * spec.expand_ratio
    if spec.expand_ratio != 1:
        x = layers.Conv2D(expanded, 1, padding="same", use_bias=False, kernel_initializer=_conv_initializer(),
                          name=f"{name}_expand_conv")(x)
        x = layers.BatchNormalization(name=f"{name}_expand_bn")(x)
        x = layers.Activation("swish", name=f"{name}_expand_swish")(x)
    x = layers.DepthwiseConv2D(spec.kernel, strides=stride, padding="same", use_bias=False,
                               depthwise_initializer=_conv_initializer(), name=f"{name}_dwconv")(x)
    x = layers.BatchNormalization(name=f"{name}_bn")(x)
    x = layers.Activation("swish", name=f"{name}_swish")(x)
    if spec.se_ratio:
        squeezed = max(1, int(input_filters * spec.se_ratio))
        se = layers.GlobalAveragePooling2D(keepdims=True, name=f"{name}_se_squeeze")(x)
        se = layers.Conv2D(squeezed, 1, activation="swish", kernel_initializer=_conv_initializer(),
                           name=f"{name}_se_reduce")(se)
        se = layers.Conv2D(expanded, 1, activation="sigmoid", kernel_initializer=_conv_initializer(),
                           name=f"{name}_se_expand")(se)
        x = layers.Multiply(name=f"{name}_se_excite")([x, se])
    output_filters = spec.output_filters
    x = layers.Conv2D(output_filters, 1, padding="same", use_bias=False, kernel_initializer=_conv_initializer(),
                      name=f"{name}_project_conv")(x)
    x = layers.BatchNormalization(name=f"{name}_project_bn")(x)
    if stride == 1 and input_filters == output_filters:
        if drop_rate > 0.0:
            x = DropConnect(drop_rate, name=f"{name}_drop")(x)
        x = layers.Add(name=f"{name}_add")([x, inputs])
    return x


def efficientnet_backbone(
    variant: str = "b0",
    input_shape=(None, None, 3),
    weights: str | None = None,
    drop_connect_rate: float = 0.2,
    name: str | None = None,
) -> keras.Model:
    """EfficientNet without its classification top, returning ``[C3, C4, C5]``.

    Args:
        variant: ``"b0"`` .. ``"b6"``, or ``"tiny"`` (a small test stack,
            ``TINY_STAGES``: C3/C4/C5 with 24/32/48 channels).
        input_shape: ``(H, W, 3)``; images already normalised by the caller
            (EfficientDet: ImageNet mean and standard deviation).
        weights: ``None`` (random initialisation) or the path of a local Keras
            weights file (``*.weights.h5``) saved from a backbone built by this
            function with the same variant. Nothing is downloaded.
        drop_connect_rate: the drop-connect rate the last block approaches
            (0.2 in the reference); 0 disables drop-connect.
        name: the model's name (default ``efficientnet_<variant>``).

    Returns:
        A ``keras.Model`` from ``[B, H, W, 3]`` to ``[C3, C4, C5]``:
        ``[B, ceil(H/8), ceil(W/8), c3]``, ``[B, ceil(H/16), ceil(W/16), c4]``,
        ``[B, ceil(H/32), ceil(W/32), c5]`` (B0: 40, 112, 320 channels).

    Raises:
        EfficientNetError: an unknown variant, or a weights file that cannot be
            loaded into this variant (the message names the file).
    """
    if variant not in EFFICIENTNET_SCALING:
        raise EfficientNetError(f"unknown EfficientNet variant {variant!r}; known: {sorted(EFFICIENTNET_SCALING)}")
    width, depth = EFFICIENTNET_SCALING[variant]
    stages = TINY_STAGES if variant == "tiny" else EFFICIENTNET_B0_STAGES
    stem_filters = _STEM_FILTERS.get(variant, 32)
    images = keras.Input(shape=input_shape, name="images")
    x = layers.Conv2D(round_filters(stem_filters, width), 3, strides=2, padding="same", use_bias=False,
                      kernel_initializer=_conv_initializer(), name="stem_conv")(images)
    x = layers.BatchNormalization(name="stem_bn")(x)
    x = layers.Activation("swish", name="stem_swish")(x)

    total_blocks = sum(round_repeats(s.repeats, depth) for s in stages)
    block_index = 0
    stride = 2
    features = {}
    for stage_number, spec in enumerate(stages, start=1):
        input_filters = round_filters(spec.input_filters, width)
        output_filters = round_filters(spec.output_filters, width)
        scaled = BlockSpec(spec.kernel, spec.repeats, input_filters, output_filters, spec.expand_ratio, spec.stride,
                           spec.se_ratio)
        for repeat in range(round_repeats(spec.repeats, depth)):
            block_stride = spec.stride if repeat == 0 else 1
            drop_rate = drop_connect_rate * block_index / total_blocks
            block_name = f"block{stage_number}{_letters(repeat)}"
            x = _mbconv(x, scaled, input_filters if repeat == 0 else output_filters, block_stride, drop_rate,
                        block_name)
            stride *= block_stride
            block_index += 1
        # The last stage output at each stride wins (C4 is stage 5, not stage 4).
        features[stride] = x
    model = keras.Model(images, [features[8], features[16], features[32]], name=name or f"efficientnet_{variant}")
    if weights is not None:
        try:
            model.load_weights(weights)
        except (OSError, ValueError) as error:
            raise EfficientNetError(f"{weights}: cannot load into EfficientNet-{variant}: {error}") from error
    return model


def _letters(index: int) -> str:
    """0 -> 'a', 25 -> 'z', 26 -> 'ba': block suffixes within a stage."""
    letters = ""
    while True:
        letters = chr(ord("a") + index % 26) + letters
        index //= 26
        if index == 0:
            return letters
