"""RetinaNet: size and FLOPs against independent counts, shapes, FPN and heads, XLA, replicas, saving, JAX, learning.

Independent truths: ``keras.applications.ResNet50`` (the backbone layout
and its parameter count), the layer-by-layer arithmetic of FPN and the heads
written out here, torchvision's published parameter count of its
``retinanet_resnet50_fpn`` (34,014,999 with 91 classes), and VOC mAP of a
model trained on drawn shapes. Step, saving, replica and learning tests use
the small ``network="tiny"`` variant at 64x64 with ``anchor_scale=2`` (16 to
25 pixel anchors on P3, so the 14..30 pixel objects below have positives).
"""

from __future__ import annotations

import math

import keras
import numpy as np
import pytest
import tensorflow as tf

from tests.backends import run_under_jax
from tfdet.heads.retinanet import retinanet_head
from tfdet.models.flops import count_multiply_adds
from tfdet.necks.fpn import fpn
from tfdet.zoo import build_model

from .scenes import colour_scenes
from .training import compiled_train_step, two_replica_gradient_error

K = 2
SIZE = 64
TINY = dict(network="tiny", image_size=SIZE, anchor_scale=2.0, max_detections=20)


@pytest.fixture(scope="module")
def tiny():
    keras.utils.set_random_seed(0)
    return build_model("retinanet_resnet50_fpn", K, **TINY)


@pytest.fixture(scope="module")
def full():
    return build_model("retinanet_resnet50_fpn", 80)


def conv_params(k, c_in, c_out):
    return k * k * c_in * c_out + c_out


def fpn_and_head_params(num_classes, p6_input=2048):
    """FPN (laterals, outputs, P6, P7) and the two subnets, layer by layer."""
    laterals = sum(conv_params(1, c, 256) for c in (512, 1024, 2048))
    outputs = 3 * conv_params(3, 256, 256)
    extra = conv_params(3, p6_input, 256) + conv_params(3, 256, 256)
    towers = 2 * 4 * conv_params(3, 256, 256)
    predictions = conv_params(3, 256, 9 * num_classes) + conv_params(3, 256, 9 * 4)
    return laterals + outputs + extra + towers + predictions


# ---------------------------------------------------------------------------
# The full network
# ---------------------------------------------------------------------------


@pytest.mark.slow
def test_parameter_count(full):
    reference_backbone = keras.applications.ResNet50(include_top=False, weights=None, input_shape=(64, 64, 3))
    backbone = reference_backbone.count_params()
    assert backbone == 23_587_712
    expected = backbone + fpn_and_head_params(80)
    assert full.count_params() == expected == 38_048_372
    # torchvision's retinanet_resnet50_fpn (91 classes): 34,014,999. Its ResNet convolutions have no
    # biases and its frozen batch norms hold buffers, not parameters (4 per channel here: gamma, beta,
    # and the moving mean and variance), and its P6 is computed from P5 (256 channels), not C5.
    bn_channels = sum(l.gamma.shape[0] for l in reference_backbone.layers
                      if isinstance(l, keras.layers.BatchNormalization))
    ours_91 = backbone + fpn_and_head_params(91)
    torchvision_layout = ours_91 - 5 * bn_channels - (conv_params(3, 2048, 256) - conv_params(3, 256, 256))
    assert torchvision_layout == 34_014_999


