"""Smooth L1, Huber and the IoU-family box losses: goldens, Keras, identities, gradients."""

from __future__ import annotations

import keras
import numpy as np
import pytest
import tensorflow as tf

from tfdet.losses import ciou_loss, diou_loss, giou_loss, huber, smooth_l1


def test_smooth_l1_golden():
    targets = np.zeros((1, 4), np.float32)
    # beta 1: |e| = 0.5 -> 0.5 * 0.25 = 0.125; 2 -> 2 - 0.5 = 1.5; 0 -> 0; 1 -> 1 - 0.5 = 0.5. Sum 2.125.
    assert smooth_l1(targets, np.float32([[0.5, -2.0, 0.0, 1.0]]), beta=1.0).numpy() == pytest.approx([2.125])
    # beta 1/9: 0.05 -> 0.5 * 0.0025 * 9 = 0.01125; 2 -> 2 - 1/18 = 1.944444. Sum 1.955694.
    got = smooth_l1(targets, np.float32([[0.05, 2.0, 0.0, 0.0]]), beta=1.0 / 9.0).numpy()
    assert got == pytest.approx([1.955694], rel=1e-6)
    # beta 0 is L1: 0.5 + 2 + 0 + 1 = 3.5.
    assert smooth_l1(targets, np.float32([[0.5, -2.0, 0.0, 1.0]]), beta=0.0).numpy() == pytest.approx([3.5])


def test_huber_golden_and_keras():
    targets = np.zeros((1, 4), np.float32)
    predictions = np.float32([[0.5, -2.0, 0.0, 1.0]])
    # delta 1 equals smooth L1 with beta 1: 2.125.
    assert huber(targets, predictions, delta=1.0).numpy() == pytest.approx([2.125])
    # delta 0.5: 0.5 -> 0.125 (quadratic at the boundary); 2 -> 0.5 * (2 - 0.25) = 0.875;
    # 0 -> 0; 1 -> 0.5 * (1 - 0.25) = 0.375. Sum 1.375.
    assert huber(targets, predictions, delta=0.5).numpy() == pytest.approx([1.375])
    rng = np.random.default_rng(4)
    t = rng.normal(size=(3, 7, 4)).astype(np.float32)
    p = rng.normal(0.0, 2.0, size=(3, 7, 4)).astype(np.float32)
    keras_huber = keras.losses.Huber(delta=0.7, reduction=None)
    # Keras averages the 4 coordinates; ours sums them.
    np.testing.assert_allclose(huber(t, p, delta=0.7).numpy(), 4.0 * keras_huber(t, p).numpy(), rtol=1e-5)


@pytest.mark.parametrize("beta", [1.0 / 9.0, 0.5, 1.0, 2.0])
def test_smooth_l1_is_huber_over_beta(beta):
    rng = np.random.default_rng(5)
    t = rng.normal(size=(5, 4)).astype(np.float32)
    p = rng.normal(0.0, 2.0, size=(5, 4)).astype(np.float32)
    np.testing.assert_allclose(smooth_l1(t, p, beta=beta).numpy(), huber(t, p, delta=beta).numpy() / beta, rtol=1e-5)


def test_smooth_l1_and_huber_gradients():
    # Gradient: e / beta inside, sign(e) outside; 0 at e = 0; bounded for huge errors.
    predictions = tf.constant([[0.05, -1e4, 0.0, 1e4]])
    for fn, kwargs, expected in (
        (smooth_l1, {"beta": 1.0 / 9.0}, [0.45, -1.0, 0.0, 1.0]),
        (huber, {"delta": 1.0}, [0.05, -1.0, 0.0, 1.0]),
    ):
        with tf.GradientTape() as tape:
            tape.watch(predictions)
            loss = tf.reduce_sum(fn(tf.zeros((1, 4)), predictions, **kwargs))
        np.testing.assert_allclose(tape.gradient(loss, predictions).numpy(), [expected], rtol=1e-5)


def test_iou_family_goldens():
    true = np.float32([[0, 0, 2, 2], [0, 0, 2, 2], [0, 0, 1, 1], [0, 0, 2, 2]])
    pred = np.float32([[1, 1, 3, 3], [0, 0, 2, 2], [0, 1, 1, 2], [0, 0, 2, 4]])
    # Row 0: intersection 1, union 7, IoU 1/7; enclosing 3 x 3 = 9.
    #   GIoU = 1/7 - (9 - 7)/9 = -0.079365 -> loss 1.079365.
    #   Centres (1, 1), (2, 2): rho^2 = 2, c^2 = 9 + 9 = 18; DIoU = 1/7 - 1/9 -> loss 0.968254.
    #   Same aspect ratio, v = 0: CIoU loss = DIoU loss.
    # Row 1: identical boxes -> 0. Row 2: disjoint but touching: IoU 0, enclosing area = union -> GIoU loss 1;
    #   rho^2 = 1, c^2 = 1 + 4 = 5 -> DIoU loss 1.2.
    # Row 3: IoU 4/8 = 0.5; rho^2 = 1, c^2 = 4 + 16 = 20 -> DIoU 0.45, GIoU 0.5 (enclosing = union).
    #   v = 4/pi^2 (atan(4/2) - atan(2/2))^2 = 0.0419565; alpha = v / (0.5 + v) = 0.0774167;
    #   CIoU = 0.45 - alpha v = 0.4467519 -> loss 0.5532481.
    np.testing.assert_allclose(giou_loss(true, pred).numpy(), [1.079365, 0.0, 1.0, 0.5], atol=1e-6)
    np.testing.assert_allclose(diou_loss(true, pred).numpy(), [0.968254, 0.0, 1.2, 0.55], atol=1e-6)
    np.testing.assert_allclose(ciou_loss(true, pred).numpy(), [0.968254, 0.0, 1.2, 0.5532481], atol=1e-6)


@pytest.mark.parametrize("fn", [giou_loss, diou_loss, ciou_loss])
def test_iou_losses_finite_gradients_for_identical_and_degenerate_boxes(fn):
    # Identical boxes, zero-area padding against padding, and a far-away prediction.
    true = tf.constant([[[0.0, 0.0, 2.0, 2.0], [0.0, 0.0, 0.0, 0.0], [0.0, 0.0, 2.0, 2.0]]])
    pred = tf.constant([[[0.0, 0.0, 2.0, 2.0], [0.0, 0.0, 0.0, 0.0], [1e4, 1e4, 1e4 + 1.0, 1e4 + 1.0]]])
    with tf.GradientTape() as tape:
        tape.watch(pred)
        loss = fn(true, pred)
        total = tf.reduce_sum(loss)
    grad = tape.gradient(total, pred).numpy()
    assert loss.shape == (1, 3)
    assert np.all(np.isfinite(loss.numpy())) and np.all(np.isfinite(grad))
    assert loss.numpy()[0, 0] == pytest.approx(0.0, abs=1e-6)
