"""Tests of tfdet.core.target_assigner: a hand-made scene, crowd rules, a NumPy loop reference."""

from __future__ import annotations

import math

import numpy as np
import pytest
import tensorflow as tf

from tests.backends import run_under_jax
from tfdet.core.box_coders import CenterSizeCoder, DeltaCoder
from tfdet.core.matchers import ArgmaxMatcher
from tfdet.core.target_assigner import BACKGROUND, IGNORED, assign

# Six anchors; ground truth for three images (G = 4 slots).
ANCHORS = np.array(
    [[0, 0, 10, 10], [0, 5, 10, 15], [20, 20, 30, 30], [40, 40, 50, 50], [0, 0, 20, 20], [30, 30, 45, 45]],
    np.float32,
)
GT_BOXES = np.array(
    [
        # image 0: two objects, a crowd region, and a padded slot that would
        # match anchor 3 perfectly if it were not padding.
        [[0, 0, 10, 10], [20, 20, 30, 32], [38, 38, 52, 52], [40, 40, 50, 50]],
        # image 1: an object at IoU 0.9 with anchor 0 under a crowd box at IoU 1.
        [[0, 0, 10, 9], [0, 0, 10, 10], [0, 0, 0, 0], [0, 0, 0, 0]],
        # image 2: padding only.
        [[0, 0, 10, 10], [20, 20, 30, 32], [38, 38, 52, 52], [40, 40, 50, 50]],
    ],
    np.float32,
)
GT_CLASSES = np.array([[2, 0, 1, -1], [3, 1, -1, -1], [-1, -1, -1, -1]], np.int32)
GT_CROWD = np.array([[0, 0, 1, 0], [0, 1, 0, 0], [0, 0, 0, 0]], np.int32)


def _assign(matcher, coder=None, anchors=ANCHORS):
    out = assign(anchors, GT_BOXES, GT_CLASSES, GT_CROWD, matcher, coder or DeltaCoder())
    return {k: np.asarray(v) for k, v in out.items()}


def test_hand_made_scene():
    out = _assign(ArgmaxMatcher(0.5, 0.4))
    # Image 0 IoUs (computed by hand):
    #   a0-g0 1.0 -> class 2; a1-g0 50/150 -> negative; a2-g1 100/120 -> class 0;
    #   a3-crowd 100/196 = 0.51 -> ignored (a3-padding 1.0 does not count);
    #   a4-g0 100/400 -> negative; a5-crowd 49/372 = 0.13 -> stays negative.
    # Image 1: a0's best is the crowd box (1.0 > 0.9): ignored, not positive;
    #   a1-crowd 50/150 < 0.4 -> negative.
    # Image 2: nothing valid -> all background.
    np.testing.assert_array_equal(
        out["class_targets"], [[2, -1, 0, -2, -1, -1], [-2, -1, -1, -1, -1, -1], [-1] * 6]
    )
    np.testing.assert_array_equal(out["matched_gt"], [[0, -1, 1, -1, -1, -1], [-1] * 6, [-1] * 6])
    np.testing.assert_array_equal(out["positive_mask"], out["class_targets"] >= 0)
    np.testing.assert_array_equal(out["negative_mask"], out["class_targets"] == BACKGROUND)
    np.testing.assert_array_equal(out["ignore_mask"], out["class_targets"] == IGNORED)
    # Anchor 2 (centre 25, 25, 10x10) to g1 (centre 25, 26, 10x12), weights 10, 10, 5, 5.
    expected = np.zeros((3, 6, 4), np.float32)
    expected[0, 2] = [0.0, 10 * 0.1, 0.0, 5 * math.log(1.2)]
    np.testing.assert_allclose(out["box_targets"], expected, atol=1e-6)
    np.testing.assert_array_equal(out["matched_boxes"][0, [0, 2]], GT_BOXES[0, [0, 1]])
    assert not out["matched_boxes"][1:].any()


def test_low_quality_matches_never_come_from_crowd_boxes():
    # Positive threshold 0.9: g1 (best IoU 0.83 at a2) is forced positive.
    out = _assign(ArgmaxMatcher(0.9, 0.3, allow_low_quality_matches=True))
    np.testing.assert_array_equal(out["class_targets"][0], [2, -2, 0, -2, -1, -1])
    # Negative threshold 0.6: a3's crowd IoU 0.51 is below it, so a3 is a plain
    # negative; a forced match from the crowd box would have made it positive.
    out = _assign(ArgmaxMatcher(0.9, 0.6, allow_low_quality_matches=True))
    np.testing.assert_array_equal(out["class_targets"][0], [2, -1, 0, -1, -1, -1])


def test_per_image_anchors_equal_shared_anchors():
    shared = _assign(ArgmaxMatcher(0.5, 0.4))
    batched = _assign(ArgmaxMatcher(0.5, 0.4), anchors=np.broadcast_to(ANCHORS, (3, 6, 4)).copy())
    for key in shared:
        np.testing.assert_array_equal(batched[key], shared[key], err_msg=key)


# ---------------------------------------------------------------------------
# Random scenes against a loop reference
# ---------------------------------------------------------------------------


