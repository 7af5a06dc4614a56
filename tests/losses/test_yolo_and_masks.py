"""YOLOv3 loss terms and the Mask R-CNN mask loss: goldens and independent references."""

from __future__ import annotations

import math

import keras
import numpy as np
import pytest
import tensorflow as tf

from tests.losses.cases import make_cases
from tfdet.losses import mask_bce, yolo_v3_ignore_mask, yolo_v3_losses

LN3 = math.log(3.0)  # sigmoid(ln 3) = 0.75


def _golden_yolo_inputs():
    """One image, 3 anchors, 2 classes, 2 ground-truth slots (the second padding), 100 x 100."""
    y_true = {
        "objectness": np.float32([[1, 0, 0]]),
        "yx": np.float32([[[0.5, 0.25], [0.3, 0.3], [0.9, 0.9]]]),
        "hw": np.float32([[[0.1, -0.2], [5, 5], [5, 5]]]),
        "boxes": np.float32([[[0, 0, 50, 20], [0, 0, 100, 100], [0, 0, 100, 100]]]),
        "classes": np.float32([[[1, 0], [0, 0], [0, 0]]]),
        "gt_boxes": np.float32([[[0, 0, 50, 20], [60, 60, 80, 80]]]),
        "gt_classes": np.int32([[0, -1]]),
    }
    # Anchors 1 and 2 are negatives with garbage regression/class outputs that must not count.
    y_pred = {
        "objectness": np.float32([[LN3, 5.0, 0.0]]),
        "yx": np.float32([[[0, 0], [100, -100], [100, -100]]]),
        "hw": np.float32([[[0.3, 0.0], [-9, 9], [9, 9]]]),
        "classes": np.float32([[[LN3, LN3], [100, 100], [100, 100]]]),
        # Anchor 1: IoU with the real box 1000 / 1250 = 0.8 > 0.5 -> ignored.
        # Anchor 2: equals only the padded slot -> not ignored.
        "boxes": np.float32([[[0, 0, 10, 10], [0, 0, 50, 25], [60, 60, 80, 80]]]),
    }
    return y_true, y_pred


# Positive anchor: h = 0.5, w = 0.2 of the image -> s = 2 - 0.1 = 1.9.
#   yx: BCE at logit 0 is ln 2 for any target: 1.9 * 2 ln 2 = 2.633959
#   hw: errors -0.2, -0.2: 1.9 * 0.5 * (0.04 + 0.04) = 0.076
#   objectness: -ln 0.75 (positive) + ln 2 (anchor 2, target 0, logit 0) = 0.287682 + 0.693147 = 0.980829
#   class: -ln 0.75 - ln 0.25 = 0.287682 + 1.386294 = 1.673976
GOLDEN = {"loss/yx": 2.633959, "loss/hw": 0.076, "loss/objectness": 0.980829, "loss/class": 1.673976}
GOLDEN["loss"] = sum(GOLDEN.values())


def test_yolo_v3_golden_and_batch_normalisation():
    y_true, y_pred = _golden_yolo_inputs()
    terms = yolo_v3_losses(y_true, y_pred, image_size=(100, 100))
    assert set(terms) == set(GOLDEN)
    for key, value in GOLDEN.items():
        assert terms[key].numpy() == pytest.approx(value, rel=1e-5), key
    np.testing.assert_array_equal(
        yolo_v3_ignore_mask(y_pred["boxes"], y_true["gt_boxes"], y_true["gt_classes"]).numpy(), [[0, 1, 0]]
    )
    # Two copies of the image: sums double, the division by B = 2 undoes it.
    doubled = yolo_v3_losses(
        {k: np.concatenate([v, v]) for k, v in y_true.items()},
        {k: np.concatenate([v, v]) for k, v in y_pred.items()},
        image_size=(100, 100),
    )
    for key, value in GOLDEN.items():
        assert doubled[key].numpy() == pytest.approx(value, rel=1e-5), key
    # A replica holding one image of a global batch of 4 divides by 4.
    quarter = yolo_v3_losses(y_true, y_pred, image_size=(100, 100), normalizer=4.0)
    for key, value in GOLDEN.items():
        assert quarter[key].numpy() == pytest.approx(value / 4.0, rel=1e-5), key


