"""EfficientDet D0-D7: EfficientNet + BiFPN + shared separable heads, trained with the focal loss.

Tan, Pang & Le, "EfficientDet: Scalable and Efficient Object Detection",
CVPR 2020, with the details of the official implementation (google/automl,
``efficientdet/hparams_config.py``).

Network (:func:`efficientdet_network`): ``tfdet.backbones.efficientnet``
(C3, C4, C5) -> ``tfdet.necks.bifpn`` (P3..P7) -> ``tfdet.heads.efficientdet``
(class and box networks shared across levels, 9 anchors per location).

Compound scaling (``EFFICIENTDET_VARIANTS``, Table 1 of the paper):

=====  ========  =====  ===========  ===========  ==========  ============
model  backbone  input  BiFPN width  BiFPN depth  head depth  anchor scale
=====  ========  =====  ===========  ===========  ==========  ============
D0     B0        512    64           3            3           4
D1     B1        640    88           4            3           4
D2     B2        768    112          5            3           4
D3     B3        896    160          6            4           4
D4     B4        1024   224          7            4           4
D5     B5        1280   288          7            4           4
D6     B6        1280   384          8            5           4
D7     B6        1536   384          8            5           5
=====  ========  =====  ===========  ===========  ==========  ============

D7's anchor scale 5.0 is the official configuration's (``efficientdet-d7``:
``anchor_scale=5.0``; D7x, not built here, goes back to 4 with a B7 and P8).
The official configuration also switches D6 and D7 to unweighted ``sum``
fusion; the paper describes fast normalised fusion for every model, which is
the default here (``fusion="sum"`` gives the official D6/D7 choice; it drops the 19
scalar fusion weights of each BiFPN layer, nothing else changes).

Detector (``tfdet.models.focal_detector.FocalDetector``), the official
settings: levels 3-7, scales ``2**(0, 1/3, 2/3)``, aspect ratios
``(1, 1), (1.4, 0.7), (0.7, 1.4)`` as width/height multipliers, anchor scale
4; images normalised with the ImageNet mean and standard deviation; each
anchor matched at IoU >= 0.5 (positive) / < 0.5 (negative), each ground truth
also keeping its best anchor; focal loss alpha 0.25, gamma 1.5; Huber box
loss with delta 0.1 on the R-CNN deltas (weights 1). The reference divides the
summed Huber loss by ``4 N`` and weighs it by 50; ``FocalDetector`` divides
the coordinate sum by ``N``, so the same loss is ``box_loss_weight = 50 / 4 =
12.5`` here. Inference: Gaussian soft-NMS with sigma 0.5, 100 detections.
Images are letterboxed (``resize_mode = "letterbox"``).

Builders (``tfdet.build_model("efficientdet_d0", K, **overrides)``):

* ``image_size``: int or ``(h, w)``, each a multiple of 128 (the pyramid
  halves exactly down to P7); default the variant's input size.
* ``backbone_weights``: ``None`` or a local ``*.weights.h5`` of
  ``tfdet.backbones.efficientnet.efficientnet_backbone`` (the variant's
  EfficientNet at the same input size).
* ``network``: ``"efficientdet"`` (default) or ``"tiny"``: a small
  EfficientNet-like backbone (``TINY_STAGES``), one BiFPN layer of width 16
  and head depth 1, for CPU tests; everything else is the same detector.
* ``fusion`` (``"fast"``), ``drop_connect_rate`` (0.2).
* Detector settings: ``max_detections`` (100), ``score_threshold`` (0.05),
  ``iou_threshold`` (0.5, used by hard NMS), ``soft_nms_sigma`` (0.5),
  ``focal_alpha``, ``focal_gamma``, ``box_loss_weight``, ``positive_iou``,
  ``negative_iou``.

Measured with 90 classes (``benchmarks/model_stats.py``; tests check the
parameters). Parameters are trainable weights, i.e. without BatchNormalization
moving statistics: that convention reproduces the published counts (within
0.5 %; with the moving statistics every model is 0.5-1.5 % above). "MAdds" are
multiply-adds of one image at the native size (``tfdet.models.flops``), which
is what the paper and the official README call FLOPs; true FLOPs are twice that.

=====  ===========  =========  ==========  =========
model  parameters   published  MAdds (B)   published
=====  ===========  =========  ==========  =========
D0     3,880,067    3.9M       2.49        2.5
D1     6,625,898    6.6M       6.00        6.1
D2     8,097,039    8.1M       10.83       11
D3     12,032,296   12.0M      24.57       25
D4     20,723,675   20.7M      54.58       55
D5     33,653,315   33.7M      134.13      135
D6     51,871,934   51.9M      224.12      226
D7     51,871,934   51.9M      322.73      325
=====  ===========  =========  ==========  =========
"""

