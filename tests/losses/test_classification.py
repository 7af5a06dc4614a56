"""Sigmoid / softmax cross-entropy and focal loss: goldens, Keras, extremes."""

from __future__ import annotations

import math

import keras
import numpy as np
import pytest
import tensorflow as tf

from tfdet.losses import sigmoid_cross_entropy, sigmoid_focal_loss, softmax_cross_entropy

LN3 = math.log(3.0)  # sigmoid(ln 3) = 0.75


def _value_and_gradient(fn, labels, logits, **kwargs):
    logits = tf.constant(logits, tf.float32)
    with tf.GradientTape() as tape:
        tape.watch(logits)
        loss = fn(labels, logits, **kwargs)
        total = tf.reduce_sum(loss)
    return loss.numpy(), tape.gradient(total, logits).numpy()


def test_sigmoid_cross_entropy_golden():
    # logit 0: p = 0.5, -log 0.5 = ln 2 = 0.693147 for either target.
    # logit ln 3: p = 0.75; target 1: -ln 0.75 = 0.287682; target 0: -ln 0.25 = 1.386294.
    # target 0.5 at logit ln 3: 0.5 * 0.287682 + 0.5 * 1.386294 = 0.836988.
    labels = np.array([[1.0, 0.0, 1.0, 0.0, 0.5]], np.float32)
    logits = np.array([[0.0, 0.0, LN3, LN3, LN3]], np.float32)
    loss = sigmoid_cross_entropy(labels, logits).numpy()
    np.testing.assert_allclose(loss, [[0.693147, 0.693147, 0.287682, 1.386294, 0.836988]], atol=1e-6)


def test_sigmoid_cross_entropy_label_smoothing_golden():
    # s = 0.2: target 1 -> 0.9, 0 -> 0.1. At logit ln 3:
    # 0.9 * 0.287682 + 0.1 * 1.386294 = 0.397543; 0.1 * 0.287682 + 0.9 * 1.386294 = 1.276433.
    loss = sigmoid_cross_entropy(np.float32([1.0, 0.0]), np.float32([LN3, LN3]), label_smoothing=0.2).numpy()
    np.testing.assert_allclose(loss, [0.397543, 1.276433], atol=1e-6)


def test_sigmoid_cross_entropy_equals_keras():
    rng = np.random.default_rng(0)
    labels = (rng.uniform(size=(4, 6, 5)) < 0.3).astype(np.float32)
    logits = rng.normal(0.0, 5.0, size=(4, 6, 5)).astype(np.float32)
    keras_loss = keras.losses.BinaryCrossentropy(from_logits=True, label_smoothing=0.1, reduction=None)
    # Keras averages over the last axis; ours is per element.
    ours = np.mean(sigmoid_cross_entropy(labels, logits, label_smoothing=0.1).numpy(), axis=-1)
    np.testing.assert_allclose(ours, keras_loss(labels, logits).numpy(), rtol=1e-5, atol=1e-6)


def test_focal_loss_golden():
    # alpha 0.25, gamma 2. logit ln 3 (p = 0.75):
    #   target 1: 0.25 * (1 - 0.75)^2 * 0.287682 = 0.0044950
    #   target 0: 0.75 * 0.75^2 * 1.386294       = 0.5848429
    # logit 0 (p = 0.5): target 1: 0.25 * 0.25 * ln 2 = 0.0433217; target 0: 0.75 * 0.25 * ln 2 = 0.1299651.
    labels = np.array([1.0, 0.0, 1.0, 0.0], np.float32)
    logits = np.array([LN3, LN3, 0.0, 0.0], np.float32)
    loss = sigmoid_focal_loss(labels, logits).numpy()
    np.testing.assert_allclose(loss, [0.0044950, 0.5848429, 0.0433217, 0.1299651], rtol=1e-5)


def test_focal_loss_without_alpha_and_gamma_is_bce():
    rng = np.random.default_rng(1)
    labels = (rng.uniform(size=(3, 7)) < 0.5).astype(np.float32)
    logits = rng.normal(0.0, 4.0, size=(3, 7)).astype(np.float32)
    np.testing.assert_allclose(
        sigmoid_focal_loss(labels, logits, alpha=None, gamma=0.0).numpy(),
        sigmoid_cross_entropy(labels, logits).numpy(),
        rtol=1e-6,
    )


@pytest.mark.parametrize("alpha,gamma", [(0.25, 2.0), (0.6, 1.5)])
def test_focal_loss_equals_keras(alpha, gamma):
    rng = np.random.default_rng(2)
    labels = (rng.uniform(size=(4, 9, 3)) < 0.3).astype(np.float32)
    # |logit| <= 8 keeps Keras' probability clipping at 1e-7 out of play.
    logits = rng.uniform(-8.0, 8.0, size=(4, 9, 3)).astype(np.float32)
    keras_loss = keras.losses.BinaryFocalCrossentropy(
        apply_class_balancing=True, alpha=alpha, gamma=gamma, from_logits=True, reduction=None
    )
    ours = np.mean(sigmoid_focal_loss(labels, logits, alpha=alpha, gamma=gamma).numpy(), axis=-1)
    np.testing.assert_allclose(ours, keras_loss(labels, logits).numpy(), rtol=1e-4, atol=1e-7)


