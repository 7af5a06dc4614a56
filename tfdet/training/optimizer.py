"""Optimizers, learning-rate schedules and mixed precision from the training config.

Schedule (``train.schedule``), ``lr(step)`` for the optimizer's 0-based
update count ``step`` (the rate used by update ``step + 1``), ``base`` =
``train.optimizer.learning_rate``, ``W`` = ``warmup_steps``, ``T`` =
``train.steps``:

* warmup, ``step < W``: ``base * (f + (1 - f) * step / W)`` with
  ``f = warmup_factor`` (linear from ``f * base`` towards ``base``);
* ``"constant"``: ``base``;
* ``"cosine"``: ``base * (a + (1 - a) * (1 + cos(pi * t / (T - W))) / 2)``
  with ``t = min(step - W, T - W)`` and ``a = final_factor``
  (``keras.optimizers.schedules.CosineDecay`` with ``alpha = a``, started
  after the warmup);
* ``"step"``: ``base * decay_factor ** i`` where ``i`` counts the
  ``boundaries`` (absolute steps) that ``step`` has reached (``step >= b``).

Weight decay is Keras 3's decoupled form (each update also does
``w -= lr * weight_decay * w``), the AdamW rule; for plain SGD this equals an
L2 penalty ``weight_decay / 2 * |w|^2``. Biases and normalisation scales and
offsets (every trainable variable of rank <= 1) are excluded. Clipping is by
the global norm of the gradient that is applied (``global_clipnorm``): the
trainer sums the replicas' gradients before the optimizer sees them, so the
bound holds for the summed, i.e. the true, gradient.

Mixed precision: ``"mixed_float16"`` sets the Keras global dtype policy and
wraps the optimizer in ``keras.optimizers.LossScaleOptimizer`` (dynamic loss
scaling; a step whose gradients overflow is skipped and the scale halved);
``"mixed_bfloat16"`` needs no loss scaling.

EMA: ``use_ema=True`` with ``ema_momentum`` keeps an exponential moving
average of the trainable weights inside the optimizer (so it is checkpointed
with it); :func:`averaged_weights` swaps it into the model for evaluation and
export and restores the training weights afterwards.
"""

from __future__ import annotations

import contextlib


import keras
import tensorflow as tf
from keras import ops

OPTIMIZERS = ("sgd", "adam", "adamw")
SCHEDULES = ("cosine", "step", "constant")
PRECISIONS = ("float32", "mixed_float16", "mixed_bfloat16")


class OptimizerConfigError(ValueError):
    """An optimizer, schedule or precision setting that cannot be used (names the key)."""


@keras.saving.register_keras_serializable(package="tfdet")
class WarmupSchedule(keras.optimizers.schedules.LearningRateSchedule):
    """Linear warmup in front of a decay schedule (see the module docstring).

    Args:
        base_learning_rate: the rate the warmup reaches.
        warmup_steps: ``W``; 0 disables the warmup.
        warmup_factor: the warmup starts at ``warmup_factor * base``.
        decay: the schedule used from step ``W`` on, called with the absolute step.
    """

    def __init__(self, base_learning_rate, warmup_steps, warmup_factor, decay):
        self.base_learning_rate = float(base_learning_rate)
        self.warmup_steps = int(warmup_steps)
        self.warmup_factor = float(warmup_factor)
        self.decay = decay

    def __call__(self, step):
        step = ops.cast(step, "float32")
        decayed = ops.cast(self.decay(step), "float32")
        if self.warmup_steps <= 0:
            return decayed
        fraction = step / float(self.warmup_steps)
        warm = self.base_learning_rate * (self.warmup_factor + (1.0 - self.warmup_factor) * fraction)
        return ops.where(step < float(self.warmup_steps), warm, decayed)

    def get_config(self):
        return {
            "base_learning_rate": self.base_learning_rate,
            "warmup_steps": self.warmup_steps,
            "warmup_factor": self.warmup_factor,
            "decay": keras.saving.serialize_keras_object(self.decay),
        }

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        config["decay"] = keras.saving.deserialize_keras_object(config["decay"])
        return cls(**config)


@keras.saving.register_keras_serializable(package="tfdet")
class ShiftedSchedule(keras.optimizers.schedules.LearningRateSchedule):
    """``inner(max(step - offset, 0))``: a decay that starts after the warmup."""

    def __init__(self, inner, offset):
        self.inner = inner
        self.offset = int(offset)

    def __call__(self, step):
        return self.inner(ops.maximum(ops.cast(step, "float32") - float(self.offset), 0.0))

    def get_config(self):
        return {"inner": keras.saving.serialize_keras_object(self.inner), "offset": self.offset}

    @classmethod
    def from_config(cls, config):
        return cls(keras.saving.deserialize_keras_object(config["inner"]), config["offset"])


