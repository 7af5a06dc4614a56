"""tf.train.Example encoding and decoding without TensorFlow.

Importing TensorFlow costs seconds and pulls in Keras; the converter's worker
processes only need to serialise a handful of lists, so they write the
protocol-buffer wire format directly. The bytes parse with
``tf.train.Example.FromString`` (tests check this against TensorFlow itself).

Message layout (tensorflow/core/example/{example,feature}.proto):
``Example{1: Features}``, ``Features{1: map<string, Feature>}`` (each entry a
message ``{1: key, 2: Feature}``), ``Feature`` a oneof of ``1: BytesList``,
``2: FloatList``, ``3: Int64List``, each with its values in field 1 (floats
and ints packed). Map entries are written sorted by key, so the same features
always give the same bytes.
"""

from __future__ import annotations

import struct
from typing import Iterable, Union

FeatureValue = Union[list[bytes], list[float], list[int]]

BYTES, FLOAT, INT64 = "bytes", "float", "int64"
_KIND_FIELD = {BYTES: 1, FLOAT: 2, INT64: 3}
_FIELD_KIND = {number: kind for kind, number in _KIND_FIELD.items()}
_LENGTH_DELIMITED = 2


def _varint(value: int) -> bytes:
    if value < 0:  # int64 negatives are ten-byte two's complement varints
        value += 1 << 64
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def _delimited(field: int, payload: bytes) -> bytes:
    return _varint(field << 3 | _LENGTH_DELIMITED) + _varint(len(payload)) + payload


def _encode_feature(kind: str, values: Iterable) -> bytes:
    if kind == BYTES:
        inner = b"".join(_delimited(1, value) for value in values)
    elif kind == FLOAT:
        values = list(values)
        inner = _delimited(1, struct.pack(f"<{len(values)}f", *values)) if values else b""
    elif kind == INT64:
        packed = b"".join(_varint(int(value)) for value in values)
        inner = _delimited(1, packed) if packed else b""
    else:
        raise ValueError(f"unknown feature kind {kind!r}")
    return _delimited(_KIND_FIELD[kind], inner)


def encode_example(features: dict[str, tuple[str, Iterable]]) -> bytes:
    """Serialises a tf.train.Example.

    Args:
        features: key -> ``(kind, values)`` with kind ``"bytes"``, ``"float"``
            or ``"int64"``; a scalar feature is a one-element list.

    Returns:
        The serialised Example, deterministic for equal inputs.
    """
    entries = b"".join(
        _delimited(1, _delimited(1, key.encode("utf-8")) + _delimited(2, _encode_feature(kind, values)))
        for key, (kind, values) in sorted(features.items())
    )
    return _delimited(1, entries)


def _read_varint(data: bytes, pos: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        if pos >= len(data):
            raise ValueError("truncated varint")
        byte = data[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return result, pos
        shift += 7
        if shift > 63:
            raise ValueError("varint too long")


def _fields(data: bytes):
    """Yields ``(field_number, wire_type, value)``; value is bytes or int."""
    pos = 0
    while pos < len(data):
        key, pos = _read_varint(data, pos)
        field, wire = key >> 3, key & 7
        if wire == 0:
            value, pos = _read_varint(data, pos)
        elif wire == 1:
            value, pos = data[pos:pos + 8], pos + 8
        elif wire == 2:
            length, pos = _read_varint(data, pos)
            value, pos = data[pos:pos + length], pos + length
        elif wire == 5:
            value, pos = data[pos:pos + 4], pos + 4
        else:
            raise ValueError(f"unsupported wire type {wire}")
        if pos > len(data):
            raise ValueError("truncated message")
        yield field, wire, value


def _signed64(value: int) -> int:
    return value - (1 << 64) if value >= 1 << 63 else value


def _decode_feature(data: bytes) -> tuple[str, FeatureValue]:
    kind, values = BYTES, []
    for field, _, inner in _fields(data):
        kind = _FIELD_KIND.get(field)
        if kind is None:
            raise ValueError(f"unknown Feature field {field}")
        values = []
        for _, wire, value in _fields(inner):
            if kind == BYTES:
                values.append(bytes(value))
            elif kind == FLOAT:
                if wire == 5:  # unpacked float
                    values.extend(struct.unpack("<f", value))
                else:
                    values.extend(struct.unpack(f"<{len(value) // 4}f", value))
            elif wire == 0:  # unpacked int64
                values.append(_signed64(value))
            else:
                pos = 0
                while pos < len(value):
                    number, pos = _read_varint(value, pos)
                    values.append(_signed64(number))
    return kind, values


def decode_example(data: bytes) -> dict[str, tuple[str, FeatureValue]]:
    """Parses a serialised tf.train.Example into key -> ``(kind, values)``.

    Raises:
        ValueError: the bytes are not a well-formed Example.
    """
    features: dict[str, tuple[str, FeatureValue]] = {}
    for field, wire, features_msg in _fields(data):
        if field != 1 or wire != 2:
            continue
        for entry_field, _, entry in _fields(features_msg):
            if entry_field != 1:
                continue
            key, feature = "", b""
            for part_field, _, part in _fields(entry):
                if part_field == 1:
                    key = bytes(part).decode("utf-8")
                elif part_field == 2:
                    feature = part
            features[key] = _decode_feature(feature)
    return features
