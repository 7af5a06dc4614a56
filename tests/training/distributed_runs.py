"""Subprocess entry points of the distribution tests (a strategy's devices are fixed per process).

``python -m tests.training.distributed_runs mirrored OUT.npz``: in one process
with two logical CPUs, trains the tiny SSD for a few steps on hand-made
batches with ``OneDeviceStrategy`` (global batch 4) and with a two-replica
``MirroredStrategy`` (2 per replica), from the same initial weights, and
saves both results.

``python -m tests.training.distributed_runs multi_worker OUT.npz`` (with
``TF_CONFIG`` set): one worker of a ``MultiWorkerMirroredStrategy`` run;
each worker reads its shard of the same batches.

The optimizer has momentum, weight decay, global-norm clipping (small bound,
so it is active) and EMA, so each of those must follow the multi-replica rule.
"""

from __future__ import annotations

import sys

import numpy as np

STEPS = 2
GLOBAL_BATCH = 4
IMAGE = 64


def _data():
    """8 images with 1-3 boxes each, different per image (so replicas see different positive counts)."""
    rng = np.random.default_rng(7)
    images = rng.uniform(0, 255, (8, IMAGE, IMAGE, 3)).astype("float32")
    boxes = np.zeros((8, 4, 4), "float32")
    classes = np.full((8, 4), -1, "int32")
    for i in range(8):
        for j in range(1 + i % 3):
            y, x = rng.uniform(0, 30, 2)
            h, w = rng.uniform(12, 30, 2)
            boxes[i, j] = (y, x, min(y + h, IMAGE), min(x + w, IMAGE))
            classes[i, j] = (i + j) % 3
    return images, boxes, classes


def _config():
    from tfdet.config import config_from_dict

    return config_from_dict({"train": {
        "batch_size": GLOBAL_BATCH, "steps": 10, "jit_compile": False,
        "optimizer": {"name": "sgd", "learning_rate": 0.05, "momentum": 0.9, "weight_decay": 1e-3, "clip_norm": 0.5},
        "schedule": {"name": "constant"}, "ema": {"enabled": True, "momentum": 0.5},
    }})


def train(strategy, initial=None, jit_compile=False):
    import tensorflow as tf

    import tfdet
    from tfdet.training.optimizer import build_optimizer, ema_pairs
    from tfdet.training.steps import make_train_loop

    images, boxes, classes = _data()
    config = _config()
    with strategy.scope():
        detector = tfdet.build_model("ssd300_vgg16", 3, network="tiny", image_size=IMAGE)
        if initial is not None:
            detector.set_weights(initial)
        optimizer = build_optimizer(config.train, detector.trainable_variables)
        step = tf.Variable(0, dtype=tf.int64)

    def dataset_fn(context):
        data = tf.data.Dataset.from_tensor_slices(({"images": images}, {"boxes": boxes, "classes": classes}))
        data = data.shard(context.num_input_pipelines, context.input_pipeline_id)
        return data.batch(context.get_per_replica_batch_size(GLOBAL_BATCH), drop_remainder=True).repeat()

    iterator = iter(strategy.distribute_datasets_from_function(dataset_fn))
    loop = make_train_loop(strategy, detector, optimizer, step, jit_compile=jit_compile)
    losses = loop(iterator, tf.constant(STEPS))
    return {
        "weights": np.concatenate([np.ravel(w) for w in detector.get_weights()]),
        "ema": np.concatenate([np.ravel(a.numpy()) for _, a in ema_pairs(optimizer)]),
        "loss": losses["loss"].numpy(),
        "iterations": int(optimizer.iterations.numpy()),
        "step": int(step.numpy()),
    }


def mirrored(out):
    import tensorflow as tf

    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
    import keras

    import tfdet

    keras.utils.set_random_seed(1)
    initial = tfdet.build_model("ssd300_vgg16", 3, network="tiny", image_size=IMAGE).get_weights()
    one = train(tf.distribute.OneDeviceStrategy("/cpu:0"), initial)
    # XLA off to keep the test short (two replicas compile twice); the XLA path
    # under MirroredStrategy agreed to 2e-8 when checked by hand.
    two = train(tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"]), initial)
    initial = np.concatenate([np.ravel(w) for w in initial])
    np.savez(out, initial=initial, **{f"one_{k}": v for k, v in one.items()}, **{f"two_{k}": v for k, v in two.items()})


def multi_worker(out):
    import tensorflow as tf

    strategy = tf.distribute.MultiWorkerMirroredStrategy()  # before any other TF work
    import keras

    keras.utils.set_random_seed(1)
    result = train(strategy)
    np.savez(out, replicas=strategy.num_replicas_in_sync, **result)


if __name__ == "__main__":
    {"mirrored": mirrored, "multi_worker": multi_worker}[sys.argv[1]](sys.argv[2])
