"""RoIAlign against hand-computed values, a NumPy reference and tf.image.crop_and_resize."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import tensorflow as tf

from tests.backends import run_under_jax
from tfdet.core.roi_align import assign_fpn_levels, multilevel_roi_align, roi_align

# A 4x4 map whose value is linear in position, f(y, x) = 4y + x + 1 (1..16
# row-major): bilinear interpolation reproduces a linear function exactly, so
# an in-bounds bin averages to f at the mean of its sample positions.
RAMP = (4 * np.arange(4)[:, None] + np.arange(4)[None, :] + 1).astype(np.float32)[None, :, :, None]


def _bilinear_reference(fmap, y, x):
    """One RoIAlign sample of ``fmap [H, W, C]`` at index coordinates (y, x), Detectron2's rule."""
    height, width = fmap.shape[:2]
    if y < -1.0 or y > height or x < -1.0 or x > width:
        return np.zeros(fmap.shape[2])
    y = min(max(y, 0.0), height - 1.0)
    x = min(max(x, 0.0), width - 1.0)
    y0, x0 = int(math.floor(y)), int(math.floor(x))
    y1, x1 = min(y0 + 1, height - 1), min(x0 + 1, width - 1)
    ly, lx = y - y0, x - x0
    return (
        (1 - ly) * (1 - lx) * fmap[y0, x0]
        + (1 - ly) * lx * fmap[y0, x1]
        + ly * (1 - lx) * fmap[y1, x0]
        + ly * lx * fmap[y1, x1]
    )


def _roi_align_reference(fmap, box, scale, out_h, out_w, ratio, aligned):
    """RoIAlign of one box from He et al. 2017 / Detectron2, in float64 loops: ``[out_h, out_w, C]``."""
    fmap = fmap.astype(np.float64)
    offset = 0.5 if aligned else 0.0
    y1, x1, y2, x2 = (float(v) * scale - offset for v in box)
    roi_h, roi_w = y2 - y1, x2 - x1
    if not aligned:
        roi_h, roi_w = max(roi_h, 1.0), max(roi_w, 1.0)
    bin_h, bin_w = roi_h / out_h, roi_w / out_w
    out = np.zeros((out_h, out_w, fmap.shape[2]))
    for i in range(out_h):
        for j in range(out_w):
            acc = np.zeros(fmap.shape[2])
            for sy in range(ratio):
                for sx in range(ratio):
                    y = y1 + i * bin_h + (sy + 0.5) * bin_h / ratio
                    x = x1 + j * bin_w + (sx + 0.5) * bin_w / ratio
                    acc += _bilinear_reference(fmap, y, x)
            out[i, j] = acc / (ratio * ratio)
    return out


def _batched_reference(features, boxes, scale, out_h, out_w, ratio, aligned):
    return np.stack(
        [
            np.stack([_roi_align_reference(features[b], box, scale, out_h, out_w, ratio, aligned) for box in boxes[b]])
            for b in range(boxes.shape[0])
        ]
    )


def _level_reference(box):
    """Eq. 1 of Lin et al. 2017 in float64, clipped to P2..P5."""
    size = math.sqrt(max(box[2] - box[0], 0.0) * max(box[3] - box[1], 0.0))
    if size == 0.0:
        return 2
    return int(min(max(math.floor(4 + math.log2(size / 224.0)), 2), 5))


def _single_level_inputs():
    rng = np.random.default_rng(7)
    features = rng.normal(size=(2, 10, 12, 3)).astype(np.float32)
    # Image 40x48 at stride 4. Boxes: interior, crossing each border, larger
    # than the image, thinner than one feature pixel, and empty.
    boxes = np.array(
        [
            [[4.0, 6.0, 30.0, 41.0], [-6.0, -9.0, 12.0, 10.0], [25.0, 30.0, 47.0, 55.0], [1.0, 2.0, 2.5, 40.0]],
            [[-20.0, -20.0, 60.0, 70.0], [10.0, 10.0, 10.0, 10.0], [0.0, 0.0, 40.0, 48.0], [17.3, 3.1, 22.9, 9.7]],
        ],
        np.float32,
    )
    return features, boxes


