"""A whole training run of the tiny SSD on synthetic records, and what it leaves in the model directory."""

from __future__ import annotations

import argparse
import json
import os

import numpy as np
import pytest
import tensorflow as tf
import yaml

from tests.training.conftest import tiny_config

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def run(synthetic_data, tmp_path_factory):
    """4 steps, checkpoints every 2, evaluation every 2 and at the end, EMA on."""
    from tfdet.training import train

    model_dir = tmp_path_factory.mktemp("run") / "model"
    config = tiny_config(synthetic_data, model_dir, eval_every=2, ema={"enabled": True, "momentum": 0.5})
    result = train(config, progress=False)
    return config, result, model_dir


def _event_tags(folder):
    tags = set()
    for name in (n for n in os.listdir(folder) if n.startswith("events.out.tfevents")):
        for event in tf.compat.v1.train.summary_iterator(os.path.join(folder, name)):
            tags.update(value.tag for value in event.summary.value)
    return tags


def test_run_writes_checkpoints_config_logs_and_metrics(run):
    config, result, model_dir = run
    assert result["step"] == 4 and result["resumed_from"] is None
    assert result["checkpoint"].endswith("ckpt-4")
    names = set(os.listdir(model_dir / "checkpoints"))
    assert {"checkpoint", "ckpt-2.index", "ckpt-4.index"} <= names
    saved = yaml.safe_load((model_dir / "config.yaml").read_text())
    assert saved["train"]["steps"] == 4 and saved["model"]["name"] == "ssd300_vgg16"

    assert {"loss", "loss/cls", "loss/box", "learning_rate", "images_per_second"} <= _event_tags(model_dir / "train")
    assert {"metrics/AP", "metrics/AP50", "detections"} <= _event_tags(model_dir / "eval")

    metrics = json.loads((model_dir / "metrics.json").read_text())
    assert metrics["step"] == 4 and set(metrics["metrics"]) >= {"AP", "AP50", "AP75", "AR100"}
    assert [e["step"] for e in metrics["history"]["eval"]] == [2, 4]
    assert [entry[0] for entry in metrics["history"]["loss"]] == [2, 4]
    assert metrics["best"]["metric"] == "AP50" and os.path.exists(model_dir / "best" / "best.json")
    assert (model_dir / "training_curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def _checkpoint_values(prefix):
    values = {name: tf.train.load_variable(prefix, name) for name, _ in tf.train.list_variables(prefix)}
    return values


def test_ema_weights_differ_from_raw_and_are_what_evaluation_and_the_saved_model_use(run):
    import tfdet
    from tfdet.training.evaluator import Evaluator
    from tfdet.training.trainer import load_trained_model

    config, result, model_dir = run
    detector, prefix, step = load_trained_model(config, "latest")
    assert step == 4 and prefix.endswith("ckpt-4")
    raw = tfdet.build_model("ssd300_vgg16", 3, network="tiny", image_size=64)
    tf.train.Checkpoint(model=raw).restore(prefix).expect_partial()
    differences = [np.abs(a.numpy() - b.numpy()).max() for a, b in zip(detector.trainable_variables,
                                                                       raw.trainable_variables)]
    assert max(differences) > 1e-4  # EMA (momentum 0.5) lags the raw weights

    saved = tfdet.load_model(str(model_dir / "model.keras"))
    for a, b in zip(saved.get_weights(), detector.get_weights()):
        np.testing.assert_array_equal(a, b)

    written = json.loads((model_dir / "eval" / "detections.json").read_text())

    def detections_of(model):
        evaluator = Evaluator(model, tf.distribute.get_strategy(), config.data.eval_files, ["circle", "square",
                              "triangle"], (64, 64), model.resize_mode, batch_size=2)
        return evaluator.run()[1]

    with_ema, with_raw = detections_of(detector), detections_of(raw)
    assert len(with_ema) == len(written)
    np.testing.assert_allclose([d["score"] for d in with_ema], [d["score"] for d in written], rtol=1e-4, atol=1e-6)
    assert len(with_raw) != len(written) or not np.allclose([d["score"] for d in with_raw],
                                                            [d["score"] for d in written], rtol=1e-4)


def test_evaluate_matches_the_final_metrics(run):
    from tfdet.training import evaluate

    config, _, model_dir = run
    metrics = evaluate(config, checkpoint="latest")
    final = json.loads((model_dir / "metrics.json").read_text())["metrics"]
    assert metrics == pytest.approx(final, abs=1e-6)
    assert json.loads((model_dir / "eval" / "evaluation.json").read_text())["step"] == 4


def test_resuming_a_finished_run_restores_step_and_optimizer(run):
    from tfdet.training import train

    config, _, model_dir = run
    result = train(config, progress=False)
    assert result["resumed_from"] == 4 and result["step"] == 4
    values = _checkpoint_values(str(model_dir / "checkpoints" / "ckpt-4"))
    iterations = [v for k, v in values.items() if k.startswith("optimizer/") and "iterations" in k]
    assert iterations and int(iterations[0]) == 4
    assert int(values["step/.ATTRIBUTES/VARIABLE_VALUE"]) == 4


def _cli(command, argv):
    from tfdet.training import cli

    parser = argparse.ArgumentParser(prog="tfdet")
    commands = parser.add_subparsers(dest="command", required=True)
    cli.add_train_parser(commands)
    cli.add_evaluate_parser(commands)
    args = parser.parse_args([command] + argv)
    return (cli.run_train if command == "train" else cli.run_evaluate)(args, parser)


def test_nan_loss_stops_with_the_step_and_keeps_the_last_checkpoint(run, tmp_path, capsys):
    from tfdet.config import config_to_dict

    config, _, model_dir = run
    settings = config_to_dict(config)
    settings["train"].update(steps=8, eval_every=0)
    settings["train"]["optimizer"]["learning_rate"] = 1e30
    settings["train"]["ema"]["enabled"] = True
    path = tmp_path / "nan.yaml"
    path.write_text(yaml.safe_dump(settings))
    index_before = (model_dir / "checkpoints" / "checkpoint").read_text()

    status = _cli("train", ["--config", str(path), "--quiet"])
    message = capsys.readouterr().err.strip().splitlines()[-1]
    assert status == 1
    assert message.startswith("tfdet train: error: non-finite loss at step ")
    step = int(message.split("at step ")[1].split(":")[0])
    assert 5 <= step <= 8 and "loss/cls=" in message and "loss/box=" in message
    assert message.endswith(f"the last good checkpoint is {model_dir / 'checkpoints' / 'ckpt-4'}")
    # Nothing of the bad loop was saved: the index and ckpt-4 are as before and readable.
    assert (model_dir / "checkpoints" / "checkpoint").read_text() == index_before
    assert not any(name.startswith("ckpt-6") or name.startswith("ckpt-8")
                   for name in os.listdir(model_dir / "checkpoints"))
    assert np.isfinite(tf.train.load_variable(str(model_dir / "checkpoints" / "ckpt-4"),
                                              "step/.ATTRIBUTES/VARIABLE_VALUE"))


def test_cli_config_error_is_one_line_and_exit_2(tmp_path, capsys):
    path = tmp_path / "bad.yaml"
    path.write_text("train:\n  optimiser: {name: sgd}\n")
    assert _cli("train", ["--config", str(path)]) == 2
    error = capsys.readouterr().err.strip()
    assert error.startswith("tfdet train: error: ") and "optimiser" in error and len(error.splitlines()) == 1


def test_yolo_multi_scale_trains_at_each_drawn_size(synthetic_data, tmp_path):
    from tfdet.config import config_from_dict
    from tfdet.training import train
    from tfdet.training.trainer import plan_loops, scale_for_loop

    settings = {
        "model": {"name": "yolov3_tiny"},
        "data": {"train_files": f"{synthetic_data}/train-*.tfrecord", "eval_files": f"{synthetic_data}/val-*.tfrecord",
                 "image_size": [64, 64], "augmentation": "yolo", "shuffle_buffer": 8, "seed": 0},
        "train": {"batch_size": 2, "steps": 2, "steps_per_loop": 1, "checkpoint_every": 2, "log_every": 1,
                  "jit_compile": False, "multi_scale": [64, 96], "summary_images": 0,
                  "optimizer": {"name": "adam", "learning_rate": 1e-3}, "schedule": {"name": "constant"}},
        "eval": {"batch_size": 2, "metric": "voc", "best_metric": "mAP"},
        "runtime": {"strategy": "one_device", "model_dir": str(tmp_path / "yolo")},
    }
    # A seed whose two loops use both sizes.
    seed = next(s for s in range(50) if len({scale_for_loop(config_from_dict({**settings, "data": {
        **settings["data"], "seed": s}}), first) for first, _ in plan_loops(0, 2, 1, [2])}) == 2)
    settings["data"]["seed"] = seed
    result = train(config_from_dict(settings), progress=False)
    assert result["step"] == 2 and "mAP" in result["metrics"]
    history = json.loads((tmp_path / "yolo" / "metrics.json").read_text())["history"]["loss"]
    assert [entry[0] for entry in history] == [1, 2] and all(np.isfinite(v) for _, v in history)


def test_cli_evaluate_best_checkpoint_prints_json(run, tmp_path, capsys):
    from tfdet.config import save_config

    config, _, model_dir = run
    save_config(config, tmp_path / "run.yaml")
    status = _cli("evaluate", ["--config", str(tmp_path / "run.yaml"), "--checkpoint", "best", "--json",
                               "--model-dir", str(model_dir)])
    assert status == 0
    metrics = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    best = json.loads((model_dir / "best" / "best.json").read_text())
    assert metrics["AP50"] == pytest.approx(best["value"], abs=1e-6)  # the best checkpoint's own score
    evaluation = json.loads((model_dir / "eval" / "evaluation.json").read_text())
    assert evaluation["checkpoint"].endswith(os.path.join("best", best["checkpoint"]))
