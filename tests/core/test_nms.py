"""Tests of tfdet.core.nms against hand-computed goldens, TensorFlow's NMS kernels and NumPy references."""

from __future__ import annotations

import functools
import json
import math

import numpy as np
import pytest
import tensorflow as tf

from tests.backends import run_under_jax
from tfdet.core.nms import batched_multiclass_nms, non_max_suppression, non_max_suppression_with_scores

# ---------------------------------------------------------------------------
# Inputs and independent references
# ---------------------------------------------------------------------------


def random_boxes(rng, shape, extent=100.0, min_size=4.0, max_size=40.0):
    """``shape + [4]`` well-formed yxyx float32 boxes, crowded enough to overlap often."""
    corner = rng.uniform(0.0, extent, size=tuple(shape) + (2,))
    size = rng.uniform(min_size, max_size, size=tuple(shape) + (2,))
    return np.concatenate([corner, corner + size], axis=-1).astype(np.float32)


def distinct_scores(rng, shape):
    """Scores in (0, 1) without ties (a permutation of a grid), so greedy order is unambiguous."""
    count = int(np.prod(shape))
    grid = (np.arange(count) + 0.5) / count
    return rng.permutation(grid).reshape(shape).astype(np.float32)


def np_iou(box, boxes):
    """IoU of one yxyx box with ``[n, 4]`` boxes in float64 (0 for an empty union)."""
    box, boxes = box.astype(np.float64), boxes.astype(np.float64)
    h = np.clip(np.minimum(box[2], boxes[:, 2]) - np.maximum(box[0], boxes[:, 0]), 0, None)
    w = np.clip(np.minimum(box[3], boxes[:, 3]) - np.maximum(box[1], boxes[:, 1]), 0, None)
    inter = h * w
    union = (box[2] - box[0]) * (box[3] - box[1]) + (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1]) - inter
    return np.where(union > 0, inter / np.where(union > 0, union, 1.0), 0.0)


def assert_no_iou_near(boxes, threshold, margin=1e-6):
    """Guards a random case against IoUs so close to the threshold that float rounding decides."""
    for i in range(len(boxes)):
        assert not np.any(np.abs(np_iou(boxes[i], boxes[i + 1 :]) - threshold) < margin)


def np_soft_nms(boxes, scores, max_output, iou_threshold, score_threshold, sigma):
    """Gaussian soft-NMS written out directly from Bodla et al. 2017 (plus TF's hard cut)."""
    current = scores.astype(np.float64).copy()
    alive = current > score_threshold
    kept, kept_scores = [], []
    while len(kept) < max_output and alive.any():
        pick = int(np.argmax(np.where(alive, current, -np.inf)))
        kept.append(pick)
        kept_scores.append(current[pick])
        alive[pick] = False
        iou = np_iou(boxes[pick], boxes)
        current = current * np.exp(-(iou**2) / sigma)
        alive &= (iou <= iou_threshold) & (current > score_threshold)
    return np.array(kept, dtype=np.int64), np.array(kept_scores)


