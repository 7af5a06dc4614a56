"""tfdet.config: strict YAML, overrides, bases, presets, validation, atomic saving; and ``tfdet models``.

No TensorFlow: the config module and the registry listing load none of it.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import json
import os
import pathlib
import subprocess
import sys
import re
import textwrap
import typing

import pytest
import yaml

from tfdet import config as C
from tfdet.config import ConfigError

CONFIGS = pathlib.Path(__file__).resolve().parent.parent / "configs"


def write(tmp_path: pathlib.Path, name: str, text: str) -> pathlib.Path:
    path = tmp_path / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return path


# A config with every field away from its default, written out by hand.
FULL = {
    "model": {"name": "yolov3", "num_classes": 7, "overrides": {"image_size": None, "box_loss": "giou"}},
    "data": {"train_files": "d/train-*.tfrecord", "eval_files": "d/val-*.tfrecord", "label_map": "d/lm.pbtxt",
             "image_size": [416, 416], "max_instances": 50, "augmentation": "yolo", "scale_range": [0.5, 1.5],
             "shuffle_buffer": 64, "cache": True, "deterministic": True, "seed": 3, "with_masks": False},
    "train": {"batch_size": 4, "steps": 200, "steps_per_loop": 5, "jit_compile": False,
              "mixed_precision": "mixed_bfloat16",
              "optimizer": {"name": "adamw", "learning_rate": 0.5, "momentum": 0.5, "weight_decay": 0.25,
                            "clip_norm": 2.0},
              "schedule": {"name": "step", "warmup_steps": 10, "warmup_factor": 0.5, "boundaries": [100, 150],
                           "decay_factor": 0.5, "final_factor": 0.25},
              "ema": {"enabled": True, "momentum": 0.75},
              "checkpoint_every": 50, "keep_checkpoints": 2, "log_every": 5, "eval_every": 100,
              "summary_images": 0, "multi_scale": [320, 352]},
    "eval": {"metric": "voc", "batch_size": 2, "max_images": 10, "best_metric": "mAP"},
    "runtime": {"strategy": "one_device", "tpu": None, "model_dir": "runs/x"},
    "export": {"max_detections": 20, "score_threshold": 0.5, "formats": ["saved_model", "tflite"]},
}


# ---------------------------------------------------------------------------------------------- dict round trip


def test_dict_to_config_to_dict_round_trips_every_field():
    cfg = C.config_from_dict(FULL)
    assert C.config_to_dict(cfg) == FULL
    assert cfg.train.optimizer.name == "adamw" and cfg.train.schedule.boundaries == [100, 150]
    C.validate(cfg)
    assert C.config_from_dict(C.config_to_dict(cfg)) == cfg


def test_missing_keys_take_the_contract_defaults():
    cfg = C.config_from_dict({})
    assert cfg == C.ExperimentConfig()
    # The shared contract's defaults, written out independently.
    assert (cfg.model.name, cfg.model.num_classes, cfg.model.overrides) == ("ssd300_vgg16", None, {})
    assert (cfg.data.max_instances, cfg.data.augmentation, cfg.data.shuffle_buffer) == (100, "flip", 512)
    assert (cfg.train.batch_size, cfg.train.steps, cfg.train.steps_per_loop) == (8, 1000, 10)
    assert cfg.train.optimizer == C.OptimizerConfig("sgd", 0.01, 0.9, 0.0, None)
    assert cfg.train.schedule == C.ScheduleConfig("cosine", 0, 0.001, [], 0.1, 0.0)
    assert cfg.train.ema == C.EMAConfig(False, 0.9998)
    assert (cfg.train.checkpoint_every, cfg.train.keep_checkpoints, cfg.train.eval_every) == (500, 3, 0)
    assert (cfg.eval.metric, cfg.eval.best_metric, cfg.runtime.strategy) == ("coco", "AP50", "auto")
    assert cfg.export.formats == ["saved_model"]


def test_config_to_dict_holds_only_plain_types():
    def walk(value):
        if isinstance(value, dict):
            return all(isinstance(k, str) and walk(v) for k, v in value.items())
        if isinstance(value, list):
            return all(walk(v) for v in value)
        return value is None or type(value) in (bool, int, float, str)

    for name in C.preset_names():
        assert walk(C.config_to_dict(C.preset(name))), name
    assert walk(C.config_to_dict(C.config_from_dict({"model": {"overrides": {"image_size": (64, 64)}}})))


def test_coco_metric_keys_match_the_evaluator():
    from tfdet.evaluation.coco import STAT_KEYS

    assert tuple(STAT_KEYS) == C.COCO_METRIC_KEYS


# ---------------------------------------------------------------------------------------------- strict YAML


def test_unknown_key_names_file_path_and_suggestion(tmp_path):
    path = write(tmp_path, "cfg.yaml", "train:\n  optimizer:\n    lr: 0.1\n")
    with pytest.raises(ConfigError) as error:
        C.load_config(path)
    assert str(error.value) == f"{path}: train.optimizer.lr: unknown key (did you mean learning_rate?)"
    assert isinstance(error.value, ValueError)


@pytest.mark.parametrize("text, expected", [
    ("trian: {steps: 3}", "trian: unknown key (did you mean train?)"),
    ("train: {batchsize: 3}", "train.batchsize: unknown key (did you mean batch_size?)"),
    ("data: {augmentaton: flip}", "data.augmentaton: unknown key (did you mean augmentation?)"),
    ("train: {optimizer: {wd: 0.1}}", "train.optimizer.wd: unknown key (did you mean weight_decay?)"),
    ("eval: {zzz: 1}", "eval.zzz: unknown key (known keys: metric, batch_size, max_images, best_metric)"),
])
def test_unknown_keys_get_the_closest_known_key(tmp_path, text, expected):
    path = write(tmp_path, "c.yaml", text)
    with pytest.raises(ConfigError, match="^" + re.escape(f"{path}: {expected}") + "$"):
        C.load_config(path)


def test_a_key_given_twice_is_an_error_with_both_lines(tmp_path):
    path = write(tmp_path, "dup.yaml", "train:\n  steps: 10\n  batch_size: 2\n  steps: 20\n")
    with pytest.raises(ConfigError, match=r"dup\.yaml: train\.steps: duplicate key \(lines 2 and 4\)"):
        C.load_config(path)


@pytest.mark.parametrize("text, message", [
    ("train: {steps: abc}", "train.steps: expected int, got string 'abc'"),
    ("train: {steps: 1.5}", "train.steps: expected int, got float 1.5"),
    ("train: {steps: true}", "train.steps: expected int, got bool True"),
    ("train: {steps: null}", "train.steps: expected int, got null None"),
    ("train: {jit_compile: 1}", "train.jit_compile: expected bool, got int 1"),
    ("data: {cache: 'yes'}", "data.cache: expected bool, got string 'yes'"),
    ("train: {optimizer: {learning_rate: fast}}", "train.optimizer.learning_rate: expected float, got string"),
    ("train: {schedule: {boundaries: 5}}", "train.schedule.boundaries: expected a list of int, got int 5"),
    ("train: {schedule: {boundaries: [5, x]}}", r"train.schedule.boundaries\[1\]: expected int, got string 'x'"),
    ("data: {image_size: [320, 32.5]}", r"data.image_size\[1\]: expected int, got float 32.5"),
    ("model: {num_classes: '3'}", "model.num_classes: expected int or null, got string '3'"),
    ("model: {overrides: [1]}", "model.overrides: expected a mapping, got list"),
    ("train: 5", "train: expected a mapping with keys batch_size, steps"),
    ("export: {formats: saved_model}", "export.formats: expected a list of string, got string"),
    ("train: {optimizer: {learning_rate: .inf}}", "train.optimizer.learning_rate: expected a finite number"),
    ("train: {ema: {momentum: .nan}}", "train.ema.momentum: expected a finite number"),
])
def test_wrong_types_name_file_path_expected_and_got(tmp_path, text, message):
    path = write(tmp_path, "t.yaml", text)
    with pytest.raises(ConfigError, match=f"^{re.escape(str(path))}: {message}"):
        C.load_config(path)


def test_ints_for_floats_numbers_without_dot_nulls_and_square_sizes_are_accepted(tmp_path):
    path = write(tmp_path, "ok.yaml", """\
        model: {num_classes: null, name: yolov3_tiny}
        data: {image_size: 320, cache: yes}
        train:
          optimizer: {learning_rate: 1e-3, momentum: 0, clip_norm: 5}
    """)
    cfg = C.load_config(path)
    # PyYAML reads 1e-3 as a string (YAML 1.1); the schema knows the field is a float.
    assert cfg.train.optimizer.learning_rate == 0.001 and type(cfg.train.optimizer.learning_rate) is float
    assert type(cfg.train.optimizer.momentum) is float and cfg.train.optimizer.clip_norm == 5.0
    assert cfg.data.image_size == [320, 320] and cfg.data.cache is True and cfg.model.num_classes is None


@pytest.mark.parametrize("text, path", [
    ("train: {optimizer: {name: sgdd}}", "train.optimizer.name: 'sgdd' is not one of sgd, adam, adamw "
                                         r"\(did you mean sgd\?\)"),
    ("train: {schedule: {name: poly}}", "train.schedule.name: 'poly' is not one of cosine, step, constant"),
    ("train: {mixed_precision: fp16}", "train.mixed_precision: 'fp16' is not one of float32"),
    ("runtime: {strategy: mirror}", "runtime.strategy: 'mirror' is not one of auto.*did you mean mirrored"),
    ("eval: {metric: map}", "eval.metric: 'map' is not one of coco, voc"),
    ("data: {augmentation: mosaic}", "data.augmentation: 'mosaic' is not one of none, flip, scale_jitter, ssd, yolo"),
    ("export: {formats: [saved_model, tfjs]}", r"export.formats\[1\]: 'tfjs' is not one of saved_model"),
])
def test_enumerated_fields_list_their_allowed_values(tmp_path, text, path):
    file = write(tmp_path, "e.yaml", text)
    with pytest.raises(ConfigError, match=f"e.yaml: {path}"):
        C.load_config(file)


@pytest.mark.parametrize("text, message", [
    ("- a\n- b\n", "expected a mapping of sections at the top level, got list"),
    ("train: {steps: [1,\n", "not valid YAML"),
    ("a: !!python/object:os.system x\n", "not valid YAML"),
])
def test_malformed_files_are_config_errors(tmp_path, text, message):
    path = write(tmp_path, "m.yaml", text)
    with pytest.raises(ConfigError, match=message):
        C.load_config(path)


def test_missing_file_and_empty_file(tmp_path):
    with pytest.raises(ConfigError, match="nope.yaml: no such config file"):
        C.load_config(tmp_path / "nope.yaml")
    assert C.load_config(write(tmp_path, "empty.yaml", "")) == C.ExperimentConfig()


# ---------------------------------------------------------------------------------------------- overrides


def test_overrides_parse_values_as_yaml():
    base = C.ExperimentConfig()
    cfg = C.apply_overrides(base, [
        "train.steps=500", "train.optimizer.learning_rate=1e-4", "train.optimizer.clip_norm=null",
        "train.jit_compile=false", "data.image_size=[256, 320]", "model.overrides.image_size=128",
        "model.overrides.network=tiny", "train.optimizer={name: adam}", "runtime.model_dir=runs/a=b",
        "model.num_classes=",
    ])
    assert cfg.train.steps == 500 and cfg.train.optimizer.learning_rate == 1e-4
    assert cfg.train.optimizer.clip_norm is None and cfg.train.jit_compile is False
    assert cfg.data.image_size == [256, 320]
    assert cfg.model.overrides == {"image_size": 128, "network": "tiny"}
    # A mapping for a section updates it: the learning rate set before stays.
    assert cfg.train.optimizer.name == "adam" and cfg.train.optimizer.learning_rate == 1e-4
    assert cfg.runtime.model_dir == "runs/a=b" and cfg.model.num_classes is None
    assert base == C.ExperimentConfig()  # the input is not changed


@pytest.mark.parametrize("override, message", [
    ("train.optimzer.learning_rate=3", r"--set train.optimzer.learning_rate=3: train.optimzer: unknown key "
                                       r"\(did you mean optimizer\?\)"),
    ("train.steps=many", "--set train.steps=many: train.steps: expected int, got string 'many'"),
    ("train.steps", "--set train.steps: expected KEY=VALUE"),
    ("=3", "expected a dotted key"),
    ("train..steps=3", "expected a dotted key"),
    ("train.steps.x=3", r"train.steps: is not a section \(it holds int\)"),
    ("eval.metric=ap", "eval.metric: 'ap' is not one of coco, voc"),
    ("data.image_size=[1, 2", "--set data.image_size=\\[1, 2: value '\\[1, 2' is not valid YAML"),
    ("model.overrides.image_size.h=3", "holds null|holds int"),
])
def test_override_errors_name_the_override(override, message):
    cfg = C.apply_overrides(C.ExperimentConfig(), ["model.overrides.image_size=64"])
    with pytest.raises(ConfigError, match=message):
        C.apply_overrides(cfg, [override])


def test_load_config_applies_overrides_after_the_file_then_validates(tmp_path):
    path = write(tmp_path, "o.yaml", "train: {steps: 100}\n")
    assert C.load_config(path, overrides=["train.steps=40"]).train.steps == 40
    with pytest.raises(ConfigError, match=r"o.yaml: train.steps: must be > 0, got 0"):
        C.load_config(path, overrides=["train.steps=0"])


# ---------------------------------------------------------------------------------------------- bases


def test_base_preset_then_file_values(tmp_path):
    path = write(tmp_path, "b.yaml", """\
        base: ssd300_vgg16
        model: {num_classes: 3, overrides: {network: tiny}}
        train: {steps: 200000, optimizer: {learning_rate: 0.002}}
    """)
    cfg = C.load_config(path)
    assert cfg.model.name == "ssd300_vgg16" and cfg.model.num_classes == 3
    # From the preset: what the file does not name.
    assert cfg.train.optimizer.momentum == 0.9 and cfg.train.optimizer.weight_decay == 5e-4
    assert cfg.data.augmentation == "ssd"
    assert cfg.train.optimizer.learning_rate == 0.002 and cfg.train.steps == 200000


def test_base_files_chain_relative_to_the_file_and_merge_mappings(tmp_path):
    write(tmp_path, "shared/root.yaml", """\
        base: yolov3_tiny
        model: {overrides: {image_size: 128, box_loss: giou}}
        train: {multi_scale: [], steps: 3000}
        export: {formats: [saved_model, onnx]}
    """)
    write(tmp_path, "shared/mid.yaml", "base: root.yaml\ntrain: {batch_size: 2}\n")
    path = write(tmp_path, "exp/leaf.yml", """\
        base: ../shared/mid.yaml
        model: {overrides: {image_size: 96}}
        export: {formats: [tflite]}
    """)
    cfg = C.load_config(path)
    assert cfg.model.name == "yolov3_tiny" and cfg.data.augmentation == "yolo"  # preset at the root
    assert cfg.train.steps == 3000 and cfg.train.batch_size == 2
    assert cfg.model.overrides == {"image_size": 96, "box_loss": "giou"}  # mappings merge
    assert cfg.export.formats == ["tflite"]  # lists replace


def test_base_errors(tmp_path):
    write(tmp_path, "a.yaml", "base: b.yaml\n")
    write(tmp_path, "b.yaml", "base: a.yaml\n")
    with pytest.raises(ConfigError, match="cycle"):
        C.load_config(tmp_path / "a.yaml")
    with pytest.raises(ConfigError, match=r"base: no preset for model 'ssd300_vgg' \(did you mean ssd300_vgg16\?"):
        C.load_config(write(tmp_path, "p.yaml", "base: ssd300_vgg\n"))
    with pytest.raises(ConfigError, match="missing.yaml: no such config file"):
        C.load_config(write(tmp_path, "m.yaml", "base: missing.yaml\n"))
    with pytest.raises(ConfigError, match="base: expected a preset name or a YAML path, got int 3"):
        C.load_config(write(tmp_path, "n.yaml", "base: 3\n"))
    # An error inside the base names the base file, not the file that uses it.
    bad = write(tmp_path, "bad_base.yaml", "train: {stpes: 3}\n")
    with pytest.raises(ConfigError, match=f"^{re.escape(str(bad))}: train.stpes: unknown key"):
        C.load_config(write(tmp_path, "user.yaml", "base: bad_base.yaml\n"))
    # ... and an error in the file names the file even though its base is fine.
    user = write(tmp_path, "user2.yaml", "base: yolov3\ntrain: {stpes: 3}\n")
    with pytest.raises(ConfigError, match=f"^{re.escape(str(user))}: train.stpes"):
        C.load_config(user)


def test_config_from_dict_takes_a_preset_base():
    cfg = C.config_from_dict({"base": "efficientdet_d0", "train": {"steps": 5000}})
    assert cfg.train.ema.enabled and cfg.train.steps == 5000


# ---------------------------------------------------------------------------------------------- presets


@functools.lru_cache(maxsize=1)
def registry_names() -> tuple[str, ...]:
    # A fresh process: other tests register throwaway names in this one's registry.
    code = "import json, tfdet; print(json.dumps(tfdet.list_models()))"
    return tuple(json.loads(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                                     check=True).stdout))


def test_every_registry_name_and_the_planned_families_have_a_valid_preset():
    planned = ["retinanet_resnet50_fpn", "retinanet_resnet101_fpn"] + [f"efficientdet_d{i}" for i in range(8)]
    for name in set(registry_names()) | set(planned):
        cfg = C.preset(name)
        assert cfg.model.name == name
        C.validate(cfg, source=name)


def test_preset_values_follow_the_papers():
    for name in ("ssd300_vgg16", "ssd512_vgg16"):
        cfg = C.preset(name)
        assert (cfg.train.optimizer.name, cfg.train.optimizer.learning_rate, cfg.train.optimizer.momentum,
                cfg.train.optimizer.weight_decay) == ("sgd", 1e-3, 0.9, 5e-4)
        assert cfg.data.augmentation == "ssd" and cfg.train.schedule.warmup_steps > 0
    yolo, tiny = C.preset("yolov3"), C.preset("yolov3_tiny")
    assert yolo.train.multi_scale == [320, 352, 384, 416, 448, 480, 512, 544, 576, 608]
    assert tiny.train.multi_scale == [] and tiny.data.augmentation == yolo.data.augmentation == "yolo"
    assert (yolo.train.optimizer.name, yolo.train.optimizer.learning_rate) == ("adam", 1e-3)
    for name in ("retinanet_resnet50_fpn", "retinanet_resnet101_fpn"):
        opt = C.preset(name).train.optimizer
        assert (opt.name, opt.learning_rate, opt.momentum, opt.weight_decay) == ("sgd", 0.01, 0.9, 1e-4)
        assert C.preset(name).data.augmentation == "scale_jitter"
        assert C.preset(name).data.scale_range == [0.8, 1.2]
    for index in range(8):
        cfg = C.preset(f"efficientdet_d{index}")
        opt = cfg.train.optimizer
        assert (opt.name, opt.learning_rate, opt.momentum, opt.weight_decay) == ("sgd", 0.08, 0.9, 4e-5)
        assert cfg.train.schedule.name == "cosine" and cfg.train.schedule.warmup_steps > 0
        assert cfg.train.ema == C.EMAConfig(enabled=True, momentum=0.9998)
        assert cfg.data.augmentation == "scale_jitter"


def test_presets_are_fresh_objects_and_unknown_names_fail():
    first = C.preset("yolov3")
    first.train.multi_scale.append(640)
    first.model.overrides["x"] = 1
    assert 640 not in C.preset("yolov3").train.multi_scale and "x" not in C.preset("yolov3").model.overrides
    with pytest.raises(ConfigError, match="no preset for model 'yolo3'.*did you mean yolov3"):
        C.preset("yolo3")


# ---------------------------------------------------------------------------------------------- validate


def with_changes(**changes) -> C.ExperimentConfig:
    """A valid config (synthetic SSD-like) with ``section__field=value`` changes."""
    data = C.config_to_dict(C.preset("ssd300_vgg16"))
    for key, value in changes.items():
        node = data
        *parents, last = key.split("__")
        for part in parents:
            node = node[part]
        node[last] = value
    return C.config_from_dict(data)


@pytest.mark.parametrize("changes, message", [
    ({"train__steps": 0}, "train.steps: must be > 0, got 0"),
    ({"train__batch_size": 0}, "train.batch_size: must be > 0"),
    ({"train__eval_every": -100}, "train.eval_every: must be >= 0"),
    ({"train__checkpoint_every": 0}, "train.checkpoint_every: must be > 0"),
    ({"train__schedule__boundaries": [100_000, 80_000]}, "train.schedule.boundaries: must increase"),
    ({"train__schedule__boundaries": [80_000, 130_000]},
     r"train.schedule.boundaries: must lie inside \(0, train.steps\)"),
    ({"train__schedule__boundaries": []}, "train.schedule.boundaries: the step schedule needs at least one boundary"),
    ({"train__schedule__warmup_steps": 120_000}, "train.schedule.warmup_steps: must lie in"),
    ({"train__optimizer__learning_rate": 0.0}, "train.optimizer.learning_rate: must be > 0"),
    ({"train__optimizer__momentum": 1.0}, r"train.optimizer.momentum: must lie in \[0, 1\)"),
    ({"train__ema__momentum": 1.0}, "train.ema.momentum"),
    ({"train__multi_scale": [320]}, "train.multi_scale: only YOLO models"),
    ({"model__name": "ssd300_vgg61"}, r"model.name: unknown model 'ssd300_vgg61' \(did you mean ssd300_vgg16\?\)"),
    ({"model__num_classes": 0}, "model.num_classes: counts foreground classes"),
    ({"model__overrides": {"num_classes": 3}}, "model.overrides.num_classes: set model.num_classes instead"),
    ({"data__image_size": [300, 0]}, "data.image_size: must be"),
    ({"data__image_size": [300, 300, 3]}, "data.image_size: must be"),
    ({"data__scale_range": [1.5, 0.5]}, "data.scale_range: must be"),
    ({"data__image_size": [320, 320], "model__overrides": {"image_size": 300}},
     r"data.image_size: \[320, 320\] differs from model.overrides.image_size 300"),
    ({"eval__best_metric": "mAP"}, "eval.best_metric: 'mAP' is not a COCO metric"),
    ({"eval__metric": "voc"}, "eval.best_metric: 'AP50' is not a VOC metric"),
    ({"eval__max_images": 0}, "eval.max_images: must be > 0"),
    ({"runtime__strategy": "mirrored", "runtime__tpu": "grpc://1.2.3.4:8470"}, "runtime.tpu: a TPU address"),
    ({"runtime__strategy": "tpu", "train__mixed_precision": "mixed_float16"},
     "train.mixed_precision: TPUs compute in bfloat16: use mixed_bfloat16"),
    ({"export__formats": []}, "export.formats: name at least one"),
    ({"export__score_threshold": 1.5}, "export.score_threshold: must lie in"),
])
def test_validate_names_the_key_and_reason(changes, message):
    with pytest.raises(ConfigError) as error:
        C.validate(with_changes(**changes), source="where")
    # One line "where: key: reason", or "where: N problems:" and one "  key: reason" line each.
    assert re.search(f"^where: {message}|^  {message}", str(error.value), re.MULTILINE), str(error.value)
    assert str(error.value).startswith("where: ")


@pytest.mark.parametrize("name, sizes, ok", [
    ("yolov3_tiny", {"data__image_size": [128, 160]}, True),
    ("yolov3_tiny", {"data__image_size": [128, 100]}, False),
    ("yolov3_tiny", {"model__overrides": {"image_size": 100}}, False),
    ("yolov3_tiny", {"model__overrides": {"image_size": None}}, True),
    ("efficientdet_d0", {"model__overrides": {"image_size": 384}}, True),
    ("efficientdet_d0", {"model__overrides": {"image_size": 320}}, False),
    ("retinanet_resnet50_fpn", {"data__image_size": [640, 600]}, False),
    ("ssd300_vgg16", {"data__image_size": [300, 300]}, True),
])
def test_input_sizes_divide_by_the_family_stride(name, sizes, ok):
    data = C.config_to_dict(C.preset(name))
    cfg = C.config_from_dict(data)
    cfg = dataclasses.replace(cfg, data=dataclasses.replace(cfg.data, image_size=sizes.get("data__image_size")),
                              model=dataclasses.replace(cfg.model, overrides=sizes.get("model__overrides", {})))
    if ok:
        C.validate(cfg)
    else:
        with pytest.raises(ConfigError, match="needs sizes divisible by (32|128)"):
            C.validate(cfg)


def test_multi_scale_refuses_a_fixed_network_size():
    cfg = C.preset("yolov3")
    C.validate(C.apply_overrides(cfg, ["model.overrides.image_size=null"]))
    with pytest.raises(ConfigError, match="model.overrides.image_size: multi-scale training builds the network"):
        C.validate(C.apply_overrides(cfg, ["model.overrides.image_size=416"]))
    with pytest.raises(ConfigError, match=r"train.multi_scale: sizes must be positive multiples of 32"):
        C.validate(C.apply_overrides(cfg, ["train.multi_scale=[320, 330]"]))


def test_validate_lists_every_problem():
    cfg = with_changes(train__steps=0, train__batch_size=-1, eval__batch_size=0)
    with pytest.raises(ConfigError) as error:
        C.validate(cfg, source="x.yaml")
    lines = str(error.value).splitlines()
    assert lines[0].startswith("x.yaml: ") and "problems" in lines[0]
    assert any("train.steps" in line for line in lines) and any("train.batch_size" in line for line in lines)
    assert any("eval.batch_size" in line for line in lines)


# ---------------------------------------------------------------------------------------------- configs/


CONFIG_FILES = sorted(CONFIGS.glob("*.yaml"))


def test_the_shipped_config_set_is_complete():
    names = {path.name for path in CONFIG_FILES}
    assert {"ssd300_voc.yaml", "ssd512_voc.yaml", "yolov3_coco.yaml", "yolov3_tiny_custom.yaml",
            "ssd300_kitti.yaml", "retinanet_resnet50_coco.yaml", "efficientdet_d0_coco.yaml",
            "efficientdet_d1_voc.yaml", "custom.yaml", "synthetic_ssd.yaml", "synthetic_yolo.yaml"} <= names


def test_every_registered_model_has_a_shipped_config():
    from tfdet import list_models

    models = {C.load_config(path).model.name for path in CONFIG_FILES}
    assert set(list_models()) <= models, sorted(set(list_models()) - models)


@pytest.mark.parametrize("path", CONFIG_FILES, ids=lambda p: p.name)
def test_every_shipped_config_loads_and_validates(path):
    cfg = C.load_config(path)
    assert C.validate(cfg) is cfg
    # Relative placeholders only: nothing machine-specific.
    for pattern in (cfg.data.train_files, cfg.data.eval_files, cfg.runtime.model_dir):
        assert pattern and not os.path.isabs(pattern), pattern


def test_synthetic_configs_use_small_models():
    ssd = C.load_config(CONFIGS / "synthetic_ssd.yaml")
    assert ssd.model.name.startswith("ssd") and ssd.model.overrides == {"network": "tiny", "image_size": 128}
    yolo = C.load_config(CONFIGS / "synthetic_yolo.yaml")
    assert yolo.model.name == "yolov3_tiny" and yolo.model.overrides == {"image_size": 128}


def test_custom_yaml_names_every_field():
    raw = yaml.safe_load((CONFIGS / "custom.yaml").read_text(encoding="utf-8"))
    assert "base" not in raw

    def keys(cls, prefix=""):
        out = set()
        for name, hint in typing.get_type_hints(cls).items():
            out.add(prefix + name)
            if dataclasses.is_dataclass(hint):
                out |= keys(hint, f"{prefix}{name}.")
        return out

    def present(node, prefix=""):
        out = set()
        for key, value in node.items():
            out.add(f"{prefix}{key}")
            if isinstance(value, dict) and key != "overrides":
                out |= present(value, f"{prefix}{key}.")
        return out

    assert keys(C.ExperimentConfig) <= present(raw)


# ---------------------------------------------------------------------------------------------- saving


def test_save_config_writes_a_temporary_file_then_renames_it(tmp_path, monkeypatch):
    target = tmp_path / "run" / "config.yaml"
    target.parent.mkdir()
    target.write_text("old\n")
    renames = []
    real_replace = os.replace

    def spy(src, dst):
        src, dst = pathlib.Path(src), pathlib.Path(dst)
        # At rename time the new content is complete under another name; the old file is untouched.
        assert src != dst and src.parent == dst.parent
        assert yaml.safe_load(src.read_text())["train"]["steps"] == 123
        assert dst.read_text() == "old\n"
        renames.append((src, dst))
        real_replace(src, dst)

    monkeypatch.setattr(os, "replace", spy)
    cfg = C.config_from_dict(FULL)
    cfg.train.steps = 123
    cfg.train.schedule.boundaries = [50, 100]
    C.save_config(cfg, target)
    assert len(renames) == 1 and renames[0][1] == target
    assert sorted(p.name for p in target.parent.iterdir()) == ["config.yaml"]
    assert C.load_config(target) == cfg


def test_save_config_failure_leaves_the_old_file_and_no_temporary(tmp_path, monkeypatch):
    target = tmp_path / "config.yaml"
    target.write_text("old\n")

    def broken(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", broken)
    with pytest.raises(OSError, match="disk full"):
        C.save_config(C.ExperimentConfig(), target)
    assert target.read_text() == "old\n" and sorted(p.name for p in tmp_path.iterdir()) == ["config.yaml"]


@pytest.mark.parametrize("name", ["ssd300_vgg16", "yolov3", "retinanet_resnet50_fpn", "efficientdet_d3"])
def test_saved_presets_round_trip(tmp_path, name):
    cfg = C.preset(name)
    assert C.load_config(C.save_config(cfg, tmp_path / f"{name}.yaml")) == cfg


def test_describe_lists_every_section_and_value():
    text = C.describe(C.config_from_dict(FULL))
    for line in ("model", "  name         yolov3", "  image_size      [416, 416]", "    name           adamw",
                 "    boundaries     [100, 150]", "  formats          [saved_model, tflite]",
                 "  batch_size        4  (global)", "  tpu        null  (none)"):
        assert line + "\n" in text, line


# ---------------------------------------------------------------------------------------------- tfdet models


def run_models_cli(*argv):
    from tfdet.models_cli import add_models_parser, run_models

    parser = argparse.ArgumentParser(prog="tfdet")
    add_models_parser(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["models", *argv])
    return run_models(args, parser)


def test_models_lists_every_registry_name_with_a_description(capsys):
    assert run_models_cli() == 0
    out = capsys.readouterr().out
    for name in registry_names():
        line = next(line for line in out.splitlines() if line.split(" ")[0] == name)
        assert "no description" not in line, name
    assert run_models_cli("--json") == 0
    rows = json.loads(capsys.readouterr().out)
    assert {row["name"] for row in rows} >= set(registry_names()) and all(row["preset"] for row in rows
                                                                          if row["name"] in registry_names())


def test_models_name_shows_the_preset_and_unknown_names_exit_2(capsys):
    assert run_models_cli("yolov3") == 0
    out = capsys.readouterr().out
    assert out.startswith("yolov3: YOLOv3") and "multi_scale       [320, 352," in out
    assert run_models_cli("ssd300_vgg16", "--json") == 0
    shown = json.loads(capsys.readouterr().out)
    assert C.config_from_dict(shown["preset"]) == C.preset("ssd300_vgg16")
    with pytest.raises(SystemExit) as exit_info:
        run_models_cli("yolov4")
    assert exit_info.value.code == 2 and "did you mean yolov3" in capsys.readouterr().err


def test_config_and_models_listing_load_no_tensorflow():
    code = ("import sys, argparse\n"
            "from tfdet.models_cli import add_models_parser, run_models\n"
            "import tfdet.config as c\n"
            "c.load_config(sys.argv[1])\n"
            "p = argparse.ArgumentParser(); add_models_parser(p.add_subparsers(dest='command'))\n"
            "run_models(p.parse_args(['models']), p)\n"
            "print([m for m in ('tensorflow', 'keras', 'numpy') if m in sys.modules])\n")
    out = subprocess.run([sys.executable, "-c", code, str(CONFIGS / "yolov3_coco.yaml")], capture_output=True,
                         text=True, check=True).stdout
    assert out.strip().splitlines()[-1] == "[]"
