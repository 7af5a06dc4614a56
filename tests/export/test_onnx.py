"""export_onnx: onnxruntime outputs equal to the SavedModel's serving_default (skipped without tf2onnx)."""

from __future__ import annotations

import os

import pytest
import tensorflow as tf

from tfdet.export.onnx import export_onnx, onnx_available

from .helpers import OUTPUT_KEYS, assert_outputs_close, make_image

pytestmark = pytest.mark.slow


def test_ssd_export_dir_to_onnx_matches_saved_model(ssd_export, ssd_loaded, tmp_path):
    if not onnx_available():
        pytest.skip('tf2onnx is not installed (pip install "tf2onnx>=1.17" "onnxruntime>=1.17")')
    onnxruntime = pytest.importorskip("onnxruntime", reason="onnxruntime is not installed")
    path = export_onnx(ssd_export, str(tmp_path / "ssd.onnx"))
    assert os.listdir(tmp_path) == ["ssd.onnx"]
    session = onnxruntime.InferenceSession(path, providers=["CPUExecutionProvider"])
    (model_input,) = session.get_inputs()
    assert model_input.shape == [1, 64, 64, 3] and model_input.type == "tensor(uint8)"
    names = [output.name for output in session.get_outputs()]
    assert set(names) == OUTPUT_KEYS
    image = make_image(64, 64, seed=21)[None]
    outputs = dict(zip(names, session.run(None, {model_input.name: image})))
    expected = ssd_loaded.signatures["serving_default"](input_tensor=tf.constant(image))
    assert_outputs_close(outputs, {key: value.numpy() for key, value in expected.items()}, atol=1e-4)


def test_missing_tf2onnx_is_a_clear_error(ssd_detector, tmp_path, monkeypatch):
    import builtins

    from tfdet.export import ExportError

    real_import = builtins.__import__

    def without_tf2onnx(name, *args, **kwargs):
        if name == "tf2onnx" or name.startswith("tf2onnx."):
            raise ImportError("No module named 'tf2onnx'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", without_tf2onnx)
    with pytest.raises(ExportError, match="needs tf2onnx.*pip install"):
        export_onnx(ssd_detector, str(tmp_path / "x.onnx"))
    assert os.listdir(tmp_path) == []
