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
