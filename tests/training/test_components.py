"""Loop planning, strategies and the TPU preflight, checkpoints, atomic files, box mapping."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
import tensorflow as tf

from tfdet.config import config_from_dict
from tfdet.training.checkpoint import CheckpointNotFoundError, CheckpointStore, resolve_checkpoint
from tfdet.training.evaluator import to_original
from tfdet.training.files import write_json_atomic
from tfdet.training.strategy import StrategyError, check_batch_divides, create_strategy, preflight_tpu
from tfdet.training.trainer import NonFiniteLossError, plan_loops, scale_for_loop


def test_plan_loops_end_at_every_period():
    assert plan_loops(0, 10, 4, [5]) == [(0, 4), (4, 1), (5, 4), (9, 1)]
    assert plan_loops(6, 10, 10, [0, 0]) == [(6, 4)]
    assert plan_loops(4, 12, 2, [4, 6]) == [(4, 2), (6, 2), (8, 2), (10, 2)]
    assert plan_loops(10, 10, 2, [4]) == []


def test_multi_scale_draw_is_seeded_by_the_loop_start():
    config = config_from_dict({"model": {"name": "yolov3_tiny"}, "data": {"seed": 3},
                               "train": {"multi_scale": [64, 96, 128]}})
    draws = [scale_for_loop(config, s) for s in range(0, 40, 2)]
    assert set(draws) <= {64, 96, 128} and len(set(draws)) > 1
    assert draws == [scale_for_loop(config, s) for s in range(0, 40, 2)]


def _tpu_config(**runtime):
    data = {"train_files": "gs://bucket/train-*", "eval_files": "gs://bucket/val-*", "image_size": [320, 320]}
    return config_from_dict({"data": data, "runtime": {"strategy": "tpu", "tpu": "grpc://10.0.0.2:8470",
                                                        "model_dir": "gs://bucket/run", **runtime}})


def test_tpu_preflight_rejects_local_paths_and_dynamic_shapes():
    preflight_tpu(_tpu_config())  # all remote, static: fine
    with pytest.raises(StrategyError, match="runtime.model_dir: 'runs/x' is local; the tpu strategy needs gs://"):
        preflight_tpu(_tpu_config(model_dir="runs/x"))
    config = _tpu_config()
    config.data.train_files = "/data/train-*"
    config.data.image_size = None
    with pytest.raises(StrategyError) as error:
        preflight_tpu(config)
    assert "data.train_files" in str(error.value) and "data.image_size" in str(error.value)


def test_strategy_errors_name_the_setting():
    with pytest.raises(StrategyError, match="runtime.strategy"):
        create_strategy("horovod")
    with pytest.raises(StrategyError, match="runtime.tpu"):
        create_strategy("tpu", None)
    assert check_batch_divides(8, 4) == 2
    with pytest.raises(StrategyError, match="train.batch_size: the global batch 6 must be a multiple of the 4"):
        check_batch_divides(6, 4)
    assert isinstance(create_strategy("one_device"), tf.distribute.OneDeviceStrategy)


def _store(folder, keep=3):
    step = tf.Variable(0, dtype=tf.int64)
    weight = tf.Variable([1.0, 2.0])
    checkpoint = tf.train.Checkpoint(step=step, weight=weight)
    return CheckpointStore(str(folder), checkpoint, step, keep), step, weight


def test_checkpoints_resume_and_keep(tmp_path):
    store, step, weight = _store(tmp_path, keep=2)
    for value in (1, 2, 3):
        step.assign(value * 10)
        weight.assign([value, value])
        store.save()
    assert sorted(n for n in os.listdir(tmp_path / "checkpoints") if n.endswith(".index")) == [
        "ckpt-20.index", "ckpt-30.index"]
    fresh, fresh_step, fresh_weight = _store(tmp_path)
    assert fresh.restore_latest().endswith("ckpt-30")
    assert int(fresh_step.numpy()) == 30 and fresh_weight.numpy().tolist() == [3.0, 3.0]


def test_restore_falls_back_past_an_unreadable_newest_and_cleans_orphans(tmp_path):
    store, step, weight = _store(tmp_path)
    for value in (1, 2):
        step.assign(value)
        weight.assign([value, value])
        store.save()
    # A crash mid-save leaves <prefix>_temp; a damaged newest checkpoint lost its data file.
    os.makedirs(tmp_path / "checkpoints" / "ckpt-3_temp")
    os.remove(next(p for p in (tmp_path / "checkpoints").iterdir() if p.name.startswith("ckpt-2.data")))
    fresh, fresh_step, _ = _store(tmp_path)
    assert [os.path.basename(p) for p in fresh.clean_orphans()] == ["ckpt-3_temp"]
    assert fresh.restore_latest().endswith("ckpt-1") and int(fresh_step.numpy()) == 1


def test_best_checkpoint_tracks_the_metric(tmp_path):
    store, step, _ = _store(tmp_path)
    assert store.is_improvement("AP50", 0.2)
    step.assign(5)
    store.save_best("AP50", 0.2)
    assert not store.is_improvement("AP50", 0.1) and store.is_improvement("AP50", 0.3)
    assert not store.is_improvement("AP50", float("nan"))
    assert store.best() == {"metric": "AP50", "value": 0.2, "step": 5, "checkpoint": "ckpt-5"}
    assert resolve_checkpoint(str(tmp_path), "best").endswith(os.path.join("best", "ckpt-5"))
    with pytest.raises(CheckpointNotFoundError, match="no checkpoint found"):
        resolve_checkpoint(str(tmp_path), "latest")
    with pytest.raises(CheckpointNotFoundError, match="not a readable checkpoint"):
        resolve_checkpoint(str(tmp_path), str(tmp_path / "nothing" / "ckpt-1"))


def test_json_is_atomic_and_strict(tmp_path):
    path = write_json_atomic(str(tmp_path / "m.json"), {"AP": float("nan"), "list": [1.5, float("inf")]})
    assert json.loads(open(path).read()) == {"AP": None, "list": [1.5, None]}
    assert os.listdir(tmp_path) == ["m.json"]


def test_boxes_map_back_to_original_pixels():
    # A 200x100 (h, w) image stretched to 64x64: scale (0.32, 0.64).
    boxes = to_original([[32.0, 32.0, 64.0, 70.0]], scale=(0.32, 0.64), original_size=(200, 100))
    np.testing.assert_allclose(boxes, [[100.0, 50.0, 200.0, 100.0]])  # x clipped at the width


def test_non_finite_message_names_step_terms_and_checkpoint():
    error = NonFiniteLossError(7, {"loss": float("nan"), "loss/box": 1.5}, "run/checkpoints/ckpt-6")
    assert str(error) == ("non-finite loss at step 7: loss=nan, loss/box=1.5; training stopped, "
                          "the last good checkpoint is run/checkpoints/ckpt-6")