def reference_multiclass(boxes, scores, max_det, iou_thr, score_thr, top_k, agnostic=False, sigma=0.0):
    """One image: top-k (box, class) pairs, per-class NMS by TF (or NumPy soft-NMS), merged by score.

    Returns ``(boxes [n, 4], scores [n], classes [n])`` of the ``n <= max_det`` detections.
    """
    n, k = scores.shape
    per_class = boxes.ndim == 3
    flat = scores.reshape(-1)
    order = np.argsort(-flat, kind="stable")[:top_k]
    pair_boxes = boxes.reshape(-1, 4)[order] if per_class else boxes[order // k]
    pair_classes = order % k
    pair_scores = flat[order]
    groups = [np.arange(len(order))] if agnostic else [np.flatnonzero(pair_classes == c) for c in range(k)]
    found = []
    for members in groups:
        if len(members) == 0:
            continue
        if sigma > 0:
            kept, kept_scores = np_soft_nms(
                pair_boxes[members], pair_scores[members], max_det, iou_thr, score_thr, sigma
            )
        else:
            kept = tf.image.non_max_suppression(
                pair_boxes[members], pair_scores[members], max_det, iou_thr, score_thr
            ).numpy()
            kept_scores = pair_scores[members][kept]
        found += [(s, members[i]) for i, s in zip(kept, kept_scores)]
    found.sort(key=lambda item: -item[0])
    found = found[:max_det]
    chosen = np.array([m for _, m in found], dtype=np.int64)
    return (
        pair_boxes[chosen].reshape(-1, 4),
        np.array([s for s, _ in found], dtype=np.float64),
        pair_classes[chosen],
    )


def assert_matches_reference(out, boxes, scores, **kwargs):
    for b in range(scores.shape[0]):
        ref_boxes, ref_scores, ref_classes = reference_multiclass(boxes[b], scores[b], **kwargs)
        n = len(ref_scores)
        assert int(out["num_detections"][b]) == n
        np.testing.assert_array_equal(np.asarray(out["classes"][b, :n]), ref_classes)
        np.testing.assert_allclose(np.asarray(out["scores"][b, :n]), ref_scores, rtol=1e-5, atol=1e-7)
        np.testing.assert_array_equal(np.asarray(out["boxes"][b, :n]), ref_boxes)


# The hand-computed case. IoU(A, B) = 90 / 110, IoU(A, C) = 40 / 160,
# IoU(B, C) = 50 / 150, D is far from A-C, E duplicates D, F is far away.
HAND_BOXES = np.array(
    [
        [0, 0, 10, 10],  # A
        [0, 1, 10, 11],  # B
        [0, 6, 10, 16],  # C
        [20, 20, 30, 30],  # D
        [20, 20, 30, 30],  # E
        [50, 50, 60, 60],  # F
    ],
    np.float32,
)
HAND_SCORES = np.array([0.9, 0.8, 0.7, 0.6, 0.3, 0.05], np.float32)


def hand_batch():
    """Row 0 as above; row 1 the same boxes in reverse order, so index j becomes 5 - j."""
    return np.stack([HAND_BOXES, HAND_BOXES[::-1]]), np.stack([HAND_SCORES, HAND_SCORES[::-1]])


@functools.lru_cache(maxsize=None)
def compiled(name, *static):
    """An XLA-compiled public function with its static arguments bound.

    The thresholds stay tensor arguments, so one compile per input shape
    serves every setting a test tries (compiles dominate this file's time;
    eager Keras runs a greedy step in tens of milliseconds).
    """
    if name == "nms":
        (max_output,) = static

        def fn(b, s, iou, score, sigma):
            return non_max_suppression_with_scores(b, s, max_output, iou, score, sigma)

    else:
        max_det, top_k, agnostic = static

        def fn(b, s, iou, score, sigma):
            return batched_multiclass_nms(b, s, max_det, iou, score, top_k, agnostic, sigma)

    jitted = tf.function(fn, jit_compile=True)
    return lambda b, s, iou, score, sigma=0.0: jitted(b, s, *(tf.constant(v, tf.float32) for v in (iou, score, sigma)))


# ---------------------------------------------------------------------------
# non_max_suppression
# ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "max_output, iou_thr, expected",
    [
        (8, 0.5, [0, 2, 3]),  # B goes under A (0.82), E under D (1.0); F is under the score threshold
        (8, 0.85, [0, 1, 2, 3]),  # 0.82 <= 0.85 keeps B; C overlaps B by 1/3 only
        (2, 0.5, [0, 2]),  # truncated to the two best
        (8, 0.25, [0, 2, 3]),  # IoU(A, C) = 40/160 is exactly 0.25: suppression needs strictly above
        (8, 0.2499, [0, 3]),  # ... and just below it C goes
    ],
)
def test_hand_computed(max_output, iou_thr, expected):
    boxes, scores = hand_batch()
    indices, num = non_max_suppression(boxes, scores, max_output, iou_thr, score_threshold=0.1)
    indices, num = np.asarray(indices), np.asarray(num)
    padded = expected + [-1] * (max_output - len(expected))
    np.testing.assert_array_equal(indices[0], padded)
    np.testing.assert_array_equal(indices[1], [5 - i if i >= 0 else -1 for i in padded])
    np.testing.assert_array_equal(num, [len(expected)] * 2)
    assert indices.dtype == np.int32 and num.dtype == np.int32


