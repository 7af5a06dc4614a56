"""Anchor-based one-stage detectors trained with the sigmoid focal loss: RetinaNet and EfficientDet.

The detector logic both families share; they differ only in their networks
(``tfdet.models.retinanet``: ResNet + FPN + RetinaNet heads;
``tfdet.models.efficientdet``: EfficientNet + BiFPN + separable heads) and in
a few numbers passed to :class:`FocalDetector`.

Anchors (``tfdet.core.anchors.multilevel_anchors``). Levels ``min_level..
max_level`` (stride ``2**l``), ``num_scales`` octave scales times the aspect
ratios per location, base size ``anchor_scale * stride``; order level, row
y, column x, then scale (outer) and aspect ratio (inner). An aspect ratio is
either a number ``r = height / width`` at the area of the base size
(RetinaNet: 0.5, 1, 2) or a pair ``(x, y)``, EfficientDet's form: the anchor
is ``x`` times the base size wide and ``y`` times it high, so EfficientDet's
``(1.4, 0.7)`` is a box of ratio 0.5 whose area is 0.98 of the base area.

Preprocessing (inside :meth:`FocalDetector.call`): RGB images in ``[0, 255]``
become ``(x - mean) / std`` with the ImageNet statistics in pixels
(``mean = (123.675, 116.28, 103.53)``, ``std = (58.395, 57.12, 57.375)``),
as Detectron2, torchvision and the EfficientDet reference feed their
ImageNet backbones.

The loss (:meth:`FocalDetector.compute_losses`), as Lin et al., "Focal Loss
for Dense Object Detection" (ICCV 2017, sections 3 and 4) and Tan et al.,
"EfficientDet: Scalable and Efficient Object Detection" (CVPR 2020, which
keeps RetinaNet's loss) define it:

* Assignment: each anchor takes the ground truth of highest IoU. IoU >= 0.5
  makes it a positive of that box's class, IoU < 0.4 a negative
  (background), and anchors in ``[0.4, 0.5)`` are ignored
  (``ArgmaxMatcher(positive_iou, negative_iou)``). Anchors on crowd boxes are
  ignored too and padded ground truth matches nothing
  (``tfdet.core.target_assigner.assign``).
* Classification: ``K`` independent sigmoids (no background logit; a
  negative's target is all zeros, a positive's the one-hot of its class).
  Per anchor and class, with ``p_t = p`` for target 1 and ``1 - p`` for
  target 0, ``alpha_t = alpha`` for target 1 and ``1 - alpha`` for 0::

      FL(p_t) = -alpha_t (1 - p_t)^gamma log(p_t)        (alpha 0.25, gamma 2)

  summed over every non-ignored anchor and every class.
* Box regression: the R-CNN deltas ``(dy, dx, dh, dw)`` (``DeltaCoder`` with
  ``box_weights``, ``(1, 1, 1, 1)`` by default) of the positives against
  their anchors, smooth L1 (``box_loss="smooth_l1"``, ``beta =
  box_loss_beta``) or Huber (``"huber"``, ``delta = box_loss_beta``) summed
  over the 4 coordinates of every positive.
* Normalisation: both sums are divided by ``max(N, 1)``, ``N`` the number of
  positive anchors in the batch ("normalized by the number of anchors
  assigned to a ground-truth box", Lin et al. section 4). A batch without
  objects therefore gives ``loss/box = 0`` and a finite ``loss/cls``, the
  focal loss of its negatives, which still trains the background.
* ``loss = loss/cls + box_loss_weight * loss/box``.

Relation to the reference implementations. Detectron2's RetinaNet uses
smooth L1 with beta 0.1 and weight 1 (its default ``SMOOTH_L1_LOSS_BETA``;
Detectron used 0.11); that is the RetinaNet builder's default here. The
EfficientDet reference (google/automl) and TF Model Garden use Huber with
delta 0.1, divide the box sum by ``4 N`` (a mean over the coordinates) and
weigh it by 50: the same loss as ``box_loss="huber", box_loss_beta=0.1,
box_loss_weight=12.5`` here. They divide by ``N + 1`` rather than
``max(N, 1)``; the two differ only by the one extra count.

Multi-replica training: pass the positives summed over the replicas
(:meth:`FocalDetector.loss_normalizer` of each replica's ground truth,
all-reduced) as ``normalizer=`` and sum the replicas' gradients; the result
equals the one-device step.

Post-processing (:meth:`FocalDetector.postprocess`): sigmoid scores,
``DeltaCoder`` decoding against the anchors, then
``Detector.select_detections`` (per-class NMS at IoU 0.5, scores above
0.05, 100 detections; Gaussian soft-NMS when ``soft_nms_sigma > 0``).
"""

