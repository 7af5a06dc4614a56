"""Experiment configuration: dataclass schemas, strict YAML loading, overrides and presets.

One experiment is one :class:`ExperimentConfig` with six sections: ``model``,
``data``, ``train`` (with ``optimizer``, ``schedule`` and ``ema`` inside),
``eval``, ``runtime`` and ``export``. The trainer, the evaluator and the
exporter read it; models and layers never do (they take keyword arguments).

YAML files
    A config file is a mapping of section names to mappings of fields. Every
    key is optional: a missing key keeps the value it would have had without
    the file. A file may name a ``base`` at its top level::

        base: ssd300_vgg16          # a preset: preset("ssd300_vgg16")
        base: ssd300_voc.yaml       # or another YAML file, relative to this one

    The base is resolved first (a base file may have a base of its own; a
    cycle is an error) and this file's values are laid over it: mappings
    merge key by key, ``model.overrides`` included, and every other value,
    lists too, replaces the base's. Without ``base`` a file starts from the
    dataclass defaults below, not from a model's preset.

Strictness
    Files are parsed with ``yaml.safe_load``. An unknown key, a key given twice
    in one mapping, a value of the wrong type and a string outside a field's
    allowed values are each a :class:`ConfigError` (a ``ValueError``) naming
    the file, the dotted key path and the reason, for example
    ``cfg.yaml: train.optimizer.lr: unknown key (did you mean learning_rate?)``.
    Ints are accepted where floats are expected, and so is a number written
    like ``1e-3``, which PyYAML (YAML 1.1) reads as a string; ``null`` is
    accepted only for ``Optional`` fields. ``data.image_size`` also accepts
    one int ``n`` for a square ``[n, n]``. Cross-field rules (positive step
    counts, sizes divisible by a family's stride, ...) are checked by
    :func:`validate`, which :func:`load_config` runs last.

Overrides
    ``apply_overrides(cfg, ["train.steps=500", "model.overrides.image_size=128"])``
    (the command line's ``--set KEY=VALUE``) parses each value with
    ``yaml.safe_load`` and checks the key path like a file's.

Fields added beyond the shared contract:
    ``data.scale_range``: ``[min, max]`` random scale factors of the
    ``scale_jitter`` augmentation (None: the data pipeline's default, 0.1..2.0).
    The RetinaNet presets set ``[0.8, 1.2]``, the EfficientDet ones
    ``[0.1, 2.0]``.
"""

from __future__ import annotations

import dataclasses
import difflib
import functools
import math
import os
import pathlib
import re
import secrets
import types
import typing
from dataclasses import dataclass, field
from typing import Any, Callable, Optional, Sequence, Union

import yaml

__all__ = [
    "AUGMENTATIONS", "COCO_METRIC_KEYS", "EXPORT_FORMATS", "METRICS", "MIXED_PRECISION", "OPTIMIZERS",
    "SCHEDULES", "STRATEGIES", "ConfigError", "DataConfig", "EMAConfig", "EvalConfig", "ExperimentConfig",
    "ExportConfig", "ModelConfig", "OptimizerConfig", "RuntimeConfig", "ScheduleConfig", "TrainConfig",
    "apply_overrides", "config_from_dict", "config_to_dict", "describe", "load_config", "preset",
    "preset_names", "save_config", "validate",
]

OPTIMIZERS = ("sgd", "adam", "adamw")
SCHEDULES = ("cosine", "step", "constant")
MIXED_PRECISION = ("float32", "mixed_float16", "mixed_bfloat16")
STRATEGIES = ("auto", "one_device", "mirrored", "multi_worker_mirrored", "tpu")
METRICS = ("coco", "voc")
AUGMENTATIONS = ("none", "flip", "scale_jitter", "ssd", "yolo")
EXPORT_FORMATS = ("saved_model", "tflite", "onnx")
# The keys of tfdet.evaluation.coco.STAT_KEYS, repeated here so that reading a
# config never imports NumPy; a test keeps the two equal.
COCO_METRIC_KEYS = ("AP", "AP50", "AP75", "APs", "APm", "APl", "AR1", "AR10", "AR100", "ARs", "ARm", "ARl")


class ConfigError(ValueError):
    """A config that cannot be used: the message names the file (or override), the key path and why."""


# --------------------------------------------------------------------------------------------------------------
# Schemas
# --------------------------------------------------------------------------------------------------------------


@dataclass
class ModelConfig:
    """Which detector to build: ``tfdet.build_model(name, num_classes, **overrides)``.

    Attributes:
        name: a registry name (``tfdet.list_models()``).
        num_classes: foreground classes K; None takes the number of classes in
            the label map.
        overrides: builder keyword arguments (``image_size``, ``network``,
            ``backbone_weights``, ``max_detections``, ...); the builder checks them.
    """

    name: str = "ssd300_vgg16"
    num_classes: Optional[int] = None
    overrides: dict[str, Any] = field(default_factory=dict)


