"""``build_dataset``: TFRecords -> batched, model-ready ``(features, groundtruth)``.

Training: files (sharded per worker, shuffled) -> interleaved records ->
[cache] -> repeat -> enumerate -> shuffle -> decode -> augment -> resize ->
pad -> batch (drop remainder) -> prefetch.

Evaluation: records in file order (sorted file names) -> enumerate -> [shard
records per worker] -> decode -> resize -> pad -> batch -> prefetch; one pass,
no augmentation, ``image_id`` the record's index in file order.

Per-element augmentation seeds are ``(seed, element index)``, where the index
counts records in the order they are read, so a deterministic run
(``deterministic=True``: fixed interleave order, ``options.deterministic``)
gives the same batches every time, and another seed gives other batches.
"""

import tensorflow as tf

from tfdet.data import augment as augment_lib
from tfdet.data.reader import decode_records
from tfdet.data.resize import RESIZE_MODES, resize_image, resize_masks, resize_window

# Files read at once by the interleave (more only costs memory).
_MAX_CYCLE_LENGTH = 16


class DataPipelineError(ValueError):
    """Invalid arguments to ``build_dataset`` or input files that cannot feed it."""


def _check_arguments(file_pattern, image_size, resize_mode, batch_size, augmentation, max_instances):
    if not file_pattern:
        raise DataPipelineError("file_pattern is empty: name the TFRecord files (a glob or a list)")
    try:
        height, width = (int(v) for v in image_size)
    except (TypeError, ValueError):
        raise DataPipelineError(
            f"image_size must be (height, width) integers for a static input shape, got {image_size!r}") from None
    if height < 1 or width < 1:
        raise DataPipelineError(f"image_size must be positive, got {image_size!r}")
    if resize_mode not in RESIZE_MODES:
        raise DataPipelineError(f"resize_mode {resize_mode!r}: expected one of {RESIZE_MODES}")
    if int(batch_size) < 1:
        raise DataPipelineError(f"batch_size must be at least 1, got {batch_size}")
    if augmentation not in augment_lib.AUGMENTATIONS:
        raise DataPipelineError(f"augmentation {augmentation!r}: expected one of {augment_lib.AUGMENTATIONS}")
    if int(max_instances) < 1:
        raise DataPipelineError(f"max_instances must be at least 1, got {max_instances}")
    return height, width


def list_files(file_pattern):
    """Sorted file names matching a glob, a comma-separated list of globs, or a list of them."""
    patterns = file_pattern.split(",") if isinstance(file_pattern, str) else list(file_pattern)
    files = sorted({path for pattern in patterns if pattern.strip() for path in tf.io.gfile.glob(pattern.strip())})
    if not files:
        raise DataPipelineError(f"{file_pattern}: no file matches")
    return files


def pad_groundtruth(example, max_instances, with_masks):
    """Pads (or cuts) the objects to ``max_instances`` slots.

    The first ``max_instances`` objects are kept. Padding: boxes 0, classes
    -1, is_crowd/difficult 0, masks 0.
    """
    count = tf.minimum(tf.shape(example["classes"])[0], max_instances)
    extra = max_instances - count

    def pad(values, constant, rank_tail):
        values = values[:max_instances]
        return tf.pad(values, [[0, extra]] + [[0, 0]] * rank_tail, constant_values=constant)

    groundtruth = {
        "boxes": tf.ensure_shape(pad(example["boxes"], 0.0, 1), [max_instances, 4]),
        "classes": tf.ensure_shape(pad(example["classes"], -1, 0), [max_instances]),
        "is_crowd": tf.ensure_shape(pad(example["is_crowd"], 0, 0), [max_instances]),
        "difficult": tf.ensure_shape(pad(example["difficult"], 0, 0), [max_instances]),
    }
    if with_masks:
        masks = pad(example["masks"], tf.constant(0, tf.uint8), 2)
        groundtruth["masks"] = tf.ensure_shape(masks, [max_instances, None, None])
    return groundtruth


