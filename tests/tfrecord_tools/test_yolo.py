"""YOLO / Ultralytics txt conversion, checked against the label files, the data YAML and the images.

Expected boxes are computed here from the label lines (``cx - w/2`` ...) and
the image sizes PIL reads; class names come from parsing ``config.yaml`` with
PyYAML. Nothing expected is taken from the converter's own output.
"""

from __future__ import annotations

import io
import os
import re

import numpy as np
import pytest
import yaml
from PIL import Image

import tfrecord_tools
from tfrecord_tools import schema

from .helpers import by_filename, image_bytes, read_split, values, write

ORPHAN_LABELS = ("000000000656", "000000000659")  # label files without an image (SOURCE.txt)
UNLABELLED_IMAGES = ("000000000250", "000000000508")  # images without a label file (SOURCE.txt)
CLIP_PX = 1.0  # a box may overhang the image by up to 1 px; it is then clipped to the image
TOL = 1e-5


# --- independent readers ---------------------------------------------------------------------

def _paths(coco128) -> dict:
    return dict(images_dir=str(coco128 / "images" / "train2017"),
                labels_dir=str(coco128 / "labels" / "train2017"),
                names=str(coco128 / "config.yaml"))


def _yaml_names(path) -> list[str]:
    with open(path, encoding="utf-8") as stream:
        names = yaml.safe_load(stream)["names"]
    if isinstance(names, dict):
        return [names[key] for key in sorted(names)]
    return list(names)


def _label_lines(path) -> list[list[str]]:
    with open(path, encoding="utf-8") as stream:
        return [line.split() for line in stream if line.split()]


def _pbtxt_items(output_dir) -> list[tuple[int, str]]:
    with open(os.path.join(str(output_dir), "label_map.pbtxt"), encoding="utf-8") as stream:
        text = stream.read()
    return [(int(i), name) for i, name in re.findall(r"id:\s*(\d+)\s*name:\s*'([^']*)'", text)]


def _expected_box(cx, cy, w, h, width, height):
    """The normalised (xmin, ymin, xmax, ymax) after the 1-px clip rule, or None when the box
    overhangs by more than that (and must then be reported instead)."""
    pixels = [(cx - w / 2) * width, (cy - h / 2) * height, (cx + w / 2) * width, (cy + h / 2) * height]
    if min(pixels[0], pixels[1]) < -CLIP_PX or pixels[2] > width + CLIP_PX or pixels[3] > height + CLIP_PX:
        return None
    xmin, xmax = (min(max(v, 0.0), width) / width for v in (pixels[0], pixels[2]))
    ymin, ymax = (min(max(v, 0.0), height) / height for v in (pixels[1], pixels[3]))
    return xmin, ymin, xmax, ymax


def _texts(example) -> list[str]:
    return [t.decode() for t in values(example, schema.OBJECT_CLASS_TEXT)]


def _convert(output_dir, **kwargs):
    kwargs.setdefault("workers", 1)
    kwargs.setdefault("progress", False)
    return tfrecord_tools.convert_yolo(str(output_dir), **kwargs)["train"]


_CACHE: dict = {}


@pytest.fixture
def coco128_skip(coco128, tmp_path_factory):
    """coco128 converted once with skip_invalid=True: (manifest, records by filename, paths).

    Shared by several tests (read only), to keep the file fast.
    """
    key = str(coco128)
    if key not in _CACHE:
        out = tmp_path_factory.mktemp("coco128")
        manifest = _convert(out, **_paths(coco128), skip_invalid=True)
        _CACHE[key] = (manifest, by_filename(read_split(out)), out)
    return _CACHE[key]


# --- coco128 ---------------------------------------------------------------------------------

def test_orphan_label_files_fail_by_default(coco128, tmp_path):
    paths = _paths(coco128)
    out = tmp_path / "out"
    with pytest.raises(tfrecord_tools.ConversionError) as error:
        _convert(out, **paths)
    orphans = [os.path.join(paths["labels_dir"], stem + ".txt") for stem in ORPHAN_LABELS]
    assert any(orphan in str(error.value) for orphan in orphans)
    assert error.value.file in orphans
    assert not (out.is_dir() and [n for n in os.listdir(out) if n.endswith(".tfrecord")])


