"""Reading detection TFRecords into decoded examples.

Parses the tf.Example contract of ``tfrecord_tools.schema`` (the TF Object
Detection API keys), so records written by ``tfrecord-tools``, by
``tfdet.data.synthetic`` and by the TF OD API's own dataset tools all read the
same way. Images (JPEG or PNG) are decoded with ``tf.io.decode_image``;
instance masks, when asked for, are decoded from their PNGs.

One decoded example (unbatched) is a dict:

* ``image``: uint8 ``[h, w, 3]`` RGB.
* ``boxes``: float32 ``[N, 4]`` yxyx, absolute pixels of the decoded image.
* ``classes``: int32 ``[N]``, ``0..K-1`` (record label ids ``1..K`` shifted
  here, the one place of that shift).
* ``is_crowd``, ``difficult``: int32 ``[N]``, 0/1 (0 when the record lacks them).
* ``masks``: uint8 ``[N, h, w]``, 0/1 (only with ``with_masks=True``).
* ``source_id``, ``filename``: string scalars.
* ``index``: int64 scalar, the element index given with the record.

Bad records stop the pipeline with ``tf.errors.InvalidArgumentError`` whose
message names the record (``source_id`` and ``filename``) and the reason: an
image or mask that does not decode, object lists of different lengths, a box
outside the image or of no size, a label below 1, masks asked for but absent,
or a mask of another size than its image. (Errors raised inside a tf.data
graph surface as TensorFlow errors, not Python ``ValueError``s.)
"""

import tensorflow as tf

from tfrecord_tools import schema

# TF OD API writers sometimes store boxes a hair outside [0, 1] (float error
# when normalising); beyond this tolerance a box is refused as wrong.
_BOX_TOLERANCE = 1e-3


def feature_spec(with_masks=False):
    """The ``tf.io.parse_single_example`` spec of the keys the pipeline reads."""
    spec = {
        schema.IMAGE_ENCODED: tf.io.FixedLenFeature([], tf.string),
        schema.IMAGE_SOURCE_ID: tf.io.FixedLenFeature([], tf.string, default_value=""),
        schema.IMAGE_FILENAME: tf.io.FixedLenFeature([], tf.string, default_value=""),
        schema.OBJECT_CLASS_LABEL: tf.io.VarLenFeature(tf.int64),
        schema.OBJECT_IS_CROWD: tf.io.VarLenFeature(tf.int64),
        schema.OBJECT_DIFFICULT: tf.io.VarLenFeature(tf.int64),
    }
    for key in schema.BOX_KEYS:
        spec[key] = tf.io.VarLenFeature(tf.float32)
    if with_masks:
        spec[schema.OBJECT_MASK] = tf.io.VarLenFeature(tf.string)
    return spec


def parse_record(serialized, with_masks=False):
    """Parses one serialised tf.Example; nothing is decoded yet.

    Args:
      serialized: string scalar, one record.
      with_masks: also parse ``image/object/mask`` (PNG bytes per object).

    Returns:
      dict of dense tensors: ``encoded``, ``source_id``, ``filename`` (string
      scalars), ``ymin``/``xmin``/``ymax``/``xmax`` float32 ``[N]`` normalised,
      ``labels``/``is_crowd``/``difficult`` int64 (``[N]``, flags may be
      ``[0]`` when absent) and ``mask_png`` string ``[N]`` with masks.
    """
    parsed = tf.io.parse_single_example(serialized, feature_spec(with_masks))
    dense = {
        name: tf.sparse.to_dense(parsed[key])
        for name, key in (
            ("ymin", schema.OBJECT_YMIN), ("xmin", schema.OBJECT_XMIN),
            ("ymax", schema.OBJECT_YMAX), ("xmax", schema.OBJECT_XMAX),
            ("labels", schema.OBJECT_CLASS_LABEL), ("is_crowd", schema.OBJECT_IS_CROWD),
            ("difficult", schema.OBJECT_DIFFICULT),
        )
    }
    dense["encoded"] = parsed[schema.IMAGE_ENCODED]
    dense["source_id"] = parsed[schema.IMAGE_SOURCE_ID]
    dense["filename"] = parsed[schema.IMAGE_FILENAME]
    if with_masks:
        dense["mask_png"] = tf.sparse.to_dense(parsed[schema.OBJECT_MASK], default_value="")
    return dense


def _decode_pixels(encoded, mask_png):
    """Decodes the image and (when given) the masks; any failure raises."""
    image = tf.io.decode_image(encoded, channels=3, expand_animations=False)
    if mask_png is None:
        return image, tf.zeros([0, 0, 0], tf.uint8)

    def decode_masks():
        masks = tf.map_fn(
            lambda png: tf.io.decode_png(png, channels=1)[..., 0],
            mask_png,
            fn_output_signature=tf.TensorSpec([None, None], tf.uint8),
        )
        # Writers store 0/1 (TF OD API) or 0/255; both mean "inside" when > 0.
        return tf.cast(masks > 0, tf.uint8)

    masks = tf.cond(
        tf.size(mask_png) > 0, decode_masks, lambda: tf.zeros([0, 0, 0], tf.uint8)
    )
    return image, masks


