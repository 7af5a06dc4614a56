"""Drawing a record's boxes and masks onto its image, for a person to look at."""

from __future__ import annotations

import colorsys
import io

import numpy as np
from PIL import Image, ImageDraw

from tfrecord_tools import schema
from tfrecord_tools.masks import decode_png
from tfrecord_tools.reader import feature, scalar


def class_color(label: int) -> tuple[int, int, int]:
    """A stable, well-separated colour per class id (golden-ratio hue steps)."""
    hue = (label * 0.618033988749895) % 1.0
    red, green, blue = colorsys.hsv_to_rgb(hue, 0.85, 1.0)
    return int(red * 255), int(green * 255), int(blue * 255)


def render_example(example: dict) -> Image.Image:
    """The record's image with masks blended in and boxes and class names drawn."""
    with Image.open(io.BytesIO(scalar(example, schema.IMAGE_ENCODED))) as source:
        pixels = np.asarray(source.convert("RGB"), dtype=np.float32)
    height, width = pixels.shape[:2]
    labels = feature(example, schema.OBJECT_CLASS_LABEL, [])
    for label, png in zip(labels, feature(example, schema.OBJECT_MASK, [])):
        mask = decode_png(png)
        if mask.shape == (height, width):
            pixels[mask] = 0.5 * pixels[mask] + 0.5 * np.asarray(class_color(label), np.float32)
    image = Image.fromarray(pixels.clip(0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(image)
    line_width = max(1, round(max(height, width) / 300))
    boxes = zip(*(feature(example, key, []) for key in schema.BOX_KEYS))
    texts = feature(example, schema.OBJECT_CLASS_TEXT, [])
    crowd = feature(example, schema.OBJECT_IS_CROWD, [0] * len(labels))
    for (ymin, xmin, ymax, xmax), label, text, is_crowd in zip(boxes, labels, texts, crowd):
        color = class_color(label)
        corners = [xmin * width, ymin * height, xmax * width, ymax * height]
        draw.rectangle(corners, outline=color, width=line_width)
        caption = text.decode("utf-8", "replace") + (" (crowd)" if is_crowd else "")
        left, top, right, bottom = draw.textbbox((corners[0], corners[1]), caption)
        offset = bottom - top + 2
        draw.rectangle([left, top - offset, right + 2, bottom - offset], fill=color)
        draw.text((corners[0] + 1, corners[1] - offset), caption, fill=(0, 0, 0))
    return image