def test_skip_invalid_lists_orphans_and_keeps_background_images(coco128, coco128_skip):
    manifest, records, _ = coco128_skip
    paths = _paths(coco128)
    images = {os.path.splitext(name)[0]: name for name in os.listdir(paths["images_dir"])}
    labels = {os.path.splitext(name)[0] for name in os.listdir(paths["labels_dir"]) if name.endswith(".txt")}
    assert len(images) == 128
    assert sorted(labels - set(images)) == list(ORPHAN_LABELS)
    assert sorted(set(images) - labels) == list(UNLABELLED_IMAGES)

    assert manifest["images"] == len(records) == 128
    assert sorted(records) == sorted(images.values())
    assert sorted(entry["file"] for entry in manifest["skipped"]) == \
        [os.path.join(paths["labels_dir"], stem + ".txt") for stem in ORPHAN_LABELS]
    for stem in UNLABELLED_IMAGES:
        assert values(records[images[stem]], schema.OBJECT_CLASS_LABEL) == []
    assert manifest["background_images"] >= 2
    assert manifest["notes"]["images_without_label_file"] == 2

    expected_objects = sum(len(_label_lines(os.path.join(paths["labels_dir"], stem + ".txt")))
                           for stem in labels & set(images))
    assert manifest["objects"] == expected_objects
    assert sum(len(values(e, schema.OBJECT_CLASS_LABEL)) for e in records.values()) == expected_objects


def test_boxes_labels_and_names_follow_the_label_files(coco128, coco128_skip):
    """Every labelled image: box from cx, cy, w, h (1-px clip at the edges), label = index + 1."""
    _, records, out = coco128_skip
    paths = _paths(coco128)
    names = _yaml_names(paths["names"])
    assert len(names) == 80
    assert _pbtxt_items(out) == [(index + 1, name) for index, name in enumerate(names)]
    clipped = 0
    for filename, example in records.items():
        stem = os.path.splitext(filename)[0]
        label_path = os.path.join(paths["labels_dir"], stem + ".txt")
        if not os.path.isfile(label_path):
            continue
        with open(os.path.join(paths["images_dir"], filename), "rb") as stream:
            data = stream.read()
        with Image.open(io.BytesIO(data)) as image:
            width, height = image.size
        assert values(example, schema.IMAGE_ENCODED) == [data]
        assert values(example, schema.IMAGE_FORMAT) == [b"jpeg"]
        assert (values(example, schema.IMAGE_WIDTH), values(example, schema.IMAGE_HEIGHT)) == ([width], [height])
        lines = _label_lines(label_path)
        expected = [_expected_box(*map(float, line[1:]), width, height) for line in lines]
        assert None not in expected  # coco128 has no box beyond the tolerance
        for line, box in zip(lines, expected):
            cx, cy, w, h = map(float, line[1:])
            clipped += box != pytest.approx((cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2), abs=1e-12)
        stored = list(zip(*(values(example, key) for key in
                            (schema.OBJECT_XMIN, schema.OBJECT_YMIN, schema.OBJECT_XMAX, schema.OBJECT_YMAX))))
        assert len(stored) == len(expected), filename
        for got, want in zip(stored, expected):
            assert got == pytest.approx(want, abs=TOL), filename
            assert all(0.0 <= v <= 1.0 for v in got)
        assert values(example, schema.OBJECT_CLASS_LABEL) == [int(line[0]) + 1 for line in lines]
        assert _texts(example) == [names[int(line[0])] for line in lines]
    assert clipped > 0  # the edge rule was really exercised


# --- synthetic datasets ----------------------------------------------------------------------

NAMES3 = ["cat", "dog", "traffic light"]


