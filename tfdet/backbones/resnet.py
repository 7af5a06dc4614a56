"""ResNet-50 / ResNet-101 detection backbones (He et al., "Deep Residual Learning for Image Recognition", 2016).

Variant: **v1**, the original paper's bottleneck, with the stride of a
stage's first block on its first 1x1 convolution (and on the 1x1 projection
shortcut). This is the layout of ``keras.applications.ResNet50`` /
``ResNet101`` (and of the original Caffe models), so weights in that layout
load by layer name. (The "v1.5" of torchvision and Detectron puts the stride
on the 3x3 convolution instead; it is slightly more accurate but its weights
do not fit this layout.)

Layers, named exactly as ``keras.applications`` names them:

* stem: ``conv1_pad`` (zero padding 3), ``conv1_conv`` (7x7/2, 64),
  ``conv1_bn``, ``conv1_relu``, ``pool1_pad`` (padding 1), ``pool1_pool``
  (3x3/2 max pooling): stride 4.
* stages ``conv2``..``conv5`` with 3, 4, 6 (ResNet-101: 23), 3 bottleneck
  blocks of width 64, 128, 256, 512 (outputs 4x that). Block ``b`` of stage
  ``s`` is ``conv{s}_block{b}``: ``_1_conv`` (1x1, strided in block 1 of
  stages 3..5), ``_2_conv`` (3x3, ``same``), ``_3_conv`` (1x1, 4x width),
  each followed by ``_bn`` (epsilon 1.001e-5) and, but for the last, ReLU;
  block 1 has the projection shortcut ``_0_conv`` / ``_0_bn``; ``_add`` and
  ``_out`` (ReLU) close the block. Convolutions have biases, as in
  ``keras.applications`` (redundant before batch norm, kept so its weights
  load unchanged).

Outputs: ``C3, C4, C5`` (``conv3_block4_out``, ``conv4_block6_out`` /
``conv4_block23_out``, ``conv5_block3_out``) at strides 8, 16, 32 with 512,
1024, 2048 channels; a side of ``n`` pixels gives ``ceil(n / 8)``,
``ceil(n / 16)``, ``ceil(n / 32)`` cells for any ``n`` that is a multiple of
4 (every multiple of 128 in particular).

Frozen batch norm (``freeze_batchnorm=True``, the default): every
``BatchNormalization`` layer is made non-trainable, which in Keras also makes
it always normalise with its moving statistics, i.e. a fixed affine map, as
Detectron, Detectron2 and Model Garden fine-tune detection backbones (batches
of a few large images give poor batch statistics).

Weights (``weights=``): ``None`` (random initialisation), a ``*.weights.h5``
file saved from this backbone (``model.save_weights``) or a
``keras.applications`` ResNet file in the legacy HDF5 layout (e.g. the
``..._notop.h5`` ImageNet file, or any ``model.save("x.h5")`` of a
``keras.applications`` ResNet), loaded by layer name. Every layer with weights
must be found in such a file, or a :class:`BackboneWeightsError` names the
missing ones. Nothing is downloaded. Note that ``keras.applications`` ResNets
were trained on BGR images minus the Caffe means; with ``bgr_weights=True``
the loader reverses the input channels of ``conv1_conv``'s kernel so the
network takes RGB (see ``tfdet.models.retinanet`` for the matching
normalisation).
"""

from __future__ import annotations

import os

import keras
import numpy as np
from keras import layers

__all__ = ["RESNET_DEPTHS", "BackboneWeightsError", "load_keras_applications_weights", "resnet_backbone"]

# Blocks per stage conv2..conv5.
RESNET_DEPTHS = {50: (3, 4, 6, 3), 101: (3, 4, 23, 3)}
_STAGE_WIDTHS = (64, 128, 256, 512)
_BN_EPSILON = 1.001e-5  # keras.applications' value


class BackboneWeightsError(ValueError):
    """A backbone weights file that is missing, of an unknown kind, or lacks layers."""


def _bottleneck(x, width, stride, projection, name):
    """One v1 bottleneck block (stride on the first 1x1 convolution)."""
    if projection:
        shortcut = layers.Conv2D(4 * width, 1, strides=stride, name=f"{name}_0_conv")(x)
        shortcut = layers.BatchNormalization(epsilon=_BN_EPSILON, name=f"{name}_0_bn")(shortcut)
    else:
        shortcut = x
    x = layers.Conv2D(width, 1, strides=stride, name=f"{name}_1_conv")(x)
    x = layers.BatchNormalization(epsilon=_BN_EPSILON, name=f"{name}_1_bn")(x)
    x = layers.Activation("relu", name=f"{name}_1_relu")(x)
    x = layers.Conv2D(width, 3, padding="same", name=f"{name}_2_conv")(x)
    x = layers.BatchNormalization(epsilon=_BN_EPSILON, name=f"{name}_2_bn")(x)
    x = layers.Activation("relu", name=f"{name}_2_relu")(x)
    x = layers.Conv2D(4 * width, 1, name=f"{name}_3_conv")(x)
    x = layers.BatchNormalization(epsilon=_BN_EPSILON, name=f"{name}_3_bn")(x)
    x = layers.Add(name=f"{name}_add")([shortcut, x])
    return layers.Activation("relu", name=f"{name}_out")(x)


