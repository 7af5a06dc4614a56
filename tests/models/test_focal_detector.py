"""FocalDetector: assignment, the focal and box losses, ignoring, crowds, normalisers, decoding.

The scenes use a one-level detector on 32x32 images: level 3 (stride 8), one
scale, one square aspect ratio and anchor_scale 2, i.e. 16 anchors of side 16
centred at ``(4 + 8 i, 4 + 8 j)``. Two neighbouring anchors then overlap at
IoU 1/3 (< 0.4), so a ground truth placed exactly on an anchor makes exactly
one positive and every other anchor a negative, and each loss is a short
closed-form sum written out below with ``math``.
"""

from __future__ import annotations

import math

import keras
import numpy as np
import pytest
import tensorflow as tf
from keras import layers

from tfdet.models.focal_detector import EFFICIENTDET_ASPECT_RATIOS, FocalDetector, focal_anchors

K = 2
SIZE = 32
ALPHA, GAMMA = 0.25, 2.0


def one_level_network(num_classes=K, size=SIZE, boxes_per_location=1):
    """A stride-8 network: one 8x8/8 conv, then 1x1 class and box convolutions, flattened."""
    images = keras.Input((size, size, 3))
    features = layers.Conv2D(8, 8, strides=8)(images)
    logits = layers.Conv2D(boxes_per_location * num_classes, 1)(features)
    deltas = layers.Conv2D(boxes_per_location * 4, 1)(features)
    return keras.Model(
        images,
        {
            "class_logits": layers.Reshape((-1, num_classes))(logits),
            "box_deltas": layers.Reshape((-1, 4))(deltas),
        },
    )


def make_detector(**options):
    keras.utils.set_random_seed(0)
    settings = dict(min_level=3, max_level=3, num_scales=1, aspect_ratios=(1.0,), anchor_scale=2.0,
                    max_detections=5)
    settings.update(options)
    return FocalDetector(one_level_network(), K, "focal_test", **settings)


@pytest.fixture(scope="module")
def detector():
    return make_detector()


def anchor_box(i, j):
    return np.array([8 * i - 4, 8 * j - 4, 8 * i + 12, 8 * j + 12], np.float32)


def focal(logit, target):
    """The focal loss of one sigmoid output, straight from Lin et al. (alpha 0.25, gamma 2)."""
    p = 1.0 / (1.0 + math.exp(-logit))
    if target:
        return -ALPHA * (1 - p) ** GAMMA * math.log(p)
    return -(1 - ALPHA) * p**GAMMA * math.log(1 - p)


def outputs_of(logits, deltas):
    return {"class_logits": tf.constant(logits, tf.float32), "box_deltas": tf.constant(deltas, tf.float32)}


def groundtruth(boxes, classes, is_crowd=None):
    gt = {"boxes": tf.constant(boxes, tf.float32), "classes": tf.constant(classes, tf.int32)}
    if is_crowd is not None:
        gt["is_crowd"] = tf.constant(is_crowd, tf.int32)
    return gt


def test_anchor_layout(detector):
    assert detector.num_anchors == 16 and detector.resize_mode == "letterbox"
    np.testing.assert_allclose(detector.anchors[0], anchor_box(0, 0))
    np.testing.assert_allclose(detector.anchors[6], anchor_box(1, 2))  # row-major: row 1, column 2


