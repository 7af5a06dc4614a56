"""Normalisers: exact values, and exactly 0 with finite gradients for a zero count."""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from tfdet.losses import normalize_by, safe_divide, sigmoid_focal_loss, weighted_mean


def test_safe_divide_values_and_gradients():
    numerator = tf.constant([3.0, 2.0, 0.0, 5.0])
    denominator = tf.constant([2.0, 0.0, 0.0, -1.0])
    with tf.GradientTape(persistent=True) as tape:
        tape.watch([numerator, denominator])
        quotient = safe_divide(numerator, denominator)
        total = tf.reduce_sum(quotient)
    np.testing.assert_array_equal(quotient.numpy(), [1.5, 0.0, 0.0, 0.0])
    # d/dn = 1/d = 0.5 where d = 2, else 0; d/dd = -n/d^2 = -0.75 where d = 2, else 0.
    np.testing.assert_array_equal(tape.gradient(total, numerator).numpy(), [0.5, 0.0, 0.0, 0.0])
    np.testing.assert_array_equal(tape.gradient(total, denominator).numpy(), [-0.75, 0.0, 0.0, 0.0])


def test_normalize_by_golden_with_lower_rank_weights():
    # losses [1, 2, 3]: per-anchor weights [1, 0] broadcast over the K axis.
    losses = np.array([[[1.0, 2.0], [3.0, 4.0]]], np.float32)  # [B=1, A=2, K=2]
    weights = np.array([[1.0, 0.0]], np.float32)
    # (1 + 2) / 2 = 1.5
    assert normalize_by(losses, 2.0, weights).numpy() == 1.5
    assert normalize_by(losses, 4.0).numpy() == 2.5  # (1 + 2 + 3 + 4) / 4
    # weighted_mean counts weights as given ([B, A]): (1 + 2) / 1 = 3.
    assert weighted_mean(losses, weights).numpy() == 3.0


def test_zero_positives_give_exactly_zero_and_finite_gradients():
    # RetinaNet's reduction on an image with no objects: all-negative labels, count 0.
    labels = np.zeros((2, 5, 3), np.float32)
    logits = tf.constant(np.linspace(-100.0, 100.0, 30, dtype=np.float32).reshape(2, 5, 3))
    count = tf.constant(0.0)
    with tf.GradientTape(persistent=True) as tape:
        tape.watch([logits, count])
        loss = normalize_by(sigmoid_focal_loss(labels, logits), count)
        mean = weighted_mean(sigmoid_focal_loss(labels, logits), tf.zeros((2, 5)))
    assert loss.numpy() == 0.0 and mean.numpy() == 0.0
    for target in (loss, mean):
        grad = tape.gradient(target, logits).numpy()
        assert np.all(np.isfinite(grad)) and np.all(grad == 0.0)
    assert tape.gradient(loss, count).numpy() == 0.0
