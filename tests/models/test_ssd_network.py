"""Tests of the SSD networks and their VGG16 base: sizes, parameter counts, output layout, L2 norm, weights, XLA."""

from __future__ import annotations

import math

import numpy as np
import pytest
import tensorflow as tf

from tests.backends import run_under_jax
from tfdet.backbones.vgg import L2Normalization, vgg16_ssd_backbone
from tfdet.core import anchors
from tfdet.models.ssd import ssd300_network, ssd512_network

# ---------------------------------------------------------------------------
# Independent description of the networks from the paper / reference prototxt
# ---------------------------------------------------------------------------


def conv_params(kernel, c_in, c_out):
    """Weights plus biases of a kernel x kernel convolution."""
    return kernel * kernel * c_in * c_out + c_out


def vgg_params():
    """VGG16 conv1_1..conv5_3, conv6 (3x3, 1024), conv7 (1x1, 1024) and 512 L2-norm scales."""
    total, c_in = 0, 3
    for c_out, count in ((64, 2), (128, 2), (256, 3), (512, 3), (512, 3)):
        for _ in range(count):
            total += conv_params(3, c_in, c_out)
            c_in = c_out
    return total + conv_params(3, 512, 1024) + conv_params(1, 1024, 1024) + 512


def ssd_params(num_classes, extras, sources):
    """extras: (c_in, mid, out, kernel) per block; sources: (channels, boxes) per map."""
    total = vgg_params()
    for c_in, mid, out, kernel in extras:
        total += conv_params(1, c_in, mid) + conv_params(kernel, mid, out)
    for channels, boxes in sources:
        total += conv_params(3, channels, boxes * (num_classes + 1)) + conv_params(3, channels, boxes * 4)
    return total


SSD300_EXTRAS = ((1024, 256, 512, 3), (512, 128, 256, 3), (256, 128, 256, 3), (256, 128, 256, 3))
SSD300_SOURCES = ((512, 4), (1024, 6), (512, 6), (256, 6), (256, 4), (256, 4))
SSD300_MAPS = (38, 19, 10, 5, 3, 1)
SSD512_EXTRAS = SSD300_EXTRAS + ((256, 128, 256, 4),)
SSD512_SOURCES = ((512, 4), (1024, 6), (512, 6), (256, 6), (256, 6), (256, 4), (256, 4))
SSD512_MAPS = (64, 32, 16, 8, 4, 2, 1)
SOURCE_NAMES_300 = ("conv4_3_norm", "conv7", "conv8_2", "conv9_2", "conv10_2", "conv11_2")


@pytest.fixture(scope="module")
def ssd300():
    tf.keras.utils.set_random_seed(0)
    return ssd300_network(num_classes=20)


@pytest.fixture(scope="module")
def probe_image():
    return np.random.default_rng(1).uniform(-1.0, 1.0, (1, 300, 300, 3)).astype("float32")


# ---------------------------------------------------------------------------
# Parameter counts and shapes
# ---------------------------------------------------------------------------


def test_hand_counts_equal_the_published_numbers():
    # The counts the brief fixes, derived from the layer list alone.
    assert ssd_params(20, SSD300_EXTRAS, SSD300_SOURCES) == 26_285_486
    assert ssd_params(90, SSD300_EXTRAS, SSD300_SOURCES) == 35_641_826


def test_ssd300_parameter_count_voc(ssd300):
    assert ssd300.count_params() == 26_285_486


def test_ssd300_parameter_count_coco90():
    assert ssd300_network(num_classes=90).count_params() == 35_641_826


def test_ssd512_parameter_count_and_shapes():
    model = ssd512_network(num_classes=20)
    assert model.count_params() == ssd_params(20, SSD512_EXTRAS, SSD512_SOURCES) == 27_188_676
    assert tuple(model.output["class_logits"].shape) == (None, 24564, 21)
    assert tuple(model.output["box_deltas"].shape) == (None, 24564, 4)
    assert anchors.ssd512_default_boxes().shape[0] == 24564
    names = [f"conv{k}_2" for k in range(8, 13)]
    sizes = [model.get_layer(name).output.shape[1:3] for name in ["conv4_3_norm", "conv7", *names]]
    assert [tuple(s) for s in sizes] == [(m, m) for m in SSD512_MAPS]


