"""The distributed train step and the host loop that runs ``steps_per_loop`` of them per call.

One replica's step:

1. ``n_local = detector.loss_normalizer(groundtruth)`` (SSD: positives; YOLO:
   batch size), summed over replicas: ``n = all_reduce(SUM, n_local)``;
2. forward, ``compute_losses(..., normalizer=n)`` and gradients, compiled
   with XLA when ``jit_compile`` (only this part: the collectives and the
   optimizer stay outside XLA, which CPU collectives require);
3. gradients summed over replicas (``all_reduce(SUM)``; no division by the
   replica count), then ``optimizer.apply``; the optimizer's own
   cross-replica sum is off (see ``optimizer._use_presummed_gradients``), so
   clipping sees the summed gradient.

Because every replica's loss is its share of a sum divided by the global
``n``, the replicas' losses and gradients add up to exactly the one-device
values for the same global batch. Reported losses are the replicas' sum.

A detector whose ``compute_losses`` has no ``normalizer`` argument is
normalised by its own count; its loss is then scaled by ``n_local / n`` so the
sum rule still holds. Without ``loss_normalizer`` the batch size is the count.
"""

from __future__ import annotations

import inspect

import tensorflow as tf


def _normalizer_fn(detector):
    method = getattr(detector, "loss_normalizer", None)
    if method is not None:
        return lambda groundtruth: tf.cast(method(groundtruth), tf.float32)
    return lambda groundtruth: tf.cast(tf.shape(groundtruth["classes"])[0], tf.float32)


def _accepts_normalizer(detector) -> bool:
    try:
        return "normalizer" in inspect.signature(detector.compute_losses).parameters
    except (TypeError, ValueError):
        return False


def make_train_loop(strategy, detector, optimizer, step, jit_compile: bool = True):
    """``loop(iterator, num_steps) -> {key: [num_steps] float32}``: runs ``num_steps`` steps in one host call.

    Args:
        strategy: the distribution strategy (model and optimizer built in its scope).
        detector: the ``Detector``.
        optimizer: built Keras optimizer (``LossScaleOptimizer`` for float16).
        step: ``tf.Variable`` int64, incremented once per step.
        jit_compile: compile the forward/backward pass with XLA.

    Returns:
        A function around a ``tf.function``; each call returns every step's losses (the
        replicas' sum), ``loss/<term>`` and ``loss``, stacked in step order.
        ``num_steps`` is a tensor, so different loop lengths do not retrace;
        a new input shape (multi-scale) traces once per size.
    """
    normalizer_of = _normalizer_fn(detector)
    with_normalizer = _accepts_normalizer(detector)
    scales_loss = hasattr(optimizer, "scale_loss") and hasattr(optimizer, "inner_optimizer")
    variables = detector.trainable_variables

    @tf.function(jit_compile=bool(jit_compile))
    def forward_backward(images, groundtruth, normalizer, local_count):
        with tf.GradientTape() as tape:
            outputs = detector(images, training=True)
            if with_normalizer:
                losses = detector.compute_losses(outputs, groundtruth, normalizer=normalizer)
            else:
                share = local_count / tf.maximum(normalizer, 1.0)
                losses = {k: v * share for k, v in detector.compute_losses(outputs, groundtruth).items()}
            losses = {k: tf.cast(v, tf.float32) for k, v in losses.items()}
            objective = optimizer.scale_loss(losses["loss"]) if scales_loss else losses["loss"]
        gradients = tape.gradient(objective, variables)
        return losses, gradients

    def replica_step(features, groundtruth):
        context = tf.distribute.get_replica_context()
        groundtruth = {k: v for k, v in groundtruth.items() if k != "masks"}
        local_count = normalizer_of(groundtruth)
        normalizer = context.all_reduce(tf.distribute.ReduceOp.SUM, local_count)
        losses, gradients = forward_backward(features["images"], groundtruth, normalizer, local_count)
        present = [i for i, g in enumerate(gradients) if g is not None]
        summed = context.all_reduce(tf.distribute.ReduceOp.SUM, [gradients[i] for i in present])
        gradients = list(gradients)
        for i, g in zip(present, summed):
            gradients[i] = g
        optimizer.apply(gradients, variables)
        # Summed here rather than with strategy.reduce, which fails inside a
        # tf.function under MultiWorkerMirroredStrategy (TF 2.21).
        return context.all_reduce(tf.distribute.ReduceOp.SUM, losses)

    def one_step(iterator):
        features, groundtruth = next(iterator)
        losses = strategy.run(replica_step, args=(features, groundtruth))
        step.assign_add(1)
        return strategy.experimental_local_results(losses)[0]

    loss_keys = []  # filled when the step is first traced; the same for every trace

    @tf.function
    def stacked_loop(iterator, num_steps):
        rows = tf.TensorArray(tf.float32, size=num_steps, element_shape=tf.TensorShape([None]))
        for index in tf.range(num_steps):
            losses = one_step(iterator)
            if not loss_keys:
                loss_keys.extend(sorted(losses))
            rows = rows.write(index, tf.stack([losses[k] for k in loss_keys]))
        return rows.stack()

    def loop(iterator, num_steps):
        table = stacked_loop(iterator, num_steps)  # [num_steps, len(loss_keys)]
        return {key: table[:, column] for column, key in enumerate(loss_keys)}

    return loop
