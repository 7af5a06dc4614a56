"""The serving graph: raw inputs -> the TF OD API detection outputs.

One function per input kind, all ending in the same post-processing:

* ``images``: uint8 (or float) ``[N, h, w, 3]`` RGB, values 0..255.
* ``encoded``: ``[N]`` JPEG/PNG/GIF/BMP bytes, decoded with
  ``tf.io.decode_image(channels=3, expand_animations=False)``.
* ``tf_example``: ``[N]`` serialized tf.Example with ``image/encoded``.

Every image is resized on its own with ``tfdet.data.resize.resize_image``
(the function the training pipeline uses, so serving sees exactly what
training saw), the batch goes through ``detector.predict_detections``, and
the boxes are mapped back to the original image: ``box / [sy, sx, sy, sx]``
(the content of a letterbox sits at the top-left, so there is no offset),
divided by ``[h, w, h, w]`` and clipped to ``[0, 1]``.

Outputs (``D = detector.max_detections`` at trace time):

* ``detection_boxes`` float32 ``[N, D, 4]`` normalised yxyx of the original image;
* ``detection_scores`` float32 ``[N, D]``;
* ``detection_classes`` float32 ``[N, D]``: label-map ids ``class + 1``, 0 in padding;
* ``num_detections`` float32 ``[N]``;
* ``detection_masks`` float32 ``[N, D, h, w]`` when the detector returns
  ``masks`` (model-input-sized probabilities ``[N, D, H, W]``): cropped to the
  content, resized to the original image. Needs one original size per batch
  (true for ``images``; for ``encoded``/``tf_example`` all images must share a size).

Padding slots have zero boxes, scores and classes.
"""

from __future__ import annotations

import contextlib

import tensorflow as tf

from tfdet.export.errors import ExportError
from tfrecord_tools.schema import IMAGE_ENCODED

OUTPUT_KEYS = ("detection_boxes", "detection_scores", "detection_classes", "num_detections")
MASK_KEY = "detection_masks"
INPUT_KEY = "input_tensor"
SIGNATURES = ("serving_default", "encoded_image_string_tensor", "tf_example")


@contextlib.contextmanager
def detection_settings(detector, max_detections=None, score_threshold=None):
    """Temporarily overrides the detector's NMS output size and score threshold.

    The detector reads both when its post-processing is traced, so every
    tracing (and the saving of the traced functions) happens inside this block.
    """
    saved = detector.max_detections, detector.score_threshold
    try:
        if max_detections is not None:
            if int(max_detections) < 1:
                raise ExportError(f"max_detections must be >= 1, got {max_detections}")
            detector.max_detections = int(max_detections)
        if score_threshold is not None:
            detector.score_threshold = float(score_threshold)
        yield detector
    finally:
        detector.max_detections, detector.score_threshold = saved


