"""tfdet.inference: run an exported detector on images, folders and videos.

Importing this package does not import TensorFlow. ``predict`` lives in
``predictor.py``: a submodule named ``predict`` would replace the function of
the same name on the package once imported.

Public API:
  predict(export_dir, inputs, output_dir, threshold=0.3, label_map=None) -> summary dict
  ExportedDetector(export_dir).detect(image_rgb, threshold) -> {"boxes", "scores", "label_ids"}
  draw_detections(image_bgr, boxes, label_ids, scores, names) -> annotated image
"""

import importlib

__all__ = ["ExportedDetector", "draw_detections", "predict"]

_LAZY = {
    "predict": "tfdet.inference.predictor",
    "ExportedDetector": "tfdet.inference.exported",
    "draw_detections": "tfdet.inference.draw",
}


def __getattr__(name):
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'tfdet.inference' has no attribute {name!r}")
