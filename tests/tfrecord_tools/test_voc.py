"""Pascal VOC -> TFRecord: the raccoon golden file, the whole raccoon set,
a VOCdevkit layout and planted bad inputs.

Expected values come from the source files themselves (XML parsed here with
``xml.etree``, images opened with Pillow, the author's own ``test.record``),
never from running the converter.
"""

from __future__ import annotations

import csv
import glob
import os
import re
import time
import xml.etree.ElementTree as ET

import pytest
from PIL import Image

import tfrecord_tools
from tfrecord_tools import ConversionError, schema
from tfrecord_tools.reader import iterate_examples

from tests.tfrecord_tools.helpers import by_filename, image_bytes, read_split, values, voc_xml, write

BOX_TOL = 1e-6


# --------------------------------------------------------------------------- helpers


def parse_voc_xml(path) -> dict:
    """Independent VOC parse: filename, size and objects as plain values."""
    root = ET.parse(str(path)).getroot()
    size = root.find("size")
    objects = []
    for obj in root.iter("object"):
        box = obj.find("bndbox")
        objects.append({
            "name": obj.findtext("name").strip(),
            "box": tuple(float(box.findtext(tag)) for tag in ("xmin", "ymin", "xmax", "ymax")),
            "truncated": int(obj.findtext("truncated") or 0),
            "difficult": int(obj.findtext("difficult") or 0),
        })
    return {
        "filename": root.findtext("filename").strip(),
        "width": int(size.findtext("width")),
        "height": int(size.findtext("height")),
        "objects": objects,
    }


def read_golden(path) -> list[dict]:
    return [example for _, _, example in iterate_examples([str(path)])]


def boxes_of(example) -> list[tuple[float, float, float, float]]:
    """Normalised (xmin, ymin, xmax, ymax) of every object, in record order."""
    return list(zip(*(values(example, key) for key in (
        schema.OBJECT_XMIN, schema.OBJECT_YMIN, schema.OBJECT_XMAX, schema.OBJECT_YMAX))))


def assert_boxes_close(actual, expected, tol=BOX_TOL):
    assert len(actual) == len(expected)
    for got, want in zip(actual, expected):
        assert got == pytest.approx(want, abs=tol), (got, want)


def parse_pbtxt_items(path) -> list[tuple[int, str]]:
    """(id, name) pairs of a StringIntLabelMap pbtxt, with a plain regex."""
    text = open(path, encoding="utf-8").read()
    return [(int(i), name) for i, name in re.findall(r"id:\s*(\d+)\s*name:\s*['\"]([^'\"]*)['\"]", text)]


def written_tfrecords(output_dir) -> list[str]:
    """Every shard-like file in the output folder, hidden temporaries included."""
    if not os.path.isdir(output_dir):
        return []
    return [name for name in os.listdir(output_dir) if ".tfrecord" in name]


def all_output_bytes(output_dir) -> bytes:
    chunks = []
    for folder, _, names in os.walk(output_dir):
        for name in names:
            with open(os.path.join(folder, name), "rb") as stream:
                chunks.append(stream.read())
    return b"".join(chunks)


def convert_loose(tmp_path, out_name="out", **options):
    options.setdefault("workers", 1)
    options.setdefault("progress", False)
    return tfrecord_tools.convert_voc(
        str(tmp_path / out_name),
        annotations_dir=str(tmp_path / "ann"),
        images_dir=str(tmp_path / "img"),
        **options,
    )


# --------------------------------------------------------------------------- golden file


def _raccoon_test_split(raccoon, tmp_path) -> tuple[list[str], str]:
    with open(raccoon / "data" / "test_labels.csv", newline="") as stream:
        filenames = sorted({row["filename"] for row in csv.DictReader(stream)})
    image_set = write(tmp_path / "test.txt", "".join(os.path.splitext(name)[0] + "\n" for name in filenames))
    return filenames, image_set


def _convert_raccoon_test_split(raccoon, tmp_path):
    filenames, image_set = _raccoon_test_split(raccoon, tmp_path)
    output = tmp_path / "out"
    manifests = tfrecord_tools.convert_voc(
        str(output),
        annotations_dir=str(raccoon / "annotations"),
        images_dir=str(raccoon / "images"),
        image_set=image_set,
        workers=1,
        progress=False,
    )
    return filenames, output, manifests


