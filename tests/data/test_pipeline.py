"""build_dataset: shapes, determinism, sharding, padding, eval order, PNG data."""

import os

import numpy as np
import pytest
import tensorflow as tf

from tests.data.helpers import mask_bbox, tf_api_example, write_tfrecord
from tfdet.data import build_dataset
from tfdet.data.pipeline import DataPipelineError
from tfdet.data.synthetic import SHAPES, make_image, write_synthetic_dataset


@pytest.fixture(scope="module")
def shapes_dir(tmp_path_factory):
    directory = tmp_path_factory.mktemp("shapes")
    write_synthetic_dataset(str(directory), 24, image_size=64, masks=True, seed=0, num_shards=4)
    return directory


def _batches(dataset, count):
    return [tf.nest.map_structure(lambda t: t.numpy(), batch) for batch in dataset.take(count)]


def _training(shapes_dir, **kwargs):
    options = dict(image_size=(48, 48), resize_mode="letterbox", batch_size=4, training=True,
                   augmentation="ssd", max_instances=6, with_masks=True, deterministic=True, seed=1,
                   shuffle_buffer=8)
    options.update(kwargs)
    return build_dataset(str(shapes_dir / "train-*.tfrecord"), **options)


def test_training_batches_have_the_contract_shapes(shapes_dir):
    features, groundtruth = _training(shapes_dir).element_spec
    assert features["images"].shape == (4, 48, 48, 3) and features["images"].dtype == tf.float32
    assert features["image_id"].dtype == tf.int64 and features["original_size"].shape == (4, 2)
    assert features["scale"].shape == (4, 2) and "source_id" not in features
    assert groundtruth["boxes"].shape == (4, 6, 4) and groundtruth["classes"].dtype == tf.int32
    assert groundtruth["is_crowd"].shape == (4, 6) and groundtruth["difficult"].dtype == tf.int32
    assert groundtruth["masks"].shape == (4, 6, 48, 48) and groundtruth["masks"].dtype == tf.uint8


@pytest.mark.slow
def test_same_seed_same_batches_other_seed_other_batches(shapes_dir):
    first = _batches(_training(shapes_dir, with_masks=False), 3)
    again = _batches(_training(shapes_dir, with_masks=False), 3)
    other = _batches(_training(shapes_dir, with_masks=False, seed=2), 3)
    for a, b in zip(first, again):
        tf.nest.map_structure(np.testing.assert_array_equal, a, b)
    assert any(not np.array_equal(a[0]["images"], c[0]["images"]) for a, c in zip(first, other))
    # Training repeats: 24 records give more than 6 batches of 4.
    assert len(_batches(_training(shapes_dir, augmentation="flip"), 8)) == 8


@pytest.mark.slow
def test_augmented_boxes_lie_inside_the_input_and_match_masks(shapes_dir):
    for features, groundtruth in _batches(_training(shapes_dir, augmentation="ssd", resize_mode="stretch"), 2):
        valid = groundtruth["classes"] >= 0
        boxes = groundtruth["boxes"][valid]
        assert np.all(boxes >= 0) and np.all(boxes <= 48) and np.all(boxes[:, 2:] > boxes[:, :2])
        assert not groundtruth["masks"][~valid].any()
        for box, mask in zip(boxes, groundtruth["masks"][valid]):
            if mask.any():  # resampled masks: edges within a couple of output pixels of the box
                np.testing.assert_allclose(box, mask_bbox(mask), atol=2.0)
        assert features["images"].min() >= 0 and features["images"].max() <= 255


def test_input_context_shards_files_disjointly(tmp_path):
    # Four one-shard splits of distinct image sizes: the size tells which file a record came from.
    for split, size in zip("abcd", (32, 40, 48, 56)):
        write_synthetic_dataset(str(tmp_path), 4, image_size=size, split=split, num_shards=1)
    seen = []
    for worker in range(2):
        context = tf.distribute.InputContext(num_input_pipelines=2, input_pipeline_id=worker)
        dataset = build_dataset(str(tmp_path / "*.tfrecord"), image_size=(32, 32), resize_mode="stretch",
                                batch_size=4, training=True, augmentation="none", input_context=context,
                                deterministic=True)
        seen.append({int(h) for batch in _batches(dataset, 4) for h in batch[0]["original_size"][:, 0]})
    assert seen == [{32, 48}, {40, 56}]
    with pytest.raises(DataPipelineError, match="4 files for 8 input pipelines"):
        build_dataset(str(tmp_path / "*.tfrecord"), image_size=(32, 32), resize_mode="stretch", batch_size=1,
                      training=True, input_context=tf.distribute.InputContext(8, 0))


