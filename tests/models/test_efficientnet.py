"""EfficientNet backbone: scaling rules, equality with Keras' own EfficientNet, drop-connect, weights files.

The independent reference is ``keras.applications.EfficientNetB0/B2`` (Keras'
own implementation of the same published network): with its weights copied
in, our C3/C4/C5 must equal its stage outputs.
"""

from __future__ import annotations

import keras
import numpy as np
import pytest
import tensorflow as tf

from tfdet.backbones.efficientnet import (
    DropConnect,
    EfficientNetError,
    efficientnet_backbone,
    round_filters,
    round_repeats,
)


def test_round_filters_and_repeats_by_hand():
    # B0 is unscaled; B2 (1.1): 32 * 1.1 = 35.2 -> int(39.2) // 8 * 8 = 32; 320 * 1.1 = 352.
    assert round_filters(32, 1.0) == 32 and round_filters(32, 1.1) == 32 and round_filters(320, 1.1) == 352
    # B4 (1.4): 40 * 1.4 = 56 exactly; 24 * 1.4 = 33.6 -> int(37.6) // 8 * 8 = 32 (>= 0.9 * 33.6).
    assert round_filters(40, 1.4) == 56 and round_filters(24, 1.4) == 32
    # B6 (1.8): 16 * 1.8 = 28.8 -> int(32.8) // 8 * 8 = 32; 112 * 1.8 = 201.6 -> 200.
    assert round_filters(16, 1.8) == 32 and round_filters(112, 1.8) == 200
    # ceil(depth * repeats): B6 (2.6) turns 4 into 11, B1 (1.1) turns 1 into 2.
    assert round_repeats(4, 2.6) == 11 and round_repeats(1, 1.1) == 2 and round_repeats(3, 1.0) == 3


def _copy_by_order(source_weights, target):
    """Copies ``source_weights`` into ``target.weights`` in order, checking every shape."""
    assert len(source_weights) == len(target.weights)
    for source, destination in zip(source_weights, target.weights):
        assert tuple(source.shape) == tuple(destination.shape), (source.path, destination.path)
        destination.assign(source.numpy() if hasattr(source, "numpy") else np.asarray(source))


def _keras_reference(constructor, size):
    reference = constructor(include_top=False, weights=None, input_shape=(size, size, 3))
    # Skip its input rescaling/normalisation weights (mean, variance, count) and its top conv + BN.
    body = [w for w in reference.weights if not w.path.startswith(("normalization", "top_"))]
    return reference, body


@pytest.mark.slow
def test_b0_equals_keras_applications_efficientnet_b0():
    size = 64
    keras.utils.set_random_seed(0)
    ours = efficientnet_backbone("b0", (size, size, 3))
    reference, body = _keras_reference(keras.applications.EfficientNetB0, size)
    rng = np.random.default_rng(0)
    # Random BN statistics so that inference-mode BN is not the identity.
    for weight in body:
        if "moving_variance" in weight.path:
            weight.assign(rng.uniform(0.5, 2.0, weight.shape).astype(np.float32))
        elif "moving_mean" in weight.path or "beta" in weight.path:
            weight.assign(rng.normal(0, 0.1, weight.shape).astype(np.float32))
    _copy_by_order(body, ours)
    # Keras' reference scales by 1/255 and normalises with mean 0 / variance 1 (untrained): feed it 255 * x.
    taps = keras.Model(reference.input, [reference.get_layer(n).output
                                         for n in ("block3b_add", "block5c_add", "block7a_project_bn")])
    images = rng.normal(size=(2, size, size, 3)).astype(np.float32)
    expected = taps(images * 255.0, training=False)
    got = ours(images, training=False)
    assert [tuple(g.shape) for g in got] == [(2, 8, 8, 40), (2, 4, 4, 112), (2, 2, 2, 320)]
    for g, e in zip(got, expected):
        np.testing.assert_allclose(g.numpy(), e.numpy(), rtol=1e-4, atol=1e-4)