def test_efficientdet_pairs_are_width_height_multipliers():
    # Level 3 (stride 8), base 4 * 8 = 32 px: EfficientDet's (1.4, 0.7) is 44.8 wide and 22.4 high.
    anchors = focal_anchors((16, 16), 3, 3, 2, EFFICIENTDET_ASPECT_RATIOS, 4.0)
    assert anchors.shape == (2 * 2 * 2 * 3, 4)
    height = anchors[:, 2] - anchors[:, 0]
    width = anchors[:, 3] - anchors[:, 1]
    second = 32 * 2**0.5
    np.testing.assert_allclose(height[:6], [32, 22.4, 44.8, second, 0.7 * second, 1.4 * second], rtol=1e-5)
    np.testing.assert_allclose(width[:6], [32, 44.8, 22.4, second, 1.4 * second, 0.7 * second], rtol=1e-5)
    # Every location's six boxes share its centre (4, 4) then (4, 12): scale outer, ratio inner, x inner of y.
    np.testing.assert_allclose((anchors[:6, 0] + anchors[:6, 2]) / 2, 4.0, atol=1e-5)
    np.testing.assert_allclose((anchors[6:12, 1] + anchors[6:12, 3]) / 2, 12.0, atol=1e-5)
    # Plain ratios: height / width at the base area.
    plain = focal_anchors((16, 16), 3, 3, 1, (0.5, 1.0, 2.0), 4.0)
    np.testing.assert_allclose(plain[0], [4 - 32 * 0.5**0.5 / 2, 4 - 32 / 0.5**0.5 / 2,
                                          4 + 32 * 0.5**0.5 / 2, 4 + 32 / 0.5**0.5 / 2], rtol=1e-5)


def test_network_that_disagrees_with_the_anchors_is_an_error():
    with pytest.raises(ValueError, match="expected"):
        FocalDetector(one_level_network(), K, "focal_test", min_level=3, max_level=3, num_scales=3,
                      aspect_ratios=(1.0,))
    with pytest.raises(ValueError, match="box_loss"):
        make_detector(box_loss="l2")


def test_call_normalises_with_imagenet_statistics(detector):
    images = np.random.default_rng(0).uniform(0, 255, (1, SIZE, SIZE, 3)).astype(np.float32)
    expected = (images - np.array([123.675, 116.28, 103.53])) / np.array([58.395, 57.12, 57.375])
    np.testing.assert_allclose(detector.preprocess(images).numpy(), expected, rtol=1e-5, atol=1e-5)
    direct = detector.network(expected.astype(np.float32))
    np.testing.assert_allclose(detector(images)["class_logits"].numpy(), direct["class_logits"].numpy(), atol=1e-5)


# ---------------------------------------------------------------------------
# Losses
# ---------------------------------------------------------------------------

POSITIVE = 5  # anchor (1, 1)


def one_positive_scene():
    logits = np.tile(np.array([-3.0, -2.0], np.float32), (1, 16, 1))
    logits[0, POSITIVE] = [1.0, 2.0]
    deltas = np.zeros((1, 16, 4), np.float32)
    deltas[0, POSITIVE] = [0.05, -0.2, 0.3, 0.0]
    return logits, deltas, groundtruth([[anchor_box(1, 1)]], [[1]])


def test_focal_loss_by_hand_on_one_positive(detector):
    logits, deltas, gt = one_positive_scene()
    losses = detector.compute_losses(outputs_of(logits, deltas), gt)
    # N = 1: the positive's two classes (class 1 is its target) plus 15 negatives.
    expected_cls = focal(1.0, 0) + focal(2.0, 1) + 15 * (focal(-3.0, 0) + focal(-2.0, 0))
    # Smooth L1, beta 0.1, against zero targets (the box is the anchor).
    expected_box = 0.5 * 0.05**2 / 0.1 + (0.2 - 0.05) + (0.3 - 0.05) + 0.0
    np.testing.assert_allclose(float(losses["loss/cls"]), expected_cls, rtol=1e-5)
    np.testing.assert_allclose(float(losses["loss/box"]), expected_box, rtol=1e-5)
    np.testing.assert_allclose(float(losses["loss"]), expected_cls + expected_box, rtol=1e-5)
    assert float(detector.loss_normalizer(gt)) == 1.0


