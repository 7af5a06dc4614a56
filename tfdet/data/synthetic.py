"""A synthetic detection dataset: coloured shapes on a plain background.

Each image holds 1-4 filled shapes (circle, square, triangle), each of its own
colour, 15-50 % of the image side, on a plain, slightly noisy background.
Shapes never overlap (placement is retried), so every object's mask is exactly
the pixels drawn for it and its box is tight around those pixels. The records
use the TFRecord contract of ``tfrecord_tools.schema`` and are written with
``tfrecord_tools``' own encoder, sharded writer, label map and manifest, so
``tfrecord-tools verify`` and ``tfdet.data`` read them like converted data.

Box convention: pixel edges. An object whose drawn pixels span rows
``r0..r1`` and columns ``c0..c1`` (inclusive) has the box
``(ymin, xmin, ymax, xmax) = (r0, c0, r1 + 1, c1 + 1)``, stored normalised by
the image size. The mask of the same object therefore has exactly that box.

No TensorFlow is imported: images are drawn with NumPy and encoded by Pillow.
"""

from __future__ import annotations

import hashlib
import io
import os

import numpy as np

from tfrecord_tools import schema
from tfrecord_tools.label_map import LabelMap
from tfrecord_tools.masks import encode_png
from tfrecord_tools.tf_example import BYTES, FLOAT, INT64, encode_example
from tfrecord_tools.tfrecord_io import frame_record
from tfrecord_tools.writer import ShardedWriter, write_json_atomic

SHAPES = ("circle", "square", "triangle")
IMAGE_FORMATS = ("jpeg", "png")

# Well-separated, saturated colours (RGB); each object of an image gets its own.
_PALETTE = np.array([
    (230, 25, 75), (60, 180, 75), (255, 225, 25), (0, 130, 200), (245, 130, 48),
    (145, 30, 180), (70, 240, 240), (240, 50, 230), (0, 0, 128), (128, 0, 0),
], dtype=np.uint8)
_MAX_OBJECTS = 4
_MIN_SIZE, _MAX_SIZE = 0.15, 0.5
_PLACEMENT_TRIES = 30
_BACKGROUND_NOISE = 3.0  # standard deviation, grey levels


class SyntheticDataError(ValueError):
    """Invalid arguments for the synthetic dataset."""


def _draw_shape(shape, top, left, size, height, width):
    """Boolean mask ``[height, width]`` of one filled shape in a size x size cell.

    Pixels are filled when their centre lies inside the shape.
    """
    rows = np.arange(height, dtype=np.float64)[:, None] + 0.5
    cols = np.arange(width, dtype=np.float64)[None, :] + 0.5
    if shape == "square":
        return (rows >= top) & (rows < top + size) & (cols >= left) & (cols < left + size)
    if shape == "circle":
        radius = size / 2.0
        return (rows - (top + radius)) ** 2 + (cols - (left + radius)) ** 2 <= radius ** 2
    # Upright triangle: apex at the top centre, base along the bottom edge of the cell.
    bottom = top + size
    inside_rows = (rows >= top) & (rows < bottom)
    half_width = (rows - top) / size * (size / 2.0)
    centre = left + size / 2.0
    return inside_rows & (np.abs(cols - centre) <= half_width)


def _tight_box(mask):
    """``(ymin, xmin, ymax, xmax)`` pixel edges around the True pixels of ``mask``."""
    rows = np.flatnonzero(mask.any(axis=1))
    cols = np.flatnonzero(mask.any(axis=0))
    return float(rows[0]), float(cols[0]), float(rows[-1] + 1), float(cols[-1] + 1)


def _overlaps(box, boxes, gap=1.0):
    return any(
        box[0] < other[2] + gap and other[0] < box[2] + gap and box[1] < other[3] + gap and other[1] < box[3] + gap
        for other in boxes
    )


