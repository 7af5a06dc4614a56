"""SSDDetector: matching, the MultiBox loss, decoding + NMS, XLA, saving, JAX, two replicas, learning.

Truth comes from hand-made scenes: a ground-truth box placed exactly on a
default box, logits chosen so every anchor's cross-entropy is known in closed
form, and a numpy restatement of the paper's rules for the general case.
Step, saving and learning tests use the small ``network="tiny"`` variant at
64x64 (376 default boxes); one test runs the full SSD300 forward (8732).
"""

from __future__ import annotations

import math

import keras
import numpy as np
import pytest
import tensorflow as tf

from tests.backends import run_under_jax
from tfdet.core.matchers import ArgmaxMatcher
from tfdet.zoo import build_model

from .scenes import colour_scenes
from .training import compiled_train_step, two_replica_gradient_error

K = 2
SIZE = 64


@pytest.fixture(scope="module")
def tiny():
    keras.utils.set_random_seed(0)
    return build_model("ssd300_vgg16", K, network="tiny", image_size=SIZE, max_detections=20)


def np_iou(a, b):
    """[N, 4] x [M, 4] yxyx -> [N, M]."""
    y1 = np.maximum(a[:, None, 0], b[None, :, 0])
    x1 = np.maximum(a[:, None, 1], b[None, :, 1])
    y2 = np.minimum(a[:, None, 2], b[None, :, 2])
    x2 = np.minimum(a[:, None, 3], b[None, :, 3])
    inter = np.clip(y2 - y1, 0, None) * np.clip(x2 - x1, 0, None)
    area_a = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1])
    area_b = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    return inter / (area_a[:, None] + area_b[None, :] - inter)


def np_encode(box, anchor):
    """SSD centre-size encoding with variances (0.1, 0.1, 0.2, 0.2)."""
    ha, wa = anchor[2] - anchor[0], anchor[3] - anchor[1]
    cya, cxa = anchor[0] + ha / 2, anchor[1] + wa / 2
    h, w = box[2] - box[0], box[3] - box[1]
    cy, cx = box[0] + h / 2, box[1] + w / 2
    return np.array([(cy - cya) / ha / 0.1, (cx - cxa) / wa / 0.1, math.log(h / ha) / 0.2, math.log(w / wa) / 0.2])


def np_smooth_l1(d):
    d = np.abs(d)
    return np.where(d < 1, 0.5 * d * d, d - 0.5).sum(-1)


def outputs_of(logits, deltas):
    return {"class_logits": tf.constant(logits, tf.float32), "box_deltas": tf.constant(deltas, tf.float32)}


def groundtruth(boxes, classes):
    return {"boxes": tf.constant(boxes, tf.float32), "classes": tf.constant(classes, tf.int32)}


# ---------------------------------------------------------------------------
# Matching
# ---------------------------------------------------------------------------


def test_matcher_bipartite_then_threshold():
    # Anchors (rows) x ground truth (columns); column 2 is padding.
    similarity = np.array(
        [
            [0.40, 0.70, 0.99],  # GT0's best anchor: forced to GT0 although GT1 overlaps it more
            [0.10, 0.80, 0.00],  # GT1's best anchor
            [0.05, 0.55, 0.00],  # thresholded to GT1
            [0.30, 0.45, 0.00],  # below 0.5 everywhere: negative
            [0.00, 0.00, 0.90],  # only the padded column: negative
        ],
        np.float32,
    )[None]
    valid = np.array([[True, True, False]])
    matcher = ArgmaxMatcher(0.5, allow_low_quality_matches=True, forced_match="forcing")  # what SSD uses
    matched, labels = matcher.match(similarity, valid)
    np.testing.assert_array_equal(np.asarray(matched)[0], [0, 1, 1, -1, -1])
    np.testing.assert_array_equal(np.asarray(labels)[0], [1, 1, 1, 0, 0])


def test_gt_on_a_default_box_is_matched_to_it(tiny):
    anchors = tiny.anchors
    index = 120  # an in-image default box of the stride-16 map
    box = np.clip(anchors[index], 0, SIZE)
    assert np.allclose(box, anchors[index]), "pick a default box inside the image"
    targets = tiny.assign_targets(groundtruth([[box, [0, 0, 0, 0]]], [[1, -1]]))
    positive = np.asarray(targets["positive_mask"])[0]
    expected = np_iou(anchors, box[None])[:, 0] >= 0.5
    np.testing.assert_array_equal(positive, expected)
    assert positive[index]
    np.testing.assert_allclose(np.asarray(targets["box_targets"])[0, index], 0.0, atol=1e-5)
    assert np.asarray(targets["class_targets"])[0, index] == 1


