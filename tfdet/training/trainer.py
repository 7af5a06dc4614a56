"""``train(config)`` and ``evaluate(config)``: the custom training loop of tfdet.

Keras 3 ``fit`` fails under ``MultiWorkerMirroredStrategy``
(keras-team/keras#20585), so training is a plain loop: the model and the
optimizer are built inside ``strategy.scope()``, the data comes from
``strategy.distribute_datasets_from_function`` (each input pipeline gets the
``InputContext`` and builds per-replica batches of ``batch_size / replicas``),
and a ``tf.function`` runs ``train.steps_per_loop`` steps per host call
(``tfdet.training.steps``).

Model directory (``runtime.model_dir``)::

    config.yaml            the resolved config
    checkpoints/ckpt-N.*   every train.checkpoint_every steps and at the end
    best/ckpt-N.*          best eval.best_metric so far (best/best.json)
    train/ eval/           TensorBoard logs
    metrics.json           last evaluation, best, and the loss/metric history
    training_curves.png    loss and eval metric against the step
    model.keras            the final model (EMA weights when EMA is on)

Resume: a run restarted on the same model directory restores the model,
the optimizer (slots, iteration count, EMA, loss scale) and the step from the
newest checkpoint. The distributed iterator of TF 2.21 cannot be
checkpointed (``tf.train.Checkpoint`` rejects ``DistributedIterator``), so the
data position is restored by a deterministic order instead: each input
pipeline is rebuilt with the same seed and skips the batches already consumed
(``step * replicas / pipelines``). With ``data.deterministic: true`` the
resumed run sees exactly the batches the uninterrupted run would have seen;
skipping reads (decodes) the skipped records again, which costs time
proportional to the step.

A non-finite loss stops training with :class:`NonFiniteLossError` naming the
step and the loss terms; nothing of that loop is saved, so the newest
checkpoint is the last good state.

YOLO multi-scale (``train.multi_scale``): the model is built with
``image_size=None``; every host loop draws one square size (NumPy, seeded by
``data.seed`` and the loop's first step, so a resumed run draws the same) and
reads from a pipeline of that size. The loop function traces once per size
(each size a separate XLA program); evaluation uses ``data.image_size`` or
the largest size.
"""

from __future__ import annotations

import os
import tempfile

import keras
import numpy as np
import tensorflow as tf

from tfdet.training import files
from tfdet.training.checkpoint import CheckpointStore, resolve_checkpoint
from tfdet.training.optimizer import (
    averaged_weights,
    build_optimizer,
    ema_pairs,
    learning_rate_at,
    schedule_summary,
    set_precision_policy,
)
from tfdet.training.steps import make_train_loop
from tfdet.training.strategy import (
    StrategyError,
    check_batch_divides,
    create_strategy,
    is_chief,
    preflight_tpu,
    worker_index,
)
from tfdet.training.summaries import ProgressBar, SummaryLogger, Throughput, plot_training_curves

METRICS_FILE = "metrics.json"
CURVES_FILE = "training_curves.png"
MODEL_FILE = "model.keras"
CONFIG_FILE = "config.yaml"


class NonFiniteLossError(RuntimeError):
    """Training produced a NaN or infinite loss; the message names the step and the loss terms."""

    def __init__(self, step: int, losses: dict, checkpoint: str | None):
        terms = ", ".join(f"{k}={v:.6g}" for k, v in sorted(losses.items()))
        kept = f"the last good checkpoint is {checkpoint}" if checkpoint else "no checkpoint was saved before it"
        super().__init__(f"non-finite loss at step {step}: {terms}; training stopped, {kept}")
        self.step = step
        self.losses = dict(losses)
        self.checkpoint = checkpoint


class TrainingSetupError(ValueError):
    """The config asks for something the trainer cannot set up (names the key)."""


# ------------------------------------------------------------------------------------------------ set-up helpers


def load_label_map(config):
    """The label map of ``data.label_map`` (or ``label_map.pbtxt`` beside ``data.train_files``)."""
    from tfrecord_tools import label_map as label_maps

    path = config.data.label_map
    if not path:
        pattern = config.data.train_files or config.data.eval_files
        if not pattern:
            raise TrainingSetupError("data.train_files: empty; the trainer needs records (and their label map)")
        first = str(pattern).split(",")[0].strip()
        path = files.join(os.path.dirname(first), "label_map.pbtxt")
    if not tf.io.gfile.exists(path):
        raise TrainingSetupError(f"data.label_map: {path}: no such file (set data.label_map or model.num_classes)")
    with tf.io.gfile.GFile(path, "r") as handle:
        text = handle.read()
    parse = label_maps.parse_json if str(path).endswith(".json") else label_maps.parse_pbtxt
    return parse(text, source=str(path))


