"""What ``tfdet predict`` reads: images, a folder of images, or a video.

A path that does not exist is an error (``InputError``). Inside a folder,
files that are not images by extension are skipped and reported, never
silently dropped; unreadable images are found when they are decoded.
"""

from __future__ import annotations

import os
import re
from typing import Sequence, Union

import numpy as np

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp")
VIDEO_EXTENSIONS = (".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg", ".wmv")


class InputError(ValueError):
    """An input that cannot be used at all (missing path, a video mixed with images)."""


class UnreadableImage(ValueError):
    """An image file that cannot be decoded (the message says why)."""


def is_video(path: str) -> bool:
    return os.path.splitext(path)[1].lower() in VIDEO_EXTENSIONS


def collect_inputs(inputs: Union[str, os.PathLike, Sequence]) -> tuple[str, list[str], list[dict]]:
    """Sorts the inputs into images or one video.

    Args:
        inputs: an image, a folder of images, a video, or a list of images.

    Returns:
        ``(kind, paths, skipped)``: kind ``"images"`` or ``"video"``;
        ``skipped`` lists ``{"file", "reason"}`` for folder entries that are
        not images.

    Raises:
        InputError: a missing path, nothing given, or a video among other inputs.
    """
    paths = [os.fspath(inputs)] if isinstance(inputs, (str, os.PathLike)) else [os.fspath(p) for p in inputs]
    if not paths:
        raise InputError("no input given")
    for path in paths:
        if not os.path.exists(path):
            raise InputError(f"{path}: no such file or directory")
    videos = [path for path in paths if os.path.isfile(path) and is_video(path)]
    if videos:
        if len(paths) > 1:
            raise InputError(f"{videos[0]}: a video must be the only input")
        return "video", videos, []
    images, skipped = [], []
    for path in paths:
        if not os.path.isdir(path):
            images.append(path)
            continue
        for name in sorted(os.listdir(path)):
            full = os.path.join(path, name)
            if name.startswith(".") or not os.path.isfile(full):
                continue
            if os.path.splitext(name)[1].lower() in IMAGE_EXTENSIONS:
                images.append(full)
            else:
                skipped.append({"file": full, "reason": "not an image (by its extension)"})
    return "images", images, skipped


def read_image(path: str) -> np.ndarray:
    """Decodes an image file as TensorFlow's serving graph would: RGB ``uint8 [h, w, 3]``.

    ``tf.io.decode_image(channels=3, expand_animations=False)``, the decoder of
    the ``encoded_image_string_tensor`` signature, so results match serving
    the file's bytes.

    Raises:
        UnreadableImage: unreadable file, unknown format or corrupt data.
    """
    import tensorflow as tf

    try:
        with open(path, "rb") as stream:
            data = stream.read()
    except OSError as error:
        raise UnreadableImage(f"cannot read the file ({error.strerror})") from None
    if not data:
        raise UnreadableImage("empty file")
    try:
        image = tf.io.decode_image(data, channels=3, expand_animations=False)
    except (tf.errors.InvalidArgumentError, tf.errors.UnknownError) as error:
        raise UnreadableImage(f"not a decodable image ({_op_message(error)})") from None
    return image.numpy()


def _op_message(error) -> str:
    """TensorFlow's reason without its ``{{function_node ...}}`` prefix and ``[Op:...]`` suffix."""
    text = (error.message or type(error).__name__).splitlines()[0]
    text = re.sub(r"\{\{function_node [^}]*\}\}\s*", "", text)
    return re.sub(r"\s*\[Op:\w+\]\s*$", "", text).strip()