from __future__ import annotations

import math

import keras
import numpy as np
from keras import ops

from tfdet.core.anchors import multilevel_anchors
from tfdet.core.box_coders import DeltaCoder
from tfdet.core.matchers import ArgmaxMatcher
from tfdet.core.target_assigner import assign
from tfdet.losses import huber, normalize_by, sigmoid_focal_loss, smooth_l1
from tfdet.models.detector import Detector

__all__ = [
    "BOX_LOSSES",
    "EFFICIENTDET_ASPECT_RATIOS",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "RETINANET_ASPECT_RATIOS",
    "FocalDetector",
    "focal_anchors",
]

IMAGENET_MEAN = (123.675, 116.28, 103.53)
IMAGENET_STD = (58.395, 57.12, 57.375)
# height / width at the base area (Lin et al. 2017: 1:2, 1:1, 2:1).
RETINANET_ASPECT_RATIOS = (0.5, 1.0, 2.0)
# (width, height) multipliers of the base size (the EfficientDet reference).
EFFICIENTDET_ASPECT_RATIOS = ((1.0, 1.0), (1.4, 0.7), (0.7, 1.4))
BOX_LOSSES = ("smooth_l1", "huber")


def _ratio_and_scale(aspect_ratio, anchor_scale):
    """One aspect ratio as ``(height / width, anchor_scale)`` for ``multilevel_anchors``.

    A pair ``(x, y)`` (width and height multipliers) is a box of ratio
    ``y / x`` whose side at equal area is ``sqrt(x y)`` times the base side.
    """
    if isinstance(aspect_ratio, (int, float)):
        ratio = float(aspect_ratio)
        if ratio <= 0:
            raise ValueError(f"aspect ratios must be positive, got {aspect_ratio!r}")
        return ratio, float(anchor_scale)
    if len(aspect_ratio) != 2 or min(aspect_ratio) <= 0:
        raise ValueError(f"an aspect ratio is a number or a positive (width, height) pair, got {aspect_ratio!r}")
    x, y = float(aspect_ratio[0]), float(aspect_ratio[1])
    return y / x, float(anchor_scale) * math.sqrt(x * y)


def focal_anchors(image_size, min_level=3, max_level=7, num_scales=3, aspect_ratios=RETINANET_ASPECT_RATIOS,
                  anchor_scale=4.0):
    """The anchors of a :class:`FocalDetector`, numpy ``[A, 4]`` yxyx pixels.

    ``multilevel_anchors`` with aspect ratios in either form (see the module
    docstring). Pairs are laid out by building one single-ratio anchor set
    per ratio and interleaving them, so the order stays level, y, x, scale,
    ratio.

    Args:
        image_size: ``(height, width)`` pixels.
        min_level, max_level, num_scales, anchor_scale: as
            ``multilevel_anchors``.
        aspect_ratios: numbers (``height / width``) and/or ``(x, y)`` pairs.

    Returns:
        ``[A, 4]`` float32, ``A = sum_l ceil(H / 2**l) ceil(W / 2**l) *
        num_scales * len(aspect_ratios)``.
    """
    converted = [_ratio_and_scale(r, anchor_scale) for r in aspect_ratios]
    if not converted:
        raise ValueError("aspect_ratios must not be empty")
    if all(scale == float(anchor_scale) for _, scale in converted):
        anchors = multilevel_anchors(image_size, min_level, max_level, num_scales,
                                     tuple(r for r, _ in converted), anchor_scale)
        return np.asarray(ops.convert_to_numpy(anchors), np.float32)
    per_ratio = [
        np.asarray(ops.convert_to_numpy(multilevel_anchors(image_size, min_level, max_level, num_scales, (r,), s)))
        for r, s in converted
    ]
    return np.stack(per_ratio, axis=1).reshape(-1, 4).astype(np.float32)


