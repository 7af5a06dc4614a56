"""Tests of tfdet.core.box_ops against hand-computed values and a NumPy reference."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import tensorflow as tf

from tests.backends import run_under_jax
from tfdet.core import box_ops

# ---------------------------------------------------------------------------
# Independent NumPy reference (float64), written from the papers' definitions
# ---------------------------------------------------------------------------


def np_area(b):
    return np.clip(b[..., 2] - b[..., 0], 0, None) * np.clip(b[..., 3] - b[..., 1], 0, None)


def np_overlaps(b1, b2):
    """IoU, GIoU, DIoU, CIoU of broadcast-compatible yxyx boxes, float64."""
    b1, b2 = np.broadcast_arrays(np.asarray(b1, np.float64), np.asarray(b2, np.float64))
    inter_h = np.clip(np.minimum(b1[..., 2], b2[..., 2]) - np.maximum(b1[..., 0], b2[..., 0]), 0, None)
    inter_w = np.clip(np.minimum(b1[..., 3], b2[..., 3]) - np.maximum(b1[..., 1], b2[..., 1]), 0, None)
    inter = inter_h * inter_w
    union = np_area(b1) + np_area(b2) - inter
    with np.errstate(divide="ignore", invalid="ignore"):
        iou = np.where(union > 0, inter / union, 0.0)
        c_h = np.maximum(b1[..., 2], b2[..., 2]) - np.minimum(b1[..., 0], b2[..., 0])
        c_w = np.maximum(b1[..., 3], b2[..., 3]) - np.minimum(b1[..., 1], b2[..., 1])
        c_area = c_h * c_w
        giou = iou - np.where(c_area > 0, (c_area - union) / c_area, 0.0)
        rho2 = ((b1[..., 0] + b1[..., 2]) / 2 - (b2[..., 0] + b2[..., 2]) / 2) ** 2 + (
            (b1[..., 1] + b1[..., 3]) / 2 - (b2[..., 1] + b2[..., 3]) / 2
        ) ** 2
        c2 = c_h**2 + c_w**2
        diou = iou - np.where(c2 > 0, rho2 / c2, 0.0)
        h1, w1 = b1[..., 2] - b1[..., 0], b1[..., 3] - b1[..., 1]
        h2, w2 = b2[..., 2] - b2[..., 0], b2[..., 3] - b2[..., 1]
        v = 4 / math.pi**2 * (np.arctan(w1 / h1) - np.arctan(w2 / h2)) ** 2
        # v = 0 (equal aspect ratios, e.g. identical boxes) makes alpha 0/0; its product is 0.
        alpha = np.where(v > 0, v / ((1 - iou) + v), 0.0)
    return iou, giou, diou, diou - alpha * v


def random_boxes(rng, shape, size=100.0):
    """Random well-formed yxyx boxes ``shape + [4]`` with positive extents."""
    corner = rng.uniform(0, size, shape + (2,))
    extent = rng.uniform(1.0, size / 2, shape + (2,))
    return np.concatenate([corner, corner + extent], -1).astype(np.float32)


# ---------------------------------------------------------------------------
# Hand-computed goldens
# ---------------------------------------------------------------------------

# (name, box1, box2, IoU, GIoU, DIoU); derivations in the comments.
HAND_CASES = [
    # Identical: everything is 1.
    ("identical", [0, 0, 10, 10], [0, 0, 10, 10], 1.0, 1.0, 1.0),
    # Disjoint unit squares: C = 3x3 = 9, U = 2, GIoU = -7/9; centres (0.5,0.5),(2.5,2.5):
    # rho^2 = 8, c^2 = 9 + 9 = 18, DIoU = -4/9.
    ("disjoint", [0, 0, 1, 1], [2, 2, 3, 3], 0.0, -7 / 9, -4 / 9),
    # Nested 4x4 in 8x8 at the corner: IoU 16/64; C = U so GIoU = IoU; centres (2,2),(4,4):
    # rho^2 = 8, c^2 = 128, DIoU = 0.25 - 1/16.
    ("nested", [0, 0, 4, 4], [0, 0, 8, 8], 0.25, 0.25, 0.1875),
    # Touching along x = 2: no overlap, C = U = 8 so GIoU = 0; centres (1,1),(1,3): rho^2 = 4,
    # c^2 = 2^2 + 4^2 = 20, DIoU = -0.2.
    ("touching", [0, 0, 2, 2], [0, 2, 2, 4], 0.0, 0.0, -0.2),
    # Half-overlapping 10x10 squares: I = 25, U = 175, C = 225: GIoU = 1/7 - 50/225;
    # rho^2 = 50, c^2 = 450: DIoU = 1/7 - 1/9.
    ("partial", [0, 0, 10, 10], [5, 5, 15, 15], 1 / 7, 1 / 7 - 50 / 225, 1 / 7 - 1 / 9),
    # Zero-area box inside a real one: IoU 0; C = U = 100 so GIoU 0; centres (5,5),(5,5): DIoU 0.
    ("zero_area_inside", [5, 5, 5, 5], [0, 0, 10, 10], 0.0, 0.0, 0.0),
    # Two identical zero-area boxes (padding): every term is 0/0 and defined as 0.
    ("zero_area_both", [0, 0, 0, 0], [0, 0, 0, 0], 0.0, 0.0, 0.0),
]


@pytest.mark.parametrize("case", HAND_CASES, ids=[c[0] for c in HAND_CASES])
def test_overlaps_hand_computed(case):
    _, box1, box2, iou, giou, diou = case
    b1 = np.array([box1], np.float32)
    b2 = np.array([box2], np.float32)
    np.testing.assert_allclose(box_ops.matched_iou(b1, b2), [iou], atol=1e-6)
    np.testing.assert_allclose(box_ops.pairwise_iou(b1, b2), [[iou]], atol=1e-6)
    np.testing.assert_allclose(box_ops.matched_giou(b1, b2), [giou], atol=1e-6)
    np.testing.assert_allclose(box_ops.pairwise_giou(b1, b2), [[giou]], atol=1e-6)
    np.testing.assert_allclose(box_ops.matched_diou(b1, b2), [diou], atol=1e-6)
    # Every case but one has equal aspect ratios or an undefined one, so CIoU = DIoU there;
    # "zero_area_inside" has v = 4/pi^2 * (0 - pi/4)^2 = 1/4 and alpha = v / (1 + v) = 1/5.
    ciou = diou - (0.2 * 0.25 if case[0] == "zero_area_inside" else 0.0)
    np.testing.assert_allclose(box_ops.matched_ciou(b1, b2), [ciou], atol=1e-6)


def test_ciou_aspect_term_hand_computed():
    # Concentric 2x4 and 4x2 boxes: I = 2x2 = 4, U = 12, IoU = 1/3, rho = 0.
    # arctan(4/2) - arctan(2/4) = arctan(3/4) (tangent of a difference), so
    # v = 4/pi^2 * arctan(0.75)^2 and alpha = v / (2/3 + v).
    b1 = np.array([[1, 0, 3, 4]], np.float32)
    b2 = np.array([[0, 1, 4, 3]], np.float32)
    v = 4 / math.pi**2 * math.atan(0.75) ** 2
    expected = 1 / 3 - v / (2 / 3 + v) * v
    np.testing.assert_allclose(box_ops.matched_ciou(b1, b2), [expected], rtol=1e-6)
    np.testing.assert_allclose(box_ops.matched_diou(b1, b2), [1 / 3], rtol=1e-6)


def test_area_hand_computed():
    boxes = np.array([[[0, 0, 2, 3], [1, 1, 1, 5]], [[5, 5, 3, 3], [-1, -2, 1, 2]]], np.float32)
    np.testing.assert_array_equal(box_ops.area(boxes), [[6, 0], [0, 8]])
    # Integer boxes are accepted and give float32.
    assert box_ops.area(np.array([0, 0, 2, 3])).dtype == tf.float32


# ---------------------------------------------------------------------------
# Random boxes: NumPy reference, symmetry, bounds
# ---------------------------------------------------------------------------


def test_overlaps_match_numpy_reference_and_bounds():
    rng = np.random.default_rng(0)
    b1 = random_boxes(rng, (3, 6))
    b2 = random_boxes(rng, (3, 5))
    # Some exact duplicates and zero-area boxes among the random ones.
    b2[:, 0] = b1[:, 0]
    b2[:, 1, 2:] = b2[:, 1, :2]
    ref_iou, ref_giou, _, _ = np_overlaps(b1[..., :, None, :], b2[..., None, :, :])
    iou = np.asarray(box_ops.pairwise_iou(b1, b2))
    giou = np.asarray(box_ops.pairwise_giou(b1, b2))
    assert iou.shape == giou.shape == (3, 6, 5)
    np.testing.assert_allclose(iou, ref_iou, atol=1e-6)
    np.testing.assert_allclose(giou, ref_giou, atol=1e-6)
    # Symmetry and bounds.
    np.testing.assert_allclose(np.asarray(box_ops.pairwise_iou(b2, b1)), np.swapaxes(iou, -1, -2), atol=1e-7)
    np.testing.assert_allclose(np.asarray(box_ops.pairwise_giou(b2, b1)), np.swapaxes(giou, -1, -2), atol=1e-7)
    assert np.all((iou >= 0) & (iou <= 1)) and np.all((giou >= -1) & (giou <= 1)) and np.all(giou <= iou + 1e-7)
    np.testing.assert_allclose(iou[:, 0, 0], 1.0, atol=1e-6)

    # Matched versions on [3, 5] pairs with positive extents (CIoU's reference needs h > 0).
    m1, m2 = b1[:, :5], random_boxes(rng, (3, 5))
    m2[:, 0] = m1[:, 0]
    _, _, ref_diou, ref_ciou = np_overlaps(m1, m2)
    np.testing.assert_allclose(box_ops.matched_iou(m1, m2), np_overlaps(m1, m2)[0], atol=1e-6)
    np.testing.assert_allclose(box_ops.matched_giou(m1, m2), np_overlaps(m1, m2)[1], atol=1e-6)
    diou = np.asarray(box_ops.matched_diou(m1, m2))
    ciou = np.asarray(box_ops.matched_ciou(m1, m2))
    np.testing.assert_allclose(diou, ref_diou, atol=1e-6)
    np.testing.assert_allclose(ciou, ref_ciou, atol=1e-6)
    np.testing.assert_allclose(np.asarray(box_ops.matched_ciou(m2, m1)), ciou, atol=1e-6)
    assert np.all((diou >= -1) & (diou <= 1)) and np.all((ciou > -2) & (ciou <= diou + 1e-7))
    np.testing.assert_allclose(ciou[:, 0], 1.0, atol=1e-6)


def test_pairwise_broadcasts_leading_dims():
    rng = np.random.default_rng(1)
    b1 = random_boxes(rng, (2, 4))
    b2 = random_boxes(rng, (3,))
    out = np.asarray(box_ops.pairwise_iou(b1, b2))
    assert out.shape == (2, 4, 3)
    np.testing.assert_allclose(out[1], np.asarray(box_ops.pairwise_iou(b1[1], b2)), atol=0)


def central_difference(f, x, step=1e-5):
    """Gradient of scalar ``f`` at ``x`` of shape ``[1, 4]``, by central differences."""
    return np.array([(f(x + step * e) - f(x - step * e)) / (2 * step) for e in np.eye(4)[:, None]])


def test_gradients_finite_on_degenerate_boxes_and_alpha_is_constant():
    # Zero padding and point boxes: all four overlaps must give finite gradients.
    degenerate = tf.Variable(np.array([[0, 0, 0, 0], [3, 3, 3, 3], [0, 0, 0, 4]], np.float32))
    target = tf.constant(np.array([[0, 0, 0, 0], [0, 0, 6, 6], [0, 0, 0, 0]], np.float32))
    with tf.GradientTape() as tape:
        total = sum(
            tf.reduce_sum(fn(degenerate, target))
            for fn in (box_ops.matched_iou, box_ops.matched_giou, box_ops.matched_diou, box_ops.matched_ciou)
        )
    gradient = tape.gradient(total, degenerate).numpy()
    assert np.all(np.isfinite(gradient)) and np.all(np.isfinite(total.numpy()))

    # CIoU's gradient treats alpha as a constant: it equals the central finite difference of
    # IoU - rho^2/c^2 - alpha0 * v with alpha0 frozen at the evaluation point (float64 NumPy).
    pred = np.array([[1.0, 2.0, 7.0, 5.0]])
    gt = np.array([[0.0, 0.0, 6.0, 8.0]])
    iou0, _, _, _ = np_overlaps(pred, gt)

    def aspect_v(b):
        h1, w1 = b[..., 2] - b[..., 0], b[..., 3] - b[..., 1]
        return 4 / math.pi**2 * (np.arctan(w1 / h1) - math.atan(8 / 6)) ** 2

    alpha0 = aspect_v(pred) / (1 - iou0 + aspect_v(pred))

    def frozen(b):
        _, _, diou, _ = np_overlaps(b, gt)
        return float((diou - alpha0 * aspect_v(b))[0])

    numeric = central_difference(frozen, pred)
    variable = tf.Variable(pred.astype(np.float32))
    with tf.GradientTape() as tape:
        value = box_ops.matched_ciou(variable, gt.astype(np.float32))
    gradient = tape.gradient(value, variable).numpy()[0]
    np.testing.assert_allclose(gradient, numeric, atol=2e-4)
    # The check can tell: differentiating through alpha gives a different gradient.
    full = central_difference(lambda b: float(np_overlaps(b, gt)[3][0]), pred)
    assert np.max(np.abs(full - gradient)) > 1e-3


# ---------------------------------------------------------------------------
# Clipping, scaling, conversions
# ---------------------------------------------------------------------------


def test_clip_boxes_scalar_and_per_image():
    boxes = np.array([[[-5, -5, 20, 30], [2, 3, 4, 5]], [[-5, -5, 20, 30], [2, 3, 4, 5]]], np.float32)
    np.testing.assert_array_equal(box_ops.clip_boxes(boxes[0], 10, 25), [[0, 0, 10, 25], [2, 3, 4, 5]])
    clipped = box_ops.clip_boxes(boxes, np.array([[10.0], [15.0]]), np.array([[25.0], [4.0]]))
    np.testing.assert_array_equal(clipped, [[[0, 0, 10, 25], [2, 3, 4, 5]], [[0, 0, 15, 4], [2, 3, 4, 4]]])


def test_normalize_denormalize_hand_computed_and_round_trip():
    boxes = np.array([[10, 20, 50, 80]], np.float32)
    np.testing.assert_allclose(box_ops.normalize_boxes(boxes, 100, 200), [[0.1, 0.1, 0.5, 0.4]], rtol=1e-6)
    np.testing.assert_allclose(box_ops.denormalize_boxes([[0.1, 0.1, 0.5, 0.4]], 100, 200), boxes, rtol=1e-6)
    rng = np.random.default_rng(2)
    batch = random_boxes(rng, (2, 5))
    height, width = np.array([[300.0], [120.0]]), np.array([[200.0], [640.0]])
    normalized = box_ops.normalize_boxes(batch, height, width)
    np.testing.assert_allclose(normalized[1, :, 0], batch[1, :, 0] / 120.0, rtol=1e-6)
    np.testing.assert_allclose(box_ops.denormalize_boxes(normalized, height, width), batch, rtol=1e-5)


def test_conversions_hand_computed():
    yxyx = np.array([[1.0, 2.0, 5.0, 10.0]], np.float32)  # height 4, width 8, centre (y 3, x 6)
    np.testing.assert_array_equal(box_ops.yxyx_to_xyxy(yxyx), [[2, 1, 10, 5]])
    np.testing.assert_array_equal(box_ops.xyxy_to_yxyx([[2.0, 1.0, 10.0, 5.0]]), yxyx)
    np.testing.assert_array_equal(box_ops.yxyx_to_xywh(yxyx), [[2, 1, 8, 4]])
    np.testing.assert_array_equal(box_ops.xywh_to_yxyx([[2.0, 1.0, 8.0, 4.0]]), yxyx)
    np.testing.assert_array_equal(box_ops.yxyx_to_cxcywh(yxyx), [[6, 3, 8, 4]])
    np.testing.assert_array_equal(box_ops.cxcywh_to_yxyx([[6.0, 3.0, 8.0, 4.0]]), yxyx)


@pytest.mark.parametrize(
    "forward,backward",
    [
        (box_ops.yxyx_to_xyxy, box_ops.xyxy_to_yxyx),
        (box_ops.yxyx_to_xywh, box_ops.xywh_to_yxyx),
        (box_ops.yxyx_to_cxcywh, box_ops.cxcywh_to_yxyx),
    ],
)
def test_conversions_round_trip(forward, backward):
    boxes = random_boxes(np.random.default_rng(3), (2, 3, 7))
    converted = forward(boxes)
    assert tuple(converted.shape) == boxes.shape
    np.testing.assert_allclose(backward(converted), boxes, rtol=1e-6, atol=1e-5)


# ---------------------------------------------------------------------------
# XLA and JAX
# ---------------------------------------------------------------------------

RNG = np.random.default_rng(4)
B1 = random_boxes(RNG, (2, 4))
B2 = random_boxes(RNG, (2, 4))
B2[0, 0] = 0.0  # a padding box among them

# name -> arguments; all public functions of box_ops.
CALLS = {
    "area": (B1,),
    "pairwise_iou": (B1, B2[:, :3]),
    "matched_iou": (B1, B2),
    "pairwise_giou": (B1, B2[:, :3]),
    "matched_giou": (B1, B2),
    "matched_diou": (B1, B2),
    "matched_ciou": (B1, B2),
    "clip_boxes": (B1, np.array([[40.0], [70.0]], np.float32), np.array([[60.0], [30.0]], np.float32)),
    "yxyx_to_xyxy": (B1,),
    "xyxy_to_yxyx": (B1,),
    "xywh_to_yxyx": (B1,),
    "yxyx_to_xywh": (B1,),
    "cxcywh_to_yxyx": (B1,),
    "yxyx_to_cxcywh": (B1,),
    "normalize_boxes": (B1, 120.0, 160.0),
    "denormalize_boxes": (B1 / 200.0, 120.0, 160.0),
}


def test_calls_cover_public_api():
    assert sorted(CALLS) == sorted(box_ops.__all__)


@pytest.mark.slow
def test_xla_matches_eager():
    for name, args in CALLS.items():
        fn = getattr(box_ops, name)
        compiled = tf.function(fn, jit_compile=True)(*[tf.constant(a) for a in args])
        np.testing.assert_allclose(compiled.numpy(), np.asarray(fn(*args)), rtol=1e-5, atol=1e-5, err_msg=name)


@pytest.mark.slow
def test_jax_matches_tensorflow():
    payload = json.dumps({name: [np.asarray(a).tolist() for a in args] for name, args in CALLS.items()})
    code = f"""
        import json
        import jax
        import numpy as np
        from tfdet.core import box_ops
        calls = json.loads({payload!r})
        out = {{}}
        for name, args in calls.items():
            args = [np.asarray(a, np.float32) for a in args]
            fn = getattr(box_ops, name)
            out[name] = np.asarray(jax.jit(fn)(*args)).tolist()
        print(json.dumps(out))
    """
    results = json.loads(run_under_jax(code).strip().splitlines()[-1])
    for name, args in CALLS.items():
        expected = np.asarray(getattr(box_ops, name)(*args))
        np.testing.assert_allclose(np.asarray(results[name]), expected, rtol=1e-5, atol=1e-5, err_msg=name)
