"""Instance masks: COCO-style segmentations rasterised and stored as PNG.

NumPy, Pillow and pycocotools are imported when a mask is first made: the
converter's workers load this module for every conversion, and most
conversions have no masks.
"""

from __future__ import annotations

import io
import warnings
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import numpy as np


class InvalidMaskError(ValueError):
    """A segmentation that cannot become a mask; the message is the reason."""


def rasterize(segmentation: Any, height: int, width: int) -> np.ndarray:
    """Rasterises a COCO segmentation into an image-sized binary mask.

    Args:
        segmentation: a list of polygons ``[[x0, y0, x1, y1, ...], ...]`` in
            absolute pixels, an uncompressed RLE ``{"counts": [int, ...],
            "size": [h, w]}`` or a compressed RLE ``{"counts": str, ...}``.
        height, width: the image size.

    Returns:
        ``uint8 [height, width]`` with values 0/1.

    Raises:
        InvalidMaskError: empty, degenerate polygons, or an RLE of another size.
    """
    import numpy as np
    from pycocotools import mask as mask_utils

    if not segmentation:
        raise InvalidMaskError("annotation has no segmentation")
    if isinstance(segmentation, list):
        polygons = [list(map(float, polygon)) for polygon in segmentation]
        if any(len(polygon) < 6 or len(polygon) % 2 for polygon in polygons):
            raise InvalidMaskError("segmentation polygon has fewer than 3 points or an odd coordinate count")
        rle = mask_utils.merge(mask_utils.frPyObjects(polygons, height, width))
    elif isinstance(segmentation, dict) and "counts" in segmentation and "size" in segmentation:
        size = [int(value) for value in segmentation["size"]]
        if size != [height, width]:
            raise InvalidMaskError(f"RLE size {size} differs from the image size [{height}, {width}]")
        if isinstance(segmentation["counts"], list):
            rle = mask_utils.frPyObjects(segmentation, height, width)
        else:
            counts = segmentation["counts"]
            rle = {"size": size, "counts": counts.encode("ascii") if isinstance(counts, str) else counts}
    else:
        raise InvalidMaskError("segmentation is neither polygons nor RLE")
    try:
        with warnings.catch_warnings():
            # pycocotools' NumPy 2 "copy keyword" DeprecationWarning: its concern, not the user's.
            warnings.simplefilter("ignore", DeprecationWarning)
            mask = mask_utils.decode(rle)
    except Exception as error:  # pycocotools raises bare Exceptions on bad RLE strings
        raise InvalidMaskError(f"RLE does not decode ({error})") from None
    return np.ascontiguousarray(mask.reshape(height, width), dtype=np.uint8)


def encode_png(mask: np.ndarray) -> bytes:
    """Encodes a 0/1 mask as a single-channel PNG (the TF OD API's encoding)."""
    import numpy as np
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(mask, dtype=np.uint8)).save(buffer, format="PNG")
    return buffer.getvalue()


def decode_png(data: bytes) -> np.ndarray:
    """Decodes a stored mask PNG into ``bool [height, width]``."""
    import numpy as np
    from PIL import Image

    with Image.open(io.BytesIO(data)) as image:
        return np.asarray(image.convert("L")) > 0
