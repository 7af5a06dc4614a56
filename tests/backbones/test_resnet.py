"""ResNet-50/101 backbone: keras.applications as the reference layout, weights files, frozen batch norm.

``keras.applications.ResNet50`` / ``ResNet101`` (built without downloading,
``weights=None``) are the independent reference: same parameter counts, same
layer names, and, once its weights are loaded into ours by name, the same C5
output for the same image (theirs fed BGR, ours RGB with the channel-reversed
first kernel).
"""

from __future__ import annotations

import keras
import numpy as np
import pytest

from tfdet.backbones.resnet import BackboneWeightsError, resnet_backbone

SIZE = 64


def randomise_batchnorm(model, seed):
    """Non-trivial moving statistics, so inference-mode batch norm is not the identity."""
    rng = np.random.default_rng(seed)
    for layer in model.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            channels = layer.gamma.shape[0]
            layer.moving_mean.assign(rng.normal(scale=0.1, size=channels))
            layer.moving_variance.assign(rng.uniform(0.5, 2.0, size=channels))
            layer.gamma.assign(rng.uniform(0.5, 1.5, size=channels))
            layer.beta.assign(rng.normal(scale=0.1, size=channels))


def test_layout_matches_keras_applications():
    ours = resnet_backbone(50, (SIZE, SIZE, 3))
    theirs = keras.applications.ResNet50(include_top=False, weights=None, input_shape=(SIZE, SIZE, 3))
    assert ours.count_params() == theirs.count_params()
    assert {l.name for l in ours.layers if l.weights} == {l.name for l in theirs.layers if l.weights}
    # C3, C4, C5 at strides 8, 16, 32.
    assert [tuple(o.shape[1:]) for o in ours.outputs] == [(8, 8, 512), (4, 4, 1024), (2, 2, 2048)]
    assert ours.outputs[-1].shape[1:] == theirs.output.shape[1:]


def test_resnet101_size():
    # keras.applications.ResNet101(include_top=False, weights=None).count_params(), measured once with
    # Keras 3.15 (building the reference here would double this test's time).
    ours = resnet_backbone(101, (SIZE, SIZE, 3))
    assert ours.count_params() == 42_658_176
    assert len([l for l in ours.layers if l.name.startswith("conv4_block") and l.name.endswith("_out")]) == 23


def test_keras_applications_weights_load_by_name_and_match_its_output(tmp_path):
    keras.utils.set_random_seed(1)
    reference = keras.applications.ResNet50(include_top=False, weights=None, input_shape=(SIZE, SIZE, 3))
    randomise_batchnorm(reference, 0)
    path = tmp_path / "resnet50_keras_applications.h5"  # the legacy HDF5 layout of the released files
    reference.save(path)
    ours = resnet_backbone(50, (SIZE, SIZE, 3), weights=path, bgr_weights=True)
    rgb = np.random.default_rng(2).uniform(-2, 2, (2, SIZE, SIZE, 3)).astype(np.float32)
    expected = reference(rgb[..., ::-1], training=False).numpy()
    np.testing.assert_allclose(ours(rgb, training=False)[-1].numpy(), expected, rtol=1e-4, atol=1e-4)


def test_own_weights_round_trip_and_bad_files(tmp_path):
    keras.utils.set_random_seed(3)
    first = resnet_backbone(50, (SIZE, SIZE, 3))
    randomise_batchnorm(first, 1)
    path = tmp_path / "backbone.weights.h5"
    first.save_weights(path)
    second = resnet_backbone(50, (SIZE, SIZE, 3), weights=path)
    x = np.random.default_rng(4).normal(size=(1, SIZE, SIZE, 3)).astype(np.float32)
    for a, b in zip(first(x), second(x)):
        np.testing.assert_array_equal(a.numpy(), b.numpy())
    with pytest.raises(BackboneWeightsError, match="not found"):
        resnet_backbone(50, (SIZE, SIZE, 3), weights=tmp_path / "missing.weights.h5")
    with pytest.raises(BackboneWeightsError, match="expected"):
        (tmp_path / "weights.bin").write_bytes(b"x")
        resnet_backbone(50, (SIZE, SIZE, 3), weights=tmp_path / "weights.bin")
    # A file without most of the layers: the missing ones are named, not silently skipped.
    stem_only = keras.Sequential([keras.Input((SIZE, SIZE, 3)), keras.layers.Conv2D(64, 7, name="conv1_conv")])
    legacy = tmp_path / "stem_only.h5"
    stem_only.save(legacy)
    with pytest.raises(BackboneWeightsError, match=r"conv1_bn, conv2_block1_0_bn, .* and \d+ more"):
        resnet_backbone(50, (SIZE, SIZE, 3), weights=legacy)
    with pytest.raises(ValueError, match="depth"):
        resnet_backbone(34)


def test_frozen_batchnorm_is_a_fixed_affine_map():
    keras.utils.set_random_seed(5)
    frozen = resnet_backbone(50, (SIZE, SIZE, 3))
    randomise_batchnorm(frozen, 2)
    bn = [l for l in frozen.layers if isinstance(l, keras.layers.BatchNormalization)]
    assert bn and not any(l.trainable for l in bn)
    # No gamma/beta among the trainable weights; the convolutions stay trainable.
    trainable = {v.path for v in frozen.trainable_variables}
    assert not any("_bn/" in p for p in trainable) and "conv1_conv/kernel" in trainable
    x = np.random.default_rng(6).normal(size=(2, SIZE, SIZE, 3)).astype(np.float32)
    before = [v.numpy() for v in frozen.non_trainable_variables]
    train_mode = frozen(x, training=True)
    infer_mode = frozen(x, training=False)
    for a, b in zip(train_mode, infer_mode):
        np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-5, atol=1e-5)
    for a, v in zip(before, frozen.non_trainable_variables):
        np.testing.assert_array_equal(a, v.numpy())  # moving statistics untouched
    live = resnet_backbone(50, (SIZE, SIZE, 3), freeze_batchnorm=False)
    assert any("_bn/gamma" in v.path for v in live.trainable_variables)