def class_names(config):
    """``(num_classes, names)``: ``model.num_classes`` or the label map's largest id; ``names[k]`` for id ``k + 1``."""
    label_map = None
    try:
        label_map = load_label_map(config)
    except TrainingSetupError:
        if config.model.num_classes is None:
            raise
    ids = {item_id: name for item_id, name in label_map.items} if label_map else {}
    num_classes = config.model.num_classes or (max(ids) if ids else None)
    if not num_classes:
        raise TrainingSetupError("model.num_classes: not set and the label map is empty")
    return int(num_classes), [ids.get(k + 1, f"class_{k + 1}") for k in range(int(num_classes))]


def build_detector(config, num_classes: int):
    """``tfdet.build_model(model.name, num_classes, **overrides)`` with the data's image size.

    ``data.image_size`` goes to the builder as ``image_size``; with
    ``train.multi_scale`` the model is built with ``image_size=None``.
    """
    import tfdet

    overrides = dict(config.model.overrides or {})
    if config.train.multi_scale:
        overrides["image_size"] = None
    elif config.data.image_size:
        overrides["image_size"] = tuple(int(s) for s in config.data.image_size)
    try:
        detector = tfdet.build_model(config.model.name, num_classes, **overrides)
    except (TypeError, ValueError) as error:
        raise TrainingSetupError(f"model: cannot build {config.model.name!r} with {overrides}: {error}") from None
    if config.train.multi_scale and tuple(detector.image_size) != (None, None):
        raise TrainingSetupError(f"train.multi_scale: model {config.model.name!r} needs a fixed input size")
    return detector


def _input_size(detector, config, largest_scale=True):
    height, width = detector.image_size
    if height is not None and width is not None:
        return int(height), int(width)
    if config.data.image_size:
        return tuple(int(s) for s in config.data.image_size)
    if config.train.multi_scale:
        size = max(config.train.multi_scale) if largest_scale else config.train.multi_scale[0]
        return int(size), int(size)
    raise TrainingSetupError("data.image_size: the model takes any size; set the input size")


def _save_config(config, model_dir):
    from tfdet.config import config_to_dict, save_config

    path = files.join(model_dir, CONFIG_FILE)
    if files.is_remote(path):
        import yaml

        text = yaml.safe_dump(config_to_dict(config), sort_keys=False, default_flow_style=None)
        files.write_bytes_atomic(path, text.encode("utf-8"))
    else:
        save_config(config, path)
    return path


def _save_model(detector, path):
    if files.is_remote(path):
        with tempfile.TemporaryDirectory() as scratch:
            local = os.path.join(scratch, MODEL_FILE)
            detector.save(local)
            with open(local, "rb") as handle:
                files.write_bytes_atomic(path, handle.read())
    else:
        scratch = f"{path}.tmp-{os.getpid()}.keras"
        detector.save(scratch)
        os.replace(scratch, path)
    return path


def _validate(config):
    try:
        from tfdet.config import validate
    except ImportError:
        return
    validate(config)


