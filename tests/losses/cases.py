"""One small input per public loss function, shared by the XLA and JAX checks.

Imports only NumPy and ``tfdet.losses`` (no TensorFlow), so the JAX
subprocess can evaluate the same cases under ``KERAS_BACKEND=jax``.
Logits include +-100 so both backends are also exercised at the extremes.
"""

from __future__ import annotations

import numpy as np


def _boxes(rng, shape):
    """Well-formed yxyx boxes inside a 100 x 100 image."""
    corner = rng.uniform(0.0, 60.0, size=shape + (2,))
    size = rng.uniform(1.0, 40.0, size=shape + (2,))
    return np.concatenate([corner, corner + size], axis=-1).astype(np.float32)


def make_cases():
    """Returns ``{name: (function_name, kwargs of NumPy arrays, static kwargs, differentiated arg)}``."""
    rng = np.random.default_rng(7)
    logits = rng.normal(0.0, 4.0, size=(2, 5, 3)).astype(np.float32)
    logits[0, 0] = [100.0, -100.0, 0.0]
    multi_hot = (rng.uniform(size=(2, 5, 3)) < 0.4).astype(np.float32)
    int_labels = rng.integers(-1, 3, size=(2, 5)).astype(np.int32)
    deltas_t = rng.normal(size=(2, 5, 4)).astype(np.float32)
    deltas_p = rng.normal(size=(2, 5, 4)).astype(np.float32)
    boxes_t, boxes_p = _boxes(rng, (2, 5)), _boxes(rng, (2, 5))

    a, g, k, m = 6, 3, 2, 4
    gt_boxes = _boxes(rng, (2, g))
    gt_classes = np.array([[0, 1, -1], [1, -1, -1]], np.int32)
    positive = np.zeros((2, a), np.float32)
    positive[0, [0, 2]] = 1.0
    positive[1, 3] = 1.0
    pred_boxes = _boxes(rng, (2, a))
    pred_boxes[0, 1] = gt_boxes[0, 0]  # a perfect unassigned box: ignored
    y_true = {
        "objectness": positive,
        "yx": rng.uniform(0.05, 0.95, size=(2, a, 2)).astype(np.float32),
        "hw": rng.normal(size=(2, a, 2)).astype(np.float32),
        "boxes": _boxes(rng, (2, a)),
        "classes": (rng.uniform(size=(2, a, k)) < 0.5).astype(np.float32),
        "gt_boxes": gt_boxes,
        "gt_classes": gt_classes,
    }
    obj_logits = rng.normal(0.0, 3.0, size=(2, a)).astype(np.float32)
    obj_logits[0, 0], obj_logits[0, 3] = -100.0, 100.0
    y_pred = {
        "objectness": obj_logits,
        "yx": rng.normal(size=(2, a, 2)).astype(np.float32),
        "hw": rng.normal(size=(2, a, 2)).astype(np.float32),
        "classes": rng.normal(0.0, 3.0, size=(2, a, k)).astype(np.float32),
        "boxes": pred_boxes,
    }
    mask_logits = rng.normal(0.0, 3.0, size=(2, 3, m, m, k)).astype(np.float32)
    mask_logits[0, 0, 0, 0, :] = 100.0
    mask_args = {
        "mask_targets": (rng.uniform(size=(2, 3, m, m)) < 0.5).astype(np.float32),
        "mask_logits": mask_logits,
        "classes": np.array([[0, 1, -1], [1, 0, 0]], np.int32),
        "weights": np.array([[1, 1, 1], [1, 0, 1]], np.float32),
    }
    losses = rng.uniform(size=(2, 5, 3)).astype(np.float32)
    weights = (rng.uniform(size=(2, 5)) < 0.5).astype(np.float32)
    return {
        "sigmoid_focal_loss": ("sigmoid_focal_loss", {"labels": multi_hot, "logits": logits}, {}, "logits"),
        "sigmoid_cross_entropy": (
            "sigmoid_cross_entropy",
            {"labels": multi_hot, "logits": logits},
            {"label_smoothing": 0.1},
            "logits",
        ),
        "softmax_cross_entropy_int": ("softmax_cross_entropy", {"labels": int_labels, "logits": logits}, {}, "logits"),
        "softmax_cross_entropy_onehot": (
            "softmax_cross_entropy",
            {"labels": multi_hot, "logits": logits},
            {"label_smoothing": 0.1},
            "logits",
        ),
        "smooth_l1": ("smooth_l1", {"targets": deltas_t, "predictions": deltas_p}, {"beta": 1.0 / 9.0}, "predictions"),
        "huber": ("huber", {"targets": deltas_t, "predictions": deltas_p}, {"delta": 1.0}, "predictions"),
        "giou_loss": ("giou_loss", {"boxes_true": boxes_t, "boxes_pred": boxes_p}, {}, "boxes_pred"),
        "diou_loss": ("diou_loss", {"boxes_true": boxes_t, "boxes_pred": boxes_p}, {}, "boxes_pred"),
        "ciou_loss": ("ciou_loss", {"boxes_true": boxes_t, "boxes_pred": boxes_p}, {}, "boxes_pred"),
        "yolo_v3_losses": (
            "yolo_v3_losses",
            {"y_true": y_true, "y_pred": y_pred},
            {"image_size": (100, 100)},
            "y_pred",
        ),
        "yolo_v3_ignore_mask": (
            "yolo_v3_ignore_mask",
            {"pred_boxes": pred_boxes, "gt_boxes": gt_boxes, "gt_classes": gt_classes},
            {},
            None,
        ),
        "mask_bce": ("mask_bce", mask_args, {}, "mask_logits"),
        "safe_divide": (
            "safe_divide",
            {"numerator": np.array([3.0, 2.0, 0.0], np.float32), "denominator": np.array([2.0, 0.0, 0.0], np.float32)},
            {},
            "denominator",
        ),
        "normalize_by": (
            "normalize_by",
            {"losses": losses, "count": np.float32(0.0), "weights": weights},
            {},
            "losses",
        ),
        "weighted_mean": ("weighted_mean", {"losses": losses, "weights": weights}, {}, "losses"),
    }


def flatten_output(output):
    """A loss output (tensor or ``loss/<term>`` dict) as ``{key: array}``."""
    if isinstance(output, dict):
        return {key: np.asarray(value) for key, value in sorted(output.items())}
    return {"": np.asarray(output)}
