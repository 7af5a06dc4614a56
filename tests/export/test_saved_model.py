"""export_saved_model: the TF OD API serving contract, checked against the Python detector.

Reference outputs come from ``tests/export/helpers.reference_detections``:
the detector on the pipeline's resize, boxes divided by hand-computed scales.
A 48x80 image into 64x64 gives stretch (SSD) scales (64/48, 64/80) and
letterbox (YOLO) scale min(64/48, 64/80) = 0.8 on both axes.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import tensorflow as tf

from tfdet.export import ExportError, export_saved_model
from tfrecord_tools.label_map import load as load_label_map

from .helpers import (
    CLASS_NAMES,
    MAX_DETECTIONS,
    OUTPUT_KEYS,
    assert_outputs_close,
    encode_png,
    make_image,
    reference_detections,
    tf_example_bytes,
)

SSD_SCALE = (64 / 48, 64 / 80)
YOLO_SCALE = (0.8, 0.8)


def _run(loaded, signature, value):
    outputs = loaded.signatures[signature](input_tensor=tf.constant(value))
    return {key: tensor.numpy() for key, tensor in outputs.items()}


def test_output_keys_dtypes_and_shapes(ssd_loaded):
    assert set(ssd_loaded.signatures) == {"serving_default", "encoded_image_string_tensor", "tf_example"}
    images = np.stack([make_image(40, 50, seed) for seed in (0, 1)])
    outputs = _run(ssd_loaded, "serving_default", images)
    assert set(outputs) == OUTPUT_KEYS
    assert {key: value.dtype for key, value in outputs.items()} == {key: np.float32 for key in OUTPUT_KEYS}
    assert outputs["detection_boxes"].shape == (2, MAX_DETECTIONS, 4)
    assert outputs["detection_scores"].shape == (2, MAX_DETECTIONS)
    assert outputs["detection_classes"].shape == (2, MAX_DETECTIONS)
    assert outputs["num_detections"].shape == (2,)
    for index in range(2):
        count = int(outputs["num_detections"][index])
        classes = outputs["detection_classes"][index]
        assert 0 < count <= MAX_DETECTIONS
        assert set(np.unique(classes[:count])) <= {1.0, 2.0, 3.0}  # label-map ids, never 0
        assert np.all(classes[count:] == 0) and np.all(outputs["detection_boxes"][index, count:] == 0)
        boxes = outputs["detection_boxes"][index, :count]
        assert np.all((boxes >= 0) & (boxes <= 1))
        assert np.all(boxes[:, 2] >= boxes[:, 0]) and np.all(boxes[:, 3] >= boxes[:, 1])
    # The any-size signature: another size in the same process.
    assert _run(ssd_loaded, "serving_default", make_image(97, 33)[None])["detection_boxes"].shape == (1, 20, 4)


@pytest.mark.parametrize("family", ["ssd", "yolo"])
def test_all_signatures_match_the_python_detector(family, request):
    detector = request.getfixturevalue(f"{family}_detector")
    loaded = request.getfixturevalue(f"{family}_loaded")
    image = make_image(48, 80, seed=3)
    if family == "ssd":
        expected = reference_detections(detector, image, "stretch", SSD_SCALE)
    else:  # exported with max_detections=10, score_threshold=0.05
        saved = detector.max_detections, detector.score_threshold
        detector.max_detections, detector.score_threshold = 10, 0.05
        try:
            expected = reference_detections(detector, image, "letterbox", YOLO_SCALE)
        finally:
            detector.max_detections, detector.score_threshold = saved
        assert saved[0] == MAX_DETECTIONS  # the export (max_detections=10) gave the detector its 20 back
    assert expected["num_detections"][0] > 0
    encoded = encode_png(image)  # lossless, so the decoded pixels equal `image`
    assert_outputs_close(_run(loaded, "serving_default", image[None]), expected)
    assert_outputs_close(_run(loaded, "encoded_image_string_tensor", np.array([encoded])), expected)
    assert_outputs_close(_run(loaded, "tf_example", np.array([tf_example_bytes(encoded)])), expected)


def test_encoded_batch_of_different_sizes_resizes_each_image(ssd_detector, ssd_loaded):
    small, wide = make_image(32, 32, seed=4), make_image(48, 80, seed=5)
    outputs = _run(ssd_loaded, "encoded_image_string_tensor", np.array([encode_png(small), encode_png(wide)]))
    for index, (image, scale) in enumerate(((small, (2.0, 2.0)), (wide, SSD_SCALE))):
        expected = reference_detections(ssd_detector, image, "stretch", scale)
        assert_outputs_close({key: value[index:index + 1] for key, value in outputs.items()}, expected)


def test_jpeg_input_decodes_like_tensorflow(ssd_loaded):
    image = make_image(60, 45, seed=6)
    jpeg = tf.io.encode_jpeg(tf.constant(image), quality=90).numpy()
    decoded = tf.io.decode_image(jpeg, channels=3, expand_animations=False).numpy()
    expected = _run(ssd_loaded, "serving_default", decoded[None])
    assert_outputs_close(_run(ssd_loaded, "encoded_image_string_tensor", np.array([jpeg])), expected)


def test_assets_carry_config_and_label_map(ssd_export, yolo_export):
    with open(os.path.join(ssd_export, "assets", "tfdet_config.json"), encoding="utf-8") as stream:
        metadata = json.load(stream)
    assert metadata["model"]["name"] == "ssd300_vgg16"
    assert metadata["model"]["num_classes"] == 3
    assert metadata["model"]["image_size"] == [64, 64]
    assert metadata["model"]["resize_mode"] == "stretch"
    assert metadata["config"]["note"] == "resolved config travels as JSON"
    assert load_label_map(os.path.join(ssd_export, "assets", "label_map.pbtxt")).names == list(CLASS_NAMES)
    with open(os.path.join(yolo_export, "assets", "tfdet_config.json"), encoding="utf-8") as stream:
        yolo = json.load(stream)["model"]
    assert (yolo["image_size"], yolo["resize_mode"], yolo["max_detections"]) == ([64, 64], "letterbox", 10)
    # No label map given: ids 1..K with generated names.
    assert load_label_map(os.path.join(yolo_export, "assets", "label_map.pbtxt")).items == [
        (1, "class_1"), (2, "class_2"), (3, "class_3")]


def test_graph_has_no_tensorflow_nms_op(ssd_export, yolo_export):
    from tensorflow.core.protobuf import saved_model_pb2

    for export in (ssd_export, yolo_export):
        proto = saved_model_pb2.SavedModel()
        with open(os.path.join(export, "saved_model.pb"), "rb") as stream:
            proto.ParseFromString(stream.read())
        graph = proto.meta_graphs[0].graph_def
        ops = {node.op for node in graph.node} | {n.op for f in graph.library.function for n in f.node_def}
        assert "Conv2D" in ops and "DecodeImage" in ops and "ParseExampleV2" in ops
        assert not {op for op in ops if "NonMaxSuppression" in op}


@pytest.mark.slow
def test_loads_and_runs_in_a_process_that_imports_only_tensorflow(ssd_export, ssd_loaded):
    """TF2 loading and the session-based loader of TF1 / TF Serving / ``saved_model_cli run``."""
    image = make_image(30, 70, seed=7)
    script = textwrap.dedent(
        """
        import json, sys
        import numpy as np
        import tensorflow as tf
        export, image_path = sys.argv[1], sys.argv[2]
        loaded = tf.saved_model.load(export)
        image = np.load(image_path)
        encoded = tf.io.encode_png(image).numpy()
        example = tf.train.Example(features=tf.train.Features(feature={"image/encoded":
            tf.train.Feature(bytes_list=tf.train.BytesList(value=[encoded]))})).SerializeToString()
        result = {}
        inputs = {"serving_default": image[None], "encoded_image_string_tensor": np.array([encoded]),
                  "tf_example": np.array([example])}
        for name, value in inputs.items():
            out = loaded.signatures[name](input_tensor=tf.constant(value))
            result[name] = {key: tensor.numpy().tolist() for key, tensor in out.items()}
        # The session-based loader (what saved_model_cli run and TF Serving use).
        with tf.compat.v1.Session(graph=tf.Graph()) as session:
            meta_graph = tf.compat.v1.saved_model.loader.load(session, ["serve"], export)
            for name, value in inputs.items():
                signature = meta_graph.signature_def[name]
                keys = sorted(signature.outputs)
                fetched = session.run([signature.outputs[k].name for k in keys],
                                      {signature.inputs["input_tensor"].name: value})
                result["session/" + name] = {k: v.tolist() for k, v in zip(keys, fetched)}
        result["tfdet_imported"] = any(m == "tfdet" or m.startswith("tfdet.") for m in sys.modules)
        print(json.dumps(result))
        """
    )
    image_path = os.path.join(os.path.dirname(ssd_export), "image.npy")
    np.save(image_path, image)
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    completed = subprocess.run([sys.executable, "-c", script, ssd_export, image_path], capture_output=True,
                               text=True, timeout=300, env=env, cwd=os.path.dirname(ssd_export))
    assert completed.returncode == 0, completed.stderr[-3000:]
    result = json.loads(completed.stdout.strip().splitlines()[-1])
    assert result.pop("tfdet_imported") is False
    assert len(result) == 6
    expected = _run(ssd_loaded, "serving_default", image[None])
    for outputs in result.values():
        assert_outputs_close({key: np.asarray(value) for key, value in outputs.items()}, expected)


@pytest.mark.slow
def test_saved_model_cli_lists_the_signatures(ssd_export):
    cli = shutil.which("saved_model_cli") or os.path.join(os.path.dirname(sys.executable), "saved_model_cli")
    if not os.path.exists(cli):
        pytest.skip("saved_model_cli is not installed beside this Python")
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    shown = subprocess.run([cli, "show", "--dir", ssd_export, "--all"], capture_output=True, text=True,
                           timeout=300, env=env)
    assert shown.returncode == 0, shown.stderr[-2000:]
    blocks = shown.stdout.split("signature_def[")
    by_name = {block.split("]", 1)[0].strip("'"): block for block in blocks[1:]}
    assert {"serving_default", "encoded_image_string_tensor", "tf_example"} <= set(by_name)
    for name, dtype in (("serving_default", "DT_UINT8"), ("encoded_image_string_tensor", "DT_STRING"),
                        ("tf_example", "DT_STRING")):
        block = by_name[name]
        assert "inputs['input_tensor']" in block and dtype in block
        for key in OUTPUT_KEYS:
            assert f"outputs['{key}']" in block
        assert "outputs['detection_boxes']" in block and "shape: (-1, 20, 4)" in block


def test_failed_export_leaves_nothing_behind(ssd_detector, tmp_path, monkeypatch):
    import tfdet.export.saved_model as module

    def trivial_functions(serving, **_):
        @tf.function(input_signature=[tf.TensorSpec([None], tf.float32, name="input_tensor")])
        def identity(input_tensor):
            return {"num_detections": input_tensor}

        return {"serving_default": identity}

    real_save = tf.saved_model.save

    def save_then_fail(module_object, path, signatures=None):
        real_save(module_object, path, signatures=signatures)  # a complete SavedModel in the staging folder
        raise OSError("disk full (simulated)")

    monkeypatch.setattr(module, "serving_functions", trivial_functions)
    monkeypatch.setattr(tf.saved_model, "save", save_then_fail)
    target = tmp_path / "export"
    with pytest.raises(OSError, match="disk full"):
        export_saved_model(ssd_detector, str(target))
    assert os.listdir(tmp_path) == []
    # An existing export is not touched by a failing overwrite.
    target.mkdir()
    (target / "saved_model.pb").write_bytes(b"old")
    with pytest.raises(OSError, match="disk full"):
        export_saved_model(ssd_detector, str(target), overwrite=True)
    assert sorted(os.listdir(tmp_path)) == ["export"]
    assert (target / "saved_model.pb").read_bytes() == b"old"
    assert ssd_detector.max_detections == MAX_DETECTIONS


def test_bad_arguments_are_clear_errors(ssd_detector, tmp_path):
    existing = tmp_path / "taken"
    existing.mkdir()
    (existing / "file").write_text("x")
    with pytest.raises(ExportError, match="already exists"):
        export_saved_model(ssd_detector, str(existing))
    with pytest.raises(ExportError, match="3 classes"):
        export_saved_model(ssd_detector, str(tmp_path / "a"), label_map=["one", "two"])
    with pytest.raises(ExportError, match="differs from the detector's fixed input size"):
        export_saved_model(ssd_detector, str(tmp_path / "b"), image_size=128)
    assert sorted(os.listdir(tmp_path)) == ["taken"]
