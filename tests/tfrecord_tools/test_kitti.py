"""KITTI ``label_2`` conversion, checked against the label, calib and PNG files themselves.

Expected values are parsed here from the source files (label lines split by
hand, PNG sizes read with PIL, the calib file's ``P2:`` line read directly),
never taken from the converter's own output.
"""

from __future__ import annotations

import hashlib
import os
import re

import pytest
from PIL import Image

import tfrecord_tools
from tfrecord_tools import schema

from .helpers import by_filename, image_bytes, read_split, values, write

STEMS = ("000000", "000001", "000002")
# The 15 columns of a KITTI label_2 line, in file order.
COLUMNS = ("type", "truncated", "occluded", "alpha", "x1", "y1", "x2", "y2",
           "h", "w", "l", "x", "y", "z", "rot_y")
# Record key of each per-object float column the converter carries over.
FLOAT_KEYS = {
    "alpha": schema.OBJECT_ALPHA, "occluded": schema.OBJECT_OCCLUDED,
    "h": schema.OBJECT_3D_HEIGHT, "w": schema.OBJECT_3D_WIDTH, "l": schema.OBJECT_3D_LENGTH,
    "x": schema.OBJECT_3D_X, "y": schema.OBJECT_3D_Y, "z": schema.OBJECT_3D_Z, "rot_y": schema.OBJECT_3D_ROT_Y,
}
F32 = dict(rel=1e-6, abs=1e-5)  # float32 storage


# --- independent readers of the source files -------------------------------------------------

def _root(kitti_3) -> str:
    """The folder with image_2/, label_2/ and calib/ (the dataset keeps KITTI's training/ level)."""
    return str(kitti_3 / "training")


def _label_rows(root: str, stem: str) -> list[dict]:
    """The label file's lines as dicts of column -> value (type stays a string)."""
    rows = []
    with open(os.path.join(root, "label_2", stem + ".txt"), encoding="utf-8") as stream:
        for line in stream:
            parts = line.split()
            if parts:
                assert len(parts) == 15, line
                rows.append({"type": parts[0], **{name: float(v) for name, v in zip(COLUMNS[1:], parts[1:])}})
    return rows


def _png_size(root: str, stem: str) -> tuple[int, int]:
    with Image.open(os.path.join(root, "image_2", stem + ".png")) as image:
        assert image.format == "PNG"
        return image.size


def _p2(root: str, stem: str) -> list[float]:
    with open(os.path.join(root, "calib", stem + ".txt"), encoding="utf-8") as stream:
        for line in stream:
            if line.split(":")[0] == "P2":
                return [float(v) for v in line.split(":", 1)[1].split()]
    raise AssertionError("no P2 line")


def _pbtxt_items(output_dir) -> list[tuple[int, str]]:
    """(id, name) pairs of the written label_map.pbtxt, read with a regex."""
    with open(os.path.join(str(output_dir), "label_map.pbtxt"), encoding="utf-8") as stream:
        text = stream.read()
    return [(int(i), name) for i, name in re.findall(r"id:\s*(\d+)\s*name:\s*'([^']*)'", text)]


def _texts(example) -> list[str]:
    return [t.decode() for t in values(example, schema.OBJECT_CLASS_TEXT)]


def _convert(output_dir, root, **options):
    options.setdefault("workers", 1)
    options.setdefault("progress", False)
    return tfrecord_tools.convert_kitti(str(output_dir), kitti_root=root, **options)["train"]


# --- real frames -----------------------------------------------------------------------------

def test_png_bytes_pass_through_unchanged_with_their_real_size(kitti_3, tmp_path):
    root = _root(kitti_3)
    _convert(tmp_path, root)
    records = by_filename(read_split(tmp_path))
    assert sorted(records) == [stem + ".png" for stem in STEMS]
    sizes = set()
    for stem in STEMS:
        example = records[stem + ".png"]
        with open(os.path.join(root, "image_2", stem + ".png"), "rb") as stream:
            data = stream.read()
        width, height = _png_size(root, stem)
        sizes.add((width, height))
        assert values(example, schema.IMAGE_ENCODED) == [data]
        assert values(example, schema.IMAGE_FORMAT) == [b"png"]
        assert values(example, schema.IMAGE_KEY_SHA256) == [hashlib.sha256(data).hexdigest().encode()]
        assert values(example, schema.IMAGE_SOURCE_ID) == [stem.encode()]
        assert (values(example, schema.IMAGE_WIDTH), values(example, schema.IMAGE_HEIGHT)) == ([width], [height])
    assert sizes == {(1242, 375), (1224, 370)}  # SOURCE.txt: the frames do not all share one size


