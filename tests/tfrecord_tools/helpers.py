"""Small builders for planted test inputs, and a record reader for assertions."""

from __future__ import annotations

import glob
import io
import os

import numpy as np
from PIL import Image

from tfrecord_tools import schema
from tfrecord_tools.reader import iterate_examples


def image_bytes(width: int = 64, height: int = 48, fmt: str = "JPEG", seed: int = 0, mode: str = "RGB") -> bytes:
    """A small real image with some texture (so JPEG truncation is detectable)."""
    rng = np.random.default_rng(seed)
    channels = {"RGB": 3, "L": 1, "CMYK": 4}[mode]
    pixels = rng.integers(0, 256, size=(height, width, channels), dtype=np.uint8)
    image = Image.fromarray(pixels[..., 0] if channels == 1 else pixels, mode=None if channels != 4 else "CMYK")
    buffer = io.BytesIO()
    image.save(buffer, format=fmt)
    return buffer.getvalue()


def write(path, data) -> str:
    path = str(path)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb" if isinstance(data, bytes) else "w") as stream:
        stream.write(data)
    return path


def voc_xml(filename: str, width: int, height: int, objects, extra: str = "") -> str:
    """A VOC annotation; objects are (name, xmin, ymin, xmax, ymax[, difficult])."""
    parts = [f"<annotation>{extra}<filename>{filename}</filename>",
             f"<size><width>{width}</width><height>{height}</height><depth>3</depth></size>"]
    for entry in objects:
        name, xmin, ymin, xmax, ymax = entry[:5]
        difficult = entry[5] if len(entry) > 5 else 0
        parts.append(f"<object><name>{name}</name><difficult>{difficult}</difficult><bndbox><xmin>{xmin}</xmin>"
                     f"<ymin>{ymin}</ymin><xmax>{xmax}</xmax><ymax>{ymax}</ymax></bndbox></object>")
    parts.append("</annotation>")
    return "".join(parts)


def read_split(output_dir, split: str = "train") -> list[dict]:
    """All decoded examples of a split, in shard then record order."""
    paths = sorted(glob.glob(os.path.join(str(output_dir), f"{split}-*-of-*.tfrecord")))
    return [example for _, _, example in iterate_examples(paths)]


def values(example: dict, key: str):
    entry = example.get(key)
    return [] if entry is None else entry[1]


def by_filename(examples: list[dict]) -> dict:
    return {values(example, schema.IMAGE_FILENAME)[0].decode(): example for example in examples}
