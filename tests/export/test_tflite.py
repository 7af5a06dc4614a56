"""export_tflite: builtin ops only, outputs equal to the SavedModel's serving_default."""

from __future__ import annotations

import os

import numpy as np
import pytest
import tensorflow as tf

from tfdet.export import ExportError
from tfdet.export.tflite import export_tflite, tflite_interpreter, tflite_operators

from .helpers import MAX_DETECTIONS, OUTPUT_KEYS, assert_outputs_close, make_image

pytestmark = pytest.mark.slow


def _run_tflite(path, image):
    runner = tflite_interpreter(path).get_signature_runner("serving_default")
    return runner(input_tensor=image)


def _run_saved_model(loaded, image):
    outputs = loaded.signatures["serving_default"](input_tensor=tf.constant(image.astype(np.uint8)))
    return {key: value.numpy() for key, value in outputs.items()}


def test_ssd_export_dir_to_tflite_uint8(ssd_export, ssd_loaded, tmp_path):
    path = export_tflite(ssd_export, str(tmp_path / "ssd.tflite"))
    assert sorted(os.listdir(tmp_path)) == ["ssd.tflite"]  # no scratch files left
    operators = tflite_operators(path)
    assert operators["custom"] == []  # no Flex (Select TF) and no custom ops
    assert {"CONV_2D", "RESIZE_BILINEAR", "WHILE"} <= set(operators["builtin"])
    interpreter = tflite_interpreter(path)
    signature = interpreter.get_signature_list()["serving_default"]
    assert signature["inputs"] == ["input_tensor"] and set(signature["outputs"]) == OUTPUT_KEYS
    details = interpreter.get_signature_runner("serving_default").get_input_details()["input_tensor"]
    assert list(details["shape"]) == [1, 64, 64, 3] and details["dtype"] == np.uint8
    image = make_image(64, 64, seed=11)[None]
    outputs = _run_tflite(path, image)
    assert outputs["detection_boxes"].shape == (1, MAX_DETECTIONS, 4)
    assert_outputs_close(outputs, _run_saved_model(ssd_loaded, image), atol=1e-4)


def test_any_size_yolo_to_float_tflite_with_letterbox(yolo_detector, yolo_loaded, tmp_path):
    # The same settings as the session's YOLO export, input 48x80 float32.
    path = export_tflite(yolo_detector, str(tmp_path / "yolo.tflite"), input_size=(48, 80), input_dtype="float32",
                         image_size=64, max_detections=10, score_threshold=0.05)
    assert tflite_operators(path)["custom"] == []
    image = make_image(48, 80, seed=12)[None]
    outputs = _run_tflite(path, image.astype(np.float32))
    expected = _run_saved_model(yolo_loaded, image)
    assert expected["num_detections"][0] > 0
    assert_outputs_close(outputs, expected, atol=1e-4)


def test_bad_arguments(ssd_detector, tmp_path):
    with pytest.raises(ExportError, match="input_dtype"):
        export_tflite(ssd_detector, str(tmp_path / "x.tflite"), input_dtype="int8")
    with pytest.raises(ExportError, match="not a tfdet export"):
        export_tflite(str(tmp_path), str(tmp_path / "x.tflite"))
    assert os.listdir(tmp_path) == []
