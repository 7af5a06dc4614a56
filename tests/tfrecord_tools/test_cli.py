"""The ``tfrecord-tools`` command line, run as a subprocess (``python -m tfrecord_tools``).

Record counts are read from the shard files' own framing here (length
header, then skip), image sizes with PIL, and expectations come from the
synthetic VOC data each test writes.
"""

from __future__ import annotations

import glob
import json
import os
import re
import struct
import subprocess
import sys

import google_crc32c
import pytest
from PIL import Image

import tfrecord_tools
from tfrecord_tools import schema

from .helpers import by_filename, image_bytes, read_split, values, voc_xml, write

CLASSES = ("cat", "dog", "bird")
TIMEOUT = 120


def run_cli(*args, cwd=None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "tfrecord_tools", *map(str, args)],
                          capture_output=True, text=True, timeout=TIMEOUT, cwd=cwd)


def make_voc(root, count: int) -> dict:
    """``count`` JPEGs of distinct sizes with VOC XML; returns stem -> (filename, (w, h), class names)."""
    truth = {}
    for index in range(count):
        stem = f"img{index:03d}"
        width, height = 40 + index, 30 + index % 7
        names = [CLASSES[index % 3]] + ([CLASSES[(index + 1) % 3]] if index % 4 == 0 else [])
        objects = [(name, 2 + k, 3, 20 + k, 25) for k, name in enumerate(names)]
        write(os.path.join(root, "images", stem + ".jpg"), image_bytes(width, height, seed=index))
        write(os.path.join(root, "xml", stem + ".xml"), voc_xml(stem + ".jpg", width, height, objects))
        truth[stem] = (stem + ".jpg", (width, height), names)
    return truth


def voc_args(root) -> list:
    return ["convert", "voc", "--annotations-dir", os.path.join(root, "xml"),
            "--images-dir", os.path.join(root, "images")]


def count_records(path) -> int:
    """Records in a TFRecord file, from its framing: uint64 length, crc, data, crc."""
    with open(path, "rb") as stream:
        data = stream.read()
    offset = count = 0
    while offset < len(data):
        (length,) = struct.unpack_from("<Q", data, offset)
        offset += 8 + 4 + length + 4
        count += 1
    assert offset == len(data)
    return count


def record_spans(data: bytes) -> list[tuple[int, int]]:
    """(start, end) of each record's payload in a TFRecord file's bytes."""
    spans, offset = [], 0
    while offset < len(data):
        (length,) = struct.unpack_from("<Q", data, offset)
        spans.append((offset + 12, offset + 12 + length))
        offset += 16 + length
    return spans


