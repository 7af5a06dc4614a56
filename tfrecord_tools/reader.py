"""Reading tfdet TFRecords without TensorFlow (for inspect, verify, tests)."""

from __future__ import annotations

import glob
import os
from typing import Iterator, Optional

from tfrecord_tools import schema
from tfrecord_tools.label_map import LabelMap, LabelMapError, load as load_label_map
from tfrecord_tools.tf_example import decode_example
from tfrecord_tools.tfrecord_io import read_records


def expand_pattern(pattern: str) -> list[str]:
    """Shard paths matching a glob (or one file), sorted."""
    paths = sorted(glob.glob(pattern)) if any(char in pattern for char in "*?[") else [pattern]
    return [path for path in paths if os.path.isfile(path)]


def find_label_map(paths: list[str]) -> Optional[LabelMap]:
    """The ``label_map.pbtxt`` beside the shards, when there is one."""
    if not paths:
        return None
    candidate = os.path.join(os.path.dirname(paths[0]), schema.LABEL_MAP_NAME)
    try:
        return load_label_map(candidate) if os.path.isfile(candidate) else None
    except LabelMapError:
        return None


def feature(example: dict, key: str, default=None):
    """The value list of a decoded feature (``default`` when absent)."""
    entry = example.get(key)
    return default if entry is None else entry[1]


def scalar(example: dict, key: str, default=None):
    values = feature(example, key)
    return values[0] if values else default


def iterate_examples(paths: list[str]) -> Iterator[tuple[str, int, dict]]:
    """Yields ``(path, index_in_file, decoded_example)`` for every record.

    Raises:
        tfrecord_io.CorruptRecordError, ValueError: bad framing or protobuf.
    """
    for path in paths:
        for index, data in enumerate(read_records(path)):
            yield path, index, decode_example(data)