@keras.saving.register_keras_serializable(package="tfdet")
class ConstantSchedule(keras.optimizers.schedules.LearningRateSchedule):
    """A constant rate, as a schedule so warmup can wrap it."""

    def __init__(self, learning_rate):
        self.learning_rate = float(learning_rate)

    def __call__(self, step):
        return ops.cast(self.learning_rate, "float32")

    def get_config(self):
        return {"learning_rate": self.learning_rate}


def build_schedule(schedule_config, base_learning_rate: float, total_steps: int):
    """The learning-rate schedule of ``train.schedule`` (see the module docstring).

    Args:
        schedule_config: ``ScheduleConfig`` (name, warmup_steps,
            warmup_factor, boundaries, decay_factor, final_factor).
        base_learning_rate: ``train.optimizer.learning_rate``.
        total_steps: ``train.steps``.

    Returns:
        A ``keras.optimizers.schedules.LearningRateSchedule``.

    Raises:
        OptimizerConfigError: unknown name, negative warmup, or boundaries not increasing.
    """
    name = schedule_config.name
    warmup = int(schedule_config.warmup_steps or 0)
    if name not in SCHEDULES:
        raise OptimizerConfigError(f"train.schedule.name: unknown schedule {name!r}; known: {', '.join(SCHEDULES)}")
    if warmup < 0:
        raise OptimizerConfigError(f"train.schedule.warmup_steps: must be >= 0, got {warmup}")
    base = float(base_learning_rate)
    if name == "constant":
        decay = ConstantSchedule(base)
    elif name == "cosine":
        decay_steps = max(int(total_steps) - warmup, 1)
        cosine = keras.optimizers.schedules.CosineDecay(base, decay_steps, alpha=float(schedule_config.final_factor))
        decay = ShiftedSchedule(cosine, warmup)
    else:
        boundaries = [int(b) for b in schedule_config.boundaries]
        if any(b <= a for a, b in zip(boundaries, boundaries[1:])) or any(b <= 0 for b in boundaries):
            raise OptimizerConfigError(
                f"train.schedule.boundaries: must be positive and increasing, got {list(schedule_config.boundaries)}"
            )
        if not boundaries:
            decay = ConstantSchedule(base)
        else:
            values = [base * float(schedule_config.decay_factor) ** i for i in range(len(boundaries) + 1)]
            # PiecewiseConstantDecay switches after a boundary (step > b); the
            # docstring's rule is step >= b, so shift by one.
            decay = keras.optimizers.schedules.PiecewiseConstantDecay([b - 1 for b in boundaries], values)
    return WarmupSchedule(base, warmup, float(schedule_config.warmup_factor), decay) if warmup else decay


def set_precision_policy(name: str) -> str:
    """Sets the Keras global dtype policy for ``train.mixed_precision``; returns the previous policy's name.

    Call before building the model (layers read the policy when created).
    """
    if name not in PRECISIONS:
        raise OptimizerConfigError(f"train.mixed_precision: unknown policy {name!r}; known: {', '.join(PRECISIONS)}")
    previous = keras.config.dtype_policy().name
    keras.config.set_dtype_policy(name)
    return previous