def test_dontcare_is_dropped_and_counted(kitti_3, tmp_path):
    root = _root(kitti_3)
    rows = {stem: _label_rows(root, stem) for stem in STEMS}
    dontcare = sum(row["type"] == "DontCare" for stem in STEMS for row in rows[stem])
    assert dontcare == 4  # SOURCE.txt
    manifest = _convert(tmp_path, root)
    assert manifest["dropped"]["DontCare"] == dontcare
    assert manifest["skipped"] == []
    records = by_filename(read_split(tmp_path))
    for stem in STEMS:
        assert _texts(records[stem + ".png"]) == [r["type"] for r in rows[stem] if r["type"] != "DontCare"]
    assert manifest["objects"] == sum(len(rows[s]) for s in STEMS) - dontcare
    assert "DontCare" not in [name for _, name in _pbtxt_items(tmp_path)]
    assert "DontCare" not in manifest["classes"]


def test_keep_dontcare_keeps_them_as_a_class(kitti_3, tmp_path):
    root = _root(kitti_3)
    manifest = _convert(tmp_path, root, keep_dontcare=True)
    items = dict((name, item_id) for item_id, name in _pbtxt_items(tmp_path))
    assert "DontCare" in items
    assert "DontCare" not in manifest["dropped"]
    records = by_filename(read_split(tmp_path))
    for stem in STEMS:
        example = records[stem + ".png"]
        expected = [r["type"] for r in _label_rows(root, stem)]
        assert _texts(example) == expected
        assert values(example, schema.OBJECT_CLASS_LABEL) == [items[name] for name in expected]
    assert manifest["classes"]["DontCare"] == 4


def test_classes_keep_only_those_and_define_the_label_map(kitti_3, tmp_path):
    root = _root(kitti_3)
    manifest = _convert(tmp_path, root, classes=["Car", "Pedestrian"])
    assert _pbtxt_items(tmp_path) == [(1, "Car"), (2, "Pedestrian")]
    records = by_filename(read_split(tmp_path))
    assert len(records) == 3  # frames keep their image even when every object is filtered out
    counts = {"Car": 0, "Pedestrian": 0}
    for stem in STEMS:
        example = records[stem + ".png"]
        expected = [r["type"] for r in _label_rows(root, stem) if r["type"] in counts]
        assert _texts(example) == expected
        assert values(example, schema.OBJECT_CLASS_LABEL) == [1 if name == "Car" else 2 for name in expected]
        for name in expected:
            counts[name] += 1
    assert counts == {"Car": 2, "Pedestrian": 1}  # SOURCE.txt
    assert manifest["classes"] == counts


def test_dontcare_listed_in_classes_with_keep_dontcare_is_one_class(kitti_3, tmp_path):
    root = _root(kitti_3)
    manifest = _convert(tmp_path, root, classes=["Car", "DontCare"], keep_dontcare=True)
    assert _pbtxt_items(tmp_path) == [(1, "Car"), (2, "DontCare")]
    records = by_filename(read_split(tmp_path))
    assert _texts(records["000001.png"]) == ["Car"] + ["DontCare"] * 4
    assert manifest["classes"] == {"Car": 2, "DontCare": 4}


def test_every_object_carries_its_label_columns_and_the_calibration(kitti_3, tmp_path):
    root = _root(kitti_3)
    _convert(tmp_path, root)
    records = by_filename(read_split(tmp_path))
    for stem in STEMS:
        example = records[stem + ".png"]
        width, height = _png_size(root, stem)
        rows = [r for r in _label_rows(root, stem) if r["type"] != "DontCare"]
        assert _texts(example) == [r["type"] for r in rows]
        expected_boxes = {
            schema.OBJECT_XMIN: [r["x1"] / width for r in rows],
            schema.OBJECT_YMIN: [r["y1"] / height for r in rows],
            schema.OBJECT_XMAX: [r["x2"] / width for r in rows],
            schema.OBJECT_YMAX: [r["y2"] / height for r in rows],
        }
        for key, expected in expected_boxes.items():
            assert values(example, key) == pytest.approx(expected, **F32), (stem, key)
        for column, key in FLOAT_KEYS.items():
            assert values(example, key) == pytest.approx([r[column] for r in rows], **F32), (stem, column)
        assert values(example, schema.OBJECT_TRUNCATED) == [int(r["truncated"] > 0) for r in rows]
        p2 = _p2(root, stem)
        assert len(p2) == 12
        assert values(example, schema.IMAGE_CALIB_P2) == pytest.approx(p2, rel=1e-6)


