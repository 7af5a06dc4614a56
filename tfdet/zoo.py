"""The one registry of detectors: name -> builder.

A builder is ``builder(num_classes, **overrides) -> Detector`` (built: its
weights exist). Model modules register themselves when imported; the names
and the modules that define them are listed here, so ``list_models()`` and
``build_model()`` import only the module that is asked for.
"""

from __future__ import annotations

import importlib
from typing import Callable

# Registry name -> module that registers it. Kept explicit so that listing
# models imports no model code.
_MODULES = {
    "ssd300_vgg16": "tfdet.models.ssd_detector",
    "ssd512_vgg16": "tfdet.models.ssd_detector",
    "yolov3": "tfdet.models.yolov3_detector",
    "yolov3_tiny": "tfdet.models.yolov3_detector",
    "retinanet_resnet50_fpn": "tfdet.models.retinanet",
    "retinanet_resnet101_fpn": "tfdet.models.retinanet",
    **{f"efficientdet_d{index}": "tfdet.models.efficientdet" for index in range(8)},
}

_BUILDERS: dict[str, Callable] = {}


def register(name: str) -> Callable[[Callable], Callable]:
    """Decorator: registers ``builder(num_classes, **overrides)`` under ``name``."""

    def decorate(builder: Callable) -> Callable:
        if name in _BUILDERS and _BUILDERS[name] is not builder:
            raise ValueError(f"model {name!r} is already registered")
        _BUILDERS[name] = builder
        return builder

    return decorate


def list_models() -> list[str]:
    """The registry names, sorted."""
    return sorted(set(_MODULES) | set(_BUILDERS))


def build_model(name: str, num_classes: int, **overrides):
    """Builds a registered detector.

    Args:
        name: a name from :func:`list_models`.
        num_classes: foreground classes (SSD adds its background logit itself).
        **overrides: builder keyword arguments (image size, NMS settings,
            ``backbone_weights`` path, ...).

    Returns:
        A built ``tfdet.models.detector.Detector``.

    Raises:
        ValueError: an unknown name, listing the known ones.
    """
    if name not in _BUILDERS and name not in _MODULES:
        raise ValueError(f"unknown model {name!r}; known models: {', '.join(list_models())}")
    if int(num_classes) < 1:
        raise ValueError(f"num_classes counts foreground classes and must be >= 1, got {num_classes}")
    if name not in _BUILDERS:
        importlib.import_module(_MODULES[name])
    return _BUILDERS[name](int(num_classes), **overrides)


def _saved_model_name(path: str):
    """The registry name inside a ``.keras`` archive's config, or None when it has none."""
    import json
    import zipfile

    try:
        with zipfile.ZipFile(path) as archive:
            config = json.loads(archive.read("config.json"))
    except (OSError, KeyError, ValueError, zipfile.BadZipFile):
        return None  # Keras itself reports what is wrong with the file
    return (config.get("config") or {}).get("model_name")


def load_model(path: str, **kwargs):
    """Loads a detector saved with ``model.save("....keras")``.

    Keras finds custom classes only once their module has been imported, so
    this imports the family module named in the archive's config (every
    family's module when the archive names none); plain
    ``keras.saving.load_model`` works too after importing the family's module.

    Args:
        path: a ``.keras`` file.
        **kwargs: passed to ``keras.saving.load_model`` (e.g. ``compile=False``).
    """
    import keras

    name = _saved_model_name(path)
    modules = [_MODULES[name]] if name in _MODULES else sorted(set(_MODULES.values()))
    for module in modules:
        importlib.import_module(module)
    return keras.saving.load_model(path, **kwargs)
