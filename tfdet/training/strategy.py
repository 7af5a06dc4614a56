"""Distribution strategies by name, and the TPU preflight.

Names (``runtime.strategy``):

* ``"auto"``: ``MirroredStrategy`` over all GPUs when there is more than one,
  else ``OneDeviceStrategy`` on the GPU or the CPU.
* ``"one_device"``: ``OneDeviceStrategy`` (first GPU, else CPU).
* ``"mirrored"``: ``MirroredStrategy`` over the local GPUs (or the CPU).
* ``"multi_worker_mirrored"``: ``MultiWorkerMirroredStrategy``; the cluster
  comes from the ``TF_CONFIG`` environment variable. It must be created
  before any other TensorFlow op runs, which ``tfdet.training.train`` does.
* ``"tpu"``: ``TPUStrategy`` on the TPU at ``runtime.tpu`` (a grpc address,
  a TPU name, or ``"local"`` for a TPU VM).

The per-replica batch is the global ``train.batch_size`` divided by the
replica count, so the global batch must divide evenly.
"""

from __future__ import annotations

import json
import os

import tensorflow as tf

STRATEGIES = ("auto", "one_device", "mirrored", "multi_worker_mirrored", "tpu")


class StrategyError(ValueError):
    """A strategy that cannot run with this configuration (names the setting and the reason)."""


def create_strategy(name: str, tpu: str | None = None) -> tf.distribute.Strategy:
    """Creates the distribution strategy called ``name`` (see the module docstring).

    Raises:
        StrategyError: an unknown name, ``"tpu"`` without an address, or a
            malformed ``TF_CONFIG``.
    """
    if name not in STRATEGIES:
        raise StrategyError(f"runtime.strategy: unknown strategy {name!r}; known: {', '.join(STRATEGIES)}")
    if name == "tpu":
        return _tpu_strategy(tpu)
    if name == "multi_worker_mirrored":
        _check_tf_config()
        return tf.distribute.MultiWorkerMirroredStrategy()
    gpus = tf.config.list_logical_devices("GPU")
    if name == "mirrored" or (name == "auto" and len(gpus) > 1):
        return tf.distribute.MirroredStrategy()
    return tf.distribute.OneDeviceStrategy(gpus[0].name if gpus else "/cpu:0")


def _check_tf_config() -> None:
    raw = os.environ.get("TF_CONFIG")
    if not raw:
        return  # a single worker; MultiWorkerMirroredStrategy then behaves like MirroredStrategy
    try:
        config = json.loads(raw)
    except json.JSONDecodeError as error:
        raise StrategyError(f"TF_CONFIG: not valid JSON ({error})") from None
    if "cluster" not in config or "task" not in config:
        raise StrategyError("TF_CONFIG: needs 'cluster' and 'task' keys for multi_worker_mirrored")


def _tpu_strategy(address: str | None) -> tf.distribute.Strategy:
    if not address:
        raise StrategyError("runtime.tpu: the tpu strategy needs a TPU address or name (--tpu ADDR, 'local' on a TPU VM)")
    try:
        resolver = tf.distribute.cluster_resolver.TPUClusterResolver(tpu=address)
        tf.config.experimental_connect_to_cluster(resolver)
        tf.tpu.experimental.initialize_tpu_system(resolver)
    except (ValueError, tf.errors.OpError, RuntimeError) as error:
        raise StrategyError(f"runtime.tpu: cannot reach the TPU {address!r}: {error}") from None
    return tf.distribute.TPUStrategy(resolver)


def preflight_tpu(config) -> None:
    """Checks, before connecting to a TPU, what a TPU run needs; fails early with the setting at fault.

    * ``runtime.model_dir`` and every data path must be ``gs://`` (the TPU
      workers cannot read or write the local disk of this machine);
    * static shapes: ``data.image_size`` set, no ``train.multi_scale``.

    Raises:
        StrategyError: the first problem found.
    """
    problems = []
    if not str(config.runtime.model_dir).startswith("gs://"):
        problems.append(f"runtime.model_dir: {config.runtime.model_dir!r} is local; the tpu strategy needs gs://")
    for key in ("train_files", "eval_files", "label_map"):
        value = getattr(config.data, key, None)
        if value and not str(value).startswith("gs://"):
            problems.append(f"data.{key}: {value!r} is local; the tpu strategy needs gs://")
    if not config.data.image_size:
        problems.append("data.image_size: the tpu strategy needs static shapes; set [height, width]")
    if config.train.multi_scale:
        problems.append("train.multi_scale: the tpu strategy needs static shapes; leave it empty")
    if problems:
        raise StrategyError("; ".join(problems))


def check_batch_divides(global_batch: int, replicas: int, key: str = "train.batch_size") -> int:
    """The per-replica batch; raises ``StrategyError`` when ``global_batch`` does not split evenly."""
    if global_batch < replicas or global_batch % replicas:
        raise StrategyError(
            f"{key}: the global batch {global_batch} must be a multiple of the {replicas} replicas "
            f"(each replica gets batch / replicas)"
        )
    return global_batch // replicas


def is_multi_worker(strategy: tf.distribute.Strategy) -> bool:
    """Whether ``strategy`` spans several workers (processes) that each hold part of the data."""
    return num_workers(strategy) > 1


def num_workers(strategy: tf.distribute.Strategy) -> int:
    """How many worker processes ``strategy`` spans (1 unless multi-worker with a ``TF_CONFIG`` cluster)."""
    resolver = getattr(strategy, "cluster_resolver", None)
    if resolver is None or not isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy):
        return 1
    cluster = resolver.cluster_spec().as_dict()
    return max(1, len(cluster.get("chief", [])) + len(cluster.get("worker", [])))


def worker_index(strategy: tf.distribute.Strategy) -> int:
    """This process's task index among the workers (0 when single-worker)."""
    resolver = getattr(strategy, "cluster_resolver", None)
    if resolver is None or not isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy):
        return 0
    if resolver.task_type == "chief":
        return 0
    has_chief = bool(resolver.cluster_spec().as_dict().get("chief"))
    return int(resolver.task_id or 0) + (1 if has_chief else 0)


def is_chief(strategy: tf.distribute.Strategy) -> bool:
    """Whether this process writes checkpoints, summaries and metrics (the chief, or worker 0)."""
    return bool(strategy.extended.should_checkpoint)
