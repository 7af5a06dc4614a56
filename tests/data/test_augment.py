"""Augmentations keep boxes and masks consistent; the SSD crop meets its IoU; draws are seeded."""

import numpy as np
import pytest
import tensorflow as tf

from tests.data.helpers import mask_bbox
from tfdet.data import augment
from tfdet.data.synthetic import SHAPES, make_image


def _example(index=0, size=(96, 128)):
    """A synthetic image with tight boxes and masks, as the reader would deliver it."""
    image, objects = make_image(np.random.default_rng([11, index]), size[0], size[1], SHAPES)
    return {
        "image": tf.constant(image),
        "boxes": tf.constant([o["box"] for o in objects], tf.float32),
        "classes": tf.constant([o["label"] - 1 for o in objects], tf.int32),
        "is_crowd": tf.zeros([len(objects)], tf.int32),
        "difficult": tf.zeros([len(objects)], tf.int32),
        "masks": tf.constant(np.stack([o["mask"] for o in objects]).astype(np.uint8)),
    }


def _assert_boxes_match_masks(example):
    boxes = example["boxes"].numpy()
    masks = example["masks"].numpy()
    assert masks.shape[0] == boxes.shape[0] == example["classes"].shape[0]
    assert masks.shape[1:] == tuple(example["image"].shape[:2])
    for box, mask in zip(boxes, masks):
        np.testing.assert_allclose(box, mask_bbox(mask))  # exact: windows have whole-pixel corners


def _numpy_iou(window, boxes):
    top_left = np.maximum(window[:2], boxes[:, :2])
    bottom_right = np.minimum(window[2:], boxes[:, 2:])
    inter = np.prod(np.clip(bottom_right - top_left, 0, None), axis=1)
    area = lambda b: (b[..., 2] - b[..., 0]) * (b[..., 3] - b[..., 1])  # noqa: E731
    return inter / (area(window) + area(boxes) - inter)


def test_flip_mirrors_boxes_masks_and_pixels():
    example = _example()
    flipped = augment.flip_left_right(example)
    _assert_boxes_match_masks(flipped)
    np.testing.assert_array_equal(flipped["image"].numpy(), example["image"].numpy()[:, ::-1])
    box = example["boxes"].numpy()[0]
    np.testing.assert_allclose(flipped["boxes"].numpy()[0], [box[0], 128 - box[3], box[2], 128 - box[1]])


@pytest.mark.parametrize("index", range(6))
def test_ssd_window_boxes_match_the_cut_window_and_its_masks(index):
    example = _example(index)
    seed = tf.constant([3, index], tf.int64)
    moved, window, flip = augment.ssd_window(example, seed, expand_probability=0.7)
    # Independent path: cut the window out for real (fill, masks), mirror it, and look at the masks.
    cut = augment.apply_window(example, window[0], window[1], window[2], window[3], fill=augment.SSD_MEAN_RGB)
    if flip:
        cut = augment.flip_left_right(cut)
    _assert_boxes_match_masks(cut)
    np.testing.assert_allclose(moved["boxes"].numpy(), cut["boxes"].numpy())
    np.testing.assert_array_equal(moved["classes"].numpy(), cut["classes"].numpy())


def test_crop_and_expand_drop_by_centre_and_clip():
    image = np.zeros((100, 100, 3), np.uint8)
    masks = np.zeros((2, 100, 100), np.uint8)
    masks[0, 10:30, 10:50] = 1   # centre (20, 30): inside the window below
    masks[1, 60:100, 0:20] = 1   # centre (80, 10): left of the window
    example = {"image": tf.constant(image), "boxes": tf.constant([[10, 10, 30, 50], [60, 0, 100, 20]], tf.float32),
               "classes": tf.constant([4, 7]), "is_crowd": tf.constant([0, 1]), "difficult": tf.constant([1, 0]),
               "masks": tf.constant(masks)}
    out = augment.apply_window(example, tf.constant(5), tf.constant(25), tf.constant(80), tf.constant(60))
    np.testing.assert_allclose(out["boxes"].numpy(), [[5, 0, 25, 25]])  # clipped at the window's left edge
    np.testing.assert_array_equal(out["classes"].numpy(), [4])
    np.testing.assert_array_equal(out["difficult"].numpy(), [1])
    _assert_boxes_match_masks(out)
    # A window reaching outside the image: filled per channel, masks zero, boxes shifted.
    expanded = augment.apply_window(example, tf.constant(-10), tf.constant(-20), tf.constant(150),
                                    tf.constant(130), fill=(1, 2, 3))
    assert expanded["image"].shape == (150, 130, 3)
    np.testing.assert_array_equal(expanded["image"].numpy()[0, 0], [1, 2, 3])
    np.testing.assert_array_equal(expanded["image"].numpy()[10, 20], [0, 0, 0])
    _assert_boxes_match_masks(expanded)
    np.testing.assert_allclose(expanded["boxes"].numpy()[0], [20, 30, 40, 70])