def np_iou(a, b):
    inter = max(0.0, min(a[2], b[2]) - max(a[0], b[0])) * max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def np_class_targets(anchors, boxes, classes, crowd, pos_thr, neg_thr):
    """The documented rule, one anchor at a time (no low-quality matches)."""
    out = np.zeros((boxes.shape[0], anchors.shape[0]), int)
    for b in range(boxes.shape[0]):
        for a, anchor in enumerate(anchors):
            ious = [np_iou(anchor, box) if classes[b, g] >= 0 else -1.0 for g, box in enumerate(boxes[b])]
            labelled = [iou if not crowd[b, g] else -1.0 for g, iou in enumerate(ious)]
            crowd_best = max([iou for g, iou in enumerate(ious) if crowd[b, g] and classes[b, g] >= 0], default=-1.0)
            if crowd_best >= max(labelled) and crowd_best >= neg_thr:
                out[b, a] = IGNORED
            elif max(labelled) >= pos_thr:
                out[b, a] = classes[b, int(np.argmax(labelled))]
            elif max(labelled) >= neg_thr:
                out[b, a] = IGNORED
            else:
                out[b, a] = BACKGROUND
    return out


def _random_scene(seed):
    rng = np.random.default_rng(seed)
    corner = rng.uniform(0, 80, (40, 2))
    anchors = np.concatenate([corner, corner + rng.uniform(8, 30, (40, 2))], -1).astype(np.float32)
    # Ground truth near anchors so that every band (positive/ignore/negative) occurs.
    picks = rng.integers(0, 40, (2, 6))
    boxes = (anchors[picks] + rng.uniform(-4, 4, (2, 6, 4))).astype(np.float32)
    boxes[..., 2:] = np.maximum(boxes[..., 2:], boxes[..., :2] + 1)
    classes = rng.integers(0, 5, (2, 6)).astype(np.int32)
    classes[:, 5] = -1
    crowd = (rng.uniform(size=(2, 6)) < 0.25).astype(np.int32)
    return anchors, boxes, classes, crowd


def test_random_scenes_match_loop_reference_and_decode_to_matched_gt():
    coder = CenterSizeCoder()
    for seed in range(3):
        anchors, boxes, classes, crowd = _random_scene(seed)
        out = assign(anchors, boxes, classes, crowd, ArgmaxMatcher(0.5, 0.4), coder)
        out = {k: np.asarray(v) for k, v in out.items()}
        np.testing.assert_array_equal(out["class_targets"], np_class_targets(anchors, boxes, classes, crowd, 0.5, 0.4))
        pos = out["positive_mask"]
        assert pos.any() and out["ignore_mask"].any() and out["negative_mask"].any()
        assert (pos.astype(int) + out["negative_mask"] + out["ignore_mask"] == 1).all()
        decoded = np.asarray(coder.decode(out["box_targets"], anchors))
        rows, cols = np.nonzero(pos)
        np.testing.assert_allclose(decoded[rows, cols], boxes[rows, out["matched_gt"][rows, cols]], atol=1e-3)
        assert not crowd[rows, out["matched_gt"][rows, cols]].any()
        assert not out["box_targets"][~pos].any()


# ---------------------------------------------------------------------------
# XLA and JAX
# ---------------------------------------------------------------------------


@pytest.mark.slow
def test_xla_matches_eager():
    anchors, boxes, classes, crowd = _random_scene(0)

    def run(anchors, boxes, classes, crowd):
        return assign(anchors, boxes, classes, crowd, ArgmaxMatcher(0.7, 0.3, True), DeltaCoder())

    eager = run(anchors, boxes, classes, crowd)
    compiled = tf.function(run, jit_compile=True)(anchors, boxes, classes, crowd)
    for key in eager:
        np.testing.assert_allclose(np.asarray(compiled[key]), np.asarray(eager[key]), atol=1e-5, err_msg=key)


@pytest.mark.slow
def test_jax_matches_tensorflow(tmp_path):
    anchors, boxes, classes, crowd = _random_scene(0)
    np.savez(tmp_path / "in.npz", anchors=anchors, boxes=boxes, classes=classes, crowd=crowd)
    run_under_jax(f"""
        import numpy as np
        from tfdet.core.box_coders import DeltaCoder
        from tfdet.core.matchers import ArgmaxMatcher
        from tfdet.core.target_assigner import assign
        import jax

        @jax.jit
        def run(anchors, boxes, classes, crowd):
            return assign(anchors, boxes, classes, crowd, ArgmaxMatcher(0.7, 0.3, True), DeltaCoder())

        d = np.load({str(tmp_path / "in.npz")!r})
        out = run(d["anchors"], d["boxes"], d["classes"], d["crowd"])
        np.savez({str(tmp_path / "out.npz")!r}, **{{k: np.asarray(v) for k, v in out.items()}})
    """)
    got = np.load(tmp_path / "out.npz")
    expected = assign(anchors, boxes, classes, crowd, ArgmaxMatcher(0.7, 0.3, True), DeltaCoder())
    for key, value in expected.items():
        np.testing.assert_allclose(got[key], np.asarray(value), atol=1e-5, err_msg=key)
