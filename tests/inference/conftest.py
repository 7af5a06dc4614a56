"""A training run directory made by hand and exported once through ``tfdet export --checkpoint-dir``.

The run has what the trainer leaves behind: ``config.yaml`` (with a label map
path) and ``checkpoints/ckpt-N`` holding ``model``. Exporting it through the
command line is itself under test (``test_export_cli_*``); the predict tests
use the export.
"""

from __future__ import annotations

import argparse

import pytest

from tests.export.helpers import CLASS_NAMES, tiny_ssd
from tfrecord_tools.label_map import LabelMap


def run_cli(argv):
    """``tfdet export|predict ...`` through the subcommands' own parser functions."""
    from tfdet.export.cli import add_export_parser, run_export
    from tfdet.inference.cli import add_predict_parser, run_predict

    parser = argparse.ArgumentParser(prog="tfdet")
    commands = parser.add_subparsers(dest="command", required=True)
    add_export_parser(commands)
    add_predict_parser(commands)
    args = parser.parse_args(argv)
    return (run_export if args.command == "export" else run_predict)(args, parser)


@pytest.fixture(scope="session")
def trained_detector():
    return tiny_ssd()


@pytest.fixture(scope="session")
def run_dir(trained_detector, tmp_path_factory):
    import tensorflow as tf

    from tfdet.config import config_from_dict, save_config

    root = tmp_path_factory.mktemp("run")
    LabelMap.from_names(CLASS_NAMES).save(str(root / "label_map.pbtxt"))
    config = config_from_dict({
        "model": {"name": "ssd300_vgg16", "num_classes": 3,
                  "overrides": {"network": "tiny", "image_size": 64, "max_detections": 20}},
        "data": {"train_files": str(root / "train-*.tfrecord"), "label_map": str(root / "label_map.pbtxt")},
        "runtime": {"model_dir": str(root / "elsewhere")},  # the run was moved: export must look beside config.yaml
    })
    save_config(config, str(root / "config.yaml"))
    step = tf.Variable(7, dtype=tf.int64)
    tf.train.Checkpoint(model=trained_detector, step=step).save(str(root / "checkpoints" / "ckpt"))
    return str(root)


@pytest.fixture(scope="session")
def exported(run_dir, tmp_path_factory):
    output = tmp_path_factory.mktemp("export")
    assert run_cli(["export", "--checkpoint-dir", run_dir, "--output", str(output)]) == 0
    return str(output / "saved_model")
