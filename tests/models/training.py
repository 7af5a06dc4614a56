"""The train step the model tests share: forward, losses, gradients, update, under XLA.

The trainer (tfdet.training) owns the real loop; the model tests only need one
compiled step to check that a family trains and compiles.
"""

from __future__ import annotations

import tensorflow as tf


def compiled_train_step(detector, optimizer, jit_compile: bool = True):
    """``step(images, groundtruth) -> losses dict``, compiled with XLA by default."""

    @tf.function(jit_compile=jit_compile)
    def step(images, groundtruth):
        with tf.GradientTape() as tape:
            losses = detector.compute_losses(detector(images, training=True), groundtruth)
        gradients = tape.gradient(losses["loss"], detector.trainable_variables)
        optimizer.apply_gradients(zip(gradients, detector.trainable_variables))
        return losses

    return step


_TWO_REPLICAS = """
import tensorflow as tf
cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
import keras, numpy as np
from tfdet.zoo import build_model
keras.utils.set_random_seed(0)
strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
with strategy.scope():
    d = build_model(NAME, 2, **OVERRIDES)
rng = np.random.default_rng(0)
images = rng.uniform(0, 255, (4, SIZE, SIZE, 3)).astype(np.float32)
boxes = np.zeros((4, 2, 4), np.float32)
classes = -np.ones((4, 2), np.int32)
# Replica 0 gets images 0-1 (two objects and none), replica 1 images 2-3 (one each): unequal counts.
boxes[0] = [[8, 8, 30, 30], [30, 20, 56, 44]]; classes[0] = [0, 1]
boxes[2, 0] = [16, 8, 40, 30]; classes[2, 0] = 1
boxes[3, 0] = [4, 30, 28, 56]; classes[3, 0] = 0
boxes *= SIZE / 64.0
variables = d.trainable_variables
with tf.GradientTape() as tape:
    loss = d.compute_losses(d(images, training=TRAINING), {"boxes": boxes, "classes": classes})["loss"]
reference = tape.gradient(loss, variables)

def replica_step(images, boxes, classes):
    gt = {"boxes": boxes, "classes": classes}
    n = tf.distribute.get_replica_context().all_reduce("sum", d.loss_normalizer(gt))
    with tf.GradientTape() as tape:
        loss = d.compute_losses(d(images, training=TRAINING), gt, normalizer=n)["loss"]
    return tape.gradient(loss, variables)

def shard(array):
    return strategy.experimental_distribute_values_from_function(
        lambda ctx: tf.constant(array[2 * ctx.replica_id_in_sync_group: 2 * ctx.replica_id_in_sync_group + 2]))

per_replica = strategy.run(tf.function(replica_step), args=(shard(images), shard(boxes), shard(classes)))
summed = [strategy.reduce("sum", g, axis=None) for g in per_replica]
worst = max(float(np.max(np.abs(a.numpy() - b.numpy())) / (np.max(np.abs(b.numpy())) + 1e-12))
            for a, b in zip(summed, reference))
local = [float(d.loss_normalizer({"boxes": boxes[i:i + 2], "classes": classes[i:i + 2]})) for i in (0, 2)]
print(strategy.num_replicas_in_sync, worst, local[0], local[1])
"""


def two_replica_gradient_error(name: str, overrides: dict, size: int = 64, training: bool = True):
    """The trainer's multi-replica rule against one device, in a fresh interpreter with two logical CPUs.

    Each replica divides its losses by the normaliser summed over replicas
    (``loss_normalizer``), and the replicas' gradients are summed; the result
    is compared with the one-device gradient of the same four images.

    Args:
        name, overrides: what ``build_model(name, 2, **overrides)`` builds.
        size: the square image size.
        training: the network's mode (batch norm without cross-replica sync
            must run in inference mode for the two to be the same function).

    Returns:
        ``(replicas, worst relative gradient error, (normaliser of replica 0, of replica 1))``.
    """
    import os
    import subprocess
    import sys

    from ..conftest import REPO_ROOT

    script = f"NAME = {name!r}\nOVERRIDES = {overrides!r}\nSIZE = {int(size)}\nTRAINING = {bool(training)}\n"
    env = dict(os.environ, PYTHONPATH=str(REPO_ROOT), CUDA_VISIBLE_DEVICES="", KERAS_BACKEND="tensorflow")
    completed = subprocess.run([sys.executable, "-c", script + _TWO_REPLICAS], capture_output=True, text=True,
                               env=env, timeout=600)
    assert completed.returncode == 0, completed.stderr[-4000:]
    replicas, worst, first, second = completed.stdout.strip().splitlines()[-1].split()
    return int(replicas), float(worst), (float(first), float(second))