def test_eval_is_one_pass_in_file_order_with_partial_batch(shapes_dir):
    dataset = build_dataset(str(shapes_dir / "train-*.tfrecord"), image_size=(64, 64), resize_mode="letterbox",
                            batch_size=5, training=False)
    batches = _batches(dataset, 100)
    assert [len(b[0]["image_id"]) for b in batches] == [5, 5, 5, 5, 4]
    ids = np.concatenate([b[0]["image_id"] for b in batches])
    np.testing.assert_array_equal(ids, np.arange(24))
    # Shard 0 holds images 0, 4, 8, ...; shard 1 images 1, 5, ... (round-robin), read shard by shard.
    names = [s.decode() for b in batches for s in b[0]["source_id"]]
    assert names[:7] == [f"train_{i:06d}.jpg" for i in (0, 4, 8, 12, 16, 20, 1)]
    dropped = build_dataset(str(shapes_dir / "train-*.tfrecord"), image_size=(64, 64), resize_mode="letterbox",
                            batch_size=5, training=False, drop_remainder=True)
    assert len(_batches(dropped, 100)) == 4


def test_png_dataset_pixels_and_boxes_survive_unchanged(tmp_path):
    write_synthetic_dataset(str(tmp_path), 3, image_size=40, seed=9, num_shards=1, image_format="png")
    dataset = build_dataset(str(tmp_path / "train-*.tfrecord"), image_size=(40, 40), resize_mode="stretch",
                            batch_size=3, training=False, max_instances=4)
    ((features, groundtruth),) = _batches(dataset, 1)
    for index in range(3):
        image, objects = make_image(np.random.default_rng([9, index]), 40, 40, SHAPES)
        np.testing.assert_array_equal(features["images"][index], image.astype(np.float32))
        count = len(objects)
        np.testing.assert_allclose(groundtruth["boxes"][index, :count], [o["box"] for o in objects], atol=1e-4)
        np.testing.assert_array_equal(groundtruth["classes"][index, :count], [o["label"] - 1 for o in objects])
        assert (groundtruth["classes"][index, count:] == -1).all()
    np.testing.assert_allclose(features["scale"], np.ones((3, 2)))


def test_padding_and_max_instances_keep_the_first_objects(tmp_path):
    image = np.zeros((50, 100, 3), np.uint8)
    boxes = [(i * 5, i * 10, i * 5 + 10, i * 10 + 20) for i in range(5)]
    path = write_tfrecord(tmp_path / "five.tfrecord", [tf_api_example(
        image, boxes, [1, 2, 3, 4, 5], is_crowd=[0, 1, 0, 1, 0], difficult=[1, 0, 0, 0, 1])])

    def groundtruth(max_instances):
        dataset = build_dataset(path, image_size=(100, 100), resize_mode="letterbox", batch_size=1,
                                training=False, max_instances=max_instances)
        return _batches(dataset, 1)[0][1]

    cut = groundtruth(3)
    np.testing.assert_array_equal(cut["classes"], [[0, 1, 2]])
    np.testing.assert_allclose(cut["boxes"][0], np.array(boxes[:3]))  # letterbox scale 1 (100/100, 100/50 -> 1)
    np.testing.assert_array_equal(cut["is_crowd"], [[0, 1, 0]])
    padded = groundtruth(8)
    np.testing.assert_array_equal(padded["classes"], [[0, 1, 2, 3, 4, -1, -1, -1]])
    np.testing.assert_array_equal(padded["is_crowd"], [[0, 1, 0, 1, 0, 0, 0, 0]])
    np.testing.assert_array_equal(padded["difficult"], [[1, 0, 0, 0, 1, 0, 0, 0]])
    assert not padded["boxes"][0, 5:].any()


@pytest.mark.parametrize("kwargs, message", [
    ({"image_size": (None, None)}, "image_size"),
    ({"resize_mode": "crop"}, "resize_mode"),
    ({"augmentation": "mosaic"}, "augmentation"),
    ({"file_pattern": "/nonexistent/*.tfrecord"}, "no file matches"),
])
def test_bad_arguments_are_value_errors(shapes_dir, kwargs, message):
    options = dict(file_pattern=str(shapes_dir / "train-*.tfrecord"), image_size=(32, 32),
                   resize_mode="stretch", batch_size=2, training=True)
    options.update(kwargs)
    with pytest.raises(DataPipelineError, match=message):
        build_dataset(options.pop("file_pattern"), **options)
    assert os.path.isdir(shapes_dir)
