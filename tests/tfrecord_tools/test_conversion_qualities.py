"""Qualities every conversion has, whatever the format: determinism, atomicity, splits."""

from __future__ import annotations

import glob
import hashlib
import os

import pytest

import tfrecord_tools
from tfrecord_tools import schema
from tfrecord_tools.convert import is_validation
from tfrecord_tools.reader import iterate_examples
from tfrecord_tools.writer import ShardedWriter

from .helpers import by_filename, image_bytes, read_split, values, voc_xml, write


def _synthetic_voc(root, count, corrupt_at=None):
    """``count`` small VOC images with one box each; image ``corrupt_at`` is a truncated JPEG."""
    for index in range(count):
        name = f"img{index:03d}.jpg"
        data = image_bytes(40, 30, seed=index)
        data = data[: len(data) // 2] if index == corrupt_at else data
        write(root / "images" / name, data)
        write(root / "xml" / f"img{index:03d}.xml", voc_xml(name, 40, 30, [("cat" if index % 2 else "dog", 2, 3, 20 + index % 10, 25)]))
    return dict(annotations_dir=str(root / "xml"), images_dir=str(root / "images"))


def _files(folder):
    return sorted(os.listdir(folder)) if os.path.isdir(folder) else []


def _digest(folder, pattern="*.tfrecord"):
    return {os.path.basename(path): hashlib.sha256(open(path, "rb").read()).hexdigest()
            for path in sorted(glob.glob(os.path.join(folder, pattern)))}


@pytest.mark.slow
def test_shards_are_byte_identical_whatever_the_worker_count(raccoon, tmp_path):
    source = dict(annotations_dir=str(raccoon / "annotations"), images_dir=str(raccoon / "images"))
    digests = []
    for workers in (1, 2):
        out = tmp_path / f"w{workers}"
        tfrecord_tools.convert_voc(str(out), **source, num_shards=3, workers=workers, progress=False)
        digests.append(_digest(out))
    assert len(digests[0]) == 3 and digests[0] == digests[1]


def test_records_go_round_robin_and_the_manifest_counts_them(tmp_path):
    source = _synthetic_voc(tmp_path / "src", 10)
    manifest = tfrecord_tools.convert_voc(str(tmp_path / "out"), **source, num_shards=3, workers=1, progress=False)["train"]
    assert [shard["records"] for shard in manifest["shards"]] == [4, 3, 3]
    assert [shard["file"] for shard in manifest["shards"]] == [schema.shard_name("train", i, 3) for i in range(3)]
    assert (manifest["images"], manifest["objects"]) == (10, 10)
    assert manifest["classes"] == {"cat": 5, "dog": 5}  # default label map: sorted names
    first_shard = [example for _, _, example in iterate_examples([str(tmp_path / "out" / manifest["shards"][0]["file"])])]
    assert [values(e, schema.IMAGE_FILENAME)[0] for e in first_shard] == [b"img000.jpg", b"img003.jpg", b"img006.jpg", b"img009.jpg"]


@pytest.mark.parametrize("workers", [1, 2])
def test_a_failed_run_leaves_no_shard_and_no_temporary_file(tmp_path, workers):
    source = _synthetic_voc(tmp_path / "src", 30, corrupt_at=25)
    out = tmp_path / "out"
    with pytest.raises(tfrecord_tools.ConversionError) as error:
        tfrecord_tools.convert_voc(str(out), **source, num_shards=3, workers=workers, progress=False)
    assert error.value.file.endswith("img025.jpg")
    assert "truncated JPEG" in error.value.reason
    assert _files(out) == []


def test_a_failed_run_keeps_the_previous_good_output(tmp_path):
    good = _synthetic_voc(tmp_path / "good", 6)
    bad = _synthetic_voc(tmp_path / "bad", 6, corrupt_at=3)
    out = str(tmp_path / "out")
    tfrecord_tools.convert_voc(out, **good, num_shards=2, workers=1, progress=False)
    before = _digest(out)
    with pytest.raises(tfrecord_tools.ConversionError):
        tfrecord_tools.convert_voc(out, **bad, num_shards=4, workers=1, progress=False)
    assert _digest(out) == before
    assert sorted(_files(out)) == ["label_map.pbtxt", *before, "train.manifest.json"]


def test_a_new_shard_count_replaces_the_old_shards_of_the_split_only(tmp_path):
    source = _synthetic_voc(tmp_path / "src", 8)
    out = str(tmp_path / "out")
    tfrecord_tools.convert_voc(out, **source, num_shards=4, workers=1, progress=False)
    tfrecord_tools.convert_voc(out, **source, split="other", num_shards=1, workers=1, progress=False)
    tfrecord_tools.convert_voc(out, **source, num_shards=2, workers=1, progress=False)
    assert sorted(_digest(out)) == ["other-00000-of-00001.tfrecord", "train-00000-of-00002.tfrecord", "train-00001-of-00002.tfrecord"]
    assert len(read_split(out)) == 8


def test_writer_deletes_its_temporary_shards_when_interrupted(tmp_path):
    with pytest.raises(KeyboardInterrupt):
        with ShardedWriter(str(tmp_path), "train", 2) as writer:
            writer.write(b"record")
            assert len(_files(tmp_path)) == 2 and all(name.startswith(".") for name in _files(tmp_path))
            raise KeyboardInterrupt
    assert _files(tmp_path) == []


def test_validation_split_is_a_deterministic_hash_of_the_file_name(tmp_path):
    # Independent computation of the documented rule: first 8 bytes of
    # sha256("<seed>:<file name>") as a big-endian fraction of 2**64.
    def expected(name, fraction, seed):
        digest = hashlib.sha256(f"{seed}:{name}".encode()).digest()
        return int.from_bytes(digest[:8], "big") / 2**64 < fraction

    names = [f"img{index:03d}.jpg" for index in range(40)]
    assert [is_validation(n, 0.3, 7) for n in names] == [expected(n, 0.3, 7) for n in names]
    source = _synthetic_voc(tmp_path / "src", 40)
    manifests = tfrecord_tools.convert_voc(str(tmp_path / "out"), **source, val_fraction=0.3, seed=7,
                                           num_shards=4, workers=1, progress=False)
    train = set(by_filename(read_split(tmp_path / "out", "train")))
    val = set(by_filename(read_split(tmp_path / "out", "train_val")))
    assert val == {n for n in names if expected(n, 0.3, 7)} and train == set(names) - val
    assert manifests["train_val"]["images"] == len(val) and len(manifests["train_val"]["shards"]) == 1


def test_a_two_worker_run_leaves_only_its_outputs(tmp_path):
    source = _synthetic_voc(tmp_path / "src", 40)
    out = tmp_path / "out"
    tfrecord_tools.convert_voc(str(out), **source, num_shards=2, workers=2, progress=False)
    assert _files(out) == ["label_map.pbtxt", "train-00000-of-00002.tfrecord", "train-00001-of-00002.tfrecord",
                           "train.manifest.json"]  # no spill folder, no temporary shard
    assert len(read_split(out)) == 40


def test_copy_falls_back_to_read_and_write_where_the_kernel_cannot(tmp_path, monkeypatch):
    from tfrecord_tools import writer as writer_module

    source = tmp_path / "source.bin"
    source.write_bytes(bytes(range(256)) * 40)

    def refuse(*args, **kwargs):
        raise OSError(18, "Invalid cross-device link")

    monkeypatch.setattr(writer_module.os, "copy_file_range", refuse)
    descriptor = os.open(source, os.O_RDONLY)
    try:
        with ShardedWriter(str(tmp_path / "out"), "train", 1) as writer:
            writer.copy_range(descriptor, 100, 5000)
            writer.commit()
    finally:
        os.close(descriptor)
    assert (tmp_path / "out" / "train-00000-of-00001.tfrecord").read_bytes() == source.read_bytes()[100:5100]
