"""The reader against records written by tfrecord_tools and by TensorFlow's own Example API."""

import glob
import os

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

import tfrecord_tools
from tests.data.helpers import encode, tf_api_example, write_tfrecord
from tfrecord_tools import schema
from tfrecord_tools.reader import feature, iterate_examples, scalar
from tfdet.data.reader import read_examples
from tfdet.demo import bundled_raccoon_dir


def _all(file_pattern, with_masks=False):
    return [{k: v.numpy() for k, v in e.items()} for e in read_examples(file_pattern, with_masks=with_masks)]


def test_raccoon_records_from_tfrecord_tools_round_trip(tmp_path):
    source = bundled_raccoon_dir()
    tfrecord_tools.convert_voc(
        str(tmp_path), annotations_dir=os.path.join(source, "annotations"),
        images_dir=os.path.join(source, "images"), num_shards=2, workers=1, progress=False)
    pattern = str(tmp_path / "train-*.tfrecord")
    ours = _all(pattern)
    # Independent truth: tfrecord_tools' TensorFlow-free reader, and Pillow for the pixels.
    theirs = [example for _, _, example in iterate_examples(sorted(glob.glob(pattern)))]
    assert len(ours) == len(theirs) == 24
    for index, (got, expected) in enumerate(zip(ours, theirs)):
        filename = scalar(expected, schema.IMAGE_FILENAME)
        assert got["index"] == index and got["filename"] == filename
        assert got["source_id"] == scalar(expected, schema.IMAGE_SOURCE_ID)
        pixels = np.asarray(Image.open(os.path.join(source, "images", filename.decode())).convert("RGB"))
        assert got["image"].shape == pixels.shape and got["image"].dtype == np.uint8
        assert np.abs(got["image"].astype(int) - pixels.astype(int)).mean() < 2.0  # libjpeg builds may round apart
        height, width = pixels.shape[:2]
        boxes = np.stack([feature(expected, key) for key in schema.BOX_KEYS], -1) * [height, width, height, width]
        np.testing.assert_allclose(got["boxes"], boxes, rtol=1e-6, atol=1e-4)
        np.testing.assert_array_equal(got["classes"], np.array(feature(expected, schema.OBJECT_CLASS_LABEL)) - 1)
        np.testing.assert_array_equal(got["difficult"], feature(expected, schema.OBJECT_DIFFICULT))
        assert got["is_crowd"].shape == got["classes"].shape


def test_tf_api_record_with_png_masks_and_missing_flags(tmp_path):
    image = np.zeros((40, 60, 3), np.uint8)
    image[5:15, 10:30] = (255, 0, 0)
    image[20:40, 40:60] = (0, 0, 255)
    masks = [np.zeros((40, 60), np.uint8), np.zeros((40, 60), np.uint8)]
    masks[0][5:15, 10:30] = 1
    masks[1][20:40, 40:60] = 1
    boxes = [(5, 10, 15, 30), (20, 40, 40, 60)]
    path = write_tfrecord(tmp_path / "odapi.tfrecord", [
        tf_api_example(image, boxes, [3, 1], masks=masks, source_id="first", is_crowd=[0, 1]),
        tf_api_example(image, np.zeros((0, 4)), [], fmt="JPEG", source_id="empty", masks=[]),
    ])
    first, empty = _all(path, with_masks=True)
    np.testing.assert_array_equal(first["image"], image)  # PNG is lossless
    np.testing.assert_allclose(first["boxes"], boxes, atol=1e-4)
    np.testing.assert_array_equal(first["classes"], [2, 0])
    np.testing.assert_array_equal(first["is_crowd"], [0, 1])
    np.testing.assert_array_equal(first["difficult"], [0, 0])  # absent key reads as 0
    np.testing.assert_array_equal(first["masks"], np.stack(masks))
    assert first["source_id"] == b"first"
    assert empty["boxes"].shape == (0, 4) and empty["masks"].shape == (0, 40, 60)
    assert empty["image"].shape == (40, 60, 3)


def _first_error(path, with_masks=False):
    with pytest.raises(tf.errors.InvalidArgumentError) as caught:
        _all(path, with_masks)
    return str(caught.value)


def test_a_corrupt_image_names_the_record(tmp_path):
    image = np.random.default_rng(0).integers(0, 256, (32, 32, 3), dtype=np.uint8)
    data = encode(image, "JPEG")
    garbled = data[:20] + b"\xff\x00" * 50 + data[120:]
    path = write_tfrecord(tmp_path / "bad.tfrecord", [
        tf_api_example(image, [(1, 1, 9, 9)], [1], fmt="JPEG", source_id="good-record"),
        tf_api_example(image, [(1, 1, 9, 9)], [1], fmt="JPEG", source_id="broken-42", encoded=garbled),
    ])
    message = _first_error(path)
    assert "broken-42" in message and "does not decode" in message
    assert "good-record" not in message


@pytest.mark.parametrize("kwargs, reason", [
    ({"labels": [0]}, "class label is below 1"),
    ({"boxes": [(10, 1, 5, 9)]}, "outside [0, 1] or has no size"),
    ({"masks": None}, "no image/object/mask"),
])
def test_bad_objects_name_the_record_and_reason(tmp_path, kwargs, reason):
    image = np.zeros((16, 16, 3), np.uint8)
    mask = np.zeros((16, 16), np.uint8)
    mask[1:9, 1:9] = 1
    arguments = {"boxes": [(1, 1, 9, 9)], "labels": [1], "masks": [mask], **kwargs}
    path = write_tfrecord(tmp_path / "bad.tfrecord", [
        tf_api_example(image, arguments["boxes"], arguments["labels"], masks=arguments["masks"],
                       source_id="culprit-7")])
    message = _first_error(path, with_masks=True)
    assert "culprit-7" in message and reason in message