def make_image(rng, height, width, classes):
    """Draws one synthetic image.

    Args:
      rng: ``numpy.random.Generator``.
      height, width: image size in pixels.
      classes: shape names (a subset of ``SHAPES``); object ``i`` of class
        ``classes[j]`` gets label ``j + 1``.

    Returns:
      ``(image, objects)``: ``image`` uint8 ``[height, width, 3]`` RGB;
      ``objects`` a list of dicts with ``label`` (1..K), ``name``, ``box``
      (ymin, xmin, ymax, xmax pixel edges) and ``mask`` (bool ``[height, width]``).
    """
    background = rng.integers(90, 200, size=3).astype(np.float64)
    image = background + rng.normal(0.0, _BACKGROUND_NOISE, size=(height, width, 3))
    image = np.clip(np.round(image), 0, 255).astype(np.uint8)
    colours = rng.permutation(len(_PALETTE))
    side = min(height, width)
    objects, boxes = [], []
    for _ in range(int(rng.integers(1, _MAX_OBJECTS + 1))):
        label = int(rng.integers(len(classes))) + 1
        for _ in range(_PLACEMENT_TRIES):
            size = float(rng.uniform(_MIN_SIZE, _MAX_SIZE)) * side
            top = float(rng.uniform(0.0, height - size))
            left = float(rng.uniform(0.0, width - size))
            mask = _draw_shape(classes[label - 1], top, left, size, height, width)
            if not mask.any():
                continue
            box = _tight_box(mask)
            if not _overlaps(box, boxes):
                break
        else:
            continue  # no free place for this object: the image simply has fewer
        image[mask] = _PALETTE[colours[len(objects)]]
        boxes.append(box)
        objects.append({"label": label, "name": classes[label - 1], "box": box, "mask": mask})
    return image, objects


def _encode_image(image, image_format):
    from PIL import Image

    buffer = io.BytesIO()
    if image_format == "jpeg":
        Image.fromarray(image).save(buffer, format="JPEG", quality=95)
    else:
        Image.fromarray(image).save(buffer, format="PNG")
    return buffer.getvalue()


def _example(image, objects, name, image_format, masks):
    """Serialised tf.Example (TFRecord contract keys) of one synthetic image."""
    height, width = image.shape[:2]
    data = _encode_image(image, image_format)
    boxes = [obj["box"] for obj in objects]
    features = {
        schema.IMAGE_ENCODED: (BYTES, [data]),
        schema.IMAGE_FORMAT: (BYTES, [image_format.encode()]),
        schema.IMAGE_FILENAME: (BYTES, [name.encode()]),
        schema.IMAGE_SOURCE_ID: (BYTES, [name.encode()]),
        schema.IMAGE_KEY_SHA256: (BYTES, [hashlib.sha256(data).hexdigest().encode()]),
        schema.IMAGE_HEIGHT: (INT64, [height]),
        schema.IMAGE_WIDTH: (INT64, [width]),
        schema.OBJECT_YMIN: (FLOAT, [box[0] / height for box in boxes]),
        schema.OBJECT_XMIN: (FLOAT, [box[1] / width for box in boxes]),
        schema.OBJECT_YMAX: (FLOAT, [box[2] / height for box in boxes]),
        schema.OBJECT_XMAX: (FLOAT, [box[3] / width for box in boxes]),
        schema.OBJECT_CLASS_LABEL: (INT64, [obj["label"] for obj in objects]),
        schema.OBJECT_CLASS_TEXT: (BYTES, [obj["name"].encode() for obj in objects]),
        schema.OBJECT_IS_CROWD: (INT64, [0] * len(objects)),
        schema.OBJECT_DIFFICULT: (INT64, [0] * len(objects)),
        schema.OBJECT_TRUNCATED: (INT64, [0] * len(objects)),
        schema.OBJECT_AREA: (FLOAT, [float(obj["mask"].sum()) for obj in objects]),
    }
    if masks:
        features[schema.OBJECT_MASK] = (BYTES, [encode_png(obj["mask"].astype(np.uint8)) for obj in objects])
    return frame_record(encode_example(features))