def _pyramid_inputs():
    rng = np.random.default_rng(11)
    image = 512
    features = [rng.normal(size=(2, image >> level, image >> level, 4)).astype(np.float32) for level in range(2, 6)]
    # Sizes chosen to land on every level, not on a boundary; some cross the image edge.
    sizes = np.array([[40, 150, 300, 600, 90, 200], [260, 20, 480, 130, 350, 70]], np.float32)
    aspect = rng.uniform(0.5, 2.0, size=sizes.shape).astype(np.float32)
    heights, widths = sizes * np.sqrt(aspect), sizes / np.sqrt(aspect)
    cy = rng.uniform(0, image, size=sizes.shape).astype(np.float32)
    cx = rng.uniform(0, image, size=sizes.shape).astype(np.float32)
    boxes = np.stack([cy - heights / 2, cx - widths / 2, cy + heights / 2, cx + widths / 2], axis=-1)
    return features, boxes


def _pyramid_reference(features, boxes, out):
    result = np.zeros(boxes.shape[:2] + (out, out, features[0].shape[-1]))
    for b in range(boxes.shape[0]):
        for r, box in enumerate(boxes[b]):
            level = _level_reference(box)
            result[b, r] = _roi_align_reference(features[level - 2][b], box, 2.0**-level, out, out, 2, True)
    return result


def test_hand_computed_ramp():
    # aligned=True, box [0.5, 3.5]^2 at scale 1 -> [0, 3]^2 on the grid: 3x3 unit bins
    # centred at 0.5, 1.5, 2.5, so out[i, j] = f(i + 0.5, j + 0.5) = 4i + j + 3.5.
    got = np.asarray(roi_align(RAMP, np.array([[[0.5, 0.5, 3.5, 3.5]]], np.float32), 1.0, 3, 2, True))
    np.testing.assert_allclose(got[0, 0, :, :, 0], [[3.5, 4.5, 5.5], [7.5, 8.5, 9.5], [11.5, 12.5, 13.5]], atol=1e-6)

    # aligned=False, box [0, 4]^2, 2x2 bins of size 2, samples at 0.5, 1.5 | 2.5, 3.5;
    # 3.5 lies in (H - 1, H] and is clamped to 3, so bin 1 averages 2.5 and 3 -> 2.75.
    # out = 4 * {1, 2.75} + {1, 2.75} + 1.
    got = np.asarray(roi_align(RAMP, np.array([[[0.0, 0.0, 4.0, 4.0]]], np.float32), 1.0, 2, 2, False))
    np.testing.assert_allclose(got[0, 0, :, :, 0], [[6.0, 7.75], [13.0, 14.75]], atol=1e-6)

    # aligned=False, box [-4, 0]^2, one bin, samples at -3 and -1 per axis: -3 < -1
    # reads zero, -1 clamps to 0; only (-1, -1) -> f(0, 0) = 1 survives, over 4 samples.
    got = np.asarray(roi_align(RAMP, np.array([[[-4.0, -4.0, 0.0, 0.0]]], np.float32), 1.0, 1, 2, False))
    np.testing.assert_allclose(got[0, 0, 0, 0, 0], 0.25, atol=1e-6)

    # Stride 2 and a non-square output: box [2, 2, 6, 6] px -> [1, 1, 3, 3] - 0.5 =
    # [0.5, 0.5, 2.5, 2.5]; 1x2 bins of 2x1 feature px, centres y = 1.5, x = 1, 2;
    # out = 4 * 1.5 + {1, 2} + 1.
    got = np.asarray(roi_align(RAMP, np.array([[[2.0, 2.0, 6.0, 6.0]]], np.float32), 0.5, (1, 2), 2, True))
    np.testing.assert_allclose(got[0, 0, 0, :, 0], [8.0, 9.0], atol=1e-6)


@pytest.mark.parametrize("aligned", [True, False])
def test_matches_numpy_reference(aligned):
    features, boxes = _single_level_inputs()
    got = np.asarray(roi_align(features, boxes, 0.25, (7, 5), 2, aligned))
    want = _batched_reference(features, boxes, 0.25, 7, 5, 2, aligned)
    assert got.shape == (2, 4, 7, 5, 3)
    np.testing.assert_allclose(got, want, atol=2e-5)