# --- synthetic KITTI folders -----------------------------------------------------------------

def _line(name="Car", truncated="0.00", box=(10, 8, 40, 30), alpha="1.50") -> str:
    x1, y1, x2, y2 = box
    return f"{name} {truncated} 0 {alpha} {x1} {y1} {x2} {y2} 1.50 1.60 3.90 1.00 1.50 20.00 0.10"


def _make_kitti(root, frames: dict) -> str:
    """frames: stem -> label text (None: no label file). An image is written for every stem
    whose label text is not the marker ``"<no image>"``."""
    for index, (stem, text) in enumerate(sorted(frames.items())):
        if text == "<no image>":
            write(os.path.join(root, "label_2", stem + ".txt"), _line() + "\n")
            continue
        write(os.path.join(root, "image_2", stem + ".png"), image_bytes(64, 48, fmt="PNG", seed=index))
        if text is not None:
            write(os.path.join(root, "label_2", stem + ".txt"), text)
    return str(root)


def test_truncated_flag_is_one_iff_truncation_is_positive(tmp_path):
    lines = [_line(truncated=t) for t in ("0.00", "0.25", "1.00", "0.00")]
    root = _make_kitti(tmp_path / "kitti", {"000000": "\n".join(lines) + "\n"})
    _convert(tmp_path / "out", root)
    (example,) = read_split(tmp_path / "out")
    assert values(example, schema.OBJECT_TRUNCATED) == [0, 1, 1, 0]
    assert schema.IMAGE_CALIB_P2 not in example  # no calib/ folder: no P2 feature


def _bad(case: str, root):
    """Plants one bad input next to a good frame; returns (frames, offending path)."""
    good = _line() + "\n" + _line("Pedestrian", box=(5, 5, 20, 40)) + "\n"
    if case == "14 columns":
        text = _line() + "\n" + " ".join(_line("Van").split()[:14]) + "\n"
        return {"000000": good, "000001": text}, os.path.join(root, "label_2", "000001.txt")
    if case == "label without image":
        return {"000000": good, "000001": "<no image>"}, os.path.join(root, "label_2", "000001.txt")
    if case == "image without label":
        return {"000000": good, "000001": None}, os.path.join(root, "image_2", "000001.png")
    if case == "non-numeric column":
        return {"000000": good, "000001": _line() + "\n" + _line(alpha="abc") + "\n"}, \
            os.path.join(root, "label_2", "000001.txt")
    raise AssertionError(case)


BAD_CASES = ["14 columns", "label without image", "image without label", "non-numeric column"]


@pytest.mark.parametrize("case", BAD_CASES)
def test_bad_input_stops_the_conversion_naming_the_file(tmp_path, case):
    root = str(tmp_path / "kitti")
    frames, offending = _bad(case, root)
    _make_kitti(root, frames)
    out = tmp_path / "out"
    with pytest.raises(tfrecord_tools.ConversionError) as error:
        _convert(out, root)
    assert offending in str(error.value)
    assert error.value.file.startswith(offending)
    assert not [name for name in (os.listdir(out) if out.is_dir() else []) if name.endswith(".tfrecord")]


@pytest.mark.parametrize("case", BAD_CASES)
def test_bad_input_is_listed_with_skip_invalid(tmp_path, case):
    root = str(tmp_path / "kitti")
    frames, offending = _bad(case, root)
    _make_kitti(root, frames)
    manifest = _convert(tmp_path / "out", root, skip_invalid=True)
    assert [entry["file"] for entry in manifest["skipped"]] == [offending]
    assert manifest["skipped"][0]["reason"]
    records = by_filename(read_split(tmp_path / "out"))
    # The good frame is converted in full.
    assert _texts(records["000000.png"]) == ["Car", "Pedestrian"]
    if case in ("14 columns", "non-numeric column"):
        # Only the bad line goes; the good line of the same file stays.
        assert _texts(records["000001.png"]) == ["Car"]
        assert "object" in manifest["skipped"][0]
    else:
        assert sorted(records) == ["000000.png"]
    if case == "14 columns":
        assert "14" in manifest["skipped"][0]["reason"]


def test_calib_without_p2_is_reported(tmp_path):
    root = _make_kitti(tmp_path / "kitti", {"000000": _line() + "\n"})
    calib = write(os.path.join(root, "calib", "000000.txt"), "P0: " + " ".join(["1.0"] * 12) + "\n")
    with pytest.raises(tfrecord_tools.ConversionError) as error:
        _convert(tmp_path / "out", root)
    assert calib in str(error.value)