@pytest.mark.slow
def test_b2_weight_shapes_equal_keras_applications_efficientnet_b2():
    """Width 1.1 / depth 1.2 scaling: every weight shape, in order, as Keras' EfficientNetB2."""
    ours = efficientnet_backbone("b2", (64, 64, 3))
    _, body = _keras_reference(keras.applications.EfficientNetB2, 64)
    assert [tuple(w.shape) for w in ours.weights] == [tuple(w.shape) for w in body]
    assert [o.shape[-1] for o in ours.outputs] == [48, 120, 352]


@pytest.mark.slow
def test_drop_connect_rates_rise_linearly_to_0_2():
    model = efficientnet_backbone("b0", (32, 32, 3))
    rates = {layer.name: layer.rate for layer in model.layers if isinstance(layer, DropConnect)}
    # B0 has 16 blocks; block i (from 0) drops with 0.2 * i / 16. Residual blocks are the non-first of a stage.
    expected = {"block2b_drop": 2, "block3b_drop": 4, "block4b_drop": 6, "block4c_drop": 7, "block5b_drop": 9,
                "block5c_drop": 10, "block6b_drop": 12, "block6c_drop": 13, "block6d_drop": 14}
    assert rates.keys() == expected.keys()
    for name, index in expected.items():
        assert rates[name] == pytest.approx(0.2 * index / 16)


def test_drop_connect_is_identity_at_inference_and_drops_whole_examples_in_training():
    layer = DropConnect(0.25, seed=3)
    x = np.random.default_rng(0).normal(size=(256, 3, 3, 2)).astype(np.float32)
    np.testing.assert_array_equal(layer(x, training=False).numpy(), x)
    y = layer(x, training=True).numpy()
    kept = np.all(np.isclose(y, x / 0.75), axis=(1, 2, 3))
    dropped = np.all(y == 0.0, axis=(1, 2, 3))
    assert np.all(kept | dropped)  # each example is either kept (rescaled) or dropped entirely
    assert 0.6 < kept.mean() < 0.9  # keep probability 0.75
    # Compiles with XLA (keras.random + a seed generator).
    compiled = tf.function(lambda t: layer(t, training=True), jit_compile=True)
    assert compiled(tf.constant(x)).shape == x.shape
    with pytest.raises(ValueError, match="rate"):
        DropConnect(1.0)


def test_backbone_inference_is_deterministic_and_training_is_not():
    model = efficientnet_backbone("tiny", (64, 64, 3))
    x = np.random.default_rng(1).normal(size=(8, 64, 64, 3)).astype(np.float32)
    a, b = model(x, training=False), model(x, training=False)
    for u, v in zip(a, b):
        np.testing.assert_array_equal(u.numpy(), v.numpy())
    assert [tuple(o.shape) for o in a] == [(8, 8, 8, 24), (8, 4, 4, 32), (8, 2, 2, 48)]


@pytest.mark.slow
def test_weights_file_round_trip_and_clear_error(tmp_path):
    keras.utils.set_random_seed(1)
    first = efficientnet_backbone("tiny", (64, 64, 3))
    path = tmp_path / "tiny.weights.h5"
    first.save_weights(path)
    keras.utils.set_random_seed(2)
    second = efficientnet_backbone("tiny", (64, 64, 3), weights=str(path))
    x = np.random.default_rng(2).normal(size=(2, 64, 64, 3)).astype(np.float32)
    for u, v in zip(first(x), second(x)):
        np.testing.assert_array_equal(u.numpy(), v.numpy())
    garbage = tmp_path / "garbage.weights.h5"
    garbage.write_bytes(b"not an HDF5 file")
    with pytest.raises(EfficientNetError, match="garbage.weights.h5"):
        efficientnet_backbone("tiny", (64, 64, 3), weights=str(garbage))
    with pytest.raises(EfficientNetError, match="missing.weights.h5"):
        efficientnet_backbone("tiny", (64, 64, 3), weights=str(tmp_path / "missing.weights.h5"))
    with pytest.raises(EfficientNetError, match="b9"):
        efficientnet_backbone("b9")
