"""Loading official Darknet ``.weights`` files into tfdet's Darknet models.

The ``.weights`` layout (little-endian):

* header: ``major``, ``minor``, ``revision`` as int32, then ``seen`` (images
  seen in training) as int64 when ``major * 10 + minor >= 2`` (and both are
  below 1000, Darknet's own guard), else as int32;
* then, for each ``[convolutional]`` section in cfg order, float32 arrays:
  with batch normalisation ``beta`` (Darknet's "biases"), ``gamma``
  ("scales"), running mean, running variance, each ``[filters]``; without it
  the bias ``[filters]``; then the kernel ``[filters, in_channels, kh, kw]``.
  Other sections (shortcut, route, maxpool, upsample, yolo) have no weights.

How the model's convolutions are found: every ``Conv2D`` named ``conv_{i}``
(searched through nested models too) is the ``i``-th convolution of the cfg,
and a ``BatchNormalization`` named ``bn_{i}`` marks it as batch-normalised;
``tfdet.backbones.darknet`` and ``tfdet.models.yolov3`` name their layers so.
The indices must run ``0 .. n-1`` without gaps.
"""

from __future__ import annotations

import os
import re

import numpy as np

__all__ = ["DarknetWeightsError", "darknet_layers", "load_darknet", "read_header"]

_CONV_NAME = re.compile(r"^conv_(\d+)$")


class DarknetWeightsError(ValueError):
    """A ``.weights`` file does not fit the model (the message names the file)."""


def _walk(model):
    """All layers of ``model``, descending into nested models."""
    for layer in model.layers:
        yield layer
        if hasattr(layer, "layers"):
            yield from _walk(layer)


def darknet_layers(model):
    """The model's convolutions in Darknet cfg order.

    Args:
        model: a Keras model whose convolutions are named ``conv_{i}``.

    Returns:
        A list of ``(conv, bn_or_None)`` pairs, index ``i`` = cfg convolution ``i``.

    Raises:
        ValueError: no ``conv_{i}`` layers, or the indices have gaps/duplicates.
    """
    convs, bns = {}, {}
    for layer in _walk(model):
        match = _CONV_NAME.match(layer.name)
        if match:
            if int(match.group(1)) in convs:
                raise ValueError(f"model {model.name!r} has two layers named {layer.name!r}")
            convs[int(match.group(1))] = layer
        elif layer.name.startswith("bn_"):
            bns[layer.name] = layer
    if not convs:
        raise ValueError(f"model {model.name!r} has no layers named conv_<i>; it is not a Darknet-ordered model")
    if sorted(convs) != list(range(len(convs))):
        raise ValueError(f"model {model.name!r}: conv_<i> indices are not 0..{len(convs) - 1} without gaps")
    return [(convs[i], bns.get(f"bn_{i}")) for i in range(len(convs))]


def read_header(path):
    """The header of a ``.weights`` file.

    Returns:
        ``(major, minor, revision, seen, header_bytes)``.

    Raises:
        DarknetWeightsError: the file is shorter than a header or its version
            numbers are not Darknet's (negative or >= 1000).
    """
    path = os.fspath(path)
    with open(path, "rb") as f:
        head = f.read(20)
    if len(head) < 12:
        raise DarknetWeightsError(f"{path}: {len(head)} bytes is too short for a Darknet .weights header")
    major, minor, revision = (int(v) for v in np.frombuffer(head[:12], dtype="<i4"))
    if not (0 <= major < 1000 and 0 <= minor < 1000 and revision >= 0):
        raise DarknetWeightsError(
            f"{path}: not a Darknet .weights file (header major={major}, minor={minor}, revision={revision})")
    seen_bytes = 8 if major * 10 + minor >= 2 else 4
    if len(head) < 12 + seen_bytes:
        raise DarknetWeightsError(f"{path}: truncated inside the header ({len(head)} bytes)")
    seen = int(np.frombuffer(head[12:12 + seen_bytes], dtype="<i8" if seen_bytes == 8 else "<i4")[0])
    return major, minor, revision, seen, 12 + seen_bytes


def load_darknet(model, path):
    """Reads a Darknet ``.weights`` file into ``model``'s convolutions.

    Args:
        model: a model built by ``tfdet.models.yolov3`` (or any model following
            the ``conv_{i}`` / ``bn_{i}`` naming, see the module docstring),
            built with the same cfg the file was trained with.
        path: the ``.weights`` file.

    Returns:
        ``(major, minor, revision, seen)`` from the header.

    Raises:
        DarknetWeightsError: wrong header, fewer floats than the model needs
            (truncated file or a different cfg), or trailing data (the count
            of extra floats is reported); nothing is assigned in those cases.
    """
    path = os.fspath(path)
    pairs = darknet_layers(model)
    major, minor, revision, seen, offset = read_header(path)
    size = os.path.getsize(path) - offset
    if size % 4:
        raise DarknetWeightsError(f"{path}: {size} bytes after the header is not a whole number of float32 values")
    data = np.fromfile(path, dtype="<f4", offset=offset)

    shapes = []  # per conv: (filters, in_channels, kh, kw, batch_normalized)
    for conv, bn in pairs:
        kh, kw, cin, filters = (int(d) for d in conv.kernel.shape)
        if conv.use_bias == (bn is not None):
            # Darknet convolutions have either a bias or a batch norm, never both or neither.
            raise ValueError(f"model layer {conv.name}: use_bias={conv.use_bias} but batch norm "
                             f"{'present' if bn is not None else 'absent'}")
        shapes.append((filters, cin, kh, kw, bn is not None))
    needed = sum(f * c * h * w + (4 * f if has_bn else f) for f, c, h, w, has_bn in shapes)
    if data.size < needed:
        raise DarknetWeightsError(
            f"{path}: truncated or for a different cfg: the model needs {needed} float32 values after the header, "
            f"the file has {data.size}")
    if data.size > needed:
        raise DarknetWeightsError(
            f"{path}: {data.size - needed} extra float32 values after the {needed} the model needs "
            "(different cfg, or not a file for this model)")

    pos = 0

    def take(count):
        nonlocal pos
        chunk = data[pos:pos + count]
        pos += count
        return chunk

    for (conv, bn), (filters, cin, kh, kw, has_bn) in zip(pairs, shapes):
        if has_bn:
            beta, gamma, mean, var = (take(filters) for _ in range(4))
            # Keras' BatchNormalization weight order: gamma, beta, moving mean, moving variance.
            bn.set_weights([gamma, beta, mean, var])
        else:
            bias = take(filters)
        # Darknet stores OIHW; Keras kernels are HWIO.
        kernel = take(filters * cin * kh * kw).reshape(filters, cin, kh, kw).transpose(2, 3, 1, 0)
        if has_bn:
            conv.set_weights([kernel])
        else:
            conv.set_weights([kernel, bias])
    return major, minor, revision, seen
