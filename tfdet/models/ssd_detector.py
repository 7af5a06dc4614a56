"""SSD300 / SSD512 detectors: the SSD networks plus the paper's losses and decoding.

Liu et al., "SSD: Single Shot MultiBox Detector", ECCV 2016, section 2.2
("Training"), as the authors' Caffe ``MultiBoxLoss`` layer implements it.

Preprocessing (inside :meth:`SSDDetector.call`). Images come in as RGB
``[B, H, W, 3]`` float in ``[0, 255]``. The detector reverses the channels to
BGR and subtracts the Caffe VGG16 means ``(104, 117, 123)`` (BGR), exactly as
the reference feeds its network, so weights converted from the Caffe SSD or
the Keras ``caffe``-mode VGG16 line up without any channel flip. The raw
network (``detector.network``) sees the preprocessed tensor.

Training targets (:meth:`SSDDetector.compute_losses`):

* Matching (``tfdet.core.matchers.ArgmaxMatcher`` with ``forced_match="forcing"``): each
  default box goes to its best ground truth when their IoU is at least 0.5; in addition each ground truth takes
  its own best default box ("bipartite" step of the reference), and such a
  forced box belongs to the ground truth that forced it, even when another
  ground truth overlaps it more. Padded ground truth never matches; crowd
  boxes follow ``tfdet.core.target_assigner`` (ignored, never positive).
* Box targets: ``CenterSizeCoder`` with variances ``(0.1, 0.1, 0.2, 0.2)``.
* Classification: softmax cross-entropy over ``K + 1`` logits (index 0 is
  background; a positive's target is its class + 1) on the positives and on
  the hard negatives: per image the ``3 * num_positives`` background boxes
  with the highest ``-log p(background)`` (``hard_negative_mining``).
  An image without positives keeps ``min_negatives`` (3) hardest negatives,
  so it still teaches background; with at least one positive the 3:1 rule
  already asks for 3 or more, so the paper's rule is unchanged there.
* Box regression: smooth L1 (beta 1) summed over the 4 encoded coordinates
  of the positives.
* Normaliser: both terms are summed over the batch and divided by
  ``max(N, 1)``, ``N`` the number of positives in the batch (Caffe's
  ``VALID`` normalisation, which clamps at 1). A batch without any object
  therefore gives ``loss/box = 0`` and ``loss/cls`` = the summed loss of its
  mined negatives: finite, with finite gradients. Under a distribution
  strategy pass the cross-replica ``N`` as ``normalizer`` (see
  :meth:`SSDDetector.loss_normalizer`) and sum the replicas' gradients: the
  result equals the one-device step.
* ``loss = loss/cls + box_loss_weight * loss/box`` (``alpha = 1`` in the paper).

Post-processing (:meth:`SSDDetector.postprocess`): softmax over the
``K + 1`` logits, drop the background column, decode the deltas against the
default boxes, then ``Detector.select_detections`` (per-class NMS at IoU
0.45, scores above 0.01, as the reference's evaluation).

Builders (``tfdet.build_model("ssd300_vgg16", K, **overrides)``):

* ``image_size``: int or ``(h, w)``; default 300 / 512.
* ``backbone_weights``: a local ``*.weights.h5`` of the VGG16 base, or None.
* ``max_detections`` (200, the reference's ``keep_top_k``),
  ``score_threshold`` (0.01), ``iou_threshold`` (0.45).
* ``box_scales``: ``"reference"`` (the Caffe model's scales and steps:
  conv4_3 at 0.1, or 0.07 for SSD512; only at the default image size, where
  it is the default) or ``"paper"`` (``s_k`` linear from 0.2, or 0.15 for
  SSD512, to 0.9 over all maps, centres at the map cells; the default at any
  other size).
* ``negative_ratio`` (3), ``min_negatives`` (3), ``box_loss_weight`` (1.0),
  ``positive_iou`` (0.5).
* ``width_multiplier``: VGG16's and the extra blocks' channels scaled (at
  least 8): the same maps, default boxes, matching and losses at a fraction
  of the cost (the learning tests train ssd300/ssd512 at 1/8). 1.0 is the
  paper's network and the only width that takes VGG16 weights.
* ``network``: ``"vgg16"`` (default, ``tfdet.models.ssd``) or ``"tiny"``,
  a small test network (a 1/128 rescale, three 3x3 stride-2 stages to
  stride 8, then source maps at strides 8, 16 and 32 with 4, 6, 6 boxes per
  location; ``tiny_ssd_network``) for CPU tests at small image sizes (64x64
  gives 376 default boxes, paper scales 0.2..0.9); everything but the
  network is the same. ``backbone_weights`` must then be None.
"""

