"""Drawing detections on images with OpenCV: boxes, class names and scores.

Images here are BGR ``uint8 [h, w, 3]`` (OpenCV's order); boxes are yxyx
absolute pixels of that image.
"""

from __future__ import annotations

import colorsys
from typing import Mapping, Sequence

import cv2
import numpy as np

# Successive hues step by the golden ratio, so neighbouring class ids get far-apart colours.
_GOLDEN_RATIO = 0.618033988749895


def class_color(label_id: int) -> tuple[int, int, int]:
    """A distinct, saturated BGR colour for a label id (the same id always gets the same colour)."""
    hue = (0.1 + int(label_id) * _GOLDEN_RATIO) % 1.0
    red, green, blue = colorsys.hsv_to_rgb(hue, 0.85, 0.95)
    return int(blue * 255), int(green * 255), int(red * 255)


def _text_color(background: tuple[int, int, int]) -> tuple[int, int, int]:
    blue, green, red = background
    luminance = 0.114 * blue + 0.587 * green + 0.299 * red
    return (0, 0, 0) if luminance > 140 else (255, 255, 255)


def draw_detections(
    image: np.ndarray,
    boxes: np.ndarray,
    label_ids: Sequence[int],
    scores: Sequence[float],
    names: Mapping[int, str],
) -> np.ndarray:
    """Draws each detection as a box with ``"name score"`` on a filled label.

    Args:
        image: BGR ``uint8 [h, w, 3]``; not modified.
        boxes: ``[n, 4]`` yxyx pixels.
        label_ids: ``[n]`` label-map ids.
        scores: ``[n]`` confidences.
        names: label id -> class name (a missing id is drawn as ``id N``).

    Returns:
        The annotated copy.
    """
    canvas = np.ascontiguousarray(image).copy()
    height, width = canvas.shape[:2]
    # Line width and font grow with the picture, so labels stay legible on large frames.
    thickness = max(1, round(min(height, width) / 300))
    font_scale = max(0.35, min(height, width) / 900)
    font = cv2.FONT_HERSHEY_SIMPLEX
    for box, label_id, score in zip(np.asarray(boxes, np.float64).reshape(-1, 4), label_ids, scores):
        color = class_color(int(label_id))
        y1, x1, y2, x2 = (int(round(v)) for v in box)
        x1, x2 = np.clip([x1, x2], 0, width - 1)
        y1, y2 = np.clip([y1, y2], 0, height - 1)
        cv2.rectangle(canvas, (int(x1), int(y1)), (int(x2), int(y2)), color, thickness)
        text = f"{names.get(int(label_id), f'id {int(label_id)}')} {float(score):.2f}"
        (text_w, text_h), baseline = cv2.getTextSize(text, font, font_scale, 1)
        # The label sits above the box, or inside its top edge when there is no room above.
        top = int(y1) - text_h - baseline - 2 if y1 - text_h - baseline - 2 >= 0 else int(y1)
        left = int(min(x1, max(0, width - text_w - 2)))
        cv2.rectangle(canvas, (left, top), (left + text_w + 2, top + text_h + baseline + 2), color, cv2.FILLED)
        cv2.putText(canvas, text, (left + 1, top + text_h + 1), font, font_scale, _text_color(color), 1,
                    cv2.LINE_AA)
    return canvas
