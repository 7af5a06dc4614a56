"""Tests of tfdet.core.box_coders against hand-computed targets and round trips."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import tensorflow as tf

from tests.backends import run_under_jax
from tfdet.core.box_coders import CenterSizeCoder, DeltaCoder, yolo_decode, yolo_encode


def random_boxes(rng, shape, size=200.0):
    """Random yxyx boxes ``shape + [4]``, sides in [2, 50] so every size ratio is < 62.5."""
    corner = rng.uniform(0, size, shape + (2,))
    extent = rng.uniform(2.0, 50.0, shape + (2,))
    return np.concatenate([corner, corner + extent], -1).astype(np.float32)


def logit(p):
    return np.log(p / (1 - p))


# ---------------------------------------------------------------------------
# Hand-computed encodings
# ---------------------------------------------------------------------------

# Anchor centre (5, 5), size 10x10; box centre (12, 9), height 20, width 10.
ANCHOR = np.array([[0.0, 0.0, 10.0, 10.0]], np.float32)
BOX = np.array([[2.0, 4.0, 22.0, 14.0]], np.float32)


def test_delta_coder_hand_computed():
    # dy = 10 * (12 - 5) / 10 = 7, dx = 10 * (9 - 5) / 10 = 4, dh = 5 * log(20 / 10), dw = 5 * log(1) = 0.
    deltas = DeltaCoder().encode(BOX, ANCHOR)
    np.testing.assert_allclose(deltas, [[7.0, 4.0, 5 * math.log(2), 0.0]], rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(DeltaCoder().decode(deltas, ANCHOR), BOX, rtol=1e-6)
    # RPN weights (1, 1, 1, 1): the unweighted (0.7, 0.4, log 2, 0).
    rpn = DeltaCoder(weights=(1.0, 1.0, 1.0, 1.0))
    np.testing.assert_allclose(rpn.encode(BOX, ANCHOR), [[0.7, 0.4, math.log(2), 0.0]], rtol=1e-6, atol=1e-6)


def test_center_size_coder_hand_computed():
    # Anchor centre (20, 40), size 20x40; box centre (30, 30), size 30x40:
    # dy = (10 / 20) / 0.1 = 5, dx = (-10 / 40) / 0.1 = -2.5, dh = log(1.5) / 0.2, dw = log(1) / 0.2 = 0.
    anchor = np.array([[10.0, 20.0, 30.0, 60.0]], np.float32)
    box = np.array([[15.0, 10.0, 45.0, 50.0]], np.float32)
    targets = CenterSizeCoder().encode(box, anchor)
    np.testing.assert_allclose(targets, [[5.0, -2.5, math.log(1.5) / 0.2, 0.0]], rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(CenterSizeCoder().decode(targets, anchor), box, rtol=1e-6)


def test_yolo_hand_computed():
    # Stride 32, cell (row 2, col 3), anchor 60 high, 90 wide. Box centre
    # y = (2 + 0.25) * 32 = 72, x = (3 + 0.75) * 32 = 120; height 120 = 2 * 60, width 45 = 90 / 2.
    box = np.array([[12.0, 97.5, 132.0, 142.5]], np.float32)
    cell, anchor = np.array([[2.0, 3.0]], np.float32), np.array([[60.0, 90.0]], np.float32)
    targets = yolo_encode(box, cell, anchor, 32)
    # (x offset, y offset, log(w / anchor_w), log(h / anchor_h)): offsets, not logits.
    np.testing.assert_allclose(targets, [[0.75, 0.25, math.log(0.5), math.log(2.0)]], rtol=1e-6)
    # sigmoid(log 3) = 0.75, sigmoid(-log 3) = 0.25.
    raw = np.array([[math.log(3.0), -math.log(3.0), math.log(0.5), math.log(2.0)]], np.float32)
    np.testing.assert_allclose(yolo_decode(raw, cell, anchor, 32), box, rtol=1e-6)


# ---------------------------------------------------------------------------
# Round trips, broadcasting, clamps
# ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "coder",
    [DeltaCoder(), DeltaCoder(weights=(1.0, 1.0, 1.0, 1.0)), CenterSizeCoder(), CenterSizeCoder((0.1, 0.2, 0.3, 0.4))],
    ids=repr,
)
def test_decode_inverts_encode_with_broadcast_anchors(coder):
    rng = np.random.default_rng(0)
    boxes = random_boxes(rng, (3, 8))  # [B, A, 4]
    anchors = random_boxes(rng, (8,))  # [A, 4], broadcast over B
    deltas = coder.encode(boxes, anchors)
    assert tuple(deltas.shape) == (3, 8, 4)
    np.testing.assert_allclose(coder.decode(deltas, anchors), boxes, rtol=1e-4, atol=1e-3)


def test_yolo_decode_inverts_encode():
    rng = np.random.default_rng(1)
    stride = 16.0
    boxes = random_boxes(rng, (2, 6))
    centre_yx = (boxes[..., :2] + boxes[..., 2:]) / 2
    cell = np.floor(centre_yx / stride)  # the cell holding each centre
    anchors = rng.uniform(5.0, 60.0, (6, 2)).astype(np.float32)
    targets = np.asarray(yolo_encode(boxes, cell, anchors, stride))
    assert np.all((targets[..., :2] >= 0) & (targets[..., :2] < 1))
    raw = np.concatenate([logit(targets[..., :2].astype(np.float64)), targets[..., 2:]], -1).astype(np.float32)
    np.testing.assert_allclose(yolo_decode(raw, cell, anchors, stride), boxes, rtol=1e-4, atol=1e-3)


def test_scale_clamp_bounds_decoded_size():
    # Anchor 10x10: a huge dw decodes to 10 * exp(log(1000/16)) = 625 wide, finite; a hugely
    # negative dh to a height of 0, finite.
    deltas = np.array([[0.0, 0.0, -1e4, 1e4]], np.float32)
    boxes = np.asarray(DeltaCoder().decode(deltas, ANCHOR))
    assert np.all(np.isfinite(boxes))
    np.testing.assert_allclose(boxes, [[5.0, 5.0 - 312.5, 5.0, 5.0 + 312.5]], rtol=1e-5)
    # The bound applies to dw / ww, so it means the same size for any weights.
    np.testing.assert_allclose(DeltaCoder(weights=(1.0, 1.0, 1.0, 1.0)).decode(deltas, ANCHOR), boxes, rtol=1e-5)
    ssd = np.asarray(CenterSizeCoder().decode(deltas, ANCHOR))
    np.testing.assert_allclose(ssd, boxes, rtol=1e-5)
    yolo = np.asarray(yolo_decode([[0.0, 0.0, 1e4, 1e4]], [[0.0, 0.0]], [[10.0, 10.0]], 8))
    np.testing.assert_allclose(yolo[0, 2] - yolo[0, 0], 625.0, rtol=1e-5)
    # scale_clip=None: the unclamped decoder (dw / ww = 5 > log(62.5) gives 10 * e^5).
    unclamped = np.asarray(DeltaCoder(scale_clip=None).decode([[0.0, 0.0, 0.0, 25.0]], ANCHOR))
    np.testing.assert_allclose(unclamped[0, 3] - unclamped[0, 1], 10 * math.exp(5.0), rtol=1e-5)


def test_encoding_zero_padding_is_finite():
    padding = np.zeros((2, 4), np.float32)
    anchors = np.array([[0, 0, 10, 10], [0, 0, 0, 0]], np.float32)
    for coder in (DeltaCoder(), CenterSizeCoder()):
        assert np.all(np.isfinite(coder.encode(padding, anchors)))
    assert np.all(np.isfinite(yolo_encode(padding, [[0, 0]], [[10.0, 10.0]], 8)))


def test_invalid_parameters_rejected():
    with pytest.raises(ValueError):
        DeltaCoder(weights=(1.0, 1.0, 1.0))
    with pytest.raises(ValueError):
        CenterSizeCoder(variances=(0.1, 0.1, 0.0, 0.2))


# ---------------------------------------------------------------------------
# XLA and JAX
# ---------------------------------------------------------------------------

RNG = np.random.default_rng(2)
BOXES = random_boxes(RNG, (2, 5))
ANCHORS = random_boxes(RNG, (5,))
DELTAS = RNG.normal(0, 2, (2, 5, 4)).astype(np.float32)
CELLS = RNG.integers(0, 10, (2, 5, 2)).astype(np.float32)
ANCHOR_HW = RNG.uniform(5, 60, (5, 2)).astype(np.float32)

# name -> (function, arguments)
CALLS = {
    "delta_encode": (DeltaCoder().encode, (BOXES, ANCHORS)),
    "delta_decode": (DeltaCoder().decode, (DELTAS, ANCHORS)),
    "center_size_encode": (CenterSizeCoder().encode, (BOXES, ANCHORS)),
    "center_size_decode": (CenterSizeCoder().decode, (DELTAS, ANCHORS)),
    "yolo_encode": (lambda b, c, a: yolo_encode(b, c, a, 32.0), (BOXES, CELLS, ANCHOR_HW)),
    "yolo_decode": (lambda r, c, a: yolo_decode(r, c, a, 32.0), (DELTAS, CELLS, ANCHOR_HW)),
}

# The same calls, written out for the JAX subprocess.
JAX_CALLS = """
from tfdet.core.box_coders import CenterSizeCoder, DeltaCoder, yolo_decode, yolo_encode
FUNCTIONS = {
    "delta_encode": DeltaCoder().encode,
    "delta_decode": DeltaCoder().decode,
    "center_size_encode": CenterSizeCoder().encode,
    "center_size_decode": CenterSizeCoder().decode,
    "yolo_encode": lambda b, c, a: yolo_encode(b, c, a, 32.0),
    "yolo_decode": lambda r, c, a: yolo_decode(r, c, a, 32.0),
}
"""


@pytest.mark.slow
def test_xla_matches_eager():
    for name, (fn, args) in CALLS.items():
        compiled = tf.function(fn, jit_compile=True)(*[tf.constant(a) for a in args])
        np.testing.assert_allclose(compiled.numpy(), np.asarray(fn(*args)), rtol=1e-5, atol=1e-4, err_msg=name)


@pytest.mark.slow
def test_jax_matches_tensorflow():
    payload = json.dumps({name: [a.tolist() for a in args] for name, (_, args) in CALLS.items()})
    code = (
        JAX_CALLS
        + f"""
import json
import jax
import numpy as np
out = {{}}
for name, args in json.loads({payload!r}).items():
    out[name] = np.asarray(jax.jit(FUNCTIONS[name])(*[np.asarray(a, np.float32) for a in args])).tolist()
print(json.dumps(out))
"""
    )
    results = json.loads(run_under_jax(code).strip().splitlines()[-1])
    assert sorted(results) == sorted(CALLS)
    for name, (fn, args) in CALLS.items():
        np.testing.assert_allclose(np.asarray(results[name]), np.asarray(fn(*args)), rtol=1e-5, atol=1e-4, err_msg=name)
