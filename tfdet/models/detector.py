"""The interface every tfdet detector follows.

A detector is a ``keras.Model`` around a network (images -> raw outputs) that
also knows its losses and its post-processing:

* ``model(images, training=...)``: the network's raw outputs, a dict of
  tensors (logits, encoded boxes), exactly what the losses consume.
* ``model.compute_losses(outputs, groundtruth)``: a dict of scalar loss
  terms keyed ``loss/<term>`` plus ``loss``, their weighted sum. Target
  assignment happens here, in-graph with ``tfdet.core`` (static shapes), so
  the data pipeline only pads ground truth and the same step compiles under
  XLA and runs under JAX.
* ``model.loss_normalizer(groundtruth)``: this replica's count that the
  losses are divided by (the batch size here; positives for detectors that
  normalise by positives). Under a distribution strategy the trainer sums it
  over replicas and passes the sum as ``compute_losses(..., normalizer=)``,
  then sums the replicas' gradients, so N replicas equal one device.
* ``model.postprocess(outputs)``: padded detections, ``boxes [B, D, 4]``
  yxyx pixels of the input image, ``scores [B, D]``, ``classes [B, D]``
  int32 ``0..K-1`` (``-1`` in padding) and ``num_detections [B]`` int32.

Ground truth, as the data pipeline pads it: ``{"boxes": [B, G, 4]`` yxyx
pixels of the input image, ``"classes": [B, G]`` int32 ``0..K-1`` with
``-1`` in padding slots, optionally ``"is_crowd": [B, G]`` (0/1)``}``.

A detector is built by the registry (``tfdet.build_model``) and saves as a
``.keras`` file: its config is the registry name, ``num_classes`` and the
overrides, so loading rebuilds the same graph and restores the weights.
"""

from __future__ import annotations

from typing import Any

import keras


@keras.saving.register_keras_serializable(package="tfdet")
class Detector(keras.Model):
    """Base class: a network plus losses and post-processing.

    Subclasses implement :meth:`compute_losses` and :meth:`postprocess`.

    Args:
        network: a built ``keras.Model`` mapping images ``[B, H, W, 3]``
            (float, the detector's own preprocessing inside) to a dict of raw
            outputs.
        num_classes: foreground classes ``K``.
        model_name: the registry name that builds this detector.
        overrides: the keyword arguments given to the builder, kept so the
            detector rebuilds identically from its config.
        max_detections: ``D``, the fixed number of output slots.
        score_threshold, iou_threshold: post-processing NMS settings.
    """

    #: How images are brought to ``image_size`` (``tfdet.data.resize``):
    #: ``"stretch"`` ignores the aspect ratio, ``"letterbox"`` keeps it and
    #: pads bottom/right. Training, evaluation and export all use this.
    resize_mode = "letterbox"

    def __init__(
        self,
        network: keras.Model,
        num_classes: int,
        model_name: str,
        overrides: dict | None = None,
        max_detections: int = 100,
        score_threshold: float = 0.05,
        iou_threshold: float = 0.5,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.network = network
        self.num_classes = int(num_classes)
        self.model_name = model_name
        self.overrides = dict(overrides or {})
        self.max_detections = int(max_detections)
        self.score_threshold = float(score_threshold)
        self.iou_threshold = float(iou_threshold)

    def call(self, images, training: bool = False) -> dict:
        return self.network(images, training=training)

    @property
    def image_size(self) -> tuple[int | None, int | None]:
        """The network's static input ``(height, width)``; ``None`` where any size works."""
        shape = self.network.inputs[0].shape
        return shape[1], shape[2]

    def loss_normalizer(self, groundtruth: dict):
        """This replica's divisor of the losses, a float32 scalar: the batch size by default."""
        from keras import ops

        return ops.cast(ops.shape(groundtruth["classes"])[0], "float32")

    def compute_losses(self, outputs: dict, groundtruth: dict, normalizer=None) -> dict:
        """Loss terms ``loss/<term>`` and their sum ``loss``, all scalars.

        ``normalizer``: the divisor summed over replicas (see
        :meth:`loss_normalizer`); ``None`` uses this batch's own.
        """
        raise NotImplementedError(f"{type(self).__name__} does not define its losses")

    def postprocess(self, outputs: dict) -> dict:
        """Padded detections: ``boxes``, ``scores``, ``classes``, ``num_detections``."""
        raise NotImplementedError(f"{type(self).__name__} does not define its post-processing")

    def select_detections(self, boxes, scores, soft_nms_sigma: float = 0.0) -> dict:
        """Per-class NMS down to ``max_detections`` padded slots, boxes clipped to the image.

        The one post-processing path of every detector (``tfdet.core.nms``).

        Args:
            boxes: ``[B, A, 4]`` decoded yxyx pixels (or ``[B, A, K, 4]``
                per class).
            scores: ``[B, A, K]`` class probabilities, background excluded.
            soft_nms_sigma: Gaussian soft-NMS when ``> 0``.
        """
        from keras import ops

        from tfdet.core.box_ops import clip_boxes
        from tfdet.core.nms import batched_multiclass_nms

        height, width = self.image_size
        if height is not None and width is not None:
            boxes = clip_boxes(boxes, float(height), float(width))
        detections = batched_multiclass_nms(
            boxes, scores, max_detections=self.max_detections, iou_threshold=self.iou_threshold,
            score_threshold=self.score_threshold, soft_nms_sigma=soft_nms_sigma,
        )
        detections["classes"] = ops.cast(detections["classes"], "int32")
        return detections

    def predict_detections(self, images) -> dict:
        """``postprocess(self(images))``: images to padded detections."""
        return self.postprocess(self(images, training=False))

    def get_config(self) -> dict:
        # The weights travel in the archive: a saved detector must rebuild
        # without the backbone file it was first initialised from.
        overrides = {key: value for key, value in self.overrides.items() if key != "backbone_weights"}
        return {
            "model_name": self.model_name,
            "num_classes": self.num_classes,
            "overrides": overrides,
            "max_detections": self.max_detections,
            "score_threshold": self.score_threshold,
            "iou_threshold": self.iou_threshold,
            "name": self.name,
        }

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> "Detector":
        from tfdet.zoo import build_model

        config = dict(config)
        overrides = dict(config.pop("overrides", {}))
        for key in ("max_detections", "score_threshold", "iou_threshold"):
            if key in config:
                overrides[key] = config.pop(key)
        config.pop("name", None)
        return build_model(config.pop("model_name"), config.pop("num_classes"), **overrides)