@dataclass
class DataConfig:
    """Input pipeline settings (``tfdet.data.build_dataset``).

    Attributes:
        train_files: TFRecord file pattern of the training split (glob, e.g. ``data/voc/train-*.tfrecord``).
        eval_files: TFRecord file pattern of the evaluation split.
        label_map: ``label_map.pbtxt`` path; None takes the one beside ``train_files``.
        image_size: ``[H, W]`` the pipeline resizes to, which the trainer also passes to the
            builder as ``image_size``; None: the model's own (``detector.image_size``).
        max_instances: ground-truth slots per image (G).
        augmentation: one of :data:`AUGMENTATIONS`.
        scale_range: ``[min, max]`` scale factors of ``scale_jitter``; None: the pipeline's default.
        shuffle_buffer: examples in the shuffle buffer (0: no shuffling).
        cache: cache decoded examples in memory.
        deterministic: reproducible element order (slower).
        seed: seed of shuffling and augmentation.
        with_masks: deliver instance masks (``groundtruth["masks"]``).
    """

    train_files: str = ""
    eval_files: str = ""
    label_map: Optional[str] = None
    image_size: Optional[list[int]] = None
    max_instances: int = 100
    augmentation: str = "flip"
    scale_range: Optional[list[float]] = None
    shuffle_buffer: int = 512
    cache: bool = False
    deterministic: bool = False
    seed: int = 0
    with_masks: bool = False


@dataclass
class OptimizerConfig:
    """The optimizer.

    Attributes:
        name: one of :data:`OPTIMIZERS`.
        learning_rate: peak learning rate (after warm-up), for the GLOBAL batch size.
        momentum: SGD momentum (Adam's beta_1 stays at its default).
        weight_decay: weight decay factor (0: none).
        clip_norm: clip gradients to this global norm; None: no clipping.
    """

    name: str = "sgd"
    learning_rate: float = 0.01
    momentum: float = 0.9
    weight_decay: float = 0.0
    clip_norm: Optional[float] = None


@dataclass
class ScheduleConfig:
    """The learning-rate schedule, in optimizer steps.

    Attributes:
        name: ``cosine`` (from the peak down to ``final_factor`` times it),
            ``step`` (times ``decay_factor`` at each boundary) or ``constant``.
        warmup_steps: linear warm-up steps (0: none).
        warmup_factor: the warm-up starts at this fraction of the peak rate.
        boundaries: ``step`` only: increasing step numbers where the rate drops.
        decay_factor: ``step`` only: factor applied at each boundary.
        final_factor: ``cosine`` only: the last step's rate as a fraction of the peak.
    """

    name: str = "cosine"
    warmup_steps: int = 0
    warmup_factor: float = 0.001
    boundaries: list[int] = field(default_factory=list)
    decay_factor: float = 0.1
    final_factor: float = 0.0


@dataclass
class EMAConfig:
    """Exponential moving average of the weights (evaluated and exported instead of the raw weights).

    Attributes:
        enabled: keep the average.
        momentum: the average's decay per step.
    """

    enabled: bool = False
    momentum: float = 0.9998


@dataclass
class TrainConfig:
    """The training loop.

    Attributes:
        batch_size: GLOBAL batch size (split across replicas).
        steps: optimizer steps in total.
        steps_per_loop: steps run inside one compiled loop between host callbacks.
        jit_compile: compile the train step with XLA.
        mixed_precision: one of :data:`MIXED_PRECISION`.
        optimizer: :class:`OptimizerConfig`.
        schedule: :class:`ScheduleConfig`.
        ema: :class:`EMAConfig`.
        checkpoint_every: steps between checkpoints.
        keep_checkpoints: checkpoints kept (older ones are deleted).
        log_every: steps between loss logs.
        eval_every: steps between evaluations; 0: at the end only.
        summary_images: training images with boxes written to TensorBoard per log.
        multi_scale: YOLO only: square input sizes, one chosen at random per loop of
            ``steps_per_loop`` steps; empty: the fixed input size. The network is
            then built for any size (``model.overrides.image_size`` must not fix one)
            and evaluated at ``data.image_size`` (the trainer's fallback: the largest size).
    """

    batch_size: int = 8
    steps: int = 1000
    steps_per_loop: int = 10
    jit_compile: bool = True
    mixed_precision: str = "float32"
    optimizer: OptimizerConfig = field(default_factory=OptimizerConfig)
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    ema: EMAConfig = field(default_factory=EMAConfig)
    checkpoint_every: int = 500
    keep_checkpoints: int = 3
    log_every: int = 10
    eval_every: int = 0
    summary_images: int = 4
    multi_scale: list[int] = field(default_factory=list)


@dataclass
class EvalConfig:
    """Evaluation.

    Attributes:
        metric: ``coco`` (COCOeval's 12 numbers) or ``voc`` (Pascal VOC AP at IoU 0.5).
        batch_size: evaluation batch size (global).
        max_images: evaluate the first this many images; None: all.
        best_metric: the number that picks the kept-best checkpoint: a COCO key
            (:data:`COCO_METRIC_KEYS`) or, for VOC, ``mAP`` or ``AP/<class name>``.
    """

    metric: str = "coco"
    batch_size: int = 8
    max_images: Optional[int] = None
    best_metric: str = "AP50"


@dataclass
class RuntimeConfig:
    """Where and how training runs.

    Attributes:
        strategy: one of :data:`STRATEGIES` (``auto``: TPU if ``tpu`` is set, else mirrored over the
            visible GPUs, else one device).
        tpu: TPU name or address for the cluster resolver; None: none (or the local TPU with ``strategy: tpu``).
        model_dir: checkpoints, summaries, the resolved ``config.yaml`` and ``metrics.json`` go here.
    """

    strategy: str = "auto"
    tpu: Optional[str] = None
    model_dir: str = "runs/experiment"


@dataclass
class ExportConfig:
    """Export (``tfdet.export``).

    Attributes:
        max_detections: detections per image D in the export; None: the model's.
        score_threshold: drop detections below this score; None: the model's.
        formats: any of :data:`EXPORT_FORMATS`.
    """

    max_detections: Optional[int] = None
    score_threshold: Optional[float] = None
    formats: list[str] = field(default_factory=lambda: ["saved_model"])