def test_nothing_above_threshold_is_all_padding():
    boxes, scores = hand_batch()
    indices, num = non_max_suppression(boxes, scores, 4, 0.5, score_threshold=0.95)
    np.testing.assert_array_equal(np.asarray(indices), -np.ones((2, 4)))
    np.testing.assert_array_equal(np.asarray(num), [0, 0])


def test_ties_and_zero_area_boxes_as_tensorflow():
    # Equal scores go to the lower index first; a zero-area box overlaps
    # nothing (IoU 0), so it and its duplicate both stay, as in TensorFlow.
    boxes = np.array([[0, 0, 10, 10], [0, 0, 10, 10], [20, 20, 30, 30], [5, 5, 5, 5], [5, 5, 5, 5]], np.float32)
    scores = np.array([0.5, 0.5, 0.5, 0.9, 0.9], np.float32)
    indices, num = non_max_suppression(boxes[None], scores[None], 6, 0.5)
    ref = tf.image.non_max_suppression(boxes, scores, 6, 0.5).numpy()
    np.testing.assert_array_equal(ref, [3, 4, 0, 2])
    np.testing.assert_array_equal(np.asarray(indices)[0], [3, 4, 0, 2, -1, -1])
    assert int(num[0]) == 4


def seeded_rows(seeds, n, shape=()):
    """Random boxes and tie-free scores, one batch row per seed (one compile serves them all)."""
    rows = [np.random.default_rng(seed) for seed in seeds]
    boxes = np.stack([random_boxes(rng, (n,) + shape) for rng in rows])
    scores = np.stack([distinct_scores(rng, (n,)) for rng in rows])
    return boxes, scores


def test_same_kept_indices_as_tensorflow():
    boxes, scores = seeded_rows(range(6), 256)
    nms = compiled("nms", 100)
    for iou_thr, score_thr in [(0.5, float("-inf")), (0.3, 0.4), (0.7, 0.6)]:
        indices, kept, num = (np.asarray(x) for x in nms(boxes, scores, iou_thr, score_thr))
        for b in range(len(boxes)):
            assert_no_iou_near(boxes[b], iou_thr)
            ref = tf.image.non_max_suppression(boxes[b], scores[b], 100, iou_thr, score_thr).numpy()
            assert num[b] == len(ref) > 0
            np.testing.assert_array_equal(indices[b, : len(ref)], ref)
            np.testing.assert_array_equal(kept[b, : len(ref)], scores[b][ref])
            assert np.all(indices[b, len(ref) :] == -1) and np.all(kept[b, len(ref) :] == 0)
            # Sorted by descending score.
            assert np.all(np.diff(scores[b][ref]) < 0)
    assert num.min() < 100 < 256  # the last setting leaves padding, so padding is checked too


# ---------------------------------------------------------------------------
# Soft-NMS
# ---------------------------------------------------------------------------


def test_soft_nms_hand_computed():
    boxes = HAND_BOXES[None, :3]  # A, B, C
    scores = HAND_SCORES[None, :3]
    indices, kept, num = non_max_suppression_with_scores(boxes, scores, 4, iou_threshold=1.0, soft_nms_sigma=0.5)
    # A keeps 0.9; C decays by IoU 1/4, B by 9/11 so C comes next; then B decays again by 1/3.
    score_c = 0.7 * math.exp(-(0.25**2) / 0.5)
    score_b = 0.8 * math.exp(-((9 / 11) ** 2) / 0.5) * math.exp(-((1 / 3) ** 2) / 0.5)
    np.testing.assert_array_equal(np.asarray(indices), [[0, 2, 1, -1]])
    np.testing.assert_allclose(np.asarray(kept), [[0.9, score_c, score_b, 0.0]], rtol=1e-6)
    assert int(num[0]) == 3
    # With a score threshold between them, B's decayed score drops out.
    indices, kept, num = non_max_suppression_with_scores(
        boxes, scores, 4, iou_threshold=1.0, score_threshold=0.2, soft_nms_sigma=0.5
    )
    np.testing.assert_array_equal(np.asarray(indices), [[0, 2, -1, -1]])


