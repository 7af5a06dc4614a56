"""tfdet.data: the tf.data input pipeline.

Importing this package does not import TensorFlow; the public functions load
their modules on first use (``import tfdet.data`` stays fast for the CLI).

Public API:
  build_dataset(file_pattern, *, image_size, resize_mode, batch_size, training, ...)
  resize_image(image, target_size, mode) -> (image, scale)
  write_synthetic_dataset(output_dir, num_images, *, ...) -> manifest path
  read_label_map(path) -> tfrecord_tools.label_map.LabelMap
"""

import importlib

__all__ = ["build_dataset", "resize_image", "write_synthetic_dataset", "read_label_map"]

# Public name -> module that defines it; loaded on first attribute access.
_LAZY = {
    "build_dataset": "tfdet.data.pipeline",
    "resize_image": "tfdet.data.resize",
    "write_synthetic_dataset": "tfdet.data.synthetic",
}


def read_label_map(path):
    """Read a label map (pbtxt or json); see ``tfrecord_tools.label_map``."""
    from tfrecord_tools import label_map

    return label_map.load(path)


def __getattr__(name):
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'tfdet.data' has no attribute {name!r}")