@keras.saving.register_keras_serializable(package="tfdet")
class FocalDetector(Detector):
    """RetinaNet / EfficientDet: multilevel anchors, the focal loss, delta decoding + NMS.

    Args:
        network: built ``keras.Model`` with a static input size, from
            normalised images ``[B, H, W, 3]`` to ``{"class_logits": [B, A,
            K], "box_deltas": [B, A, 4]}`` in anchor order (module docstring).
        num_classes: foreground classes ``K``.
        model_name: the registry name that builds this detector.
        overrides: the builder's keyword arguments (for saving).
        min_level, max_level: pyramid levels of the outputs.
        num_scales: octave scales per location.
        aspect_ratios: numbers (``height / width``) or ``(width, height)``
            multiplier pairs; default RetinaNet's ``(0.5, 1, 2)``.
        anchor_scale: base anchor size in strides (4).
        focal_alpha, focal_gamma: the focal loss' ``alpha`` (0.25) and
            ``gamma`` (2).
        box_loss: ``"smooth_l1"`` or ``"huber"``.
        box_loss_beta: smooth L1's ``beta`` or Huber's ``delta`` (0.1).
        box_loss_weight: multiplies ``loss/box`` in ``loss``.
        positive_iou, negative_iou: matcher thresholds (0.5, 0.4).
        allow_low_quality_matches: also make each ground truth's best
            anchor(s) positive (Detectron2 and the EfficientDet reference do;
            the focal-loss paper does not; default False).
        box_weights: ``DeltaCoder`` weights ``(wy, wx, wh, ww)``.
        soft_nms_sigma: Gaussian soft-NMS sigma; 0 for hard NMS.
        pixel_mean, pixel_std: per-channel RGB statistics in pixels.
        max_detections, score_threshold, iou_threshold: post-processing.
        **kwargs: ``keras.Model`` arguments (``name``).

    Raises:
        ValueError: an unknown ``box_loss``, a network without a static input
            size, or one whose output count differs from the anchors'.
    """

    resize_mode = "letterbox"

    def __init__(
        self,
        network,
        num_classes,
        model_name,
        overrides=None,
        *,
        min_level=3,
        max_level=7,
        num_scales=3,
        aspect_ratios=RETINANET_ASPECT_RATIOS,
        anchor_scale=4.0,
        focal_alpha=0.25,
        focal_gamma=2.0,
        box_loss="smooth_l1",
        box_loss_beta=0.1,
        box_loss_weight=1.0,
        positive_iou=0.5,
        negative_iou=0.4,
        allow_low_quality_matches=False,
        box_weights=(1.0, 1.0, 1.0, 1.0),
        soft_nms_sigma=0.0,
        pixel_mean=IMAGENET_MEAN,
        pixel_std=IMAGENET_STD,
        max_detections=100,
        score_threshold=0.05,
        iou_threshold=0.5,
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
        if box_loss not in BOX_LOSSES:
            raise ValueError(f"box_loss must be one of {BOX_LOSSES}, got {box_loss!r}")
        height, width = self.image_size
        if height is None or width is None:
            raise ValueError(f"{model_name}: the network needs a static input size, got {(height, width)}")
        self.min_level, self.max_level = int(min_level), int(max_level)
        self.num_scales = int(num_scales)
        self.aspect_ratios = tuple(aspect_ratios)
        self.anchor_scale = float(anchor_scale)
        self.anchors = focal_anchors((height, width), self.min_level, self.max_level, self.num_scales,
                                     self.aspect_ratios, self.anchor_scale)
        self.focal_alpha = float(focal_alpha)
        self.focal_gamma = float(focal_gamma)
        self.box_loss = box_loss
        self.box_loss_beta = float(box_loss_beta)
        self.box_loss_weight = float(box_loss_weight)
        self.matcher = ArgmaxMatcher(positive_iou, negative_iou, allow_low_quality_matches=allow_low_quality_matches)
        self.coder = DeltaCoder(box_weights)
        self.soft_nms_sigma = float(soft_nms_sigma)
        self.pixel_mean = tuple(float(m) for m in pixel_mean)
        self.pixel_std = tuple(float(s) for s in pixel_std)
        self._check_output_count()
        # The network is built and the detector adds no weights of its own, so
        # it is built too (no dummy forward pass through a large network).
        self.built = True

    def _check_output_count(self):
        """The network's anchor axis must be as long as the anchors (else the levels or ratios disagree)."""
        height, width = self.image_size
        spec = self.network.compute_output_spec(keras.KerasTensor((1, height, width, 3)))
        for key, last in (("class_logits", self.num_classes), ("box_deltas", 4)):
            shape = tuple(spec[key].shape)
            if shape[1:] != (self.num_anchors, last):
                raise ValueError(
                    f"{self.model_name}: network output {key!r} has shape {shape}, expected "
                    f"(batch, {self.num_anchors}, {last}) for levels {self.min_level}..{self.max_level}, "
                    f"{self.num_scales} scales x {len(self.aspect_ratios)} aspect ratios at {height}x{width}"
                )

    @property
    def num_anchors(self) -> int:
        """``A``, the number of anchors."""
        return int(self.anchors.shape[0])

    def preprocess(self, images):
        """RGB ``[B, H, W, 3]`` in ``[0, 255]`` -> ``(x - mean) / std``, float32."""
        images = ops.cast(images, "float32")
        mean = ops.convert_to_tensor(np.asarray(self.pixel_mean, np.float32))
        std = ops.convert_to_tensor(np.asarray(self.pixel_std, np.float32))
        return (images - mean) / std

    def call(self, images, training=False):
        """Raw outputs ``{"class_logits": [B, A, K], "box_deltas": [B, A, 4]}`` of RGB images."""
        return self.network(self.preprocess(images), training=training)

    def assign_targets(self, groundtruth):
        """Anchor targets of padded ground truth (``tfdet.core.target_assigner.assign``).

        Args:
            groundtruth: ``boxes [B, G, 4]`` yxyx pixels, ``classes [B, G]``
                int ``0..K-1`` (-1 pads), optional ``is_crowd [B, G]``.

        Returns:
            ``assign``'s dict: ``class_targets [B, A]``, ``box_targets [B, A,
            4]``, ``positive_mask``, ``negative_mask``, ``ignore_mask``, ...
        """
        return assign(
            ops.convert_to_tensor(self.anchors),
            groundtruth["boxes"],
            groundtruth["classes"],
            groundtruth.get("is_crowd"),
            self.matcher,
            self.coder,
        )

    def loss_normalizer(self, groundtruth):
        """``N``, this batch's positive anchors, a float32 scalar (sum it over replicas)."""
        targets = self.assign_targets(groundtruth)
        return ops.sum(ops.cast(targets["positive_mask"], "float32"))

    def compute_losses(self, outputs, groundtruth, normalizer=None):
        """The focal loss and the box loss (see the module docstring).

        Args:
            outputs: ``class_logits [B, A, K]``, ``box_deltas [B, A, 4]``.
            groundtruth: ``boxes [B, G, 4]`` yxyx pixels, ``classes [B, G]``
                (-1 pads), optional ``is_crowd [B, G]``.
            normalizer: optional scalar ``N`` (the positives summed over
                replicas); by default this batch's positives. The divisor is
                ``max(N, 1)`` either way.

        Returns:
            ``{"loss/cls": [], "loss/box": [], "loss": []}`` float32 scalars.
        """
        logits = ops.cast(outputs["class_logits"], "float32")
        deltas = ops.cast(outputs["box_deltas"], "float32")
        targets = self.assign_targets(groundtruth)
        positive = targets["positive_mask"]
        # one_hot of -1 (background) and -2 (ignored) is all zeros.
        labels = ops.one_hot(ops.where(positive, targets["class_targets"], -1), self.num_classes, dtype="float32")
        per_element = sigmoid_focal_loss(labels, logits, alpha=self.focal_alpha, gamma=self.focal_gamma)
        if normalizer is None:
            normalizer = ops.sum(ops.cast(positive, "float32"))
        divisor = ops.maximum(ops.cast(normalizer, "float32"), 1.0)
        cls_weights = ops.cast(ops.logical_not(targets["ignore_mask"]), "float32")
        cls_loss = normalize_by(per_element, divisor, weights=cls_weights)
        if self.box_loss == "smooth_l1":
            box_per_anchor = smooth_l1(targets["box_targets"], deltas, beta=self.box_loss_beta)
        else:
            box_per_anchor = huber(targets["box_targets"], deltas, delta=self.box_loss_beta)
        box_loss = normalize_by(box_per_anchor, divisor, weights=ops.cast(positive, "float32"))
        return {
            "loss/cls": cls_loss,
            "loss/box": box_loss,
            "loss": cls_loss + self.box_loss_weight * box_loss,
        }

    def decode_boxes(self, box_deltas):
        """``[B, A, 4]`` deltas -> ``[B, A, 4]`` yxyx pixels against the anchors."""
        anchors = ops.expand_dims(ops.convert_to_tensor(self.anchors), 0)
        return self.coder.decode(ops.cast(box_deltas, "float32"), anchors)

    def postprocess(self, outputs):
        """Sigmoid scores, decoded boxes, per-class NMS.

        Args:
            outputs: ``class_logits [B, A, K]``, ``box_deltas [B, A, 4]``.

        Returns:
            ``boxes [B, D, 4]`` yxyx pixels (clipped to the image),
            ``scores [B, D]``, ``classes [B, D]`` int32 (-1 pads),
            ``num_detections [B]`` int32.
        """
        scores = ops.sigmoid(ops.cast(outputs["class_logits"], "float32"))
        boxes = self.decode_boxes(outputs["box_deltas"])
        return self.select_detections(boxes, scores, soft_nms_sigma=self.soft_nms_sigma)
