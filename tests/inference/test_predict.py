"""tfdet export (from a run) and predict: images, folders with bad files, video, COCO results.

Truth: the Python detector (``tests/export/helpers.reference_detections``),
boxes mapped to pixels by hand, and COCOeval scoring a perfect prediction.
"""

from __future__ import annotations

import json
import os

import cv2
import numpy as np
import pytest
import tensorflow as tf

from tests.export.helpers import CLASS_NAMES, make_image, reference_detections
from tfdet.inference import predict
from tfdet.inference.exported import PredictError
from tfdet.inference.inputs import InputError

from .conftest import run_cli

pytestmark = pytest.mark.slow


def _write(path, image_rgb):
    assert cv2.imwrite(str(path), np.ascontiguousarray(image_rgb[..., ::-1]))


def test_export_cli_from_a_training_run_matches_the_detector(exported, trained_detector):
    metadata = json.load(open(os.path.join(exported, "assets", "tfdet_config.json"), encoding="utf-8"))
    assert metadata["config"]["model"]["name"] == "ssd300_vgg16"
    assert [item["name"] for item in metadata["label_map"]["items"]] == list(CLASS_NAMES)
    loaded = tf.saved_model.load(exported)
    image = make_image(48, 80, seed=31)
    outputs = loaded.signatures["serving_default"](input_tensor=tf.constant(image[None]))
    expected = reference_detections(trained_detector, image, "stretch", (64 / 48, 64 / 80))
    for key, value in expected.items():
        np.testing.assert_allclose(outputs[key].numpy(), value, atol=1e-5, err_msg=key)


def test_export_cli_errors_are_one_line(tmp_path, trained_detector, capsys):
    keras_path = tmp_path / "model.keras"
    trained_detector.save(str(keras_path))
    (tmp_path / "out" / "saved_model").mkdir(parents=True)
    (tmp_path / "out" / "saved_model" / "saved_model.pb").write_bytes(b"x")
    assert run_cli(["export", "--model", str(keras_path), "--output", str(tmp_path / "out")]) == 1
    assert "already exists" in capsys.readouterr().err
    assert run_cli(["export", "--checkpoint-dir", str(tmp_path), "--output", str(tmp_path / "o2")]) == 1
    assert "no config.yaml" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        run_cli(["export", "--model", str(keras_path), "--output", str(tmp_path / "o3"), "--image-size", "big"])


def test_folder_with_a_corrupt_image_and_a_stray_file(exported, trained_detector, tmp_path):
    folder = tmp_path / "images"
    folder.mkdir()
    first, second = make_image(48, 80, seed=32), make_image(70, 50, seed=33)
    _write(folder / "a_first.png", first)
    _write(folder / "b_second.png", second)
    (folder / "c_corrupt.jpg").write_bytes(b"\xff\xd8\xff\xe0 this is not really a jpeg")
    (folder / "notes.txt").write_text("not an image")
    output = tmp_path / "out"
    summary = predict(exported, str(folder), str(output), threshold=0.0)
    assert summary["images"] == 2 and summary["num_skipped"] == 2
    reasons = {os.path.basename(item["file"]): item["reason"] for item in summary["skipped"]}
    assert set(reasons) == {"c_corrupt.jpg", "notes.txt"}
    assert "not a decodable image" in reasons["c_corrupt.jpg"] and "not an image" in reasons["notes.txt"]
    for name, image in (("a_first.png", first), ("b_second.png", second)):
        annotated = cv2.imread(str(output / name))
        assert annotated.shape == image.shape
        assert np.any(annotated != image[..., ::-1])  # boxes were drawn

    # detections.json = the Python detector's outputs in original pixels, COCO xywh.
    results = json.load(open(summary["results"], encoding="utf-8"))
    listing = json.load(open(summary["images_json"], encoding="utf-8"))
    assert [(i["id"], os.path.basename(i["file_name"]), i["height"], i["width"]) for i in listing["images"]] == [
        (1, "a_first.png", 48, 80), (2, "b_second.png", 70, 50)]
    assert listing["categories"] == [{"id": i + 1, "name": n} for i, n in enumerate(CLASS_NAMES)]
    for image_id, image in ((1, first), (2, second)):
        height, width = image.shape[:2]
        expected = reference_detections(trained_detector, image, "stretch", (64 / height, 64 / width))
        count = int(expected["num_detections"][0])
        boxes = expected["detection_boxes"][0, :count] * [height, width, height, width]
        xywh = np.stack([boxes[:, 1], boxes[:, 0], boxes[:, 3] - boxes[:, 1], boxes[:, 2] - boxes[:, 0]], axis=1)
        mine = [r for r in results if r["image_id"] == image_id]
        assert len(mine) == count > 0
        np.testing.assert_allclose([r["bbox"] for r in mine], xywh, atol=1e-3)
        np.testing.assert_allclose([r["score"] for r in mine], expected["detection_scores"][0, :count], atol=1e-5)
        assert [r["category_id"] for r in mine] == expected["detection_classes"][0, :count].astype(int).tolist()


