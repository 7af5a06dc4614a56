"""Evaluation of a detector on the eval records: one pass, COCO or VOC metrics.

The eval dataset (``tfdet.data.build_dataset(training=False)``) is read in
file order. Every batch is padded to the full global batch (padding rows are
marked invalid and dropped on the host), so the prediction function sees one
static shape and every replica gets the same share. Predictions
(``detector.predict_detections``, in a ``tf.function``) and ground truth are
mapped back to the ORIGINAL image pixels with ``features["scale"]``
(``original = model_input / (sy, sx, sy, sx)``, clipped to the original
size), then scored with ``tfdet.evaluation``:

* ``"coco"``: a COCO ground-truth dict is built from the records (category
  ``k + 1`` named after the label map, ``iscrowd`` from the records) and
  ``CocoEvaluator`` returns ``AP, AP50, AP75, APs, ...``;
* ``"voc"``: ``VocEvaluator`` (IoU 0.5, all-point, difficult objects
  ignored) returns ``mAP`` and ``AP/<class>``.

Ground truth comes from the padded records, so an image with more objects
than ``data.max_instances`` is scored on its first ``max_instances``.

Distribution: single-worker strategies split each padded batch over the
replicas with ``strategy.run``; under ``MultiWorkerMirroredStrategy`` only the
chief evaluates, calling the model directly (no cross-worker ops), while the
other workers wait at their next collective.
"""

from __future__ import annotations

import math

import numpy as np
import tensorflow as tf

from tfdet.training.strategy import is_multi_worker

METRICS = ("coco", "voc")


class EvaluationError(ValueError):
    """Evaluation settings or data that cannot be used (names the key or file)."""


def _pad_batch(batch_size):
    """A ``dataset.map`` function padding every tensor's batch axis to ``batch_size``; adds ``valid``."""

    def pad(features, groundtruth):
        count = tf.shape(features["images"])[0]
        missing = batch_size - count

        def pad_tensor(tensor):
            paddings = [[0, missing]] + [[0, 0]] * (len(tensor.shape) - 1)
            padded = tf.pad(tensor, paddings)
            padded.set_shape([batch_size] + tensor.shape.as_list()[1:])
            return padded

        features = {k: pad_tensor(v) for k, v in features.items() if v.dtype != tf.string}
        features["valid"] = pad_tensor(tf.ones([count], tf.bool))
        groundtruth = {k: pad_tensor(v) for k, v in groundtruth.items() if k != "masks"}
        if "classes" in groundtruth:
            # Padding rows hold no objects (class -1), like padded slots.
            rows = tf.range(batch_size) < count
            groundtruth["classes"] = tf.where(rows[:, None], groundtruth["classes"], -1)
        return features, groundtruth

    return pad


class Evaluator:
    """Runs one evaluation pass and returns the metrics.

    Args:
        detector: the (possibly mirrored) detector.
        strategy: the training strategy.
        eval_files: file pattern of the eval records.
        class_names: ``K`` names; model class ``k`` is label-map id ``k + 1``.
        image_size: ``(H, W)`` eval input size.
        resize_mode: the detector's ``resize_mode``.
        metric: ``"coco"`` or ``"voc"``.
        batch_size: ``eval.batch_size`` (global; rounded up to a multiple of the replicas).
        max_images: evaluate only the first ``max_images`` images (``None``: all).
        max_instances: ``data.max_instances``.
    """

    def __init__(self, detector, strategy, eval_files, class_names, image_size, resize_mode, metric="coco",
                 batch_size=8, max_images=None, max_instances=100):
        if metric not in METRICS:
            raise EvaluationError(f"eval.metric: unknown metric {metric!r}; known: {', '.join(METRICS)}")
        if not eval_files:
            raise EvaluationError("data.eval_files: empty; evaluation needs eval records")
        if image_size is None or None in tuple(image_size):
            raise EvaluationError("data.image_size: evaluation needs a fixed input size")
        self.detector = detector
        self.strategy = strategy
        self.class_names = list(class_names)
        self.metric = metric
        self.max_images = None if max_images is None else int(max_images)
        self.image_size = tuple(int(s) for s in image_size)
        self.distributed = not is_multi_worker(strategy)
        replicas = strategy.num_replicas_in_sync if self.distributed else 1
        self.per_replica = max(1, math.ceil(int(batch_size) / replicas))
        self.global_batch = self.per_replica * replicas

        from tfdet.data import build_dataset

        dataset = build_dataset(
            eval_files, image_size=self.image_size, resize_mode=resize_mode, batch_size=self.global_batch,
            training=False, augmentation="none", max_instances=max_instances, drop_remainder=False,
        )
        if self.max_images is not None:
            dataset = dataset.take(math.ceil(self.max_images / self.global_batch))
        self.dataset = dataset.map(_pad_batch(self.global_batch)).prefetch(2)
        self._predict = self._make_predict()

    def _make_predict(self):
        detector, strategy, per_replica = self.detector, self.strategy, self.per_replica
        if not self.distributed:
            return tf.function(lambda images: detector.predict_detections(images))

        @tf.function
        def predict(images):
            def shard(context):
                start = context.replica_id_in_sync_group * per_replica
                return images[start:start + per_replica]

            sharded = strategy.experimental_distribute_values_from_function(shard)
            outputs = strategy.run(detector.predict_detections, args=(sharded,))
            return {key: tf.concat(strategy.experimental_local_results(value), axis=0)
                    for key, value in outputs.items()}

        return predict

    def run(self, summary_images: int = 0):
        """One pass over the eval records.

        Returns:
            ``(metrics, results, examples)``: the metrics dict; the COCO
            result list (original-image pixels, ``category_id = class + 1``);
            and ``(images, detections)`` of the first ``summary_images``
            images for TensorBoard (model-input pixels).
        """
        collector = _Collector(self.class_names, self.metric)
        examples = None
        seen = 0
        for features, groundtruth in self.dataset:
            detections = {k: v.numpy() for k, v in self._predict(features["images"]).items()}
            valid = features["valid"].numpy()
            if self.max_images is not None:
                valid &= (seen + np.arange(len(valid))) < self.max_images
            seen += int(valid.sum())
            host = {k: v.numpy() for k, v in features.items() if k != "images"}
            truth = {k: v.numpy() for k, v in groundtruth.items()}
            collector.add(host, truth, detections, valid)
            if examples is None and summary_images > 0:
                keep = np.flatnonzero(valid)[:summary_images]
                examples = (features["images"].numpy()[keep], {k: v[keep] for k, v in detections.items()})
        if seen == 0:
            raise EvaluationError("data.eval_files: the eval dataset yielded no images")
        return collector.evaluate(), collector.results, examples