def resnet_backbone(depth=50, input_shape=(None, None, 3), weights=None, freeze_batchnorm=True, bgr_weights=False,
                    name=None):
    """ResNet-50 or -101 (v1) returning ``[C3, C4, C5]`` (see the module docstring).

    Args:
        depth: 50 or 101.
        input_shape: ``(H, W, 3)``; ``None`` sizes allowed.
        weights: ``None``, a ``*.weights.h5`` of this backbone, or a
            ``keras.applications`` ResNet ``.h5`` file (loaded by layer name).
        freeze_batchnorm: make every batch norm a fixed affine map.
        bgr_weights: the ``.h5`` file's network expects BGR input (all
            ``keras.applications`` ResNet files do); reverses ``conv1_conv``'s
            input channels on load so this network takes RGB.
        name: the model's name (default ``resnet{depth}``).

    Returns:
        A ``keras.Model`` from images ``[B, H, W, 3]`` (preprocessing is the
        caller's) to ``[C3 [B, H/8, W/8, 512], C4 [B, H/16, W/16, 1024],
        C5 [B, H/32, W/32, 2048]]``.

    Raises:
        ValueError: an unsupported depth.
        BackboneWeightsError: a bad weights file.
    """
    if depth not in RESNET_DEPTHS:
        raise ValueError(f"ResNet depth must be one of {sorted(RESNET_DEPTHS)}, got {depth!r}")
    images = keras.Input(shape=input_shape, name="images")
    x = layers.ZeroPadding2D(3, name="conv1_pad")(images)
    x = layers.Conv2D(64, 7, strides=2, name="conv1_conv")(x)
    x = layers.BatchNormalization(epsilon=_BN_EPSILON, name="conv1_bn")(x)
    x = layers.Activation("relu", name="conv1_relu")(x)
    x = layers.ZeroPadding2D(1, name="pool1_pad")(x)
    x = layers.MaxPooling2D(3, strides=2, name="pool1_pool")(x)
    outputs = []
    for stage, (blocks, width) in enumerate(zip(RESNET_DEPTHS[depth], _STAGE_WIDTHS), start=2):
        for block in range(1, blocks + 1):
            stride = 2 if (block == 1 and stage > 2) else 1
            x = _bottleneck(x, width, stride, projection=block == 1, name=f"conv{stage}_block{block}")
        if stage >= 3:
            outputs.append(x)
    model = keras.Model(images, outputs, name=name or f"resnet{depth}")
    if freeze_batchnorm:
        for layer in model.layers:
            if isinstance(layer, layers.BatchNormalization):
                layer.trainable = False
    if weights is not None:
        _load(model, os.fspath(weights), bgr_weights)
    return model


def _load(model, path, bgr_weights):
    if not os.path.isfile(path):
        raise BackboneWeightsError(f"{path}: backbone weights file not found")
    if path.endswith(".weights.h5"):
        if bgr_weights:
            raise BackboneWeightsError(f"{path}: bgr_weights applies to keras.applications .h5 files only")
        try:
            model.load_weights(path)
        except ValueError as error:
            raise BackboneWeightsError(f"{path}: not weights of this backbone ({error})") from error
    elif path.endswith((".h5", ".hdf5")):
        load_keras_applications_weights(model, path, bgr_weights=bgr_weights)
    else:
        raise BackboneWeightsError(f"{path}: expected a .weights.h5 file of this backbone or a keras.applications .h5")


def _weighted_layer_names(path):
    """Layer names that hold weights in a legacy Keras HDF5 weights or model file."""
    import h5py

    with h5py.File(path, "r") as handle:
        group = handle
        if "layer_names" not in handle.attrs and "model_weights" in handle:
            group = handle["model_weights"]
        if "layer_names" not in group.attrs:
            raise BackboneWeightsError(f"{path}: not a Keras HDF5 weights file (no 'layer_names' attribute)")
        names = [n.decode("utf8") if isinstance(n, bytes) else str(n) for n in group.attrs["layer_names"]]
        return {n for n in names if len(group[n].attrs.get("weight_names", ())) > 0}


def load_keras_applications_weights(model, path, bgr_weights=True):
    """Loads a ``keras.applications`` ResNet ``.h5`` file into ``model`` by layer name.

    Args:
        model: a :func:`resnet_backbone` model.
        path: legacy Keras HDF5 file (weights or whole model).
        bgr_weights: reverse ``conv1_conv``'s input channels after loading
            (the file's network takes BGR; this one then takes RGB).

    Raises:
        BackboneWeightsError: the file lacks some of the model's layers, or
            a shape differs.
    """
    available = _weighted_layer_names(path)
    needed = {layer.name for layer in model.layers if layer.weights}
    missing = sorted(needed - available)
    if missing:
        shown = ", ".join(missing[:5]) + (f" and {len(missing) - 5} more" if len(missing) > 5 else "")
        raise BackboneWeightsError(f"{path}: no weights for layers {shown} (is it a ResNet of this depth?)")
    try:
        model.load_weights(path, by_name=True)
    except ValueError as error:
        raise BackboneWeightsError(f"{path}: {error}") from error
    if bgr_weights:
        conv1 = model.get_layer("conv1_conv")
        kernel = conv1.kernel
        kernel.assign(np.ascontiguousarray(keras.ops.convert_to_numpy(kernel)[:, :, ::-1, :]))
