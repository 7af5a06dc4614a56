"""Our hand-written tf.Example wire format against TensorFlow's own protobuf."""

from __future__ import annotations

import pytest

from tfrecord_tools.tf_example import BYTES, FLOAT, INT64, decode_example, encode_example

FEATURES = {
    "image/encoded": (BYTES, [bytes(range(256)) * 3]),
    "image/height": (INT64, [375]),
    "image/object/class/label": (INT64, [1, 7, 300, 2**40, -1, -(2**63)]),
    "image/object/bbox/xmin": (FLOAT, [0.0, 0.125, 1.0, 1e-7]),
    "image/object/class/text": (BYTES, ["raccoon".encode(), "Straße".encode(), b""]),
    "image/object/mask": (BYTES, []),
    "image/object/area": (FLOAT, []),
    "image/object/is_crowd": (INT64, []),
    "ключ/unicode": (INT64, [0]),
}


@pytest.fixture(scope="module")
def tf():
    tensorflow = pytest.importorskip("tensorflow")
    return tensorflow


def _tf_values(feature):
    kind = feature.WhichOneof("kind")
    if kind == "bytes_list":
        return BYTES, list(feature.bytes_list.value)
    if kind == "float_list":
        return FLOAT, list(feature.float_list.value)
    return INT64, list(feature.int64_list.value)


def test_tensorflow_parses_our_bytes_to_the_same_values(tf):
    example = tf.train.Example.FromString(encode_example(FEATURES))
    assert set(example.features.feature) == set(FEATURES)
    for key, (kind, values) in FEATURES.items():
        parsed_kind, parsed = _tf_values(example.features.feature[key])
        assert parsed_kind == kind, key  # even an empty list keeps its type
        if kind == FLOAT:
            assert parsed == pytest.approx(values, rel=1e-7, abs=0), key
        else:
            assert parsed == values, key


def test_tensorflow_parse_single_example_reads_typed_features(tf):
    spec = {
        "image/height": tf.io.FixedLenFeature([], tf.int64),
        "image/object/bbox/xmin": tf.io.VarLenFeature(tf.float32),
        "image/object/mask": tf.io.VarLenFeature(tf.string),
    }
    parsed = tf.io.parse_single_example(encode_example(FEATURES), spec)
    assert int(parsed["image/height"]) == 375
    assert tf.sparse.to_dense(parsed["image/object/bbox/xmin"]).numpy().tolist() == pytest.approx([0.0, 0.125, 1.0, 1e-7])
    assert parsed["image/object/mask"].values.shape == (0,)


def test_our_decoder_reads_what_tensorflow_serialises(tf):
    example = tf.train.Example()
    feature = example.features.feature
    feature["a/bytes"].bytes_list.value.extend([b"x", b"", b"\x00\xff"])
    feature["a/float"].float_list.value.extend([1.5, -2.25])
    feature["a/int"].int64_list.value.extend([0, -5, 2**62])
    decoded = decode_example(example.SerializeToString())
    assert decoded == {
        "a/bytes": (BYTES, [b"x", b"", b"\x00\xff"]),
        "a/float": (FLOAT, [1.5, -2.25]),
        "a/int": (INT64, [0, -5, 2**62]),
    }


def test_round_trip_and_determinism():
    first = encode_example(FEATURES)
    reordered = dict(reversed(list(FEATURES.items())))
    assert encode_example(reordered) == first  # map entries are sorted: order of insertion does not matter
    decoded = decode_example(first)
    for key, (kind, values) in FEATURES.items():
        assert decoded[key][0] == kind
        assert decoded[key][1] == (pytest.approx(values) if kind == FLOAT else values)


def test_decoder_rejects_truncated_bytes():
    data = encode_example(FEATURES)
    with pytest.raises(ValueError):
        decode_example(data[: len(data) // 2])