@dataclass
class ExperimentConfig:
    """One experiment: the six sections."""

    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    runtime: RuntimeConfig = field(default_factory=RuntimeConfig)
    export: ExportConfig = field(default_factory=ExportConfig)


# Enumerated string fields (list fields: every item) by dotted path.
_ALLOWED = {
    "data.augmentation": AUGMENTATIONS,
    "train.mixed_precision": MIXED_PRECISION,
    "train.optimizer.name": OPTIMIZERS,
    "train.schedule.name": SCHEDULES,
    "eval.metric": METRICS,
    "runtime.strategy": STRATEGIES,
    "export.formats": EXPORT_FORMATS,
}
# List fields that also take one int n meaning [n, n].
_SQUARE_OR_PAIR = {"data.image_size"}


# --------------------------------------------------------------------------------------------------------------
# Dict <-> dataclass with type checks
# --------------------------------------------------------------------------------------------------------------

# YAML 1.2 numbers that PyYAML's YAML 1.1 resolver leaves as strings (1e-3, 5E-4: no dot).
_NUMBER = re.compile(r"[-+]?(\d+(\.\d*)?|\.\d+)([eE][-+]?\d+)?")


def _join(prefix: str, key: Any) -> str:
    return f"{prefix}.{key}" if prefix else str(key)


def _type_name(value: Any) -> str:
    return {type(None): "null", bool: "bool", int: "int", float: "float", str: "string",
            list: "list", tuple: "list", dict: "mapping"}.get(type(value), type(value).__name__)


def _got(value: Any) -> str:
    text = repr(value)
    return f"{_type_name(value)} {text if len(text) <= 60 else text[:57] + '...'}"


def _initials(name: str) -> str:
    return "".join(part[0] for part in name.split("_") if part)


def _suggestion(key: Any, known: Sequence[str]) -> str:
    """`` (did you mean X?)`` by spelling or by initials (lr -> learning_rate), else the known keys."""
    text = str(key)
    close = difflib.get_close_matches(text, known, n=1, cutoff=0.6)
    if not close:
        close = [name for name in known if "_" in name and _initials(name) == text.lower()][:1]
    if close:
        return f" (did you mean {close[0]}?)"
    return f" (known keys: {', '.join(known)})"


@functools.lru_cache(maxsize=None)
def _field_types(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _optional_inner(hint: Any) -> Optional[Any]:
    """X for Optional[X] (or X | None), else None."""
    if typing.get_origin(hint) in (Union, types.UnionType):
        args = [arg for arg in typing.get_args(hint) if arg is not type(None)]
        if len(args) == 1 and len(typing.get_args(hint)) == 2:
            return args[0]
    return None


def _describe_type(hint: Any) -> str:
    inner = _optional_inner(hint)
    if inner is not None:
        return f"{_describe_type(inner)} or null"
    if dataclasses.is_dataclass(hint):
        return "a mapping"
    origin = typing.get_origin(hint)
    if origin is list:
        return f"a list of {_describe_type(typing.get_args(hint)[0])}"
    if origin is dict:
        return "a mapping"
    return {bool: "bool", int: "int", float: "float", str: "string"}.get(hint, str(hint))


def _plain(value: Any, where: str) -> Any:
    """A free-form value (model.overrides) as plain YAML types; tuples become lists."""
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, (list, tuple)):
        return [_plain(item, f"{where}[{i}]") for i, item in enumerate(value)]
    if isinstance(value, dict):
        for key in value:
            if not isinstance(key, str):
                raise ConfigError(f"{where}: keys must be strings, got {_got(key)}")
        return {key: _plain(item, f"{where}.{key}") for key, item in value.items()}
    raise ConfigError(f"{where}: expected plain YAML values, got {type(value).__name__}")


def _check_allowed(value: str, path: str, source: str) -> None:
    allowed = _ALLOWED.get(re.sub(r"\[\d+\]$", "", path))
    if allowed is not None and value not in allowed:
        close = difflib.get_close_matches(value, allowed, n=1, cutoff=0.5)
        hint = f" (did you mean {close[0]}?)" if close else ""
        raise ConfigError(f"{source}: {path}: {value!r} is not one of {', '.join(allowed)}{hint}")


