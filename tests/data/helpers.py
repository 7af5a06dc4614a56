"""Builders for tests/data: TF OD API style records made with TensorFlow's own API."""

from __future__ import annotations

import io

import numpy as np
from PIL import Image

from tfrecord_tools import schema


def encode(image: np.ndarray, fmt: str = "PNG") -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format=fmt)
    return buffer.getvalue()


def mask_bbox(mask: np.ndarray):
    """(ymin, xmin, ymax, xmax) pixel edges around the nonzero pixels; None when empty."""
    rows = np.flatnonzero(mask.any(axis=1))
    cols = np.flatnonzero(mask.any(axis=0))
    if rows.size == 0:
        return None
    return (rows[0], cols[0], rows[-1] + 1, cols[-1] + 1)


def tf_api_example(image: np.ndarray, boxes_px, labels, *, fmt="PNG", source_id="rec", masks=None,
                   is_crowd=None, difficult=None, encoded=None):
    """A serialised tf.train.Example written with TensorFlow's own proto API (TF OD API keys).

    boxes_px: (ymin, xmin, ymax, xmax) in pixels; masks: list of 0/1 uint8 arrays.
    """
    import tensorflow as tf

    height, width = image.shape[:2]
    boxes = np.asarray(boxes_px, np.float32).reshape(-1, 4)

    def floats(values):
        return tf.train.Feature(float_list=tf.train.FloatList(value=list(map(float, values))))

    def ints(values):
        return tf.train.Feature(int64_list=tf.train.Int64List(value=list(map(int, values))))

    def strings(values):
        return tf.train.Feature(bytes_list=tf.train.BytesList(value=list(values)))

    data = encoded if encoded is not None else encode(image, fmt)
    feature = {
        schema.IMAGE_ENCODED: strings([data]),
        schema.IMAGE_FORMAT: strings([fmt.lower().encode()]),
        schema.IMAGE_SOURCE_ID: strings([source_id.encode()]),
        schema.IMAGE_FILENAME: strings([(source_id + "." + fmt.lower()).encode()]),
        schema.IMAGE_HEIGHT: ints([height]),
        schema.IMAGE_WIDTH: ints([width]),
        schema.OBJECT_YMIN: floats(boxes[:, 0] / height),
        schema.OBJECT_XMIN: floats(boxes[:, 1] / width),
        schema.OBJECT_YMAX: floats(boxes[:, 2] / height),
        schema.OBJECT_XMAX: floats(boxes[:, 3] / width),
        schema.OBJECT_CLASS_LABEL: ints(labels),
        schema.OBJECT_CLASS_TEXT: strings([f"class{label}".encode() for label in labels]),
    }
    if is_crowd is not None:
        feature[schema.OBJECT_IS_CROWD] = ints(is_crowd)
    if difficult is not None:
        feature[schema.OBJECT_DIFFICULT] = ints(difficult)
    if masks is not None:
        feature[schema.OBJECT_MASK] = strings([encode(np.asarray(m, np.uint8)) for m in masks])
    return tf.train.Example(features=tf.train.Features(feature=feature)).SerializeToString()


def write_tfrecord(path, serialized_examples) -> str:
    import tensorflow as tf

    with tf.io.TFRecordWriter(str(path)) as writer:
        for example in serialized_examples:
            writer.write(example)
    return str(path)
