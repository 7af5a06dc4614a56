"""resize_image / resize_masks against hand-computed sizes, scales and padding."""

import numpy as np
import pytest
import tensorflow as tf

from tfdet.data.augment import apply_window
from tfdet.data.resize import ResizeModeError, resize_image, resize_masks, resize_window


def _ramp(height, width):
    rng = np.random.default_rng(0)
    return rng.integers(0, 256, size=(height, width, 3), dtype=np.uint8)


def test_stretch_scale_and_pixels():
    image = _ramp(100, 200)
    resized, scale = resize_image(image, (300, 300), "stretch")
    assert resized.shape == (300, 300, 3) and resized.dtype == tf.float32
    np.testing.assert_allclose(scale.numpy(), [3.0, 1.5])
    reference = tf.image.resize(image.astype(np.float32), (300, 300), method="bilinear")
    np.testing.assert_allclose(resized.numpy(), reference.numpy(), atol=1e-3)


@pytest.mark.parametrize(
    "size, target, content, s",
    [
        ((100, 200), (300, 300), (150, 300), 1.5),   # wide image: pad bottom
        ((200, 100), (300, 300), (300, 150), 1.5),   # tall image: pad right
        ((100, 100), (256, 512), (256, 256), 2.56),  # non-square target
        ((480, 640), (416, 416), (312, 416), 0.65),  # downscale
    ],
)
def test_letterbox_scale_content_and_zero_padding(size, target, content, s):
    image = _ramp(*size)
    resized, scale = resize_image(image, target, "letterbox")
    resized = resized.numpy()
    assert resized.shape == (*target, 3)
    np.testing.assert_allclose(scale.numpy(), [s, s], rtol=1e-6)
    reference = tf.image.resize(image.astype(np.float32), content, method="bilinear").numpy()
    np.testing.assert_allclose(resized[: content[0], : content[1]], reference, atol=1e-3)
    assert not resized[content[0]:].any() and not resized[:, content[1]:].any()


def test_letterbox_of_an_exact_fit_is_the_image():
    image = _ramp(64, 32)
    resized, scale = resize_image(image, (128, 64), "letterbox")
    np.testing.assert_allclose(scale.numpy(), [2.0, 2.0])
    assert resized.shape == (128, 64, 3)
    resized, scale = resize_image(image, (64, 32), "letterbox")
    np.testing.assert_array_equal(resized.numpy(), image.astype(np.float32))


def test_uint8_and_float_inputs_agree_and_boxes_map_by_scale():
    image = _ramp(50, 80)
    from_uint8, scale = resize_image(image, (100, 100), "letterbox")
    from_float, _ = resize_image(image.astype(np.float32), (100, 100), "letterbox")
    np.testing.assert_allclose(from_uint8.numpy(), from_float.numpy())
    # s = min(100/50, 100/80) = 1.25: the whole-image box becomes 62.5 x 100 model-input pixels.
    box = np.array([0.0, 0.0, 50.0, 80.0]) * np.tile(scale.numpy(), 2)
    np.testing.assert_allclose(box, [0.0, 0.0, 62.5, 100.0])


def test_masks_follow_the_image_geometry():
    mask = np.zeros((2, 100, 200), np.uint8)
    mask[0, 10:20, 40:60] = 1
    mask[1, 50:100, 0:200] = 1
    resized = resize_masks(mask, (300, 300), "letterbox").numpy()
    assert resized.shape == (2, 300, 300) and set(np.unique(resized)) <= {0, 1}
    # Scale 1.5: rows 15..30, cols 60..90 for the first; the second reaches the content's bottom (150).
    rows = np.flatnonzero(resized[0].any(1))
    cols = np.flatnonzero(resized[0].any(0))
    assert (rows[0], rows[-1] + 1, cols[0], cols[-1] + 1) == (15, 30, 60, 90)
    assert resized[1, 75:150].all() and not resized[1, 150:].any()
    stretched = resize_masks(mask, (50, 50), "stretch").numpy()
    assert stretched.shape == (2, 50, 50)
    assert resize_masks(np.zeros((0, 10, 10), np.uint8), (20, 20), "letterbox").shape == (0, 20, 20)


def test_unknown_mode_is_a_value_error():
    with pytest.raises(ResizeModeError, match="resize mode 'crop'"):
        resize_image(_ramp(10, 10), (20, 20), "crop")
    assert issubclass(ResizeModeError, ValueError)


@pytest.mark.parametrize("mode", ["stretch", "letterbox"])
def test_resize_window_inside_the_image_equals_cutting_then_resizing(mode):
    image = _ramp(50, 80)
    masks = np.zeros((1, 50, 80), np.uint8)
    masks[0, 12:30, 25:50] = 1
    for window, flip in (((0, 0, 50, 80), False), ((10, 20, 30, 40), False), ((10, 20, 30, 40), True)):
        top, left, height, width = window
        resized, scale, resized_masks = resize_window(image, tf.constant(window), (64, 96), mode, flip=flip,
                                                      masks=masks)
        cut = image[top:top + height, left:left + width]
        cut_masks = masks[:, top:top + height, left:left + width]
        if flip:
            cut, cut_masks = cut[:, ::-1], cut_masks[:, :, ::-1]
        expected, expected_scale = resize_image(cut, (64, 96), mode)
        np.testing.assert_allclose(resized.numpy(), expected.numpy(), atol=1e-2)
        np.testing.assert_allclose(scale.numpy(), expected_scale.numpy())
        np.testing.assert_array_equal(resized_masks.numpy(), resize_masks(cut_masks, (64, 96), mode).numpy())


def test_resize_window_reaching_outside_fills_and_places_the_image():
    image = _ramp(50, 80)
    window = (-50, -80, 150, 240)  # the image sits in the middle third of the window
    resized, scale, _ = resize_window(image, tf.constant(window), (150, 240), "stretch", fill=(1, 2, 3))
    np.testing.assert_allclose(scale.numpy(), [1.0, 1.0])
    resized = resized.numpy()
    np.testing.assert_array_equal(resized[:50, :], np.broadcast_to([1.0, 2.0, 3.0], (50, 240, 3)))
    np.testing.assert_allclose(resized[50:100, 80:160], image.astype(np.float32))
    cut = apply_window({"image": tf.constant(image), "boxes": tf.zeros([0, 4])}, tf.constant(-50),
                       tf.constant(-80), tf.constant(150), tf.constant(240), fill=(1, 2, 3))["image"]
    np.testing.assert_array_equal(resized, cut.numpy().astype(np.float32))
