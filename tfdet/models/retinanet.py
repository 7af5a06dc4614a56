"""RetinaNet (Lin et al., "Focal Loss for Dense Object Detection", ICCV 2017): ResNet + FPN + focal loss.

The network is ``tfdet.backbones.resnet`` (v1, C3..C5) ->
``tfdet.necks.fpn`` (P3..P7, 256 channels, P6 from C5) ->
``tfdet.heads.retinanet`` (class and box subnets of four 3x3x256
convolutions, shared across levels). Anchors, assignment, losses and
post-processing are :class:`tfdet.models.focal_detector.FocalDetector`'s.

Paper settings used by the builders (section 4 and 5.1 of the paper):

* anchors on P3..P7, 3 octave scales ``2**(0, 1/3, 2/3)`` x 3 aspect ratios
  ``1:2, 1:1, 2:1`` (``height / width`` 0.5, 1, 2), base size 4 strides
  (32 pixels on P3 to 512 on P7): 9 anchors per location;
* IoU >= 0.5 positive, < 0.4 background, in between ignored;
* focal loss ``alpha = 0.25``, ``gamma = 2``; both losses divided by the
  number of positive anchors;
* box loss: smooth L1 with ``beta = 0.1``, the value of Detectron2's
  RetinaNet (``MODEL.RETINANET.SMOOTH_L1_LOSS_BETA``); Detectron used 0.11 and
  TF Model Garden Huber with delta 0.1 (see ``focal_detector``);
* inference: scores above 0.05, per-class NMS at 0.5, 100 detections.

Images are letterboxed into a square input of 640 pixels by default (any
multiple of 128, so P7 tiles the image exactly).

Preprocessing: RGB minus the ImageNet mean, divided by its standard
deviation (torchvision / Detectron2 statistics). A ``keras.applications``
ResNet ``.h5`` file as ``backbone_weights`` switches to what those weights
were trained with: Caffe means ``(123.68, 116.779, 103.939)`` (RGB order),
no division, and ``conv1_conv``'s kernel channel-reversed so the BGR-trained
filters see RGB images correctly. The detector then records
``input_normalization="caffe"`` in its overrides, so a saved ``.keras`` file
rebuilds with the same preprocessing without the weights file (the saved
kernels are already reversed).

Builders (``tfdet.build_model("retinanet_resnet50_fpn", K, **overrides)``):

* ``image_size``: int or ``(h, w)``, multiples of ``2**max_level`` (128 for
  the ResNet network, 32 for the tiny one); default 640.
* ``backbone_weights``: None, a ``*.weights.h5`` of the backbone, or a
  ``keras.applications`` ResNet ``.h5`` (see ``tfdet.backbones.resnet``).
* ``freeze_batchnorm`` (True): the backbone's batch norms as fixed affine maps.
* ``depth`` (4) and ``head_width`` (256): convolutions and channels of each
  subnet before its prediction layer.
* ``network``: ``"resnet"`` (default) or ``"tiny"``, a small test network
  for CPU tests (``tiny_retinanet_network``: three stride-2 3x3 ReLU
  convolutions to stride 8, two more to strides 16 and 32, i.e. P3..P5 of 64
  channels, and the same heads with ``depth`` 1 and ``head_width`` 32 unless
  given); it has levels 3..5 only.
* detector settings passed to :class:`FocalDetector`: ``max_detections``,
  ``score_threshold``, ``iou_threshold``, ``soft_nms_sigma``,
  ``focal_alpha``, ``focal_gamma``, ``box_loss``, ``box_loss_beta``,
  ``box_loss_weight``, ``positive_iou``, ``negative_iou``,
  ``allow_low_quality_matches``, ``anchor_scale``.

An unknown override, a bad image size or a bad network name is a
``ValueError`` naming it.
"""

from __future__ import annotations

import os

import keras
import numpy as np
from keras import layers

