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

import functools
import struct
from typing import Iterable, Union

FeatureValue = Union[list[bytes], list[float], list[int]]

BYTES, FLOAT, INT64 = "bytes", "float", "int64"
_KIND_FIELD = {BYTES: 1, FLOAT: 2, INT64: 3}
_FIELD_KIND = {number: kind for kind, number in _KIND_FIELD.items()}
_LENGTH_DELIMITED = 2


_SMALL_VARINTS = [bytes((value,)) for value in range(128)]


def _varint(value: int) -> bytes:
    if 0 <= value < 128:
        return _SMALL_VARINTS[value]
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


_FIELD_1 = _varint(1 << 3 | _LENGTH_DELIMITED)
_FIELD_2 = _varint(2 << 3 | _LENGTH_DELIMITED)
_KIND_TAG = {kind: _varint(number << 3 | _LENGTH_DELIMITED) for kind, number in _KIND_FIELD.items()}


@functools.lru_cache(maxsize=4096)
def _entry_key(key: str) -> bytes:
    """The map entry's key field followed by the tag of its value field."""
    return _delimited(1, key.encode("utf-8")) + _FIELD_2


def _list_parts(kind: str, values: Iterable) -> tuple[list[bytes], int]:
    """The body of a BytesList/FloatList/Int64List as parts, and its length."""
    if kind == BYTES:
        parts = []
        for value in values:
            parts.append(_FIELD_1 + _varint(len(value)))
            parts.append(value)
    elif kind == FLOAT:
        values = list(values)
        packed = struct.pack(f"<{len(values)}f", *values)
        parts = [_FIELD_1 + _varint(len(packed)), packed] if values else []
    elif kind == INT64:
        packed = b"".join([_varint(int(value)) for value in values])
        parts = [_FIELD_1 + _varint(len(packed)), packed] if packed else []
    else:
        raise ValueError(f"unknown feature kind {kind!r}")
    return parts, sum(map(len, parts))


def encode_example(features: dict[str, tuple[str, Iterable]]) -> bytes:
    """Serialises a tf.train.Example.

    The message is gathered as a list of parts and joined once, so the image
    bytes are copied a single time however deep they sit in the message.

    Args:
        features: key -> ``(kind, values)`` with kind ``"bytes"``, ``"float"``
            or ``"int64"``; a scalar feature is a one-element list.

    Returns:
        The serialised Example, deterministic for equal inputs.
    """
    body: list[bytes] = []
    total = 0
    for key in sorted(features):
        kind, values = features[key]
        parts, list_length = _list_parts(kind, values)
        feature_head = _KIND_TAG[kind] + _varint(list_length)
        feature_length = len(feature_head) + list_length
        entry_tail = _entry_key(key) + _varint(feature_length) + feature_head
        entry_length = len(entry_tail) - len(feature_head) + feature_length
        head = _FIELD_1 + _varint(entry_length) + entry_tail
        body.append(head)
        body.extend(parts)
        total += len(head) + list_length
    return b"".join([_FIELD_1, _varint(total), *body])


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