def test_huber_box_loss_and_its_weight():
    detector = make_detector(box_loss="huber", box_loss_beta=0.1, box_loss_weight=2.0)
    logits, deltas, gt = one_positive_scene()
    losses = detector.compute_losses(outputs_of(logits, deltas), gt)
    expected_box = 0.5 * 0.05**2 + 0.1 * (0.2 - 0.05) + 0.1 * (0.3 - 0.05)
    np.testing.assert_allclose(float(losses["loss/box"]), expected_box, rtol=1e-5)
    np.testing.assert_allclose(float(losses["loss"]), float(losses["loss/cls"]) + 2 * expected_box, rtol=1e-5)


def test_ignored_anchors_contribute_nothing(detector):
    # Shifted 2 px right of anchor (1, 1): IoU 224/288 = 0.78 with it (positive),
    # 160/352 = 0.45 with anchor (1, 2) (ignored), <= 0.28 with every other anchor.
    box = anchor_box(1, 1) + np.array([0, 2, 0, 2], np.float32)
    gt = groundtruth([[box]], [[0]])
    targets = detector.assign_targets(gt)
    ignored = np.flatnonzero(targets["ignore_mask"].numpy()[0])
    np.testing.assert_array_equal(ignored, [6])
    np.testing.assert_array_equal(np.flatnonzero(targets["positive_mask"].numpy()[0]), [POSITIVE])

    rng = np.random.default_rng(3)
    logits = np.zeros((1, 16, K), np.float32)
    deltas = np.zeros((1, 16, 4), np.float32)
    base = detector.compute_losses(outputs_of(logits, deltas), gt)
    logits[0, 6] = rng.normal(scale=5.0, size=K)
    deltas[0, 6] = rng.normal(size=4)
    changed = detector.compute_losses(outputs_of(logits, deltas), gt)
    for key in base:
        assert float(changed[key]) == float(base[key])
    # Zero logits: 15 non-ignored anchors x 2 classes, one of the 30 terms a positive one.
    expected = 29 * focal(0.0, 0) + focal(0.0, 1)
    np.testing.assert_allclose(float(base["loss/cls"]), expected, rtol=1e-5)
    # And no gradient reaches the ignored anchor.
    variable = tf.Variable(logits)
    with tf.GradientTape() as tape:
        loss = detector.compute_losses({"class_logits": variable, "box_deltas": tf.constant(deltas)}, gt)["loss"]
    gradient = tape.gradient(loss, variable).numpy()
    assert np.all(gradient[0, 6] == 0) and np.all(gradient[0, 7] != 0)


def test_no_objects_gives_finite_loss_and_zero_box_loss(detector):
    empty = groundtruth(np.zeros((2, 3, 4)), -np.ones((2, 3)))
    logits = np.zeros((2, 16, K), np.float32)
    losses = detector.compute_losses(outputs_of(logits, np.ones((2, 16, 4))), empty)
    assert float(losses["loss/box"]) == 0.0
    # Divided by max(0, 1) = 1: every one of the 2 x 16 x 2 outputs is a negative term.
    np.testing.assert_allclose(float(losses["loss/cls"]), 64 * focal(0.0, 0), rtol=1e-5)
    assert float(detector.loss_normalizer(empty)) == 0.0
    variable = tf.Variable(np.random.default_rng(0).normal(size=(2, 16, K)).astype(np.float32))
    with tf.GradientTape() as tape:
        loss = detector.compute_losses({"class_logits": variable, "box_deltas": tf.zeros((2, 16, 4))}, empty)["loss"]
    gradient = tape.gradient(loss, variable).numpy()
    assert np.isfinite(gradient).all() and np.abs(gradient).sum() > 0