def _decode_or_flag(parsed, with_masks):
    """Decodes the pixels; returns ``(image, masks, True)``, or empties and False on failure.

    TensorFlow graphs cannot catch an error, but ``ignore_errors`` drops the
    element whose decode failed; the sentinel that follows then comes first,
    so a corrupt image becomes a flag that ``_build_example`` reports with the
    record's name instead of a nameless libjpeg error. (Measured on 2 cores:
    about 0.25 ms per image over a bare decode.)
    """
    mask_png = parsed["mask_png"] if with_masks else tf.constant("")
    decoded = tf.data.Dataset.from_tensors((parsed["encoded"], mask_png)).map(
        tf.autograph.experimental.do_not_convert(
            lambda encoded, png: (*_decode_pixels(encoded, png if with_masks else None), True))
    ).ignore_errors()
    failed = tf.data.Dataset.from_tensors(
        (tf.zeros([0, 0, 3], tf.uint8), tf.zeros([0, 0, 0], tf.uint8), False)
    )
    return decoded.concatenate(failed).take(1).get_single_element()


def _record_assert(condition, parsed, reason):
    """An assertion whose failure message names the record and the reason."""
    return tf.debugging.Assert(
        condition,
        ["tfdet.data: bad record: source_id", parsed["source_id"], "filename", parsed["filename"], reason],
    )


def _flag(values, count):
    """A per-object 0/1 flag list; records without the key read as all 0."""
    return tf.cond(
        tf.size(values) == 0,
        lambda: tf.zeros([count], tf.int32),
        lambda: tf.cast(values, tf.int32),
    )


def _build_example(parsed, image, masks, decoded_ok, index, with_masks):
    """Checks one record's objects and turns them into the example dict."""
    count = tf.size(parsed["labels"])
    height, width = tf.shape(image)[0], tf.shape(image)[1]
    sizes_match = tf.reduce_all(tf.stack(
        [tf.size(parsed[name]) == count for name in ("ymin", "xmin", "ymax", "xmax")]
        + [tf.logical_or(tf.size(parsed[name]) == 0, tf.size(parsed[name]) == count)
           for name in ("is_crowd", "difficult")]
    ))
    checks = [
        _record_assert(decoded_ok, parsed, "image (or a mask PNG) does not decode: corrupt or not JPEG/PNG"),
        _record_assert(sizes_match, parsed, "object lists (bbox/label/is_crowd/difficult) differ in length"),
    ]
    with tf.control_dependencies(checks):
        normalised = tf.stack([parsed["ymin"], parsed["xmin"], parsed["ymax"], parsed["xmax"]], axis=-1)
        normalised = tf.reshape(normalised, [count, 4])
    box_ok = tf.reduce_all(
        (normalised >= -_BOX_TOLERANCE) & (normalised <= 1.0 + _BOX_TOLERANCE)
    ) & tf.reduce_all(normalised[:, 2:] > normalised[:, :2])
    label_ok = tf.reduce_all(parsed["labels"] >= 1)
    checks = [
        _record_assert(box_ok, parsed, "a box lies outside [0, 1] or has no size"),
        _record_assert(label_ok, parsed, "a class label is below 1 (label-map ids start at 1)"),
    ]
    if with_masks:
        mask_count_ok = tf.size(parsed["mask_png"]) == count
        checks.append(_record_assert(mask_count_ok, parsed, "masks were requested but the record has "
                                     "no image/object/mask PNG for every object"))
        mask_shape = tf.shape(masks)
        mask_size_ok = tf.logical_or(
            count == 0, tf.logical_and(mask_shape[1] == height, mask_shape[2] == width))
        checks.append(_record_assert(mask_size_ok, parsed, "a mask is not the size of its image"))
    with tf.control_dependencies(checks):
        size = tf.cast(tf.stack([height, width, height, width]), tf.float32)
        example = {
            "image": tf.identity(image),
            "boxes": tf.clip_by_value(normalised, 0.0, 1.0) * size,
            # Label-map ids 1..K -> model classes 0..K-1: the one place of this shift.
            "classes": tf.cast(parsed["labels"], tf.int32) - 1,
            "is_crowd": _flag(parsed["is_crowd"], count),
            "difficult": _flag(parsed["difficult"], count),
            "source_id": parsed["source_id"],
            "filename": parsed["filename"],
            "index": tf.cast(index, tf.int64),
        }
        if with_masks:
            example["masks"] = tf.reshape(masks, [count, height, width])
    return example


def decode_records(records, *, with_masks=False, deterministic=True):
    """Turns ``(index, serialized)`` pairs into decoded examples.

    Args:
      records: ``tf.data.Dataset`` of ``(int64 index, string serialized)``.
      with_masks: decode ``image/object/mask`` too (an error when absent).
      deterministic: keep the input order (parallel decoding either way).

    Returns:
      ``tf.data.Dataset`` of example dicts (see the module docstring).
    """
    # Plain tf.* code (tf.cond where it branches): AutoGraph's conversion is skipped, tracing is faster.
    def decode(index, serialized):
        record = parse_record(serialized, with_masks)
        image, masks, ok = _decode_or_flag(record, with_masks)
        return _build_example(record, image, masks, ok, index, with_masks)

    return records.map(tf.autograph.experimental.do_not_convert(decode),
                       num_parallel_calls=tf.data.AUTOTUNE, deterministic=deterministic)


def read_examples(file_pattern, *, with_masks=False):
    """All records of the files matching ``file_pattern``, in file order, decoded.

    A convenience for tests and tools: files sorted by name, records in file
    order, ``index`` counting from 0.
    """
    files = sorted(tf.io.gfile.glob(file_pattern))
    if not files:
        raise FileNotFoundError(f"{file_pattern}: no file matches")
    records = tf.data.TFRecordDataset(files).enumerate()
    return decode_records(records, with_masks=with_masks, deterministic=True)
