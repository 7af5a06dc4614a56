"""Readers for the metrics_reference files, written for the tests (VOC XML and the txt layouts).

Boxes come back ``yxyx`` as tfdet's evaluators take them.
"""

from __future__ import annotations

import pathlib
import xml.etree.ElementTree as ET

import numpy as np


def read_voc_xml_folder(folder: pathlib.Path):
    """Ground truth from VOC XML files: (image ids, ``[G, 4]`` yxyx, ``[G]`` difficult, class names)."""
    ids, boxes, difficult, names = [], [], [], []
    for path in sorted(folder.glob("*.xml")):
        for obj in ET.parse(path).getroot().iter("object"):
            box = obj.find("bndbox")
            x1, y1, x2, y2 = (float(box.find(tag).text) for tag in ("xmin", "ymin", "xmax", "ymax"))
            flag = obj.find("difficult")
            ids.append(path.stem)
            boxes.append([y1, x1, y2, x2])
            difficult.append(flag is not None and flag.text.strip() == "1")
            names.append(obj.find("name").text.strip())
    return ids, np.array(boxes, dtype=np.float64), np.array(difficult, dtype=bool), names


def read_txt_folder(folder: pathlib.Path, with_score: bool, layout: str):
    """Boxes from ``class [score] a b c d`` lines, one file per image.

    ``layout`` ``"xyxy"``: a b c d = left top right bottom; ``"xywh"``: left top width height.

    Returns (image ids, ``[N]`` scores or None, ``[N, 4]`` yxyx, class names).
    """
    ids, scores, boxes, names = [], [], [], []
    for path in sorted(folder.glob("*.txt")):
        for line in path.read_text().splitlines():
            fields = line.split()
            if not fields:
                continue
            names.append(fields[0])
            if with_score:
                scores.append(float(fields[1]))
            a, b, c, d = map(float, fields[2:6] if with_score else fields[1:5])
            ids.append(path.stem)
            boxes.append([b, a, d, c] if layout == "xyxy" else [b, a, b + d, a + c])
    return ids, (np.array(scores) if with_score else None), np.array(boxes, dtype=np.float64), names
