"""COCO instances JSON -> TFRecord: coco_tiny counts, boxes, label maps,
masks (checked against pycocotools directly) and planted bad inputs.

Expected values come from the JSON parsed here with ``json`` and from
pycocotools, never from running the converter.
"""

from __future__ import annotations

import glob
import io
import json
import math
import os
import re

import numpy as np
import pytest
from PIL import Image

import tfrecord_tools
from tfrecord_tools import ConversionError, schema

from tests.tfrecord_tools.helpers import by_filename, image_bytes, read_split, values, write

# pycocotools 2.0 under numpy 2 warns on every decode; not ours to fix.
pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation doesn't accept a copy keyword")

BOX_TOL = 1e-6
ANNOTATIONS = ("annotations", "instances_train2017.json")


# --------------------------------------------------------------------------- helpers


def load_coco(coco_tiny) -> dict:
    with open(coco_tiny.joinpath(*ANNOTATIONS), encoding="utf-8") as stream:
        return json.load(stream)


def annotations_by_file(data) -> dict[str, list[dict]]:
    """file_name -> that image's annotations, in JSON order."""
    file_of = {image["id"]: image["file_name"] for image in data["images"]}
    grouped = {image["file_name"]: [] for image in data["images"]}
    for annotation in data["annotations"]:
        grouped[file_of[annotation["image_id"]]].append(annotation)
    return grouped


def convert_tiny(coco_tiny, output, **options):
    options.setdefault("workers", 1)
    options.setdefault("progress", False)
    return tfrecord_tools.convert_coco(
        str(output), annotations=str(coco_tiny.joinpath(*ANNOTATIONS)),
        images_dir=str(coco_tiny / "train2017"), **options)


def boxes_of(example):
    return list(zip(*(values(example, key) for key in (
        schema.OBJECT_XMIN, schema.OBJECT_YMIN, schema.OBJECT_XMAX, schema.OBJECT_YMAX))))


def parse_pbtxt_items(path) -> list[tuple[int, str]]:
    text = open(path, encoding="utf-8").read()
    return [(int(i), name) for i, name in re.findall(r"id:\s*(\d+)\s*name:\s*['\"]([^'\"]*)['\"]", text)]


def pbtxt(items) -> str:
    return "".join(f"item {{\n  id: {item_id}\n  name: '{name}'\n}}\n" for item_id, name in items)


def decode_mask_png(data: bytes) -> np.ndarray:
    """A stored mask PNG as a 0/1 uint8 array, decoded with Pillow here."""
    with Image.open(io.BytesIO(data)) as image:
        assert image.format == "PNG"
        array = np.asarray(image)
    assert array.ndim == 2, array.shape
    assert array.dtype == np.uint8 and int(array.max(initial=0)) <= 1  # 0/1 values, not 0/255
    return array.astype(np.uint8)


def polygon_perimeter(segmentation) -> float:
    total = 0.0
    for polygon in segmentation:
        xy = np.asarray(polygon, dtype=np.float64).reshape(-1, 2)
        total += float(np.linalg.norm(xy - np.roll(xy, 1, axis=0), axis=1).sum())
    return total


# --------------------------------------------------------------------------- coco_tiny