def _np_bce(targets, logits):
    # Stable BCE from logits: softplus(x) - y x.
    return np.logaddexp(0.0, logits) - targets * logits


def _np_pairwise_iou(a, b):
    ymin = np.maximum(a[:, None, 0], b[None, :, 0])
    xmin = np.maximum(a[:, None, 1], b[None, :, 1])
    ymax = np.minimum(a[:, None, 2], b[None, :, 2])
    xmax = np.minimum(a[:, None, 3], b[None, :, 3])
    inter = np.clip(ymax - ymin, 0, None) * np.clip(xmax - xmin, 0, None)
    area = lambda x: (x[:, 2] - x[:, 0]) * (x[:, 3] - x[:, 1])  # noqa: E731
    return inter / (area(a)[:, None] + area(b)[None, :] - inter)


def _np_yolo_v3(y_true, y_pred, height, width, threshold=0.5):
    """Loop-per-anchor reference, written from the paper / darknet description."""
    batch, anchors = y_true["objectness"].shape
    total = {"loss/yx": 0.0, "loss/hw": 0.0, "loss/objectness": 0.0, "loss/class": 0.0}
    for b in range(batch):
        real = y_true["gt_boxes"][b][y_true["gt_classes"][b] >= 0]
        best = _np_pairwise_iou(y_pred["boxes"][b], real).max(axis=1)
        for a in range(anchors):
            obj_logit = float(y_pred["objectness"][b, a])
            if y_true["objectness"][b, a] == 1:
                box = y_true["boxes"][b, a]
                s = 2.0 - (box[2] - box[0]) / height * (box[3] - box[1]) / width
                total["loss/yx"] += s * _np_bce(y_true["yx"][b, a], y_pred["yx"][b, a]).sum()
                total["loss/hw"] += s * 0.5 * ((y_true["hw"][b, a] - y_pred["hw"][b, a]) ** 2).sum()
                total["loss/objectness"] += _np_bce(1.0, obj_logit)
                total["loss/class"] += _np_bce(y_true["classes"][b, a], y_pred["classes"][b, a]).sum()
            elif best[a] <= threshold:
                total["loss/objectness"] += _np_bce(0.0, obj_logit)
    total = {key: value / batch for key, value in total.items()}
    total["loss"] = sum(total.values())
    return total


def test_yolo_v3_matches_numpy_reference_with_extreme_logits():
    _, args, static, _ = make_cases()["yolo_v3_losses"]
    y_true, y_pred = args["y_true"], args["y_pred"]
    expected = _np_yolo_v3(y_true, y_pred, *static["image_size"])
    pred = {key: tf.constant(value) for key, value in y_pred.items()}
    with tf.GradientTape() as tape:
        tape.watch(pred)
        terms = yolo_v3_losses(y_true, pred, **static)
    for key, value in expected.items():
        assert terms[key].numpy() == pytest.approx(value, rel=1e-5), key
    grads = tape.gradient(terms["loss"], pred)
    assert grads["boxes"] is None  # the ignore mask is not differentiated
    for key in ("objectness", "yx", "hw", "classes"):
        assert np.all(np.isfinite(grads[key].numpy())), key


def test_yolo_v3_image_without_objects():
    y_true, y_pred = _golden_yolo_inputs()
    y_true = dict(y_true, objectness=np.zeros((1, 3), np.float32), gt_classes=np.int32([[-1, -1]]))
    terms = yolo_v3_losses(y_true, y_pred, image_size=(100, 100))
    # Only the no-object term: BCE(0, ln 3) + BCE(0, 5) + BCE(0, 0) = ln 4 + softplus(5) + ln 2.
    expected = math.log(4.0) + math.log1p(math.exp(5.0)) + math.log(2.0)
    assert terms["loss/objectness"].numpy() == pytest.approx(expected, rel=1e-5)
    for key in ("loss/yx", "loss/hw", "loss/class"):
        assert terms[key].numpy() == 0.0


