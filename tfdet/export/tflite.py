"""``export_tflite``: the serving graph as a TFLite model of builtin ops only.

The TFLite model has one signature, ``serving_default``, with input
``input_tensor`` of fixed shape ``[1, h, w, 3]`` (uint8, or float32 with
values 0..255) and the SavedModel's outputs (``tfdet.export.serving``):
the same resize (``tfdet.data.resize.resize_image``), detector, fixed-size
NMS and mapping back to normalised boxes of the input image. Converted with
``target_spec.supported_ops = [TFLITE_BUILTINS]``: no Flex (Select TF) ops and
no custom ops, so the stock LiteRT runtime runs it. The NMS loop becomes a
``WHILE``; ``tf.image.non_max_suppression`` is never used.
"""

from __future__ import annotations

import os
import tempfile
from typing import Any, Optional

from tfdet.export.errors import ExportError


def export_tflite(
    source: Any,
    path: str,
    *,
    input_size: Any = None,
    input_dtype: str = "uint8",
    image_size: Any = None,
    max_detections: Optional[int] = None,
    score_threshold: Optional[float] = None,
) -> str:
    """Converts a detector (or a tfdet SavedModel export) to a builtin-ops TFLite file.

    Args:
        source: a built detector, or the directory of a tfdet SavedModel export.
        path: the ``.tflite`` file to write (atomically).
        input_size: int or ``(h, w)`` of the TFLite input image; default the
            model-input size (then the resize is an identity for either mode).
        input_dtype: ``"uint8"`` or ``"float32"`` (values 0..255).
        image_size: model-input size of an any-size detector (see
            ``export_saved_model``); ignored for an export directory, whose size is fixed.
        max_detections, score_threshold: as ``export_saved_model`` (a
            detector source only; an export keeps its own).

    Returns:
        ``path``.

    Raises:
        ExportError: bad arguments, or an op TFLite has no builtin for (named).
    """
    import tensorflow as tf

    from tfdet.export.saved_model import ServingModule, batch_one_serving

    path = os.fspath(path)
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=directory, prefix=".tfdet-tflite-") as scratch:
        with batch_one_serving(source, input_size=input_size, input_dtype=input_dtype, image_size=image_size,
                               max_detections=max_detections, score_threshold=score_threshold) as served:
            detector, function, _ = served
            module = ServingModule(detector, {})
            module.serving_default = function
            saved = os.path.join(scratch, "saved_model")
            tf.saved_model.save(module, saved, signatures={"serving_default": function.get_concrete_function()})
        converter = tf.lite.TFLiteConverter.from_saved_model(saved, signature_keys=["serving_default"])
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
        try:
            flatbuffer = converter.convert()
        except Exception as error:  # ConverterError and friends; their text names the ops
            raise ExportError(f"{path}: TFLite (builtin ops only) cannot convert the detector: "
                              f"{_last_lines(str(error))}") from None
        temporary = os.path.join(scratch, "model.tflite")
        with open(temporary, "wb") as stream:
            stream.write(flatbuffer)
        os.replace(temporary, path)
    return path


def tflite_operators(path: str) -> dict[str, list[str]]:
    """The operator codes a ``.tflite`` file uses, read from its flatbuffer.

    Returns:
        ``{"builtin": [names], "custom": [custom codes]}`` (Flex ops are
        custom codes starting with ``Flex``).
    """
    from tensorflow.lite.python import schema_py_generated as schema

    with open(path, "rb") as stream:
        model = schema.Model.GetRootAsModel(stream.read(), 0)
    names = {value: name for name, value in vars(schema.BuiltinOperator).items() if not name.startswith("_")}
    builtin, custom = set(), set()
    for index in range(model.OperatorCodesLength()):
        code = model.OperatorCodes(index)
        # Codes above 127 live in builtin_code; the deprecated byte field saturates at 127.
        number = max(code.BuiltinCode(), code.DeprecatedBuiltinCode())
        if names.get(number) == "CUSTOM":
            custom.add(code.CustomCode().decode("utf-8"))
        else:
            builtin.add(names.get(number, str(number)))
    return {"builtin": sorted(builtin), "custom": sorted(custom)}


def tflite_interpreter(path: str):
    """A TFLite interpreter: LiteRT's (``ai_edge_litert``) when installed, else ``tf.lite``'s."""
    try:
        from ai_edge_litert.interpreter import Interpreter
    except ImportError:
        import warnings

        import tensorflow as tf

        with warnings.catch_warnings():
            # tf.lite.Interpreter warns that it moves to ai_edge_litert; it still works in TF 2.21.
            warnings.simplefilter("ignore", UserWarning)
            return tf.lite.Interpreter(model_path=path)
    return Interpreter(model_path=path)


def _last_lines(text: str, count: int = 12) -> str:
    return " | ".join(line.strip() for line in text.strip().splitlines()[-count:] if line.strip())


__all__ = ["export_tflite", "tflite_interpreter", "tflite_operators"]