from __future__ import annotations

from dataclasses import dataclass

import keras
import numpy as np

from tfdet.backbones.efficientnet import efficientnet_backbone
from tfdet.heads.efficientdet import efficientdet_heads
from tfdet.models.focal_detector import EFFICIENTDET_ASPECT_RATIOS, FocalDetector
from tfdet.necks.bifpn import bifpn
from tfdet.zoo import register

__all__ = [
    "EFFICIENTDET_VARIANTS",
    "EfficientDetError",
    "EfficientDetVariant",
    "PUBLISHED_FLOPS",
    "PUBLISHED_PARAMETERS",
    "TINY_VARIANT",
    "efficientdet_network",
]


@dataclass(frozen=True)
class EfficientDetVariant:
    """One row of the compound-scaling table."""

    backbone: str
    image_size: int
    width: int
    bifpn_depth: int
    head_depth: int
    anchor_scale: float = 4.0


EFFICIENTDET_VARIANTS = {
    "efficientdet_d0": EfficientDetVariant("b0", 512, 64, 3, 3),
    "efficientdet_d1": EfficientDetVariant("b1", 640, 88, 4, 3),
    "efficientdet_d2": EfficientDetVariant("b2", 768, 112, 5, 3),
    "efficientdet_d3": EfficientDetVariant("b3", 896, 160, 6, 4),
    "efficientdet_d4": EfficientDetVariant("b4", 1024, 224, 7, 4),
    "efficientdet_d5": EfficientDetVariant("b5", 1280, 288, 7, 4),
    "efficientdet_d6": EfficientDetVariant("b6", 1280, 384, 8, 5),
    "efficientdet_d7": EfficientDetVariant("b6", 1536, 384, 8, 5, anchor_scale=5.0),
}
# The test network: tiny backbone, one BiFPN layer of width 16, head depth 1.
TINY_VARIANT = EfficientDetVariant("tiny", 128, 16, 1, 1)

# Published with 90 classes (paper Table 2 / the official README): millions of
# parameters and billions of FLOPs (multiply-adds counted as FLOPs).
PUBLISHED_PARAMETERS = {
    "efficientdet_d0": 3.9e6, "efficientdet_d1": 6.6e6, "efficientdet_d2": 8.1e6, "efficientdet_d3": 12.0e6,
    "efficientdet_d4": 20.7e6, "efficientdet_d5": 33.7e6, "efficientdet_d6": 51.9e6, "efficientdet_d7": 51.9e6,
}
PUBLISHED_FLOPS = {
    "efficientdet_d0": 2.5e9, "efficientdet_d1": 6.1e9, "efficientdet_d2": 11e9, "efficientdet_d3": 25e9,
    "efficientdet_d4": 55e9, "efficientdet_d5": 135e9, "efficientdet_d6": 226e9, "efficientdet_d7": 325e9,
}

NUM_SCALES = 3
LEVELS = (3, 7)
_SIZE_MULTIPLE = 2 ** LEVELS[1]
_DETECTOR_OPTIONS = (
    "max_detections", "score_threshold", "iou_threshold", "soft_nms_sigma", "focal_alpha", "focal_gamma",
    "box_loss_weight", "positive_iou", "negative_iou",
)


class EfficientDetError(ValueError):
    """Invalid EfficientDet overrides."""


def _image_size(value, name):
    sizes = (value, value) if isinstance(value, (int, np.integer)) else tuple(value)
    if len(sizes) != 2 or any(int(s) != s or s <= 0 or s % _SIZE_MULTIPLE for s in sizes):
        raise EfficientDetError(
            f"{name}: image_size must be a positive multiple of {_SIZE_MULTIPLE} or a pair of them, got {value!r}"
        )
    return int(sizes[0]), int(sizes[1])


