"""Atomic file writes in the model directory, through ``tf.io.gfile``.

The model directory may be local or a bucket (``gs://`` on TPU), so every
file the trainer writes goes through ``tf.io.gfile``: written under a
temporary name beside the target, then renamed over it, so a reader (or a
resumed run) never sees a half-written ``metrics.json`` or PNG.
"""

from __future__ import annotations

import json
import math
import os
import uuid

import tensorflow as tf


def is_remote(path: str) -> bool:
    """Whether ``path`` names an object store (``gs://``, ``s3://``, ...) rather than a local file."""
    return "://" in str(path)


def join(*parts: str) -> str:
    """``os.path.join`` that keeps ``gs://bucket/...`` paths intact."""
    return os.path.join(*[str(p) for p in parts])


def write_bytes_atomic(path: str, data: bytes) -> str:
    """Writes ``data`` to ``path`` via a temporary name and a rename; returns ``path``."""
    directory = os.path.dirname(str(path))
    if directory:
        tf.io.gfile.makedirs(directory)
    temporary = f"{path}.tmp-{uuid.uuid4().hex[:8]}"
    with tf.io.gfile.GFile(temporary, "wb") as handle:
        handle.write(data)
    tf.io.gfile.rename(temporary, str(path), overwrite=True)
    return str(path)


def _finite(value):
    # JSON has no NaN/Inf: an undefined metric (e.g. mAP without ground truth) is written as null.
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {key: _finite(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(item) for item in value]
    return value


def write_json_atomic(path: str, payload) -> str:
    """Writes ``payload`` as indented JSON (non-finite floats as ``null``), atomically."""
    text = json.dumps(_finite(payload), indent=2, sort_keys=True, allow_nan=False) + "\n"
    return write_bytes_atomic(path, text.encode("utf-8"))


def read_json(path: str, default=None):
    """The JSON content of ``path``, or ``default`` when it does not exist."""
    if not tf.io.gfile.exists(str(path)):
        return default
    with tf.io.gfile.GFile(str(path), "r") as handle:
        return json.load(handle)