def test_raccoon_test_split_matches_author_golden_record(raccoon, tmp_path):
    """Our records equal the author's data/test.record, record by record.

    The golden file was written by the raccoon author's TF OD API-style
    generate_tfrecord.py; boxes there are float32 of pixel / size, so they
    must agree within 1e-6. Its image/format is b'jpg' (the script's
    spelling); ours is sniffed from the bytes and must be b'jpeg'.
    """
    filenames, output, manifests = _convert_raccoon_test_split(raccoon, tmp_path)
    golden = by_filename(read_golden(raccoon / "data" / "test.record"))
    ours = by_filename(read_split(output))

    assert len(golden) == 40
    assert sorted(golden) == filenames
    assert sorted(ours) == filenames
    assert manifests["train"]["images"] == 40
    assert manifests["train"]["objects"] == sum(len(values(e, schema.OBJECT_XMIN)) for e in golden.values()) == 44

    for name, want in golden.items():
        got = ours[name]
        assert values(got, schema.IMAGE_HEIGHT) == values(want, schema.IMAGE_HEIGHT), name
        assert values(got, schema.IMAGE_WIDTH) == values(want, schema.IMAGE_WIDTH), name
        assert values(got, schema.IMAGE_ENCODED) == values(want, schema.IMAGE_ENCODED), name
        assert values(got, schema.IMAGE_FORMAT) == [b"jpeg"]
        assert values(want, schema.IMAGE_FORMAT)[0] in (b"jpg", b"jpeg")
        # Box order inside an image is not part of the contract: compare sorted.
        assert_boxes_close(sorted(boxes_of(got)), sorted(boxes_of(want)))
        assert values(got, schema.OBJECT_CLASS_TEXT) == values(want, schema.OBJECT_CLASS_TEXT)
        assert values(got, schema.OBJECT_CLASS_LABEL) == values(want, schema.OBJECT_CLASS_LABEL)


def test_tf_free_reader_agrees_with_tensorflow(raccoon, tmp_path):
    """Our reader decodes the golden file exactly as TensorFlow does, and
    TensorFlow parses the records we write into the same values we read."""
    tf = pytest.importorskip("tensorflow")
    _, output, _ = _convert_raccoon_test_split(raccoon, tmp_path)

    def tf_examples(path):
        decoded = []
        for raw in tf.data.TFRecordDataset([str(path)]).as_numpy_iterator():
            example = tf.train.Example.FromString(raw)
            features = {}
            for key, feature in example.features.feature.items():
                kind = feature.WhichOneof("kind")
                listed = list(getattr(feature, kind).value) if kind else []
                features[key] = ({"bytes_list": "bytes", "float_list": "float", "int64_list": "int64"}.get(kind), listed)
            decoded.append(features)
        return decoded

    for path in [raccoon / "data" / "test.record", *sorted(output.glob("train-*.tfrecord"))]:
        ours = read_golden(path)
        theirs = tf_examples(path)
        assert len(ours) == len(theirs) > 0
        for mine, reference in zip(ours, theirs):
            assert set(mine) == set(reference)
            for key, (kind, listed) in reference.items():
                assert mine[key][0] == kind, key
                if kind == "float":
                    # Both sides hold the same float32 values.
                    assert mine[key][1] == pytest.approx(listed, rel=0, abs=0), key
                else:
                    assert mine[key][1] == listed, key


# --------------------------------------------------------------------------- whole raccoon set


