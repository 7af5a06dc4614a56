"""YOLOv3 and YOLOv3-tiny detectors: target assignment, losses, post-processing.

Redmon & Farhadi, "YOLOv3: An Incremental Improvement", 2018. The networks
are ``tfdet.models.yolov3`` (raw head outputs per scale); this module adds
what makes them a :class:`~tfdet.models.detector.Detector`:

* Preprocessing: the detector takes RGB images ``[B, H, W, 3]`` with values
  in ``[0, 255]`` (uint8 or float) and divides by 255 inside its call, as
  Darknet feeds its network ``[0, 1]`` pixels.
* Anchor order: all scales flattened into one axis ``A``: smallest stride
  first (``"p3"``, ``"p4"``, ``"p5"`` for YOLOv3; ``"p4"``, ``"p5"`` for
  tiny), then grid row, then grid column, then the scale's priors. At 416,
  YOLOv3 has ``A = 3 * (52^2 + 26^2 + 13^2) = 10647``.
* Target assignment (``compute_losses``, in-graph, static shapes): every
  ground truth goes to the one prior of best shape IoU over all scales
  (``tfdet.core.matchers.yolo_best_anchor_match``), at the grid cell that
  contains its centre. Targets are the in-cell centre offsets, ``log(size /
  prior)``, objectness 1 and the class. As in Darknet, when two ground truths
  land on the same prediction the later one's box wins and the class target
  becomes multi-hot (Darknet's ``delta_yolo_class`` keeps the earlier class).
  Crowd boxes (``is_crowd``) are never assigned but still switch off the
  no-object loss of predictions overlapping them.
* Losses: ``tfdet.losses.yolo.yolo_v3_losses`` (objectness BCE with YOLOv3's
  ignore mask at IoU 0.5, per-class sigmoid BCE, Darknet's box loss: BCE on
  the offsets and squared error on the log sizes, weighted by ``2 - w h``).
  ``box_loss="giou"`` replaces ``loss/yx`` and ``loss/hw`` with
  ``loss/giou``: ``sum_P (2 - w h) (1 - GIoU(decoded, ground truth))``
  divided by the batch size, times ``giou_weight``.
* Post-processing: every prediction decoded (``yolo_decode``), scores
  ``sigmoid(objectness) * sigmoid(class)``, then per-class NMS
  (``Detector.select_detections``).

Image size: the grids, priors and the ``2 - w h`` weight need the network's
input size. It is read from the outputs' static shapes (``grid * stride``),
so a detector built with ``image_size=None`` (input ``(None, None, 3)``)
works at any size divisible by 32 as long as the traced images have a static
size (``tf.function`` with fixed shapes, XLA, eager). Priors are in pixels and
are not rescaled with the image, as in Darknet.
"""

from __future__ import annotations

import math

import keras
import numpy as np
from keras import ops

from tfdet.core.anchors import YOLOV3_PRIORS, YOLOV3_STRIDES
from tfdet.core.box_coders import DEFAULT_SCALE_CLIP, yolo_decode, yolo_encode
from tfdet.core.box_ops import clip_boxes
from tfdet.core.matchers import yolo_best_anchor_match
from tfdet.losses.yolo import BOX_LOSSES, yolo_v3_losses
from tfdet.models.detector import Detector
from tfdet.models.yolov3 import yolov3_network, yolov3_tiny_network
from tfdet.zoo import register

__all__ = ["YOLOV3_TINY_PRIORS", "YOLOV3_TINY_STRIDES", "YOLOv3Detector", "yolov3", "yolov3_tiny"]

# yolov3-tiny.cfg's COCO priors, (width, height) pixels at 416, per output as
# the released cfg's masks select them: ``mask = 1,2,3`` at stride 16 and
# ``mask = 3,4,5`` at stride 32 out of ``10,14, 23,27, 37,58, 81,82,
# 135,169, 344,319``. So (81, 82) serves both scales and (10, 14) neither, a
# known quirk of the release; following it is what makes the published
# weights decode correctly. A ground truth whose best prior is the shared one
# goes to stride 16 (the lower index), where Darknet would train both scales.
YOLOV3_TINY_PRIORS = ((23, 27), (37, 58), (81, 82), (81, 82), (135, 169), (344, 319))
YOLOV3_TINY_STRIDES = (16, 32)



