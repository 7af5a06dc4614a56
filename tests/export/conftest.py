"""Session-wide exports for tests/export: each tiny detector is exported once."""

from __future__ import annotations

import pytest

from tfrecord_tools.label_map import LabelMap

from .helpers import CLASS_NAMES, SIZE, tiny_ssd, tiny_yolo_any_size


@pytest.fixture(scope="session")
def ssd_detector():
    return tiny_ssd()


@pytest.fixture(scope="session")
def yolo_detector():
    return tiny_yolo_any_size()


@pytest.fixture(scope="session")
def ssd_export(ssd_detector, tmp_path_factory):
    from tfdet.export import export_saved_model

    config = {"model": {"name": "ssd300_vgg16"}, "note": "resolved config travels as JSON"}
    path = tmp_path_factory.mktemp("ssd") / "saved_model"
    return export_saved_model(ssd_detector, str(path), label_map=LabelMap.from_names(CLASS_NAMES), config=config)


@pytest.fixture(scope="session")
def yolo_export(yolo_detector, tmp_path_factory):
    from tfdet.export import export_saved_model

    path = tmp_path_factory.mktemp("yolo") / "saved_model"
    return export_saved_model(yolo_detector, str(path), image_size=SIZE, max_detections=10, score_threshold=0.05)


@pytest.fixture(scope="session")
def ssd_loaded(ssd_export):
    import tensorflow as tf

    return tf.saved_model.load(ssd_export)


@pytest.fixture(scope="session")
def yolo_loaded(yolo_export):
    import tensorflow as tf

    return tf.saved_model.load(yolo_export)