def masked_crc(data: bytes) -> int:
    """TFRecord's masked CRC32C (tensorflow/core/lib/hash/crc32c.h)."""
    crc = google_crc32c.value(data)
    return (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF


def pbtxt_names(path) -> list[str]:
    with open(path, encoding="utf-8") as stream:
        return re.findall(r"name:\s*'([^']*)'", stream.read())


def final_or_temporary(folder) -> list[str]:
    """Shards, temporary files and manifests left in ``folder``."""
    if not os.path.isdir(folder):
        return []
    return [n for n in os.listdir(folder) if "tfrecord" in n or "tmp" in n or n.endswith(".manifest.json")]


# --- convert ---------------------------------------------------------------------------------

def test_convert_voc_writes_shards_label_map_and_manifest(tmp_path):
    truth = make_voc(tmp_path / "src", 7)
    out = tmp_path / "out"
    result = run_cli(*voc_args(tmp_path / "src"), "--output-dir", out, "--num-shards", 3, "--workers", 1, "--quiet")
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr
    summary = result.stdout
    objects = sum(len(names) for _, _, names in truth.values())
    assert re.search(r"\b7 images\b", summary) and re.search(rf"\b{objects} objects\b", summary), summary
    assert "label_map.pbtxt" in summary

    shards = [schema.shard_name("train", i, 3) for i in range(3)]
    assert shards == [f"train-0000{i}-of-00003.tfrecord" for i in range(3)]
    assert sorted(os.listdir(out)) == sorted(shards + ["label_map.pbtxt", "train.manifest.json"])
    with open(out / "train.manifest.json", encoding="utf-8") as stream:
        manifest = json.load(stream)
    assert {entry["file"]: entry["records"] for entry in manifest["shards"]} == \
        {name: count_records(out / name) for name in shards}
    assert sum(count_records(out / name) for name in shards) == manifest["images"] == 7
    assert manifest["objects"] == objects
    assert set(pbtxt_names(out / "label_map.pbtxt")) == set(CLASSES)
    records = by_filename(read_split(out))
    assert sorted(records) == sorted(filename for filename, _, _ in truth.values())


def test_the_worker_count_does_not_change_the_shards(tmp_path):
    make_voc(tmp_path / "src", 9)
    digests = []
    for workers in (1, 2):
        out = tmp_path / f"w{workers}"
        result = run_cli(*voc_args(tmp_path / "src"), "--output-dir", out, "--num-shards", 2,
                         "--workers", workers, "--quiet")
        assert result.returncode == 0, result.stderr
        digests.append({name: (out / name).read_bytes() for name in sorted(os.listdir(out)) if name.endswith(".tfrecord")})
    assert len(digests[0]) == 2 and digests[0] == digests[1]


def _plant(case: str, src) -> tuple[str, str]:
    """Plants one bad input among good ones; returns (offending file name, a word of the reason)."""
    if case == "xml does not parse":
        write(os.path.join(src, "xml", "img003.xml"), "<annotation><filename>img003.jpg</filename>")
        return "img003.xml", "XML"
    if case == "truncated jpeg":
        path = os.path.join(src, "images", "img010.jpg")
        with open(path, "rb") as stream:
            data = stream.read()
        write(path, data[: len(data) // 2])
        return "img010.jpg", "truncated"
    if case == "box outside the image":
        write(os.path.join(src, "xml", "img011.xml"), voc_xml("img011.jpg", 51, 34, [("cat", 2, 3, 51 + 20, 25)]))
        return "img011.xml", "outside"
    raise AssertionError(case)


@pytest.mark.parametrize("case,extra", [
    ("xml does not parse", ["--workers", "1", "--quiet"]),
    ("truncated jpeg", ["--workers", "1", "--quiet"]),
    ("truncated jpeg", ["--workers", "2"]),  # with a progress bar and a worker pool
    ("box outside the image", ["--workers", "1", "--quiet"]),
])
def test_bad_input_exits_1_with_one_line_naming_file_and_reason(tmp_path, case, extra):
    make_voc(tmp_path / "src", 14)
    name, reason_word = _plant(case, str(tmp_path / "src"))
    out = tmp_path / "out"
    result = run_cli(*voc_args(tmp_path / "src"), "--output-dir", out, "--num-shards", 2, *extra)
    assert result.returncode == 1, (result.stdout, result.stderr)
    assert "Traceback" not in result.stderr
    assert any(name in line and reason_word in line for line in result.stderr.splitlines()), result.stderr
    assert final_or_temporary(out) == []


def test_invalid_options_exit_1_without_a_traceback(tmp_path):
    make_voc(tmp_path / "src", 2)
    result = run_cli(*voc_args(tmp_path / "src"), "--output-dir", tmp_path / "out", "--val-fraction", "1.5")
    assert result.returncode == 1
    assert "Traceback" not in result.stderr and "val_fraction" in result.stderr


def test_validation_split_is_disjoint_complete_and_deterministic(tmp_path):
    truth = make_voc(tmp_path / "src", 40)
    everything = {filename for filename, _, _ in truth.values()}
    splits = {}
    for label, seed in (("a", 1), ("b", 1), ("c", 2)):
        out = tmp_path / label
        result = run_cli(*voc_args(tmp_path / "src"), "--output-dir", out, "--val-fraction", "0.5",
                         "--seed", seed, "--workers", 1, "--quiet")
        assert result.returncode == 0, result.stderr
        train = set(by_filename(read_split(out, "train")))
        val = set(by_filename(read_split(out, "train_val")))
        assert train and val and not train & val
        assert train | val == everything
        with open(out / "train_val.manifest.json", encoding="utf-8") as stream:
            assert json.load(stream)["images"] == len(val)
        splits[label] = (train, val)
    files_a, files_b = sorted(os.listdir(tmp_path / "a")), sorted(os.listdir(tmp_path / "b"))
    assert files_a == files_b
    assert any(name.startswith("train_val-") and name.endswith(".tfrecord") for name in files_a)
    for name in files_a:
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes(), name
    # Another seed: the chance of the very same 40-image split is 2**-40.
    assert splits["c"][0] != splits["a"][0]


# --- verify ----------------------------------------------------------------------------------

@pytest.fixture
def shards(tmp_path):
    """A converted synthetic VOC set: (output dir, truth). Converted in-process: these tests are about
    verify and inspect, and a subprocess less keeps the file fast."""
    truth = make_voc(tmp_path / "src", 6)
    out = tmp_path / "out"
    tfrecord_tools.convert_voc(str(out), annotations_dir=str(tmp_path / "src" / "xml"),
                               images_dir=str(tmp_path / "src" / "images"), num_shards=2, workers=1, progress=False)
    return out, truth


def test_verify_passes_good_shards(shards):
    out, _ = shards
    result = run_cli("verify", str(out / "train-*.tfrecord"), "--quiet")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "OK" in result.stdout


def _shard_holding(out, truth, stem) -> tuple[str, bytes, int]:
    """(shard path, shard bytes, offset of the image's bytes in it)."""
    with open(out.parent / "src" / "images" / truth[stem][0], "rb") as stream:
        image = stream.read()
    for path in sorted(glob.glob(str(out / "train-*.tfrecord"))):
        with open(path, "rb") as stream:
            data = stream.read()
        position = data.find(image)
        if position >= 0:
            return path, data, position + len(image) // 2
    raise AssertionError(f"{stem} not found in any shard")


@pytest.mark.parametrize("damage", ["flip image byte", "flip image byte, fix checksum", "truncate",
                                    "drop the last record"])
def test_verify_names_a_damaged_shard(shards, damage):
    out, truth = shards
    path, data, position = _shard_holding(out, truth, "img004")
    data = bytearray(data)
    if damage == "truncate":
        data = data[: len(data) - 10]
    elif damage == "drop the last record":
        # Clean framing, one record short: only the manifest's count can tell.
        data = data[: record_spans(bytes(data))[-1][0] - 12]
    else:
        data[position] ^= 0xFF
        if damage.endswith("fix checksum"):
            # Framing stays valid, so only the content checks (sha256, decoding) can catch it.
            start, end = next(span for span in record_spans(bytes(data)) if span[0] <= position < span[1])
            data[end:end + 4] = struct.pack("<I", masked_crc(bytes(data[start:end])))
    with open(path, "wb") as stream:
        stream.write(bytes(data))
    result = run_cli("verify", str(out / "train-*.tfrecord"), "--quiet")
    assert result.returncode == 1, result.stdout
    assert "Traceback" not in result.stderr
    assert path in result.stdout
    assert "OK" not in result.stdout
    if damage.endswith("fix checksum"):
        assert "img004.jpg" in result.stdout


def test_verify_fails_when_nothing_matches(tmp_path):
    result = run_cli("verify", str(tmp_path / "none-*.tfrecord"), "--quiet")
    assert result.returncode == 1


# --- inspect ---------------------------------------------------------------------------------

def test_inspect_table_counts_match_the_manifest(shards):
    out, truth = shards
    with open(out / "train.manifest.json", encoding="utf-8") as stream:
        manifest = json.load(stream)
    result = run_cli("inspect", str(out / "train-*.tfrecord"))
    assert result.returncode == 0, result.stderr
    rows = {}
    for line in result.stdout.splitlines():
        parts = line.split()
        if len(parts) == 4 and parts[1] in CLASSES:
            rows[parts[1]] = (int(parts[2]), int(parts[3]))
    assert set(rows) == set(manifest["classes"]) == set(CLASSES)
    for name in CLASSES:
        objects = sum(names.count(name) for _, _, names in truth.values())
        images = sum(name in names for _, _, names in truth.values())
        assert rows[name] == (manifest["classes"][name], images)
        assert manifest["classes"][name] == objects


def test_inspect_renders_pngs_of_the_image_size(shards, tmp_path):
    out, truth = shards
    render_dir = tmp_path / "render"
    result = run_cli("inspect", str(out / "train-*.tfrecord"), "--render", 2, "--out", render_dir)
    assert result.returncode == 0, result.stderr
    pngs = sorted(render_dir.iterdir())
    assert len(pngs) == 2
    first_two = [values(e, schema.IMAGE_FILENAME)[0].decode() for e in read_split(out)[:2]]
    sizes = {filename: size for filename, size, _ in truth.values()}
    rendered = []
    for png in pngs:
        with Image.open(png) as image:
            assert image.format == "PNG"
            image.load()
            rendered.append(image.size)
    assert sorted(rendered) == sorted(sizes[name] for name in first_two)


def test_inspect_json_is_parseable(shards):
    out, truth = shards
    with open(out / "train.manifest.json", encoding="utf-8") as stream:
        manifest = json.load(stream)
    result = run_cli("inspect", str(out / "train-*.tfrecord"), "--json")
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout)
    assert summary["records"] == len(truth) == manifest["images"]
    assert summary["objects"] == manifest["objects"]
    assert summary["classes"] == manifest["classes"]


# --- no TensorFlow ---------------------------------------------------------------------------

def test_the_converter_never_imports_tensorflow_or_keras():
    code = ("import tfrecord_tools, tfrecord_tools.cli, tfrecord_tools.convert, tfrecord_tools.build, "
            "tfrecord_tools.voc, tfrecord_tools.coco, tfrecord_tools.kitti, tfrecord_tools.yolo, "
            "tfrecord_tools.verify, tfrecord_tools.inspect; import sys; "
            "print('tensorflow' in sys.modules, 'keras' in sys.modules)")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=TIMEOUT)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "False False"