from __future__ import annotations

import keras
import numpy as np
from keras import layers, ops

from tfdet.core.anchors import (
    SSD300_REFERENCE_SCALES,
    SSD300_REFERENCE_STEPS,
    SSD512_REFERENCE_SCALES,
    SSD512_REFERENCE_STEPS,
    ssd_default_boxes,
)
from tfdet.core.box_coders import CenterSizeCoder
from tfdet.core.matchers import ArgmaxMatcher
from tfdet.core.samplers import hard_negative_mining
from tfdet.core.target_assigner import assign
from tfdet.losses import normalize_by, smooth_l1, softmax_cross_entropy
from tfdet.models.detector import Detector
from tfdet.models.ssd import ssd300_network, ssd512_network
from tfdet.zoo import register

__all__ = ["CAFFE_BGR_MEAN", "SSDDetector", "ssd300_vgg16", "ssd512_vgg16", "tiny_ssd_network"]

CAFFE_BGR_MEAN = (104.0, 117.0, 123.0)
SSD_VARIANCES = (0.1, 0.1, 0.2, 0.2)

SSD300_SOURCES = ("conv4_3_norm", "conv7", "conv8_2", "conv9_2", "conv10_2", "conv11_2")
SSD512_SOURCES = SSD300_SOURCES + ("conv12_2",)
SSD300_RATIOS = ((2,), (2, 3), (2, 3), (2, 3), (2,), (2,))
SSD512_RATIOS = ((2,), (2, 3), (2, 3), (2, 3), (2, 3), (2,), (2,))
TINY_SOURCES = ("tiny3", "tiny4", "tiny5")
TINY_BOXES_PER_LOCATION = (4, 6, 6)
TINY_RATIOS = ((2,), (2, 3), (2, 3))


def tiny_ssd_network(num_classes, image_size=64, name="ssd_tiny"):
    """A small SSD-layout network for tests: same outputs and order as the SSD networks.

    A ``1 / 128`` rescaling of the (mean-subtracted) input, then three 3x3
    stride-2 ReLU convolutions (16, 32, 64 channels) reach stride 8 (source
    ``tiny3``); two more (64 channels each) give ``tiny4`` (stride 16) and
    ``tiny5`` (stride 32). Each source has the SSD heads
    (``{source}_class`` / ``{source}_box``, 3x3 ``same``) with 4, 6, 6 boxes
    per location.

    Args:
        num_classes: foreground classes ``K``.
        image_size: int or ``(h, w)``.
        name: the model's name.

    Returns:
        A ``keras.Model`` from ``[B, H, W, 3]`` to ``{"class_logits":
        [B, A, K + 1], "box_deltas": [B, A, 4]}``.
    """
    height, width = _pair(image_size)
    images = keras.Input(shape=(height, width, 3), name="images")
    # The detector subtracts the means; this keeps the untrained small net's
    # activations near unit scale.
    x = layers.Rescaling(1.0 / 128.0, name="tiny_scale")(images)
    for index, filters in enumerate((16, 32, 64), start=1):
        x = layers.Conv2D(filters, 3, strides=2, padding="same", activation="relu", name=f"tiny{index}")(x)
    sources = [x]
    for index in (4, 5):
        x = layers.Conv2D(64, 3, strides=2, padding="same", activation="relu", name=f"tiny{index}")(x)
        sources.append(x)
    class_parts, box_parts = [], []
    for feature, boxes, source in zip(sources, TINY_BOXES_PER_LOCATION, TINY_SOURCES):
        logits = layers.Conv2D(boxes * (num_classes + 1), 3, padding="same", name=f"{source}_class")(feature)
        class_parts.append(layers.Reshape((-1, num_classes + 1), name=f"{source}_class_flat")(logits))
        deltas = layers.Conv2D(boxes * 4, 3, padding="same", name=f"{source}_box")(feature)
        box_parts.append(layers.Reshape((-1, 4), name=f"{source}_box_flat")(deltas))
    class_logits = layers.Concatenate(axis=1, name="class_logits")(class_parts)
    box_deltas = layers.Concatenate(axis=1, name="box_deltas")(box_parts)
    return keras.Model(images, {"class_logits": class_logits, "box_deltas": box_deltas}, name=name)