def test_soft_nms_against_numpy_and_tensorflow():
    boxes, scores = seeded_rows(range(10, 14), 256)
    nms = compiled("nms", 100)
    for iou_thr, score_thr, sigma in [(1.0, 0.05, 0.5), (0.6, 0.1, 0.3)]:
        indices, kept, num = (np.asarray(x) for x in nms(boxes, scores, iou_thr, score_thr, sigma))
        for b in range(len(boxes)):
            ref_idx, ref_scores = np_soft_nms(boxes[b], scores[b], 100, iou_thr, score_thr, sigma)
            n = len(ref_idx)
            assert num[b] == n > 0
            np.testing.assert_array_equal(indices[b, :n], ref_idx)
            np.testing.assert_allclose(kept[b, :n], ref_scores, rtol=1e-5)
            assert np.all(indices[b, n:] == -1) and np.all(kept[b, n:] == 0)
            assert np.all(np.diff(kept[b, :n]) <= 0)
            # TensorFlow's kernel, whose sigma is half of ours (exp(-iou^2 / (2 s))).
            tf_idx, tf_scores = tf.image.non_max_suppression_with_scores(
                boxes[b], scores[b], 100, iou_thr, score_thr, soft_nms_sigma=sigma / 2
            )
            np.testing.assert_array_equal(indices[b, :n], tf_idx.numpy())
            np.testing.assert_allclose(kept[b, :n], tf_scores.numpy(), rtol=1e-5)


def test_hard_nms_with_scores_returns_input_scores():
    boxes, scores = hand_batch()
    indices, kept, num = non_max_suppression_with_scores(boxes, scores, 4, 0.5, 0.1)
    expected = np.array([HAND_SCORES[0], HAND_SCORES[2], HAND_SCORES[3], 0.0], np.float32)
    np.testing.assert_array_equal(np.asarray(kept), [expected] * 2)


# ---------------------------------------------------------------------------
# batched_multiclass_nms
# ---------------------------------------------------------------------------


def test_multiclass_hand_computed():
    boxes = HAND_BOXES[None, [0, 1, 3]]  # A, B, D
    scores = np.array([[[0.9, 0.1], [0.2, 0.85], [0.7, 0.01]]], np.float32)
    out = batched_multiclass_nms(boxes, scores, max_detections=4, iou_threshold=0.5, score_threshold=0.05)
    # Class 0: A keeps, B (0.2) goes under A, D keeps. Class 1: B keeps, A (0.1) goes under B,
    # D (0.01) is under the score threshold.
    np.testing.assert_array_equal(np.asarray(out["boxes"]), [[HAND_BOXES[0], HAND_BOXES[1], HAND_BOXES[3], [0] * 4]])
    np.testing.assert_allclose(np.asarray(out["scores"]), [[0.9, 0.85, 0.7, 0.0]])
    np.testing.assert_array_equal(np.asarray(out["classes"]), [[0, 1, 0, -1]])
    np.testing.assert_array_equal(np.asarray(out["num_detections"]), [3])
    assert np.asarray(out["classes"]).dtype == np.int32 and np.asarray(out["num_detections"]).dtype == np.int32
    # Class-agnostic: A(0) suppresses B(1), B(0) and A(1); D(0) stays.
    out = batched_multiclass_nms(boxes, scores, 4, 0.5, 0.05, class_agnostic=True)
    np.testing.assert_array_equal(np.asarray(out["classes"]), [[0, 0, -1, -1]])
    np.testing.assert_allclose(np.asarray(out["scores"]), [[0.9, 0.7, 0.0, 0.0]])
    # pre_nms_top_k=2 leaves only A(0) and B(1) as candidates.
    out = batched_multiclass_nms(boxes, scores, 4, 0.5, 0.05, pre_nms_top_k=2)
    np.testing.assert_array_equal(np.asarray(out["classes"]), [[0, 1, -1, -1]])


