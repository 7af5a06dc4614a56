"""Validation of annotated boxes against the image they belong to."""

from __future__ import annotations

import math

# Annotation tools round to whole pixels, and VOC's 1-based pixel indices reach
# width + 1; a box that overhangs the image by up to this much is clipped, a
# box that overhangs by more is an annotation error.
CLIP_TOLERANCE_PX = 1.0


class InvalidBoxError(ValueError):
    """A box that cannot be stored; the message is the reason."""


def validate_box(
    box: tuple[float, float, float, float], width: int, height: int
) -> tuple[float, float, float, float]:
    """Checks a box and clips it to the image.

    Args:
        box: ``(xmin, ymin, xmax, ymax)`` absolute pixels.
        width, height: the image size in pixels.

    Returns:
        The box clipped to ``[0, width] x [0, height]``, same order.

    Raises:
        InvalidBoxError: non-finite, inverted, outside the image by more than
            ``CLIP_TOLERANCE_PX``, or of zero area after clipping.
    """
    xmin, ymin, xmax, ymax = (float(value) for value in box)
    shown = f"(xmin={xmin:g}, ymin={ymin:g}, xmax={xmax:g}, ymax={ymax:g})"
    if not all(math.isfinite(value) for value in (xmin, ymin, xmax, ymax)):
        raise InvalidBoxError(f"box {shown} has a non-finite coordinate")
    if xmin > xmax or ymin > ymax:
        raise InvalidBoxError(f"inverted box {shown}")
    tolerance = CLIP_TOLERANCE_PX
    if xmin < -tolerance or ymin < -tolerance or xmax > width + tolerance or ymax > height + tolerance:
        raise InvalidBoxError(
            f"box {shown} lies outside the {width}x{height} image by more than {tolerance:g} px"
        )
    xmin, xmax = min(max(xmin, 0.0), width), min(max(xmax, 0.0), width)
    ymin, ymax = min(max(ymin, 0.0), height), min(max(ymax, 0.0), height)
    if xmax <= xmin or ymax <= ymin:
        raise InvalidBoxError(f"zero-area box {shown}")
    return xmin, ymin, xmax, ymax
