"""Tests of tfdet.core.anchors: published box counts, hand-computed boxes, a NumPy loop reference."""

from __future__ import annotations

import math

import numpy as np
import pytest
import tensorflow as tf

from tests.backends import run_under_jax
from tfdet.core import anchors

# ---------------------------------------------------------------------------
# Independent NumPy reference: explicit Python loops in the documented order
# ---------------------------------------------------------------------------


def np_multilevel(height, width, levels, sizes_per_level, offset=0.5):
    """Loops level -> y -> x -> (h, w) pairs; sizes_per_level[l] is a list of (h, w)."""
    out = []
    for level, shapes in zip(levels, sizes_per_level):
        stride = 2**level
        for y in range(-(-height // stride)):
            for x in range(-(-width // stride)):
                cy, cx = (y + offset) * stride, (x + offset) * stride
                for h, w in shapes:
                    out.append([cy - h / 2, cx - w / 2, cy + h / 2, cx + w / 2])
    return np.array(out)


# ---------------------------------------------------------------------------
# multilevel_anchors (RetinaNet / EfficientDet)
# ---------------------------------------------------------------------------


def test_multilevel_tiny_image_hand_computed():
    # 64x64, level 3 only (stride 8), one 32-pixel square per cell: 8x8 cells.
    boxes = np.asarray(anchors.multilevel_anchors(64, 3, 3, num_scales=1, aspect_ratios=(1.0,), anchor_scale=4.0))
    assert boxes.shape == (64, 4)
    np.testing.assert_allclose(boxes[0], [-12, -12, 20, 20])  # cell (0, 0), centre (4, 4)
    np.testing.assert_allclose(boxes[1], [-12, -4, 20, 28])  # x varies fastest: cell (0, 1)
    np.testing.assert_allclose(boxes[8], [-4, -12, 28, 20])  # then y: cell (1, 0)
    np.testing.assert_allclose(boxes[63], [44, 44, 76, 76])  # cell (7, 7), centre (60, 60)


def test_multilevel_scales_and_ratios_at_one_location():
    # An 8x8 image has one level-3 cell centred at (4, 4); 2 scales x 3 ratios.
    boxes = np.asarray(anchors.multilevel_anchors(8, 3, 3, num_scales=2, aspect_ratios=(0.5, 1.0, 2.0)))
    heights, widths = boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]
    r2 = math.sqrt(2.0)
    # Scale outer, ratio inner; ratio = height / width at the area of size**2.
    expected_h = [32 / r2, 32, 32 * r2, 32 * r2 / r2, 32 * r2, 32 * r2 * r2]
    expected_w = [32 * r2, 32, 32 / r2, 32 * r2 * r2, 32 * r2, 32 * r2 / r2]
    np.testing.assert_allclose(heights, expected_h, rtol=1e-6)
    np.testing.assert_allclose(widths, expected_w, rtol=1e-6)
    np.testing.assert_allclose((boxes[:, 0] + boxes[:, 2]) / 2, 4.0, atol=1e-5)
    np.testing.assert_allclose((boxes[:, 1] + boxes[:, 3]) / 2, 4.0, atol=1e-5)


def test_multilevel_efficientdet_d0_count_and_level_layout():
    boxes = np.asarray(anchors.multilevel_anchors(512))
    # EfficientDet-D0 (512x512, P3-P7, 9 anchors): 49104 anchors.
    assert boxes.shape == (49104, 4)
    # The first 64*64*9 are level 3 (sizes from 32 pixels); the last 9 are
    # P7's (stride 128, 4x4 cells) last cell (3, 3), centred at (448, 448).
    level3_heights = boxes[: 64 * 64 * 9, 2] - boxes[: 64 * 64 * 9, 0]
    np.testing.assert_allclose(level3_heights.min(), 32 / math.sqrt(2), rtol=1e-6)
    np.testing.assert_allclose(level3_heights.max(), 32 * 2 ** (2 / 3) * math.sqrt(2), rtol=1e-6)
    last = boxes[-9:]
    np.testing.assert_allclose((last[:, 0] + last[:, 2]) / 2, 448.0)
    np.testing.assert_allclose((last[:, 1] + last[:, 3]) / 2, 448.0)
    sides = np.sqrt((last[:, 2] - last[:, 0]) * (last[:, 3] - last[:, 1]))
    np.testing.assert_allclose(sides[[1, 4, 7]], [512, 512 * 2 ** (1 / 3), 512 * 2 ** (2 / 3)], rtol=1e-5)


def test_multilevel_matches_loop_reference_on_non_divisible_image():
    # 100 x 70 is not a multiple of any stride: ceil gives 13x9, 7x5, 4x3 cells.
    ratios, num_scales = (0.5, 1.0, 2.0), 2
    boxes = np.asarray(anchors.multilevel_anchors((100, 70), 3, 5, num_scales=num_scales, aspect_ratios=ratios))
    shapes = []
    for level in range(3, 6):
        level_shapes = []
        for i in range(num_scales):
            size = 4.0 * 2**level * 2 ** (i / num_scales)
            level_shapes += [(size * math.sqrt(r), size / math.sqrt(r)) for r in ratios]
        shapes.append(level_shapes)
    expected = np_multilevel(100, 70, range(3, 6), shapes)
    assert boxes.shape == expected.shape == ((13 * 9 + 7 * 5 + 4 * 3) * 6, 4)
    np.testing.assert_allclose(boxes, expected, rtol=1e-5, atol=1e-4)


# ---------------------------------------------------------------------------
# rpn_anchors (Faster R-CNN FPN)
# ---------------------------------------------------------------------------


def test_rpn_anchors_sizes_per_level_and_offset():
    sizes, ratios = (32, 64, 128, 256, 512), (0.5, 1.0, 2.0)
    boxes = np.asarray(anchors.rpn_anchors((64, 96), sizes, ratios))
    shapes = [[(s * math.sqrt(r), s / math.sqrt(r)) for r in ratios] for s in sizes]
    expected = np_multilevel(64, 96, range(2, 7), shapes)
    # (16*24 + 8*12 + 4*6 + 2*3 + 1*2) cells x 3 ratios.
    assert boxes.shape == expected.shape == (512 * 3, 4)
    np.testing.assert_allclose(boxes, expected, rtol=1e-5, atol=1e-4)
    # Areas are size**2 whatever the ratio.
    areas = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    np.testing.assert_allclose(areas[:3], 32.0**2, rtol=1e-5)
    # Detectron2's convention: offset 0 puts the first centre at the origin.
    first = np.asarray(anchors.rpn_anchors((64, 96), offset=0.0))[1]
    np.testing.assert_allclose(first, [-16, -16, 16, 16], atol=1e-5)


# ---------------------------------------------------------------------------
# SSD default boxes
# ---------------------------------------------------------------------------


def test_ssd300_has_8732_boxes_and_ssd512_24564():
    assert tuple(anchors.ssd_default_boxes().shape) == (8732, 4)
    assert tuple(anchors.ssd512_default_boxes().shape) == (24564, 4)


def test_ssd300_paper_scales():
    boxes = np.asarray(anchors.ssd_default_boxes())
    # Paper: s_k linear 0.2 .. 0.9 over six maps, step 0.14.
    first = boxes[:4]  # conv4_3 cell (0, 0): 1:1, extra 1:1, 2, 1/2
    centre = 0.5 / 38 * 300
    np.testing.assert_allclose((first[:, 0] + first[:, 2]) / 2, centre, rtol=1e-6)
    np.testing.assert_allclose(first[0], [centre - 30, centre - 30, centre + 30, centre + 30], rtol=1e-5)
    extra = math.sqrt(0.2 * 0.34) * 300
    np.testing.assert_allclose(first[1, 2] - first[1, 0], extra, rtol=1e-5)
    # Ratio 2: width s sqrt(2), height s / sqrt(2); then ratio 1/2.
    np.testing.assert_allclose(first[2, 3] - first[2, 1], 60 * math.sqrt(2), rtol=1e-5)
    np.testing.assert_allclose(first[2, 2] - first[2, 0], 60 / math.sqrt(2), rtol=1e-5)
    np.testing.assert_allclose(first[3, 2] - first[3, 0], 60 * math.sqrt(2), rtol=1e-5)
    # The last map (1x1) is centred and has scale 0.9; its "next" scale is 1.04.
    last = boxes[-4:]
    np.testing.assert_allclose(last[0], [15, 15, 285, 285], rtol=1e-5)
    np.testing.assert_allclose(last[1, 2] - last[1, 0], math.sqrt(0.9 * 1.04) * 300, rtol=1e-5)


def test_ssd300_reference_scales_reproduce_caffe_sizes():
    # weiliu89/caffe ssd_pascal.py: min_sizes 30,60,111,162,213,264; max_sizes 60,...,315; steps 8..300.
    boxes = np.asarray(
        anchors.ssd_default_boxes(scales=anchors.SSD300_REFERENCE_SCALES, steps=anchors.SSD300_REFERENCE_STEPS)
    )
    min_sizes, max_sizes = [30, 60, 111, 162, 213, 264], [60, 111, 162, 213, 264, 315]
    counts = [38 * 38 * 4, 19 * 19 * 6, 10 * 10 * 6, 5 * 5 * 6, 3 * 3 * 4, 1 * 4]
    starts = np.cumsum([0] + counts[:-1])
    steps = [8, 16, 32, 64, 100, 300]
    for start, lo, hi, step in zip(starts, min_sizes, max_sizes, steps):
        square, extra = boxes[start], boxes[start + 1]
        low, high = step / 2 - lo / 2, step / 2 + lo / 2
        np.testing.assert_allclose(square, [low, low, high, high], rtol=1e-5, atol=1e-4)
        np.testing.assert_allclose(extra[2] - extra[0], math.sqrt(lo * hi), rtol=1e-5)


def test_ssd512_reference_configuration_sizes():
    boxes = np.asarray(
        anchors.ssd512_default_boxes(scales=anchors.SSD512_REFERENCE_SCALES, steps=anchors.SSD512_REFERENCE_STEPS)
    )
    assert boxes.shape == (24564, 4)
    # conv4_3 cell (0, 0): centre 4, side 0.07 * 512 = 35.84, extra sqrt(35.84 * 76.8).
    np.testing.assert_allclose(boxes[0], [4 - 17.92, 4 - 17.92, 4 + 17.92, 4 + 17.92], rtol=1e-5)
    np.testing.assert_allclose(boxes[1, 2] - boxes[1, 0], math.sqrt(35.84 * 76.8), rtol=1e-5)
    # The 1x1 map: centre 256, side 460.8, extra sqrt(460.8 * 537.6).
    np.testing.assert_allclose(boxes[-4, 2] - boxes[-4, 0], 460.8, rtol=1e-5)
    np.testing.assert_allclose(boxes[-3, 2] - boxes[-3, 0], math.sqrt(460.8 * 537.6), rtol=1e-5)
    np.testing.assert_allclose((boxes[-4, 0] + boxes[-4, 2]) / 2, 256.0)


def test_ssd_clip_and_non_square_image():
    clipped = np.asarray(anchors.ssd_default_boxes(clip=True))
    assert clipped.min() >= 0.0 and clipped.max() <= 300.0
    unclipped = np.asarray(anchors.ssd_default_boxes())
    assert unclipped.min() < 0.0  # large boxes at the border extend past it
    # 300 x 600: scales are fractions of each side, centres spread per side.
    wide = np.asarray(anchors.ssd_default_boxes((300, 600), feature_map_sizes=(1,), aspect_ratio_sets=((2,),)))
    np.testing.assert_allclose(wide[0], [150 - 30, 300 - 60, 150 + 30, 300 + 60], rtol=1e-5)


# ---------------------------------------------------------------------------
# YOLOv3 priors
# ---------------------------------------------------------------------------


def test_yolo_priors_grouped_by_stride():
    priors = np.asarray(anchors.yolo_priors())
    assert priors.shape == (3, 3, 2)
    np.testing.assert_array_equal(priors[0], [[10, 13], [16, 30], [33, 23]])  # stride 8
    np.testing.assert_array_equal(priors[2], [[116, 90], [156, 198], [373, 326]])  # stride 32
    assert anchors.YOLOV3_STRIDES == (8, 16, 32)


def test_yolo_anchor_grids_and_count():
    grids = [np.asarray(g) for g in anchors.yolo_anchor_grids(416)]
    assert [g.shape for g in grids] == [(52, 52, 3, 4), (26, 26, 3, 4), (13, 13, 3, 4)]
    # Prior (10, 13) (w, h) at stride-8 cell (0, 0), centre (4, 4).
    np.testing.assert_allclose(grids[0][0, 0, 0], [4 - 6.5, 4 - 5, 4 + 6.5, 4 + 5])
    # Prior (373, 326) at stride-32 cell (12, 12), centre (400, 400).
    np.testing.assert_allclose(grids[2][12, 12, 2], [400 - 163, 400 - 186.5, 400 + 163, 400 + 186.5])
    flat = np.asarray(anchors.yolo_anchors(416))
    # YOLOv3 at 416 predicts 10647 boxes.
    assert flat.shape == (10647, 4)
    np.testing.assert_array_equal(flat[: 52 * 52 * 3], grids[0].reshape(-1, 4))


# ---------------------------------------------------------------------------
# XLA and JAX
# ---------------------------------------------------------------------------

CALLS = {
    "multilevel_anchors": lambda: anchors.multilevel_anchors((96, 64), 3, 5),
    "rpn_anchors": lambda: anchors.rpn_anchors((64, 96)),
    "ssd_default_boxes": lambda: anchors.ssd_default_boxes(clip=True),
    "ssd512_default_boxes": lambda: anchors.ssd512_default_boxes(),
    "yolo_priors": lambda: anchors.yolo_priors(),
    "yolo_anchor_grids": lambda: anchors.yolo_anchor_grids(96)[1],
    "yolo_anchors": lambda: anchors.yolo_anchors(96),
}


@pytest.mark.parametrize("name", sorted(CALLS))
def test_xla_matches_eager(name):
    eager = np.asarray(CALLS[name]())
    compiled = tf.function(CALLS[name], jit_compile=True)()
    np.testing.assert_allclose(np.asarray(compiled), eager, rtol=1e-6, atol=1e-4)


@pytest.mark.slow
def test_jax_matches_tensorflow(tmp_path):
    out = tmp_path / "jax.npz"
    # Under jax.jit: one compilation instead of one per eager op, and a check
    # that the generators trace.
    run_under_jax(f"""
        import jax
        import numpy as np
        from tfdet.core import anchors
        calls = dict(
            multilevel_anchors=lambda: anchors.multilevel_anchors((96, 64), 3, 5),
            rpn_anchors=lambda: anchors.rpn_anchors((64, 96)),
            ssd_default_boxes=lambda: anchors.ssd_default_boxes(clip=True),
            ssd512_default_boxes=lambda: anchors.ssd512_default_boxes(),
            yolo_priors=lambda: anchors.yolo_priors(),
            yolo_anchor_grids=lambda: anchors.yolo_anchor_grids(96)[1],
            yolo_anchors=lambda: anchors.yolo_anchors(96))
        np.savez({str(out)!r}, **{{name: np.asarray(jax.jit(call)()) for name, call in calls.items()}})
    """)
    results = np.load(out)
    for name, call in CALLS.items():
        np.testing.assert_allclose(results[name], np.asarray(call()), rtol=1e-6, atol=1e-4, err_msg=name)
