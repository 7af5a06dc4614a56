"""YOLOv3 detector: target assignment, losses, post-processing, compilation, backends.

Truths are worked out by hand: for a box of known size and centre, the prior
of best shape IoU (YOLOV3_PRIORS, (w, h) at 416), its scale, cell and
offsets; for outputs written as the exact inverse of the targets, the loss
terms that must remain (the entropy of the offset targets) and the detection
that must come out.
"""

from __future__ import annotations

import math

import keras
import numpy as np
import pytest

from tfdet.zoo import build_model

from .training import compiled_train_step

from ..backends import run_under_jax

SIZE = 128  # the small size for everything but the 416 shape test


@pytest.fixture(scope="module")
def tiny():
    return build_model("yolov3_tiny", 3, image_size=SIZE)


def _zeros_outputs(detector, size, batch=1):
    """Raw outputs of the right static shapes, all zero (no network needed)."""
    channels = 3 * (5 + detector.num_classes)
    return {key: np.zeros((batch, size // s, size // s, channels), "float32")
            for key, s in zip(detector.level_keys, detector.strides)}


def _scene_416():
    """Two objects in a 416 image, with the answers worked out by hand.

    Box A: h=120, w=110, centre (200, 300). Shape IoU with prior (w116, h90):
    90*110 / (13200 + 10440 - 9900) = 0.72, the best of the nine ((59, 119)
    gives 0.53, (156, 198) 0.43) -> stride 32, prior 0; cell (6, 9) of 13x13,
    offsets (200/32 - 6, 300/32 - 9) = (0.25, 0.375); index 3*(52^2+26^2) +
    (6*13 + 9)*3 = 10401.
    Box B: h=12, w=9, centre (20.5, 44). Prior (10, 13): 108 / 130 = 0.83 ->
    stride 8, prior 0; cell (2, 5) of 52x52, offsets (0.5625, 0.5); index
    (2*52 + 5)*3 = 327.
    """
    boxes = np.array([[[140, 245, 260, 355], [14.5, 39.5, 26.5, 48.5], [0, 0, 0, 0]]], "float32")
    classes = np.array([[2, 0, -1]], "int32")
    return {"boxes": boxes, "classes": classes}


@pytest.fixture(scope="module")
def yolov3_416():
    return build_model("yolov3", 4)


def test_yolov3_shapes_at_416(yolov3_416):
    images = np.random.default_rng(0).integers(0, 256, (1, 416, 416, 3)).astype("uint8")
    outputs = yolov3_416(images)
    assert {k: tuple(v.shape) for k, v in outputs.items()} == {
        "p3": (1, 52, 52, 27), "p4": (1, 26, 26, 27), "p5": (1, 13, 13, 27)}
    assert yolov3_416.flatten_outputs(outputs).shape == (1, 10647, 9)
    detections = yolov3_416.postprocess(outputs)
    assert tuple(detections["boxes"].shape) == (1, 100, 4)
    assert tuple(detections["scores"].shape) == (1, 100)
    assert tuple(detections["classes"].shape) == (1, 100)
    assert tuple(detections["num_detections"].shape) == (1,)
    losses = yolov3_416.compute_losses(outputs, _scene_416())
    assert set(losses) == {"loss/yx", "loss/hw", "loss/objectness", "loss/class", "loss"}
    assert all(np.isfinite(float(v)) for v in losses.values())


def test_width_multiplier_scales_hidden_convs_not_outputs(yolov3_416):
    narrow = build_model("yolov3", 4, width_multiplier=0.25)
    # conv_0 (32 channels), the last residual stage (1024), the stride-8 output (3 * (5 + 4)).
    for index, full_channels, narrow_channels in ((0, 32, 8), (51, 1024, 256), (74, 27, 27)):
        assert yolov3_416.network.get_layer(f"conv_{index}").filters == full_channels
        assert narrow.network.get_layer(f"conv_{index}").filters == narrow_channels
    assert len([layer for layer in narrow.network.layers if layer.name.startswith("conv_")]) == 75


def test_assignment_hand_made_scene(yolov3_416):
    outputs = _zeros_outputs(yolov3_416, 416)
    targets = yolov3_416.assign_targets(_scene_416(), yolov3_416._grid_sizes(outputs))
    np.testing.assert_array_equal(np.asarray(targets["level"]), [[2, 0, -1]])
    np.testing.assert_array_equal(np.asarray(targets["prior"]), [[0, 0, -1]])
    np.testing.assert_array_equal(np.asarray(targets["index"]), [[10401, 327, -1]])
    objectness = np.asarray(targets["objectness"])
    assert objectness.shape == (1, 10647)
    np.testing.assert_array_equal(np.flatnonzero(objectness[0]), [327, 10401])
    yx, hw, boxes = (np.asarray(targets[k])[0] for k in ("yx", "hw", "boxes"))
    np.testing.assert_allclose(yx[10401], [0.25, 0.375], atol=1e-6)
    np.testing.assert_allclose(hw[10401], [math.log(120 / 90), math.log(110 / 116)], atol=1e-6)
    np.testing.assert_allclose(boxes[10401], [140, 245, 260, 355])
    np.testing.assert_allclose(yx[327], [0.5625, 0.5], atol=1e-6)
    np.testing.assert_allclose(hw[327], [math.log(12 / 13), math.log(9 / 10)], atol=1e-6)
    classes = np.asarray(targets["classes"])[0]
    np.testing.assert_array_equal(classes[10401], [0, 0, 1, 0])
    np.testing.assert_array_equal(classes[327], [1, 0, 0, 0])
    assert classes.sum() == 2 and np.abs(yx).sum() == pytest.approx(0.25 + 0.375 + 0.5625 + 0.5)


def test_same_prediction_twice_last_box_wins_classes_multi_hot(tiny):
    # Both boxes: same centre cell and prior; Darknet keeps the later box and
    # both classes.
    groundtruth = {"boxes": np.array([[[40, 40, 70, 72], [42, 41, 68, 70]]], "float32"),
                   "classes": np.array([[0, 2]], "int32")}
    targets = tiny.assign_targets(groundtruth, tiny._grid_sizes(_zeros_outputs(tiny, SIZE)))
    index = np.asarray(targets["index"])[0]
    assert index[0] == index[1] >= 0
    assert np.asarray(targets["objectness"]).sum() == 1
    np.testing.assert_allclose(np.asarray(targets["boxes"])[0, index[0]], [42, 41, 68, 70])
    np.testing.assert_array_equal(np.asarray(targets["classes"])[0, index[0]], [1, 0, 1])


def test_crowd_and_padding_are_never_assigned(tiny):
    groundtruth = {"boxes": np.array([[[10, 10, 50, 50], [60, 60, 100, 100], [0, 0, 0, 0]]], "float32"),
                   "classes": np.array([[1, 1, -1]], "int32"), "is_crowd": np.array([[1, 0, 0]], "int32")}
    targets = tiny.assign_targets(groundtruth, tiny._grid_sizes(_zeros_outputs(tiny, SIZE)))
    assert np.asarray(targets["index"])[0, 0] == -1 and np.asarray(targets["index"])[0, 2] == -1
    assert np.asarray(targets["objectness"]).sum() == 1


def _perfect_outputs(detector, groundtruth, size):
    """Raw outputs that are the exact inverse of the targets (+-30 logits)."""
    outputs = _zeros_outputs(detector, size)
    targets = detector.assign_targets(groundtruth, detector._grid_sizes(outputs))
    positive = np.asarray(targets["objectness"])[0] > 0
    yx = np.clip(np.asarray(targets["yx"])[0], 1e-6, 1 - 1e-6)
    hw = np.asarray(targets["hw"])[0]
    classes = np.asarray(targets["classes"])[0]
    num_anchors = positive.shape[0]
    raw = np.zeros((num_anchors, 5 + detector.num_classes), "float32")
    raw[:, 0] = np.log(yx[:, 1] / (1 - yx[:, 1]))  # tx
    raw[:, 1] = np.log(yx[:, 0] / (1 - yx[:, 0]))  # ty
    raw[:, 2], raw[:, 3] = hw[:, 1], hw[:, 0]
    raw[:, 4] = np.where(positive, 30.0, -30.0)
    raw[:, 5:] = np.where(classes > 0, 30.0, -30.0)
    start = 0
    for key in detector.level_keys:
        h, w, c = outputs[key].shape[1:]
        count = h * w * 3
        outputs[key] = raw[start:start + count].reshape(1, h, w, c)
        start += count
    return outputs, yx, positive


def test_losses_of_perfect_outputs_are_the_offset_entropy(tiny):
    # Box h=40, w=50 centre (30, 35): prior (37, 58) at stride 16, cell (1, 2),
    # offsets (30/16 - 1, 35/16 - 2) = (0.875, 0.1875).
    groundtruth = {"boxes": np.array([[[10, 10, 50, 60]]], "float32"), "classes": np.array([[1]], "int32")}
    outputs, yx, positive = _perfect_outputs(tiny, groundtruth, SIZE)
    np.testing.assert_allclose(yx[positive][0], [0.875, 0.1875], atol=1e-6)
    entropy = sum(-t * math.log(t) - (1 - t) * math.log(1 - t) for t in (0.875, 0.1875))
    weight = 2 - (40 / SIZE) * (50 / SIZE)
    losses = {k: float(v) for k, v in tiny.compute_losses(outputs, groundtruth).items()}
    assert losses["loss/yx"] == pytest.approx(weight * entropy, rel=1e-4)
    assert losses["loss/hw"] == pytest.approx(0.0, abs=1e-8)
    assert losses["loss/objectness"] == pytest.approx(0.0, abs=1e-6)
    assert losses["loss/class"] == pytest.approx(0.0, abs=1e-6)
    # Predicting no object at the positive costs BCE(1, sigmoid(-30)) = 30.
    outputs["p4"] = np.where(outputs["p4"] == 30.0, -30.0, outputs["p4"]) * 1.0
    worse = {k: float(v) for k, v in tiny.compute_losses(outputs, groundtruth).items()}
    assert worse["loss/objectness"] == pytest.approx(30.0, rel=1e-4)


def test_ignore_mask_spares_good_unassigned_boxes(tiny):
    groundtruth = {"boxes": np.array([[[10, 10, 50, 60]]], "float32"), "classes": np.array([[1]], "int32")}
    outputs, _, positive = _perfect_outputs(tiny, groundtruth, SIZE)
    # A second prior of the same cell predicts the same box with objectness 0
    # logit (BCE log 2 if it counted): IoU 1 > 0.5, so it is ignored.
    index = int(np.flatnonzero(positive)[0])
    raw = tiny.flatten_outputs(outputs).numpy()[0]
    other = index - 1  # prior 1 of the same cell, (23, 27)
    raw[other, 0:2] = raw[index, 0:2]
    raw[other, 2] = math.log(50 / 23)
    raw[other, 3] = math.log(40 / 27)
    raw[other, 4] = 0.0
    h, w, c = outputs["p4"].shape[1:]
    outputs["p4"] = raw[: h * w * 3].reshape(1, h, w, c)
    losses = tiny.compute_losses(outputs, groundtruth)
    assert float(losses["loss/objectness"]) == pytest.approx(0.0, abs=1e-6)
    raw[other, 2] = raw[other, 3] = -3.0  # now a tiny box: IoU < 0.5, penalised
    outputs["p4"] = raw[: h * w * 3].reshape(1, h, w, c)
    losses = tiny.compute_losses(outputs, groundtruth)
    assert float(losses["loss/objectness"]) == pytest.approx(math.log(2), rel=1e-4)


def test_giou_box_loss_zero_for_perfect_boxes():
    detector = build_model("yolov3_tiny", 3, image_size=SIZE, box_loss="giou")
    groundtruth = {"boxes": np.array([[[10, 10, 50, 60]]], "float32"), "classes": np.array([[1]], "int32")}
    outputs, _, _ = _perfect_outputs(detector, groundtruth, SIZE)
    losses = {k: float(v) for k, v in detector.compute_losses(outputs, groundtruth).items()}
    assert set(losses) == {"loss/giou", "loss/objectness", "loss/class", "loss"}
    assert losses["loss/giou"] == pytest.approx(0.0, abs=1e-5)
    assert losses["loss"] == pytest.approx(0.0, abs=1e-4)


def test_postprocess_finds_the_encoded_box(tiny):
    groundtruth = {"boxes": np.array([[[10, 10, 50, 60]]], "float32"), "classes": np.array([[1]], "int32")}
    outputs, _, _ = _perfect_outputs(tiny, groundtruth, SIZE)
    detections = tiny.postprocess(outputs)
    assert int(detections["num_detections"][0]) == 1
    np.testing.assert_allclose(np.asarray(detections["boxes"])[0, 0], [10, 10, 50, 60], atol=1e-3)
    assert int(detections["classes"][0, 0]) == 1
    assert float(detections["scores"][0, 0]) == pytest.approx(1.0, abs=1e-5)


def _batch(rng, batch=2, size=SIZE):
    images = rng.integers(0, 256, (batch, size, size, 3)).astype("float32")
    groundtruth = {"boxes": np.array([[[10, 12, 60, 50], [64, 70, 120, 126], [0, 0, 0, 0]],
                                      [[0, 0, 0, 0], [0, 0, 0, 0], [0, 0, 0, 0]]], "float32")[:batch],
                   "classes": np.array([[0, 2, -1], [-1, -1, -1]], "int32")[:batch]}
    return images, groundtruth


def test_finite_loss_with_objects_and_with_none(tiny):
    images, groundtruth = _batch(np.random.default_rng(1))
    outputs = tiny(images, training=True)
    losses = tiny.compute_losses(outputs, groundtruth)
    assert all(np.isfinite(float(v)) for v in losses.values())
    empty = {"boxes": np.zeros((2, 3, 4), "float32"), "classes": -np.ones((2, 3), "int32")}
    losses = tiny.compute_losses(outputs, empty)
    assert float(losses["loss/yx"]) == 0 and float(losses["loss/hw"]) == 0 and float(losses["loss/class"]) == 0
    assert np.isfinite(float(losses["loss"])) and float(losses["loss/objectness"]) > 0


def test_any_size_input_takes_the_size_from_the_outputs():
    detector = build_model("yolov3_tiny", 2, image_size=None, build_size=64)
    assert detector.image_size == (None, None)
    images = np.zeros((1, 96, 160, 3), "float32")
    outputs = detector(images)
    assert detector.input_size(outputs) == (96, 160)
    groundtruth = {"boxes": np.array([[[10, 100, 50, 150]]], "float32"), "classes": np.array([[1]], "int32")}
    assert np.isfinite(float(detector.compute_losses(outputs, groundtruth)["loss"]))
    boxes = np.asarray(detector.postprocess(outputs)["boxes"])
    assert boxes[..., 2].max() <= 96 and boxes[..., 3].max() <= 160


def test_xla_train_step(tiny):
    import tensorflow as tf

    detector = build_model("yolov3_tiny", 3, image_size=SIZE)
    optimizer = keras.optimizers.SGD(1e-3)
    optimizer.build(detector.trainable_variables)

    step = compiled_train_step(detector, optimizer)

    images, groundtruth = _batch(np.random.default_rng(2))
    before = [v.numpy().copy() for v in detector.trainable_variables]
    losses = step(tf.constant(images), {k: tf.constant(v) for k, v in groundtruth.items()})
    assert all(np.isfinite(float(v)) for v in losses.values())
    changed = sum(not np.array_equal(b, v.numpy()) for b, v in zip(before, detector.trainable_variables))
    assert changed == len(before)


def test_keras_save_load_equal_outputs(tiny, tmp_path):
    path = str(tmp_path / "tiny.keras")
    tiny.save(path)
    loaded = keras.models.load_model(path)
    assert type(loaded).__name__ == "YOLOv3Detector" and loaded.model_name == "yolov3_tiny"
    images, groundtruth = _batch(np.random.default_rng(3))
    a, b = tiny(images), loaded(images)
    for key in a:
        np.testing.assert_allclose(np.asarray(a[key]), np.asarray(b[key]), rtol=1e-5, atol=1e-5)
    la = tiny.compute_losses(a, groundtruth)["loss"]
    lb = loaded.compute_losses(b, groundtruth)["loss"]
    assert float(la) == pytest.approx(float(lb), rel=1e-5)


def test_forward_and_loss_under_jax(tiny, tmp_path):
    path = str(tmp_path / "tiny.keras")
    tiny.save(path)
    images, groundtruth = _batch(np.random.default_rng(4))
    np.savez(tmp_path / "batch.npz", images=images, **groundtruth)
    expected = {k: float(v) for k, v in tiny.compute_losses(tiny(images), groundtruth).items()}
    stdout = run_under_jax(f"""
        import json, keras, numpy as np
        import tfdet.models.yolov3_detector  # registers the class for deserialisation
        assert keras.backend.backend() == "jax"
        model = keras.models.load_model({path!r})
        data = np.load({str(tmp_path / "batch.npz")!r})
        losses = model.compute_losses(model(data["images"]), {{"boxes": data["boxes"], "classes": data["classes"]}})
        print(json.dumps({{k: float(v) for k, v in losses.items()}}))
    """)
    import json

    lines = stdout.strip().splitlines()
    got = json.loads(lines[-1])
    for key, value in expected.items():
        assert got[key] == pytest.approx(value, rel=1e-4, abs=1e-4)


def test_mirrored_two_replica_gradients_equal_one_device():
    """Two logical CPUs (a fresh interpreter: devices are fixed at TF start).

    The trainer's rule: each replica divides by the global batch (its
    ``loss_normalizer`` summed over replicas), and the replicas' gradients
    are summed. Batch norm runs in inference mode here: in
    training mode each replica normalises with its own batch statistics
    (no sync), which is a different function of the full batch.
    """
    import os
    import subprocess
    import sys
    import textwrap

    from ..conftest import REPO_ROOT

    code = textwrap.dedent("""
        import numpy as np, tensorflow as tf
        cpu = tf.config.list_physical_devices("CPU")[0]
        tf.config.set_logical_device_configuration(
            cpu, [tf.config.LogicalDeviceConfiguration(), tf.config.LogicalDeviceConfiguration()])
        import keras
        from tfdet.zoo import build_model
        keras.utils.set_random_seed(0)
        detector = build_model("yolov3_tiny", 3, image_size=64)
        rng = np.random.default_rng(0)
        images = rng.integers(0, 256, (4, 64, 64, 3)).astype("float32")
        boxes = np.array([[[4, 6, 30, 40], [0, 0, 0, 0]], [[30, 30, 60, 50], [10, 10, 20, 24]],
                          [[0, 0, 0, 0], [0, 0, 0, 0]], [[8, 20, 56, 60], [0, 0, 0, 0]]], "float32")
        classes = np.array([[0, -1], [2, 1], [-1, -1], [1, -1]], "int32")

        def grads_of(images, boxes, classes, global_count):
            groundtruth = {"boxes": boxes, "classes": classes}
            if global_count:
                ctx = tf.distribute.get_replica_context()
                normalizer = ctx.all_reduce("sum", detector.loss_normalizer(groundtruth))
            else:
                normalizer = None
            with tf.GradientTape() as tape:
                loss = detector.compute_losses(detector(images, training=False), groundtruth,
                                               normalizer=normalizer)["loss"]
            return tape.gradient(loss, detector.trainable_variables)

        single = tf.function(grads_of)(images, boxes, classes, False)
        strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
        assert strategy.num_replicas_in_sync == 2
        dataset = tf.data.Dataset.from_tensor_slices((images, boxes, classes)).batch(4)
        batch = next(iter(strategy.experimental_distribute_dataset(dataset)))

        @tf.function
        def mirrored(batch):
            per_replica = strategy.run(lambda i, b, c: grads_of(i, b, c, True), args=batch)
            return [strategy.reduce("SUM", g, axis=None) for g in per_replica]

        reduced = mirrored(batch)
        worst = max(float(np.max(np.abs(a - b)) / (np.max(np.abs(a)) + 1e-12)) for a, b in zip(single, reduced))
        print("worst", worst, len(reduced))
    """)
    env = dict(os.environ, KERAS_BACKEND="tensorflow", PYTHONPATH=str(REPO_ROOT), CUDA_VISIBLE_DEVICES="")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr[-4000:]
    worst = float(done.stdout.split("worst")[-1].split()[0])
    assert worst < 1e-4


def _shapes_scene(rng, size=SIZE, max_objects=3):
    """Bright rectangles (class 0) and ellipses (class 1) on a dark background."""
    image = np.full((size, size, 3), 30, "float32")
    boxes = np.zeros((max_objects, 4), "float32")
    classes = -np.ones(max_objects, "int32")
    yy, xx = np.mgrid[0:size, 0:size] + 0.5
    for i in range(int(rng.integers(1, max_objects + 1))):
        h, w = rng.uniform(size / 8, size * 0.45, 2)
        cy, cx = rng.uniform(h / 2, size - h / 2), rng.uniform(w / 2, size - w / 2)
        cls = int(rng.integers(0, 2))
        if cls == 0:
            mask = (np.abs(yy - cy) <= h / 2) & (np.abs(xx - cx) <= w / 2)
        else:
            mask = ((yy - cy) / (h / 2)) ** 2 + ((xx - cx) / (w / 2)) ** 2 <= 1
        image[mask] = 230
        boxes[i] = [cy - h / 2, cx - w / 2, cy + h / 2, cx + w / 2]
        classes[i] = cls
    return image, boxes, classes


def _shapes_batch(rng, batch):
    scenes = [_shapes_scene(rng) for _ in range(batch)]
    return np.stack([s[0] for s in scenes]), {"boxes": np.stack([s[1] for s in scenes]),
                                              "classes": np.stack([s[2] for s in scenes])}


@pytest.mark.slow
def test_yolov3_tiny_learns_synthetic_shapes():
    """80 XLA steps, batch 8, 128 px: loss falls and VOC mAP@0.5 climbs.

    Measured on this 2-core machine (seed 0): mAP 0.01 before training, 0.50
    after 50 steps, 0.77 after 75, 0.89 after 125. Batch-norm momentum is set
    to 0.9 for the test so the moving statistics used at evaluation catch up
    within 80 steps (at Keras' 0.99 they lag and mAP stays near 0).
    """
    import tensorflow as tf

    from tfdet.evaluation.voc import VocEvaluator

    keras.utils.set_random_seed(0)
    detector = build_model("yolov3_tiny", 2, image_size=SIZE, score_threshold=0.01)
    for layer in detector.network.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            layer.momentum = 0.9
    optimizer = keras.optimizers.Adam(1e-3)

    train = compiled_train_step(detector, optimizer)

    def step(images, groundtruth):
        return train(images, groundtruth)["loss"]

    predict = tf.function(detector.predict_detections)
    eval_images, eval_groundtruth = _shapes_batch(np.random.default_rng(123), 16)

    def voc_map():
        evaluator = VocEvaluator(["rectangle", "ellipse"])
        detections = {k: np.asarray(v) for k, v in predict(eval_images).items()}
        evaluator.add_batch(eval_groundtruth, detections)
        return evaluator.evaluate()["mAP"]

    start_map = voc_map()
    rng = np.random.default_rng(0)
    losses = [float(step(*_shapes_batch(rng, 8))) for _ in range(80)]
    end_map = voc_map()
    assert np.mean(losses[-10:]) < 0.2 * np.mean(losses[:5])
    assert end_map > 0.3 and end_map > start_map + 0.25, (start_map, end_map)
