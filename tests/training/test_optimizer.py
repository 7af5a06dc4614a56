"""Schedules (hand-computed values), weight decay, clipping, precision and EMA swapping."""

from __future__ import annotations

import math

import keras
import numpy as np
import pytest
import tensorflow as tf

from tfdet.config import config_from_dict
from tfdet.training.optimizer import (
    OptimizerConfigError,
    averaged_weights,
    build_optimizer,
    build_schedule,
    ema_pairs,
    learning_rate_at,
    set_precision_policy,
)


def _train(**settings):
    return config_from_dict({"train": settings}).train


def _rates(schedule, steps):
    return [float(schedule(step)) for step in steps]


def test_cosine_with_warmup_hand_values():
    train = _train(steps=110, optimizer={"learning_rate": 0.1},
                   schedule={"name": "cosine", "warmup_steps": 10, "warmup_factor": 0.1, "final_factor": 0.0})
    schedule = build_schedule(train.schedule, 0.1, train.steps)
    # warmup: 0.1 * (0.1 + 0.9 * s / 10); then cosine over the 100 remaining steps.
    expected = [0.01, 0.055, 0.1, 0.1 * 0.5 * (1 + math.cos(math.pi * 0.25)), 0.05, 0.0, 0.0]
    assert _rates(schedule, [0, 5, 10, 35, 60, 110, 150]) == pytest.approx(expected, abs=1e-7)


def test_cosine_final_factor_and_no_warmup():
    train = _train(steps=100, schedule={"name": "cosine", "final_factor": 0.1})
    schedule = build_schedule(train.schedule, 2.0, train.steps)
    # 2 * (0.1 + 0.9 * (1 + cos(pi t / 100)) / 2)
    assert _rates(schedule, [0, 50, 100]) == pytest.approx([2.0, 2.0 * (0.1 + 0.45), 0.2], abs=1e-6)


def test_step_schedule_switches_at_the_boundary():
    train = _train(steps=60, schedule={"name": "step", "boundaries": [20, 40], "decay_factor": 0.1})
    schedule = build_schedule(train.schedule, 1.0, train.steps)
    assert _rates(schedule, [0, 19, 20, 39, 40, 59]) == pytest.approx([1, 1, 0.1, 0.1, 0.01, 0.01], rel=1e-6)


def test_constant_with_warmup():
    train = _train(steps=50, schedule={"name": "constant", "warmup_steps": 4, "warmup_factor": 0.2})
    schedule = build_schedule(train.schedule, 0.5, train.steps)
    # 0.5 * (0.2 + 0.8 * s / 4) during warmup.
    assert _rates(schedule, [0, 1, 2, 4, 30]) == pytest.approx([0.1, 0.2, 0.3, 0.5, 0.5], abs=1e-7)


def test_bad_schedule_settings_name_the_key():
    train = _train(steps=10, schedule={"name": "step", "boundaries": [5, 3]})
    with pytest.raises(OptimizerConfigError, match="train.schedule.boundaries"):
        build_schedule(train.schedule, 1.0, 10)
    with pytest.raises(OptimizerConfigError, match="train.mixed_precision"):
        set_precision_policy("float8")


def _toy_model():
    inputs = keras.Input((3,))
    model = keras.Model(inputs, keras.layers.Dense(2, name="dense")(inputs))
    model.get_layer("dense").set_weights([np.ones((3, 2), "float32"), np.ones((2,), "float32")])
    return model


def test_weight_decay_skips_biases_and_is_decoupled():
    model = _toy_model()
    train = _train(steps=10, optimizer={"name": "sgd", "learning_rate": 0.1, "momentum": 0.0, "weight_decay": 0.5},
                   schedule={"name": "constant"})
    optimizer = build_optimizer(train, model.trainable_variables)
    zeros = [tf.zeros_like(v.value) for v in model.trainable_variables]
    optimizer.apply(zeros, model.trainable_variables)
    kernel, bias = (v.numpy() for v in model.trainable_variables)
    np.testing.assert_allclose(kernel, 1.0 - 0.1 * 0.5 * 1.0)  # w -= lr * wd * w
    np.testing.assert_allclose(bias, 1.0)  # rank-1: excluded


def test_global_norm_clipping_bounds_the_applied_gradient():
    model = _toy_model()
    train = _train(steps=10, optimizer={"name": "sgd", "learning_rate": 1.0, "momentum": 0.0, "clip_norm": 2.0},
                   schedule={"name": "constant"})
    optimizer = build_optimizer(train, model.trainable_variables)
    gradients = [tf.fill((3, 2), 3.0), tf.fill((2,), 4.0)]  # global norm sqrt(6*9 + 2*16) = sqrt(86)
    before = [v.numpy() for v in model.trainable_variables]
    optimizer.apply(gradients, model.trainable_variables)
    update = np.concatenate([(b - v.numpy()).ravel() for b, v in zip(before, model.trainable_variables)])
    assert np.linalg.norm(update) == pytest.approx(2.0, rel=1e-5)
    np.testing.assert_allclose(update[:6], 3.0 * 2.0 / math.sqrt(86), rtol=1e-5)  # direction kept


def test_learning_rate_at_reads_the_schedule():
    model = _toy_model()
    train = _train(steps=10, optimizer={"learning_rate": 1.0},
                   schedule={"name": "constant", "warmup_steps": 2, "warmup_factor": 0.5})
    optimizer = build_optimizer(train, model.trainable_variables)
    assert [learning_rate_at(optimizer, s) for s in (0, 1, 2)] == pytest.approx([0.5, 0.75, 1.0])


def test_mixed_float16_wraps_in_a_loss_scale_optimizer():
    previous = set_precision_policy("mixed_float16")
    try:
        model = _toy_model()
        optimizer = build_optimizer(_train(mixed_precision="mixed_float16"), model.trainable_variables)
        assert isinstance(optimizer, keras.optimizers.LossScaleOptimizer)
        assert keras.config.dtype_policy().name == "mixed_float16"
    finally:
        keras.config.set_dtype_policy(previous)
    assert keras.config.dtype_policy().name == previous


def test_averaged_weights_swaps_in_the_ema_and_restores():
    model = _toy_model()
    train = _train(steps=10, optimizer={"name": "sgd", "learning_rate": 1.0, "momentum": 0.0},
                   schedule={"name": "constant"}, ema={"enabled": True, "momentum": 0.5})
    optimizer = build_optimizer(train, model.trainable_variables)
    for _ in range(2):
        optimizer.apply([tf.ones((3, 2)), tf.ones((2,))], model.trainable_variables)
    # raw: 1 -> 0 -> -1; EMA (first step copies, then momentum 0.5): 0 -> 0.5 * 0 + 0.5 * (-1) = -0.5
    raw = [v.numpy() for v in model.trainable_variables]
    np.testing.assert_allclose(raw[1], -1.0)
    assert len(ema_pairs(optimizer)) == 2
    with averaged_weights(optimizer) as swapped:
        assert swapped
        np.testing.assert_allclose(model.trainable_variables[1].numpy(), -0.5)
    for value, variable in zip(raw, model.trainable_variables):
        np.testing.assert_array_equal(variable.numpy(), value)