def test_coco_tiny_counts_label_map_and_boxes(coco_tiny, tmp_path):
    """50 records, 470 objects, 5 crowd; default label map = categories by
    COCO id renumbered 1..80; every object's box, class and flags equal the
    JSON annotation (in JSON order). Runs with two worker processes."""
    data = load_coco(coco_tiny)
    grouped = annotations_by_file(data)
    images = {image["file_name"]: image for image in data["images"]}
    categories = sorted(data["categories"], key=lambda category: category["id"])
    name_of_category = {category["id"]: category["name"] for category in categories}
    default_label = {category["id"]: rank + 1 for rank, category in enumerate(categories)}
    background = sorted(name for name, anns in grouped.items() if not anns)
    # Dataset facts (SOURCE.txt), checked from the JSON itself.
    assert (len(images), len(data["annotations"]), len(categories)) == (50, 470, 80)
    assert len(background) == 1
    assert sum(a["iscrowd"] for a in data["annotations"]) == 5
    assert max(name_of_category) == 90

    output = tmp_path / "out"
    manifest = convert_tiny(coco_tiny, output, workers=2)["train"]
    assert manifest["images"] == 50
    assert manifest["objects"] == 470
    assert manifest["background_images"] == 1
    assert manifest["skipped"] == []
    assert manifest["format"] == "coco"
    used = {name_of_category[a["category_id"]] for a in data["annotations"]}
    assert len(used) == 49
    assert {name for name, count in manifest["classes"].items() if count} == used
    assert sum(manifest["classes"].values()) == 470

    assert parse_pbtxt_items(output / "label_map.pbtxt") == [
        (rank + 1, category["name"]) for rank, category in enumerate(categories)]

    examples = by_filename(read_split(output))
    assert sorted(examples) == sorted(images)
    assert values(examples[background[0]], schema.OBJECT_XMIN) == []
    crowd = 0
    for name, anns in grouped.items():
        example = examples[name]
        image = images[name]
        w, h = image["width"], image["height"]
        assert values(example, schema.IMAGE_WIDTH) == [w]
        assert values(example, schema.IMAGE_HEIGHT) == [h]
        assert values(example, schema.IMAGE_SOURCE_ID) == [str(image["id"]).encode()]
        assert values(example, schema.IMAGE_FORMAT) == [b"jpeg"]
        assert values(example, schema.IMAGE_ENCODED) == [(coco_tiny / "train2017" / name).read_bytes()]
        expected = [(x / w, y / h, (x + bw) / w, (y + bh) / h) for x, y, bw, bh in (a["bbox"] for a in anns)]
        got = boxes_of(example)
        assert len(got) == len(expected)
        for box, want in zip(got, expected):
            assert box == pytest.approx(want, abs=BOX_TOL)
        assert values(example, schema.OBJECT_CLASS_TEXT) == [name_of_category[a["category_id"]].encode() for a in anns]
        assert values(example, schema.OBJECT_CLASS_LABEL) == [default_label[a["category_id"]] for a in anns]
        assert values(example, schema.OBJECT_IS_CROWD) == [a["iscrowd"] for a in anns]
        assert values(example, schema.OBJECT_AREA) == pytest.approx([a["area"] for a in anns], rel=1e-6)
        crowd += sum(values(example, schema.OBJECT_IS_CROWD))
    assert crowd == 5


def test_coco_tiny_masks_match_pycocotools(coco_tiny, tmp_path):
    """include_masks: one image-sized PNG per object, equal to pycocotools.

    Crowd (uncompressed RLE): decoded pixel count == pycocotools' area of the
    RLE, exactly. COCO's 'area' field for these crowd annotations is NOT the
    RLE pixel count (e.g. 8340 vs 7378), so it is not compared with the mask;
    the record keeps the JSON 'area' as image/object/area (TF OD API habit).

    Polygons: the mask equals pycocotools' own rasterisation (annToMask:
    merge(frPyObjects(polygons, h, w))) exactly. COCO's 'area' is the
    geometric polygon area, so the pixel count differs from it by pixel
    quantisation along the boundary: at most ~half a pixel per unit of
    perimeter. Tolerance: max(10 % of area, 0.5 * perimeter), which lets the
    few tiny objects (area < 100 px, up to 18 % off) through while still
    catching a mask shifted, scaled or rasterised at the wrong size.
    """
    from pycocotools import mask as mask_utils

    data = load_coco(coco_tiny)
    grouped = annotations_by_file(data)
    images = {image["file_name"]: image for image in data["images"]}
    output = tmp_path / "out"
    manifest = convert_tiny(coco_tiny, output, include_masks=True)["train"]
    assert manifest["objects"] == 470 and manifest["skipped"] == []
    examples = by_filename(read_split(output))

    crowd_checked = polygons_checked = 0
    crowd_area_field_differs = False
    for name, anns in grouped.items():
        h, w = images[name]["height"], images[name]["width"]
        masks = values(examples[name], schema.OBJECT_MASK)
        assert len(masks) == len(anns)
        for annotation, png in zip(anns, masks):
            mask = decode_mask_png(png)
            assert mask.shape == (h, w)
            segmentation = annotation["segmentation"]
            if annotation["iscrowd"]:
                assert isinstance(segmentation, dict) and isinstance(segmentation["counts"], list)
                rle = mask_utils.frPyObjects(segmentation, h, w)
                assert int(mask.sum()) == int(mask_utils.area(rle))
                np.testing.assert_array_equal(mask, mask_utils.decode(rle))
                crowd_area_field_differs |= int(mask_utils.area(rle)) != annotation["area"]
                crowd_checked += 1
            else:
                reference = mask_utils.decode(mask_utils.merge(mask_utils.frPyObjects(segmentation, h, w)))
                np.testing.assert_array_equal(mask, reference)
                tolerance = max(0.10 * annotation["area"], 0.5 * polygon_perimeter(segmentation))
                assert abs(int(mask.sum()) - annotation["area"]) <= tolerance, annotation["id"]
                polygons_checked += 1
    assert (crowd_checked, polygons_checked) == (5, 465)
    assert crowd_area_field_differs  # documents why crowd masks are not compared with 'area'