def _pair(size):
    return (int(size), int(size)) if isinstance(size, (int, np.integer)) else tuple(int(s) for s in size)


def _source_map_sizes(network, sources):
    """``(rows, cols)`` of each source map, read from its class head's output shape."""
    sizes = []
    for source in sources:
        shape = network.get_layer(f"{source}_class").output.shape
        sizes.append((int(shape[1]), int(shape[2])))
    return sizes


@keras.saving.register_keras_serializable(package="tfdet")
class SSDDetector(Detector):
    """SSD: a network with per-default-box outputs, the MultiBox loss, and decoding + NMS.

    Args:
        network: built ``keras.Model`` from preprocessed images ``[B, H, W, 3]``
            to ``{"class_logits": [B, A, K + 1], "box_deltas": [B, A, 4]}``,
            background at logit 0, outputs in the order of ``anchors``.
        anchors: ``[A, 4]`` default boxes, yxyx pixels (numpy or tensor).
        num_classes, model_name, overrides, max_detections, score_threshold,
            iou_threshold: see ``Detector``.
        negative_ratio: hard negatives per positive (3).
        min_negatives: hard negatives per image at least (3; matters only for
            images without positives).
        box_loss_weight: ``alpha`` of the paper (1).
        positive_iou: the matcher's threshold (0.5).
        pixel_mean: per-channel mean subtracted after the RGB -> BGR flip.
        **kwargs: ``Detector`` / ``keras.Model`` arguments.
    """

    def __init__(
        self,
        network,
        anchors,
        num_classes,
        model_name,
        overrides=None,
        max_detections=200,
        score_threshold=0.01,
        iou_threshold=0.45,
        negative_ratio=3,
        min_negatives=3,
        box_loss_weight=1.0,
        positive_iou=0.5,
        pixel_mean=CAFFE_BGR_MEAN,
        **kwargs,
    ):
        super().__init__(
            network,
            num_classes,
            model_name,
            overrides=overrides,
            max_detections=max_detections,
            score_threshold=score_threshold,
            iou_threshold=iou_threshold,
            **kwargs,
        )
        self.anchors = np.asarray(ops.convert_to_numpy(anchors), dtype=np.float32)
        self.negative_ratio = float(negative_ratio)
        self.min_negatives = int(min_negatives)
        self.box_loss_weight = float(box_loss_weight)
        # The reference's bipartite step: a ground truth's best box stays with it.
        self.matcher = ArgmaxMatcher(positive_iou, allow_low_quality_matches=True, forced_match="forcing")
        self.coder = CenterSizeCoder(SSD_VARIANCES)
        self.pixel_mean = tuple(float(m) for m in pixel_mean)

    @property
    def num_anchors(self) -> int:
        """``A``, the number of default boxes."""
        return int(self.anchors.shape[0])

    def preprocess(self, images):
        """RGB ``[B, H, W, 3]`` in ``[0, 255]`` -> BGR minus the Caffe means, float32."""
        images = ops.cast(images, "float32")
        bgr = ops.flip(images, axis=-1)
        return bgr - ops.convert_to_tensor(np.asarray(self.pixel_mean, np.float32))

    def call(self, images, training=False):
        """Raw outputs ``{"class_logits": [B, A, K + 1], "box_deltas": [B, A, 4]}`` of RGB images."""
        return self.network(self.preprocess(images), training=training)

    def assign_targets(self, groundtruth):
        """SSD matching and encoding (see the module docstring).

        Args:
            groundtruth: ``boxes [B, G, 4]`` yxyx pixels, ``classes [B, G]``
                int ``0..K-1`` (-1 pads), optional ``is_crowd [B, G]``.

        Returns:
            ``tfdet.core.target_assigner.assign``'s dict (``class_targets``,
            ``box_targets``, ``positive_mask``, ``negative_mask``, ...).
        """
        return assign(
            ops.convert_to_tensor(self.anchors),
            groundtruth["boxes"],
            groundtruth["classes"],
            groundtruth.get("is_crowd"),
            self.matcher,
            self.coder,
        )

    resize_mode = "stretch"

    def loss_normalizer(self, groundtruth):
        """``N``: the positive default boxes of the batch, a float32 scalar."""
        targets = self.assign_targets(groundtruth)
        return ops.sum(ops.cast(targets["positive_mask"], "float32"))

    def compute_losses(self, outputs, groundtruth, normalizer=None):
        """The MultiBox loss.

        Args:
            outputs: ``class_logits [B, A, K + 1]``, ``box_deltas [B, A, 4]``.
            groundtruth: ``boxes [B, G, 4]``, ``classes [B, G]`` (-1 pads),
                optional ``is_crowd [B, G]``.
            normalizer: optional scalar ``N`` (e.g. summed over replicas);
                by default the batch's positives. Either way the divisor is
                ``max(N, 1)``.

        Returns:
            ``{"loss/cls": [], "loss/box": [], "loss": []}`` float32 scalars.
        """
        logits = ops.cast(outputs["class_logits"], "float32")
        deltas = ops.cast(outputs["box_deltas"], "float32")
        targets = self.assign_targets(groundtruth)
        positive = targets["positive_mask"]
        # Background is index 0: a positive of class k has target k + 1.
        labels = ops.where(positive, targets["class_targets"] + 1, 0)
        per_anchor = softmax_cross_entropy(labels, logits)  # [B, A]
        background_loss = -ops.log_softmax(logits, axis=-1)[..., 0]
        negatives = hard_negative_mining(
            background_loss,
            positive,
            negative_ratio=self.negative_ratio,
            min_negatives=self.min_negatives,
            negative_mask=targets["negative_mask"],
        )
        if normalizer is None:
            normalizer = ops.sum(ops.cast(positive, "float32"))
        divisor = ops.maximum(ops.cast(normalizer, "float32"), 1.0)
        selected = ops.logical_or(positive, negatives)
        cls_loss = normalize_by(per_anchor, divisor, weights=ops.cast(selected, "float32"))
        box_per_anchor = smooth_l1(targets["box_targets"], deltas, beta=1.0)  # [B, A]
        box_loss = normalize_by(box_per_anchor, divisor, weights=ops.cast(positive, "float32"))
        return {
            "loss/cls": cls_loss,
            "loss/box": box_loss,
            "loss": cls_loss + self.box_loss_weight * box_loss,
        }

    def decode_boxes(self, box_deltas):
        """``[B, A, 4]`` deltas -> ``[B, A, 4]`` yxyx pixels against the default boxes."""
        anchors = ops.expand_dims(ops.convert_to_tensor(self.anchors), 0)
        return self.coder.decode(ops.cast(box_deltas, "float32"), anchors)

    def postprocess(self, outputs):
        """Softmax, background dropped, boxes decoded, per-class NMS.

        Args:
            outputs: ``class_logits [B, A, K + 1]``, ``box_deltas [B, A, 4]``.

        Returns:
            ``boxes [B, D, 4]`` yxyx pixels (clipped to the image),
            ``scores [B, D]``, ``classes [B, D]`` int32 (-1 pads),
            ``num_detections [B]`` int32.
        """
        probabilities = ops.softmax(ops.cast(outputs["class_logits"], "float32"), axis=-1)
        boxes = self.decode_boxes(outputs["box_deltas"])
        return self.select_detections(boxes, probabilities[..., 1:])