@pytest.mark.parametrize(
    "per_class_boxes, agnostic, top_k, settings",
    [
        # per-class NMS over every pair, shared boxes
        (False, False, 10_000, [(0.5, 0.3, 0.0)]),
        # per-class boxes, hard and soft through one compile
        (True, False, 10_000, [(0.5, 0.3, 0.0), (0.6, 0.3, 0.5)]),
        # class-agnostic after a pre-NMS top-k that cuts into the candidates
        (False, True, 150, [(0.5, 0.3, 0.0)]),
    ],
)
def test_multiclass_against_per_class_reference(per_class_boxes, agnostic, top_k, settings):
    rng = np.random.default_rng(5)
    batch, n, k = 2, 96, 4
    boxes = random_boxes(rng, (batch, n, k) if per_class_boxes else (batch, n))
    scores = distinct_scores(rng, (batch, n, k))
    nms = compiled("multi", 40, top_k, agnostic)
    for iou_thr, score_thr, sigma in settings:
        out = nms(boxes, scores, iou_thr, score_thr, sigma)
        ref = dict(max_det=40, iou_thr=iou_thr, score_thr=score_thr, top_k=top_k, agnostic=agnostic, sigma=sigma)
        assert_matches_reference(out, boxes, scores, **ref)
        check_detection_properties(out, k, score_thr, iou_thr=None if (agnostic or sigma) else iou_thr)


def check_detection_properties(out, num_classes, score_thr, iou_thr):
    boxes, scores = np.asarray(out["boxes"]), np.asarray(out["scores"])
    classes, num = np.asarray(out["classes"]), np.asarray(out["num_detections"])
    for b in range(len(num)):
        n = num[b]
        assert np.all(np.diff(scores[b, :n]) <= 0)
        assert np.all(scores[b, :n] > score_thr)
        assert np.all((classes[b, :n] >= 0) & (classes[b, :n] < num_classes))
        assert np.all(classes[b, n:] == -1) and np.all(scores[b, n:] == 0) and np.all(boxes[b, n:] == 0)
        if iou_thr is not None:
            for i in range(n):
                same = np.flatnonzero(classes[b, i + 1 : n] == classes[b, i]) + i + 1
                assert np.all(np_iou(boxes[b, i], boxes[b, same]) <= iou_thr)


def test_multiclass_properties_random():
    # The shapes and static arguments of the first reference case, so its compile is reused.
    rng = np.random.default_rng(6)
    boxes = random_boxes(rng, (2, 96))
    scores = rng.uniform(size=(2, 96, 4)).astype(np.float32) ** 3  # mostly low, as after a sigmoid
    nms = compiled("multi", 40, 10_000, False)
    out = nms(boxes, scores, 0.5, 0.05)
    check_detection_properties(out, 4, score_thr=0.05, iou_thr=0.5)
    assert np.all(np.asarray(out["num_detections"]) == 40)  # plenty of candidates: every slot filled
    out = nms(boxes, scores, 0.3, 0.8)
    check_detection_properties(out, 4, score_thr=0.8, iou_thr=0.3)
    assert np.all(np.asarray(out["num_detections"]) < 40)  # few candidates: padding present


def test_invalid_arguments():
    boxes, scores = hand_batch()
    with pytest.raises(ValueError):
        non_max_suppression(boxes, scores, 0)
    with pytest.raises(ValueError):
        non_max_suppression(boxes, scores, 4, iou_threshold=1.5)
    with pytest.raises(ValueError):
        batched_multiclass_nms(boxes, scores[:, :5, None])  # N differs
    with pytest.raises(ValueError):
        batched_multiclass_nms(boxes[:, :, None, :2], scores[:, :, None])  # not 4 coordinates


