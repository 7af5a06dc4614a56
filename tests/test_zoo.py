"""The registry: names, errors, and that listing models loads no model code."""

from __future__ import annotations

import subprocess
import sys

import pytest

import tfdet


def test_list_models_names_every_family_and_imports_no_keras():
    code = "import sys, tfdet; print(','.join(tfdet.list_models())); print('keras' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    families = ["ssd300_vgg16", "ssd512_vgg16", "yolov3", "yolov3_tiny", "retinanet_resnet50_fpn",
                "retinanet_resnet101_fpn"] + [f"efficientdet_d{index}" for index in range(8)]
    assert out[0].split(",") == sorted(families)
    assert out[1] == "False"


def test_unknown_model_lists_the_known_ones():
    with pytest.raises(ValueError, match="unknown model 'ssd1000'.*ssd300_vgg16.*yolov3"):
        tfdet.build_model("ssd1000", num_classes=3)


def test_num_classes_counts_foreground_and_must_be_positive():
    with pytest.raises(ValueError, match="foreground"):
        tfdet.build_model("yolov3_tiny", num_classes=0)


def test_registering_a_name_twice_is_refused():
    from tfdet.zoo import register

    @register("test_only_model")
    def first(num_classes):
        return num_classes

    with pytest.raises(ValueError, match="already registered"):
        register("test_only_model")(lambda num_classes: num_classes)


@pytest.mark.slow
def test_a_saved_detector_loads_in_a_fresh_process(tmp_path):
    """Keras needs the family's module imported to find the class; tfdet.load_model does that."""
    path = tmp_path / "tiny.keras"
    save = (
        "import numpy as np, tfdet\n"
        "m = tfdet.build_model('yolov3_tiny', 2, image_size=64)\n"
        f"m.save(r'{path}')\n"
        "x = np.random.default_rng(0).uniform(0, 255, (1, 64, 64, 3)).astype('float32')\n"
        "np.save(r'%s', np.concatenate([np.ravel(v) for v in m(x).values()]))\n" % (tmp_path / "before.npy")
    )
    load = (
        "import numpy as np, tfdet\n"
        f"m = tfdet.load_model(r'{path}')\n"
        "x = np.random.default_rng(0).uniform(0, 255, (1, 64, 64, 3)).astype('float32')\n"
        "print(type(m).__name__, m.num_classes)\n"
        "np.save(r'%s', np.concatenate([np.ravel(v) for v in m(x).values()]))\n" % (tmp_path / "after.npy")
    )
    for code in (save, load):
        done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
        assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.split()[-2:] == ["YOLOv3Detector", "2"]
    import numpy as np

    np.testing.assert_array_equal(np.load(tmp_path / "before.npy"), np.load(tmp_path / "after.npy"))