def test_coco_label_map_file_matches_by_name(coco_tiny, tmp_path):
    """A given label map is matched by category name, not by COCO id."""
    data = load_coco(coco_tiny)
    names = sorted(category["name"] for category in data["categories"])
    # Ids unrelated to COCO's: reverse alphabetical order, starting at 101.
    items = [(101 + index, name) for index, name in enumerate(reversed(names))]
    label_of = {name: item_id for item_id, name in items}
    map_path = write(tmp_path / "map.pbtxt", pbtxt(items))

    output = tmp_path / "out"
    manifest = convert_tiny(coco_tiny, output, label_map=map_path)["train"]
    assert manifest["objects"] == 470
    assert sorted(parse_pbtxt_items(output / "label_map.pbtxt")) == sorted(items)
    name_of_category = {category["id"]: category["name"] for category in data["categories"]}
    examples = by_filename(read_split(output))
    for name, anns in annotations_by_file(data).items():
        assert values(examples[name], schema.OBJECT_CLASS_LABEL) == [
            label_of[name_of_category[a["category_id"]]] for a in anns]


def test_coco_category_missing_from_label_map(coco_tiny, tmp_path):
    """A used category absent from the given map: an error naming it by
    default; with skip_invalid its objects are listed and left out, and
    every image is still written."""
    data = load_coco(coco_tiny)
    items = [(category["id"], category["name"]) for category in data["categories"] if category["name"] != "person"]
    map_path = write(tmp_path / "map.pbtxt", pbtxt(items))
    person_id = next(c["id"] for c in data["categories"] if c["name"] == "person")
    persons = sum(1 for a in data["annotations"] if a["category_id"] == person_id)
    assert persons > 0

    with pytest.raises(ConversionError) as caught:
        convert_tiny(coco_tiny, tmp_path / "strict", label_map=map_path)
    assert "'person'" in caught.value.reason and "label map" in caught.value.reason
    assert glob.glob(str(tmp_path / "strict" / "train-*.tfrecord")) == []

    manifest = convert_tiny(coco_tiny, tmp_path / "lenient", label_map=map_path, skip_invalid=True)["train"]
    assert len(manifest["skipped"]) == persons
    assert all("'person'" in entry["reason"] for entry in manifest["skipped"])
    assert manifest["objects"] == 470 - persons
    assert manifest["images"] == 50
    texts = [t for e in read_split(tmp_path / "lenient") for t in values(e, schema.OBJECT_CLASS_TEXT)]
    assert len(texts) == 470 - persons and b"person" not in texts


# --------------------------------------------------------------------------- planted bad inputs


def _square(x, y, size):
    return [[x, y, x + size, y, x + size, y + size, x, y + size]]


def make_coco(tmp_path, extra_images=(), extra_annotations=(), sizes=None) -> str:
    """A small COCO set: a.jpg (64x48, 2 objects), b.jpg (80x60, 1 object)."""
    write(tmp_path / "images" / "a.jpg", image_bytes(64, 48, seed=1))
    write(tmp_path / "images" / "b.jpg", image_bytes(80, 60, seed=2))
    images = [
        {"id": 1, "file_name": "a.jpg", "width": 64, "height": 48},
        {"id": 2, "file_name": "b.jpg", "width": 80, "height": 60},
        *extra_images,
    ]
    annotations = [
        {"id": 10, "image_id": 1, "category_id": 3, "bbox": [4, 4, 20, 20], "area": 400.0, "iscrowd": 0,
         "segmentation": _square(4, 4, 20)},
        {"id": 11, "image_id": 1, "category_id": 7, "bbox": [30, 10, 10, 10], "area": 100.0, "iscrowd": 0,
         "segmentation": _square(30, 10, 10)},
        {"id": 12, "image_id": 2, "category_id": 3, "bbox": [0, 0, 40, 40], "area": 1600.0, "iscrowd": 0,
         "segmentation": _square(0, 0, 40)},
        *extra_annotations,
    ]
    categories = [{"id": 3, "name": "cat"}, {"id": 7, "name": "dog"}]
    return write(tmp_path / "instances.json", json.dumps(
        {"images": images, "annotations": annotations, "categories": categories}))


def convert_synthetic(tmp_path, annotations, out="out", **options):
    options.setdefault("workers", 1)
    options.setdefault("progress", False)
    return tfrecord_tools.convert_coco(
        str(tmp_path / out), annotations=annotations, images_dir=str(tmp_path / "images"), **options)