@pytest.mark.parametrize("min_iou", [0.1, 0.5, 0.7, 0.9])
def test_iou_constrained_crop_meets_its_minimum(min_iou):
    boxes = np.array([[10, 20, 100, 140], [5, 120, 40, 158]], np.float32)
    sample = tf.function(lambda seed: augment.sample_iou_crop_window(
        tf.constant(boxes), tf.constant(120), tf.constant(160), seed, min_ious=(min_iou,)))
    used = 0
    for trial in range(25):
        window = sample(tf.constant([int(min_iou * 100), trial], tf.int64)).numpy()
        assert 0 <= window[0] < window[2] <= 120 and 0 <= window[1] < window[3] <= 160
        if tuple(window) == (0, 0, 120, 160):
            continue  # no qualifying patch in 50 trials: the whole image, as the paper's sampler
        used += 1
        assert _numpy_iou(window.astype(np.float32), boxes).max() >= min_iou - 1e-6
        height, width = window[2] - window[0], window[3] - window[1]
        assert height * width >= 0.3 ** 2 * 120 * 160 - 200  # side scale >= 0.3 (rounding slack)
        centres = (boxes[:, :2] + boxes[:, 2:]) / 2
        assert np.any(np.all((centres > window[:2]) & (centres < window[2:]), axis=1))
    # The constraint is met by real crops, not only by the fallback (0.9 is rare in 50 trials, as in the paper).
    assert used >= (1 if min_iou >= 0.9 else 5)


def test_none_option_keeps_the_whole_image_and_no_boxes_fall_back():
    window = augment.sample_iou_crop_window(tf.zeros([0, 4]), tf.constant(50), tf.constant(60),
                                            tf.constant([1, 2], tf.int64), min_ious=(0.3,))
    np.testing.assert_array_equal(window.numpy(), [0, 0, 50, 60])
    window = augment.sample_iou_crop_window(tf.constant([[1.0, 1.0, 20.0, 20.0]]), tf.constant(50),
                                            tf.constant(60), tf.constant([1, 2], tf.int64), min_ious=(None,))
    np.testing.assert_array_equal(window.numpy(), [0, 0, 50, 60])


def test_scale_jitter_output_size_and_boxes_follow_masks():
    example = _example(2)
    for trial in range(4):
        out, scale = augment.scale_jitter(example, tf.constant([5, trial], tf.int64), (64, 80))
        assert out["image"].shape == (64, 80, 3) and out["masks"].shape[1:] == (64, 80)
        for box, mask in zip(out["boxes"].numpy(), out["masks"].numpy()):
            bbox = mask_bbox(mask)
            if bbox is not None:  # resampling moves mask edges by at most a pixel
                np.testing.assert_allclose(box, bbox, atol=1.01)
        assert scale.shape == (2,)


def test_draws_are_stateless_and_seeded():
    example = _example(3)
    seed_a, seed_b = tf.constant([1, 2], tf.int64), tf.constant([1, 3], tf.int64)
    image = tf.cast(example["image"], tf.float32)
    for chain in (lambda s: augment.ssd_window(example, s)[1],
                  lambda s: augment.photometric_distortion(image, s),
                  lambda s: augment.hsv_jitter(image, s)):
        first, again = chain(seed_a).numpy(), chain(seed_a).numpy()
        np.testing.assert_array_equal(first, again)
    outputs = {augment.photometric_distortion(image, tf.constant([1, s], tf.int64)).numpy().tobytes()
               for s in range(6)}
    assert len(outputs) > 1
    distorted = augment.hsv_jitter(image, seed_b).numpy()
    assert distorted.min() >= 0.0 and distorted.max() <= 255.0


def test_colour_matrix_identity_grey_and_luma():
    image = tf.random.stateless_uniform([8, 8, 3], [0, 1], maxval=255.0)
    pixels = image.numpy()
    identity = augment.apply_colour_matrix(image, augment.colour_matrix(0.0, 1.0, 1.0))
    np.testing.assert_allclose(identity.numpy(), pixels, atol=1e-3)
    full_turn = augment.apply_colour_matrix(image, augment.colour_matrix(360.0, 1.0, 1.0))
    np.testing.assert_allclose(full_turn.numpy(), pixels, atol=1e-2)
    # Saturation 0 leaves the luma (ITU-R BT.601 weights) in every channel.
    grey = augment.apply_colour_matrix(image, augment.colour_matrix(0.0, 0.0, 1.0)).numpy()
    luma = pixels @ np.array([0.299, 0.587, 0.114])
    np.testing.assert_allclose(grey, np.repeat(luma[..., None], 3, -1), atol=1e-2)
    # A hue turn keeps the luma; a grey pixel stays put; value scales everything.
    matrix = augment.colour_matrix(90.0, 1.0, 1.0).numpy()
    np.testing.assert_allclose(np.array([0.299, 0.587, 0.114]) @ matrix, [0.299, 0.587, 0.114], atol=1e-5)
    np.testing.assert_allclose(matrix @ np.ones(3), np.ones(3), atol=1e-5)
    np.testing.assert_allclose(augment.colour_matrix(0.0, 1.0, 0.5).numpy(), 0.5 * np.eye(3), atol=1e-5)
