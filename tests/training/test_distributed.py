"""Distribution (subprocesses: devices are fixed per process), crash-resume, and a float16 step."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest

from tests.conftest import REPO_ROOT
from tests.training.conftest import tiny_config

pytestmark = pytest.mark.slow


def _env(**extra):
    env = dict(os.environ, PYTHONPATH=str(REPO_ROOT), TF_CPP_MIN_LOG_LEVEL="2", CUDA_VISIBLE_DEVICES="")
    env.update(extra)
    return env


def _run_module(mode, out, timeout=600, **env):
    return subprocess.Popen([sys.executable, "-m", "tests.training.distributed_runs", mode, str(out)],
                            cwd=REPO_ROOT, env=_env(**env), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)


def _finish(process, timeout=600):
    stdout, stderr = process.communicate(timeout=timeout)
    assert process.returncode == 0, stderr[-4000:]
    return stdout


def test_two_replicas_equal_one_device_with_the_same_global_batch(tmp_path):
    out = tmp_path / "mirrored.npz"
    _finish(_run_module("mirrored", out))
    result = np.load(out)
    # Sanity: the weights moved, EMA lags them, both counted every step.
    assert np.abs(result["one_weights"] - result["initial"]).max() > 1e-3
    assert result["one_iterations"] == result["two_iterations"] == 2 == result["one_step"] == result["two_step"]
    np.testing.assert_allclose(result["two_loss"], result["one_loss"], rtol=1e-5)
    np.testing.assert_allclose(result["two_weights"], result["one_weights"], atol=1e-5)
    np.testing.assert_allclose(result["two_ema"], result["one_ema"], atol=1e-5)


def _free_ports(count):
    sockets = [socket.socket() for _ in range(count)]
    for s in sockets:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


def test_multi_worker_mirrored_keeps_both_workers_identical(tmp_path):
    workers = [f"127.0.0.1:{port}" for port in _free_ports(2)]
    processes = []
    for index in range(2):
        tf_config = json.dumps({"cluster": {"worker": workers}, "task": {"type": "worker", "index": index}})
        processes.append(_run_module("multi_worker", tmp_path / f"worker{index}.npz", TF_CONFIG=tf_config))
    try:
        for process in processes:
            _finish(process, timeout=600)
    finally:
        for process in processes:
            if process.poll() is None:
                process.kill()
    first, second = (np.load(tmp_path / f"worker{i}.npz") for i in range(2))
    assert int(first["replicas"]) == 2 and int(first["iterations"]) == 2 == int(second["iterations"])
    np.testing.assert_array_equal(first["weights"], second["weights"])
    np.testing.assert_array_equal(first["ema"], second["ema"])
    np.testing.assert_array_equal(first["loss"], second["loss"])
    assert np.all(np.isfinite(first["loss"]))


def test_sigkill_then_resume_continues_from_the_saved_step(synthetic_data, tmp_path):
    import tensorflow as tf

    from tfdet.config import save_config

    model_dir = tmp_path / "model"
    config = tiny_config(synthetic_data, model_dir, with_eval=False, steps=8, checkpoint_every=2, steps_per_loop=2)
    config_path = tmp_path / "config.yaml"
    save_config(config, config_path)
    script = textwrap.dedent(f"""
        from tfdet.config import load_config
        from tfdet.training import train
        train(load_config({str(config_path)!r}), progress=False)
    """)
    process = subprocess.Popen([sys.executable, "-c", script], cwd=REPO_ROOT, env=_env(),
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    index = model_dir / "checkpoints" / "checkpoint"
    deadline = time.monotonic() + 400
    while not index.exists() and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    process.send_signal(signal.SIGKILL)
    _, stderr = process.communicate(timeout=60)
    assert index.exists(), f"no checkpoint before the kill:\n{stderr[-3000:]}"
    killed_at = int(tf.train.latest_checkpoint(str(model_dir / "checkpoints")).rsplit("-", 1)[1])
    if killed_at >= 8:
        pytest.skip("the run finished before it could be killed")

    from tfdet.training import train

    result = train(config, progress=False)
    assert result["resumed_from"] == killed_at and result["step"] == 8
    prefix = str(model_dir / "checkpoints" / "ckpt-8")
    variables = dict(tf.train.list_variables(prefix))
    iterations = [name for name in variables if name.startswith("optimizer/") and "iterations" in name]
    assert int(tf.train.load_variable(prefix, iterations[0])) == 8
    assert int(tf.train.load_variable(prefix, "step/.ATTRIBUTES/VARIABLE_VALUE")) == 8

    # The data position came back too: an uninterrupted run (same seed, deterministic data) ends identical.
    reference = tiny_config(synthetic_data, tmp_path / "reference", with_eval=False, steps=8, checkpoint_every=8,
                            steps_per_loop=2)
    train(reference, progress=False)
    other = str(tmp_path / "reference" / "checkpoints" / "ckpt-8")
    for name, _ in tf.train.list_variables(prefix):
        if name.startswith(("model/", "optimizer/")):
            np.testing.assert_array_equal(tf.train.load_variable(prefix, name), tf.train.load_variable(other, name),
                                          err_msg=name)


def test_mixed_float16_step_runs_with_loss_scaling_and_finite_loss():
    import keras
    import tensorflow as tf

    import tfdet
    from tfdet.config import config_from_dict
    from tfdet.training.optimizer import build_optimizer, set_precision_policy
    from tfdet.training.steps import make_train_loop

    previous = set_precision_policy("mixed_float16")
    try:
        strategy = tf.distribute.get_strategy()
        detector = tfdet.build_model("ssd300_vgg16", 3, network="tiny", image_size=64)
        train = config_from_dict({"train": {"mixed_precision": "mixed_float16", "steps": 5}}).train
        optimizer = build_optimizer(train, detector.trainable_variables)
        assert isinstance(optimizer, keras.optimizers.LossScaleOptimizer)
        step = tf.Variable(0, dtype=tf.int64)
        images = np.random.default_rng(0).uniform(0, 255, (2, 64, 64, 3)).astype("float32")
        groundtruth = {"boxes": np.array([[[8, 8, 40, 40], [0, 0, 0, 0]]] * 2, "float32"),
                       "classes": np.array([[0, -1], [2, -1]], "int32")}
        data = tf.data.Dataset.from_tensors(({"images": images}, groundtruth)).repeat()
        losses = make_train_loop(strategy, detector, optimizer, step, jit_compile=False)(iter(data), tf.constant(2))
        assert detector.network.layers[-1].compute_dtype == "float16" or detector.compute_dtype == "float16"
        assert np.all(np.isfinite(losses["loss"].numpy())) and int(step.numpy()) == 2
        assert float(optimizer.dynamic_scale.numpy()) > 0
    finally:
        keras.config.set_dtype_policy(previous)
