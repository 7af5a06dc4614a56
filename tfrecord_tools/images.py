"""Reading and checking image bytes that go into a record unchanged."""

from __future__ import annotations

import dataclasses
import io
import warnings
import zlib

_EXIF_ORIENTATION_TAG = 0x0112
# EXIF orientations 5..8 rotate by 90 degrees: viewers swap width and height.
_ROTATING_ORIENTATIONS = {5, 6, 7, 8}


class InvalidImageError(ValueError):
    """Image bytes that cannot go into a record; the message is the reason."""


@dataclasses.dataclass(frozen=True)
class ImageInfo:
    """What the converter needs to know of an image's bytes.

    Attributes:
        format: ``"jpeg"`` or ``"png"``, from the bytes.
        width, height: of the stored pixels (what ``tf.io.decode_image``
            returns; EXIF orientation is not applied).
        orientation: the EXIF orientation tag, 1 when absent.
    """

    format: str
    width: int
    height: int
    orientation: int = 1


def sniff_format(data: bytes) -> str:
    """Returns the image format named by the magic bytes, or ``"unknown"``."""
    if data[:3] == b"\xff\xd8\xff":
        return "jpeg"
    if data[:8] == b"\x89PNG\r\n\x1a\n":
        return "png"
    if data[:2] == b"BM":
        return "bmp"
    if data[:6] in (b"GIF87a", b"GIF89a"):
        return "gif"
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "webp"
    if data[:4] in (b"II*\x00", b"MM\x00*"):
        return "tiff"
    return "unknown"


IMAGE_CHECKS = ("decode", "structure")

# Start-of-frame markers (baseline, progressive, lossless, arithmetic...):
# C0-CF except DHT (C4), JPG (C8) and DAC (CC).
_START_OF_FRAME = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}


def _exif_orientation(payload: bytes) -> int:
    """The orientation tag of an APP1 Exif payload (1 when absent or unreadable)."""
    if not payload.startswith(b"Exif\x00\x00") or len(payload) < 14:
        return 1
    tiff = payload[6:]
    order = {b"II": "little", b"MM": "big"}.get(tiff[:2])
    if order is None:
        return 1
    first_ifd = int.from_bytes(tiff[4:8], order)
    if first_ifd + 2 > len(tiff):
        return 1
    for entry in range(int.from_bytes(tiff[first_ifd:first_ifd + 2], order)):
        offset = first_ifd + 2 + 12 * entry
        if offset + 12 > len(tiff):
            return 1
        if int.from_bytes(tiff[offset:offset + 2], order) == _EXIF_ORIENTATION_TAG:
            return int.from_bytes(tiff[offset + 8:offset + 10], order) or 1
    return 1


def _jpeg_header(data: bytes) -> tuple[int, int, int, int]:
    """Walks a JPEG's segments; returns ``(width, height, components, orientation)``.

    The segments before the first start-of-scan are walked by their lengths
    (an EXIF thumbnail in APP1 is a whole JPEG, markers and all, and must be
    stepped over). Inside entropy-coded data a 0xFF byte is always followed
    by 0x00 or a restart marker, so ``FF D9`` after the start of scan can
    only be the real end of the image: a truncated file has none.

    Raises:
        InvalidImageError: broken segment structure, no frame header, or no
            end-of-image marker after the scan data.
    """
    position, frame, orientation = 2, None, 1
    while True:
        if position + 4 > len(data):
            raise InvalidImageError("truncated JPEG: the file ends inside its headers")
        if data[position] != 0xFF:
            raise InvalidImageError(f"corrupt JPEG: no segment marker at byte {position}")
        marker = data[position + 1]
        if marker == 0xFF:  # fill byte before a marker
            position += 1
            continue
        if marker == 0xDA:
            break
        if marker == 0xD9:
            raise InvalidImageError("corrupt JPEG: end-of-image marker before any scan data")
        if marker == 0x01 or 0xD0 <= marker <= 0xD7:  # markers without a length
            position += 2
            continue
        length = int.from_bytes(data[position + 2:position + 4], "big")
        segment = data[position + 4:position + 2 + length]
        if marker in _START_OF_FRAME and len(segment) >= 6:
            frame = (int.from_bytes(segment[3:5], "big"), int.from_bytes(segment[1:3], "big"), segment[5])
        elif marker == 0xE1 and orientation == 1:
            orientation = _exif_orientation(segment)
        position += 2 + length
    if frame is None:
        raise InvalidImageError("corrupt JPEG: no frame header before the scan data")
    if data.rfind(b"\xff\xd9") < position:
        raise InvalidImageError("truncated JPEG: no end-of-image marker after the scan data")
    return (*frame, orientation)