# ---------------------------------------------------------------------------
# The MultiBox loss
# ---------------------------------------------------------------------------

BOX = np.array([16.0, 8.0, 48.0, 40.0], np.float32)


def positives_of(anchors, box):
    iou = np_iou(anchors, box[None])[:, 0]
    positive = iou >= 0.5
    positive[np.argmax(iou)] = True
    return positive


def test_uniform_logits_give_four_log_k_plus_one(tiny):
    """Zero logits: every selected anchor costs log(K + 1); N positives select 3N negatives."""
    anchors = tiny.anchors
    positive = positives_of(anchors, BOX)
    n = positive.sum()
    assert 1 <= n and 3 * n < len(anchors)
    logits = np.zeros((1, len(anchors), K + 1))
    deltas = np.zeros((1, len(anchors), 4))
    losses = tiny.compute_losses(outputs_of(logits, deltas), groundtruth([[BOX]], [[0]]))
    np.testing.assert_allclose(float(losses["loss/cls"]), 4 * math.log(K + 1), rtol=1e-5)
    expected_box = sum(np_smooth_l1(np_encode(BOX, a)) for a in anchors[positive]) / n
    np.testing.assert_allclose(float(losses["loss/box"]), expected_box, rtol=1e-5)
    np.testing.assert_allclose(float(losses["loss"]), 4 * math.log(K + 1) + expected_box, rtol=1e-5)


def test_no_objects_gives_finite_loss_from_mined_negatives(tiny):
    """An object-free batch: 3 mined negatives per image, divided by max(0, 1) = 1."""
    a = tiny.num_anchors
    logits = np.zeros((2, a, K + 1))
    empty = groundtruth(np.zeros((2, 3, 4)), -np.ones((2, 3)))
    losses = tiny.compute_losses(outputs_of(logits, np.zeros((2, a, 4))), empty)
    np.testing.assert_allclose(float(losses["loss/cls"]), 2 * 3 * math.log(K + 1), rtol=1e-5)
    assert float(losses["loss/box"]) == 0.0
    # Gradients with no positives are finite, and not all zero (negatives train).
    variable = tf.Variable(np.random.default_rng(0).normal(size=(2, a, K + 1)).astype(np.float32))
    with tf.GradientTape() as tape:
        loss = tiny.compute_losses({"class_logits": variable, "box_deltas": tf.zeros((2, a, 4))}, empty)["loss"]
    grad = tape.gradient(loss, variable).numpy()
    assert np.isfinite(grad).all() and np.abs(grad).sum() > 0


def test_hard_negatives_are_the_lowest_background_scores(tiny):
    """Random logits, one object and one empty image: a numpy restatement of the paper's rules."""
    rng = np.random.default_rng(1)
    anchors = tiny.anchors
    a = len(anchors)
    logits = rng.normal(scale=2.0, size=(2, a, K + 1)).astype(np.float32)
    deltas = rng.normal(size=(2, a, 4)).astype(np.float32)
    gt = groundtruth([[BOX, [0, 0, 0, 0]], [[0, 0, 0, 0]] * 2], [[1, -1], [-1, -1]])
    losses = tiny.compute_losses(outputs_of(logits, deltas), gt)

    log_p = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
    positive = positives_of(anchors, BOX)
    n = positive.sum()
    cls_total = -log_p[0, positive, 2].sum()  # class 1 -> logit 2
    background = -log_p[:, :, 0]
    hard0 = np.sort(background[0, ~positive])[::-1][: 3 * n].sum()
    hard1 = np.sort(background[1])[::-1][:3].sum()  # no positives: min_negatives = 3
    expected_cls = (cls_total + hard0 + hard1) / n
    expected_box = sum(np_smooth_l1(deltas[0, i] - np_encode(BOX, anchors[i])) for i in np.flatnonzero(positive)) / n
    np.testing.assert_allclose(float(losses["loss/cls"]), expected_cls, rtol=1e-4)
    np.testing.assert_allclose(float(losses["loss/box"]), expected_box, rtol=1e-4)


# ---------------------------------------------------------------------------
# Post-processing
# ---------------------------------------------------------------------------