def _dataset(root, images: dict, labels: dict, names=NAMES3) -> dict:
    """images: relative name -> bytes; labels: stem -> text. Returns convert_yolo paths."""
    for name, data in images.items():
        write(os.path.join(root, "images", name), data)
    for stem, text in labels.items():
        write(os.path.join(root, "labels", stem + ".txt"), text)
    names_path = write(os.path.join(root, "names.txt"), "\n".join(names) + "\n")
    os.makedirs(os.path.join(root, "labels"), exist_ok=True)
    return dict(images_dir=os.path.join(root, "images"), labels_dir=os.path.join(root, "labels"), names=names_path)


@pytest.mark.parametrize("form", ["text", "yaml list", "yaml dict with string keys"])
def test_names_from_text_or_yaml_give_the_same_label_map(coco128, tmp_path, form):
    names = _yaml_names(coco128 / "config.yaml")
    images = {"a.jpg": image_bytes(32, 24, seed=1), "b.jpg": image_bytes(32, 24, seed=2)}
    source = _dataset(tmp_path / "src", images, {"a": "0 0.5 0.5 0.5 0.5\n9 0.3 0.3 0.2 0.2\n", "b": "79 0.5 0.5 1 1\n"},
                      names=names)
    if form == "yaml list":
        source["names"] = write(tmp_path / "list.yaml", yaml.safe_dump({"names": names}))
    elif form == "yaml dict with string keys":
        source["names"] = write(tmp_path / "dict.yaml", yaml.safe_dump({"names": {str(i): n for i, n in enumerate(names)}}))
    reference = dict(source, names=str(coco128 / "config.yaml"))
    _convert(tmp_path / "yaml", **reference)
    _convert(tmp_path / "other", **source)
    with open(tmp_path / "yaml" / "label_map.pbtxt", "rb") as a, open(tmp_path / "other" / "label_map.pbtxt", "rb") as b:
        assert a.read() == b.read()
    assert _pbtxt_items(tmp_path / "other") == [(i + 1, name) for i, name in enumerate(names)]
    records = by_filename(read_split(tmp_path / "other"))
    assert _texts(records["a.jpg"]) == ["person", "traffic light"]
    assert _texts(records["b.jpg"]) == ["toothbrush"]


def _shoelace(points) -> float:
    return abs(sum(x0 * y1 - x1 * y0 for (x0, y0), (x1, y1) in zip(points, points[1:] + points[:1]))) / 2


POLYGONS = {
    "triangle": [(0.1, 0.2), (0.7, 0.2), (0.4, 0.9)],
    "square": [(0.75, 0.1), (0.95, 0.1), (0.95, 0.5), (0.75, 0.5)],
    "pentagon": [(0.05, 0.5), (0.2, 0.35), (0.35, 0.5), (0.3, 0.95), (0.1, 0.95)],
}
SEG_W, SEG_H = 200, 100


def _polygon_line(class_index, points) -> str:
    return f"{class_index} " + " ".join(f"{x:g} {y:g}" for x, y in points)


def test_yolo_seg_polygons_become_masks_with_the_polygon_area_and_extent(tmp_path):
    text = "\n".join(_polygon_line(i % 3, pts) for i, pts in enumerate(POLYGONS.values())) + "\n"
    source = _dataset(tmp_path / "src", {"seg.png": image_bytes(SEG_W, SEG_H, fmt="PNG")}, {"seg": text})
    manifest = _convert(tmp_path / "out", **source, include_masks=True)
    assert manifest["skipped"] == []
    (example,) = read_split(tmp_path / "out")
    masks = values(example, schema.OBJECT_MASK)
    assert len(masks) == len(POLYGONS)
    boxes = list(zip(*(values(example, key) for key in
                       (schema.OBJECT_XMIN, schema.OBJECT_YMIN, schema.OBJECT_XMAX, schema.OBJECT_YMAX))))
    for (name, points), png, box in zip(POLYGONS.items(), masks, boxes):
        with Image.open(io.BytesIO(png)) as image:
            assert image.format == "PNG"
            mask = np.asarray(image.convert("L")) > 0
        assert mask.shape == (SEG_H, SEG_W)
        pixel_points = [(x * SEG_W, y * SEG_H) for x, y in points]
        area = _shoelace(pixel_points)
        assert mask.sum() == pytest.approx(area, rel=0.04), name
        xs, ys = [p[0] for p in points], [p[1] for p in points]
        assert box == pytest.approx((min(xs), min(ys), max(xs), max(ys)), abs=TOL), name
        rows, cols = np.nonzero(mask)
        assert cols.min() >= min(xs) * SEG_W - 1 and cols.max() <= max(xs) * SEG_W + 1, name
        assert rows.min() >= min(ys) * SEG_H - 1 and rows.max() <= max(ys) * SEG_H + 1, name