def test_whole_raccoon_set_matches_xml_and_images(raccoon, tmp_path):
    """All 200 images: counts, flags, boxes and bytes against XML + Pillow.

    Runs with two worker processes and two shards: record order must still be
    the sorted XML order (round-robin over the shards).
    """
    xml_paths = sorted(glob.glob(str(raccoon / "annotations" / "*.xml")))
    parsed = {xml["filename"]: xml for xml in map(parse_voc_xml, xml_paths)}
    expected_objects = sum(len(p["objects"]) for p in parsed.values())
    expected_truncated = sum(o["truncated"] for p in parsed.values() for o in p["objects"])
    expected_difficult = sum(o["difficult"] for p in parsed.values() for o in p["objects"])
    grayscale = set()
    for name in parsed:
        with Image.open(raccoon / "images" / name) as image:
            if image.mode == "L":
                grayscale.add(name)
    # Dataset facts from SOURCE.txt, checked independently here.
    assert (len(parsed), expected_objects, expected_truncated, expected_difficult) == (200, 217, 59, 0)
    assert len(grayscale) == 3

    output = tmp_path / "out"
    manifests = tfrecord_tools.convert_voc(
        str(output), annotations_dir=str(raccoon / "annotations"), images_dir=str(raccoon / "images"),
        workers=2, num_shards=2, progress=False,
    )
    manifest = manifests["train"]
    assert manifest["images"] == 200
    assert manifest["objects"] == 217
    assert manifest["classes"] == {"raccoon": 217}
    assert manifest["skipped"] == []
    assert manifest["background_images"] == 0
    assert manifest["format"] == "voc"
    assert manifest["shards"] == [
        {"file": "train-00000-of-00002.tfrecord", "records": 100},
        {"file": "train-00001-of-00002.tfrecord", "records": 100},
    ]
    assert sorted(os.listdir(output)) == sorted(
        ["label_map.pbtxt", "train.manifest.json", "train-00000-of-00002.tfrecord", "train-00001-of-00002.tfrecord"])
    assert parse_pbtxt_items(output / "label_map.pbtxt") == [(1, "raccoon")]

    shard0 = [e for _, _, e in iterate_examples([str(output / "train-00000-of-00002.tfrecord")])]
    shard1 = [e for _, _, e in iterate_examples([str(output / "train-00001-of-00002.tfrecord")])]
    interleaved = [e for pair in zip(shard0, shard1) for e in pair]
    expected_order = [parse_voc_xml(path)["filename"] for path in xml_paths]
    assert [values(e, schema.IMAGE_FILENAME)[0].decode() for e in interleaved] == expected_order

    examples = by_filename(interleaved)
    truncated = difficult = 0
    for name, xml in parsed.items():
        example = examples[name]
        data = (raccoon / "images" / name).read_bytes()
        assert values(example, schema.IMAGE_ENCODED) == [data]
        assert values(example, schema.IMAGE_FORMAT) == [b"jpeg"]
        assert values(example, schema.IMAGE_WIDTH) == [xml["width"]]
        assert values(example, schema.IMAGE_HEIGHT) == [xml["height"]]
        w, h = xml["width"], xml["height"]
        expected_boxes = [(o["box"][0] / w, o["box"][1] / h, o["box"][2] / w, o["box"][3] / h) for o in xml["objects"]]
        assert_boxes_close(boxes_of(example), expected_boxes)
        assert values(example, schema.OBJECT_CLASS_TEXT) == [o["name"].encode() for o in xml["objects"]]
        assert values(example, schema.OBJECT_CLASS_LABEL) == [1] * len(xml["objects"])
        assert values(example, schema.OBJECT_TRUNCATED) == [o["truncated"] for o in xml["objects"]]
        truncated += sum(values(example, schema.OBJECT_TRUNCATED))
        difficult += sum(values(example, schema.OBJECT_DIFFICULT))
    assert (truncated, difficult) == (59, 0)
    for name in grayscale:  # grayscale JPEGs pass through byte for byte
        assert values(examples[name], schema.IMAGE_ENCODED) == [(raccoon / "images" / name).read_bytes()]


# --------------------------------------------------------------------------- VOCdevkit layout


def _pose_xml(filename, width, height, name, box, pose) -> str:
    xmin, ymin, xmax, ymax = box
    return (f"<annotation><folder>VOC2012</folder><filename>{filename}</filename>"
            f"<source><database>test</database></source><segmented>0</segmented>"
            f"<size><width>{width}</width><height>{height}</height><depth>3</depth></size>"
            f"<object><name>{name}</name><pose>{pose}</pose><truncated>1</truncated><difficult>0</difficult>"
            f"<bndbox><xmin>{xmin}</xmin><ymin>{ymin}</ymin><xmax>{xmax}</xmax><ymax>{ymax}</ymax></bndbox>"
            f"</object></annotation>")


