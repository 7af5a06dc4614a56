"""Where a detector to export comes from: a ``.keras`` file, a training run, or an export.

* ``detector_from_keras(path)``: ``tfdet.load_model``.
* ``detector_from_model_dir(model_dir, checkpoint=None)``: the run's
  ``config.yaml`` and the trainer's ``load_trained_model`` (latest, ``best``
  or a given checkpoint; EMA weights when EMA was on).
* ``detector_from_export(export_dir)``: the export's ``tfdet_config.json``
  rebuilds the detector, then the SavedModel's own variables restore it
  (the export saves them as one list in ``detector.variables`` order, and
  records their paths to check that order). TFLite and
  ONNX conversion of an export go through this, so they trace the detector
  at a static batch of one and need no ``map_fn`` loop.
"""

from __future__ import annotations

import os
from typing import Optional

from tfdet.export.errors import ExportError
from tfdet.export.metadata import read_export_metadata

# Builder arguments that name files needed only to initialise weights that the
# checkpoint restores anyway; the file may be gone by export time.
_WEIGHT_FILE_OVERRIDES = ("backbone_weights",)


def _build(name: str, num_classes: int, overrides: dict, source: str):
    import tfdet

    options = dict(overrides)
    for key in _WEIGHT_FILE_OVERRIDES:
        if options.get(key) is not None:
            options[key] = None
    try:
        return tfdet.build_model(name, int(num_classes), **options)
    except (TypeError, ValueError) as error:
        raise ExportError(f"{source}: cannot build {name!r}: {error}") from None


def detector_from_keras(path: str):
    """A detector saved with ``detector.save("x.keras")``."""
    import tfdet

    if not os.path.isfile(path):
        raise ExportError(f"{path}: no such .keras file")
    try:
        return tfdet.load_model(path, compile=False)
    except (OSError, ValueError, TypeError) as error:
        raise ExportError(f"{path}: cannot load the model ({error})") from None


def detector_from_model_dir(model_dir: str, checkpoint: Optional[str] = None):
    """Rebuilds a training run's detector and restores a checkpoint (EMA weights when EMA was on).

    Uses the trainer's own ``tfdet.training.load_trained_model``, so the
    detector is built exactly as it was trained (``data.image_size``,
    ``train.multi_scale``) and the averaged weights are swapped in.

    Args:
        model_dir: the run's directory (``config.yaml``, ``checkpoints/``, ``best/``).
        checkpoint: None/``"latest"``, ``"best"``, a folder or a ``ckpt-N`` prefix.

    Returns:
        ``(detector, config, class names)``; ``names[k]`` is the class of label id ``k + 1``.

    Raises:
        ExportError: no config, no checkpoint, or a setup the trainer refuses (its reason).
    """
    import tensorflow as tf

    from tfdet.config import ConfigError, load_config
    from tfdet.training import load_trained_model
    from tfdet.training.trainer import class_names

    config_path = os.path.join(model_dir, "config.yaml")
    if not os.path.isfile(config_path):
        raise ExportError(f"{model_dir}: no config.yaml (not a tfdet training directory)")
    try:
        config = load_config(config_path)
        # The run may have moved since training: its checkpoints are beside its config.
        config.runtime.model_dir = model_dir
        _, names = class_names(config)
        detector, _, _ = load_trained_model(config, checkpoint or "latest")
    except (ConfigError, ValueError, OSError, tf.errors.OpError) as error:
        raise ExportError(f"{model_dir}: {str(error).splitlines()[0]}") from None
    return detector, config, names


def any_size_export_size(config) -> Optional[int | tuple]:
    """The serving size of an any-size detector from its training config.

    ``data.image_size``, else the largest ``train.multi_scale`` size, else None
    (the exporter's default).
    """
    if config is None:
        return None
    if config.data.image_size:
        return tuple(int(v) for v in config.data.image_size)
    if config.train.multi_scale:
        return int(max(config.train.multi_scale))
    return None


def detector_from_export(export_dir: str):
    """Rebuilds the detector of a tfdet SavedModel export and restores its variables.

    Returns:
        ``(detector, metadata)``: the detector carries the export's
        ``max_detections`` and ``score_threshold``.
    """
    import tensorflow as tf

    metadata = read_export_metadata(export_dir)
    model = metadata["model"]
    overrides = dict(model.get("overrides") or {})
    detector = _build(model["name"], model["num_classes"], overrides, export_dir)
    detector.max_detections = int(model["max_detections"])
    detector.score_threshold = float(model["score_threshold"])
    # Same order check: each variable's own name and shape. Full paths may differ when the process has
    # built the same family before (Keras numbers auto-named layers: batch_normalization_7).
    saved = [(item["path"].rsplit("/", 1)[-1], list(item["shape"])) for item in metadata.get("variables") or []]
    built = [(variable.path.rsplit("/", 1)[-1], list(variable.shape)) for variable in detector.variables]
    if saved != built:
        raise ExportError(f"{export_dir}: the rebuilt {model['name']!r} has other variables than the export "
                          f"({len(built)} against {len(saved)}, or other names/shapes)")
    variables = os.path.join(export_dir, "variables", "variables")
    try:
        # The export tracks the detector's tf.Variables as one list, in this order.
        values = [variable.value for variable in detector.variables]
        status = tf.train.Checkpoint(model_variables=values).read(variables)
        status.expect_partial()
        status.assert_existing_objects_matched()
    except (AssertionError, ValueError, tf.errors.OpError) as error:
        raise ExportError(f"{export_dir}: its variables do not fit {model['name']!r} "
                          f"({str(error).splitlines()[0]})") from None
    return detector, metadata
