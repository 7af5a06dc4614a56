"""``tfrecord-tools verify``: decode everything, report every problem."""

from __future__ import annotations

import hashlib
import json
import os

from tfrecord_tools import schema
from tfrecord_tools.images import InvalidImageError, inspect_image
from tfrecord_tools.masks import decode_png
from tfrecord_tools.reader import expand_pattern, feature, find_label_map, scalar
from tfrecord_tools.tf_example import decode_example
from tfrecord_tools.tfrecord_io import CorruptRecordError, read_records


def check_example(example: dict, label_map=None) -> list[str]:
    """Everything that is wrong with one decoded example (empty when sound)."""
    problems = []
    missing = [key for key in schema.REQUIRED_IMAGE_KEYS if not feature(example, key)]
    if missing:
        return [f"missing {', '.join(missing)}"]
    data = scalar(example, schema.IMAGE_ENCODED)
    stated_format = scalar(example, schema.IMAGE_FORMAT).decode("utf-8", "replace")
    height, width = scalar(example, schema.IMAGE_HEIGHT), scalar(example, schema.IMAGE_WIDTH)
    if hashlib.sha256(data).hexdigest() != scalar(example, schema.IMAGE_KEY_SHA256).decode("ascii", "replace"):
        problems.append("image/key/sha256 does not match image/encoded")
    try:
        info = inspect_image(data)
        if info.format != stated_format:
            problems.append(f"image/format says {stated_format!r} but the bytes are {info.format}")
        if (info.width, info.height) != (width, height):
            problems.append(f"image is {info.width}x{info.height} but the record says {width}x{height}")
    except InvalidImageError as error:
        problems.append(f"image does not decode: {error}")

    lengths = {key: len(feature(example, key, [])) for key in schema.REQUIRED_OBJECT_KEYS}
    for key in (*schema.OBJECT_FLOAT_KEYS, *schema.OBJECT_INT_KEYS, *schema.OBJECT_BYTES_KEYS):
        if key in example:
            lengths[key] = len(feature(example, key))
    if len(set(lengths.values())) > 1:
        problems.append("object lists differ in length: " + ", ".join(f"{k}={v}" for k, v in sorted(lengths.items())))
        return problems
    ymin, xmin, ymax, xmax = (feature(example, key, []) for key in schema.BOX_KEYS)
    for index, box in enumerate(zip(ymin, xmin, ymax, xmax)):
        if not all(0.0 <= value <= 1.0 for value in box) or box[0] >= box[2] or box[1] >= box[3]:
            problems.append(f"object {index}: box (ymin, xmin, ymax, xmax)={tuple(round(v, 4) for v in box)} is not inside [0, 1] with positive size")
    labels = feature(example, schema.OBJECT_CLASS_LABEL, [])
    texts = feature(example, schema.OBJECT_CLASS_TEXT, [])
    for index, (label, text) in enumerate(zip(labels, texts)):
        if label < 1:
            problems.append(f"object {index}: class label {label} (labels start at 1)")
        elif label_map is not None:
            name = label_map.name_of(label)
            if name is None:
                problems.append(f"object {index}: class label {label} is not in the label map")
            elif name != text.decode("utf-8", "replace"):
                problems.append(f"object {index}: label {label} is {name!r} in the label map but the text says {text!r}")
    for index, png in enumerate(feature(example, schema.OBJECT_MASK, [])):
        try:
            mask = decode_png(png)
        except Exception as error:  # Pillow raises several types for bad PNGs
            problems.append(f"object {index}: mask PNG does not decode ({error})")
            continue
        if mask.shape != (height, width):
            problems.append(f"object {index}: mask is {mask.shape[1]}x{mask.shape[0]}, image is {width}x{height}")
    return problems


def verify(pattern: str, progress: bool = True) -> tuple[int, list[str]]:
    """Reads every shard matching ``pattern``; returns (records, problems).

    Each problem is one line naming the shard, the record index and, where
    known, the image's file name.
    """
    from tqdm import tqdm

    paths = expand_pattern(pattern)
    if not paths:
        return 0, [f"{pattern}: no file matches"]
    label_map = find_label_map(paths)
    problems, total = [], 0
    with tqdm(paths, unit="shard", disable=not progress, desc="verify") as bar:
        for path in bar:
            count = 0
            try:
                for index, data in enumerate(read_records(path)):
                    count += 1
                    try:
                        example = decode_example(data)
                    except ValueError as error:
                        problems.append(f"{path} record {index}: not a tf.Example ({error})")
                        continue
                    filename = scalar(example, schema.IMAGE_FILENAME, b"?").decode("utf-8", "replace")
                    problems.extend(f"{path} record {index} ({filename}): {problem}" for problem in check_example(example, label_map))
            except CorruptRecordError as error:
                problems.append(f"{path}: {error}")
            total += count
            problems.extend(_check_manifest_count(path, count))
    return total, problems


def _check_manifest_count(path: str, count: int) -> list[str]:
    """Compares a shard's record count with its manifest entry, when there is a manifest."""
    name = os.path.basename(path)
    split = name.rsplit("-", 3)[0] if name.count("-") >= 3 else None
    manifest_path = os.path.join(os.path.dirname(path), schema.manifest_name(split)) if split else None
    if not manifest_path or not os.path.isfile(manifest_path):
        return []
    try:
        with open(manifest_path, encoding="utf-8") as stream:
            shards = {entry["file"]: entry["records"] for entry in json.load(stream).get("shards", [])}
    except (OSError, ValueError, KeyError, TypeError):
        return [f"{manifest_path}: manifest does not parse"]
    if name in shards and shards[name] != count:
        return [f"{path}: {count} records but the manifest says {shards[name]}"]
    return []