def test_postprocess_decodes_and_suppresses(tiny):
    anchors = tiny.anchors
    a = len(anchors)
    logits = np.zeros((1, a, K + 1), np.float32)
    logits[..., 0] = 10.0  # background everywhere ...
    index = 120
    logits[0, index] = [0.0, 0.0, 12.0]  # ... but one confident class-1 box
    deltas = np.zeros((1, a, 4), np.float32)
    deltas[0, index] = [1.0, -1.0, 0.5, 0.0]  # known shift and growth
    anchor = anchors[index]
    ha, wa = anchor[2] - anchor[0], anchor[3] - anchor[1]
    cy, cx = anchor[0] + ha / 2 + 0.1 * ha, anchor[1] + wa / 2 - 0.1 * wa
    h = ha * math.exp(0.2 * 0.5)
    expected = np.clip([cy - h / 2, cx - wa / 2, cy + h / 2, cx + wa / 2], 0, SIZE)
    # A weaker same-class box overlapping it (IoU > 0.45): suppressed by NMS.
    iou = np_iou(np.clip(anchors, 0, SIZE), expected[None])[:, 0]
    iou[index] = 0
    duplicate = int(np.argmax(iou))
    assert 0.45 < iou[duplicate] < 1
    logits[0, duplicate] = [0.0, 0.0, 11.0]
    det = tiny.postprocess(outputs_of(logits, deltas))
    assert det["boxes"].shape == (1, 20, 4) and det["classes"].dtype == tf.int32
    assert int(det["num_detections"][0]) == 1
    assert int(det["classes"][0, 0]) == 1 and int(det["classes"][0, 1]) == -1
    np.testing.assert_allclose(det["boxes"][0, 0].numpy(), expected, rtol=1e-5, atol=1e-4)
    np.testing.assert_allclose(float(det["scores"][0, 0]), 1 / (1 + 2 * math.exp(-12)), rtol=1e-6)


# ---------------------------------------------------------------------------
# Shapes, XLA, saving, JAX
# ---------------------------------------------------------------------------


def test_full_ssd300_forward_shapes():
    detector = build_model("ssd300_vgg16", 20, max_detections=10)
    assert detector.num_anchors == 8732 and detector.image_size == (300, 300)
    outputs = detector(np.zeros((1, 300, 300, 3), np.float32))
    assert outputs["class_logits"].shape == (1, 8732, 21)
    assert outputs["box_deltas"].shape == (1, 8732, 4)
    # Reference default boxes: the first is conv4_3's 0.1 x 300 = 30 px square at (4, 4).
    np.testing.assert_allclose(detector.anchors[0], [4 - 15, 4 - 15, 4 + 15, 4 + 15], atol=1e-4)
    det = detector.postprocess(outputs)
    assert det["boxes"].shape == (1, 10, 4) and det["num_detections"].shape == (1,)


@pytest.mark.slow
def test_full_ssd512_builds_with_its_default_boxes():
    detector = build_model("ssd512_vgg16", 20, max_detections=10)
    assert detector.num_anchors == 24564 and detector.image_size == (512, 512)
    # Reference SSD512: conv4_3 boxes of 0.07 x 512 px centred at (4, 4).
    half = 0.07 * 512 / 2
    np.testing.assert_allclose(detector.anchors[0], [4 - half, 4 - half, 4 + half, 4 + half], atol=1e-4)


def test_width_multiplier_keeps_the_layout_and_divides_the_channels():
    full = build_model("ssd300_vgg16", 2)
    narrow = build_model("ssd300_vgg16", 2, width_multiplier=0.125)
    np.testing.assert_array_equal(narrow.anchors, full.anchors)
    for name, channels in (("conv1_1", 8), ("conv4_3", 64), ("conv7", 128), ("conv8_2", 64), ("conv11_2", 32)):
        assert narrow.network.get_layer(name).filters == channels, name
        assert full.network.get_layer(name).filters == channels * 8, name
    with pytest.raises(ValueError, match="width_multiplier"):
        build_model("ssd300_vgg16", 2, network="tiny", image_size=SIZE, width_multiplier=0.5)


def test_unknown_override_is_an_error():
    with pytest.raises(ValueError, match="bogus"):
        build_model("ssd300_vgg16", 3, bogus=1)
    with pytest.raises(ValueError, match="box_scales"):
        build_model("ssd300_vgg16", 3, network="tiny", image_size=SIZE, box_scales="reference")


def scene_batch():
    images = np.full((2, SIZE, SIZE, 3), 40.0, np.float32)
    images[0, 16:48, 8:40] = 220.0
    gt = groundtruth([[BOX, [0, 0, 0, 0]], [[0, 0, 0, 0]] * 2], [[0, -1], [-1, -1]])
    return images, gt