@pytest.mark.slow
def test_forward_shapes_and_flops_at_640(full):
    anchors = 9 * sum(math.ceil(640 / 2**level) ** 2 for level in range(3, 8))
    assert full.num_anchors == anchors == 76_725 and full.image_size == (640, 640)
    assert full.resize_mode == "letterbox"
    outputs = full(np.zeros((1, 640, 640, 3), np.float32))
    assert outputs["class_logits"].shape == (1, anchors, 80)
    assert outputs["box_deltas"].shape == (1, anchors, 4)
    # P3 anchors: 32 px at the first cell centre (4, 4), ratio 0.5 first (h / w = 0.5).
    np.testing.assert_allclose(full.anchors[1], [4 - 16, 4 - 16, 4 + 16, 4 + 16], atol=1e-4)
    # FLOPs: the backbone as keras.applications counts, then FPN and heads written out by hand.
    backbone = count_multiply_adds(keras.applications.ResNet50(include_top=False, weights=None,
                                                               input_shape=(640, 640, 3)))
    cells = {level: (640 // 2**level) ** 2 for level in range(3, 8)}
    neck = (512 * cells[3] + 1024 * cells[4] + 2048 * cells[5]) * 256
    neck += 9 * 256 * 256 * (cells[3] + cells[4] + cells[5])
    neck += 9 * 2048 * 256 * cells[6] + 9 * 256 * 256 * cells[7]
    locations = sum(cells.values())
    heads = (2 * 4 * 9 * 256 * 256 + 9 * 256 * 9 * 80 + 9 * 256 * 9 * 4) * locations
    assert count_multiply_adds(full) == backbone + neck + heads


def test_image_size_and_overrides_are_checked():
    with pytest.raises(ValueError, match="multiples of 128"):
        build_model("retinanet_resnet50_fpn", 3, image_size=600)
    with pytest.raises(ValueError, match="multiples of 32"):
        build_model("retinanet_resnet50_fpn", 3, network="tiny", image_size=48)
    with pytest.raises(ValueError, match="bogus"):
        build_model("retinanet_resnet101_fpn", 3, bogus=1)
    with pytest.raises(ValueError, match="network"):
        build_model("retinanet_resnet50_fpn", 3, network="vgg")
    with pytest.raises(ValueError, match="backbone weights"):
        build_model("retinanet_resnet50_fpn", 3, network="tiny", image_size=64, backbone_weights="x.weights.h5")


@pytest.mark.slow
def test_keras_applications_backbone_file_switches_to_caffe_inputs(tmp_path):
    keras.utils.set_random_seed(4)
    reference = keras.applications.ResNet50(include_top=False, weights=None, input_shape=(128, 128, 3))
    path = tmp_path / "resnet50_notop.h5"
    reference.save(path)
    detector = build_model("retinanet_resnet50_fpn", 3, image_size=128, backbone_weights=path)
    assert detector.pixel_mean == (123.68, 116.779, 103.939) and detector.pixel_std == (1.0, 1.0, 1.0)
    kernel = detector.network.get_layer("resnet50").get_layer("conv1_conv").kernel.numpy()
    np.testing.assert_array_equal(kernel, reference.get_layer("conv1_conv").kernel.numpy()[:, :, ::-1])
    # The default (random or own weights): ImageNet mean and std in RGB.
    assert build_model("retinanet_resnet50_fpn", 3, **TINY).pixel_std == (58.395, 57.12, 57.375)


# ---------------------------------------------------------------------------
# FPN and heads
# ---------------------------------------------------------------------------


def test_fpn_wiring_and_shapes():
    inputs = [keras.Input((8, 8, 512)), keras.Input((4, 4, 1024)), keras.Input((2, 2, 2048))]
    model = keras.Model(inputs, fpn(inputs))
    assert [tuple(o.shape[1:]) for o in model.outputs] == [(8, 8, 256), (4, 4, 256), (2, 2, 256),
                                                          (1, 1, 256), (1, 1, 256)]
    assert model.get_layer("fpn_p6").kernel.shape == (3, 3, 2048, 256)  # from C5, as the paper
    p7_input = model.get_layer("fpn_p7")._inbound_nodes[0].input_tensors[0]
    assert p7_input._keras_history.operation.name == "fpn_p6_relu"
    # Top-down numerics: identity laterals and outputs turn P_l into C_l plus every coarser C upsampled.
    rng = np.random.default_rng(0)
    for level, channels in ((3, 512), (4, 1024), (5, 2048)):
        lateral = np.zeros((1, 1, channels, 256), np.float32)
        lateral[0, 0, :256, :] = np.eye(256)
        model.get_layer(f"fpn_lateral{level}").kernel.assign(lateral)
        identity = np.zeros((3, 3, 256, 256), np.float32)
        identity[1, 1] = np.eye(256)
        model.get_layer(f"fpn_output{level}").kernel.assign(identity)
    c3, c4, c5 = (rng.normal(size=(1,) + tuple(t.shape[1:])).astype(np.float32) for t in inputs)
    p3, p4, p5, _, _ = model([c3, c4, c5])
    up = lambda x: x.repeat(2, axis=1).repeat(2, axis=2)  # noqa: E731
    np.testing.assert_allclose(p5.numpy(), c5[..., :256], atol=1e-5)
    np.testing.assert_allclose(p4.numpy(), c4[..., :256] + up(c5[..., :256]), atol=1e-5)
    np.testing.assert_allclose(p3.numpy(), c3[..., :256] + up(c4[..., :256] + up(c5[..., :256])), atol=1e-5)


def test_heads_are_shared_across_levels_and_initialised_as_the_paper():
    keras.utils.set_random_seed(1)
    levels = [keras.Input((s, s, 256)) for s in (8, 4, 2, 1, 1)]
    model = keras.Model(levels, retinanet_head(levels, num_classes=5, num_anchors=9))
    for name in ("retinanet_class_conv0", "retinanet_class_conv3", "retinanet_class_predict",
                 "retinanet_box_conv0", "retinanet_box_predict"):
        assert len(model.get_layer(name)._inbound_nodes) == 5, name  # one layer object, five levels
    # 4 tower convolutions + 1 prediction per subnet, weights shared: 10 kernels in all.
    assert len([v for v in model.weights if v.path.endswith("kernel")]) == 10
    np.testing.assert_allclose(model.get_layer("retinanet_class_predict").bias.numpy(), -math.log(99), rtol=1e-6)
    assert np.all(model.get_layer("retinanet_box_predict").bias.numpy() == 0)
    kernel = model.get_layer("retinanet_class_conv0").kernel.numpy()
    assert abs(kernel.std() - 0.01) < 0.0005 and abs(kernel.mean()) < 0.0005
    # Flattened in anchor order: level, y, x, anchor.
    features = [np.random.default_rng(2).normal(size=(1,) + tuple(t.shape[1:])).astype(np.float32) for t in levels]
    outputs = model(features)
    assert outputs["class_logits"].shape == (1, 9 * (64 + 16 + 4 + 1 + 1), 5)
    single = keras.Model(levels[1], retinanet_head([levels[1]], num_classes=5, num_anchors=9))
    single.set_weights(model.get_weights())
    p4_alone = single(features[1])["class_logits"].numpy().reshape(4, 4, 9, 5)
    p4_in_all = outputs["class_logits"].numpy()[0, 9 * 64 : 9 * 80].reshape(4, 4, 9, 5)
    np.testing.assert_allclose(p4_in_all, p4_alone, rtol=1e-5, atol=1e-6)


# ---------------------------------------------------------------------------
# Losses, XLA, saving, JAX (tiny network)
# ---------------------------------------------------------------------------

BOX = np.array([16.0, 8.0, 40.0, 30.0], np.float32)


def groundtruth(boxes, classes):
    return {"boxes": tf.constant(boxes, tf.float32), "classes": tf.constant(classes, tf.int32)}


def scene_batch():
    images = np.full((2, SIZE, SIZE, 3), 40.0, np.float32)
    images[0, 16:40, 8:30] = 220.0
    gt = groundtruth([[BOX, [0, 0, 0, 0]], [[0, 0, 0, 0]] * 2], [[0, -1], [-1, -1]])
    return images, gt


def test_tiny_losses_finite_with_and_without_objects(tiny):
    images, gt = scene_batch()
    outputs = tiny(images)
    assert outputs["class_logits"].shape == (2, 9 * (8 * 8 + 4 * 4 + 2 * 2), K)
    with_objects = tiny.compute_losses(outputs, gt)
    assert float(tiny.loss_normalizer(gt)) >= 1
    empty = groundtruth(np.zeros((2, 2, 4)), -np.ones((2, 2)))
    without = tiny.compute_losses(outputs, empty)
    for losses in (with_objects, without):
        assert all(np.isfinite(float(v)) for v in losses.values())
    assert float(with_objects["loss/box"]) > 0 and float(without["loss/box"]) == 0.0
    # The prior bias: every anchor starts near probability 0.01, so the object-free loss is the
    # focal loss of p ~ 0.01 on all 2 x 84 x 9 x 2 outputs (N clamped to 1), small per output.
    assert 0 < float(without["loss/cls"]) < 2 * 84 * 9 * 2 * 0.75 * 0.02**2 * -math.log(0.98)


def test_train_step_compiles_with_xla():
    keras.utils.set_random_seed(0)
    detector = build_model("retinanet_resnet50_fpn", K, **TINY)
    images, gt = scene_batch()
    optimizer = keras.optimizers.SGD(1e-2)
    before = {v.path: v.numpy() for v in detector.trainable_variables}
    step = compiled_train_step(detector, optimizer)
    eager = detector.compute_losses(detector(images), gt)
    losses = step(images, gt)
    assert set(losses) == {"loss/cls", "loss/box", "loss"}
    for key in losses:
        np.testing.assert_allclose(float(losses[key]), float(eager[key]), rtol=1e-4)
    changed = {v.path: not np.array_equal(before[v.path], v.numpy()) for v in detector.trainable_variables}
    assert changed["tiny1/kernel"] and changed["retinanet_class_predict/kernel"], changed
    assert changed["retinanet_box_conv0/kernel"], changed
    det = tf.function(detector.predict_detections, jit_compile=True)(images)
    assert det["boxes"].shape == (2, 20, 4) and det["classes"].dtype == tf.int32


def test_keras_save_and_load(tiny, tmp_path):
    path = tmp_path / "retinanet.keras"
    tiny.save(path)
    loaded = keras.saving.load_model(path)
    assert type(loaded).__name__ == "FocalDetector" and loaded.num_anchors == tiny.num_anchors
    images = np.random.default_rng(2).uniform(0, 255, (2, SIZE, SIZE, 3)).astype(np.float32)
    a, b = tiny(images), loaded(images)
    for key in a:
        np.testing.assert_allclose(a[key].numpy(), b[key].numpy(), rtol=1e-6, atol=1e-6)
    np.testing.assert_array_equal(loaded.anchors, tiny.anchors)
    assert loaded.max_detections == 20 and loaded.anchor_scale == 2.0 and loaded.resize_mode == "letterbox"


def test_forward_and_loss_under_jax(tiny, tmp_path):
    weights = tmp_path / "tiny.weights.h5"
    tiny.save_weights(weights)
    images, gt = scene_batch()
    np.save(tmp_path / "images.npy", images)
    outputs = tiny(images)
    with_objects = tiny.compute_losses(outputs, gt)
    empty = groundtruth(np.zeros((2, 2, 4)), -np.ones((2, 2)))
    without = tiny.compute_losses(outputs, empty)
    det = tiny.postprocess(outputs)
    printed = run_under_jax(
        f"""
        import numpy as np
        from tfdet.zoo import build_model
        d = build_model("retinanet_resnet50_fpn", {K}, **{TINY!r})
        d.load_weights({str(weights)!r})
        images = np.load({str(tmp_path / "images.npy")!r})
        boxes = np.zeros((2, 2, 4), np.float32); boxes[0, 0] = {BOX.tolist()}
        classes = np.array([[0, -1], [-1, -1]], np.int32)
        out = d(images)
        a = d.compute_losses(out, {{"boxes": boxes, "classes": classes}})
        b = d.compute_losses(out, {{"boxes": np.zeros((2, 2, 4), np.float32), "classes": -np.ones((2, 2), np.int32)}})
        det = d.postprocess(out)
        print(float(a["loss"]), float(b["loss"]), int(np.asarray(det["num_detections"])[0]),
              float(np.asarray(det["scores"])[0, 0]))
        """
    )
    loss_a, loss_b, count, top = printed.strip().splitlines()[-1].split()
    np.testing.assert_allclose(float(loss_a), float(with_objects["loss"]), rtol=1e-4)
    np.testing.assert_allclose(float(loss_b), float(without["loss"]), rtol=1e-4)
    assert int(count) == int(det["num_detections"][0])
    np.testing.assert_allclose(float(top), float(det["scores"][0, 0]), rtol=1e-4)


# ---------------------------------------------------------------------------
# Two replicas
# ---------------------------------------------------------------------------

def test_two_replica_gradients_equal_one_device():
    replicas, worst, (first, second) = two_replica_gradient_error("retinanet_resnet50_fpn", TINY)
    assert replicas == 2
    assert first != second and first > 0 and second > 0  # unequal positives: the test means something
    assert worst < 1e-4


# ---------------------------------------------------------------------------
# Learning
# ---------------------------------------------------------------------------

def synthetic_scenes(count, seed):
    return colour_scenes(count, seed, SIZE, sides=(14, 30))


@pytest.mark.slow
def test_learns_synthetic_shapes():
    from tfdet.evaluation.voc import VocEvaluator

    keras.utils.set_random_seed(0)
    detector = build_model("retinanet_resnet50_fpn", 2, **TINY)
    train_images, train_boxes, train_classes = synthetic_scenes(64, seed=0)
    eval_images, eval_boxes, eval_classes = synthetic_scenes(16, seed=1)
    train = compiled_train_step(detector, keras.optimizers.Adam(1e-3))
    predict = tf.function(detector.predict_detections, jit_compile=True)

    def voc_map():
        evaluator = VocEvaluator(["rectangle", "ellipse"])
        detections = {key: value.numpy() for key, value in predict(eval_images).items()}
        evaluator.add_batch({"boxes": eval_boxes, "classes": eval_classes}, detections)
        return evaluator.evaluate()["mAP"]

    start_map = voc_map()
    losses = []
    for s in range(60):
        k = (s * 8) % 64
        gt = {"boxes": train_boxes[k : k + 8], "classes": train_classes[k : k + 8]}
        losses.append(float(train(train_images[k : k + 8], gt)["loss"]))
    end_map = voc_map()
    assert np.isfinite(losses).all()
    assert np.mean(losses[-8:]) < 0.4 * np.mean(losses[:8]), losses
    assert start_map < 0.2 and end_map > 0.7, (start_map, end_map)
