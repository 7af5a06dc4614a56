"""Tests of tfdet.core.matchers: hand-made goldens and loop-based NumPy references."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf

from tests.backends import run_under_jax
from tfdet.core import anchors, matchers
from tfdet.core.matchers import ArgmaxMatcher, yolo_best_anchor_match

# ---------------------------------------------------------------------------
# Independent NumPy references
# ---------------------------------------------------------------------------


def np_argmax_match(sim, valid, pos_thr, neg_thr, low_quality):
    """Per-anchor loops: the threshold rule, then the Faster R-CNN low-quality rule."""
    batch, num_anchors, _ = sim.shape
    matched = np.full((batch, num_anchors), -1)
    labels = np.zeros((batch, num_anchors), int)
    for b in range(batch):
        cols = np.flatnonzero(valid[b])
        if cols.size == 0:
            continue
        own_best = {}
        for a in range(num_anchors):
            values = sim[b, a, cols]
            own_best[a] = cols[int(np.argmax(values))]  # numpy: first index on ties
            if values.max() >= pos_thr:
                labels[b, a], matched[b, a] = 1, own_best[a]
            elif values.max() >= neg_thr:
                labels[b, a] = -1
        if low_quality:
            for g in cols:
                top = sim[b, :, g].max()
                if top <= 0:
                    continue
                for a in np.flatnonzero(sim[b, :, g] == top):
                    labels[b, a], matched[b, a] = 1, own_best[a]
    return matched, labels


def np_yolo_match(boxes, valid, priors_wh, per_level):
    level = np.full(valid.shape, -1)
    anchor = np.full(valid.shape, -1)
    for b, g in zip(*np.nonzero(valid)):
        h, w = boxes[b, g, 2] - boxes[b, g, 0], boxes[b, g, 3] - boxes[b, g, 1]
        ious = []
        for pw, ph in priors_wh:
            inter = min(w, pw) * min(h, ph)
            ious.append(inter / (w * h + pw * ph - inter))
        best = int(np.argmax(ious))
        level[b, g], anchor[b, g] = best // per_level, best % per_level
    return level, anchor


def _run(matcher, sim, valid):
    matched, labels = matcher.match(np.asarray(sim, np.float32), np.asarray(valid, bool))
    return np.asarray(matched), np.asarray(labels)


# ---------------------------------------------------------------------------
# ArgmaxMatcher goldens
# ---------------------------------------------------------------------------


def test_thresholds_padding_and_empty_image():
    sim = np.zeros((2, 5, 3), np.float32)
    sim[0] = [
        [0.6, 0.2, 0.9],  # best valid 0.6 >= 0.5: positive, GT 0 (padded column 2 ignored)
        [0.45, 0.1, 0.0],  # between 0.4 and 0.5: ignored
        [0.3, 0.39, 0.0],  # below 0.4: negative
        [0.5, 0.7, 0.0],  # 0.7: positive, GT 1
        [0.4, 0.4, 0.0],  # exactly the negative threshold: ignored
    ]
    sim[1] = 0.9  # every column padded: all negative
    valid = [[True, True, False], [False, False, False]]
    matched, labels = _run(ArgmaxMatcher(0.5, 0.4), sim, valid)
    np.testing.assert_array_equal(labels, [[1, -1, 0, 1, -1], [0, 0, 0, 0, 0]])
    np.testing.assert_array_equal(matched, [[0, -1, -1, 1, -1], [-1] * 5])
    # Exactly the positive threshold is positive; default negative = positive threshold.
    _, labels = _run(ArgmaxMatcher(0.5), [[[0.5], [0.49]]], [[True]])
    np.testing.assert_array_equal(labels, [[1, 0]])


def test_low_quality_matches_include_ties():
    sim = [[[0.8, 0.0, 0.0], [0.1, 0.4, 0.0], [0.1, 0.4, 0.0], [0.0, 0.0, 0.0], [0.35, 0.2, 0.0]]]
    valid = [[True, True, False]]
    matched, labels = _run(ArgmaxMatcher(0.7, 0.3), sim, valid)
    np.testing.assert_array_equal(labels, [[1, -1, -1, 0, -1]])
    matched, labels = _run(ArgmaxMatcher(0.7, 0.3, allow_low_quality_matches=True), sim, valid)
    # GT 1's best similarity 0.4 is shared by anchors 1 and 2: both positive.
    np.testing.assert_array_equal(labels, [[1, 1, 1, 0, -1]])
    np.testing.assert_array_equal(matched, [[0, 1, 1, -1, -1]])


def test_low_quality_keeps_own_best_and_skips_zero_and_padded_columns():
    sim = [[[0.6, 0.5, 0.0, 0.0], [0.2, 0.1, 0.0, 0.25]]]
    # GT 0 and GT 1 both have their best at anchor 0, which stays matched to
    # its own best (GT 0). GT 2 overlaps nothing: it forces nothing. Column 3
    # is padding: its 0.25 at anchor 1 forces nothing.
    matched, labels = _run(ArgmaxMatcher(0.7, 0.3, True), sim, [[True, True, True, False]])
    np.testing.assert_array_equal(labels, [[1, 0]])
    np.testing.assert_array_equal(matched, [[0, -1]])


def test_argmax_matcher_matches_loop_reference():
    rng = np.random.default_rng(0)
    # Values on a 0.1 grid: many ties, within rows and columns.
    sim = np.round(rng.uniform(0, 1, (3, 40, 6)) ** 3, 1).astype(np.float32)
    valid = rng.uniform(size=(3, 6)) < 0.7
    valid[2] = False
    for thresholds, low_quality in [((0.5, 0.4), False), ((0.7, 0.3), True), ((0.5, 0.5), True)]:
        expected = np_argmax_match(sim, valid, *thresholds, low_quality)
        got = _run(ArgmaxMatcher(*thresholds, allow_low_quality_matches=low_quality), sim, valid)
        np.testing.assert_array_equal(got[0], expected[0])
        np.testing.assert_array_equal(got[1], expected[1])


def test_argmax_matcher_rejects_inverted_thresholds():
    with pytest.raises(ValueError):
        ArgmaxMatcher(0.3, 0.7)


def test_argmax_matcher_rejects_an_unknown_forced_match_rule():
    with pytest.raises(ValueError, match="forced_match"):
        ArgmaxMatcher(0.5, allow_low_quality_matches=True, forced_match="nearest")


# ---------------------------------------------------------------------------
# yolo_best_anchor_match
# ---------------------------------------------------------------------------


def test_yolo_best_anchor_goldens():
    priors = anchors.yolo_priors()
    # (w, h): (10, 13) is prior 0 exactly; (30, 60) vs (30, 61) has shape IoU
    # 1800 / 1830; (373, 326) is the last prior; the fourth slot is padding.
    boxes = np.array([[[50, 50, 63, 60], [0, 0, 60, 30], [10, 20, 336, 393], [0, 0, 13, 10]]], np.float32)
    level, anchor = yolo_best_anchor_match(boxes, [[True, True, True, False]], priors)
    np.testing.assert_array_equal(np.asarray(level), [[0, 1, 2, -1]])
    np.testing.assert_array_equal(np.asarray(anchor), [[0, 0, 2, -1]])


def test_yolo_best_anchor_matches_loop_reference():
    rng = np.random.default_rng(1)
    corner = rng.uniform(0, 300, (2, 30, 2))
    size = rng.uniform(4, 400, (2, 30, 2))
    boxes = np.concatenate([corner, corner + size], -1).astype(np.float32)
    valid = rng.uniform(size=(2, 30)) < 0.8
    level, anchor = yolo_best_anchor_match(boxes, valid, anchors.yolo_priors())
    expected = np_yolo_match(boxes.astype(np.float64), valid, anchors.YOLOV3_PRIORS, 3)
    np.testing.assert_array_equal(np.asarray(level), expected[0])
    np.testing.assert_array_equal(np.asarray(anchor), expected[1])


# ---------------------------------------------------------------------------
# XLA and JAX
# ---------------------------------------------------------------------------


def _inputs():
    rng = np.random.default_rng(2)
    sim = np.round(rng.uniform(0, 1, (2, 30, 5)), 1).astype(np.float32)
    valid = rng.uniform(size=(2, 5)) < 0.7
    corner = rng.uniform(0, 300, (2, 5, 2))
    boxes = np.concatenate([corner, corner + rng.uniform(4, 400, (2, 5, 2))], -1).astype(np.float32)
    return sim, valid, boxes


def _all_outputs(sim, valid, boxes):
    plain = ArgmaxMatcher(0.5, 0.4).match(sim, valid)
    low = ArgmaxMatcher(0.7, 0.3, allow_low_quality_matches=True).match(sim, valid)
    forcing = ArgmaxMatcher(0.5, allow_low_quality_matches=True, forced_match="forcing").match(sim, valid)
    yolo = yolo_best_anchor_match(boxes, valid, anchors.yolo_priors())
    return [*plain, *low, *forcing, *yolo]


@pytest.mark.slow
def test_xla_matches_eager():
    sim, valid, boxes = _inputs()
    eager = _all_outputs(sim, valid, boxes)
    compiled = tf.function(_all_outputs, jit_compile=True)(sim, valid, boxes)
    for e, c in zip(eager, compiled):
        np.testing.assert_array_equal(np.asarray(c), np.asarray(e))


@pytest.mark.slow
def test_jax_matches_tensorflow(tmp_path):
    sim, valid, boxes = _inputs()
    np.savez(tmp_path / "in.npz", sim=sim, valid=valid, boxes=boxes)
    run_under_jax(f"""
        import jax
        import numpy as np
        from tfdet.core import anchors
        from tfdet.core.matchers import ArgmaxMatcher, yolo_best_anchor_match

        @jax.jit
        def all_outputs(sim, valid, boxes):
            return [*ArgmaxMatcher(0.5, 0.4).match(sim, valid),
                    *ArgmaxMatcher(0.7, 0.3, allow_low_quality_matches=True).match(sim, valid),
                    *ArgmaxMatcher(0.5, allow_low_quality_matches=True, forced_match="forcing").match(sim, valid),
                    *yolo_best_anchor_match(boxes, valid, anchors.yolo_priors())]

        d = np.load({str(tmp_path / "in.npz")!r})
        outs = all_outputs(d["sim"], d["valid"], d["boxes"])
        np.savez({str(tmp_path / "out.npz")!r}, *[np.asarray(o) for o in outs])
    """)
    got = np.load(tmp_path / "out.npz")
    for i, expected in enumerate(_all_outputs(sim, valid, boxes)):
        np.testing.assert_array_equal(got[f"arr_{i}"], np.asarray(expected))
    assert matchers.POSITIVE == 1 and matchers.NEGATIVE == 0 and matchers.IGNORE == -1