def _resize_example(example, image_size, resize_mode, with_masks):
    """Resizes image, masks and boxes to the model input: (example, scale)."""
    example = dict(example)
    example["image"], scale = resize_image(example["image"], image_size, resize_mode)
    if with_masks:
        example["masks"] = resize_masks(example["masks"], image_size, resize_mode)
    example["boxes"] = example["boxes"] * tf.tile(scale, [2])
    return example, scale


def _ssd_example(example, seed, image_size, resize_mode, with_masks):
    """The SSD geometric chain, resampled straight into the model input: (example, scale)."""
    example, window, flip = augment_lib.ssd_window(example, seed)
    example["image"], scale, masks = resize_window(
        example["image"], window, image_size, resize_mode, fill=augment_lib.SSD_MEAN_RGB, flip=flip,
        masks=example["masks"] if with_masks else None)
    if with_masks:
        example["masks"] = masks
    example["boxes"] = example["boxes"] * tf.tile(scale, [2])
    return example, scale


def _prepare(example, *, seed, augmentation, image_size, resize_mode, max_instances, with_masks, training,
             scale_range=None):
    """One decoded example -> (features, groundtruth), model-input sized."""
    element_seed = tf.stack([tf.constant(seed, tf.int64), example["index"]])
    shape = tf.shape(example["image"])
    original_size = tf.stack([shape[0], shape[1]])
    if training and augmentation == "ssd":
        example, scale = _ssd_example(example, element_seed, image_size, resize_mode, with_masks)
    elif training:
        example, jitter_scale = augment_lib.augment_geometry(example, augmentation, element_seed, image_size,
                                                                  scale_range)
        if jitter_scale is None:
            example, scale = _resize_example(example, image_size, resize_mode, with_masks)
        else:  # scale_jitter already produced the model-input size
            scale = jitter_scale
    else:
        example, scale = _resize_example(example, image_size, resize_mode, with_masks)
    image = tf.cast(example["image"], tf.float32)
    if training:
        image = augment_lib.augment_photometric(image, augmentation, element_seed)
    if with_masks:
        example["masks"] = tf.ensure_shape(example["masks"], [None, image_size[0], image_size[1]])
    features = {
        "images": tf.ensure_shape(image, [image_size[0], image_size[1], 3]),
        "image_id": example["index"],
        "original_size": original_size,
        "scale": scale,
    }
    if not training:
        features["source_id"] = example["source_id"]
    return features, pad_groundtruth(example, max_instances, with_masks)