def assert_good_images_written(tmp_path, out="out"):
    examples = by_filename(read_split(tmp_path / out))
    for name in ("a.jpg", "b.jpg"):
        assert values(examples[name], schema.IMAGE_ENCODED) == [(tmp_path / "images" / name).read_bytes()]
    assert boxes_of(examples["a.jpg"])[0] == pytest.approx((4 / 64, 4 / 48, 24 / 64, 24 / 48), abs=BOX_TOL)
    return examples


def test_synthetic_coco_converts_cleanly(tmp_path):
    """The planted-input baseline itself has no problem, with masks too."""
    annotations = make_coco(tmp_path)
    manifest = convert_synthetic(tmp_path, annotations, include_masks=True)["train"]
    assert manifest["skipped"] == [] and manifest["objects"] == 3
    examples = assert_good_images_written(tmp_path)
    assert values(examples["a.jpg"], schema.OBJECT_CLASS_TEXT) == [b"cat", b"dog"]
    assert values(examples["a.jpg"], schema.OBJECT_CLASS_LABEL) == [1, 2]
    square = decode_mask_png(values(examples["b.jpg"], schema.OBJECT_MASK)[0])
    assert square.shape == (60, 80)
    assert square[:40, :40].sum() == 1600 and square.sum() == 1600  # a 40x40 square, pixel-exact


def test_unparsable_json_names_the_file(tmp_path):
    write(tmp_path / "images" / "a.jpg", image_bytes())
    broken = write(tmp_path / "instances.json", '{"images": [ {"id": 1, ')
    for skip_invalid in (False, True):
        with pytest.raises(ConversionError) as caught:
            convert_synthetic(tmp_path, broken, skip_invalid=skip_invalid)
        assert caught.value.file == broken
        assert "JSON" in caught.value.reason and "parse" in caught.value.reason
    assert glob.glob(str(tmp_path / "out" / "train-*.tfrecord")) == []


def _outside(tmp_path) -> str:
    return write(tmp_path / "outside.jpg", image_bytes(32, 32, seed=99))


def _case_escape_relative(tmp_path):
    _outside(tmp_path)
    annotations = make_coco(tmp_path, extra_images=[{"id": 3, "file_name": "../outside.jpg", "width": 32, "height": 32}])
    return annotations, annotations, r"'\.\./outside\.jpg'.*escapes", {}


def _case_escape_absolute(tmp_path):
    outside = _outside(tmp_path)
    annotations = make_coco(tmp_path, extra_images=[{"id": 3, "file_name": outside, "width": 32, "height": 32}])
    return annotations, annotations, re.escape(repr(outside)) + r".*escapes", {}


def _case_unknown_image_id(tmp_path):
    annotations = make_coco(tmp_path, extra_annotations=[
        {"id": 77, "image_id": 999, "category_id": 3, "bbox": [1, 1, 5, 5], "area": 25.0, "iscrowd": 0,
         "segmentation": _square(1, 1, 5)}])
    return annotations, annotations, r"annotation 77.*image 999", {}


def _case_empty_segmentation_with_masks(tmp_path):
    annotations = make_coco(tmp_path, extra_annotations=[
        {"id": 78, "image_id": 2, "category_id": 7, "bbox": [50, 20, 10, 10], "area": 100.0, "iscrowd": 0,
         "segmentation": []}])
    return annotations, annotations, r"image b.jpg, " + r"annotation 78.*segmentation", {"include_masks": True}


def _case_bbox_outside(tmp_path):
    annotations = make_coco(tmp_path, extra_annotations=[
        {"id": 79, "image_id": 2, "category_id": 7, "bbox": [70, 20, 15, 10], "area": 150.0, "iscrowd": 0,
         "segmentation": _square(70, 20, 10)}])
    return annotations, annotations, r"image b.jpg, " + r"annotation 79.*outside", {}


def _case_size_mismatch(tmp_path):
    write(tmp_path / "images" / "c.jpg", image_bytes(64, 48, seed=5))
    annotations = make_coco(tmp_path, extra_images=[{"id": 3, "file_name": "c.jpg", "width": 48, "height": 64}])
    return annotations, annotations, r"48x64.*64x48.*c\.jpg", {}


BAD_CASES = {
    "escape_relative": _case_escape_relative,
    "escape_absolute": _case_escape_absolute,
    "unknown_image_id": _case_unknown_image_id,
    "empty_segmentation_with_masks": _case_empty_segmentation_with_masks,
    "bbox_outside_image": _case_bbox_outside,
    "json_size_disagrees_with_image": _case_size_mismatch,
}


