"""Box validation (clip within 1 px, reject beyond) and image checks, on hand-made cases."""

from __future__ import annotations

import io
import math

import pytest
from PIL import Image

from tfrecord_tools.boxes import InvalidBoxError, validate_box
from tfrecord_tools.images import ImageInfo, InvalidImageError, check_declared_size, inspect_image, sniff_format

from .helpers import image_bytes


@pytest.mark.parametrize("box, expected", [
    ((10, 20, 30, 40), (10, 20, 30, 40)),
    ((-1, -0.5, 101, 51), (0, 0, 100, 50)),  # overhang of at most 1 px is clipped
    ((0, 0, 100, 50), (0, 0, 100, 50)),
])
def test_valid_boxes_are_kept_and_clipped(box, expected):
    assert validate_box(box, 100, 50) == expected


@pytest.mark.parametrize("box, reason", [
    ((30, 20, 10, 40), "inverted"),
    ((10, 40, 30, 20), "inverted"),
    ((10, 20, 10, 40), "zero-area"),
    ((100.5, 10, 101, 20), "zero-area"),  # inside the tolerance but nothing left after clipping
    ((-1.5, 0, 10, 10), "outside"),
    ((0, 0, 102, 10), "outside"),
    ((0, 0, 10, 51.01), "outside"),
    ((0, 0, math.nan, 10), "non-finite"),
    ((0, 0, math.inf, 10), "non-finite"),
])
def test_invalid_boxes_are_rejected_with_the_reason(box, reason):
    with pytest.raises(InvalidBoxError, match=reason):
        validate_box(box, 100, 50)


@pytest.mark.parametrize("fmt, name", [("JPEG", "jpeg"), ("PNG", "png"), ("BMP", "bmp"), ("GIF", "gif"), ("WEBP", "webp"), ("TIFF", "tiff")])
def test_format_is_sniffed_from_the_bytes(fmt, name):
    assert sniff_format(image_bytes(fmt=fmt, mode="RGB" if fmt != "GIF" else "L")) == name


def test_jpeg_and_png_report_their_stored_size():
    assert inspect_image(image_bytes(64, 48, "JPEG")) == ImageInfo("jpeg", 64, 48, 1)
    assert inspect_image(image_bytes(33, 17, "PNG", mode="L")) == ImageInfo("png", 33, 17, 1)


@pytest.mark.parametrize("data, reason", [
    (b"", "empty"),
    (b"\xff\xd8\xff\xe0" + b"\x00" * 100, "corrupt JPEG: no segment marker"),
    (image_bytes(64, 48, "JPEG")[:300], "truncated JPEG"),
    (image_bytes(64, 48, "PNG")[:200], "truncated PNG"),
    (image_bytes(fmt="BMP"), "unsupported image format \\(bmp\\)"),
    (b"not an image at all", "not an image"),
    (image_bytes(fmt="JPEG", mode="CMYK"), "CMYK"),
])
def test_bad_images_are_refused_with_the_reason(data, reason):
    with pytest.raises(InvalidImageError, match=reason):
        inspect_image(data)


def _exif_rotated_jpeg(width, height, orientation):
    image = Image.frombytes("RGB", (width, height), bytes(width * height * 3))
    exif = Image.Exif()
    exif[0x0112] = orientation
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", exif=exif)
    return buffer.getvalue()


def test_exif_rotated_photo_annotated_rotated_is_explained():
    info = inspect_image(_exif_rotated_jpeg(80, 60, 6))
    assert (info.width, info.height, info.orientation) == (80, 60, 6)
    check_declared_size(info, (80, 60))  # annotated on the stored pixels: fine
    with pytest.raises(InvalidImageError, match="EXIF orientation 6"):
        check_declared_size(info, (60, 80))
    with pytest.raises(InvalidImageError, match="annotation says the image is 81x60") as error:
        check_declared_size(info, (81, 60))
    assert "EXIF" not in str(error.value)


def _jpeg_with_thumbnail() -> bytes:
    """A JPEG whose EXIF carries a thumbnail: a complete JPEG (with its own FF D9) before the scan."""
    image = Image.frombytes("RGB", (64, 48), bytes(range(256)) * 36)
    exif = Image.Exif()
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", exif=exif.tobytes())
    data = buffer.getvalue()
    thumbnail = image_bytes(16, 12)
    # APP1 segment holding a whole JPEG, inserted right after SOI.
    app1 = b"\xff\xe1" + (len(thumbnail) + 2).to_bytes(2, "big") + thumbnail
    return data[:2] + app1 + data[2:]


@pytest.mark.parametrize("check", ["decode", "structure"])
def test_both_checks_accept_sound_images(check):
    assert inspect_image(image_bytes(64, 48, "JPEG"), check).format == "jpeg"
    assert inspect_image(image_bytes(64, 48, "PNG"), check).format == "png"
    assert inspect_image(image_bytes(64, 48, "JPEG") + b"camera trailer", check).width == 64
    assert inspect_image(_jpeg_with_thumbnail(), check).width == 64


@pytest.mark.parametrize("check", ["decode", "structure"])
def test_both_checks_find_truncation(check):
    jpeg, png = image_bytes(64, 48, "JPEG"), image_bytes(64, 48, "PNG")
    for data in (jpeg[: len(jpeg) - 40], png[: len(png) - 20]):
        with pytest.raises(InvalidImageError, match="truncated"):
            inspect_image(data, check)
    # The thumbnail's own end marker sits before the scan: truncation is still found.
    thumbnailed = _jpeg_with_thumbnail()
    with pytest.raises(InvalidImageError, match="truncated"):
        inspect_image(thumbnailed[: len(thumbnailed) - 40], check)


def test_structure_check_finds_a_damaged_png_chunk():
    data = bytearray(image_bytes(64, 48, "PNG"))
    data[60] ^= 0xFF  # inside IDAT
    with pytest.raises(InvalidImageError, match="bad CRC in the IDAT chunk"):
        inspect_image(bytes(data), "structure")


@pytest.mark.parametrize("order", ["little", "big"])
def test_exif_orientation_is_read_in_either_byte_order(order):
    """A hand-built APP1: TIFF header, IFD0 with two entries, orientation 8 second."""
    mark = b"II" if order == "little" else b"MM"
    tiff = mark + (42).to_bytes(2, order) + (8).to_bytes(4, order) + (2).to_bytes(2, order)
    tiff += (0x010F).to_bytes(2, order) + (2).to_bytes(2, order) + (4).to_bytes(4, order) + b"abc\x00"  # Make
    tiff += (0x0112).to_bytes(2, order) + (3).to_bytes(2, order) + (1).to_bytes(4, order) + (8).to_bytes(2, order) + b"\x00\x00"
    payload = b"Exif\x00\x00" + tiff + (0).to_bytes(4, order)
    plain = image_bytes(40, 30)
    data = plain[:2] + b"\xff\xe1" + (len(payload) + 2).to_bytes(2, "big") + payload + plain[2:]
    for check in ("structure", "decode"):
        assert inspect_image(data, check).orientation == 8