def plan_loops(start: int, total: int, steps_per_loop: int, period_steps):
    """``[(first_step, num_steps)]`` host loops from ``start`` to ``total``; loops end at every period boundary.

    Args:
        start, total: steps done, steps wanted.
        steps_per_loop: the longest loop.
        period_steps: periods (checkpoint, eval) whose multiples must end a loop; 0 is ignored.
    """
    loops, step = [], int(start)
    periods = [int(p) for p in period_steps if p and p > 0]
    while step < total:
        end = min(step + int(steps_per_loop), int(total))
        for period in periods:
            end = min(end, (step // period + 1) * period)
        loops.append((step, end - step))
        step = end
    return loops


def scale_for_loop(config, first_step: int):
    """The multi-scale size drawn for the loop starting at ``first_step`` (seeded, so resume-safe)."""
    sizes = list(config.train.multi_scale)
    rng = np.random.default_rng([int(config.data.seed), int(first_step)])
    return int(sizes[int(rng.integers(len(sizes)))])


# ------------------------------------------------------------------------------------------------------ the run


class _Run:
    """One training run: everything ``train`` sets up, then the loop."""

    def __init__(self, config, strategy, progress):
        self.config = config
        self.strategy = strategy
        self.progress = progress
        self.chief = is_chief(strategy)
        self.model_dir = str(config.runtime.model_dir)
        self.replicas = strategy.num_replicas_in_sync
        self.global_batch = int(config.train.batch_size)
        check_batch_divides(self.global_batch, self.replicas)
        self.num_classes, self.class_names = class_names(config)
        if not config.data.train_files:
            raise TrainingSetupError("data.train_files: empty; the trainer needs training records")
        self._check_best_metric()

        # Seeded initial weights: a run is reproducible (with data.deterministic) and
        # every worker starts from the same values.
        keras.utils.set_random_seed(int(config.data.seed))
        with strategy.scope():
            self.detector = build_detector(config, self.num_classes)
            self.optimizer = build_optimizer(config.train, self.detector.trainable_variables)
            self.step = tf.Variable(0, dtype=tf.int64, trainable=False, name="global_step")
        self.checkpoint = tf.train.Checkpoint(model=self.detector, optimizer=self.optimizer, step=self.step)
        self.store = CheckpointStore(self.model_dir, self.checkpoint, self.step, config.train.keep_checkpoints,
                                     chief=self.chief, worker=worker_index(strategy))
        self.loop_fn = make_train_loop(strategy, self.detector, self.optimizer, self.step,
                                       jit_compile=config.train.jit_compile)
        self.evaluator = None
        self._iterators = {}

    def _check_best_metric(self):
        from tfdet.evaluation.coco import STAT_KEYS

        metric, name = self.config.eval.best_metric, self.config.eval.metric
        known = list(STAT_KEYS) if name == "coco" else ["mAP"] + [f"AP/{c}" for c in self.class_names]
        if metric not in known:
            raise TrainingSetupError(f"eval.best_metric: {metric!r} is not a {name} metric; known: {', '.join(known)}")

    # ------------------------------------------------------------------ data

    def _iterator(self, size, consumed_steps):
        """The distributed iterator of training batches at ``size``, past ``consumed_steps`` steps."""
        if size in self._iterators:
            return self._iterators[size]
        from tfdet.data import build_dataset

        data = self.config.data
        global_batch = self.global_batch
        resize_mode = self.detector.resize_mode

        def dataset_fn(context):
            dataset = build_dataset(
                data.train_files, image_size=size, resize_mode=resize_mode,
                batch_size=context.get_per_replica_batch_size(global_batch), training=True,
                augmentation=data.augmentation, max_instances=data.max_instances, with_masks=data.with_masks,
                input_context=context, seed=data.seed, deterministic=data.deterministic, cache=data.cache,
                shuffle_buffer=data.shuffle_buffer, scale_range=data.scale_range,
            )
            # Each step takes one batch per local replica from this pipeline.
            per_step = context.num_replicas_in_sync // context.num_input_pipelines
            return dataset.skip(int(consumed_steps) * per_step) if consumed_steps else dataset

        distributed = self.strategy.distribute_datasets_from_function(dataset_fn)
        self._iterators[size] = iter(distributed)
        return self._iterators[size]

    def _consumed_per_size(self, start):
        """Steps each input size has consumed before ``start`` (the same plan the first run followed)."""
        consumed = {}
        for first, count in plan_loops(0, start, self.config.train.steps_per_loop, self._periods()):
            size = self._loop_size(first)
            consumed[size] = consumed.get(size, 0) + count
        return consumed

    def _loop_size(self, first_step):
        if self.config.train.multi_scale:
            side = scale_for_loop(self.config, first_step)
            return side, side
        return _input_size(self.detector, self.config)

    def _periods(self):
        train = self.config.train
        return [train.checkpoint_every, train.eval_every if self.config.data.eval_files else 0]

    # ------------------------------------------------------------------ eval

    def _evaluate(self, step, history, logger, write_detections=False):
        """Evaluates with the EMA weights (when on), logs, keeps the best; returns the metrics (chief only)."""
        if not self.config.data.eval_files or not self.chief:
            return None
        if self.evaluator is None:
            from tfdet.training.evaluator import Evaluator

            self.evaluator = Evaluator(
                self.detector, self.strategy, self.config.data.eval_files, self.class_names,
                _input_size(self.detector, self.config), self.detector.resize_mode, metric=self.config.eval.metric,
                batch_size=self.config.eval.batch_size, max_images=self.config.eval.max_images,
                max_instances=self.config.data.max_instances,
            )
        with averaged_weights(self.optimizer):
            metrics, results, examples = self.evaluator.run(summary_images=self.config.train.summary_images)
        history["eval"].append({"step": int(step), **metrics})
        logger.eval_scalars(step, metrics)
        if examples is not None:
            logger.eval_images(step, examples[0], examples[1], self.config.train.summary_images)
        if write_detections:
            files.write_json_atomic(files.join(self.model_dir, "eval", "detections.json"), results)
        best_metric = self.config.eval.best_metric
        value = metrics.get(best_metric)
        if value is not None and self.store.is_improvement(best_metric, value):
            self.store.save_best(best_metric, value)
        return metrics

    def _write_metrics(self, step, metrics, history):
        if not self.chief:
            return None
        payload = {
            "step": int(step),
            "metric": self.config.eval.metric,
            "metrics": metrics,
            "best": self.store.best(),
            "history": history,
        }
        path = files.write_json_atomic(files.join(self.model_dir, METRICS_FILE), payload)
        plot_training_curves(history, files.join(self.model_dir, CURVES_FILE), metric=self.config.eval.best_metric)
        return path

    # ------------------------------------------------------------------ loop

    def run(self):
        config, train = self.config, self.config.train
        if self.chief:
            tf.io.gfile.makedirs(self.model_dir)
            self.store.clean_orphans()
            _save_config(config, self.model_dir)
        restored = self.store.restore_latest()
        start = int(self.step.numpy())
        previous = files.read_json(files.join(self.model_dir, METRICS_FILE), default={}) if restored else {}
        history = previous.get("history") or {"loss": [], "eval": []}
        history["loss"] = [entry for entry in history.get("loss", []) if entry[0] <= start]
        history["eval"] = [entry for entry in history.get("eval", []) if entry["step"] <= start]
        metrics = previous.get("metrics")

        logger = SummaryLogger(self.model_dir, enabled=self.chief)
        bar = ProgressBar(train.steps, initial=start, enabled=self.progress and self.chief)
        if self.chief:
            bar.write(f"tfdet train: {config.model.name}, {self.replicas} replica(s), global batch "
                      f"{self.global_batch}, {schedule_summary(train)}"
                      + (f"; resumed from {restored} at step {start}" if restored else ""))
        consumed = self._consumed_per_size(start)
        last_checkpoint = restored
        throughput = Throughput()
        try:
            for first, count in plan_loops(start, train.steps, train.steps_per_loop, self._periods()):
                size = self._loop_size(first)
                iterator = self._iterator(size, consumed.get(size, 0))
                losses = {k: v.numpy() for k, v in self.loop_fn(iterator, tf.constant(count, tf.int32)).items()}
                images_per_second = throughput.lap(count * self.global_batch)
                bad = np.flatnonzero(~np.isfinite(losses["loss"]))
                if bad.size:
                    index = int(bad[0])
                    raise NonFiniteLossError(first + index + 1, {k: float(v[index]) for k, v in losses.items()},
                                             last_checkpoint)
                end = first + count
                for index in range(count):
                    step = first + index + 1
                    if step % train.log_every == 0 or step == end:
                        values = {k: float(v[index]) for k, v in losses.items()}
                        values["learning_rate"] = learning_rate_at(self.optimizer, step - 1)
                        values["images_per_second"] = images_per_second
                        logger.train_scalars(step, values)
                        if step % train.log_every == 0:
                            history["loss"].append([step, values["loss"]])
                bar.update(count, float(losses["loss"][-1]), images_per_second)
                if end % train.checkpoint_every == 0 or end == train.steps:
                    last_checkpoint = self.store.save()
                if train.eval_every and end % train.eval_every == 0 and end != train.steps:
                    metrics = self._evaluate(end, history, logger)
                    self._write_metrics(end, metrics, history)
                    throughput = Throughput()  # do not count evaluation time as training time
            final_step = int(self.step.numpy())
            if last_checkpoint is None or not last_checkpoint.endswith(f"-{final_step}"):
                last_checkpoint = self.store.save()
            if final_step > start or not history["eval"] or history["eval"][-1]["step"] != final_step:
                metrics = self._evaluate(final_step, history, logger, write_detections=True) or metrics
            metrics_path = self._write_metrics(final_step, metrics, history)
            model_path = None
            if self.chief:
                with averaged_weights(self.optimizer):
                    model_path = _save_model(self.detector, files.join(self.model_dir, MODEL_FILE))
        finally:
            bar.close()
            logger.close()
        best = self.store.best() if self.chief else None
        return {
            "step": final_step,
            "model_dir": self.model_dir,
            "resumed_from": start if restored else None,
            "checkpoint": last_checkpoint,
            "best_checkpoint": files.join(self.model_dir, "best", best["checkpoint"]) if best else None,
            "best": best,
            "metrics": metrics,
            "metrics_file": metrics_path,
            "config_file": files.join(self.model_dir, CONFIG_FILE),
            "model_file": model_path,
        }


# ------------------------------------------------------------------------------------------------ public API


def _strategy_for(config, for_training=True):
    name = config.runtime.strategy
    if name == "tpu":
        preflight_tpu(config)
    if not for_training and name == "multi_worker_mirrored":
        name = "auto"  # evaluation runs in one process
    return create_strategy(name, config.runtime.tpu)


def train(config, *, progress: bool = True) -> dict:
    """Trains ``config.model`` on ``config.data`` as ``config.train`` says; resumes from ``runtime.model_dir``.

    Args:
        config: a ``tfdet.config.ExperimentConfig``.
        progress: show a tqdm bar (loss, images/s, ETA); ``False`` for none.

    Returns:
        ``{"step", "model_dir", "resumed_from", "checkpoint", "best_checkpoint", "best",
        "metrics", "metrics_file", "config_file", "model_file"}``.

    Raises:
        tfdet.config.ConfigError, StrategyError, TrainingSetupError, ...: a
            setting that cannot work (one line naming the key).
        NonFiniteLossError: a NaN/Inf loss (the newest checkpoint is the last good one).
    """
    _validate(config)
    strategy = _strategy_for(config)  # first TensorFlow work: multi-worker needs that
    previous_policy = set_precision_policy(config.train.mixed_precision)
    try:
        return _Run(config, strategy, progress).run()
    finally:
        keras.config.set_dtype_policy(previous_policy)


def load_trained_model(config, checkpoint: str | None = "latest", strategy=None):
    """The detector of a run with the weights of ``checkpoint`` (EMA weights when EMA was on).

    Args:
        config: the run's ``ExperimentConfig``.
        checkpoint: ``"latest"``, ``"best"``, a folder or a ``ckpt-N`` prefix.
        strategy: build under this strategy (default: none, plain variables).

    Returns:
        ``(detector, prefix, step)``.
    """
    prefix = resolve_checkpoint(str(config.runtime.model_dir), checkpoint)
    num_classes, _ = class_names(config)
    scope = strategy.scope() if strategy is not None else _null_scope()
    with scope:
        detector = build_detector(config, num_classes)
        optimizer = build_optimizer(config.train, detector.trainable_variables)
        step = tf.Variable(0, dtype=tf.int64, trainable=False, name="global_step")
    tf.train.Checkpoint(model=detector, optimizer=optimizer, step=step).restore(prefix).expect_partial()
    for variable, average in ema_pairs(optimizer):
        variable.assign(average.value)  # an inference copy: the averages become the weights
    return detector, prefix, int(step.numpy())


class _null_scope:
    def __enter__(self):
        return None

    def __exit__(self, *exc):
        return False


def evaluate(config, checkpoint: str | None = None) -> dict:
    """Evaluates a checkpoint of ``runtime.model_dir`` on ``data.eval_files``.

    Args:
        config: the run's ``ExperimentConfig``.
        checkpoint: ``None``/``"latest"``, ``"best"``, a folder or a ``ckpt-N`` prefix.

    Returns:
        The metrics dict (COCO: ``AP, AP50, ...``; VOC: ``mAP, AP/<class>``).
        Also writes ``model_dir/eval/evaluation.json`` (checkpoint, step,
        metrics) and ``model_dir/eval/detections.json`` (COCO results).
    """
    from tfdet.training.evaluator import Evaluator

    _validate(config)
    strategy = _strategy_for(config, for_training=False)
    detector, prefix, step = load_trained_model(config, checkpoint, strategy=strategy)
    _, names = class_names(config)
    evaluator = Evaluator(
        detector, strategy, config.data.eval_files, names, _input_size(detector, config), detector.resize_mode,
        metric=config.eval.metric, batch_size=config.eval.batch_size, max_images=config.eval.max_images,
        max_instances=config.data.max_instances,
    )
    metrics, results, _ = evaluator.run()
    eval_dir = files.join(str(config.runtime.model_dir), "eval")
    files.write_json_atomic(files.join(eval_dir, "evaluation.json"),
                            {"checkpoint": prefix, "step": step, "metric": config.eval.metric, "metrics": metrics})
    files.write_json_atomic(files.join(eval_dir, "detections.json"), results)
    return metrics


__all__ = ["train", "evaluate", "load_trained_model", "NonFiniteLossError", "TrainingSetupError", "StrategyError",
           "plan_loops", "scale_for_loop"]
