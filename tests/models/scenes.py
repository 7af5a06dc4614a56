"""Colour-coded synthetic scenes for the model learning tests: the class is in the colour, boxes known.

The tiny test networks learn colour within a few dozen steps; ``tfdet.data.synthetic`` (class by shape) is
what the pipeline, trainer and demo use.
"""

from __future__ import annotations

import numpy as np

COLOURS = ((240.0, 200.0, 60.0), (60.0, 200.0, 240.0))  # class 0 rectangles, class 1 ellipses


def colour_scenes(count, seed, size, sides, max_objects=2):
    """Bright rectangles (class 0) and ellipses (class 1) on grey, never touching each other.

    Args:
        count: images.
        seed: NumPy seed.
        size: square image side in pixels.
        sides: ``(min, max)`` of the objects' heights and widths in pixels.
        max_objects: ground-truth slots ``G``; each image has 1..G objects (fewer when no free place is found).

    Returns:
        ``(images, boxes, classes)``: float32 ``[N, size, size, 3]`` 0..255, float32 ``[N, G, 4]`` yxyx pixels,
        int32 ``[N, G]`` (``-1`` padding).
    """
    rng = np.random.default_rng(seed)
    images = np.full((count, size, size, 3), 50.0, np.float32)
    boxes = np.zeros((count, max_objects, 4), np.float32)
    classes = -np.ones((count, max_objects), np.int32)
    yy, xx = np.mgrid[0:size, 0:size] + 0.5
    for i in range(count):
        placed = []
        for j in range(rng.integers(1, max_objects + 1)):
            for _ in range(30):  # retry until it does not touch the image's other objects
                h, w = rng.uniform(sides[0], sides[1], 2)
                y0, x0 = rng.uniform(0, size - h), rng.uniform(0, size - w)
                box = np.array([y0, x0, y0 + h, x0 + w], np.float32)
                if all(box[2] < o[0] or o[2] < box[0] or box[3] < o[1] or o[3] < box[1] for o in placed):
                    break
            else:
                continue
            cls = int(rng.integers(0, 2))
            if cls == 0:
                mask = (yy >= y0) & (yy < y0 + h) & (xx >= x0) & (xx < x0 + w)
            else:
                mask = ((yy - y0 - h / 2) / (h / 2)) ** 2 + ((xx - x0 - w / 2) / (w / 2)) ** 2 <= 1
            images[i][mask] = COLOURS[cls]
            boxes[i, j], classes[i, j] = box, cls
            placed.append(box)
    return images, boxes, classes
