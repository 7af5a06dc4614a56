"""Mask targets and mask pasting: hand-computed cases and round trips on real shapes."""

from __future__ import annotations

import json

import numpy as np
import pytest
import tensorflow as tf

from tests.backends import run_under_jax
from tfdet.core.mask_ops import mask_targets, paste_masks

IMAGE_H, IMAGE_W, M = 64, 80, 28

# A 4x4 mask with a 2x2 block of ones in its centre.
BLOCK = np.zeros((4, 4), np.float32)
BLOCK[1:3, 1:3] = 1.0


def _ellipse(height, width, cy, cx, ry, rx):
    """0/1 mask of the pixels whose centres lie in the ellipse."""
    y = np.arange(height)[:, None] + 0.5
    x = np.arange(width)[None, :] + 0.5
    return (((y - cy) / ry) ** 2 + ((x - cx) / rx) ** 2 <= 1.0).astype(np.float32)


def _iou(a, b):
    a, b = a.astype(bool), b.astype(bool)
    return (a & b).sum() / (a | b).sum()


def _round_trip_inputs():
    """Two images: an ellipse and a rectangle, each with its tight box (image pixels)."""
    ellipse = _ellipse(IMAGE_H, IMAGE_W, 30.0, 42.0, 18.0, 25.0)
    rectangle = np.zeros((IMAGE_H, IMAGE_W), np.float32)
    rectangle[9:51, 13:70] = 1.0
    gt_masks = np.stack([ellipse, rectangle])[:, None]  # [B=2, G=1, H, W]
    boxes = np.array([[[12.0, 17.0, 48.0, 67.0]], [[9.0, 13.0, 51.0, 70.0]]], np.float32)
    return gt_masks, boxes


def test_mask_targets_hand_computed():
    # RoI = the block, [1, 3]^2 px, M = 2, aligned: grid [0.5, 2.5], bins of 1 px, samples at
    # 0.75, 1.25 | 1.75, 2.25. Along an axis the mask reads 0, 1, 1, 0, so samples give
    # 0.75, 1, 1, 0.75 and each bin averages 0.875; the mask is separable: 0.875^2.
    gt = np.stack([np.zeros((4, 4), np.float32), BLOCK])[None]  # [1, G=2, 4, 4]
    rois = np.array([[[1.0, 1.0, 3.0, 3.0]] * 3 + [[0.0, 0.0, 4.0, 4.0]]], np.float32)
    matched = np.array([[1, 0, -1, 1]], np.int32)  # -1 (background) is clipped to slot 0
    soft = np.asarray(mask_targets(gt, matched, rois, mask_size=2, binarize=False))[0]
    np.testing.assert_allclose(soft[0], np.full((2, 2), 0.765625), atol=1e-6)
    np.testing.assert_allclose(soft[1:3], 0.0, atol=1e-6)
    # Whole-image RoI, M = 2: grid [-0.5, 3.5], bins of 2 px, samples at 0, 1 | 2, 3 read
    # 0, 1 | 1, 0, so every bin is 0.5 * 0.5.
    np.testing.assert_allclose(soft[3], np.full((2, 2), 0.25), atol=1e-6)
    # The same RoI at M = 4: samples -0.25 (clamped to 0), 0.25 |
    # 0.75, 1.25 | 1.75, 2.25 | 2.75, 3.25 (clamped to 3): per axis 0.125, 0.875, 0.875, 0.125.
    soft4 = np.asarray(mask_targets(gt, matched[:, 3:], rois[:, 3:], mask_size=4, binarize=False))[0, 0]
    profile = np.array([0.125, 0.875, 0.875, 0.125])
    np.testing.assert_allclose(soft4, np.outer(profile, profile), atol=1e-6)
    hard4 = np.asarray(mask_targets(gt, matched[:, 3:], rois[:, 3:], mask_size=4))[0, 0]
    np.testing.assert_array_equal(hard4, BLOCK)


def test_paste_hand_computed():
    # Box [0, 4]^2 in a 4x6 image, M = 2: pixel centre i + 0.5 maps to cell coordinate
    # (i + 0.5) / 2 - 0.5 = -0.25 (clamped to 0), 0.25, 0.75, 1.25 (clamped to 1), i.e.
    # weight on cell 0 of p = 1, .75, .25, 0. Mask [[0, 1], [1, 1]] = 1 - e00, so
    # out[i, j] = 1 - p_i p_j; columns 4, 5 lie outside the box and are zero.
    mask = np.array([[[[0.0, 1.0], [1.0, 1.0]], [[1.0, 1.0], [1.0, 1.0]]]], np.float32)
    boxes = np.array([[[0.0, 0.0, 4.0, 4.0], [2.0, 2.0, 2.0, 5.0]]], np.float32)  # second: empty
    got = np.asarray(paste_masks(mask, boxes, 4, 6))[0]
    want = np.array(
        [
            [0.0, 0.25, 0.75, 1.0, 0.0, 0.0],
            [0.25, 0.4375, 0.8125, 1.0, 0.0, 0.0],
            [0.75, 0.8125, 0.9375, 1.0, 0.0, 0.0],
            [1.0, 1.0, 1.0, 1.0, 0.0, 0.0],
        ]
    )
    np.testing.assert_allclose(got[0], want, atol=1e-6)
    np.testing.assert_array_equal(got[1], 0.0)

    # A fractional box: [1.5, 3.5] x [0, 6], M = 1: rows 1 and 2 (centres 1.5, 2.5) and
    # row 3 (centre 3.5, on the edge) are inside, row 0 is not; the mask value is 0.6.
    box = np.array([[[1.5, 0.0, 3.5, 6.0]]], np.float32)
    got = np.asarray(paste_masks(np.full((1, 1, 1, 1), 0.6, np.float32), box, 4, 6))
    np.testing.assert_allclose(got[0, 0, :, 0], [0.0, 0.6, 0.6, 0.6], atol=1e-6)