def _build(name, num_classes, overrides, default_size, network_fn, sources, ratios, ref_scales, ref_steps, s_min):
    options = dict(overrides)
    image_size = options.pop("image_size", default_size)
    height, width = _pair(image_size)
    default_scales = "reference" if (height, width) == (default_size, default_size) else "paper"
    box_scales = options.pop("box_scales", default_scales)
    backbone_weights = options.pop("backbone_weights", None)
    network_kind = options.pop("network", "vgg16")
    width_multiplier = float(options.pop("width_multiplier", 1.0))
    detector_options = {
        key: options.pop(key)
        for key in (
            "max_detections",
            "score_threshold",
            "iou_threshold",
            "negative_ratio",
            "min_negatives",
            "box_loss_weight",
            "positive_iou",
        )
        if key in options
    }
    if options:
        raise ValueError(f"unknown overrides for {name}: {sorted(options)}")
    if network_kind == "vgg16":
        network = network_fn(num_classes=num_classes, image_size=(height, width), backbone_weights=backbone_weights,
                             width_multiplier=width_multiplier)
    elif network_kind == "tiny":
        if backbone_weights is not None:
            raise ValueError("the tiny test network has no backbone weights")
        if width_multiplier != 1.0:
            raise ValueError("width_multiplier applies to the vgg16 network, not the tiny test network")
        network = tiny_ssd_network(num_classes, (height, width))
        sources, ratios = TINY_SOURCES, TINY_RATIOS
    else:
        raise ValueError(f"network must be 'vgg16' or 'tiny', got {network_kind!r}")
    map_sizes = _source_map_sizes(network, sources)
    if box_scales == "reference":
        if network_kind != "vgg16" or (height, width) != (default_size, default_size):
            raise ValueError(f"box_scales='reference' needs the vgg16 network at {default_size}x{default_size}")
        anchors = ssd_default_boxes((height, width), map_sizes, aspect_ratio_sets=ratios, scales=ref_scales,
                                    steps=ref_steps)
    elif box_scales == "paper":
        anchors = ssd_default_boxes((height, width), map_sizes, s_min=s_min, s_max=0.9, aspect_ratio_sets=ratios)
    else:
        raise ValueError(f"box_scales must be 'reference' or 'paper', got {box_scales!r}")
    detector = SSDDetector(network, anchors, num_classes, name, overrides=overrides, **detector_options)
    outputs = detector(np.zeros((1, height, width, 3), np.float32))
    if outputs["class_logits"].shape[1] != detector.num_anchors:
        raise AssertionError(f"{outputs['class_logits'].shape[1]} network outputs but {detector.num_anchors} anchors")
    return detector