def test_matches_crop_and_resize():
    """Where every sample is inside the map, RoIAlign is crop_and_resize on shifted boxes.

    crop_and_resize with a normalised box [a, b] (one axis, map size H, crop n > 1)
    samples at a (H - 1) + k (b - a)(H - 1) / (n - 1), k = 0..n-1. RoIAlign with
    sampling ratio g samples at s + (k + 0.5) * bin / g, k = 0..n g - 1, for a box
    starting at s (after scaling and the aligned shift) with bin = extent / out.
    They coincide for a (H - 1) = s + bin / (2g) and b (H - 1) = e - bin / (2g),
    crop size n = out * g, then a g x g average pool. Both interpolate bilinearly
    between the same neighbours; only out-of-map rules differ, so the boxes stay
    at least one feature pixel inside.
    """
    rng = np.random.default_rng(3)
    height, width, stride = 12, 16, 4
    features = rng.normal(size=(2, height, width, 5)).astype(np.float32)
    y1 = rng.uniform(1.0, 5.0, size=(2, 6))
    x1 = rng.uniform(1.0, 7.0, size=(2, 6))
    y2 = y1 + rng.uniform(1.0, height - 2.0 - y1)
    x2 = x1 + rng.uniform(1.0, width - 2.0 - x1)
    grid_boxes = np.stack([y1, x1, y2, x2], axis=-1)  # feature units, at least 1 px inside
    image_boxes = (grid_boxes * stride).astype(np.float32)
    box_indices = np.repeat(np.arange(2), 6).astype(np.int32)

    for ratio, aligned, out in [(1, False, 7), (2, True, 7), (2, False, 5)]:
        shifted = grid_boxes - (0.5 if aligned else 0.0)
        bins = (shifted[..., 2:] - shifted[..., :2]) / out
        start = shifted[..., :2] + bins / (2 * ratio)
        end = shifted[..., 2:] - bins / (2 * ratio)
        norm = np.concatenate([start, end], axis=-1) / np.array([height - 1, width - 1] * 2)
        crops = tf.image.crop_and_resize(
            features, norm.reshape(-1, 4).astype(np.float32), box_indices, (out * ratio, out * ratio)
        )
        want = tf.nn.avg_pool2d(crops, ratio, ratio, "VALID").numpy().reshape(2, 6, out, out, 5)
        got = np.asarray(roi_align(features, image_boxes, 1.0 / stride, out, ratio, aligned))
        np.testing.assert_allclose(got, want, atol=2e-5, err_msg=f"ratio={ratio} aligned={aligned}")


def test_fpn_level_assignment():
    sizes = [(224, 224), (112, 112), (448, 448), (10, 10), (0, 0), (112, 448), (223, 223), (2000, 2000), (447, 449)]
    boxes = np.array([[[5.0, 7.0, 5.0 + h, 7.0 + w] for h, w in sizes]], np.float32)
    # 224 -> k0 = 4; half -> 3; double -> 5; tiny and empty -> clipped to 2; 112x448 has
    # sqrt(area) 224 -> 4; 223 is just below 224 -> 3; huge -> clipped to 5;
    # sqrt(447 * 449) = 447.999 -> 4.
    np.testing.assert_array_equal(np.asarray(assign_fpn_levels(boxes))[0], [4, 3, 5, 2, 2, 4, 3, 5, 4])
    np.testing.assert_array_equal(
        np.asarray(assign_fpn_levels(boxes, min_level=3, max_level=6))[0], [4, 3, 5, 3, 3, 4, 3, 6, 4]
    )


@pytest.mark.parametrize("out", [7, 14])
def test_multilevel_matches_reference(out):
    features, boxes = _pyramid_inputs()
    levels = np.asarray(assign_fpn_levels(boxes))
    want_levels = np.array([[_level_reference(b) for b in row] for row in boxes])
    np.testing.assert_array_equal(levels, want_levels)
    assert set(levels.ravel()) == {2, 3, 4, 5}  # every level exercised
    got = np.asarray(multilevel_roi_align(features, boxes, out))
    assert got.shape == (2, 6, out, out, 4)
    np.testing.assert_allclose(got, _pyramid_reference(features, boxes, out), atol=2e-5)