# ---------------------------------------------------------------------------
# XLA and JAX
# ---------------------------------------------------------------------------


def fixed_inputs():
    """Small random inputs shared by the XLA and JAX tests (the JAX snippet receives them as JSON)."""
    rng = np.random.default_rng(7)
    boxes = random_boxes(rng, (2, 64))
    scores = distinct_scores(rng, (2, 64))
    class_scores = distinct_scores(rng, (2, 64, 3))
    class_boxes = random_boxes(rng, (2, 64, 3))
    return boxes, scores, class_scores, class_boxes


# Call expressions as source, so that the JAX subprocess runs exactly these
# without importing this module (and with it TensorFlow).
CALL_SOURCES = {
    "nms": "non_max_suppression(b, s, 12, 0.5, 0.2)",
    "soft": "non_max_suppression_with_scores(b, s, 12, 0.7, 0.2, 0.5)",
    "multi": "batched_multiclass_nms(b, cs, 12, 0.5, 0.3, 100)",
    "multi_per_class_soft": "batched_multiclass_nms(cb, cs, 12, 0.5, 0.3, 100, soft_nms_sigma=0.5)",
}
CALLS = {name: eval(f"lambda b, s, cs, cb: {src}") for name, src in CALL_SOURCES.items()}  # noqa: S307


def flatten(result):
    """Any of the outputs as a dict of NumPy arrays with string keys."""
    if isinstance(result, dict):
        return {k: np.asarray(result[k]) for k in sorted(result)}
    return {str(i): np.asarray(v) for i, v in enumerate(result)}


def assert_same(got, want):
    assert got.keys() == want.keys()
    for key in want:
        assert got[key].shape == want[key].shape, key
        if np.issubdtype(want[key].dtype, np.integer):
            np.testing.assert_array_equal(got[key], want[key], err_msg=key)
        else:
            np.testing.assert_allclose(got[key], want[key], rtol=1e-5, atol=1e-6, err_msg=key)


@functools.lru_cache(maxsize=None)
def eager_result(name):
    """The eager TensorFlow-backend result of one call, shared by the XLA and JAX tests."""
    return flatten(CALLS[name](*fixed_inputs()))


@pytest.mark.parametrize("name", ["nms", "soft", "multi"])  # each public function (JAX runs all CALLS)
def test_xla_matches_eager(name):
    eager = eager_result(name)
    compiled = flatten(tf.function(CALLS[name], jit_compile=True)(*fixed_inputs()))
    assert_same(compiled, eager)
    counts = eager["num_detections"] if "num_detections" in eager else eager[str(len(eager) - 1)]
    assert counts.min() > 0  # a non-trivial case


JAX_SNIPPET = """
import json
import jax
import numpy as np
from tfdet.core.nms import batched_multiclass_nms, non_max_suppression, non_max_suppression_with_scores
b, s, cs, cb = (np.asarray(x, np.float32) for x in json.loads(INPUTS))
out = {}
for name, src in json.loads(SOURCES).items():
    result = jax.jit(eval(f"lambda b, s, cs, cb: {src}"))(b, s, cs, cb)
    items = sorted(result.items()) if isinstance(result, dict) else enumerate(result)
    out[name] = {str(k): np.asarray(v).tolist() for k, v in items}
print(json.dumps(out))
"""


@pytest.mark.slow
def test_jax_matches_tensorflow():
    inputs = fixed_inputs()
    code = JAX_SNIPPET.replace("INPUTS", repr(json.dumps([x.tolist() for x in inputs]))).replace(
        "SOURCES", repr(json.dumps(CALL_SOURCES))
    )
    results = json.loads(run_under_jax(code).strip().splitlines()[-1])
    for name in CALLS:
        want = eager_result(name)
        got = {k: np.asarray(v, dtype=want[k].dtype) for k, v in results[name].items()}
        assert_same(got, want)
