"""Choosing which anchors (or RoIs) a loss sees.

- ``balanced_sample``: the Faster R-CNN minibatch sampler: a fixed number of
  anchors per image, at most a fraction of them positive, the rest negative,
  uniformly at random (RPN: 256 at 0.5; RoI head: 512 at 0.25).
- ``hard_negative_mining``: SSD's rule: keep the negatives with the highest
  loss, at most ``negative_ratio`` per positive.

Both return ``[B, A]`` bool masks of static shape; the number selected varies
per image inside that shape. Random choice without dynamic shapes: every
candidate draws a uniform key, ``ops.top_k`` takes the largest keys, and a
scatter writes them back as a mask. ``keras.ops`` only; compiles under XLA,
runs under JAX.
"""

from __future__ import annotations

import keras
from keras import ops

__all__ = ["balanced_sample", "hard_negative_mining"]


def _selected_to_mask(indices, selected, shape):
    """Scatters per-image picks back into a ``[B, A]`` bool mask.

    Args:
        indices: ``[B, k]`` int anchor indices, distinct within a row (top_k's).
        selected: ``[B, k]`` bool, which of them are taken.
        shape: ``(B, A)`` of the mask.

    Returns:
        ``[B, A]`` bool.
    """
    batch = shape[0]
    rows = ops.broadcast_to(ops.expand_dims(ops.arange(batch, dtype="int32"), 1), ops.shape(indices))
    coordinates = ops.reshape(ops.stack([rows, ops.cast(indices, "int32")], axis=-1), (-1, 2))
    # Indices are distinct within a row, so the scatter's sum is 0 or 1.
    counts = ops.scatter(coordinates, ops.reshape(ops.cast(selected, "int32"), (-1,)), shape)
    return counts > 0


def balanced_sample(labels, num_samples, positive_fraction, seed=None, keys=None):
    """Samples up to ``num_samples`` anchors per image, balancing positives.

    Per image: up to ``int(num_samples * positive_fraction)`` positives,
    chosen uniformly at random among the positives; then negatives, chosen
    uniformly, fill the sample to ``num_samples`` (so an image with few
    positives gets more negatives, as in Detectron2). Ignored anchors are
    never sampled. An image with too few candidates gets all of them.

    Args:
        labels: ``[B, A]`` int, 1 positive, 0 negative, -1 ignored (the
            matcher's labels).
        num_samples: anchors per image (Python int), e.g. 256 for the RPN.
        positive_fraction: largest share of positives (Python float), e.g.
            0.5 for the RPN, 0.25 for the RoI head.
        seed: an int (the same draw every call, also inside a compiled
            function: use it for tests) or a ``keras.random.SeedGenerator``
            (a new draw every call: use it for training); None uses Keras's
            global generator.
        keys: optional ``[B, A]`` float random keys in ``[0, 1)``, used
            instead of drawing them (then ``seed`` is unused); higher keys
            are taken first. Lets callers (and tests) fix the draw exactly
            across backends and compilers.

    Returns:
        ``[B, A]`` bool mask, per image at most ``num_samples`` True entries of
        which at most ``int(num_samples * positive_fraction)`` are positives,
        all of them labelled 1 or 0.
    """
    labels = ops.cast(labels, "int32")
    num_anchors = labels.shape[1]
    if keys is None:
        keys = keras.random.uniform(ops.shape(labels), seed=seed)
    keys = ops.cast(keys, "float32")
    max_positives = int(num_samples * positive_fraction)
    # Non-candidates get key -1, below every real key, so top_k reaches them
    # only once the candidates run out; ``>= 0`` then drops them.
    positive_keys = ops.where(labels == 1, keys, -1.0)
    negative_keys = ops.where(labels == 0, keys, -1.0)
    positive_values, positive_indices = ops.top_k(positive_keys, min(max_positives, num_anchors))
    positive_taken = positive_values >= 0.0
    num_positives = ops.sum(ops.cast(positive_taken, "int32"), axis=1, keepdims=True)
    negative_values, negative_indices = ops.top_k(negative_keys, min(num_samples, num_anchors))
    # top_k sorts descending: the first (num_samples - positives) candidates.
    rank = ops.expand_dims(ops.arange(negative_values.shape[1], dtype="int32"), 0)
    negative_taken = ops.logical_and(negative_values >= 0.0, rank < num_samples - num_positives)
    indices = ops.concatenate([positive_indices, negative_indices], axis=1)
    taken = ops.concatenate([positive_taken, negative_taken], axis=1)
    return _selected_to_mask(indices, taken, ops.shape(labels))


def hard_negative_mining(negative_losses, positive_mask, negative_ratio=3, min_negatives=0, negative_mask=None):
    """SSD hard negative mining: the highest-loss negatives, ``ratio : 1``.

    Per image, ``n = min(max(floor(negative_ratio * num_positives),
    min_negatives), num_candidates)`` negatives with the highest loss are
    kept (exactly ``n``: equal losses are broken by a full sort, never by a
    threshold that could keep more). ``min_negatives`` gives images without
    positives a non-empty background loss.

    Args:
        negative_losses: ``[B, A]`` float, each anchor's classification loss
            as a background anchor (e.g. ``-log p(background)``); compared,
            never differentiated.
        positive_mask: ``[B, A]`` bool, the positives; never selected.
        negative_ratio: negatives per positive (Liu et al.: 3).
        min_negatives: negatives per image at least (candidates permitting).
        negative_mask: optional ``[B, A]`` bool, the anchors allowed as
            negatives (e.g. the assigner's ``negative_mask``, which excludes
            ignored anchors); by default every non-positive anchor.

    Returns:
        ``[B, A]`` bool mask of the chosen negatives.
    """
    losses = ops.stop_gradient(ops.cast(negative_losses, "float32"))
    positive_mask = ops.cast(positive_mask, "bool")
    candidates = ops.logical_not(positive_mask)
    if negative_mask is not None:
        candidates = ops.logical_and(candidates, ops.cast(negative_mask, "bool"))
    num_positives = ops.sum(ops.cast(positive_mask, "float32"), axis=1, keepdims=True)
    num_candidates = ops.sum(ops.cast(candidates, "int32"), axis=1, keepdims=True)
    wanted = ops.maximum(ops.cast(ops.floor(num_positives * float(negative_ratio)), "int32"), int(min_negatives))
    num_negatives = ops.minimum(wanted, num_candidates)
    # The rank of every anchor in descending loss order, non-candidates last:
    # argsort of the sorting permutation inverts it.
    masked = ops.where(candidates, losses, float("-inf"))
    order = ops.argsort(-masked, axis=1)
    rank = ops.cast(ops.argsort(order, axis=1), "int32")
    return ops.logical_and(rank < num_negatives, candidates)