def _check_arguments(num_images, image_size, num_shards, split, classes, image_format):
    if int(num_images) < 1:
        raise SyntheticDataError(f"num_images must be at least 1, got {num_images}")
    if int(num_shards) < 1:
        raise SyntheticDataError(f"num_shards must be at least 1, got {num_shards}")
    if not split or os.sep in split or "-" in split:
        raise SyntheticDataError(f"split must be a plain name without '-' or '{os.sep}', got {split!r}")
    unknown = [name for name in classes if name not in SHAPES]
    if unknown or not classes or len(set(classes)) != len(classes):
        raise SyntheticDataError(f"classes must be distinct names from {SHAPES}, got {tuple(classes)}")
    if image_format not in IMAGE_FORMATS:
        raise SyntheticDataError(f"image_format must be one of {IMAGE_FORMATS}, got {image_format!r}")
    height, width = (image_size, image_size) if np.isscalar(image_size) else tuple(image_size)
    if min(int(height), int(width)) < 16:
        raise SyntheticDataError(f"image_size must be at least 16 pixels, got {image_size}")
    return int(height), int(width)


def write_synthetic_dataset(
    output_dir,
    num_images,
    *,
    image_size=128,
    masks=False,
    seed=0,
    num_shards=2,
    split="train",
    classes=SHAPES,
    image_format="jpeg",
):
    """Writes a synthetic shapes dataset as sharded TFRecords.

    Writes ``SPLIT-0000i-of-0000N.tfrecord`` shards, ``label_map.pbtxt`` (ids
    1..K in the order of ``classes``) and ``SPLIT.manifest.json`` into
    ``output_dir``, all atomically. Image ``i`` depends only on ``(seed, i)``,
    so the same arguments always give the same records.

    Args:
      output_dir: folder to write into (created when missing).
      num_images: number of images (>= 1).
      image_size: side of the square images, or ``(height, width)``.
      masks: also store one image-sized 0/1 PNG mask per object.
      seed: random seed.
      num_shards: number of shards (records go round-robin).
      split: split name, the prefix of shard and manifest names.
      classes: shape names from ``("circle", "square", "triangle")``.
      image_format: ``"jpeg"`` (quality 95) or ``"png"`` (lossless).

    Returns:
      Path of the written manifest.

    Raises:
      SyntheticDataError: invalid arguments.
    """
    classes = tuple(classes)
    height, width = _check_arguments(num_images, image_size, num_shards, split, classes, image_format)
    label_map = LabelMap.from_names(classes)
    counts = {name: 0 for name in classes}
    objects_total = 0
    os.makedirs(output_dir, exist_ok=True)
    with ShardedWriter(output_dir, split, int(num_shards)) as writer:
        for index in range(int(num_images)):
            rng = np.random.default_rng([int(seed), index])
            image, objects = make_image(rng, height, width, classes)
            name = f"{split}_{index:06d}.{'jpg' if image_format == 'jpeg' else 'png'}"
            writer.write(_example(image, objects, name, image_format, masks))
            objects_total += len(objects)
            for obj in objects:
                counts[obj["name"]] += 1
        shards = writer.commit()
    label_map.save(os.path.join(output_dir, schema.LABEL_MAP_NAME))
    manifest = {
        "split": split,
        "format": "synthetic",
        "source": f"tfdet.data.synthetic (seed {int(seed)})",
        "images": int(num_images),
        "objects": objects_total,
        "background_images": 0,
        "classes": counts,
        "label_map": schema.LABEL_MAP_NAME,
        "skipped": [],
        "dropped": {},
        "notes": {},
        "shards": shards,
        "options": {
            "include_masks": bool(masks),
            "image_size": [height, width],
            "image_format": image_format,
            "seed": int(seed),
        },
    }
    path = os.path.join(output_dir, schema.manifest_name(split))
    write_json_atomic(path, manifest)
    return path