def _convert(value: Any, hint: Any, source: str, path: str, expected: Optional[str] = None) -> Any:
    """``value`` checked against the type ``hint`` and normalised (int -> float, copies of lists).

    ``expected`` names the type in errors (the outer ``X or null`` for Optional fields).
    """
    expected = expected or _describe_type(hint)
    inner = _optional_inner(hint)
    if inner is not None:
        return None if value is None else _convert(value, inner, source, path, expected)

    def mismatch() -> ConfigError:
        return ConfigError(f"{source}: {path}: expected {expected}, got {_got(value)}")

    if dataclasses.is_dataclass(hint):
        return _build(hint, value, source, path)
    origin = typing.get_origin(hint)
    if origin is list:
        if path in _SQUARE_OR_PAIR and isinstance(value, int) and not isinstance(value, bool):
            value = [value, value]
        if not isinstance(value, (list, tuple)):
            raise mismatch()
        item_hint = typing.get_args(hint)[0]
        return [_convert(item, item_hint, source, f"{path}[{i}]") for i, item in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise mismatch()
        return _plain(value, f"{source}: {path}")
    if hint is bool:
        if not isinstance(value, bool):
            raise mismatch()
        return value
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise mismatch()
        return value
    if hint is float:
        if isinstance(value, str) and _NUMBER.fullmatch(value.strip()):
            value = float(value)
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise mismatch()
        if not math.isfinite(value):  # YAML's .inf / .nan would slip through every range check
            raise ConfigError(f"{source}: {path}: expected a finite number, got {value}")
        return float(value)
    if hint is str:
        if not isinstance(value, str):
            raise mismatch()
        _check_allowed(value, path, source)
        return value
    if hint is Any:
        return _plain(value, f"{source}: {path}")
    raise TypeError(f"config schema: unsupported field type {hint!r} at {path}")


def _build(cls: type, raw: Any, source: str, prefix: str) -> Any:
    """An instance of the dataclass ``cls`` from a (partial) mapping; missing keys take the defaults."""
    hints = _field_types(cls)
    known = [f.name for f in dataclasses.fields(cls)]
    if not isinstance(raw, dict):
        where = prefix or "top level"
        raise ConfigError(f"{source}: {where}: expected a mapping with keys {', '.join(known)}, got {_got(raw)}")
    for key in raw:
        if key not in hints:
            raise ConfigError(f"{source}: {_join(prefix, key)}: unknown key{_suggestion(key, known)}")
    values = {key: _convert(value, hints[key], source, _join(prefix, key)) for key, value in raw.items()}
    return cls(**values)


def config_from_dict(d: dict, source: str = "<dict>") -> ExperimentConfig:
    """Builds a config from a (partial) mapping of plain values, strictly.

    Args:
        d: sections as in a YAML file; missing keys take the dataclass defaults.
            A ``base`` key is resolved as in files (preset name, or a YAML path
            relative to the current directory).
        source: names the input in error messages.

    Returns:
        The :class:`ExperimentConfig` (not yet checked by :func:`validate`).

    Raises:
        ConfigError: unknown key, wrong type or value outside a field's allowed values.
    """
    if not isinstance(d, dict):
        raise ConfigError(f"{source}: expected a mapping of sections, got {_got(d)}")
    if "base" in d:
        d = _resolve_base(d, source, pathlib.Path.cwd(), frozenset())
    return _build(ExperimentConfig, d, source, "")


def config_to_dict(cfg: ExperimentConfig) -> dict:
    """The config as plain dicts, lists and scalars; ``config_from_dict`` of it gives ``cfg`` back."""
    return dataclasses.asdict(cfg)


# --------------------------------------------------------------------------------------------------------------
# YAML files, bases and overrides
# --------------------------------------------------------------------------------------------------------------


def _check_duplicate_keys(node: Any, source: str, path: str = "", seen_nodes: Optional[set] = None) -> None:
    """A key twice in one mapping is an error (safe_load would silently keep the last one)."""
    seen_nodes = set() if seen_nodes is None else seen_nodes
    if id(node) in seen_nodes:  # an alias of a node already walked
        return
    seen_nodes.add(id(node))
    if isinstance(node, yaml.MappingNode):
        lines: dict[Any, int] = {}
        for key_node, value_node in node.value:
            key = key_node.value if isinstance(key_node, yaml.ScalarNode) else None
            line = key_node.start_mark.line + 1
            if key is not None and key in lines:
                raise ConfigError(f"{source}: {_join(path, key)}: duplicate key (lines {lines[key]} and {line})")
            if key is not None:
                lines[key] = line
            _check_duplicate_keys(value_node, source, _join(path, key), seen_nodes)
    elif isinstance(node, yaml.SequenceNode):
        for index, item in enumerate(node.value):
            _check_duplicate_keys(item, source, f"{path}[{index}]", seen_nodes)


def _read_yaml(path: pathlib.Path) -> dict:
    """The top-level mapping of a YAML file ({} for an empty file)."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such config file") from None
    except (OSError, UnicodeDecodeError) as error:
        raise ConfigError(f"{path}: cannot read the config file ({error})") from None
    try:
        _check_duplicate_keys(yaml.compose(text, Loader=yaml.SafeLoader), str(path))
        raw = yaml.safe_load(text)
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f"{path}:{mark.line + 1}:{mark.column + 1}" if mark is not None else str(path)
        reason = getattr(error, "problem", None) or str(error)
        raise ConfigError(f"{where}: not valid YAML: {reason}") from None
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: expected a mapping of sections at the top level, got {_got(raw)}")
    return raw


def _merge(base: dict, layer: dict) -> dict:
    """``layer`` laid over ``base``: mappings merge key by key, anything else replaces."""
    merged = dict(base)
    for key, value in layer.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def _is_path(base: str) -> bool:
    return base.endswith((".yaml", ".yml")) or "/" in base or os.sep in base


def _resolve_base(raw: dict, source: str, directory: pathlib.Path, chain: frozenset) -> dict:
    """``raw`` (with its ``base`` key) merged over its base, as one mapping without ``base``."""
    layer = dict(raw)
    base = layer.pop("base")
    # Check this layer alone first, so that an error names the file it is in.
    _build(ExperimentConfig, layer, source, "")
    if not isinstance(base, str) or not base.strip():
        raise ConfigError(f"{source}: base: expected a preset name or a YAML path, got {_got(base)}")
    if _is_path(base):
        base_path = (directory / base).resolve()
        if base_path in chain:
            raise ConfigError(f"{source}: base: {base} is already a base of this file (a cycle)")
        base_dict = _load_raw(base_path, chain)
    else:
        try:
            base_dict = config_to_dict(preset(base))
        except ConfigError as error:
            raise ConfigError(f"{source}: base: {error}") from None
    return _merge(base_dict, layer)


def _load_raw(path: pathlib.Path, chain: frozenset = frozenset()) -> dict:
    """A file's mapping with its bases merged in (no ``base`` key left), every layer checked."""
    raw = _read_yaml(path)
    if "base" not in raw:
        _build(ExperimentConfig, raw, str(path), "")
        return raw
    return _resolve_base(raw, str(path), path.parent, chain | {path.resolve()})


def _set_path(data: dict, key: str, value: Any, source: str) -> None:
    """Sets ``data[a][b]... = value`` for ``key`` ``a.b...``, checking each step against the schema."""
    parts = key.split(".")
    node, hint = data, ExperimentConfig
    for depth, part in enumerate(parts):
        path = ".".join(parts[: depth + 1])
        last = depth == len(parts) - 1
        if dataclasses.is_dataclass(hint):
            hints = _field_types(hint)
            if part not in hints:
                known = [f.name for f in dataclasses.fields(hint)]
                raise ConfigError(f"{source}: {path}: unknown key{_suggestion(part, known)}")
            hint = hints[part]
            if last:
                # A mapping given for a section updates it instead of resetting its other fields.
                if dataclasses.is_dataclass(hint) and isinstance(value, dict):
                    node[part] = _merge(node[part], value)
                else:
                    node[part] = value
            elif dataclasses.is_dataclass(hint) or typing.get_origin(hint) is dict:
                node = node[part]
            else:
                raise ConfigError(f"{source}: {path}: is not a section (it holds {_describe_type(hint)})")
        else:  # inside a free-form mapping (model.overrides)
            if last:
                node[part] = value
            else:
                child = node.setdefault(part, {})
                if not isinstance(child, dict):
                    raise ConfigError(f"{source}: {path}: holds {_got(child)}, not a mapping")
                node = child


def apply_overrides(cfg: ExperimentConfig, overrides: Sequence[str]) -> ExperimentConfig:
    """A copy of ``cfg`` with ``KEY=VALUE`` overrides applied in order (``cfg`` is not changed).

    Args:
        cfg: the config to start from.
        overrides: strings ``dotted.key=value``; the value is parsed with
            ``yaml.safe_load`` (``500``, ``0.1``, ``1e-3``, ``true``, ``null``,
            ``[320, 320]``, ``{name: adam}``; an empty value is null). Keys under
            ``model.overrides`` are free-form; all others must exist in the schema.

    Raises:
        ConfigError: naming the override (``--set ...``), the key path and why.
    """
    if isinstance(overrides, str):
        overrides = [overrides]
    data = config_to_dict(cfg)
    for item in overrides:
        source = f"--set {item}"
        if not isinstance(item, str) or "=" not in item:
            raise ConfigError(f"{source}: expected KEY=VALUE, e.g. train.steps=500")
        key, text = item.split("=", 1)
        key = key.strip()
        if not key or any(not part for part in key.split(".")):
            raise ConfigError(f"{source}: expected a dotted key before '=', e.g. train.optimizer.learning_rate")
        try:
            value = yaml.safe_load(text)
        except yaml.YAMLError as error:
            reason = getattr(error, "problem", None) or str(error)
            raise ConfigError(f"{source}: value {text!r} is not valid YAML ({reason})") from None
        _set_path(data, key, value, source)
        data = config_to_dict(_build(ExperimentConfig, data, source, ""))
    return _build(ExperimentConfig, data, "<overrides>", "")


def load_config(path: Union[str, os.PathLike], overrides: Sequence[str] = ()) -> ExperimentConfig:
    """Loads a YAML config (with its ``base`` chain), applies overrides and validates.

    Args:
        path: the YAML file.
        overrides: ``KEY=VALUE`` strings applied after the file (see :func:`apply_overrides`).

    Returns:
        The :class:`ExperimentConfig`, checked by :func:`validate`.

    Raises:
        ConfigError: a missing or unreadable file, invalid YAML, a duplicate or
            unknown key, a wrong type, a bad override or a failed cross-field check.
    """
    path = pathlib.Path(path)
    cfg = _build(ExperimentConfig, _load_raw(path), str(path), "")
    if overrides:
        cfg = apply_overrides(cfg, overrides)
    validate(cfg, source=str(path))
    return cfg


def save_config(cfg: ExperimentConfig, path: Union[str, os.PathLike]) -> pathlib.Path:
    """Writes ``cfg`` as YAML, to a temporary name in the same folder first, then renamed over ``path``.

    Readers therefore see the old file or the whole new one, never a partial one.

    Returns:
        The path written.
    """
    path = pathlib.Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    text = "# tfdet experiment config (resolved: every field, no base)\n" + yaml.safe_dump(
        config_to_dict(cfg), sort_keys=False, default_flow_style=None)
    temporary = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    try:
        with open(temporary, "x", encoding="utf-8") as stream:
            stream.write(text)
        os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
    return path


# --------------------------------------------------------------------------------------------------------------
# Presets: the training defaults of each model family
# --------------------------------------------------------------------------------------------------------------


def _ssd_preset(name: str) -> ExperimentConfig:
    # SSD paper (Liu et al. 2016), VOC07+12: SGD 1e-3, momentum 0.9, weight decay 5e-4, batch 32,
    # 1e-3 for 80k iterations then 1e-4 and 1e-5 for 20k each; a short warm-up steadies the first steps.
    return ExperimentConfig(
        model=ModelConfig(name=name),
        data=DataConfig(augmentation="ssd"),
        train=TrainConfig(
            batch_size=32, steps=120_000,
            optimizer=OptimizerConfig(name="sgd", learning_rate=1e-3, momentum=0.9, weight_decay=5e-4),
            schedule=ScheduleConfig(name="step", warmup_steps=1000, warmup_factor=0.001,
                                    boundaries=[80_000, 100_000], decay_factor=0.1),
            checkpoint_every=5000, log_every=100, steps_per_loop=100)
    )


def _yolo_preset(name: str) -> ExperimentConfig:
    # Adam at 1e-3 (as common Keras YOLOv3 trainings), Darknet's 1000-step burn-in as a linear warm-up,
    # then cosine decay. YOLOv3 (not tiny) trains multi-scale on 320..608 in steps of 32, as Darknet:
    # the network is then built for any input size and evaluated at data.image_size, 416.
    multi_scale = name == "yolov3"
    return ExperimentConfig(
        model=ModelConfig(name=name),
        data=DataConfig(augmentation="yolo", image_size=[416, 416] if multi_scale else None),
        train=TrainConfig(
            batch_size=64, steps=100_000,
            optimizer=OptimizerConfig(name="adam", learning_rate=1e-3, momentum=0.9, weight_decay=0.0),
            schedule=ScheduleConfig(name="cosine", warmup_steps=1000, warmup_factor=0.001, final_factor=0.01),
            multi_scale=list(range(320, 609, 32)) if multi_scale else [],
            checkpoint_every=5000, log_every=100, steps_per_loop=100)
    )


def _retinanet_preset(name: str) -> ExperimentConfig:
    # Detectron's 1x schedule: SGD 0.01 at batch 16, momentum 0.9, weight decay 1e-4, 90k steps,
    # x0.1 at 60k and 80k, 500 warm-up steps from 1/3; mild scale jitter.
    return ExperimentConfig(
        model=ModelConfig(name=name),
        data=DataConfig(augmentation="scale_jitter", scale_range=[0.8, 1.2]),
        train=TrainConfig(
            batch_size=16, steps=90_000,
            optimizer=OptimizerConfig(name="sgd", learning_rate=0.01, momentum=0.9, weight_decay=1e-4),
            schedule=ScheduleConfig(name="step", warmup_steps=500, warmup_factor=1 / 3,
                                    boundaries=[60_000, 80_000], decay_factor=0.1),
            checkpoint_every=5000, log_every=100, steps_per_loop=100),
        eval=EvalConfig(metric="coco", best_metric="AP"),
    )


def _efficientdet_preset(name: str) -> ExperimentConfig:
    # EfficientDet paper (Tan et al. 2020): SGD momentum 0.9, weight decay 4e-5, peak 0.08 after a
    # warm-up from 0.008, cosine decay, batch 128 for 300 COCO epochs (about 277k steps), weight EMA
    # 0.9998, gradient clipping at norm 10, scale jitter 0.1..2.0.
    return ExperimentConfig(
        model=ModelConfig(name=name),
        data=DataConfig(augmentation="scale_jitter", scale_range=[0.1, 2.0]),
        train=TrainConfig(
            batch_size=128, steps=277_000,
            optimizer=OptimizerConfig(name="sgd", learning_rate=0.08, momentum=0.9, weight_decay=4e-5,
                                      clip_norm=10.0),
            schedule=ScheduleConfig(name="cosine", warmup_steps=1000, warmup_factor=0.1, final_factor=0.0),
            ema=EMAConfig(enabled=True, momentum=0.9998),
            checkpoint_every=5000, log_every=100, steps_per_loop=100),
        eval=EvalConfig(metric="coco", best_metric="AP"),
    )


# Keyed by registry name (not read from the registry), so presets exist before a family's code does.
_PRESETS: dict[str, Callable[[str], ExperimentConfig]] = {
    "ssd300_vgg16": _ssd_preset,
    "ssd512_vgg16": _ssd_preset,
    "yolov3": _yolo_preset,
    "yolov3_tiny": _yolo_preset,
    "retinanet_resnet50_fpn": _retinanet_preset,
    "retinanet_resnet101_fpn": _retinanet_preset,
    **{f"efficientdet_d{index}": _efficientdet_preset for index in range(8)},
}


def preset_names() -> list[str]:
    """The model names with a preset, sorted."""
    return sorted(_PRESETS)


def preset(model_name: str) -> ExperimentConfig:
    """The training defaults of a model's family, with ``model.name`` set (a new object each call).

    Families: SSD (``ssd300_vgg16``, ``ssd512_vgg16``), YOLOv3 (``yolov3``,
    ``yolov3_tiny``), RetinaNet (``retinanet_resnet50_fpn``,
    ``retinanet_resnet101_fpn``) and EfficientDet (``efficientdet_d0`` ..
    ``efficientdet_d7``). Data paths stay empty; learning rates are for the
    preset's global batch size.

    Raises:
        ConfigError: no preset for ``model_name`` (with the closest name).
    """
    if model_name not in _PRESETS:
        close = difflib.get_close_matches(str(model_name), list(_PRESETS), n=1, cutoff=0.5)
        hint = f"did you mean {close[0]}? " if close else ""
        raise ConfigError(f"no preset for model {model_name!r} ({hint}presets: {', '.join(preset_names())})")
    return _PRESETS[model_name](model_name)


# --------------------------------------------------------------------------------------------------------------
# Cross-field validation
# --------------------------------------------------------------------------------------------------------------


def _family(model_name: str) -> Optional[str]:
    for prefix, family in (("ssd", "ssd"), ("yolov3", "yolo"), ("retinanet", "retinanet"),
                           ("efficientdet", "efficientdet")):
        if model_name.startswith(prefix):
            return family
    return None


# Input sizes must divide by the coarsest feature stride: YOLOv3's 32, P7's 128 for FPN/BiFPN families.
_SIZE_MULTIPLE = {"yolo": 32, "retinanet": 128, "efficientdet": 128}


def _size_pair(value: Any) -> Optional[tuple]:
    """``image_size`` (int, pair or None) as a tuple of two, or None when absent or malformed."""
    if isinstance(value, int) and not isinstance(value, bool):
        return (value, value)
    if isinstance(value, (list, tuple)) and len(value) == 2 and all(isinstance(v, int) for v in value):
        return tuple(value)
    return None


def _known_models() -> list[str]:
    from tfdet.zoo import list_models  # the registry names; imports no model code

    return sorted(set(list_models()) | set(_PRESETS))


def _problems(cfg: ExperimentConfig) -> list[str]:
    """Every cross-field problem as ``key.path: reason``."""
    problems = []

    def need(condition: bool, path: str, reason: str) -> None:
        if not condition:
            problems.append(f"{path}: {reason}")

    model, data, train, evaluation = cfg.model, cfg.data, cfg.train, cfg.eval
    known = _known_models()
    if model.name not in known:
        problems.append(f"model.name: unknown model {model.name!r}{_suggestion(model.name, known)}")
    need(model.num_classes is None or model.num_classes >= 1, "model.num_classes",
         f"counts foreground classes and must be >= 1 (or null: from the label map), got {model.num_classes}")
    need("num_classes" not in model.overrides, "model.overrides.num_classes", "set model.num_classes instead")

    need(data.max_instances >= 1, "data.max_instances", f"must be >= 1, got {data.max_instances}")
    need(data.shuffle_buffer >= 0, "data.shuffle_buffer", f"must be >= 0, got {data.shuffle_buffer}")
    if data.image_size is not None:
        need(len(data.image_size) == 2 and all(v > 0 for v in data.image_size), "data.image_size",
             f"must be [H, W] with positive sizes, got {data.image_size}")
    if data.scale_range is not None:
        need(len(data.scale_range) == 2 and 0 < data.scale_range[0] <= data.scale_range[-1], "data.scale_range",
             f"must be [min, max] with 0 < min <= max, got {data.scale_range}")

    # The model's input size: the pipeline's and the builder's must agree when both are given.
    override_size = model.overrides.get("image_size")
    if "image_size" in model.overrides and override_size is not None and _size_pair(override_size) is None:
        problems.append(f"model.overrides.image_size: must be an int or [H, W], got {override_size!r}")
    data_size = tuple(data.image_size) if data.image_size is not None and len(data.image_size) == 2 else None
    if data_size and _size_pair(override_size) and _size_pair(override_size) != data_size:
        problems.append(f"data.image_size: {list(data_size)} differs from model.overrides.image_size "
                        f"{override_size}; set one of them")
    family = _family(model.name)
    multiple = _SIZE_MULTIPLE.get(family)
    if multiple:
        for path, size in (("data.image_size", data_size), ("model.overrides.image_size", _size_pair(override_size))):
            if size is not None:
                need(all(v % multiple == 0 for v in size), path,
                     f"{model.name} needs sizes divisible by {multiple}, got {list(size)}")
    if train.multi_scale and family != "yolo":
        problems.append(f"train.multi_scale: only YOLO models take several input sizes, not {model.name}")
    elif train.multi_scale:
        need(all(s > 0 and s % 32 == 0 for s in train.multi_scale), "train.multi_scale",
             f"sizes must be positive multiples of 32, got {train.multi_scale}")
        # The trainer builds the network for any size (image_size=None); a fixed size contradicts that.
        need(override_size is None, "model.overrides.image_size",
             f"multi-scale training builds the network for any input size; remove {override_size!r} "
             "(data.image_size sets the evaluation size)")

    need(train.batch_size > 0, "train.batch_size", f"must be > 0, got {train.batch_size}")
    need(train.steps > 0, "train.steps", f"must be > 0, got {train.steps}")
    need(train.steps_per_loop > 0, "train.steps_per_loop", f"must be > 0, got {train.steps_per_loop}")
    need(train.keep_checkpoints >= 1, "train.keep_checkpoints", f"must be >= 1, got {train.keep_checkpoints}")
    need(train.summary_images >= 0, "train.summary_images", f"must be >= 0, got {train.summary_images}")
    need(train.eval_every >= 0, "train.eval_every", f"must be >= 0 (0: at the end only), got {train.eval_every}")
    for name in ("checkpoint_every", "log_every"):
        value = getattr(train, name)
        need(value > 0, f"train.{name}", f"must be > 0, got {value}")

    optimizer, schedule = train.optimizer, train.schedule
    need(optimizer.learning_rate > 0, "train.optimizer.learning_rate", f"must be > 0, got {optimizer.learning_rate}")
    need(0 <= optimizer.momentum < 1, "train.optimizer.momentum", f"must lie in [0, 1), got {optimizer.momentum}")
    need(optimizer.weight_decay >= 0, "train.optimizer.weight_decay", f"must be >= 0, got {optimizer.weight_decay}")
    need(optimizer.clip_norm is None or optimizer.clip_norm > 0, "train.optimizer.clip_norm",
         f"must be > 0 (or null: no clipping), got {optimizer.clip_norm}")
    need(0 <= schedule.warmup_steps < max(train.steps, 1), "train.schedule.warmup_steps",
         f"must lie in [0, train.steps) = [0, {train.steps}), got {schedule.warmup_steps}")
    need(0 < schedule.warmup_factor <= 1, "train.schedule.warmup_factor",
         f"must lie in (0, 1], got {schedule.warmup_factor}")
    need(0 < schedule.decay_factor <= 1, "train.schedule.decay_factor",
         f"must lie in (0, 1], got {schedule.decay_factor}")
    need(0 <= schedule.final_factor <= 1, "train.schedule.final_factor",
         f"must lie in [0, 1], got {schedule.final_factor}")
    if schedule.name == "step":
        bounds = schedule.boundaries
        need(bool(bounds), "train.schedule.boundaries", "the step schedule needs at least one boundary")
        need(all(a < b for a, b in zip(bounds, bounds[1:])), "train.schedule.boundaries",
             f"must increase, got {bounds}")
        need(all(0 < b < train.steps for b in bounds), "train.schedule.boundaries",
             f"must lie inside (0, train.steps) = (0, {train.steps}), got {bounds}")
    need(0 < train.ema.momentum < 1, "train.ema.momentum", f"must lie in (0, 1), got {train.ema.momentum}")

    need(evaluation.batch_size > 0, "eval.batch_size", f"must be > 0, got {evaluation.batch_size}")
    need(evaluation.max_images is None or evaluation.max_images > 0, "eval.max_images",
         f"must be > 0 (or null: all images), got {evaluation.max_images}")
    if evaluation.metric == "coco":
        need(evaluation.best_metric in COCO_METRIC_KEYS, "eval.best_metric",
             f"{evaluation.best_metric!r} is not a COCO metric ({', '.join(COCO_METRIC_KEYS)})")
    else:
        need(evaluation.best_metric == "mAP" or evaluation.best_metric.startswith("AP/"), "eval.best_metric",
             f"{evaluation.best_metric!r} is not a VOC metric (mAP or AP/<class name>)")

    runtime = cfg.runtime
    need(runtime.tpu is None or runtime.strategy in ("auto", "tpu"), "runtime.tpu",
         f"a TPU address needs strategy tpu or auto, not {runtime.strategy}")
    need(not (runtime.strategy == "tpu" and train.mixed_precision == "mixed_float16"), "train.mixed_precision",
         "TPUs compute in bfloat16: use mixed_bfloat16")
    need(bool(runtime.model_dir.strip()), "runtime.model_dir", "must not be empty")

    export = cfg.export
    need(export.max_detections is None or export.max_detections > 0, "export.max_detections",
         f"must be > 0 (or null: the model's), got {export.max_detections}")
    need(export.score_threshold is None or 0 <= export.score_threshold <= 1, "export.score_threshold",
         f"must lie in [0, 1] (or null: the model's), got {export.score_threshold}")
    need(bool(export.formats), "export.formats", f"name at least one of {', '.join(EXPORT_FORMATS)}")
    need(len(set(export.formats)) == len(export.formats), "export.formats", f"repeats a format: {export.formats}")
    return problems


def validate(cfg: ExperimentConfig, source: str = "<config>") -> ExperimentConfig:
    """Cross-field checks that single fields cannot make; returns ``cfg`` unchanged.

    Checks positive counts (steps, batch sizes, periods), ``eval_every >= 0``,
    input sizes divisible by
    the family's coarsest stride (YOLOv3 32, RetinaNet/EfficientDet 128),
    ``multi_scale`` only for YOLO, ``data.image_size`` agreeing with
    ``model.overrides.image_size``, schedule boundaries inside the run,
    ``best_metric`` belonging to ``metric``, and a known model name. Data
    paths may be empty here: the trainer and evaluator ask for what they use.

    Raises:
        ConfigError: ``source: key.path: reason``, one line per problem.
    """
    problems = _problems(cfg)
    if len(problems) == 1:
        raise ConfigError(f"{source}: {problems[0]}")
    if problems:
        raise ConfigError(f"{source}: {len(problems)} problems:\n" + "\n".join(f"  {p}" for p in problems))
    return cfg


# --------------------------------------------------------------------------------------------------------------
# Pretty print
# --------------------------------------------------------------------------------------------------------------

# What a null or zero means, shown beside the value.
_MEANINGS = {
    ("model.num_classes", None): "from the label map",
    ("data.label_map", None): "label_map.pbtxt beside train_files",
    ("data.image_size", None): "the model's input size",
    ("data.scale_range", None): "the pipeline's default",
    ("train.optimizer.clip_norm", None): "no clipping",
    ("train.eval_every", 0): "at the end only",
    ("eval.max_images", None): "all images",
    ("runtime.tpu", None): "none",
    ("export.max_detections", None): "the model's",
    ("export.score_threshold", None): "the model's",
}


def _render(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return value if value else '""'
    if isinstance(value, (list, dict)):
        return yaml.safe_dump(value, default_flow_style=True, sort_keys=False).strip()
    return repr(value)


def _describe_lines(obj: Any, prefix: str, indent: str) -> list[str]:
    fields = dataclasses.fields(obj)
    width = max(len(f.name) for f in fields)
    lines = []
    for f in fields:
        value = getattr(obj, f.name)
        path = _join(prefix, f.name)
        if dataclasses.is_dataclass(value):
            lines.append(f"{indent}{f.name}")
            lines.extend(_describe_lines(value, path, indent + "  "))
            continue
        meaning = _MEANINGS.get((path, value)) if isinstance(value, (type(None), int)) else None
        if path == "train.batch_size":
            meaning = "global"
        note = f"  ({meaning})" if meaning else ""
        lines.append(f"{indent}{f.name:<{width}}  {_render(value)}{note}")
    return lines


def describe(cfg: ExperimentConfig) -> str:
    """A readable, indented listing of every section and field, with what nulls and zeros mean."""
    return "\n".join(_describe_lines(cfg, "", "")) + "\n"