def test_polygons_without_include_masks_store_the_extent_and_no_mask(tmp_path):
    points = POLYGONS["triangle"]
    source = _dataset(tmp_path / "src", {"seg.png": image_bytes(SEG_W, SEG_H, fmt="PNG")},
                      {"seg": _polygon_line(2, points) + "\n"})
    _convert(tmp_path / "out", **source)
    (example,) = read_split(tmp_path / "out")
    assert schema.OBJECT_MASK not in example
    xs, ys = [p[0] for p in points], [p[1] for p in points]
    assert values(example, schema.OBJECT_XMIN) == pytest.approx([min(xs)], abs=TOL)
    assert values(example, schema.OBJECT_YMAX) == pytest.approx([max(ys)], abs=TOL)
    assert _texts(example) == ["traffic light"]


def test_a_box_only_line_with_include_masks_is_reported(tmp_path):
    text = _polygon_line(0, POLYGONS["square"]) + "\n1 0.5 0.5 0.2 0.2\n"
    source = _dataset(tmp_path / "src", {"seg.png": image_bytes(SEG_W, SEG_H, fmt="PNG")}, {"seg": text})
    label_path = os.path.join(source["labels_dir"], "seg.txt")
    with pytest.raises(tfrecord_tools.ConversionError) as error:
        _convert(tmp_path / "strict", **source, include_masks=True)
    assert label_path in str(error.value)
    manifest = _convert(tmp_path / "skip", **source, include_masks=True, skip_invalid=True)
    assert [(e["file"], e.get("object")) for e in manifest["skipped"]] == [(label_path, 1)]
    (example,) = read_split(tmp_path / "skip")
    assert _texts(example) == ["cat"]
    assert len(values(example, schema.OBJECT_MASK)) == 1


GOOD_LINE = "0 0.5 0.5 0.4 0.4"
BAD_LINES = {
    "class out of range": "3 0.5 0.5 0.2 0.2",
    "negative class": "-1 0.5 0.5 0.2 0.2",
    "three coordinates": "1 0.5 0.5 0.2",
    "five coordinates": "1 0.1 0.1 0.5 0.1 0.5",
    "non-numeric coordinate": "1 0.5 abc 0.2 0.2",
    "non-numeric class": "dog 0.5 0.5 0.2 0.2",
}


def _bad_line_dataset(root, case):
    images = {"good.jpg": image_bytes(40, 30, seed=1), "bad.jpg": image_bytes(40, 30, seed=2)}
    labels = {"good": GOOD_LINE + "\n", "bad": f"{GOOD_LINE}\n{BAD_LINES[case]}\n"}
    source = _dataset(root, images, labels)
    return source, os.path.join(source["labels_dir"], "bad.txt")


@pytest.mark.parametrize("case", list(BAD_LINES))
def test_a_bad_label_line_stops_the_conversion_naming_the_file(tmp_path, case):
    source, label_path = _bad_line_dataset(tmp_path / "src", case)
    with pytest.raises(tfrecord_tools.ConversionError) as error:
        _convert(tmp_path / "out", **source)
    assert label_path in str(error.value)
    assert error.value.file.startswith(label_path)


