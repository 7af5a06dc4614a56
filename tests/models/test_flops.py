"""count_flops / count_multiply_adds: layer arithmetic written out by hand, and the ResNet paper's figures."""

from __future__ import annotations

import keras
import pytest
from keras import layers

from tfdet.backbones.resnet import resnet_backbone
from tfdet.models.flops import count_flops, count_multiply_adds


def test_every_counted_layer_kind_by_hand():
    images = keras.Input((16, 16, 3))
    x = layers.Conv2D(8, 3, strides=2, padding="same")(images)  # 8x8x8
    x = layers.BatchNormalization()(x)
    x = layers.DepthwiseConv2D(3, padding="same", depth_multiplier=2)(x)  # 8x8x16
    x = layers.SeparableConv2D(4, 3, padding="same")(x)  # 8x8x4
    x = layers.Conv2D(8, 1, groups=2)(x)  # grouped 1x1: 2 of 4 in per group
    shared = layers.Conv2D(8, 3, padding="same")
    a = shared(x)
    b = shared(layers.MaxPooling2D(2)(x))  # the shared layer counts once per call, at each call's size
    inner_in = keras.Input((8, 8, 8))
    inner = keras.Model(inner_in, layers.Conv2D(2, 1)(inner_in))  # a nested model, called once
    c = inner(a)
    up = layers.Conv2DTranspose(4, 2, strides=2)(b)  # 4x4x8 -> 8x8x4
    out = layers.Dense(5)(layers.Flatten()(layers.Concatenate()([c, up])))  # 8*8*6 = 384 inputs
    model = keras.Model(images, out)
    expected = (
        3 * 3 * 3 * 8 * 8 * 8  # first conv, counted at its 8x8 output
        + 3 * 3 * 8 * 2 * 8 * 8  # depthwise, multiplier 2
        + 3 * 3 * 16 * 8 * 8 + 16 * 4 * 8 * 8  # separable: depthwise + pointwise
        + 1 * 1 * (4 // 2) * 8 * 8 * 8  # grouped
        + 3 * 3 * 8 * 8 * 8 * 8 + 3 * 3 * 8 * 8 * 4 * 4  # the shared conv at 8x8 and at 4x4
        + 8 * 2 * 8 * 8  # nested model
        + 2 * 2 * 8 * 4 * 4 * 4  # transposed conv at its 4x4 input
        + 384 * 5  # dense
    )
    assert count_multiply_adds(model) == expected
    assert count_flops(model) == 2 * expected


@pytest.mark.parametrize("depth, paper", [(50, 3.8e9), pytest.param(101, 7.6e9, marks=pytest.mark.slow)])
def test_resnet_matches_the_paper_table(depth, paper):
    """He et al. 2016, Table 1: 3.8 and 7.6 x 10^9 FLOPs (multiply-adds) at 224x224, with the 1000-way fc."""
    fc = 2048 * 1000
    total = count_multiply_adds(resnet_backbone(depth, (224, 224, 3))) + fc
    assert abs(total - paper) / paper < 0.02, total


def test_dynamic_shapes_are_refused():
    images = keras.Input((None, None, 3))
    model = keras.Model(images, layers.Conv2D(2, 3)(images))
    with pytest.raises(ValueError, match="static"):
        count_flops(model)