def _level_key(stride: int) -> str:
    """Stride -> output key: 8 -> ``"p3"``, 16 -> ``"p4"``, 32 -> ``"p5"``."""
    return f"p{int(round(math.log2(stride)))}"


@keras.saving.register_keras_serializable(package="tfdet")
class YOLOv3Detector(Detector):
    """YOLOv3 (or YOLOv3-tiny): Darknet network, YOLOv3 assignment and losses.

    Args:
        network: built ``keras.Model``, ``[B, H, W, 3]`` images in ``[0, 1]``
            -> dict of ``[B, H/s, W/s, n * (5 + K)]`` raw outputs keyed
            ``"p{log2 s}"`` for every stride ``s`` in ``strides``.
        num_classes: ``K``.
        model_name: registry name (``"yolov3"``, ``"yolov3_tiny"``).
        priors: ``(width, height)`` pixel pairs, ``len(strides)`` equal
            groups, smallest stride's group first.
        strides: output strides, ascending.
        box_loss: ``"darknet"`` (offset BCE + log-size squared error) or
            ``"giou"``.
        ignore_threshold: predictions whose decoded box has IoU above it with
            some ground truth get no no-object loss (0.5 in YOLOv3).
        giou_weight: multiplies ``loss/giou`` (``box_loss="giou"`` only).
        scale_clip: clamp of ``tw, th`` before ``exp`` when decoding;
            ``None`` for Darknet's unclamped decoder.
        **kwargs: ``Detector`` arguments (``overrides``, ``max_detections``,
            ``score_threshold``, ``iou_threshold``, ``name``).
    """

    def __init__(
        self,
        network,
        num_classes,
        model_name,
        priors=YOLOV3_PRIORS,
        strides=YOLOV3_STRIDES,
        box_loss="darknet",
        ignore_threshold=0.5,
        giou_weight=1.0,
        scale_clip=DEFAULT_SCALE_CLIP,
        **kwargs,
    ):
        super().__init__(network, num_classes, model_name, **kwargs)
        if box_loss not in BOX_LOSSES:
            raise ValueError(f"box_loss must be one of {BOX_LOSSES}, got {box_loss!r}")
        self.strides = tuple(int(s) for s in strides)
        if len(priors) % len(self.strides):
            raise ValueError(f"{len(priors)} priors do not split evenly into {len(self.strides)} scales")
        self.priors = np.asarray(priors, dtype="float32").reshape(len(self.strides), -1, 2)  # [L, n, (w, h)]
        self.priors_per_level = int(self.priors.shape[1])
        self.level_keys = tuple(_level_key(s) for s in self.strides)
        self.box_loss = box_loss
        self.ignore_threshold = float(ignore_threshold)
        self.giou_weight = float(giou_weight)
        self.scale_clip = scale_clip

    def call(self, images, training=False):
        """Raw outputs of ``images`` ``[B, H, W, 3]`` in ``[0, 255]`` (divided by 255 here)."""
        images = ops.cast(images, "float32") / 255.0
        return self.network(images, training=training)

    # ------------------------------------------------------------------ layout

    def _grid_sizes(self, outputs):
        """Static ``[(grid_h, grid_w)]`` per level from the outputs' shapes."""
        sizes = []
        for key in self.level_keys:
            grid_h, grid_w = outputs[key].shape[1], outputs[key].shape[2]
            if grid_h is None or grid_w is None:
                raise ValueError(
                    f"output {key!r} has no static spatial size {outputs[key].shape}; trace the detector with "
                    "images of a fixed size"
                )
            sizes.append((int(grid_h), int(grid_w)))
        return sizes

    def input_size(self, outputs):
        """``(height, width)`` pixels of the images that gave ``outputs`` (Python ints)."""
        grid_h, grid_w = self._grid_sizes(outputs)[0]
        return grid_h * self.strides[0], grid_w * self.strides[0]

    def _anchor_constants(self, grid_sizes):
        """NumPy constants of the flattened anchor axis.

        Returns:
            ``cell_yx [A, 2]`` (row, col), ``prior_hw [A, 2]`` pixels and
            ``stride [A]``, in the module's anchor order.
        """
        n = self.priors_per_level
        cells, priors_hw, strides = [], [], []
        for level, ((grid_h, grid_w), stride) in enumerate(zip(grid_sizes, self.strides)):
            rows, cols, _ = np.meshgrid(np.arange(grid_h), np.arange(grid_w), np.arange(n), indexing="ij")
            cells.append(np.stack([rows, cols], axis=-1).reshape(-1, 2))
            hw = self.priors[level][:, ::-1]  # (w, h) -> (h, w)
            priors_hw.append(np.tile(hw, (grid_h * grid_w, 1)))
            strides.append(np.full(grid_h * grid_w * n, stride))
        return (
            np.concatenate(cells).astype("float32"),
            np.concatenate(priors_hw).astype("float32"),
            np.concatenate(strides).astype("float32"),
        )

    def flatten_outputs(self, outputs):
        """Per-level raw outputs to one anchor axis.

        Args:
            outputs: dict of ``[B, H_l, W_l, n * (5 + K)]``.

        Returns:
            ``[B, A, 5 + K]`` raw ``(tx, ty, tw, th, objectness, classes...)``.
        """
        flat = []
        for key in self.level_keys:
            x = outputs[key]
            grid_h, grid_w = x.shape[1], x.shape[2]
            flat.append(ops.reshape(x, (-1, grid_h * grid_w * self.priors_per_level, 5 + self.num_classes)))
        return ops.cast(ops.concatenate(flat, axis=1), "float32")

    def decode_boxes(self, raw, grid_sizes):
        """``[B, A, >=4]`` raw outputs -> ``[B, A, 4]`` yxyx pixel boxes."""
        cell_yx, prior_hw, stride = self._anchor_constants(grid_sizes)
        return yolo_decode(raw[..., :4], cell_yx, prior_hw, stride, scale_clip=self.scale_clip)

    # -------------------------------------------------------------- assignment

    def assign_targets(self, groundtruth, grid_sizes):
        """YOLOv3 targets of padded ground truth, dense over all anchors.

        Args:
            groundtruth: ``boxes [B, G, 4]`` yxyx pixels, ``classes [B, G]``
                int ``0..K-1`` (``-1`` pads), optional ``is_crowd [B, G]``.
            grid_sizes: ``[(grid_h, grid_w)]`` per level (static ints).

        Returns:
            Dict (``A`` anchors, module order): ``objectness [B, A]`` 0/1,
            ``yx [B, A, 2]`` in-cell offsets ``(ty, tx)``, ``hw [B, A, 2]``
            ``log(h / prior_h), log(w / prior_w)``, ``boxes [B, A, 4]`` the
            assigned ground truth, ``classes [B, A, K]`` multi-hot (all zero
            off positives; ``yx``, ``hw``, ``boxes`` zero there too),
            ``level``, ``prior``, ``index`` ``[B, G]`` int32 (the ground
            truth's level, prior within the level and anchor index; -1 for
            padding and crowd).
        """
        n = self.priors_per_level
        num_classes = self.num_classes
        gt_boxes = ops.cast(groundtruth["boxes"], "float32")
        gt_classes = ops.cast(groundtruth["classes"], "int32")
        valid = gt_classes >= 0
        if groundtruth.get("is_crowd") is not None:
            valid = ops.logical_and(valid, ops.cast(groundtruth["is_crowd"], "int32") == 0)

        level, prior = yolo_best_anchor_match(gt_boxes, valid, self.priors)  # [B, G] each
        level_c = ops.maximum(level, 0)
        prior_c = ops.maximum(prior, 0)

        sizes = np.asarray(grid_sizes, dtype="int32")  # [L, 2]
        counts = sizes[:, 0] * sizes[:, 1] * n
        offsets = np.concatenate([[0], np.cumsum(counts)[:-1]]).astype("int32")
        num_anchors = int(np.sum(counts))
        stride = ops.take(np.asarray(self.strides, "float32"), level_c)  # [B, G]
        grid_h = ops.take(sizes[:, 0], level_c)
        grid_w = ops.take(sizes[:, 1], level_c)
        offset = ops.take(offsets, level_c)
        prior_wh = ops.take(np.reshape(self.priors, (-1, 2)), level_c * n + prior_c, axis=0)  # [B, G, 2]
        prior_hw = ops.flip(prior_wh, axis=-1)

        ymin, xmin, ymax, xmax = ops.unstack(gt_boxes, num=4, axis=-1)
        centre_y, centre_x = (ymin + ymax) * 0.5, (xmin + xmax) * 0.5
        row = ops.clip(ops.cast(ops.floor(centre_y / stride), "int32"), 0, grid_h - 1)
        col = ops.clip(ops.cast(ops.floor(centre_x / stride), "int32"), 0, grid_w - 1)
        index = ops.where(valid, offset + (row * grid_w + col) * n + prior_c, -1)  # [B, G]

        cell_yx = ops.cast(ops.stack([row, col], axis=-1), "float32")
        encoded = yolo_encode(gt_boxes, cell_yx, prior_hw, stride)  # (tx, ty, tw, th)
        tx, ty, tw, th = ops.unstack(encoded, num=4, axis=-1)
        per_gt = ops.stack([ty, tx, th, tw, ymin, xmin, ymax, xmax], axis=-1)  # [B, G, 8]
        # Padding (zero boxes) encodes to log(0); zero it so 0 * target stays 0.
        per_gt = ops.where(ops.expand_dims(valid, -1), per_gt, 0.0)

        # [B, G, A]: ground truth g is assigned to anchor a.
        assigned = ops.cast(ops.expand_dims(index, -1) == ops.arange(num_anchors, dtype="int32"), "float32")
        objectness = ops.max(assigned, axis=1)  # [B, A]
        # Darknet overwrites in ground-truth order: the last one assigned wins.
        order = ops.reshape(ops.arange(1, gt_boxes.shape[1] + 1, dtype="float32"), (1, -1, 1))
        owner = ops.cast(ops.argmax(assigned * order, axis=1), "int32")  # [B, A]
        owner = ops.broadcast_to(ops.expand_dims(owner, -1), (ops.shape(owner)[0], num_anchors, 8))
        targets = ops.take_along_axis(per_gt, owner, axis=1) * ops.expand_dims(objectness, -1)  # [B, A, 8]

        one_hot = ops.one_hot(ops.maximum(gt_classes, 0), num_classes) * ops.expand_dims(
            ops.cast(valid, "float32"), -1
        )  # [B, G, K]
        classes = ops.minimum(ops.einsum("bga,bgk->bak", assigned, one_hot), 1.0)

        return {
            "objectness": ops.stop_gradient(objectness),
            "yx": ops.stop_gradient(targets[..., 0:2]),
            "hw": ops.stop_gradient(targets[..., 2:4]),
            "boxes": ops.stop_gradient(targets[..., 4:8]),
            "classes": ops.stop_gradient(classes),
            "level": level,
            "prior": prior,
            "index": index,
        }

    # ------------------------------------------------------------------ losses

    def compute_losses(self, outputs, groundtruth, normalizer=None):
        """YOLOv3 loss terms.

        Args:
            outputs: the detector's raw outputs (dict per level).
            groundtruth: ``boxes [B, G, 4]`` yxyx pixels of the input image,
                ``classes [B, G]`` int (``-1`` pads), optional ``is_crowd``.
            normalizer: the divisor instead of ``B`` (the global batch size
                under a distribution strategy; see ``Detector.loss_normalizer``).

        Returns:
            Scalars ``loss/yx``, ``loss/hw`` (or ``loss/giou`` with
            ``box_loss="giou"``), ``loss/objectness``, ``loss/class`` and
            their sum ``loss``; each summed over anchors and divided by ``B``.
        """
        grid_sizes = self._grid_sizes(outputs)
        image_size = self.input_size(outputs)
        targets = self.assign_targets(groundtruth, grid_sizes)
        raw = self.flatten_outputs(outputs)  # [B, A, 5 + K]
        pred_boxes = self.decode_boxes(raw, grid_sizes)
        y_true = {
            "objectness": targets["objectness"],
            "yx": targets["yx"],
            "hw": targets["hw"],
            "boxes": targets["boxes"],
            "classes": targets["classes"],
            "gt_boxes": ops.cast(groundtruth["boxes"], "float32"),
            "gt_classes": ops.cast(groundtruth["classes"], "int32"),
        }
        y_pred = {
            "objectness": raw[..., 4],
            "yx": ops.stack([raw[..., 1], raw[..., 0]], axis=-1),
            "hw": ops.stack([raw[..., 3], raw[..., 2]], axis=-1),
            "classes": raw[..., 5:],
            "boxes": pred_boxes,
        }
        return yolo_v3_losses(y_true, y_pred, image_size, ignore_threshold=self.ignore_threshold,
                              box_loss=self.box_loss, giou_weight=self.giou_weight, normalizer=normalizer)

    # ---------------------------------------------------------- postprocessing

    def postprocess(self, outputs):
        """Decoded, scored and NMS-selected detections.

        Args:
            outputs: the detector's raw outputs.

        Returns:
            ``boxes [B, D, 4]`` yxyx pixels clipped to the image, ``scores
            [B, D]`` (``sigmoid(objectness) * sigmoid(class)``), ``classes
            [B, D]`` int32 (``-1`` pads), ``num_detections [B]`` int32.
        """
        grid_sizes = self._grid_sizes(outputs)
        height, width = self.input_size(outputs)
        raw = self.flatten_outputs(outputs)
        boxes = clip_boxes(self.decode_boxes(raw, grid_sizes), float(height), float(width))
        scores = ops.sigmoid(raw[..., 4:5]) * ops.sigmoid(raw[..., 5:])  # [B, A, K]
        return self.select_detections(boxes, scores)