def test_results_score_with_tfdet_evaluation(exported, tmp_path):
    from tfdet.evaluation.coco import evaluate_results

    for seed, size in ((34, (64, 64)), (35, (50, 90))):
        _write(tmp_path / f"img{seed}.png", make_image(*size, seed=seed))
    summary = predict(exported, str(tmp_path), str(tmp_path / "out"), threshold=0.3)
    results = json.load(open(summary["results"], encoding="utf-8"))
    listing = json.load(open(summary["images_json"], encoding="utf-8"))
    assert results, "the random tiny SSD should give detections above 0.3"
    # Ground truth = the predictions themselves: a perfect prediction scores AP 1.
    annotations = [{"id": index + 1, "image_id": r["image_id"], "category_id": r["category_id"], "bbox": r["bbox"],
                    "area": r["bbox"][2] * r["bbox"][3], "iscrowd": 0} for index, r in enumerate(results)]
    groundtruth = dict(listing, annotations=annotations)
    metrics = evaluate_results(groundtruth, summary["results"])
    assert metrics["AP"] == pytest.approx(1.0) and metrics["AP50"] == pytest.approx(1.0)


def test_video_round_trip(exported, tmp_path, capsys):
    video = tmp_path / "clip.mp4"
    writer = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"mp4v"), 10.0, (64, 48))
    assert writer.isOpened()
    for index in range(5):
        writer.write(np.ascontiguousarray(make_image(48, 64, seed=40 + index)[..., ::-1]))
    writer.release()
    output = tmp_path / "out"
    assert run_cli(["predict", "--model", os.path.dirname(exported), "--input", str(video), "--output",
                    str(output), "--threshold", "0.2"]) == 0
    assert "5 frames" in capsys.readouterr().out
    capture = cv2.VideoCapture(str(output / "clip.mp4"))
    frames = 0
    while True:
        ok, frame = capture.read()
        if not ok:
            break
        assert frame.shape == (48, 64, 3)
        frames += 1
    capture.release()
    assert frames == 5
    assert sorted(os.listdir(output)) == ["clip.mp4", "detections.json", "images.json"]
    listing = json.load(open(output / "images.json", encoding="utf-8"))
    assert [image["id"] for image in listing["images"]] == [1, 2, 3, 4, 5]


def test_bad_inputs_are_clear_errors(exported, tmp_path, capsys):
    with pytest.raises(InputError, match="no such file"):
        predict(exported, str(tmp_path / "missing.jpg"), str(tmp_path / "out"))
    with pytest.raises(PredictError, match="not a SavedModel"):
        predict(str(tmp_path), str(tmp_path), str(tmp_path / "out"))
    # Only unreadable inputs: the command says so and fails, without a traceback.
    (tmp_path / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n broken")
    assert run_cli(["predict", "--model", exported, "--input", str(tmp_path / "broken.png"), "--output",
                    str(tmp_path / "out")]) == 1
    err = capsys.readouterr().err
    assert "broken.png" in err and "1 input(s) skipped" in err and "Traceback" not in err
