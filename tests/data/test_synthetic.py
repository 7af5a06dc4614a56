"""The synthetic shapes writer: verifiable records, tight boxes, masks, CLI."""

import argparse
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from tests.data.helpers import mask_bbox
from tfrecord_tools import schema
from tfrecord_tools.label_map import load as load_label_map
from tfrecord_tools.masks import decode_png
from tfrecord_tools.reader import expand_pattern, feature, iterate_examples, scalar
from tfrecord_tools.verify import verify
from tfdet.data.synthetic import SyntheticDataError, write_synthetic_dataset


def _examples(directory, split="train"):
    paths = expand_pattern(os.path.join(str(directory), f"{split}-*.tfrecord"))
    return [example for _, _, example in iterate_examples(paths)]


def test_records_verify_and_boxes_are_tight_around_masks(tmp_path):
    manifest_path = write_synthetic_dataset(tmp_path, 12, image_size=64, masks=True, seed=5, num_shards=3)
    count, problems = verify(os.path.join(str(tmp_path), "train-*.tfrecord"), progress=False)
    assert (count, problems) == (12, [])
    manifest = json.load(open(manifest_path))
    assert manifest["images"] == 12 and [s["records"] for s in manifest["shards"]] == [4, 4, 4]
    assert load_label_map(os.path.join(str(tmp_path), schema.LABEL_MAP_NAME)).names == ["circle", "square", "triangle"]

    examples = _examples(tmp_path)
    objects = 0
    for example in examples:
        labels = feature(example, schema.OBJECT_CLASS_LABEL)
        assert 1 <= len(labels) <= 4 and all(1 <= label <= 3 for label in labels)
        texts = [t.decode() for t in feature(example, schema.OBJECT_CLASS_TEXT)]
        assert texts == [["circle", "square", "triangle"][label - 1] for label in labels]
        height, width = scalar(example, schema.IMAGE_HEIGHT), scalar(example, schema.IMAGE_WIDTH)
        boxes = np.stack([feature(example, key) for key in schema.BOX_KEYS], axis=-1) * [height, width, height, width]
        masks = [decode_png(png) for png in feature(example, schema.OBJECT_MASK)]
        for box, mask, area in zip(boxes, masks, feature(example, schema.OBJECT_AREA)):
            np.testing.assert_allclose(box, mask_bbox(mask), atol=1e-3)
            side = max(box[2] - box[0], box[3] - box[1])
            assert 0.15 * 64 - 1 <= side <= 0.5 * 64 + 1
            assert area == mask.sum()
        objects += len(labels)
        # Objects never overlap, so every mask is exactly its drawn shape.
        if len(masks) > 1:
            assert np.sum(masks, axis=0).max() == 1
    assert manifest["objects"] == objects == sum(manifest["classes"].values())


def test_same_seed_same_bytes_other_seed_other_images(tmp_path):
    write_synthetic_dataset(tmp_path / "a", 4, image_size=32, seed=1, num_shards=1)
    write_synthetic_dataset(tmp_path / "b", 4, image_size=32, seed=1, num_shards=1)
    write_synthetic_dataset(tmp_path / "c", 4, image_size=32, seed=2, num_shards=1)
    shard = schema.shard_name("train", 0, 1)
    read = lambda name: open(tmp_path / name / shard, "rb").read()  # noqa: E731
    assert read("a") == read("b") and read("a") != read("c")


def test_png_format_and_split_name(tmp_path):
    write_synthetic_dataset(tmp_path, 3, image_size=40, split="validation", image_format="png", num_shards=1)
    (example,) = _examples(tmp_path, "validation")[:1]
    assert scalar(example, schema.IMAGE_FORMAT) == b"png"
    assert os.path.isfile(tmp_path / "validation.manifest.json")


@pytest.mark.parametrize("kwargs, message", [
    ({"num_images": 0}, "num_images"),
    ({"classes": ("circle", "hexagon")}, "classes"),
    ({"image_format": "gif"}, "image_format"),
    ({"image_size": 8}, "image_size"),
])
def test_bad_arguments_are_value_errors(tmp_path, kwargs, message):
    arguments = {"num_images": 2, **kwargs}
    with pytest.raises(SyntheticDataError, match=message):
        write_synthetic_dataset(tmp_path, arguments.pop("num_images"), **arguments)


def test_cli_writes_the_files(tmp_path, capsys):
    from tfdet.data.cli import add_data_parser, main, run_data

    assert main(["synthetic", "--output-dir", str(tmp_path / "one"), "--num-images", "3", "--masks",
                 "--image-size", "48", "--seed", "7", "--split", "validation"]) == 0
    names = sorted(os.listdir(tmp_path / "one"))
    assert names == ["label_map.pbtxt", "validation-00000-of-00002.tfrecord",
                     "validation-00001-of-00002.tfrecord", "validation.manifest.json"]
    assert verify(str(tmp_path / "one" / "validation-*.tfrecord"), progress=False) == (3, [])
    assert "wrote 3 images" in capsys.readouterr().out

    parser = argparse.ArgumentParser(prog="tfdet")
    data_parser = add_data_parser(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["data", "synthetic", "--output-dir", str(tmp_path / "two"), "--num-images", "0"])
    assert run_data(args, data_parser) == 1
    assert "num_images must be at least 1" in capsys.readouterr().err


def test_importing_tfdet_data_does_not_import_tensorflow():
    code = ("import sys, tfdet.data; from tfdet.data import synthetic, cli; "
            "assert callable(tfdet.data.write_synthetic_dataset); print('tensorflow' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"