def test_gradient_reaches_features():
    # Each bin's weights over in-map samples sum to 1, so d(sum of outputs)/d(features)
    # sums to R * out_h * out_w per channel for interior boxes.
    features = tf.constant(np.random.default_rng(0).normal(size=(1, 8, 8, 2)).astype(np.float32))
    boxes = np.array([[[4.0, 4.0, 20.0, 28.0], [8.0, 2.0, 12.0, 9.0]]], np.float32)
    with tf.GradientTape() as tape:
        tape.watch(features)
        total = tf.reduce_sum(roi_align(features, boxes, 0.25, 3, 2, True))
    grad = tape.gradient(total, features).numpy()
    np.testing.assert_allclose(grad.sum(axis=(0, 1, 2)), [2 * 9, 2 * 9], rtol=1e-5)


def _all_functions(features, boxes, pyramid_boxes, *pyramid):
    return (
        roi_align(features, boxes, 0.25, 7, 2, True),
        roi_align(features, boxes, 0.25, (4, 6), 3, False),
        multilevel_roi_align(list(pyramid), pyramid_boxes, 14),
        assign_fpn_levels(pyramid_boxes),
    )


@pytest.mark.slow
def test_xla_matches_eager():
    features, boxes = _single_level_inputs()
    pyramid, pyramid_boxes = _pyramid_inputs()
    args = (features, boxes, pyramid_boxes, *pyramid)
    # One compiled function for all four calls: one XLA compilation instead of four.
    compiled = tf.function(_all_functions, jit_compile=True)(*args)
    for got, want in zip(compiled, _all_functions(*args)):
        np.testing.assert_allclose(got.numpy(), np.asarray(want), atol=1e-5)


@pytest.mark.slow
def test_jax_backend_matches(tmp_path):
    features, boxes = _single_level_inputs()
    pyramid, pyramid_boxes = _pyramid_inputs()
    data = tmp_path / "inputs.npz"
    levels = {f"p{i}": p for i, p in enumerate(pyramid)}
    np.savez(data, features=features, boxes=boxes, pyramid_boxes=pyramid_boxes, **levels)
    stdout = run_under_jax(
        f"""
        import json
        import jax
        import numpy as np
        from tfdet.core.roi_align import assign_fpn_levels, multilevel_roi_align, roi_align
        d = np.load({str(data)!r})
        pyramid = [d[f"p{{i}}"] for i in range(4)]
        result = {{
            "aligned": jax.jit(lambda f, b: roi_align(f, b, 0.25, (7, 5), 2, True))(d["features"], d["boxes"]),
            "legacy": jax.jit(lambda f, b: roi_align(f, b, 0.25, (7, 5), 2, False))(d["features"], d["boxes"]),
            "pyramid7": jax.jit(lambda b, p: multilevel_roi_align(p, b, 7))(d["pyramid_boxes"], pyramid),
            "pyramid14": jax.jit(lambda b, p: multilevel_roi_align(p, b, 14))(d["pyramid_boxes"], pyramid),
            "levels": jax.jit(assign_fpn_levels)(d["pyramid_boxes"]),
        }}
        print(json.dumps({{k: np.asarray(v).tolist() for k, v in result.items()}}))
        """
    )
    got = {k: np.array(v) for k, v in json.loads(stdout.strip().splitlines()[-1]).items()}
    np.testing.assert_allclose(got["aligned"], _batched_reference(features, boxes, 0.25, 7, 5, 2, True), atol=2e-5)
    np.testing.assert_allclose(got["legacy"], _batched_reference(features, boxes, 0.25, 7, 5, 2, False), atol=2e-5)
    np.testing.assert_allclose(got["pyramid7"], _pyramid_reference(pyramid, pyramid_boxes, 7), atol=2e-5)
    np.testing.assert_allclose(got["pyramid14"], _pyramid_reference(pyramid, pyramid_boxes, 14), atol=2e-5)
    np.testing.assert_array_equal(got["levels"], [[_level_reference(b) for b in row] for row in pyramid_boxes])


def test_rejects_bad_arguments():
    features, boxes = _single_level_inputs()
    with pytest.raises(ValueError, match="sampling_ratio"):
        roi_align(features, boxes, 0.25, 7, 0)
    with pytest.raises(ValueError, match="output_size"):
        roi_align(features, boxes, 0.25, (7, 7, 7))
    pyramid, pyramid_boxes = _pyramid_inputs()
    with pytest.raises(ValueError, match="feature levels"):
        multilevel_roi_align(pyramid[:3], pyramid_boxes)
