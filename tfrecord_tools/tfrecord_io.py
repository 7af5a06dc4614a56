"""TFRecord file framing, read and written without TensorFlow.

Each record is ``uint64 length | uint32 masked_crc32c(length) | data |
uint32 masked_crc32c(data)``, little-endian, the format
``tf.data.TFRecordDataset`` reads (it checks both checksums).
"""

from __future__ import annotations

import struct
from typing import BinaryIO, Iterator

import google_crc32c

_MASK_DELTA = 0xA282EAD8


def masked_crc32c(data: bytes) -> int:
    """The CRC32C of ``data``, rotated and offset as TFRecord stores it."""
    crc = google_crc32c.value(data)
    return (((crc >> 15) | (crc << 17)) + _MASK_DELTA) & 0xFFFFFFFF


def frame_record(data: bytes) -> bytes:
    """One record as it sits in a TFRecord file: length, checksums and data."""
    header = struct.pack("<Q", len(data))
    return b"".join((header, struct.pack("<I", masked_crc32c(header)), data, struct.pack("<I", masked_crc32c(data))))


def write_record(stream: BinaryIO, data: bytes) -> None:
    """Appends one framed record to ``stream``."""
    stream.write(frame_record(data))


class CorruptRecordError(ValueError):
    """A TFRecord file whose framing or checksums are wrong."""


def read_records(path: str) -> Iterator[bytes]:
    """Yields the records of one TFRecord file, checking both checksums.

    Raises:
        CorruptRecordError: naming the byte offset of the first bad record.
    """
    with open(path, "rb") as stream:
        offset = 0
        while True:
            header = stream.read(8)
            if not header:
                return
            if len(header) < 8:
                raise CorruptRecordError(f"truncated record header at byte {offset}")
            (length,) = struct.unpack("<Q", header)
            header_crc = stream.read(4)
            if len(header_crc) < 4 or struct.unpack("<I", header_crc)[0] != masked_crc32c(header):
                raise CorruptRecordError(f"bad length checksum at byte {offset}")
            data = stream.read(length)
            data_crc = stream.read(4)
            if len(data) < length or len(data_crc) < 4:
                raise CorruptRecordError(f"truncated record at byte {offset}")
            if struct.unpack("<I", data_crc)[0] != masked_crc32c(data):
                raise CorruptRecordError(f"bad data checksum at byte {offset}")
            yield data
            offset += 16 + length
