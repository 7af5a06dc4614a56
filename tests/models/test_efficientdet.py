"""EfficientDet: BiFPN fusion, heads, the scaling table, parameter counts, and the detector end to end.

Truth: hand-computed fusion; TensorFlow's own conv / max-pool ops for the P6/P7
path; the published parameter counts; closed-form anchor counts. Step,
saving, JAX, two-replica and learning tests use ``network="tiny"`` at
128x128 (3069 anchors); one test runs D0 at 512 (49104 anchors).
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys

import keras
import numpy as np
import pytest
import tensorflow as tf

from tests.backends import run_under_jax
from tests.conftest import REPO_ROOT
from tfdet.heads.efficientdet import class_net
from tfdet.models.efficientdet import (
    EFFICIENTDET_VARIANTS,
    PUBLISHED_PARAMETERS,
    EfficientDetError,
)
from tfdet.necks.bifpn import FastNormalizedFusion, bifpn_layer, pyramid_inputs
from tfdet.zoo import build_model

from .scenes import colour_scenes
from .training import compiled_train_step, two_replica_gradient_error

K = 2
SIZE = 128


@pytest.fixture(scope="module")
def tiny():
    keras.utils.set_random_seed(0)
    return build_model("efficientdet_d0", K, network="tiny", image_size=SIZE, max_detections=20)


def groundtruth(boxes, classes):
    return {"boxes": tf.constant(boxes, tf.float32), "classes": tf.constant(classes, tf.int32)}


# ---------------------------------------------------------------------------
# BiFPN
# ---------------------------------------------------------------------------


def test_fast_normalized_fusion_by_hand():
    fusion = FastNormalizedFusion()
    rng = np.random.default_rng(0)
    inputs = [rng.normal(size=(2, 4, 4, 3)).astype(np.float32) for _ in range(3)]
    fusion(inputs)  # builds: weights start at 1 -> the mean (up to epsilon)
    np.testing.assert_allclose(fusion(inputs).numpy(), sum(inputs) / (3 + 1e-4), rtol=1e-6, atol=1e-6)
    fusion.fusion_weights.assign([2.0, -1.0, 0.5])  # the ReLU zeroes the negative weight
    expected = (2.0 * inputs[0] + 0.0 * inputs[1] + 0.5 * inputs[2]) / (2.0 + 0.0 + 0.5 + 1e-4)
    np.testing.assert_allclose(fusion(inputs).numpy(), expected, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(FastNormalizedFusion(method="sum")(inputs).numpy(), sum(inputs), rtol=1e-6, atol=1e-6)


def test_p6_p7_are_conv_bn_then_3x3_stride_2_max_pooling():
    c3, c4, c5 = (keras.Input((s, s, c)) for s, c in ((16, 8), (8, 12), (4, 20)))
    model = keras.Model([c3, c4, c5], pyramid_inputs([c3, c4, c5], 16, name="n")[3:])
    conv, bn = model.get_layer("n_p6_resample_conv"), model.get_layer("n_p6_resample_bn")
    rng = np.random.default_rng(1)
    for weight in bn.weights:  # non-trivial inference statistics
        weight.assign(rng.uniform(0.5, 1.5, weight.shape).astype(np.float32))
    x5 = rng.normal(size=(2, 4, 4, 20)).astype(np.float32)
    p6, p7 = model([np.zeros((2, 16, 16, 8), np.float32), np.zeros((2, 8, 8, 12), np.float32), x5])
    y = tf.nn.conv2d(x5, conv.kernel, 1, "SAME") + conv.bias
    gamma, beta, mean, variance = (w.numpy() for w in bn.weights)
    y = (y - mean) / np.sqrt(variance + bn.epsilon) * gamma + beta
    expected_p6 = tf.nn.max_pool2d(y, 3, 2, "SAME")
    np.testing.assert_allclose(p6.numpy(), expected_p6.numpy(), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(p7.numpy(), tf.nn.max_pool2d(expected_p6, 3, 2, "SAME").numpy(), rtol=1e-5,
                               atol=1e-5)
    assert p6.shape == (2, 2, 2, 16) and p7.shape == (2, 1, 1, 16)


def test_bifpn_layer_nodes_and_both_directions():
    sizes = (16, 8, 4, 2, 1)
    inputs = [keras.Input((s, s, 8)) for s in sizes]
    model = keras.Model(inputs, bifpn_layer(inputs, 8, name="layer"))
    fusions = [layer for layer in model.layers if isinstance(layer, FastNormalizedFusion)]
    # Four top-down nodes with two inputs, three bottom-up nodes with three, P7out with two: 19 weights.
    assert sorted(int(f.fusion_weights.shape[0]) for f in fusions) == [2, 2, 2, 2, 2, 3, 3, 3]
    assert sum(isinstance(layer, keras.layers.SeparableConv2D) for layer in model.layers) == 8
    assert [tuple(o.shape[1:]) for o in model.outputs] == [(s, s, 8) for s in sizes]
    values = [tf.constant(np.random.default_rng(i).normal(size=(1, s, s, 8)).astype(np.float32))
              for i, s in enumerate(sizes)]
    with tf.GradientTape(persistent=True) as tape:
        tape.watch(values)
        outputs = model(values, training=False)
    # Top-down: P3out sees P7; bottom-up: P7out sees P3.
    assert float(tf.reduce_sum(tf.abs(tape.gradient(outputs[0], values[4])))) > 0
    assert float(tf.reduce_sum(tf.abs(tape.gradient(outputs[4], values[0])))) > 0


# ---------------------------------------------------------------------------
# Heads
# ---------------------------------------------------------------------------


def test_class_net_shares_convolutions_but_not_batch_norm():
    sizes = (8, 4, 2, 1, 1)
    inputs = [keras.Input((s, s, 16)) for s in sizes]
    model = keras.Model(inputs, class_net(inputs, num_classes=3, num_anchors=9, width=16, depth=2))
    separable = [layer for layer in model.layers if isinstance(layer, keras.layers.SeparableConv2D)]
    bns = [layer for layer in model.layers if isinstance(layer, keras.layers.BatchNormalization)]
    assert len(separable) == 3  # two tower convolutions and the predictor, each applied to all five levels
    assert all(len(layer._inbound_nodes) == 5 for layer in separable)
    assert len(bns) == 2 * 5  # one per repeat and level
    predictor = model.get_layer("class_net_predict")
    np.testing.assert_allclose(predictor.bias.numpy(), -math.log(0.99 / 0.01), rtol=1e-6)
    # [B, sum H*W*9, K]: level-major, then y, x, anchor.
    assert tuple(model.output.shape) == (None, (64 + 16 + 4 + 1 + 1) * 9, 3)


# ---------------------------------------------------------------------------
# The scaling table and the parameter counts
# ---------------------------------------------------------------------------


def test_scaling_table_is_the_papers():
    table = {name: (v.backbone, v.image_size, v.width, v.bifpn_depth, v.head_depth, v.anchor_scale)
             for name, v in EFFICIENTDET_VARIANTS.items()}
    assert table == {
        "efficientdet_d0": ("b0", 512, 64, 3, 3, 4.0),
        "efficientdet_d1": ("b1", 640, 88, 4, 3, 4.0),
        "efficientdet_d2": ("b2", 768, 112, 5, 3, 4.0),
        "efficientdet_d3": ("b3", 896, 160, 6, 4, 4.0),
        "efficientdet_d4": ("b4", 1024, 224, 7, 4, 4.0),
        "efficientdet_d5": ("b5", 1280, 288, 7, 4, 4.0),
        "efficientdet_d6": ("b6", 1280, 384, 8, 5, 4.0),
        "efficientdet_d7": ("b6", 1536, 384, 8, 5, 5.0),
    }


COUNT_PARAMETERS = """
import json, time
import numpy as np
from tfdet.models.efficientdet import EFFICIENTDET_VARIANTS, efficientdet_network
counts = {}
for name, variant in sorted(EFFICIENTDET_VARIANTS.items()):
    start = time.perf_counter()
    # Parameters do not depend on the input size: build small.
    network = efficientdet_network(90, variant, image_size=128, name=name)
    counts[name] = [sum(int(np.prod(w.shape)) for w in network.trainable_weights), time.perf_counter() - start]