@register("ssd300_vgg16")
def ssd300_vgg16(num_classes, **overrides):
    """SSD300 with a VGG16 base: 8732 default boxes at 300x300 (overrides: module docstring).

    Args:
        num_classes: foreground classes ``K``.
        **overrides: ``image_size``, ``backbone_weights``, ``max_detections``,
            ``score_threshold``, ``iou_threshold``, ``box_scales``, ``network``,
            ``width_multiplier`` (VGG16's channels scaled, the same maps and
            default boxes: a cheaper network of the same layout), ``negative_ratio``, ``min_negatives``, ``box_loss_weight``, ``positive_iou``.

    Returns:
        A built :class:`SSDDetector`.
    """
    return _build("ssd300_vgg16", num_classes, overrides, 300, ssd300_network, SSD300_SOURCES, SSD300_RATIOS,
                  SSD300_REFERENCE_SCALES, SSD300_REFERENCE_STEPS, 0.2)


@register("ssd512_vgg16")
def ssd512_vgg16(num_classes, **overrides):
    """SSD512 with a VGG16 base: 24564 default boxes at 512x512 (overrides as ``ssd300_vgg16``).

    With ``box_scales="paper"`` the scales run linearly from 0.15 to 0.9.

    Returns:
        A built :class:`SSDDetector`.
    """
    return _build("ssd512_vgg16", num_classes, overrides, 512, ssd512_network, SSD512_SOURCES, SSD512_RATIOS,
                  SSD512_REFERENCE_SCALES, SSD512_REFERENCE_STEPS, 0.15)