@pytest.mark.parametrize("case", sorted(BAD_CASES))
def test_bad_coco_input_stops_conversion(case, tmp_path):
    """Default policy: ConversionError naming the file and the reason; no shard."""
    annotations, bad_file, pattern, options = BAD_CASES[case](tmp_path)
    with pytest.raises(ConversionError) as caught:
        convert_synthetic(tmp_path, annotations, **options)
    error = caught.value
    assert error.file == bad_file
    assert re.search(pattern, error.reason), error.reason
    output = tmp_path / "out"
    assert glob.glob(str(output / "train-*.tfrecord")) == []
    assert not os.path.isdir(output) or [n for n in os.listdir(output) if ".tfrecord" in n] == []


@pytest.mark.parametrize("case", sorted(BAD_CASES))
def test_bad_coco_input_skipped_with_skip_invalid(case, tmp_path):
    """skip_invalid: finishes, lists the one bad item, writes the good images;
    nothing read from outside the images folder reaches a record."""
    annotations, bad_file, pattern, options = BAD_CASES[case](tmp_path)
    manifest = convert_synthetic(tmp_path, annotations, skip_invalid=True, **options)["train"]
    assert len(manifest["skipped"]) == 1, manifest["skipped"]
    assert manifest["skipped"][0]["file"] == bad_file
    assert re.search(pattern, manifest["skipped"][0]["reason"])
    examples = assert_good_images_written(tmp_path)
    assert manifest["objects"] == 3
    assert sorted(examples) == ["a.jpg", "b.jpg"]
    if os.path.exists(tmp_path / "outside.jpg"):
        outside = (tmp_path / "outside.jpg").read_bytes()
        for shard in glob.glob(str(tmp_path / "out" / "*.tfrecord")):
            assert outside not in open(shard, "rb").read()


def test_empty_segmentation_is_fine_without_masks(tmp_path):
    """Boxes-only conversion never looks at segmentations."""
    annotations, _, _, _ = _case_empty_segmentation_with_masks(tmp_path)
    manifest = convert_synthetic(tmp_path, annotations)["train"]
    assert manifest["skipped"] == [] and manifest["objects"] == 4
    b = by_filename(read_split(tmp_path / "out"))["b.jpg"]
    assert values(b, schema.OBJECT_CLASS_TEXT) == [b"cat", b"dog"]
    assert boxes_of(b)[1] == pytest.approx((50 / 80, 20 / 60, 60 / 80, 30 / 60), abs=BOX_TOL)
    assert schema.OBJECT_MASK not in b
    assert not any(math.isnan(v) for v in values(b, schema.OBJECT_AREA))


def test_compressed_rle_mask_round_trips(tmp_path):
    """A crowd annotation with a compressed (string) RLE, as pycocotools
    writes it, decodes back to the exact mask it was encoded from."""
    from pycocotools import mask as mask_utils

    truth = np.zeros((60, 80), dtype=np.uint8)
    truth[5:20, 10:30] = 1
    truth[40:55, 60:75] = 1
    rle = mask_utils.encode(np.asfortranarray(truth))
    rle = {"size": [int(v) for v in rle["size"]], "counts": rle["counts"].decode("ascii")}
    annotations = make_coco(tmp_path, extra_annotations=[
        {"id": 80, "image_id": 2, "category_id": 3, "bbox": [10, 5, 65, 50], "area": 525.0, "iscrowd": 1,
         "segmentation": rle}])
    manifest = convert_synthetic(tmp_path, annotations, include_masks=True)["train"]
    assert manifest["skipped"] == []
    b = by_filename(read_split(tmp_path / "out"))["b.jpg"]
    assert values(b, schema.OBJECT_IS_CROWD) == [0, 1]
    np.testing.assert_array_equal(decode_mask_png(values(b, schema.OBJECT_MASK)[1]), truth)


def test_annotations_of_a_refused_image_are_not_misreported(tmp_path):
    """The image entry exists (it was refused for its path); a second
    'not in images' report for its annotation is false."""
    _outside(tmp_path)
    annotations = make_coco(
        tmp_path,
        extra_images=[{"id": 3, "file_name": "../outside.jpg", "width": 32, "height": 32}],
        extra_annotations=[{"id": 81, "image_id": 3, "category_id": 3, "bbox": [1, 1, 5, 5], "area": 25.0,
                            "iscrowd": 0, "segmentation": _square(1, 1, 5)}])
    manifest = convert_synthetic(tmp_path, annotations, skip_invalid=True)["train"]
    reasons = [entry["reason"] for entry in manifest["skipped"]]
    assert any("escapes" in reason for reason in reasons)
    assert not any("image 3, which is not in 'images'" in reason for reason in reasons), reasons
