"""Label maps in the TF OD API text format and JSON."""

from __future__ import annotations

import pytest

from tfrecord_tools.label_map import LabelMap, LabelMapError, load, parse_json, parse_pbtxt

TF_OD_API_STYLE = """
# A label map as the TF Object Detection API ships them.
item {
  name: "/m/01g317"
  id: 1
  display_name: "person"
}
item {
  name: "/m/0199g"
  id: 2
  display_name: 'bicycle'
  keypoints { id: 0 label: "nose" }
}
item: { id: 90 name: 'tooth\\'brush' }
"""


def test_parses_tf_od_api_style_with_comments_nested_blocks_and_gaps():
    label_map = parse_pbtxt(TF_OD_API_STYLE)
    assert label_map.items == [(1, "/m/01g317"), (2, "/m/0199g"), (90, "tooth'brush")]
    assert label_map.display_names == {1: "person", 2: "bicycle"}
    assert label_map.id_of("tooth'brush") == 90 and label_map.name_of(2) == "/m/0199g"
    assert label_map.id_of("cat") is None


def test_raccoon_authors_label_map(raccoon):
    label_map = load(str(raccoon / "training" / "object-detection.pbtxt"))
    assert label_map.items == [(1, "raccoon")]


def test_pbtxt_round_trip(tmp_path):
    label_map = LabelMap([(1, "cat"), (2, "it's"), (5, 'say "hi"')], {5: "Hi"})
    path = str(tmp_path / "label_map.pbtxt")
    label_map.save(path)
    assert load(path) == label_map
    assert load(path).display_names == {5: "Hi"}


def test_from_names_is_contiguous_from_one():
    assert LabelMap.from_names(["b", "a"]).items == [(1, "b"), (2, "a")]


@pytest.mark.parametrize("text, expected", [
    ('{"1": "cat", "2": "dog"}', [(1, "cat"), (2, "dog")]),
    ('[{"id": 3, "name": "cat"}]', [(3, "cat")]),
    ('["cat", "dog"]', [(1, "cat"), (2, "dog")]),
])
def test_json_forms(text, expected):
    assert parse_json(text).items == expected


@pytest.mark.parametrize("text, message", [
    ("item { id: 0 name: 'background' }", "start at 1"),
    ("item { id: 1 name: 'a' } item { id: 1 name: 'b' }", "repeats an id"),
    ("item { id: 1 name: 'a' } item { id: 2 name: 'a' }", "repeats a name"),
    ("item { id: 1 ", "unclosed"),
    ("item { name: 'a' }", "needs an id"),
    ("item { id: one name: 'a' }", "not an integer"),
    ("", "no items"),
    ("label { id: 1 }", "expected 'item'"),
])
def test_bad_label_maps_are_refused_with_a_reason(text, message):
    with pytest.raises(LabelMapError, match=message):
        parse_pbtxt(text)


def test_missing_file_names_the_path(tmp_path):
    with pytest.raises(LabelMapError, match="nothere.pbtxt"):
        load(str(tmp_path / "nothere.pbtxt"))