def _size_pair(image_size):
    if image_size is None:
        return None
    if isinstance(image_size, (int, np.integer)):
        image_size = (int(image_size), int(image_size))
    height, width = (int(v) for v in image_size)
    if height % 32 or width % 32:
        raise ValueError(f"image_size must be divisible by 32, got {(height, width)}")
    return height, width


def _build(network_fn, model_name, default_priors, strides, num_classes, overrides):
    """Shared body of the builders: network, detector, one call on zeros."""
    options = dict(overrides)
    image_size = _size_pair(options.pop("image_size", 416))
    build_size = image_size or _size_pair(options.pop("build_size", 416))
    options.pop("build_size", None)
    priors = options.pop("priors", None) or default_priors
    name = options.pop("name", model_name)
    width_multiplier = float(options.pop("width_multiplier", 1.0))
    input_shape = (None, None, 3) if image_size is None else (image_size[0], image_size[1], 3)
    network = network_fn(num_classes, input_shape=input_shape, name=f"{model_name}_network",
                         width_multiplier=width_multiplier)
    detector = YOLOv3Detector(
        network, num_classes, model_name, priors=tuple(tuple(p) for p in priors), strides=strides,
        overrides=overrides, name=name, **options,
    )
    detector(np.zeros((1, build_size[0], build_size[1], 3), dtype="float32"))
    return detector