def test_ssd300_shapes_per_map(ssd300):
    assert tuple(ssd300.output["class_logits"].shape) == (None, 8732, 21)
    assert tuple(ssd300.output["box_deltas"].shape) == (None, 8732, 4)
    for name, size, (_, boxes) in zip(SOURCE_NAMES_300, SSD300_MAPS, SSD300_SOURCES):
        assert tuple(ssd300.get_layer(f"{name}_class").output.shape) == (None, size, size, boxes * 21)
        assert tuple(ssd300.get_layer(f"{name}_box").output.shape) == (None, size, size, boxes * 4)
    # Same box total as the default boxes the outputs pair with.
    assert sum(s * s * n for s, (_, n) in zip(SSD300_MAPS, SSD300_SOURCES)) == 8732
    assert anchors.ssd_default_boxes().shape[0] == 8732


def test_backbone_map_sizes_and_ceil_mode_pool3():
    small = vgg16_ssd_backbone((300, 300, 3))
    assert [tuple(t.shape) for t in small.outputs] == [(None, 38, 38, 512), (None, 19, 19, 1024)]
    assert tuple(small.get_layer("conv3_3").output.shape) == (None, 75, 75, 256)
    big = vgg16_ssd_backbone((512, 512, 3))
    assert [tuple(t.shape) for t in big.outputs] == [(None, 64, 64, 512), (None, 32, 32, 1024)]
    # Caffe ceil mode on 75x75: windows start at 0, 2, ..., 74; the last one holds row/column 74 only.
    x = np.random.default_rng(0).uniform(0.0, 1.0, (1, 75, 75, 2)).astype("float32")
    got = np.asarray(small.get_layer("pool3")(x))
    want = np.zeros((1, 38, 38, 2), "float32")
    for i in range(38):
        for j in range(38):
            want[0, i, j] = x[0, 2 * i : 2 * i + 2, 2 * j : 2 * j + 2].max(axis=(0, 1))
    np.testing.assert_array_equal(got, want)


# ---------------------------------------------------------------------------
# Output layout == default box order
# ---------------------------------------------------------------------------


def layout_table(maps, boxes_per_map):
    """(map, y, x, box) of every flat index, by explicit loops in the anchors' documented order."""
    table = []
    for k, (size, n) in enumerate(zip(maps, boxes_per_map)):
        for y in range(size):
            for x in range(size):
                table.extend((k, y, x, b) for b in range(n))
    return table


def test_ssd300_outputs_follow_default_box_order(ssd300, probe_image):
    table = layout_table(SSD300_MAPS, [n for _, n in SSD300_SOURCES])
    assert len(table) == 8732

    # The default boxes at index i are centred on cell (y, x) of map k, and box b
    # of a location is, in order: square s_k, square sqrt(s_k s_k+1), then ratio 2, 1/2 (3, 1/3).
    boxes = np.asarray(anchors.ssd_default_boxes(300, scales=anchors.SSD300_REFERENCE_SCALES))
    scales = anchors.SSD300_REFERENCE_SCALES
    for i in range(0, 8732, 97):  # a spread of indices keeps the loop cheap
        k, y, x, b = table[i]
        step = 300 / SSD300_MAPS[k]
        cy, cx = (boxes[i, 0] + boxes[i, 2]) / 2, (boxes[i, 1] + boxes[i, 3]) / 2
        np.testing.assert_allclose([cy, cx], [(y + 0.5) * step, (x + 0.5) * step], rtol=1e-5)
        h, w = boxes[i, 2] - boxes[i, 0], boxes[i, 3] - boxes[i, 1]
        ratio_w_over_h = [1.0, 1.0, 2.0, 0.5, 3.0, 1.0 / 3.0][b]
        side = math.sqrt(scales[k] * scales[k + 1]) if b == 1 else scales[k]
        root = math.sqrt(ratio_w_over_h)
        np.testing.assert_allclose([w, h], [300 * side * root, 300 * side / root], rtol=1e-4)

    # The network's output i is value c of box b at (y, x) of map k: channel b * C + c of that map's head conv.
    heads = {
        f"{name}_{kind}": ssd300.get_layer(f"{name}_{kind}").output
        for name in SOURCE_NAMES_300
        for kind in ("class", "box")
    }
    probe = tf.keras.Model(ssd300.input, {**heads, **ssd300.output})
    out = {key: np.asarray(value) for key, value in probe(probe_image).items()}
    for kind, key, channels in (("class", "class_logits", 21), ("box", "box_deltas", 4)):
        want = np.stack(
            [out[f"{SOURCE_NAMES_300[k]}_{kind}"][0, y, x, b * channels : (b + 1) * channels] for k, y, x, b in table]
        )
        np.testing.assert_array_equal(out[key][0], want)


