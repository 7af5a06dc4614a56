"""``export_saved_model``: a detector as a TF OD API compatible SavedModel.

The SavedModel holds the detector's variables as they are (after training
with EMA, the trainer has already swapped the averaged weights in) and three
signatures, each taking ``input_tensor``:

* ``serving_default``: uint8 ``[N, H, W, 3]`` RGB, any ``N``, ``H``, ``W``;
* ``encoded_image_string_tensor``: string ``[N]`` JPEG/PNG bytes;
* ``tf_example``: string ``[N]`` serialized tf.Example (``image/encoded``).

They return the outputs described in ``tfdet.export.serving``. The export
loads in a process that never imported tfdet (``tf.saved_model.load``, TF
Serving, ``saved_model_cli``): the graph is plain TensorFlow, and the
detector's NMS is fixed-size ``keras.ops`` code, not ``NonMaxSuppressionV5``.

``assets/tfdet_config.json`` and ``assets/label_map.pbtxt`` travel inside
(see ``tfdet.export.metadata``). The directory is written under a temporary
name beside the target and renamed into place, so a failed export leaves
nothing at ``export_dir``.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
import uuid
from typing import Any, Optional

import tensorflow as tf

from tfdet.export.errors import ExportError
from tfdet.export.metadata import (
    CONFIG_ASSET,
    LABEL_MAP_ASSET,
    export_metadata,
    resize_mode_of,
    resolve_label_map,
    serving_image_size,
)
from tfdet.export.serving import INPUT_KEY, MASK_KEY, OUTPUT_KEYS, DetectionServing, detection_settings


class ServingModule(tf.Module):
    """The tracked object that is saved: the detector's variables and the assets.

    The variables are tracked as the ``tf.Variable`` s inside the Keras
    variables (``variable.value``), in ``detector.variables`` order. Tracking
    the Keras model or its Keras variables instead makes Keras write a second
    copy of every variable (``Variable_N``, its ``_export_to_saved_model_graph``)
    which the object graph restores while the functions read the first: TF2's
    ``tf.saved_model.load`` copes, but session-based loaders (``saved_model_cli
    run``, TF Serving) fail with "Could not find variable ...".
    """

    def __init__(self, detector, assets: dict):
        super().__init__(name="tfdet_serving")
        self.model_variables = [variable.value for variable in detector.variables]
        self.assets = {name: tf.saved_model.Asset(path) for name, path in assets.items()}


def serving_functions(serving: DetectionServing, batch_size: Optional[int] = None,
                      image_shape: Optional[tuple] = None, image_dtype=tf.uint8) -> dict:
    """The three ``tf.function`` s with their input signatures.

    Args:
        serving: the serving graph builder.
        batch_size: static ``N`` or None (any).
        image_shape: static ``(h, w)`` of ``serving_default``'s images, or None (any).
        image_dtype: ``serving_default``'s input dtype (uint8, or float32 values 0..255).

    Returns:
        ``{signature name: tf.function}``.
    """
    if batch_size is None:
        serving.share_detection_graph()
    height, width = image_shape or (None, None)
    images_spec = tf.TensorSpec([batch_size, height, width, 3], image_dtype, name=INPUT_KEY)
    strings_spec = tf.TensorSpec([batch_size], tf.string, name=INPUT_KEY)

    @tf.function(input_signature=[images_spec])
    def serving_default(input_tensor):
        return serving.from_images(input_tensor)

    @tf.function(input_signature=[strings_spec])
    def encoded_image_string_tensor(input_tensor):
        return serving.from_encoded(input_tensor)

    @tf.function(input_signature=[strings_spec])
    def tf_example(input_tensor):
        return serving.from_tf_examples(input_tensor)

    return {
        "serving_default": serving_default,
        "encoded_image_string_tensor": encoded_image_string_tensor,
        "tf_example": tf_example,
    }


@contextlib.contextmanager
def batch_one_serving(source: Any, *, input_size: Any = None, input_dtype: str = "uint8", image_size: Any = None,
                      max_detections: Optional[int] = None, score_threshold: Optional[float] = None):
    """``serving_default`` at batch 1 and a fixed image size: what the converters (TFLite, ONNX) trace.

    Args:
        source: a built detector, or the directory of a tfdet SavedModel export
            (rebuilt from its config and variables; it keeps its own NMS settings).
        input_size: int or ``(h, w)`` of the input image; default the model-input size.
        input_dtype: ``"uint8"`` or ``"float32"`` (values 0..255).
        image_size: model-input size of an any-size detector (see ``export_saved_model``).
        max_detections, score_threshold: as ``export_saved_model`` (a detector source only).

    Yields:
        ``(detector, function, input_spec)``, with the NMS settings applied while the context is open
        (trace inside it).
    """
    from tfdet.export.sources import detector_from_export  # sources imports this module

    dtypes = {"uint8": tf.uint8, "float32": tf.float32}
    if input_dtype not in dtypes:
        raise ExportError(f"input_dtype must be one of {sorted(dtypes)}, got {input_dtype!r}")
    if isinstance(source, (str, os.PathLike)):
        detector, metadata = detector_from_export(os.fspath(source))
        size = tuple(metadata["model"]["image_size"])
        mode = metadata["model"]["resize_mode"]
        max_detections = score_threshold = None
    else:
        detector = source
        size = serving_image_size(detector, image_size)
        mode = resize_mode_of(detector)
    shape = size if input_size is None else _input_pair(input_size)
    spec = tf.TensorSpec([1, shape[0], shape[1], 3], dtypes[input_dtype], name=INPUT_KEY)
    with detection_settings(detector, max_detections, score_threshold):
        function = serving_functions(DetectionServing(detector, size, mode), batch_size=1, image_shape=shape,
                                     image_dtype=dtypes[input_dtype])["serving_default"]
        yield detector, function, spec


def _input_pair(size: Any) -> tuple[int, int]:
    pair = (int(size), int(size)) if isinstance(size, int) else tuple(int(v) for v in size)
    if len(pair) != 2 or min(pair) < 1:
        raise ExportError(f"input_size must be a positive int or (height, width), got {size!r}")
    return pair


def export_saved_model(
    detector,
    export_dir: str,
    *,
    label_map: Any = None,
    config: Any = None,
    max_detections: Optional[int] = None,
    score_threshold: Optional[float] = None,
    image_size: Any = None,
    overwrite: bool = False,
) -> str:
    """Exports ``detector`` as a SavedModel with the TF OD API serving signatures.

    Args:
        detector: a built ``tfdet`` detector (weights as they should be served).
        export_dir: the SavedModel directory to create.
        label_map: a ``LabelMap``, a label-map path, a list of class names, or
            None (``class_1..class_K``); must have ids ``1..K``.
        config: the resolved ``ExperimentConfig`` (or its dict), stored as JSON.
        max_detections: ``D`` of the outputs; None keeps the detector's.
        score_threshold: NMS score threshold; None keeps the detector's.
        image_size: model-input size for detectors built for any size (YOLO
            with ``image_size=None``; default 416); must match a fixed-size
            detector's size when given.
        overwrite: replace an existing ``export_dir`` (atomically); otherwise
            an existing non-empty ``export_dir`` is an error.

    Returns:
        ``export_dir``.

    Raises:
        ExportError: bad arguments or an existing target.
    """
    export_dir = os.fspath(export_dir)
    if os.path.exists(export_dir) and not overwrite and (not os.path.isdir(export_dir) or os.listdir(export_dir)):
        raise ExportError(f"{export_dir}: already exists (pass overwrite=True to replace it)")
    size = serving_image_size(detector, image_size)
    mode = resize_mode_of(detector)
    resolved_labels, label_source = resolve_label_map(label_map, detector.num_classes)
    parent = os.path.dirname(os.path.abspath(export_dir))
    os.makedirs(parent, exist_ok=True)
    staging = os.path.join(parent, f".{os.path.basename(export_dir)}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}")
    try:
        with detection_settings(detector, max_detections, score_threshold):
            serving = DetectionServing(detector, size, mode)
            functions = serving_functions(serving)
            signatures = {name: function.get_concrete_function() for name, function in functions.items()}
            outputs = tuple(signatures["serving_default"].structured_outputs)
            with tempfile.TemporaryDirectory(dir=parent, prefix=".tfdet-assets-") as asset_dir:
                metadata = export_metadata(detector, size, mode, resolved_labels, label_source, config,
                                           tuple(k for k in OUTPUT_KEYS + (MASK_KEY,) if k in outputs))
                asset_paths = {"config": os.path.join(asset_dir, CONFIG_ASSET),
                               "label_map": os.path.join(asset_dir, LABEL_MAP_ASSET)}
                with open(asset_paths["config"], "w", encoding="utf-8") as stream:
                    json.dump(metadata, stream, indent=2, ensure_ascii=False)
                    stream.write("\n")
                with open(asset_paths["label_map"], "w", encoding="utf-8") as stream:
                    stream.write(resolved_labels.to_pbtxt())
                module = ServingModule(detector, asset_paths)
                for name, function in functions.items():
                    setattr(module, name, function)
                tf.saved_model.save(module, staging, signatures=signatures)
        _move_into_place(staging, export_dir)
    finally:
        if os.path.exists(staging):
            shutil.rmtree(staging, ignore_errors=True)
    return export_dir


def _move_into_place(staging: str, export_dir: str) -> None:
    """Renames the finished export to ``export_dir``, replacing an old one only after success."""
    if not os.path.exists(export_dir):
        os.rename(staging, export_dir)
        return
    if os.path.isdir(export_dir) and not os.listdir(export_dir):
        os.rmdir(export_dir)
        os.rename(staging, export_dir)
        return
    retired = f"{staging}.old"
    os.rename(export_dir, retired)
    os.rename(staging, export_dir)
    shutil.rmtree(retired, ignore_errors=True)