def efficientdet_network(
    num_classes: int,
    variant: EfficientDetVariant,
    image_size=None,
    backbone_weights: str | None = None,
    fusion: str = "fast",
    drop_connect_rate: float = 0.2,
    name: str = "efficientdet",
) -> keras.Model:
    """The EfficientDet network for normalised images (no loss, no decoding).

    Args:
        num_classes: foreground classes ``K``.
        variant: a row of ``EFFICIENTDET_VARIANTS`` (or ``TINY_VARIANT``).
        image_size: ``(h, w)`` multiples of 128; default ``variant.image_size``.
        backbone_weights: ``None`` or a local EfficientNet weights file.
        fusion: BiFPN fusion, ``"fast"`` or ``"sum"``.
        drop_connect_rate: the backbone's final drop-connect rate.
        name: the model's name.

    Returns:
        A ``keras.Model`` from ``[B, H, W, 3]`` (ImageNet-normalised) to
        ``{"class_logits": [B, A, K], "box_deltas": [B, A, 4]}`` in the order of
        ``tfdet.core.anchors`` (levels 3-7, y, x, scale, ratio); ``A = 9 *
        sum_l (H / 2**l) (W / 2**l)`` (49104 for 512x512).
    """
    height, width = _image_size(variant.image_size if image_size is None else image_size, name)
    backbone = efficientnet_backbone(variant.backbone, (height, width, 3), weights=backbone_weights,
                                     drop_connect_rate=drop_connect_rate)
    # Continue the backbone's own graph so its layers are layers of this model
    # (one flat model, names like block3b_add), not a nested sub-model.
    pyramid = bifpn(backbone.outputs, variant.width, variant.bifpn_depth, fusion=fusion)
    outputs = efficientdet_heads(pyramid, num_classes, NUM_SCALES * len(EFFICIENTDET_ASPECT_RATIOS),
                                 variant.width, variant.head_depth)
    return keras.Model(backbone.input, outputs, name=name)


def _build(model_name, num_classes, overrides):
    options = dict(overrides)
    network_kind = options.pop("network", "efficientdet")
    if network_kind == "efficientdet":
        variant = EFFICIENTDET_VARIANTS[model_name]
    elif network_kind == "tiny":
        variant = TINY_VARIANT
    else:
        raise EfficientDetError(f"{model_name}: network must be 'efficientdet' or 'tiny', got {network_kind!r}")
    image_size = _image_size(options.pop("image_size", variant.image_size), model_name)
    backbone_weights = options.pop("backbone_weights", None)
    if network_kind == "tiny" and backbone_weights is not None:
        raise EfficientDetError(f"{model_name}: the tiny test network has no backbone weights")
    fusion = options.pop("fusion", "fast")
    drop_connect_rate = float(options.pop("drop_connect_rate", 0.2))
    detector_options = {
        "focal_alpha": 0.25,
        "focal_gamma": 1.5,
        "box_loss_weight": 50.0 / 4.0,  # the reference's 50 on the coordinate mean
        "positive_iou": 0.5,
        "negative_iou": 0.5,
        "soft_nms_sigma": 0.5,
    }
    detector_options.update({key: options.pop(key) for key in _DETECTOR_OPTIONS if key in options})
    if options:
        raise EfficientDetError(f"unknown overrides for {model_name}: {sorted(options)}")
    network = efficientdet_network(num_classes, variant, image_size, backbone_weights, fusion, drop_connect_rate,
                                   name=model_name)
    detector = FocalDetector(
        network,
        num_classes,
        model_name,
        overrides=overrides,
        min_level=LEVELS[0],
        max_level=LEVELS[1],
        num_scales=NUM_SCALES,
        aspect_ratios=EFFICIENTDET_ASPECT_RATIOS,
        anchor_scale=variant.anchor_scale,
        box_loss="huber",
        box_loss_beta=0.1,
        allow_low_quality_matches=True,
        **detector_options,
    )
    # The network is built; marking the detector built (instead of an eager
    # forward pass) keeps D7 at 1536x1536 cheap to construct on a CPU.
    detector.build((None, image_size[0], image_size[1], 3))
    return detector


def _builder(model_name):
    def build(num_classes, **overrides):
        return _build(model_name, num_classes, overrides)

    variant = EFFICIENTDET_VARIANTS[model_name]
    build.__name__ = model_name
    build.__doc__ = (
        f"{model_name.replace('_', '-').title()}: EfficientNet-{variant.backbone.upper()}, "
        f"{variant.image_size}x{variant.image_size}, BiFPN {variant.width} x {variant.bifpn_depth}, head depth "
        f"{variant.head_depth} (overrides: module docstring).\n\n"
        "Args:\n    num_classes: foreground classes ``K``.\n    **overrides: see the module docstring.\n\n"
        "Returns:\n    A built ``FocalDetector``.\n"
    )
    return register(model_name)(build)


efficientdet_d0 = _builder("efficientdet_d0")
efficientdet_d1 = _builder("efficientdet_d1")
efficientdet_d2 = _builder("efficientdet_d2")
efficientdet_d3 = _builder("efficientdet_d3")
efficientdet_d4 = _builder("efficientdet_d4")
efficientdet_d5 = _builder("efficientdet_d5")
efficientdet_d6 = _builder("efficientdet_d6")
efficientdet_d7 = _builder("efficientdet_d7")
