"""YOLOv3 / YOLOv3-tiny graphs: parameter counts, output shapes, backends.

Parameter truths: the published Darknet-format YOLOv3 (COCO, 80 classes) has
62,001,757 parameters, 61,949,149 of them trainable (the rest are the batch
norms' moving statistics). The tiny count is computed by hand below from
yolov3-tiny.cfg's layer list.
"""

from __future__ import annotations

import keras
import numpy as np
import pytest

from tfdet.backbones.darknet import darknet53, yolov3_tiny_backbone
from tfdet.models.yolov3 import yolov3_network, yolov3_tiny_network

from ..backends import run_under_jax


def _trainable(model):
    return sum(int(np.prod(w.shape)) for w in model.trainable_weights)


@pytest.fixture(scope="module")
def yolov3():
    return yolov3_network(80)


def test_yolov3_parameter_count(yolov3):
    assert yolov3.count_params() == 62_001_757
    assert _trainable(yolov3) == 61_949_149


def _tiny_count(num_classes):
    """yolov3-tiny.cfg by hand: (kernel, in, out, batch-normalised) per conv."""
    out = 3 * (5 + num_classes)
    convs = [(3, 3, 16, True), (3, 16, 32, True), (3, 32, 64, True), (3, 64, 128, True),
             (3, 128, 256, True), (3, 256, 512, True), (3, 512, 1024, True),  # trunk
             (1, 1024, 256, True), (3, 256, 512, True), (1, 512, out, False),  # 13x13 head
             (1, 256, 128, True), (3, 128 + 256, 256, True), (1, 256, out, False)]  # 26x26 head
    total = trainable = 0
    for k, cin, cout, bn in convs:
        weights = k * k * cin * cout
        # BN: gamma, beta trainable; moving mean, variance not. Otherwise a bias.
        total += weights + (4 * cout if bn else cout)
        trainable += weights + (2 * cout if bn else cout)
    return total, trainable


@pytest.mark.parametrize("num_classes", [80, 20])
def test_tiny_parameter_count(num_classes):
    model = yolov3_tiny_network(num_classes)
    assert (model.count_params(), _trainable(model)) == _tiny_count(num_classes)


def test_tiny_count_is_the_known_one():
    # The widely quoted yolov3-tiny size (COCO): 8,858,734 parameters.
    assert _tiny_count(80)[0] == 8_858_734


@pytest.mark.slow
@pytest.mark.parametrize("size, grids", [(416, (13, 26, 52)), (320, (10, 20, 40))])
def test_yolov3_output_shapes(yolov3, size, grids):
    out = yolov3(np.zeros((1, size, size, 3), "float32"))
    assert sorted(out) == ["p3", "p4", "p5"]
    for key, g in zip(("p5", "p4", "p3"), grids):
        assert tuple(out[key].shape) == (1, g, g, 255)


def test_yolov3_symbolic_shapes_non_square(yolov3):
    spec = yolov3.compute_output_spec(keras.KerasTensor((2, 320, 416, 3)))
    assert {k: tuple(v.shape) for k, v in spec.items()} == {
        "p5": (2, 10, 13, 255), "p4": (2, 20, 26, 255), "p3": (2, 40, 52, 255)}


@pytest.mark.parametrize("size, grids", [(416, (13, 26)), (320, (10, 20))])
def test_tiny_output_shapes(size, grids):
    model = yolov3_tiny_network(3)
    out = model(np.zeros((1, size, size, 3), "float32"))
    assert {k: tuple(v.shape) for k, v in out.items()} == {
        "p5": (1, grids[0], grids[0], 24), "p4": (1, grids[1], grids[1], 24)}


def test_backbones_strides_and_channels():
    c3, c4, c5 = darknet53().compute_output_spec(keras.KerasTensor((1, 256, 320, 3)))
    assert [tuple(t.shape) for t in (c3, c4, c5)] == [(1, 32, 40, 256), (1, 16, 20, 512), (1, 8, 10, 1024)]
    c4, c5 = yolov3_tiny_backbone().compute_output_spec(keras.KerasTensor((1, 256, 320, 3)))
    assert [tuple(t.shape) for t in (c4, c5)] == [(1, 16, 20, 256), (1, 8, 10, 1024)]


def test_stride2_padding_is_top_left():
    """Darknet's 3x3/2 conv reads input rows -1, 0, 1 for output row 0."""
    model = darknet53(input_shape=(32, 32, 3))
    pad = model.get_layer("pad_1")  # the first stride-2 conv's padding
    x = np.arange(32 * 32 * 32, dtype="float32").reshape(1, 32, 32, 32)
    y = np.asarray(pad(x))
    assert y.shape == (1, 33, 33, 32)
    assert (y[:, 0] == 0).all() and (y[:, :, 0] == 0).all()
    np.testing.assert_array_equal(y[:, 1:, 1:], x)


@pytest.mark.slow
def test_tiny_runs_under_jax_jit():
    out = run_under_jax(
        """
        import jax, numpy as np
        from tfdet.models.yolov3 import yolov3_tiny_network
        model = yolov3_tiny_network(2)
        f = jax.jit(lambda tv, ntv, x: model.stateless_call(tv, ntv, x)[0])
        out = f([v.value for v in model.trainable_variables], [v.value for v in model.non_trainable_variables],
                np.zeros((1, 64, 96, 3), "float32"))
        print(tuple(out["p5"].shape), tuple(out["p4"].shape))
        """
    )
    assert out.split("\n")[-2] == "(1, 2, 3, 21) (1, 4, 6, 21)"


def test_tiny_compiles_under_xla():
    import tensorflow as tf

    model = yolov3_tiny_network(2)
    x = np.random.default_rng(0).uniform(size=(1, 64, 96, 3)).astype("float32")
    compiled = tf.function(lambda v: model(v, training=False), jit_compile=True)(x)
    eager = model(x, training=False)
    for key in ("p5", "p4"):
        np.testing.assert_allclose(np.asarray(compiled[key]), np.asarray(eager[key]), atol=1e-5)