def test_target_then_paste_recovers_mask():
    gt_masks, boxes = _round_trip_inputs()
    targets = mask_targets(gt_masks, np.zeros((2, 1), np.int32), boxes, mask_size=M, binarize=False)
    pasted = np.asarray(paste_masks(targets, boxes, IMAGE_H, IMAGE_W))
    for b in range(2):
        iou = _iou(pasted[b, 0] >= 0.5, gt_masks[b, 0])
        assert iou > 0.95, f"image {b}: IoU {iou:.4f}"


def test_paste_then_target_recovers_mask():
    ellipse = _ellipse(M, M, 14.0, 14.0, 12.0, 9.0)
    square = np.zeros((M, M), np.float32)
    square[4:24, 6:20] = 1.0
    masks = np.stack([ellipse, square])[:, None]  # [B=2, D=1, M, M]
    boxes = np.array([[[10.3, 7.7, 50.1, 70.4]], [[3.0, 30.0, 60.0, 61.0]]], np.float32)
    pasted = np.asarray(paste_masks(masks, boxes, IMAGE_H, IMAGE_W))
    # The pasted mask, thresholded, is the image-sized gt a dataset would hold.
    gt = (pasted >= 0.5).astype(np.float32)
    targets = np.asarray(mask_targets(gt, np.zeros((2, 1), np.int32), boxes, mask_size=M))
    for b in range(2):
        iou = _iou(targets[b, 0], masks[b, 0])
        assert iou > 0.95, f"mask {b}: IoU {iou:.4f}"


def _xla_cases():
    gt_masks, boxes = _round_trip_inputs()
    rng = np.random.default_rng(5)
    probs = rng.uniform(size=(2, 3, 14, 14)).astype(np.float32)
    paste_boxes = np.array(
        [[[5.0, 3.0, 40.0, 50.0], [-4.0, 60.0, 20.0, 90.0], [30.0, 30.0, 30.0, 40.0]],
         [[0.0, 0.0, 64.0, 80.0], [12.2, 8.7, 13.9, 9.1], [50.0, 10.0, 70.0, 75.5]]],
        np.float32,
    )
    matched = np.array([[0], [0]], np.int32)
    return gt_masks, boxes, matched, probs, paste_boxes


def _both(gt_masks, boxes, matched, probs, paste_boxes):
    return (
        mask_targets(gt_masks, matched, boxes, mask_size=M, binarize=False),
        mask_targets(gt_masks, matched, boxes, mask_size=M),
        paste_masks(probs, paste_boxes, IMAGE_H, IMAGE_W),
    )


@pytest.mark.slow
def test_xla_matches_eager():
    args = _xla_cases()
    eager = [np.asarray(t) for t in _both(*args)]
    compiled = [t.numpy() for t in tf.function(_both, jit_compile=True)(*args)]
    for e, c in zip(eager, compiled):
        np.testing.assert_allclose(c, e, atol=1e-5)


@pytest.mark.slow
def test_jax_backend_matches(tmp_path):
    args = _xla_cases()
    data = tmp_path / "inputs.npz"
    np.savez(data, *args)
    stdout = run_under_jax(
        f"""
        import json
        import jax
        import numpy as np
        from tfdet.core.mask_ops import mask_targets, paste_masks
        d = np.load({str(data)!r})
        gt_masks, boxes, matched, probs, paste_boxes = (d[f"arr_{{i}}"] for i in range(5))
        soft = jax.jit(lambda g, m, b: mask_targets(g, m, b, mask_size={M}, binarize=False))(gt_masks, matched, boxes)
        hard = jax.jit(lambda g, m, b: mask_targets(g, m, b, mask_size={M}))(gt_masks, matched, boxes)
        pasted = jax.jit(lambda p, b: paste_masks(p, b, {IMAGE_H}, {IMAGE_W}))(probs, paste_boxes)
        print(json.dumps([np.asarray(t).tolist() for t in (soft, hard, pasted)]))
        """
    )
    got = [np.array(v) for v in json.loads(stdout.strip().splitlines()[-1])]
    want = [np.asarray(t) for t in _both(*args)]
    for g, w in zip(got, want):
        assert g.shape == w.shape
        np.testing.assert_allclose(g, w, atol=1e-5)
