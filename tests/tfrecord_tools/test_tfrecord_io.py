"""TFRecord framing written without TensorFlow, read by TensorFlow, and back."""

from __future__ import annotations

import os

import pytest

from tfrecord_tools.tfrecord_io import CorruptRecordError, masked_crc32c, read_records, write_record

PAYLOADS = [b"", b"a", os.urandom(1000), os.urandom(70_000)]


def _write(path, payloads):
    with open(path, "wb") as stream:
        for payload in payloads:
            write_record(stream, payload)


def test_crc32c_check_value():
    # The CRC-32C of b"123456789" is 0xE3069283 (RFC 3720 / the Castagnoli check value);
    # TFRecord masks it as ((crc >> 15 | crc << 17) + 0xa282ead8) mod 2**32.
    crc = 0xE3069283
    expected = (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF
    assert masked_crc32c(b"123456789") == expected


def test_tensorflow_reads_our_records(tmp_path):
    tf = pytest.importorskip("tensorflow")
    path = str(tmp_path / "ours.tfrecord")
    _write(path, PAYLOADS)
    read = [record.numpy() for record in tf.data.TFRecordDataset(path)]
    assert read == PAYLOADS


def test_we_read_tensorflow_records(tmp_path):
    tf = pytest.importorskip("tensorflow")
    path = str(tmp_path / "theirs.tfrecord")
    with tf.io.TFRecordWriter(path) as writer:
        for payload in PAYLOADS:
            writer.write(payload)
    assert list(read_records(path)) == PAYLOADS
    ours = str(tmp_path / "ours.tfrecord")
    _write(ours, PAYLOADS)
    assert open(ours, "rb").read() == open(path, "rb").read()  # byte-identical framing


@pytest.mark.parametrize("damage", ["flip_data", "flip_length", "truncate"])
def test_damage_is_detected_with_its_offset(tmp_path, damage):
    path = tmp_path / "damaged.tfrecord"
    _write(path, PAYLOADS)
    data = bytearray(path.read_bytes())
    second = 16 + len(PAYLOADS[0])  # the second record starts here
    if damage == "flip_data":
        data[second + 12] ^= 0x01
    elif damage == "flip_length":
        data[second] ^= 0x01
    else:
        data = data[: len(data) - 10]
    path.write_bytes(bytes(data))
    with pytest.raises(CorruptRecordError, match="at byte"):
        list(read_records(str(path)))