def to_original(boxes, scale, original_size):
    """Model-input yxyx pixel boxes ``[N, 4]`` -> original-image pixels, clipped to the image."""
    sy, sx = float(scale[0]), float(scale[1])
    boxes = np.asarray(boxes, np.float64) / np.array([sy, sx, sy, sx])
    height, width = float(original_size[0]), float(original_size[1])
    return np.clip(boxes, 0.0, [height, width, height, width])


class _Collector:
    """Host-side accumulation of ground truth and detections in original-image pixels."""

    def __init__(self, class_names, metric):
        self.class_names = class_names
        self.metric = metric
        self.images, self.annotations, self.results = [], [], []
        self.voc = None
        if metric == "voc":
            from tfdet.evaluation.voc import VocEvaluator

            self.voc = VocEvaluator(class_names, iou_threshold=0.5, method="allpoint")

    def add(self, features, groundtruth, detections, valid):
        from tfdet.evaluation.coco import predictions_to_results

        category_ids = list(range(1, len(self.class_names) + 1))
        for b in np.flatnonzero(valid):
            image_id = int(features["image_id"][b])
            scale, size = features["scale"][b], features["original_size"][b]
            self.images.append({"id": image_id, "height": int(size[0]), "width": int(size[1])})
            classes = groundtruth["classes"][b]
            keep = classes >= 0
            gt_boxes = to_original(groundtruth["boxes"][b][keep], scale, size)
            crowd = groundtruth.get("is_crowd", np.zeros_like(classes))[b][keep]
            for box, cls, is_crowd in zip(gt_boxes, classes[keep], crowd):
                height, width = box[2] - box[0], box[3] - box[1]
                self.annotations.append({
                    "id": len(self.annotations) + 1, "image_id": image_id, "category_id": int(cls) + 1,
                    "bbox": [float(box[1]), float(box[0]), float(width), float(height)],
                    "area": float(width * height), "iscrowd": int(is_crowd),
                })
            count = int(detections["num_detections"][b])
            boxes = to_original(detections["boxes"][b][:count], scale, size)
            self.results.extend(predictions_to_results(
                image_id, boxes, detections["scores"][b][:count], detections["classes"][b][:count], category_ids))
            if self.voc is not None:
                difficult = groundtruth.get("difficult")
                self.voc.add_groundtruth(image_id, gt_boxes, classes[keep],
                                         None if difficult is None else difficult[b][keep])
                self.voc.add_predictions(image_id, boxes, detections["scores"][b][:count],
                                         detections["classes"][b][:count])

    def coco_groundtruth(self):
        categories = [{"id": k + 1, "name": name} for k, name in enumerate(self.class_names)]
        return {"images": self.images, "annotations": self.annotations, "categories": categories}

    def evaluate(self):
        if self.voc is not None:
            return self.voc.evaluate()
        from tfdet.evaluation.coco import CocoEvaluator

        evaluator = CocoEvaluator(self.coco_groundtruth(), iou_type="bbox")
        evaluator.add_results(self.results)
        return evaluator.evaluate()