@pytest.fixture
def vocdevkit(tmp_path):
    """A tiny VOC2012-style year folder.

    train: a (2 objects, one difficult, no pose/source/segmented tags),
           b (pose 'Left', all optional tags present).
    val:   c (a PNG image), d (one difficult object only).
    e is annotated but in no image set.
    """
    root = tmp_path / "VOC2012"
    images = {
        "a": ("a.jpg", image_bytes(64, 48, seed=1)),
        "b": ("b.jpg", image_bytes(80, 60, seed=2)),
        "c": ("c.png", image_bytes(50, 40, fmt="PNG", seed=3)),
        "d": ("d.jpg", image_bytes(32, 32, seed=4)),
        "e": ("e.jpg", image_bytes(32, 32, seed=5)),
    }
    for name, data in images.values():
        write(root / "JPEGImages" / name, data)
    write(root / "Annotations" / "a.xml", voc_xml("a.jpg", 64, 48, [("dog", 1, 2, 30, 40), ("cat", 10, 10, 60, 45, 1)]))
    write(root / "Annotations" / "b.xml", _pose_xml("b.jpg", 80, 60, "cat", (8, 6, 40, 30), "Left"))
    write(root / "Annotations" / "c.xml", voc_xml("c.png", 50, 40, [("dog", 5, 4, 45, 36)]))
    write(root / "Annotations" / "d.xml", voc_xml("d.jpg", 32, 32, [("cat", 0, 0, 16, 16, 1)]))
    write(root / "Annotations" / "e.xml", voc_xml("e.jpg", 32, 32, [("bird", 0, 0, 16, 16)]))
    write(root / "ImageSets" / "Main" / "train.txt", "a\nb\n")
    write(root / "ImageSets" / "Main" / "val.txt", "c\nd\n")
    return root, images


def test_vocdevkit_split_set_selects_listed_ids(vocdevkit, tmp_path):
    root, images = vocdevkit
    tfrecord_tools.convert_voc(str(tmp_path / "tr"), voc_root=str(root), split_set="train", workers=1, progress=False)
    tfrecord_tools.convert_voc(str(tmp_path / "va"), voc_root=str(root), split_set="val", split="val",
                               workers=1, progress=False)
    train = by_filename(read_split(tmp_path / "tr"))
    val = by_filename(read_split(tmp_path / "va", "val"))
    assert sorted(train) == ["a.jpg", "b.jpg"]
    assert sorted(val) == ["c.png", "d.jpg"]
    for examples in (train, val):
        for name, example in examples.items():
            assert values(example, schema.IMAGE_ENCODED) == [dict(images.values())[name]]
    # The default label map holds only the classes of the converted split, sorted.
    assert parse_pbtxt_items(tmp_path / "tr" / "label_map.pbtxt") == [(1, "cat"), (2, "dog")]


def test_vocdevkit_difficult_kept_flagged_by_default(vocdevkit, tmp_path):
    root, _ = vocdevkit
    manifests = tfrecord_tools.convert_voc(str(tmp_path / "out"), voc_root=str(root), workers=1, progress=False)
    a = by_filename(read_split(tmp_path / "out"))["a.jpg"]
    assert values(a, schema.OBJECT_CLASS_TEXT) == [b"dog", b"cat"]
    assert values(a, schema.OBJECT_DIFFICULT) == [0, 1]
    assert_boxes_close(boxes_of(a), [(1 / 64, 2 / 48, 30 / 64, 40 / 48), (10 / 64, 10 / 48, 60 / 64, 45 / 48)])
    assert manifests["train"]["objects"] == 3
    assert manifests["train"]["dropped"].get("difficult", 0) == 0


def test_vocdevkit_ignore_difficult_drops_and_counts(vocdevkit, tmp_path):
    """Dropped difficult objects are counted; an image left with no object
    is still written (as a background image), not skipped."""
    root, _ = vocdevkit
    manifests = tfrecord_tools.convert_voc(str(tmp_path / "out"), voc_root=str(root), ignore_difficult=True,
                                           workers=1, progress=False)
    a = by_filename(read_split(tmp_path / "out"))["a.jpg"]
    assert values(a, schema.OBJECT_CLASS_TEXT) == [b"dog"]
    assert values(a, schema.OBJECT_DIFFICULT) == [0]
    assert manifests["train"]["dropped"] == {"difficult": 1}
    assert manifests["train"]["objects"] == 2

    val = tfrecord_tools.convert_voc(str(tmp_path / "val"), voc_root=str(root), split_set="val",
                                     ignore_difficult=True, workers=1, progress=False)["train"]
    assert val["dropped"] == {"difficult": 1}
    assert val["images"] == 2 and val["objects"] == 1 and val["background_images"] == 1
    d = by_filename(read_split(tmp_path / "val"))["d.jpg"]
    assert values(d, schema.OBJECT_XMIN) == []


