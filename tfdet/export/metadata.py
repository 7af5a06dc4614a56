"""What an export records about its model: serving size, resize mode, label map, config.

Both files live in the SavedModel's ``assets/`` folder, readable without TensorFlow:

* ``tfdet_config.json``: ``{"model": {...}, "serving": {...}, "config": {...} | null}``;
* ``label_map.pbtxt``: the TF OD API label map (ids ``1..K``).
"""

from __future__ import annotations

import dataclasses
import json
import os
from typing import Any, Optional

from tfdet.export.errors import ExportError
from tfrecord_tools.label_map import LabelMap, LabelMapError
from tfrecord_tools.label_map import load as load_label_map

CONFIG_ASSET = "tfdet_config.json"
LABEL_MAP_ASSET = "label_map.pbtxt"
# The size a detector built for any input size (YOLO, image_size=None) is exported at.
DEFAULT_ANY_SIZE = 416


def resize_mode_of(detector) -> str:
    """The detector's ``resize_mode`` (``"stretch"`` or ``"letterbox"``)."""
    mode = getattr(detector, "resize_mode", None)
    if mode not in ("stretch", "letterbox"):
        raise ExportError(f"detector {detector.name!r}: unknown resize_mode {mode!r}")
    return mode


def serving_image_size(detector, image_size=None) -> tuple[int, int]:
    """The static model-input ``(H, W)`` the export uses.

    Args:
        detector: a built detector.
        image_size: int or ``(H, W)``: the serving size of an any-size
            detector (default ``DEFAULT_ANY_SIZE``); for a fixed-size
            detector it may only repeat that size.

    Raises:
        ExportError: ``image_size`` contradicts a detector built for a fixed size.
    """
    built = tuple(detector.image_size)
    wanted = None
    if image_size is not None:
        if isinstance(image_size, int):
            wanted = (int(image_size), int(image_size))
        else:
            wanted = tuple(int(v) for v in image_size)
        if len(wanted) != 2 or min(wanted) < 1:
            raise ExportError(f"image_size must be a positive int or (height, width), got {image_size!r}")
    if None not in built:
        built = (int(built[0]), int(built[1]))
        if wanted is not None and wanted != built:
            raise ExportError(f"image_size {wanted} differs from the detector's fixed input size {built}; "
                              "rebuild the detector at that size instead")
        return built
    return wanted or (DEFAULT_ANY_SIZE, DEFAULT_ANY_SIZE)


def resolve_label_map(label_map: Any, num_classes: int) -> tuple[LabelMap, str]:
    """A ``LabelMap`` of exactly ``num_classes`` ids ``1..K``, and where it came from.

    Args:
        label_map: a ``LabelMap``, a label-map file path, a list of class
            names (ids ``1..K`` in order), or None (names ``class_1..class_K``).
        num_classes: ``K``.

    Raises:
        ExportError: unreadable, or its ids are not ``1..K``.
    """
    if label_map is None:
        resolved, source = LabelMap.from_names(f"class_{i}" for i in range(1, num_classes + 1)), "generated"
    elif isinstance(label_map, LabelMap):
        resolved, source = label_map, "given"
    elif isinstance(label_map, (str, os.PathLike)):
        try:
            resolved, source = load_label_map(os.fspath(label_map)), os.fspath(label_map)
        except LabelMapError as error:
            raise ExportError(str(error)) from None
    else:
        resolved, source = LabelMap.from_names(str(name) for name in label_map), "given"
    ids = [item_id for item_id, _ in resolved.items]
    if ids != list(range(1, num_classes + 1)):
        raise ExportError(f"label map ({source}) has ids {ids[:5]}{'...' if len(ids) > 5 else ''}; the detector "
                          f"has {num_classes} classes, which serve as ids 1..{num_classes}")
    return resolved, source


def config_as_dict(config: Any) -> Optional[dict]:
    """An ``ExperimentConfig`` (or any dataclass, or dict) as a JSON-ready dict."""
    if config is None:
        return None
    if isinstance(config, dict):
        return json.loads(json.dumps(config, default=str))
    if dataclasses.is_dataclass(config):
        try:
            from tfdet.config import config_to_dict
        except ImportError:  # the config module is optional for exporting
            config_to_dict = dataclasses.asdict
        return json.loads(json.dumps(config_to_dict(config), default=str))
    raise ExportError(f"config must be an ExperimentConfig or a dict, got {type(config).__name__}")


def export_metadata(detector, image_size, resize_mode, label_map: LabelMap, label_source: str, config: Any,
                    outputs: tuple) -> dict:
    """The ``tfdet_config.json`` content."""
    from tfdet import __version__

    return {
        "tfdet_version": __version__,
        "model": {
            "name": detector.model_name,
            "num_classes": detector.num_classes,
            "image_size": list(image_size),
            "resize_mode": resize_mode,
            "max_detections": detector.max_detections,
            "score_threshold": detector.score_threshold,
            "iou_threshold": detector.iou_threshold,
            "overrides": json.loads(json.dumps(detector.overrides, default=str)),
        },
        "serving": {
            "input_key": "input_tensor",
            "signatures": ["serving_default", "encoded_image_string_tensor", "tf_example"],
            "outputs": list(outputs),
            "boxes": "yxyx normalised to [0, 1] of the original image",
            "classes": "label-map ids (class + 1) as float32; 0 in padding",
        },
        "label_map": {"source": label_source, "items": [{"id": i, "name": n} for i, n in label_map.items]},
        # The order of the saved variables (tfdet.export.sources.detector_from_export checks it).
        "variables": [{"path": variable.path, "shape": list(variable.shape)} for variable in detector.variables],
        "config": config_as_dict(config),
    }


def read_export_metadata(export_dir: str) -> dict:
    """The ``tfdet_config.json`` of an export (plain JSON, no TensorFlow).

    Raises:
        ExportError: the file is missing or not JSON.
    """
    path = os.path.join(export_dir, "assets", CONFIG_ASSET)
    try:
        with open(path, encoding="utf-8") as stream:
            return json.load(stream)
    except (OSError, ValueError) as error:
        raise ExportError(f"{path}: not a tfdet export ({error})") from None