def test_crowd_boxes_are_ignored_not_background(detector):
    # A labelled box on anchor (1, 1) and a crowd box on anchor (2, 3).
    gt = groundtruth([[anchor_box(1, 1), anchor_box(2, 3)]], [[0, 1]], is_crowd=[[0, 1]])
    targets = detector.assign_targets(gt)
    np.testing.assert_array_equal(np.flatnonzero(targets["positive_mask"].numpy()[0]), [POSITIVE])
    np.testing.assert_array_equal(np.flatnonzero(targets["ignore_mask"].numpy()[0]), [11])
    assert float(detector.loss_normalizer(gt)) == 1.0
    logits = np.zeros((1, 16, K), np.float32)
    losses = detector.compute_losses(outputs_of(logits, np.zeros((1, 16, 4))), gt)
    np.testing.assert_allclose(float(losses["loss/cls"]), 29 * focal(0.0, 0) + focal(0.0, 1), rtol=1e-5)
    # Only crowds: nothing positive, the crowd's anchor ignored, everything else background.
    only_crowd = groundtruth([[anchor_box(2, 3)]], [[1]], is_crowd=[[1]])
    losses = detector.compute_losses(outputs_of(logits, np.ones((1, 16, 4))), only_crowd)
    assert float(detector.loss_normalizer(only_crowd)) == 0.0 and float(losses["loss/box"]) == 0.0
    np.testing.assert_allclose(float(losses["loss/cls"]), 30 * focal(0.0, 0), rtol=1e-5)


def test_normalizer_splits_a_batch_exactly(detector):
    """Two halves with the summed N add up to the whole batch; None means this batch's N."""
    rng = np.random.default_rng(4)
    logits = rng.normal(size=(2, 16, K)).astype(np.float32)
    deltas = rng.normal(scale=0.3, size=(2, 16, 4)).astype(np.float32)
    boxes = np.zeros((2, 2, 4), np.float32)
    boxes[0] = [anchor_box(1, 1), anchor_box(2, 3)]
    boxes[1, 0] = anchor_box(3, 0) + np.array([1, 1, 2, 1], np.float32)
    classes = np.array([[0, 1], [1, -1]], np.int32)
    whole_gt = groundtruth(boxes, classes)
    n = float(detector.loss_normalizer(whole_gt))
    assert n == 3.0
    whole = detector.compute_losses(outputs_of(logits, deltas), whole_gt)
    explicit = detector.compute_losses(outputs_of(logits, deltas), whole_gt, normalizer=n)
    halves = [
        detector.compute_losses(outputs_of(logits[i : i + 1], deltas[i : i + 1]),
                                groundtruth(boxes[i : i + 1], classes[i : i + 1]), normalizer=n)
        for i in range(2)
    ]
    for key in whole:
        np.testing.assert_allclose(float(explicit[key]), float(whole[key]), rtol=1e-6)
        np.testing.assert_allclose(float(halves[0][key]) + float(halves[1][key]), float(whole[key]), rtol=1e-5)
    # A normaliser of 0 divides by 1.
    zero = detector.compute_losses(outputs_of(logits, deltas), whole_gt, normalizer=0.0)
    np.testing.assert_allclose(float(zero["loss"]), 3 * float(whole["loss"]), rtol=1e-5)


# ---------------------------------------------------------------------------
# Post-processing
# ---------------------------------------------------------------------------


def test_postprocess_decodes_an_encoded_box(detector):
    logits = np.full((1, 16, K), -10.0, np.float32)
    logits[0, 10] = [-10.0, 3.0]  # anchor (2, 2), class 1
    deltas = np.zeros((1, 16, 4), np.float32)
    deltas[0, 10] = [0.25, -0.125, math.log(0.75), math.log(0.5)]
    # Anchor (2, 2): centre (20, 20), side 16 -> centre (24, 18), size 12 x 8.
    expected = [24 - 6, 18 - 4, 24 + 6, 18 + 4]
    det = detector.postprocess(outputs_of(logits, deltas))
    assert det["boxes"].shape == (1, 5, 4) and det["classes"].dtype == tf.int32
    assert int(det["num_detections"][0]) == 1
    assert int(det["classes"][0, 0]) == 1 and int(det["classes"][0, 1]) == -1
    np.testing.assert_allclose(det["boxes"][0, 0].numpy(), expected, atol=1e-4)
    np.testing.assert_allclose(float(det["scores"][0, 0]), 1 / (1 + math.exp(-3.0)), rtol=1e-6)
