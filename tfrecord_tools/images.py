"""Reading and checking image bytes that go into a record unchanged."""

from __future__ import annotations

import dataclasses
import io
import warnings

from PIL import Image

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


def inspect_image(data: bytes) -> ImageInfo:
    """Checks that ``data`` is a complete JPEG or PNG that TensorFlow decodes.

    The whole compressed stream is decoded, so truncated and corrupt files are
    caught here rather than at train time. JPEGs decode in draft mode (DCT
    scaling): every coefficient is still entropy-decoded, which is what finds
    truncation, at a fraction of the cost of full-size pixels.

    Args:
        data: the image file's bytes.

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
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data))
            width, height = image.size
            mode = image.mode
            orientation = 1
            if image_format == "jpeg":
                orientation = int(image.getexif().get(_EXIF_ORIENTATION_TAG, 1) or 1)
                image.draft(mode, (max(1, width // 8), max(1, height // 8)))
            image.load()
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError,
            Image.DecompressionBombWarning) as error:
        raise InvalidImageError(f"corrupt or truncated {image_format.upper()} ({error})") from None
    if image_format == "jpeg" and mode == "CMYK":
        raise InvalidImageError("CMYK JPEG: tf.io.decode_jpeg cannot decode it; save it as RGB")
    if width <= 0 or height <= 0:
        raise InvalidImageError(f"image has no pixels ({width}x{height})")
    return ImageInfo(image_format, width, height, orientation)


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
