"""``export_onnx``: the serving graph as an ONNX model, through tf2onnx.

Optional: needs ``tf2onnx`` (and ``onnxruntime`` to run the result), the
``onnx`` extra (``pip install "tfdet[onnx]"``). Measured with tf2onnx 1.17.0,
onnx 1.23, onnxruntime 1.32, TensorFlow 2.21 and NumPy 2.4: conversion and
inference work, outputs equal the SavedModel's to ~1e-7.

Like the TFLite export, the ONNX model takes ``input_tensor`` of fixed shape
``[1, h, w, 3]`` (uint8 or float32 0..255) and returns the SavedModel's
outputs. The graph is traced from the detector at a static batch of one:
a SavedModel's dynamic-batch ``tf.map_fn`` becomes an ONNX ``Loop`` that
onnxruntime 1.32 rejects ("Tensor element type mismatch. 7 != 6" in the
map's loop), so an export directory is first rebuilt into its detector
(``tfdet.export.sources.detector_from_export``).
"""

from __future__ import annotations

import os
from typing import Any, Optional

from tfdet.export.errors import ExportError

DEFAULT_OPSET = 17
INSTALL_HINT = 'pip install "tf2onnx>=1.17" "onnxruntime>=1.17" (the tfdet "onnx" extra)'


def onnx_available() -> bool:
    """Whether tf2onnx imports (a missing or broken install gives False)."""
    try:
        import tf2onnx  # noqa: F401
    except Exception:  # tf2onnx raises more than ImportError when its pins do not fit
        return False
    return True


def export_onnx(
    source: Any,
    path: str,
    *,
    input_size: Any = None,
    input_dtype: str = "uint8",
    image_size: Any = None,
    max_detections: Optional[int] = None,
    score_threshold: Optional[float] = None,
    opset: int = DEFAULT_OPSET,
) -> str:
    """Converts a detector (or a tfdet SavedModel export) to ONNX.

    Args:
        source: a built detector, or the directory of a tfdet SavedModel export.
        path: the ``.onnx`` file to write (atomically).
        input_size, input_dtype, image_size, max_detections, score_threshold:
            as ``tfdet.export.tflite.export_tflite``.
        opset: the ONNX opset.

    Returns:
        ``path``.

    Raises:
        ExportError: tf2onnx is not installed or fails (its reason quoted).
    """
    try:
        import tf2onnx
    except Exception as error:
        raise ExportError(f"ONNX export needs tf2onnx, which cannot be imported ({error}); {INSTALL_HINT}") from None
    from tfdet.export.saved_model import batch_one_serving

    with batch_one_serving(source, input_size=input_size, input_dtype=input_dtype, image_size=image_size,
                           max_detections=max_detections, score_threshold=score_threshold) as served:
        _, function, spec = served
        try:
            model, _ = tf2onnx.convert.from_function(function, input_signature=[spec], opset=int(opset))
        except Exception as error:  # tf2onnx raises plain exceptions naming the op
            raise ExportError(f"{path}: tf2onnx {tf2onnx.__version__} cannot convert the detector: "
                              f"{type(error).__name__}: {error}") from None
    path = os.fspath(path)
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    temporary = os.path.join(directory, f".{os.path.basename(path)}.tmp-{os.getpid()}")
    try:
        with open(temporary, "wb") as stream:
            stream.write(model.SerializeToString())
        os.replace(temporary, path)
    finally:
        if os.path.exists(temporary):
            os.remove(temporary)
    return path
