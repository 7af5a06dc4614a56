"""Shared pieces of the export and inference tests: tiny detectors, images, the reference path.

The reference for every serving output is computed here without the serving
graph: ``resize_image`` (the pipeline's function) to the model input, the
Python detector's ``predict_detections``, then the boxes divided by scale
factors written out by hand for each image size.
"""

from __future__ import annotations

import keras
import numpy as np
import tensorflow as tf

from tfdet.data.resize import resize_image
from tfdet.zoo import build_model

SIZE = 64
NUM_CLASSES = 3
MAX_DETECTIONS = 20
OUTPUT_KEYS = {"detection_boxes", "detection_scores", "detection_classes", "num_detections"}
CLASS_NAMES = ("circle", "square", "triangle")


def tiny_ssd():
    """Tiny SSD at 64x64 (stretch resize), random weights, 20 detections, scores > 0.01."""
    keras.utils.set_random_seed(1)
    return build_model("ssd300_vgg16", NUM_CLASSES, network="tiny", image_size=SIZE, max_detections=MAX_DETECTIONS)


def tiny_yolo_any_size():
    """YOLOv3-tiny built for any input size (exported at 64x64, letterbox)."""
    keras.utils.set_random_seed(2)
    return build_model("yolov3_tiny", NUM_CLASSES, image_size=None, max_detections=MAX_DETECTIONS)


def make_image(height: int, width: int, seed: int = 0) -> np.ndarray:
    """A uint8 RGB image with smooth structure plus noise (so detections differ by place)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.meshgrid(np.linspace(0, 1, height), np.linspace(0, 1, width), indexing="ij")
    base = np.stack([yy * 200, xx * 200, (1 - yy) * xx * 255], axis=-1)
    return np.clip(base + rng.normal(0, 20, base.shape), 0, 255).astype(np.uint8)


def reference_detections(detector, image: np.ndarray, mode: str, hand_scale: tuple) -> dict:
    """What serving must return for one image, computed outside the serving graph.

    Args:
        detector: the Python detector.
        image: uint8 ``[h, w, 3]``.
        mode: the detector's resize mode.
        hand_scale: ``(sy, sx)`` worked out by hand for this image size.

    Returns:
        The four outputs for a batch of one, as numpy.
    """
    height, width = image.shape[:2]
    resized, scale = resize_image(tf.constant(image), (SIZE, SIZE), mode)
    np.testing.assert_allclose(scale.numpy(), hand_scale, rtol=1e-6)
    raw = detector.predict_detections(resized[None])
    count = int(raw["num_detections"][0])
    classes = np.asarray(raw["classes"][0])
    divisor = np.array([hand_scale[0] * height, hand_scale[1] * width] * 2, np.float32)
    boxes = np.clip(np.asarray(raw["boxes"][0]) / divisor, 0.0, 1.0)
    valid = classes >= 0
    return {
        "detection_boxes": np.where(valid[:, None], boxes, 0.0)[None],
        "detection_scores": np.where(valid, np.asarray(raw["scores"][0]), 0.0)[None],
        "detection_classes": np.where(valid, classes + 1, 0).astype(np.float32)[None],
        "num_detections": np.array([count], np.float32),
    }


def assert_outputs_close(actual: dict, expected: dict, atol: float = 1e-5) -> None:
    for key in OUTPUT_KEYS:
        np.testing.assert_allclose(np.asarray(actual[key]), expected[key], atol=atol, err_msg=key)


def encode_png(image: np.ndarray) -> bytes:
    return tf.io.encode_png(tf.constant(image)).numpy()


def tf_example_bytes(encoded: bytes) -> bytes:
    feature = {"image/encoded": tf.train.Feature(bytes_list=tf.train.BytesList(value=[encoded]))}
    return tf.train.Example(features=tf.train.Features(feature=feature)).SerializeToString()