def build_dataset(
    file_pattern,
    *,
    image_size,
    resize_mode,
    batch_size,
    training,
    augmentation="flip",
    max_instances=100,
    with_masks=False,
    input_context=None,
    seed=0,
    deterministic=False,
    cache=False,
    shuffle_buffer=512,
    drop_remainder=None,
    scale_range=None,
):
    """Builds the input pipeline of a detector.

    Args:
      file_pattern: TFRecord files: a glob, comma-separated globs, or a list.
      image_size: ``(H, W)``, the static model input size.
      resize_mode: ``"stretch"`` or ``"letterbox"`` (``detector.resize_mode``).
      batch_size: per-replica (per-worker) batch size.
      training: training (repeat, shuffle, augment, drop remainder) or
        evaluation (one pass in file order, no augmentation).
      augmentation: ``"none"``, ``"flip"``, ``"scale_jitter"``, ``"ssd"`` or
        ``"yolo"`` (training only).
      max_instances: ground-truth slots ``G``; the first ``G`` objects are kept.
      with_masks: decode ``image/object/mask`` and deliver ``masks``.
      input_context: ``tf.distribute.InputContext``; training shards the
        files (``num_input_pipelines`` must not exceed the number of files),
        evaluation shards records after numbering them, so ``image_id`` stays
        the global file-order index.
      seed: seed of the shuffles and of every augmentation draw.
      deterministic: fixed element order (``options.deterministic``), so a
        run is reproducible; otherwise parallel stages may reorder for speed.
      cache: cache the serialised records in memory after the first pass.
      shuffle_buffer: records in the training shuffle buffer.
      drop_remainder: keep static batch shapes; default True for training,
        False for evaluation.
      scale_range: ``(min, max)`` random scales of ``"scale_jitter"``
        (default 0.1..2.0, the EfficientDet paper's).

    Returns:
      ``tf.data.Dataset`` of ``(features, groundtruth)``:
      features ``images`` float32 ``[B, H, W, 3]`` 0..255, ``image_id`` int64
      ``[B]`` (the element index: file order for evaluation), ``original_size``
      int32 ``[B, 2]`` (h, w of the decoded image), ``scale`` float32 ``[B, 2]``
      (sy, sx: source pixels -> model input pixels; with training
      augmentation, pixels of the augmented crop), plus ``source_id`` string
      ``[B]`` for evaluation;
      groundtruth ``boxes`` float32 ``[B, G, 4]`` yxyx model-input pixels,
      ``classes`` int32 ``[B, G]`` 0..K-1 (-1 padding), ``is_crowd`` and
      ``difficult`` int32 ``[B, G]``, and ``masks`` uint8 ``[B, G, H, W]``
      with ``with_masks``.

    Raises:
      DataPipelineError: invalid arguments or no matching files.
    """
    image_size = _check_arguments(file_pattern, image_size, resize_mode, batch_size, augmentation, max_instances)
    files = list_files(file_pattern)
    deterministic = bool(deterministic) or not training
    if drop_remainder is None:
        drop_remainder = bool(training)

    if training:
        records = _training_records(files, input_context, seed, cache, shuffle_buffer, deterministic)
    else:
        records = _eval_records(files, input_context, cache)
    examples = decode_records(records, with_masks=with_masks, deterministic=deterministic)
    # The functions use tf.cond explicitly; skipping AutoGraph's conversion halves the tracing time.
    prepare = tf.autograph.experimental.do_not_convert(lambda example: _prepare(
        example, seed=int(seed), augmentation=augmentation if training else "none", image_size=image_size,
        resize_mode=resize_mode, max_instances=int(max_instances), with_masks=with_masks, training=training,
        scale_range=scale_range))
    dataset = examples.map(prepare, num_parallel_calls=tf.data.AUTOTUNE, deterministic=deterministic)
    dataset = dataset.batch(int(batch_size), drop_remainder=drop_remainder)
    dataset = dataset.prefetch(tf.data.AUTOTUNE)
    options = tf.data.Options()
    options.deterministic = deterministic
    # Workers already read disjoint files (or records); stop tf.distribute from sharding again.
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.OFF
    return dataset.with_options(options)


def _training_records(files, input_context, seed, cache, shuffle_buffer, deterministic):
    """``(index, serialized)`` records: this worker's files, shuffled, forever."""
    file_names = tf.data.Dataset.from_tensor_slices(files)
    if input_context is not None and input_context.num_input_pipelines > 1:
        if len(files) < input_context.num_input_pipelines:
            raise DataPipelineError(
                f"{len(files)} files for {input_context.num_input_pipelines} input pipelines: every worker "
                "needs at least one file; write more shards")
        file_names = file_names.shard(input_context.num_input_pipelines, input_context.input_pipeline_id)
    file_names = file_names.shuffle(len(files), seed=seed, reshuffle_each_iteration=not cache)
    records = file_names.interleave(
        tf.data.TFRecordDataset, cycle_length=min(len(files), _MAX_CYCLE_LENGTH), block_length=1,
        num_parallel_calls=tf.data.AUTOTUNE, deterministic=deterministic)
    if cache:
        records = records.cache()
    records = records.repeat().enumerate()
    if shuffle_buffer and shuffle_buffer > 1:
        records = records.shuffle(int(shuffle_buffer), seed=seed, reshuffle_each_iteration=True)
    return records


def _eval_records(files, input_context, cache):
    """``(index, serialized)`` records in file order, one pass."""
    records = tf.data.TFRecordDataset(files)
    if cache:
        records = records.cache()
    records = records.enumerate()
    if input_context is not None and input_context.num_input_pipelines > 1:
        records = records.shard(input_context.num_input_pipelines, input_context.input_pipeline_id)
    return records
