"""The feature pyramid of RetinaNet: FPN on C3..C5 plus P6 and P7.

Lin et al., "Feature Pyramid Networks for Object Detection" (CVPR 2017,
section 3) with the extra levels of Lin et al., "Focal Loss for Dense Object
Detection" (ICCV 2017, section 4, "RetinaNet Detector" and footnote 2):

* lateral ``fpn_lateral{l}``: 1x1 convolution of ``C_l`` to ``channels``
  (256), for ``l = 3, 4, 5``;
* top-down: ``M5 = lateral5``, ``M_l = lateral_l + upsample2(M_{l+1})``
  (nearest neighbour, ``fpn_upsample{l}`` / ``fpn_merge{l}``);
* output ``fpn_output{l}``: 3x3 convolution of ``M_l``, giving ``P3..P5``;
* ``P6`` (``fpn_p6``): 3x3 stride-2 convolution of **C5** (not P5: the
  paper's choice, "computed via a 3x3 stride-2 conv on C5");
* ``P7`` (``fpn_p7``): ReLU of ``P6`` (``fpn_p6_relu``), then a 3x3 stride-2
  convolution.

No activation after the pyramid outputs (FPN adds none); convolutions have
biases and Keras' default initialisation. Strided convolutions use ``same``
padding, so a map of ``n`` cells becomes ``ceil(n / 2)``; the nearest
upsampling needs the finer map to be exactly twice the coarser, i.e. image
sides that are multiples of 32 for C3..C5 (the RetinaNet builder asks for
multiples of 128, so that P6 and P7 tile the image exactly too).
"""

from __future__ import annotations

from keras import layers

__all__ = ["fpn"]


def fpn(features, channels=256, name="fpn"):
    """Builds the RetinaNet pyramid on ``[C3, C4, C5]`` (functional, returns tensors).

    Args:
        features: ``[C3, C4, C5]`` Keras tensors at strides 8, 16, 32.
        channels: width of every pyramid level.
        name: prefix of the layer names.

    Returns:
        ``[P3, P4, P5, P6, P7]``, each ``[B, H_l, W_l, channels]`` at strides
        8..128.
    """
    if len(features) != 3:
        raise ValueError(f"fpn expects [C3, C4, C5], got {len(features)} feature maps")
    c3, c4, c5 = features
    laterals = {
        level: layers.Conv2D(channels, 1, name=f"{name}_lateral{level}")(c)
        for level, c in zip((3, 4, 5), (c3, c4, c5))
    }
    merged = {5: laterals[5]}
    for level in (4, 3):
        upsampled = layers.UpSampling2D(2, interpolation="nearest", name=f"{name}_upsample{level}")(merged[level + 1])
        merged[level] = layers.Add(name=f"{name}_merge{level}")([laterals[level], upsampled])
    outputs = [
        layers.Conv2D(channels, 3, padding="same", name=f"{name}_output{level}")(merged[level]) for level in (3, 4, 5)
    ]
    p6 = layers.Conv2D(channels, 3, strides=2, padding="same", name=f"{name}_p6")(c5)
    p7 = layers.Conv2D(channels, 3, strides=2, padding="same", name=f"{name}_p7")(
        layers.Activation("relu", name=f"{name}_p6_relu")(p6)
    )
    return outputs + [p6, p7]