from tfdet.backbones.resnet import resnet_backbone
from tfdet.heads.retinanet import retinanet_head
from tfdet.models.focal_detector import RETINANET_ASPECT_RATIOS, FocalDetector
from tfdet.necks.fpn import fpn
from tfdet.zoo import register

__all__ = ["CAFFE_RGB_MEAN", "retinanet_network", "retinanet_resnet101_fpn", "retinanet_resnet50_fpn",
           "tiny_retinanet_network"]

DEFAULT_IMAGE_SIZE = 640
NUM_SCALES = 3
# Caffe ImageNet means of the keras.applications ResNets, in RGB order.
CAFFE_RGB_MEAN = (123.68, 116.779, 103.939)

_DETECTOR_OPTIONS = (
    "max_detections",
    "score_threshold",
    "iou_threshold",
    "soft_nms_sigma",
    "focal_alpha",
    "focal_gamma",
    "box_loss",
    "box_loss_beta",
    "box_loss_weight",
    "positive_iou",
    "negative_iou",
    "allow_low_quality_matches",
    "anchor_scale",
)


def retinanet_network(num_classes, resnet_depth=50, image_size=(640, 640), backbone_weights=None,
                      freeze_batchnorm=True, head_depth=4, head_width=256, num_anchors=9, bgr_weights=False,
                      name=None):
    """ResNet-FPN RetinaNet network: normalised images -> per-anchor logits and deltas.

    Args:
        num_classes: ``K``.
        resnet_depth: 50 or 101.
        image_size: ``(h, w)``.
        backbone_weights, freeze_batchnorm, bgr_weights: see
            ``tfdet.backbones.resnet.resnet_backbone``.
        head_depth, head_width: subnet convolutions and channels.
        num_anchors: anchors per location.
        name: the model's name.

    Returns:
        A ``keras.Model`` from ``[B, h, w, 3]`` to ``{"class_logits": [B, A,
        K], "box_deltas": [B, A, 4]}`` (levels 3..7).
    """
    height, width = image_size
    images = keras.Input(shape=(height, width, 3), name="images")
    backbone = resnet_backbone(resnet_depth, (height, width, 3), weights=backbone_weights,
                               freeze_batchnorm=freeze_batchnorm, bgr_weights=bgr_weights)
    pyramid = fpn(backbone(images), channels=256)
    outputs = retinanet_head(pyramid, num_classes, num_anchors, depth=head_depth, width=head_width)
    return keras.Model(images, outputs, name=name or f"retinanet_resnet{resnet_depth}_fpn")


def tiny_retinanet_network(num_classes, image_size=(64, 64), head_depth=1, head_width=32, num_anchors=9,
                           name="retinanet_tiny"):
    """A small test network with RetinaNet's heads on P3..P5 (see the module docstring).

    Args:
        num_classes: ``K``.
        image_size: ``(h, w)``, multiples of 32.
        head_depth, head_width: subnet convolutions and channels.
        num_anchors: anchors per location.
        name: the model's name.

    Returns:
        A ``keras.Model`` as :func:`retinanet_network`, levels 3..5.
    """
    height, width = image_size
    images = keras.Input(shape=(height, width, 3), name="images")
    x = images
    for index, filters in enumerate((16, 32, 64), start=1):
        x = layers.Conv2D(filters, 3, strides=2, padding="same", activation="relu", name=f"tiny{index}")(x)
    pyramid = [x]
    for index in (4, 5):
        x = layers.Conv2D(64, 3, strides=2, padding="same", activation="relu", name=f"tiny{index}")(x)
        pyramid.append(x)
    outputs = retinanet_head(pyramid, num_classes, num_anchors, depth=head_depth, width=head_width)
    return keras.Model(images, outputs, name=name)


def _pair(size):
    if isinstance(size, (int, np.integer)):
        return int(size), int(size)
    if len(size) != 2:
        raise ValueError(f"image_size must be an int or (height, width), got {size!r}")
    return int(size[0]), int(size[1])