def build_optimizer(train_config, trainable_variables):
    """The optimizer of ``train.optimizer`` with schedule, decay, clipping, EMA and loss scaling.

    Call inside ``strategy.scope()``: the optimizer builds its slots here, next
    to the (mirrored) model variables, so a checkpoint restore finds them.

    Args:
        train_config: ``TrainConfig``.
        trainable_variables: the model's trainable variables.

    Returns:
        A built ``keras.optimizers.Optimizer`` (a ``LossScaleOptimizer`` for
        ``mixed_float16``).
    """
    config = train_config.optimizer
    if config.name not in OPTIMIZERS:
        raise OptimizerConfigError(f"train.optimizer.name: unknown optimizer {config.name!r}; known: {', '.join(OPTIMIZERS)}")
    if config.clip_norm is not None and not config.clip_norm > 0:
        raise OptimizerConfigError(f"train.optimizer.clip_norm: must be > 0 or null, got {config.clip_norm}")
    schedule = build_schedule(train_config.schedule, config.learning_rate, train_config.steps)
    weight_decay = float(config.weight_decay or 0.0)
    common = dict(
        learning_rate=schedule,
        weight_decay=weight_decay if weight_decay > 0 else None,
        global_clipnorm=float(config.clip_norm) if config.clip_norm else None,
        use_ema=bool(train_config.ema.enabled),
        ema_momentum=float(train_config.ema.momentum),
    )
    if config.name == "sgd":
        optimizer = keras.optimizers.SGD(momentum=float(config.momentum), **common)
    elif config.name == "adam":
        optimizer = keras.optimizers.Adam(beta_1=float(config.momentum), **common)
    else:
        common["weight_decay"] = weight_decay  # AdamW requires a number
        optimizer = keras.optimizers.AdamW(beta_1=float(config.momentum), **common)
    trainable_variables = list(trainable_variables)
    if weight_decay > 0:
        optimizer.exclude_from_weight_decay(var_list=[v for v in trainable_variables if len(v.shape) <= 1])
    _use_presummed_gradients(optimizer)
    if train_config.mixed_precision == "mixed_float16":
        optimizer = keras.optimizers.LossScaleOptimizer(optimizer)
    optimizer.build(trainable_variables)
    return optimizer


def _use_presummed_gradients(optimizer) -> None:
    """Makes the Keras TF optimizer apply gradients as given, without its own cross-replica sum.

    Keras' TensorFlow optimizer sums gradients over replicas *after* its
    clipping, so ``global_clipnorm`` would bound each replica's part instead
    of the applied gradient. The trainer sums the gradients itself (one
    all-reduce) before calling ``apply``, and turns the optimizer's sum off
    here, on this instance only.
    """
    if hasattr(optimizer, "_all_reduce_sum_gradients"):
        optimizer._all_reduce_sum_gradients = lambda grads_and_vars: list(grads_and_vars)


def base_optimizer(optimizer):
    """The optimizer that owns the slots and EMA (unwraps ``LossScaleOptimizer``)."""
    return getattr(optimizer, "inner_optimizer", optimizer)


def learning_rate_at(optimizer, step: int) -> float:
    """The learning rate used by update ``step + 1`` (``step`` = updates done before it)."""
    rate = base_optimizer(optimizer)._learning_rate
    if isinstance(rate, keras.optimizers.schedules.LearningRateSchedule):
        return float(rate(step))
    return float(ops.convert_to_numpy(rate))


def ema_pairs(optimizer):
    """``[(model variable, its moving average)]`` when EMA is on, else ``[]``."""
    inner = base_optimizer(optimizer)
    if not inner.use_ema:
        return []
    # Keras keeps the averages aligned with the variables it was built on; no public accessor exists.
    return [(v, a) for v, a in zip(inner._trainable_variables, inner._model_variables_moving_average) if a is not None]


@contextlib.contextmanager
def averaged_weights(optimizer):
    """Within the block the model's trainable variables hold their EMA values; restored on exit.

    A no-op when EMA is off. Call in cross-replica context (outside
    ``strategy.run``): assigning a mirrored variable there updates every replica.
    """
    pairs = ema_pairs(optimizer)
    saved = [tf.identity(variable.value) for variable, _ in pairs]
    try:
        for variable, average in pairs:
            variable.assign(average.value)
        yield bool(pairs)
    finally:
        for (variable, _), value in zip(pairs, saved):
            variable.assign(value)


def schedule_summary(train_config) -> str:
    """One line naming the optimizer, schedule and options, for logs."""
    o, s = train_config.optimizer, train_config.schedule
    parts = [f"{o.name} lr {o.learning_rate:g}", s.name]
    if s.warmup_steps:
        parts.append(f"warmup {s.warmup_steps} from x{s.warmup_factor:g}")
    if o.weight_decay:
        parts.append(f"weight decay {o.weight_decay:g}")
    if o.clip_norm:
        parts.append(f"clip {o.clip_norm:g}")
    if train_config.ema.enabled:
        parts.append(f"EMA {train_config.ema.momentum:g}")
    if train_config.mixed_precision != "float32":
        parts.append(train_config.mixed_precision)
    return ", ".join(parts)


__all__ = [
    "OPTIMIZERS", "SCHEDULES", "PRECISIONS", "OptimizerConfigError", "WarmupSchedule", "build_schedule",
    "build_optimizer", "set_precision_policy", "base_optimizer", "learning_rate_at", "ema_pairs",
    "averaged_weights", "schedule_summary",
]