class DetectionServing:
    """Builds the serving computations of one detector at one model-input size.

    Args:
        detector: a built ``tfdet`` detector.
        image_size: ``(H, W)`` model input size (static Python ints).
        resize_mode: ``"stretch"`` or ``"letterbox"``.
    """

    def __init__(self, detector, image_size, resize_mode):
        self.detector = detector
        self.image_size = tuple(int(v) for v in image_size)
        self.resize_mode = resize_mode
        self._detect = self._detect_and_map

    def share_detection_graph(self) -> None:
        """Traces the detector and its post-processing once for every input kind.

        The three signatures then call one ``tf.function`` of the resized
        batch instead of tracing the network and the NMS loop three times,
        which makes exporting about twice as fast. Only for dynamic batches:
        fixed-shape graphs (TFLite, ONNX) keep every shape static.
        """
        height, width = self.image_size
        self._detect = tf.function(self._detect_and_map, input_signature=[
            tf.TensorSpec([None, height, width, 3], tf.float32),
            tf.TensorSpec([None, 2], tf.float32),
            tf.TensorSpec([None, 2], tf.float32),
        ])

    # ------------------------------------------------------------ preprocessing

    def _resize_one(self, image):
        """``[h, w, 3]`` -> (model input ``[H, W, 3]`` float32, scale ``[2]``, original ``(h, w)`` float32)."""
        from tfdet.data.resize import resize_image

        resized, scale = resize_image(image, self.image_size, self.resize_mode)
        original = tf.cast(tf.shape(image)[:2], tf.float32)
        return resized, scale, original

    def _map(self, function, inputs):
        """Applies ``function`` per image; a Python loop when the batch size is static.

        The static loop keeps fixed-shape graphs (TFLite, ONNX) free of
        TensorList ops; the dynamic case uses ``tf.map_fn``.
        """
        height, width = self.image_size
        batch = inputs.shape[0]
        if batch is not None:
            parts = [function(inputs[i]) for i in range(batch)]
            return tuple(tf.stack([part[k] for part in parts]) for k in range(3))
        signature = (
            tf.TensorSpec([height, width, 3], tf.float32),
            tf.TensorSpec([2], tf.float32),
            tf.TensorSpec([2], tf.float32),
        )
        return tf.map_fn(function, inputs, fn_output_signature=signature)

    @staticmethod
    def _decode(encoded):
        image = tf.io.decode_image(encoded, channels=3, expand_animations=False)
        return tf.ensure_shape(image, [None, None, 3])

    # ------------------------------------------------------------------ graphs

    def from_images(self, images):
        """Detections of ``[N, h, w, 3]`` uint8/float RGB images (0..255)."""
        return self._detect(*self._map(self._resize_one, images))

    def from_encoded(self, encoded):
        """Detections of ``[N]`` encoded image strings (JPEG, PNG, GIF, BMP)."""
        return self._detect(*self._map(lambda data: self._resize_one(self._decode(data)), encoded))

    def from_tf_examples(self, serialized):
        """Detections of ``[N]`` serialized tf.Example protos carrying ``image/encoded``."""
        features = tf.io.parse_example(serialized, {IMAGE_ENCODED: tf.io.FixedLenFeature([], tf.string)})
        return self.from_encoded(features[IMAGE_ENCODED])

    # --------------------------------------------------------- post-processing

    def _detect_and_map(self, images, scales, originals):
        """Runs the detector on model-input images and maps its detections back.

        Args:
            images: ``[N, H, W, 3]`` float32 model inputs.
            scales: ``[N, 2]`` ``(sy, sx)`` of each image.
            originals: ``[N, 2]`` ``(h, w)`` of each original image, float32.
        """
        detections = self.detector.predict_detections(images)
        classes = tf.cast(detections["classes"], tf.int32)
        valid = classes >= 0
        # Model-input pixels -> original pixels -> [0, 1] of the original image.
        divisor = tf.tile(scales * originals, [1, 2])[:, None, :]
        boxes = tf.clip_by_value(tf.cast(detections["boxes"], tf.float32) / divisor, 0.0, 1.0)
        outputs = {
            "detection_boxes": tf.where(valid[..., None], boxes, 0.0),
            "detection_scores": tf.where(valid, tf.cast(detections["scores"], tf.float32), 0.0),
            "detection_classes": tf.cast(tf.where(valid, classes + 1, 0), tf.float32),
            "num_detections": tf.cast(detections["num_detections"], tf.float32),
        }
        if "masks" in detections:
            outputs[MASK_KEY] = self._masks_to_original(detections["masks"], scales, originals, valid)
        return outputs

    def _masks_to_original(self, masks, scales, originals, valid):
        """``[N, D, H, W]`` model-input masks -> ``[N, D, h, w]`` masks of the (shared) original size."""
        height, width = self.image_size
        # One output size per batch: refuse a mixed-size batch rather than mis-size its masks.
        same_size = tf.debugging.assert_equal(
            originals, tf.broadcast_to(originals[:1], tf.shape(originals)),
            message="detection_masks: every image of a batch must have the same size")
        with tf.control_dependencies([same_size]):
            original = tf.cast(originals[0], tf.int32)
        # The content occupies the top-left (h * sy, w * sx) of the model input.
        content = tf.cast(tf.round(originals[0] * scales[0]), tf.int32)
        content = tf.clip_by_value(content, 1, tf.constant([height, width]))
        masks = tf.cast(masks, tf.float32)[:, :, : content[0], : content[1]]
        shape = tf.shape(masks)
        flat = tf.reshape(masks, tf.concat([[-1], shape[2:], [1]], axis=0))
        resized = tf.image.resize(flat, original, method="bilinear")
        resized = tf.reshape(resized, tf.concat([shape[:2], original], axis=0))
        return tf.where(valid[..., None, None], resized, 0.0)
