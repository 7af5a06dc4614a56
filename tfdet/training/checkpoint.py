"""Checkpoints of a training run: periodic ones, resume, and keep-best.

Layout in the model directory:

* ``checkpoints/ckpt-<step>.{index,data-*}`` and ``checkpoints/checkpoint``
  (the index), written by ``tf.train.CheckpointManager`` keeping the last
  ``train.keep_checkpoints``. Each holds the model, the optimizer (slots,
  iteration count, EMA weights, loss scale) and the step counter.
* ``best/ckpt-<step>.*`` and ``best/best.json`` (metric, value, step): the
  checkpoint with the best ``eval.best_metric`` so far.

Why an interrupted save never leaves the index pointing at a broken
checkpoint (TF 2.21, verified in its source): ``Checkpoint.write`` writes the
shards under ``<prefix>_temp/`` and only then merges/renames them to
``<prefix>.*``; the manager rewrites ``checkpoint`` (with
``atomic_write_string_to_file``) after that, and deletes old checkpoints
only after the index names the new one. A crash mid-save therefore leaves
the index on the previous complete checkpoint plus an orphaned ``_temp``
folder, which :meth:`CheckpointStore.clean_orphans` removes. As a second
line, :meth:`CheckpointStore.restore_latest` falls back to the newest
*readable* checkpoint listed in the index.

Multi-worker: every worker must take part in a save (TensorFlow's rule for
``MultiWorkerMirroredStrategy``), so non-chief workers write to a private
scratch folder that is deleted right after.
"""

from __future__ import annotations

import os
import re

import tensorflow as tf

from tfdet.training.files import join, read_json, write_json_atomic

CHECKPOINT_DIR = "checkpoints"
BEST_DIR = "best"
BEST_FILE = "best.json"


class CheckpointNotFoundError(ValueError):
    """A checkpoint that was asked for does not exist (names the path)."""


def higher_is_better(metric: str) -> bool:
    """Whether a larger value of ``metric`` is better (AP, AR, mAP: yes; anything named loss: no)."""
    return "loss" not in metric.lower()


