"""Reading COCO JSON and converting COCO boxes: the one place evaluation meets COCO's layout.

COCO boxes are ``[x, y, width, height]`` absolute pixels; tfdet's are
``yxyx`` absolute pixels. Both evaluators read files through here.
"""

from __future__ import annotations

import json
import os
from typing import Any

import numpy as np


def load_json(source: Any) -> Any:
    """A path (str or path-like) is read as JSON; anything else is returned as is."""
    if isinstance(source, (str, bytes, os.PathLike)):
        with open(source, encoding="utf-8") as stream:
            return json.load(stream)
    return source


def load_results(source: Any) -> list:
    """A COCO result list from a list or a JSON file.

    Accepts the standard result list and, for convenience, a dataset-style
    object whose ``annotations`` carry ``score`` (some tools write results so).

    Raises:
        ValueError: the content is neither.
    """
    loaded = load_json(source)
    if isinstance(loaded, dict) and isinstance(loaded.get("annotations"), list):
        loaded = loaded["annotations"]
    if not isinstance(loaded, list) or not all(isinstance(item, dict) for item in loaded):
        raise ValueError("detections must be a COCO result list: [{image_id, category_id, bbox, score}, ...]")
    missing = [key for key in ("image_id", "category_id", "score") if loaded and key not in loaded[0]]
    if missing:
        raise ValueError(f"detections lack {', '.join(missing)} (expected COCO results)")
    return loaded


def xywh_to_yxyx(boxes: Any) -> np.ndarray:
    """``[N, 4]`` COCO ``[x, y, width, height]`` -> ``[N, 4]`` ``yxyx`` (float64)."""
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    x, y, w, h = boxes.T
    return np.stack([y, x, y + h, x + w], axis=1)


def yxyx_to_xywh(boxes: Any) -> np.ndarray:
    """``[N, 4]`` ``yxyx`` absolute pixels -> ``[N, 4]`` COCO ``[x, y, width, height]`` (float64)."""
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    y1, x1, y2, x2 = boxes.T
    return np.stack([x1, y1, x2 - x1, y2 - y1], axis=1)
