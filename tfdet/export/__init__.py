"""tfdet.export: SavedModel (TF OD API serving signatures), TFLite and ONNX.

Importing this package does not import TensorFlow; the functions load their
modules on first use.

Public API:
  export_saved_model(detector, export_dir, *, label_map, config, max_detections, score_threshold, ...) -> path
  export_tflite(detector_or_export_dir, path, *, input_size, input_dtype, ...) -> path
  export_onnx(detector_or_export_dir, path, *, input_size, input_dtype, opset, ...) -> path
  ExportError
"""

import importlib

__all__ = ["ExportError", "export_onnx", "export_saved_model", "export_tflite"]

_LAZY = {
    "ExportError": "tfdet.export.errors",
    "export_saved_model": "tfdet.export.saved_model",
    "export_tflite": "tfdet.export.tflite",
    "export_onnx": "tfdet.export.onnx",
}


def __getattr__(name):
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'tfdet.export' has no attribute {name!r}")