print(json.dumps(counts))
"""


@pytest.mark.slow
def test_parameter_counts_within_3_percent_of_published():
    """Trainable parameters with 90 classes (the published counts exclude BN moving statistics).

    Every variant's network is built in one subprocess under Keras' NumPy
    backend: the same keras.layers graph, but weights are plain arrays, so
    building D0-D7 takes a fraction of the time TensorFlow variables need.
    """
    env = dict(os.environ, KERAS_BACKEND="numpy", PYTHONPATH=str(REPO_ROOT))
    completed = subprocess.run([sys.executable, "-c", COUNT_PARAMETERS], capture_output=True, text=True, env=env,
                               timeout=600)
    assert completed.returncode == 0, completed.stderr[-4000:]
    counts = json.loads(completed.stdout.strip().splitlines()[-1])
    assert sorted(counts) == sorted(PUBLISHED_PARAMETERS)
    for name, (trainable, seconds) in counts.items():
        assert abs(trainable / PUBLISHED_PARAMETERS[name] - 1) < 0.03, (name, trainable)
        print(f"{name}: {trainable} trainable parameters, built in {seconds:.1f} s")


# ---------------------------------------------------------------------------
# The detector
# ---------------------------------------------------------------------------


@pytest.mark.slow
def test_d0_at_512_has_49104_anchors_and_the_reference_settings():
    detector = build_model("efficientdet_d0", 90, max_detections=10)
    assert detector.image_size == (512, 512) and detector.resize_mode == "letterbox"
    assert detector.num_anchors == 9 * (64**2 + 32**2 + 16**2 + 8**2 + 4**2) == 49104
    outputs = detector(np.zeros((1, 512, 512, 3), np.float32))
    assert outputs["class_logits"].shape == (1, 49104, 90)
    assert outputs["box_deltas"].shape == (1, 49104, 4)
    # First anchor: P3 (stride 8), centre (4, 4), scale 2**0 of 4 * 8 = 32 px, ratio (1, 1).
    np.testing.assert_allclose(detector.anchors[0], [4 - 16, 4 - 16, 4 + 16, 4 + 16], atol=1e-4)
    # Second: ratio (1.4, 0.7) of the reference = 1.4 x 32 = 44.8 px wide, 0.7 x 32 = 22.4 px high.
    np.testing.assert_allclose(detector.anchors[1], [4 - 11.2, 4 - 22.4, 4 + 11.2, 4 + 22.4], atol=1e-4)
    # Tenth: the next location to the right (x = 12), back to scale 2**0 and ratio (1, 1).
    np.testing.assert_allclose(detector.anchors[9], [4 - 16, 12 - 16, 4 + 16, 12 + 16], atol=1e-4)
    assert (detector.focal_alpha, detector.focal_gamma, detector.box_loss, detector.box_loss_beta) == (
        0.25, 1.5, "huber", 0.1)
    assert detector.box_loss_weight == 50 / 4 and detector.soft_nms_sigma == 0.5
    assert detector.anchor_scale == 4.0
    det = detector.postprocess(outputs)
    assert det["boxes"].shape == (1, 10, 4)


def test_bad_overrides_are_clear_errors():
    with pytest.raises(EfficientDetError, match="multiple of 128"):
        build_model("efficientdet_d0", 3, network="tiny", image_size=100)
    with pytest.raises(EfficientDetError, match="bogus"):
        build_model("efficientdet_d0", 3, network="tiny", image_size=SIZE, bogus=1)
    with pytest.raises(EfficientDetError, match="network"):
        build_model("efficientdet_d0", 3, network="huge")


BOX = np.array([20.0, 30.0, 70.0, 90.0], np.float32)


def scene_batch():
    images = np.full((2, SIZE, SIZE, 3), 40.0, np.float32)
    images[0, 20:70, 30:90] = 220.0
    gt = groundtruth([[BOX, [0, 0, 0, 0]], [[0, 0, 0, 0]] * 2], [[1, -1], [-1, -1]])
    return images, gt


def test_loss_is_finite_with_objects_and_without(tiny):
    images, gt = scene_batch()
    outputs = tiny(images, training=True)
    assert outputs["class_logits"].shape == (2, tiny.num_anchors, K) and tiny.num_anchors == 9 * 341
    with_objects = tiny.compute_losses(outputs, gt)
    empty = groundtruth(np.zeros((2, 2, 4)), -np.ones((2, 2)))
    without = tiny.compute_losses(outputs, empty)
    for losses in (with_objects, without):
        assert all(np.isfinite(float(v)) for v in losses.values())
    assert float(with_objects["loss/box"]) > 0 and float(without["loss/box"]) == 0.0
    # The prior 0.01: untrained, every class probability starts near 0.01.
    probabilities = tf.sigmoid(tiny(images)["class_logits"]).numpy()
    assert 0.001 < np.median(probabilities) < 0.1


@pytest.mark.slow
def test_train_step_compiles_with_xla():
    keras.utils.set_random_seed(0)
    detector = build_model("efficientdet_d0", K, network="tiny", image_size=SIZE, max_detections=20)
    images, gt = scene_batch()
    optimizer = keras.optimizers.SGD(1e-3)
    before = {v.path: v.numpy() for v in detector.trainable_variables}
    losses = compiled_train_step(detector, optimizer)(images, gt)
    assert set(losses) == {"loss/cls", "loss/box", "loss"}
    assert all(np.isfinite(float(v)) for v in losses.values())
    changed = {v.path: not np.array_equal(before[v.path], v.numpy()) for v in detector.trainable_variables}
    assert changed["stem_conv/kernel"] and changed["class_net_predict/pointwise_kernel"], changed
    assert changed["bifpn_0_out_p4_fusion/fusion_weights"] and changed["box_net_conv_0/depthwise_kernel"]


@pytest.mark.slow
def test_keras_save_and_load(tiny, tmp_path):
    path = tmp_path / "efficientdet.keras"
    tiny.save(path)
    loaded = keras.saving.load_model(path)
    assert type(loaded).__name__ == "FocalDetector" and loaded.num_anchors == tiny.num_anchors
    images = np.random.default_rng(2).uniform(0, 255, (2, SIZE, SIZE, 3)).astype(np.float32)
    a, b = tiny(images), loaded(images)
    for key in a:
        np.testing.assert_allclose(a[key].numpy(), b[key].numpy(), rtol=1e-6, atol=1e-6)
    np.testing.assert_array_equal(loaded.anchors, tiny.anchors)
    assert loaded.max_detections == 20 and loaded.soft_nms_sigma == 0.5


@pytest.mark.slow
def test_forward_and_loss_under_jax(tiny, tmp_path):
    weights = tmp_path / "tiny.weights.h5"
    tiny.save_weights(weights)
    images, gt = scene_batch()
    np.save(tmp_path / "images.npy", images)
    outputs = tiny(images)
    with_objects = tiny.compute_losses(outputs, gt)
    without = tiny.compute_losses(outputs, groundtruth(np.zeros((2, 2, 4)), -np.ones((2, 2))))
    printed = run_under_jax(
        f"""
        import numpy as np
        from tfdet.zoo import build_model
        d = build_model("efficientdet_d0", {K}, network="tiny", image_size={SIZE}, max_detections=20)
        d.load_weights({str(weights)!r})
        images = np.load({str(tmp_path / "images.npy")!r})
        boxes = np.zeros((2, 2, 4), np.float32); boxes[0, 0] = {BOX.tolist()}
        classes = np.array([[1, -1], [-1, -1]], np.int32)
        out = d(images)
        a = d.compute_losses(out, {{"boxes": boxes, "classes": classes}})
        b = d.compute_losses(out, {{"boxes": np.zeros((2, 2, 4), np.float32), "classes": -np.ones((2, 2), np.int32)}})
        train = d(images, training=True)  # drop-connect and batch statistics run under JAX too
        print(float(a["loss"]), float(b["loss"]), bool(np.isfinite(np.asarray(train["class_logits"])).all()),
              tuple(np.asarray(out["class_logits"]).shape))
        """
    )
    loss_a, loss_b, finite, shape = printed.strip().splitlines()[-1].split(" ", 3)
    np.testing.assert_allclose(float(loss_a), float(with_objects["loss"]), rtol=1e-4)
    np.testing.assert_allclose(float(loss_b), float(without["loss"]), rtol=1e-4)
    assert finite == "True" and shape == f"(2, {tiny.num_anchors}, {K})"


@pytest.mark.slow
def test_two_replica_gradients_equal_one_device():
    # Inference-mode batch norm: unsynchronised per-replica batch statistics are another function of the batch.
    replicas, worst, (first, second) = two_replica_gradient_error(
        "efficientdet_d0", {"network": "tiny", "image_size": SIZE, "max_detections": 20}, size=SIZE,
        training=False)
    assert replicas == 2 and first > 0 and second > 0
    assert worst < 1e-4


# ---------------------------------------------------------------------------
# Learning
# ---------------------------------------------------------------------------

def synthetic_scenes(count, seed):
    return colour_scenes(count, seed, SIZE, sides=(30, 70))


@pytest.mark.slow
def test_learns_synthetic_shapes():
    from tfdet.evaluation.voc import VocEvaluator

    keras.utils.set_random_seed(0)
    detector = build_model("efficientdet_d0", 2, network="tiny", image_size=SIZE)
    # A short schedule: faster-moving BN statistics so inference-mode BN is ready after ~100 steps
    # (momentum 0.99 would still weigh the initial statistics by 0.99**100 = 0.37).
    for layer in detector.network.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            layer.momentum = 0.9
    train_images, train_boxes, train_classes = synthetic_scenes(64, seed=0)
    eval_images, eval_boxes, eval_classes = synthetic_scenes(16, seed=1)
    # Not under XLA: on a CPU, XLA makes EfficientDet's depthwise-convolution gradients about 7x slower
    # (measured; see benchmarks/model_stats.py --no-xla). test_train_step_compiles_with_xla covers XLA.
    train = compiled_train_step(detector, keras.optimizers.Adam(2e-3), jit_compile=False)
    predict = tf.function(detector.predict_detections)

    def voc_map():
        evaluator = VocEvaluator(["rectangle", "ellipse"])
        detections = {key: value.numpy() for key, value in predict(eval_images).items()}
        evaluator.add_batch({"boxes": eval_boxes, "classes": eval_classes}, detections)
        return evaluator.evaluate()["mAP"]

    start_map = voc_map()
    losses = []
    for s in range(100):
        k = (s * 8) % 64
        gt = {"boxes": train_boxes[k: k + 8], "classes": train_classes[k: k + 8]}
        losses.append(float(train(train_images[k: k + 8], gt)["loss"]))
    end_map = voc_map()
    print(f"loss {np.mean(losses[:8]):.3f} -> {np.mean(losses[-8:]):.3f}, VOC mAP {start_map:.3f} -> {end_map:.3f}")
    assert np.isfinite(losses).all()
    assert np.mean(losses[-8:]) < 0.5 * np.mean(losses[:8]), losses
    assert start_map < 0.2 and end_map > 0.6, (start_map, end_map)