# ---------------------------------------------------------------------------
# L2Normalization
# ---------------------------------------------------------------------------


def test_l2_normalization_hand_computed():
    layer = L2Normalization()
    # Two locations: (3, 4) has norm 5; (0, 0) must stay 0, not NaN.
    x = np.array([[[[3.0, 4.0], [0.0, 0.0]]]], "float32")
    np.testing.assert_allclose(np.asarray(layer(x)), [[[[12.0, 16.0], [0.0, 0.0]]]], rtol=1e-6)
    np.testing.assert_array_equal(np.asarray(layer.gamma), [20.0, 20.0])
    assert layer.gamma.trainable
    layer.gamma.assign([1.0, 2.0])
    # (6, 8) has norm 10 -> (0.6, 0.8), then scaled per channel by (1, 2).
    np.testing.assert_allclose(np.asarray(layer(np.array([[[[6.0, 8.0]]]], "float32"))), [[[[0.6, 1.6]]]], rtol=1e-6)


def test_conv4_3_norm_scale_starts_at_20():
    model = vgg16_ssd_backbone((None, None, 3))
    gamma = np.asarray(model.get_layer("conv4_3_norm").gamma)
    assert gamma.shape == (512,)
    np.testing.assert_array_equal(gamma, np.full(512, 20.0))


# ---------------------------------------------------------------------------
# Weights files
# ---------------------------------------------------------------------------


def test_backbone_weights_file_round_trip(tmp_path):
    image = np.random.default_rng(2).uniform(-1.0, 1.0, (1, 48, 48, 3)).astype("float32")
    tf.keras.utils.set_random_seed(3)
    source = vgg16_ssd_backbone((None, None, 3))
    path = str(tmp_path / "vgg.weights.h5")
    source.save_weights(path)
    loaded = vgg16_ssd_backbone((None, None, 3), weights=path)
    fresh = vgg16_ssd_backbone((None, None, 3), weights=None)
    for want, got in zip(source(image), loaded(image)):
        np.testing.assert_array_equal(np.asarray(got), np.asarray(want))
    # A fresh random initialisation differs, so the equality above came from the file.
    assert not np.allclose(np.asarray(fresh(image)[1]), np.asarray(source(image)[1]))


def test_ssd300_loads_backbone_weights_file(tmp_path):
    tf.keras.utils.set_random_seed(4)
    backbone = vgg16_ssd_backbone((300, 300, 3))
    path = str(tmp_path / "vgg300.weights.h5")
    backbone.save_weights(path)
    model = ssd300_network(backbone_weights=path)
    for name in ("conv1_1", "conv6", "conv4_3_norm"):
        for want, got in zip(backbone.get_layer(name).weights, model.get_layer(name).weights):
            np.testing.assert_array_equal(np.asarray(got), np.asarray(want))


# ---------------------------------------------------------------------------
# XLA and JAX
# ---------------------------------------------------------------------------


@pytest.mark.slow
def test_ssd300_xla_forward_equals_eager(ssd300, probe_image):
    eager = ssd300(probe_image)
    compiled = tf.function(lambda images: ssd300(images), jit_compile=True)(tf.constant(probe_image))
    for key in ("class_logits", "box_deltas"):
        np.testing.assert_allclose(np.asarray(compiled[key]), np.asarray(eager[key]), rtol=1e-4, atol=1e-4)


@pytest.mark.slow
def test_ssd300_builds_and_runs_under_jax():
    # JAX compiles its random initializer once per weight shape (about 1 s each
    # on this CPU, 45 s for SSD300), so the snippet initialises with NumPy:
    # what is under test is the layer graph, not Keras' initializers.
    out = run_under_jax(
        """
        import jax
        import keras
        import numpy as np
        rng = np.random.default_rng(0)
        keras.initializers.GlorotUniform.__call__ = (
            lambda self, shape, dtype=None: rng.uniform(-0.05, 0.05, shape).astype("float32"))
        from tfdet.models.ssd import ssd300_network
        model = ssd300_network(num_classes=20)
        out = jax.jit(lambda x: model(x))(np.ones((1, 300, 300, 3), "float32"))
        print(model.count_params(), tuple(out["class_logits"].shape), tuple(out["box_deltas"].shape),
              all(bool(np.isfinite(np.asarray(v)).all()) for v in out.values()))
        """
    )
    assert out.strip().splitlines()[-1] == "26285486 (1, 8732, 21) (1, 8732, 4) True"