def test_vocdevkit_pose_optional_tags_and_png(vocdevkit, tmp_path):
    """<pose> goes to image/object/view (empty when absent); missing
    <pose>/<source>/<segmented>/<truncated> are fine; PNG bytes are kept."""
    root, images = vocdevkit
    tfrecord_tools.convert_voc(str(tmp_path / "tr"), voc_root=str(root), workers=1, progress=False)
    tfrecord_tools.convert_voc(str(tmp_path / "va"), voc_root=str(root), split_set="val", workers=1, progress=False)
    train = by_filename(read_split(tmp_path / "tr"))
    assert values(train["b.jpg"], schema.OBJECT_POSE) == [b"Left"]
    assert values(train["b.jpg"], schema.OBJECT_TRUNCATED) == [1]
    assert values(train["a.jpg"], schema.OBJECT_POSE) in ([b"", b""], [])
    assert values(train["a.jpg"], schema.OBJECT_TRUNCATED) == [0, 0]

    c = by_filename(read_split(tmp_path / "va"))["c.png"]
    assert values(c, schema.IMAGE_FORMAT) == [b"png"]
    assert values(c, schema.IMAGE_ENCODED) == [images["c"][1]]
    assert values(c, schema.IMAGE_ENCODED)[0][:8] == b"\x89PNG\r\n\x1a\n"
    assert (values(c, schema.IMAGE_WIDTH), values(c, schema.IMAGE_HEIGHT)) == ([50], [40])
    assert_boxes_close(boxes_of(c), [(5 / 50, 4 / 40, 45 / 50, 36 / 40)])


# --------------------------------------------------------------------------- planted bad inputs

GOOD = {"good1.jpg": (64, 48), "good2.jpg": (80, 60)}


def _good_images(tmp_path):
    for index, (name, (w, h)) in enumerate(GOOD.items()):
        write(tmp_path / "img" / name, image_bytes(w, h, seed=10 + index))
        write(tmp_path / "ann" / (os.path.splitext(name)[0] + ".xml"), voc_xml(name, w, h, [("cat", 2, 2, w - 2, h - 2)]))


def _secret(tmp_path) -> tuple[str, str]:
    marker = "XXE-MARKER-7f3a9c1e5b"
    path = write(tmp_path / "secret" / "secret.txt", marker)
    return path, marker


def _case_corrupt_image(tmp_path):
    import numpy as np
    data = np.random.default_rng(0).integers(0, 256, 4000, dtype=np.uint8).tobytes()
    image = write(tmp_path / "img" / "bad.jpg", b"\x00" + data)
    write(tmp_path / "ann" / "bad.xml", voc_xml("bad.jpg", 64, 48, [("cat", 1, 1, 20, 20)]))
    return image, r"not an image|corrupt", False