class CheckpointStore:
    """Saves and restores one training run's checkpoints (see the module docstring).

    Args:
        model_dir: the run's model directory (local or ``gs://``).
        checkpoint: a ``tf.train.Checkpoint`` of ``model``, ``optimizer`` and ``step``.
        step: the ``tf.Variable`` step counter inside ``checkpoint``.
        keep: checkpoints to keep (``train.keep_checkpoints``).
        chief: whether this process owns the model directory.
        worker: this worker's index (scratch folder name of non-chief workers).
    """

    def __init__(self, model_dir: str, checkpoint: tf.train.Checkpoint, step: tf.Variable, keep: int,
                 chief: bool = True, worker: int = 0):
        self.model_dir = str(model_dir)
        self.checkpoint = checkpoint
        self.step = step
        self.chief = chief
        if chief:
            self.directory = join(self.model_dir, CHECKPOINT_DIR)
            self.best_directory = join(self.model_dir, BEST_DIR)
        else:
            scratch = join(self.model_dir, ".workers", f"worker-{worker}")
            self.directory = join(scratch, CHECKPOINT_DIR)
            self.best_directory = join(scratch, BEST_DIR)
        self.keep = max(int(keep), 1)
        self.manager = tf.train.CheckpointManager(checkpoint, self.directory, max_to_keep=self.keep)
        self._best_manager = None

    # ----------------------------------------------------------------- saving

    @property
    def latest(self) -> str | None:
        """The prefix of the newest checkpoint of the main (chief's) directory, or ``None``."""
        return tf.train.latest_checkpoint(join(self.model_dir, CHECKPOINT_DIR))

    def save(self) -> str:
        """Saves a checkpoint numbered by the current step; returns its prefix (the chief's path)."""
        path = self.manager.save(checkpoint_number=int(self.step.numpy()))
        if not self.chief:
            tf.io.gfile.rmtree(os.path.dirname(self.directory))
            self.manager = tf.train.CheckpointManager(self.checkpoint, self.directory, max_to_keep=self.keep)
            # The chief wrote the same step's checkpoint in the main directory.
            path = join(self.model_dir, CHECKPOINT_DIR, os.path.basename(path))
        return path

    def best(self) -> dict | None:
        """``{"metric", "value", "step", "checkpoint"}`` of the best checkpoint so far, or ``None``."""
        return read_json(join(self.model_dir, BEST_DIR, BEST_FILE))

    def is_improvement(self, metric: str, value: float) -> bool:
        """Whether ``value`` of ``metric`` beats the stored best (any finite value beats none)."""
        if value is None or value != value:  # NaN: nothing to compare
            return False
        best = self.best()
        if not best or best.get("metric") != metric or best.get("value") is None:
            return True
        return value > best["value"] if higher_is_better(metric) else value < best["value"]

    def save_best(self, metric: str, value: float) -> str:
        """Saves the current state as the best checkpoint (keeps only one) and records the metric."""
        if self._best_manager is None:
            self._best_manager = tf.train.CheckpointManager(self.checkpoint, self.best_directory, max_to_keep=1)
        path = self._best_manager.save(checkpoint_number=int(self.step.numpy()))
        if self.chief:
            write_json_atomic(join(self.best_directory, BEST_FILE), {
                "metric": metric, "value": float(value), "step": int(self.step.numpy()),
                "checkpoint": os.path.basename(path),
            })
        else:
            tf.io.gfile.rmtree(os.path.dirname(self.best_directory))
            self._best_manager = None
        return path

    # -------------------------------------------------------------- restoring

    def clean_orphans(self) -> list[str]:
        """Deletes ``*_temp`` folders that an interrupted save left behind; returns them."""
        removed = []
        for directory in (self.directory, self.best_directory):
            if not tf.io.gfile.isdir(directory):
                continue
            for name in tf.io.gfile.listdir(directory):
                name = name.rstrip("/")
                if name.endswith("_temp"):
                    tf.io.gfile.rmtree(join(directory, name))
                    removed.append(join(directory, name))
        return removed

    def restore_latest(self) -> str | None:
        """Restores the newest readable checkpoint of the main directory; returns its prefix or ``None``.

        Model, optimizer (slots, iterations, EMA) and step come back.
        """
        directory = join(self.model_dir, CHECKPOINT_DIR)
        state = tf.train.get_checkpoint_state(directory)
        if state is None:
            return None
        candidates = list(state.all_model_checkpoint_paths) or [state.model_checkpoint_path]
        if state.model_checkpoint_path not in candidates:
            candidates.append(state.model_checkpoint_path)
        candidates.sort(key=_checkpoint_number, reverse=True)
        for prefix in candidates:
            prefix = prefix if os.path.isabs(prefix) or "://" in prefix else join(directory, prefix)
            if not readable(prefix):
                continue
            try:
                self.checkpoint.restore(prefix).assert_existing_objects_matched()
            except tf.errors.OpError:
                continue  # damaged after all: the next older one overwrites whatever was restored
            return prefix
        return None


def readable(prefix: str) -> bool:
    """Whether a checkpoint prefix has a readable index and every data shard it needs."""
    try:
        tf.train.list_variables(prefix)  # reads the index only
        shards = tf.io.gfile.glob(f"{prefix}.data-*-of-*")
    except (tf.errors.OpError, ValueError):
        return False
    if not shards:
        return False
    expected = int(re.search(r"-of-(\d+)$", shards[0]).group(1))
    return len(shards) == expected


def _checkpoint_number(prefix: str) -> int:
    match = re.search(r"-(\d+)$", prefix)
    return int(match.group(1)) if match else -1


def resolve_checkpoint(model_dir: str, checkpoint: str | None) -> str:
    """The checkpoint prefix that ``checkpoint`` names.

    Args:
        model_dir: the run's model directory.
        checkpoint: ``None`` or ``"latest"`` (newest in ``checkpoints/``),
            ``"best"`` (``best/``), a directory (its newest), or a prefix
            (``.../ckpt-1200``).

    Raises:
        CheckpointNotFoundError: nothing there.
    """
    if checkpoint in (None, "latest", "best"):
        directory = join(model_dir, BEST_DIR if checkpoint == "best" else CHECKPOINT_DIR)
        prefix = tf.train.latest_checkpoint(directory)
        if prefix is None:
            raise CheckpointNotFoundError(f"{directory}: no checkpoint found")
        return prefix
    if tf.io.gfile.isdir(checkpoint):
        prefix = tf.train.latest_checkpoint(checkpoint)
        if prefix is None:
            raise CheckpointNotFoundError(f"{checkpoint}: no checkpoint found in this folder")
        return prefix
    if not readable(checkpoint):
        raise CheckpointNotFoundError(f"{checkpoint}: not a readable checkpoint prefix (expected .../ckpt-N)")
    return checkpoint