@pytest.mark.parametrize("case", list(BAD_LINES))
def test_a_bad_label_line_is_listed_with_skip_invalid(tmp_path, case):
    source, label_path = _bad_line_dataset(tmp_path / "src", case)
    manifest = _convert(tmp_path / "out", **source, skip_invalid=True)
    assert [(e["file"], e.get("object")) for e in manifest["skipped"]] == [(label_path, 1)]
    records = by_filename(read_split(tmp_path / "out"))
    assert sorted(records) == ["bad.jpg", "good.jpg"]
    assert _texts(records["bad.jpg"]) == ["cat"]  # the good line of the same file stays
    assert manifest["objects"] == 2


def _bmp_bytes() -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (40, 30), (10, 200, 30)).save(buffer, format="BMP")
    assert buffer.getvalue()[:2] == b"BM"
    return buffer.getvalue()


def test_an_unsupported_image_format_is_reported(tmp_path):
    images = {"good.jpg": image_bytes(40, 30, seed=1), "odd.bmp": _bmp_bytes()}
    source = _dataset(tmp_path / "src", images, {"good": GOOD_LINE + "\n", "odd": GOOD_LINE + "\n"})
    bmp_path = os.path.join(source["images_dir"], "odd.bmp")
    with pytest.raises(tfrecord_tools.ConversionError) as error:
        _convert(tmp_path / "strict", **source)
    assert bmp_path in str(error.value)
    manifest = _convert(tmp_path / "skip", **source, skip_invalid=True)
    assert [e["file"] for e in manifest["skipped"]] == [bmp_path]
    assert sorted(by_filename(read_split(tmp_path / "skip"))) == ["good.jpg"]


def test_a_jpg_and_a_png_with_the_same_stem_are_duplicates(tmp_path):
    images = {"good.jpg": image_bytes(40, 30, seed=1), "twin.jpg": image_bytes(40, 30, seed=2),
              "twin.png": image_bytes(40, 30, fmt="PNG", seed=3)}
    source = _dataset(tmp_path / "src", images, {"good": GOOD_LINE + "\n", "twin": GOOD_LINE + "\n"})
    with pytest.raises(tfrecord_tools.ConversionError) as error:
        _convert(tmp_path / "strict", **source)
    assert "duplicate" in str(error.value).lower()
    assert "twin" in str(error.value)
    manifest = _convert(tmp_path / "skip", **source, skip_invalid=True)
    assert len(manifest["skipped"]) == 1
    entry = manifest["skipped"][0]
    assert "duplicate" in entry["reason"].lower()
    assert "twin.png" in entry["file"] + entry["reason"]
    records = read_split(tmp_path / "skip")
    assert sorted(values(e, schema.IMAGE_SOURCE_ID)[0] for e in records) == [b"good", b"twin"]


def test_exif_oriented_jpeg_is_refused_because_yolo_labels_follow_the_rotation(tmp_path):
    """Ultralytics loads JPEGs with their EXIF orientation applied, so labels
    refer to the rotated picture; stored unchanged, TF would decode the
    unrotated pixels and every box would be misplaced."""
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise when shown
    buffer = io.BytesIO()
    Image.new("RGB", (40, 30), (90, 120, 200)).save(buffer, format="JPEG", exif=exif)
    images, labels = tmp_path / "images", tmp_path / "labels"
    images.mkdir()
    labels.mkdir()
    (images / "rotated.jpg").write_bytes(buffer.getvalue())
    (images / "plain.jpg").write_bytes(image_bytes(40, 30))
    for stem in ("rotated", "plain"):
        (labels / f"{stem}.txt").write_text("0 0.5 0.5 0.2 0.2\n")
    names = tmp_path / "names.txt"
    names.write_text("thing\n")
    source = dict(images_dir=str(images), labels_dir=str(labels), names=str(names), workers=1, progress=False)
    with pytest.raises(tfrecord_tools.ConversionError) as caught:
        tfrecord_tools.convert_yolo(str(tmp_path / "strict"), **source)
    assert caught.value.file == str(images / "rotated.jpg") and "EXIF orientation 6" in caught.value.reason
    manifest = tfrecord_tools.convert_yolo(str(tmp_path / "skip"), skip_invalid=True, **source)["train"]
    assert manifest["images"] == 1 and [entry["file"] for entry in manifest["skipped"]] == [str(images / "rotated.jpg")]