def test_train_step_compiles_with_xla(tiny):
    keras.utils.set_random_seed(0)
    detector = build_model("ssd300_vgg16", K, network="tiny", image_size=SIZE, max_detections=20)
    images, gt = scene_batch()
    optimizer = keras.optimizers.SGD(1e-3)
    before = [v.numpy() for v in detector.trainable_variables]

    step = compiled_train_step(detector, optimizer)

    eager = detector.compute_losses(detector(images), gt)
    losses = step(images, gt)
    assert set(losses) == {"loss/cls", "loss/box", "loss"}
    for key in losses:
        assert np.isfinite(float(losses[key]))
        np.testing.assert_allclose(float(losses[key]), float(eager[key]), rtol=1e-4)
    changed = {v.path: not np.array_equal(b, v.numpy()) for b, v in zip(before, detector.trainable_variables)}
    # The stem, a class head and the box head of the map holding the positives all moved.
    assert changed["tiny1/kernel"] and changed["tiny3_class/kernel"] and changed["tiny4_box/kernel"], changed
    # The post-processing compiles too.
    det = tf.function(detector.predict_detections, jit_compile=True)(images)
    assert det["boxes"].shape == (2, 20, 4)


def test_keras_save_and_load(tiny, tmp_path):
    path = tmp_path / "ssd.keras"
    tiny.save(path)
    loaded = keras.saving.load_model(path)
    assert type(loaded).__name__ == "SSDDetector" and loaded.num_anchors == tiny.num_anchors
    images = np.random.default_rng(2).uniform(0, 255, (2, SIZE, SIZE, 3)).astype(np.float32)
    a, b = tiny(images), loaded(images)
    for key in a:
        np.testing.assert_allclose(a[key].numpy(), b[key].numpy(), rtol=1e-6, atol=1e-6)
    np.testing.assert_array_equal(loaded.anchors, tiny.anchors)
    assert loaded.score_threshold == 0.01 and loaded.iou_threshold == 0.45 and loaded.max_detections == 20


def test_forward_loss_and_postprocess_under_jax(tiny, tmp_path):
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
        d = build_model("ssd300_vgg16", {K}, network="tiny", image_size={SIZE}, max_detections=20)
        d.load_weights({str(weights)!r})
        images = np.load({str(tmp_path / "images.npy")!r})
        boxes = np.zeros((2, 2, 4), np.float32); boxes[0, 0] = {BOX.tolist()}
        classes = np.array([[0, -1], [-1, -1]], np.int32)
        out = d(images)
        a = d.compute_losses(out, {{"boxes": boxes, "classes": classes}})
        b = d.compute_losses(out, {{"boxes": np.zeros((2, 2, 4), np.float32), "classes": -np.ones((2, 2), np.int32)}})
        det = d.postprocess(out)
        print(float(a["loss"]), float(b["loss"]), int(np.asarray(det["num_detections"])[0]),
              float(np.asarray(det["scores"])[0, 0]), tuple(np.asarray(out["class_logits"]).shape))
        """
    )
    loss_a, loss_b, count, top, shape = printed.strip().splitlines()[-1].split(" ", 4)
    np.testing.assert_allclose(float(loss_a), float(with_objects["loss"]), rtol=1e-4)
    np.testing.assert_allclose(float(loss_b), float(without["loss"]), rtol=1e-4)
    assert int(count) == int(det["num_detections"][0])
    np.testing.assert_allclose(float(top), float(det["scores"][0, 0]), rtol=1e-4)
    assert shape == f"(2, {tiny.num_anchors}, {K + 1})"


# ---------------------------------------------------------------------------
# Two replicas
# ---------------------------------------------------------------------------

def test_two_replica_gradients_equal_one_device():
    replicas, worst, (first, second) = two_replica_gradient_error(
        "ssd300_vgg16", {"network": "tiny", "image_size": 64})
    assert replicas == 2
    # Each replica alone would divide by its own count (half the total): the sum rule is what is tested.
    assert first > 0 and second > 0
    assert worst < 1e-4


# ---------------------------------------------------------------------------
# Learning
# ---------------------------------------------------------------------------

def synthetic_scenes(count, seed):
    return colour_scenes(count, seed, SIZE, sides=(14, 34))


@pytest.mark.slow
def test_learns_synthetic_shapes():
    from tfdet.evaluation.voc import VocEvaluator

    keras.utils.set_random_seed(0)
    detector = build_model("ssd300_vgg16", 2, network="tiny", image_size=SIZE)
    train_images, train_boxes, train_classes = synthetic_scenes(64, seed=0)
    eval_images, eval_boxes, eval_classes = synthetic_scenes(16, seed=1)
    optimizer = keras.optimizers.Adam(1e-3)

    train = compiled_train_step(detector, optimizer)

    def step(images, boxes, classes):
        return train(images, {"boxes": boxes, "classes": classes})["loss"]

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
        losses.append(float(step(train_images[k : k + 8], train_boxes[k : k + 8], train_classes[k : k + 8])))
    end_map = voc_map()
    assert np.isfinite(losses).all()
    assert np.mean(losses[-8:]) < 0.5 * np.mean(losses[:8]), losses
    assert start_map < 0.2 and end_map > 0.7, (start_map, end_map)
