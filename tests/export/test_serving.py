"""The serving graph's mapping back to the original image, with hand-computed numbers.

A stand-in detector returns fixed detections in model-input pixels, so every
expected number below is worked out by hand from the resize rules:
stretch 32x32 -> 64x64 scales by 2 on both axes; letterbox 32x64 -> 64x64
scales by s = min(64/32, 64/64) = 1 and puts the content in rows 0..31.
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from tfdet.export.serving import DetectionServing, detection_settings


class StandInDetector:
    """Two detections and one padding slot, in model-input pixels; optional masks."""

    max_detections = 3
    score_threshold = 0.05

    def __init__(self, masks=None):
        self.masks = masks
        self.seen_images = None

    def predict_detections(self, images):
        self.seen_images = images
        batch = tf.shape(images)[0]
        boxes = tf.constant([[8.0, 16.0, 40.0, 48.0], [0.0, 0.0, 64.0, 64.0], [0.0, 0.0, 0.0, 0.0]])
        detections = {
            "boxes": tf.tile(boxes[None], [batch, 1, 1]),
            "scores": tf.tile(tf.constant([[0.9, 0.6, 0.0]]), [batch, 1]),
            "classes": tf.tile(tf.constant([[2, 0, -1]], tf.int32), [batch, 1]),
            "num_detections": tf.fill([batch], 2),
        }
        if self.masks is not None:
            detections["masks"] = tf.tile(tf.constant(self.masks)[None], [batch, 1, 1, 1])
        return detections


def test_stretch_boxes_classes_and_padding():
    serving = DetectionServing(StandInDetector(), (64, 64), "stretch")
    outputs = serving.from_images(tf.zeros([2, 32, 32, 3], tf.uint8))
    # [8, 16, 40, 48] / 2 = [4, 8, 20, 24] pixels of 32x32 -> / 32.
    expected_boxes = [[0.125, 0.25, 0.625, 0.75], [0.0, 0.0, 1.0, 1.0], [0.0, 0.0, 0.0, 0.0]]
    np.testing.assert_allclose(outputs["detection_boxes"][1], expected_boxes, atol=1e-6)
    np.testing.assert_array_equal(outputs["detection_classes"][0], [3.0, 1.0, 0.0])  # class + 1, padding 0
    np.testing.assert_allclose(outputs["detection_scores"][0], [0.9, 0.6, 0.0])
    np.testing.assert_array_equal(outputs["num_detections"], [2.0, 2.0])
    assert all(value.dtype == tf.float32 for value in outputs.values())


def test_letterbox_boxes_are_clipped_to_the_content():
    serving = DetectionServing(StandInDetector(), (64, 64), "letterbox")
    outputs = serving.from_images(tf.fill([1, 32, 64, 3], tf.constant(200, tf.uint8)))
    # s = 1: [8, 16, 40, 48] -> y / 32, x / 64; ymax 40 lies in the padding -> clipped to 1.
    np.testing.assert_allclose(outputs["detection_boxes"][0, 0], [0.25, 0.25, 1.0, 0.75], atol=1e-6)
    seen = serving.detector.seen_images.numpy()[0]
    assert np.all(seen[:32] == 200) and np.all(seen[32:] == 0)  # content top-left, zero padding


def test_masks_follow_the_content_back_to_the_original_size():
    masks = np.zeros([3, 64, 64], np.float32)
    masks[0, :16, :] = 1.0  # the top 16 model rows = the top half of the 32-row content
    masks[1] = 1.0
    serving = DetectionServing(StandInDetector(masks), (64, 64), "letterbox")
    outputs = serving.from_images(tf.zeros([1, 32, 64, 3], tf.uint8))
    result = outputs["detection_masks"].numpy()
    assert result.shape == (1, 3, 32, 64)
    np.testing.assert_allclose(result[0, 0, :16], 1.0)
    np.testing.assert_allclose(result[0, 0, 16:], 0.0)
    np.testing.assert_allclose(result[0, 1], 1.0)  # padding rows of the model input are cut away
    np.testing.assert_allclose(result[0, 2], 0.0)  # padding slot


def test_detection_settings_restore_the_detector():
    detector = StandInDetector()
    with detection_settings(detector, max_detections=7, score_threshold=0.5):
        assert (detector.max_detections, detector.score_threshold) == (7, 0.5)
    assert (detector.max_detections, detector.score_threshold) == (3, 0.05)