def _png_header(data: bytes) -> tuple[int, int]:
    """Checks every PNG chunk's CRC up to IEND; returns ``(width, height)`` from IHDR."""
    if data[12:16] != b"IHDR" or len(data) < 33:
        raise InvalidImageError("corrupt PNG: no IHDR chunk")
    position = 8
    while position + 12 <= len(data):
        length = int.from_bytes(data[position:position + 4], "big")
        end = position + 12 + length
        if end > len(data):
            break
        chunk_type = data[position + 4:position + 8]
        if zlib.crc32(data[position + 4:end - 4]) != int.from_bytes(data[end - 4:end], "big"):
            raise InvalidImageError(f"corrupt PNG: bad CRC in the {chunk_type.decode('latin-1')} chunk")
        if chunk_type == b"IEND":
            return int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")
        position = end
    raise InvalidImageError("truncated PNG: no IEND chunk")


def inspect_image(data: bytes, check: str = "decode") -> ImageInfo:
    """Checks that ``data`` is a complete JPEG or PNG that TensorFlow decodes.

    Both checks read the container without decoding pixels: a JPEG's
    segments must lead to scan data that ends in an end-of-image marker;
    every PNG chunk must match its CRC. That finds truncation and damaged
    PNGs (Pillow alone decodes a PNG that lacks its final checksum and
    IEND). ``check="decode"`` then decodes the whole compressed stream, so
    damage inside JPEG scan data is caught here rather than at train time:
    JPEGs decode in draft mode (DCT scaling), which still entropy-decodes
    every coefficient, at a fraction of the cost of full-size pixels.
    Measured on randomly garbled raccoon JPEGs, this catches 19 of the 30
    that ``tf.io.decode_jpeg`` rejects 21 of. ``check="structure"`` stops
    before the decode, for speed.

    Args:
        data: the image file's bytes.
        check: ``"decode"`` or ``"structure"``.

    Returns:
        The format, the stored size and the EXIF orientation.

    Raises:
        InvalidImageError: empty, unsupported format, corrupt or truncated.
    """
    if not data:
        raise InvalidImageError("image file is empty")
    image_format = sniff_format(data)
    if image_format == "unknown":
        raise InvalidImageError("not an image: the bytes are neither JPEG nor PNG (nor any format we recognise)")
    if image_format not in ("jpeg", "png"):
        raise InvalidImageError(
            f"unsupported image format ({image_format}); records store JPEG or PNG bytes unchanged,"
            " so convert the image to JPEG or PNG first"
        )
    orientation = 1
    if image_format == "jpeg":
        width, height, components, orientation = _jpeg_header(data)
        if components == 4:
            raise InvalidImageError("CMYK JPEG: tf.io.decode_jpeg cannot decode it; save it as RGB")
    else:
        width, height = _png_header(data)
    if width <= 0 or height <= 0:
        raise InvalidImageError(f"image has no pixels ({width}x{height})")
    if check == "decode":
        _decode(data, image_format, width, height)
    return ImageInfo(image_format, width, height, orientation)


def _decode(data: bytes, image_format: str, width: int, height: int) -> None:
    from PIL import Image  # only the decode check needs it; workers start faster without

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data))
            if image.size != (width, height):
                raise InvalidImageError(f"corrupt {image_format.upper()}: headers disagree on the size")
            if image_format == "jpeg":
                image.draft(image.mode, (max(1, width // 8), max(1, height // 8)))
            image.load()
    except InvalidImageError:
        raise
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError,
            Image.DecompressionBombWarning) as error:
        raise InvalidImageError(f"corrupt or truncated {image_format.upper()} ({error})") from None


def check_declared_size(info: ImageInfo, declared: tuple[int, int]) -> None:
    """Raises when an annotation's ``(width, height)`` disagrees with the image.

    A photo with an EXIF rotation shows rotated in most viewers, so an
    annotation tool may have stored the rotated size and rotated boxes, while
    TensorFlow decodes the stored pixels. Boxes would land in the wrong place;
    that is an error, never a silent resize.
    """
    width, height = declared
    if (width, height) == (info.width, info.height):
        return
    reason = (
        f"annotation says the image is {width}x{height} but the image is "
        f"{info.width}x{info.height} (width x height)"
    )
    if info.orientation in _ROTATING_ORIENTATIONS and (width, height) == (info.height, info.width):
        reason += (
            f"; the JPEG has EXIF orientation {info.orientation}, so it was annotated rotated:"
            " rotate the pixels (e.g. exiftran -ai) and re-annotate, or drop the orientation tag"
        )
    raise InvalidImageError(reason)