def _case_truncated_jpeg(tmp_path):
    data = image_bytes(256, 192, seed=3)
    image = write(tmp_path / "img" / "bad.jpg", data[: len(data) // 2])
    write(tmp_path / "ann" / "bad.xml", voc_xml("bad.jpg", 256, 192, [("cat", 1, 1, 20, 20)]))
    return image, r"truncated", False


def _case_missing_image(tmp_path):
    xml = write(tmp_path / "ann" / "bad.xml", voc_xml("bad.jpg", 64, 48, [("cat", 1, 1, 20, 20)]))
    return os.path.join(str(tmp_path / "img"), "bad.jpg"), r"not found.*" + re.escape(xml), False


def _case_unparsable_xml(tmp_path):
    write(tmp_path / "img" / "bad.jpg", image_bytes(64, 48))
    xml = write(tmp_path / "ann" / "bad.xml", "<annotation><filename>bad.jpg</filename><size>")
    return xml, r"does not parse", False


def _bad_box(box, pattern):
    def case(tmp_path):
        write(tmp_path / "img" / "bad.jpg", image_bytes(64, 48))
        xml = write(tmp_path / "ann" / "bad.xml", voc_xml("bad.jpg", 64, 48, [("cat", 1, 1, 20, 20), ("cat", *box)]))
        return xml, pattern, True
    return case


def _case_unknown_class(tmp_path):
    write(tmp_path / "img" / "bad.jpg", image_bytes(64, 48))
    xml = write(tmp_path / "ann" / "bad.xml", voc_xml("bad.jpg", 64, 48, [("cat", 1, 1, 20, 20), ("zebra", 2, 2, 30, 30)]))
    return xml, r"'zebra'.*not in the label map", True


def _case_duplicate(tmp_path):
    xml = write(tmp_path / "ann" / "zz_dup.xml", voc_xml("good1.jpg", 64, 48, [("cat", 1, 1, 20, 20)]))
    return xml, r"duplicate.*good1\.jpg", False


def _case_size_mismatch(tmp_path):
    write(tmp_path / "img" / "bad.jpg", image_bytes(64, 48))
    xml = write(tmp_path / "ann" / "bad.xml", voc_xml("bad.jpg", 100, 90, [("cat", 1, 1, 20, 20)]))
    return xml, r"100x90.*64x48", False


def _case_xxe(tmp_path):
    secret, _ = _secret(tmp_path)
    write(tmp_path / "img" / "bad.jpg", image_bytes(64, 48))
    xml = write(tmp_path / "ann" / "bad.xml", (
        f'<?xml version="1.0"?>\n<!DOCTYPE annotation [<!ENTITY xxe SYSTEM "file://{secret}">]>\n'
        "<annotation><filename>bad.jpg</filename><size><width>64</width><height>48</height></size>"
        "<object><name>&xxe;</name><bndbox><xmin>1</xmin><ymin>1</ymin><xmax>20</xmax><ymax>20</ymax></bndbox>"
        "</object></annotation>"))
    return xml, r"entit", False


BAD_CASES = {
    "corrupt_image": _case_corrupt_image,
    "truncated_jpeg": _case_truncated_jpeg,
    "missing_image": _case_missing_image,
    "unparsable_xml": _case_unparsable_xml,
    "inverted_box": _bad_box((30, 5, 10, 25), r"inverted"),
    "zero_area_box": _bad_box((10, 5, 10, 25), r"zero-area"),
    "box_out_of_bounds": _bad_box((10, 5, 66.5, 25), r"outside.*64x48"),
    "box_negative_out_of_bounds": _bad_box((-1.5, 5, 20, 25), r"outside.*64x48"),
    "unknown_class": _case_unknown_class,
    "duplicate_image": _case_duplicate,
    "size_mismatch": _case_size_mismatch,
    "xxe": _case_xxe,
}


def _plant(tmp_path, case):
    _good_images(tmp_path)
    options = {}
    if case == "unknown_class":
        options["label_map"] = write(tmp_path / "map.pbtxt", "item {\n  id: 1\n  name: 'cat'\n}\n")
    return BAD_CASES[case](tmp_path), options


@pytest.mark.parametrize("case", sorted(BAD_CASES))
def test_bad_input_stops_conversion_and_writes_no_shard(case, tmp_path):
    """Default policy: ConversionError naming the file and the reason, and no
    shard (final or temporary) left in the output folder."""
    (bad_file, reason_pattern, _), options = _plant(tmp_path, case)
    output = tmp_path / "out"
    with pytest.raises(ConversionError) as caught:
        convert_loose(tmp_path, **options)
    error = caught.value
    assert error.file == bad_file or error.file.startswith(bad_file + " (object "), error.file
    assert re.search(reason_pattern, error.reason), error.reason
    assert bad_file in str(error)
    assert glob.glob(str(output / "train-*.tfrecord")) == []
    assert written_tfrecords(output) == []


@pytest.mark.parametrize("case", sorted(BAD_CASES))
def test_bad_input_skipped_with_skip_invalid(case, tmp_path):
    """skip_invalid: the run finishes, the bad item is listed with its file
    and reason, and both good images are written unchanged."""
    (bad_file, reason_pattern, object_level), options = _plant(tmp_path, case)
    manifests = convert_loose(tmp_path, skip_invalid=True, **options)
    skipped = manifests["train"]["skipped"]
    assert len(skipped) == 1, skipped
    assert skipped[0]["file"] == bad_file
    assert re.search(reason_pattern, skipped[0]["reason"]), skipped[0]["reason"]

    examples = by_filename(read_split(tmp_path / "out"))
    for name, (w, h) in GOOD.items():
        assert values(examples[name], schema.IMAGE_ENCODED) == [(tmp_path / "img" / name).read_bytes()]
        assert_boxes_close(boxes_of(examples[name]), [(2 / w, 2 / h, (w - 2) / w, (h - 2) / h)])
    if object_level:
        # Only the bad object is left out; its image and its good object stay.
        assert skipped[0]["object"] == 1
        assert sorted(examples) == ["bad.jpg", *GOOD]
        assert_boxes_close(boxes_of(examples["bad.jpg"]), [(1 / 64, 1 / 48, 20 / 64, 20 / 48)])
        assert manifests["train"]["objects"] == 3
    else:
        assert "object" not in skipped[0]
        assert sorted(examples) == sorted(GOOD)
        assert manifests["train"]["images"] == 2


def test_box_within_one_pixel_outside_is_clipped_to_the_edge(tmp_path):
    """A box overhanging by <= 1 px is clipped to exactly 0.0 / 1.0, kept."""
    write(tmp_path / "img" / "a.jpg", image_bytes(64, 48))
    write(tmp_path / "ann" / "a.xml", voc_xml("a.jpg", 64, 48, [("cat", -1, -0.5, 65, 49), ("cat", 0, 0, 64.5, 48)]))
    manifests = convert_loose(tmp_path)
    assert manifests["train"]["skipped"] == []
    a = by_filename(read_split(tmp_path / "out"))["a.jpg"]
    assert boxes_of(a) == [(0.0, 0.0, 1.0, 1.0), (0.0, 0.0, 1.0, 1.0)]


def test_xxe_secret_never_reaches_output_or_message(tmp_path):
    """An external entity is refused: the secret file's text appears in no
    written file (shards, manifest, label map) and in no error message."""
    _good_images(tmp_path)
    _case_xxe(tmp_path)
    _, marker = _secret(tmp_path)

    with pytest.raises(ConversionError) as caught:
        convert_loose(tmp_path, out_name="strict")
    assert marker not in str(caught.value)
    assert marker.encode() not in all_output_bytes(tmp_path / "strict")

    manifests = convert_loose(tmp_path, out_name="lenient", skip_invalid=True)
    assert marker not in repr(manifests)
    assert marker.encode() not in all_output_bytes(tmp_path / "lenient")
    assert sorted(by_filename(read_split(tmp_path / "lenient"))) == sorted(GOOD)


def test_billion_laughs_refused_quickly(tmp_path):
    """Nested internal entities (about 10**9 'lol's if expanded) are refused
    without expanding them: fast, and listed with skip_invalid."""
    _good_images(tmp_path)
    write(tmp_path / "img" / "bomb.jpg", image_bytes(64, 48))
    entities = ['<!ENTITY lol0 "lol">'] + [
        f'<!ENTITY lol{i} "{("&lol" + str(i - 1) + ";") * 10}">' for i in range(1, 10)]
    xml = write(tmp_path / "ann" / "bomb.xml", (
        '<?xml version="1.0"?>\n<!DOCTYPE annotation [' + "".join(entities) + "]>\n"
        "<annotation><filename>bomb.jpg</filename><object><name>&lol9;</name><bndbox><xmin>1</xmin>"
        "<ymin>1</ymin><xmax>20</xmax><ymax>20</ymax></bndbox></object></annotation>"))

    start = time.monotonic()
    with pytest.raises(ConversionError) as caught:
        convert_loose(tmp_path)
    assert caught.value.file == xml
    assert "entit" in caught.value.reason
    manifests = convert_loose(tmp_path, out_name="lenient", skip_invalid=True)
    assert time.monotonic() - start < 5.0
    assert [entry["file"] for entry in manifests["train"]["skipped"]] == [xml]
    assert os.path.getsize(tmp_path / "lenient" / "train-00000-of-00001.tfrecord") < 100_000
