"""Counting the multiply-adds of a functional Keras model from its layer shapes.

The count is analytic: every call of a layer in the model's graph (a layer
shared across pyramid levels counts once per level) contributes its
multiply-accumulates, read from the call's static input and output shapes,
for ONE image (the batch axis is ignored):

* ``Conv2D``: ``k_h k_w (C_in / groups) C_out H_out W_out``;
* ``DepthwiseConv2D``: ``k_h k_w C_in m H_out W_out`` (``m`` the depth
  multiplier);
* ``SeparableConv2D``: its depthwise part plus the pointwise
  ``C_in m C_out H_out W_out``;
* ``Conv2DTranspose``: ``k_h k_w C_in C_out H_in W_in``;
* ``Dense``: ``C_in C_out`` times the other (non-batch) output positions.

Everything else (biases, batch norm, activations, additions, pooling,
resizing, the weighted BiFPN fusions) is left out: those are elementwise and
small next to the convolutions, and batch norm folds into the preceding
convolution at inference. Nested functional models (a backbone used as a
layer) are walked recursively, once per call.

``count_flops`` is ``2 x`` the multiply-adds (one multiply and one add).
Many detection papers (EfficientDet's "FLOPs" among them) report the
multiply-adds themselves under the name FLOPs; compare with
``count_multiply_adds`` there.
"""

from __future__ import annotations

import math

from keras import layers

__all__ = ["count_flops", "count_multiply_adds", "layer_multiply_adds"]


def _spatial(shape):
    """Product of the non-batch, non-channel dimensions of a static shape."""
    dims = shape[1:-1]
    if any(d is None for d in dims):
        raise ValueError(f"count_flops needs static spatial shapes, got {tuple(shape)}")
    return math.prod(int(d) for d in dims)


def layer_multiply_adds(layer, input_shape, output_shape) -> int:
    """Multiply-adds of one call of ``layer`` with the given static shapes (0 for uncounted layers)."""
    if isinstance(layer, layers.SeparableConv2D):
        kernel = math.prod(layer.kernel_size)
        c_in = int(input_shape[-1])
        inner = c_in * layer.depth_multiplier
        positions = _spatial(output_shape)
        return kernel * inner * positions + inner * int(output_shape[-1]) * positions
    if isinstance(layer, layers.DepthwiseConv2D):
        kernel = math.prod(layer.kernel_size)
        return kernel * int(input_shape[-1]) * layer.depth_multiplier * _spatial(output_shape)
    if isinstance(layer, layers.Conv2DTranspose):
        kernel = math.prod(layer.kernel_size)
        return kernel * int(input_shape[-1]) * int(output_shape[-1]) * _spatial(input_shape)
    if isinstance(layer, (layers.Conv1D, layers.Conv2D, layers.Conv3D)):
        kernel = math.prod(layer.kernel_size)
        groups = getattr(layer, "groups", 1)
        return kernel * (int(input_shape[-1]) // groups) * int(output_shape[-1]) * _spatial(output_shape)
    if isinstance(layer, layers.Dense):
        positions = math.prod(int(d) for d in output_shape[1:-1]) if len(output_shape) > 2 else 1
        return int(input_shape[-1]) * int(output_shape[-1]) * positions
    return 0


def _graph_nodes(model):
    """The call nodes of a functional model's graph (every call of every layer)."""
    nodes_by_depth = getattr(model, "_nodes_by_depth", None)
    if nodes_by_depth is None:
        raise ValueError(f"count_flops needs a functional keras.Model, got {type(model).__name__}")
    for depth in sorted(nodes_by_depth):
        yield from nodes_by_depth[depth]


def count_multiply_adds(model) -> int:
    """Multiply-adds of one forward pass of one image through a built functional ``model``.

    Args:
        model: a functional ``keras.Model`` with static input sizes (a
            ``Detector``'s ``network``, or a Detector itself, whose network is
            then counted).

    Returns:
        The multiply-adds (module docstring lists what counts).

    Raises:
        ValueError: not a functional model, or a layer without static shapes.
    """
    if not hasattr(model, "_nodes_by_depth") and hasattr(model, "network"):
        model = model.network
    total = 0
    for node in _graph_nodes(model):
        operation = node.operation
        if node.is_input:
            continue
        if hasattr(operation, "_nodes_by_depth"):
            total += count_multiply_adds(operation)
            continue
        inputs = node.input_tensors
        if not inputs or not node.outputs:
            continue
        total += layer_multiply_adds(operation, tuple(inputs[0].shape), tuple(node.outputs[0].shape))
    return total


def count_flops(model) -> int:
    """``2 x count_multiply_adds(model)``: floating-point operations of one image's forward pass."""
    return 2 * count_multiply_adds(model)