@register("yolov3")
def yolov3(num_classes, **overrides):
    """YOLOv3 (Darknet-53, strides 8/16/32, COCO priors), built.

    Args:
        num_classes: ``K``.
        **overrides: ``image_size`` (int or ``(h, w)``, divisible by 32; 416 by
            default; ``None`` for an any-size input ``(None, None, 3)``, then
            built at ``build_size``, 416), ``priors`` (nine ``(w, h)``
            pixel pairs), ``width_multiplier`` (hidden channels scaled, same
            topology; 1.0, the published network, is the only width that
            takes Darknet weights), and the ``YOLOv3Detector`` / ``Detector`` keyword
            arguments (``box_loss``, ``ignore_threshold``, ``giou_weight``,
            ``scale_clip``, ``max_detections``,
            ``score_threshold``, ``iou_threshold``, ``name``).

    Returns:
        A built :class:`YOLOv3Detector`; outputs ``"p3"``, ``"p4"``, ``"p5"``.
    """
    return _build(yolov3_network, "yolov3", YOLOV3_PRIORS, YOLOV3_STRIDES, num_classes, overrides)


@register("yolov3_tiny")
def yolov3_tiny(num_classes, **overrides):
    """YOLOv3-tiny (strides 16/32, ``YOLOV3_TINY_PRIORS``), built.

    Args:
        num_classes: ``K``.
        **overrides: as :func:`yolov3` (``priors``: six ``(w, h)`` pairs,
            three per scale, stride 16 first; default ``YOLOV3_TINY_PRIORS``,
            the released cfg's).

    Returns:
        A built :class:`YOLOv3Detector`; outputs ``"p4"``, ``"p5"``.
    """
    return _build(yolov3_tiny_network, "yolov3_tiny", YOLOV3_TINY_PRIORS, YOLOV3_TINY_STRIDES, num_classes,
                  overrides)