def _build(name, resnet_depth, num_classes, overrides):
    overrides = dict(overrides)
    if overrides.get("backbone_weights") is not None:
        # A plain string, so the detector's config (the overrides) serialises.
        overrides["backbone_weights"] = os.fspath(overrides["backbone_weights"])
    options = dict(overrides)
    height, width = _pair(options.pop("image_size", DEFAULT_IMAGE_SIZE))
    backbone_weights = options.pop("backbone_weights", None)
    freeze_batchnorm = bool(options.pop("freeze_batchnorm", True))
    network_kind = options.pop("network", "resnet")
    if options.pop("input_normalization", "imagenet") == "caffe" and backbone_weights is None:
        # Rebuilding a detector that was trained from keras.applications weights.
        pixel_mean, pixel_std = {"pixel_mean": CAFFE_RGB_MEAN}, {"pixel_std": (1.0, 1.0, 1.0)}
    else:
        pixel_mean, pixel_std = {}, {}
    tiny = network_kind == "tiny"
    head_depth = int(options.pop("depth", 1 if tiny else 4))
    head_width = int(options.pop("head_width", 32 if tiny else 256))
    detector_options = {key: options.pop(key) for key in _DETECTOR_OPTIONS if key in options}
    if options:
        raise ValueError(f"unknown overrides for {name}: {sorted(options)}")
    if network_kind not in ("resnet", "tiny"):
        raise ValueError(f"{name}: network must be 'resnet' or 'tiny', got {network_kind!r}")
    max_level = 5 if tiny else 7
    multiple = 2**max_level
    if height <= 0 or width <= 0 or height % multiple or width % multiple:
        raise ValueError(f"{name}: image_size must be positive multiples of {multiple}, got {(height, width)}")
    num_anchors = NUM_SCALES * len(RETINANET_ASPECT_RATIOS)
    if tiny:
        if backbone_weights is not None:
            raise ValueError(f"{name}: the tiny test network has no backbone weights")
        network = tiny_retinanet_network(num_classes, (height, width), head_depth, head_width, num_anchors)
    else:
        # A keras.applications file holds BGR/Caffe-trained weights (module docstring).
        keras_applications = backbone_weights is not None and not backbone_weights.endswith(".weights.h5")
        if keras_applications:
            pixel_mean, pixel_std = {"pixel_mean": CAFFE_RGB_MEAN}, {"pixel_std": (1.0, 1.0, 1.0)}
            # Kept in the config: a saved detector rebuilds without the weights file.
            overrides.update(input_normalization="caffe")
        network = retinanet_network(num_classes, resnet_depth, (height, width), backbone_weights, freeze_batchnorm,
                                    head_depth, head_width, num_anchors, bgr_weights=keras_applications)
    return FocalDetector(
        network,
        num_classes,
        name,
        overrides=overrides,
        min_level=3,
        max_level=max_level,
        num_scales=NUM_SCALES,
        aspect_ratios=RETINANET_ASPECT_RATIOS,
        **{"anchor_scale": 4.0, "box_loss": "smooth_l1", "box_loss_beta": 0.1, **detector_options},
        **pixel_mean,
        **pixel_std,
    )


@register("retinanet_resnet50_fpn")
def retinanet_resnet50_fpn(num_classes, **overrides):
    """RetinaNet with a ResNet-50 (v1) FPN backbone at 640x640 (overrides: module docstring).

    Returns:
        A built :class:`FocalDetector`.
    """
    return _build("retinanet_resnet50_fpn", 50, num_classes, overrides)


@register("retinanet_resnet101_fpn")
def retinanet_resnet101_fpn(num_classes, **overrides):
    """RetinaNet with a ResNet-101 (v1) FPN backbone at 640x640 (overrides: module docstring).

    Returns:
        A built :class:`FocalDetector`.
    """
    return _build("retinanet_resnet101_fpn", 101, num_classes, overrides)