def test_focal_loss_extreme_logits():
    # Confidently wrong: target 1 at -100 costs alpha * 100 = 25 with gradient -alpha;
    # target 0 at +100 costs 0.75 * 100 = 75 with gradient +0.75. Confidently right costs ~0.
    labels = np.array([1.0, 0.0, 1.0, 0.0], np.float32)
    logits = np.array([-100.0, 100.0, 100.0, -100.0], np.float32)
    for gamma in (2.0, 0.5):  # gamma < 1 would give pow(0, gamma - 1) = inf in the naive form
        loss, grad = _value_and_gradient(sigmoid_focal_loss, labels, logits, gamma=gamma)
        assert np.all(np.isfinite(loss)) and np.all(np.isfinite(grad))
        np.testing.assert_allclose(loss, [25.0, 75.0, 0.0, 0.0], atol=1e-5)
        np.testing.assert_allclose(grad, [-0.25, 0.75, 0.0, 0.0], atol=1e-5)


def test_sigmoid_cross_entropy_extreme_logits():
    loss, grad = _value_and_gradient(sigmoid_cross_entropy, np.float32([1, 0, 1, 0]), [-100.0, 100.0, 100.0, -100.0])
    np.testing.assert_allclose(loss, [100.0, 100.0, 0.0, 0.0], atol=1e-5)
    np.testing.assert_allclose(grad, [-1.0, 1.0, 0.0, 0.0], atol=1e-6)  # sigmoid(x) - y


def test_softmax_cross_entropy_golden():
    # logits [0, ln 2, ln 5]: softmax = [1, 2, 5] / 8.
    # class 2: -ln(5/8) = 0.470004; class 0: ln 8 = 2.079442; class -1 (padding): 0.
    # smoothing 0.3 with K = 3 on class 2: targets [0.1, 0.1, 0.8]:
    #   0.1 ln 8 + 0.1 ln 4 + 0.8 ln(8/5) = 0.722576;
    # on class 0: targets [0.8, 0.1, 0.1]: 0.8 ln 8 + 0.1 ln 4 + 0.1 ln(8/5) = 1.849183.
    logits = np.tile(np.array([0.0, math.log(2.0), math.log(5.0)], np.float32), (3, 1))
    sparse = np.array([2, 0, -1], np.int32)
    np.testing.assert_allclose(softmax_cross_entropy(sparse, logits).numpy(), [0.470004, 2.079442, 0.0], atol=1e-6)
    one_hot = np.eye(3, dtype=np.float32)[[2, 0]]
    one_hot = np.concatenate([one_hot, np.zeros((1, 3), np.float32)])
    np.testing.assert_allclose(softmax_cross_entropy(one_hot, logits).numpy(), [0.470004, 2.079442, 0.0], atol=1e-6)
    smoothed = softmax_cross_entropy(sparse, logits, label_smoothing=0.3).numpy()
    np.testing.assert_allclose(smoothed, [0.722576, 1.849183, 0.0], atol=1e-5)


def test_softmax_cross_entropy_equals_keras():
    rng = np.random.default_rng(3)
    ids = rng.integers(0, 6, size=(4, 8))
    logits = rng.normal(0.0, 5.0, size=(4, 8, 6)).astype(np.float32)
    sparse = keras.losses.SparseCategoricalCrossentropy(from_logits=True, reduction=None)
    np.testing.assert_allclose(
        softmax_cross_entropy(ids, logits).numpy(), sparse(ids, logits).numpy(), rtol=1e-5, atol=1e-6
    )
    one_hot = np.eye(6, dtype=np.float32)[ids]
    dense = keras.losses.CategoricalCrossentropy(from_logits=True, label_smoothing=0.1, reduction=None)
    np.testing.assert_allclose(
        softmax_cross_entropy(one_hot, logits, label_smoothing=0.1).numpy(),
        dense(one_hot, logits).numpy(),
        rtol=1e-5,
        atol=1e-6,
    )


def test_softmax_cross_entropy_extreme_logits():
    # True class at -100 against +100: loss 200, gradient softmax - onehot = [-1, 1, 0].
    loss, grad = _value_and_gradient(softmax_cross_entropy, np.int32([0]), [[-100.0, 100.0, 0.0]])
    np.testing.assert_allclose(loss, [200.0], rtol=1e-6)
    np.testing.assert_allclose(grad, [[-1.0, 1.0, 0.0]], atol=1e-6)