def test_mask_bce_golden():
    # RoI 0, class 1, 2 x 2 mask. Selected logits [[0, ln 3], [ln 3, -ln 3]], targets [[1, 1], [0, 0]]:
    #   ln 2 + -ln 0.75 + -ln 0.25 + -ln 0.75 = 0.693147 + 0.287682 + 1.386294 + 0.287682; mean 0.663701.
    # Other channels hold 100 and would cost ~100 a pixel if picked.
    # RoI 1: class -1 (padding) -> 0. RoI 2: class 0, weight 0 -> 0.
    logits = np.full((1, 3, 2, 2, 3), 100.0, np.float32)
    logits[0, 0, :, :, 1] = [[0.0, LN3], [LN3, -LN3]]
    targets = np.zeros((1, 3, 2, 2), np.float32)
    targets[0, :, 0, :] = 1.0
    classes = np.int32([[1, -1, 0]])
    weights = np.float32([[1.0, 1.0, 0.0]])
    np.testing.assert_allclose(mask_bce(targets, logits, classes, weights).numpy(), [[0.663701, 0.0, 0.0]], atol=1e-6)
    # Already-selected [B, R, M, M] logits give the same.
    selected = logits[..., 1]
    np.testing.assert_allclose(mask_bce(targets, selected, classes, weights).numpy(), [[0.663701, 0.0, 0.0]], atol=1e-6)


def test_mask_bce_equals_keras_on_selected_channel_and_gradients():
    _, args, _, _ = make_cases()["mask_bce"]
    targets, logits, classes, weights = (args[k] for k in ("mask_targets", "mask_logits", "classes", "weights"))
    picked = np.take_along_axis(logits, np.maximum(classes, 0)[:, :, None, None, None], axis=-1)[..., 0]
    keras_bce = keras.losses.BinaryCrossentropy(from_logits=True, reduction=None)
    # Keras averages the last axis (one mask row); the mean over rows completes the M x M mean.
    expected = keras_bce(targets, picked).numpy().mean(axis=-1) * weights * (classes >= 0)
    logits = tf.constant(logits)
    with tf.GradientTape() as tape:
        tape.watch(logits)
        loss = mask_bce(targets, logits, classes, weights)
        total = tf.reduce_sum(loss)
    np.testing.assert_allclose(loss.numpy(), expected, rtol=1e-5, atol=1e-6)
    grad = tape.gradient(total, logits).numpy()
    assert np.all(np.isfinite(grad))
    # Only the ground-truth channel of weighted, valid RoIs gets gradient.
    selected = np.eye(logits.shape[-1])[np.maximum(classes, 0)] * (weights * (classes >= 0))[..., None]
    assert np.all(grad * (1.0 - selected[:, :, None, None, :]) == 0.0)


def test_yolo_v3_giou_box_loss_golden():
    """GIoU replaces the yx/hw terms; the other terms are unchanged.

    Positive anchor: truth (0, 0, 50, 20), area 1000; prediction (0, 0, 10, 10),
    area 100, all inside it: IoU = 100 / 1000 = 0.1 and the enclosing box is
    the union, so GIoU = 0.1 and the term is s * (1 - 0.1) = 1.9 * 0.9 = 1.71.
    """
    y_true, y_pred = _golden_yolo_inputs()
    terms = yolo_v3_losses(y_true, y_pred, image_size=(100, 100), box_loss="giou", giou_weight=2.0)
    assert set(terms) == {"loss/giou", "loss/objectness", "loss/class", "loss"}
    assert terms["loss/giou"].numpy() == pytest.approx(2.0 * 1.71, rel=1e-5)
    for key in ("loss/objectness", "loss/class"):
        assert terms[key].numpy() == pytest.approx(GOLDEN[key], rel=1e-5), key
    expected_total = 2.0 * 1.71 + GOLDEN["loss/objectness"] + GOLDEN["loss/class"]
    assert terms["loss"].numpy() == pytest.approx(expected_total, rel=1e-5)
    with pytest.raises(ValueError, match="box_loss"):
        yolo_v3_losses(y_true, y_pred, image_size=(100, 100), box_loss="l1")
