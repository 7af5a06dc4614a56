"""Precision-recall PNGs: files exist, are real PNGs of the expected size, one per class plus a summary."""

from __future__ import annotations

import os

import numpy as np
from PIL import Image

from tfdet.evaluation.curves import plot_pr_curves, voc_curves
from tfdet.evaluation.voc import VocEvaluator


def test_one_png_per_class_and_a_summary(tmp_path):
    evaluator = VocEvaluator(["cat", "traffic light", "empty"])
    evaluator.add_image(np.array([[0, 0, 10, 10], [20, 20, 40, 30]], float), np.array([0, 1]),
                        np.array([[0, 0, 10, 10], [20, 20, 40, 31], [50, 50, 60, 60]], float),
                        np.array([0.9, 0.8, 0.7]), np.array([0, 1, 1]))
    curves, aps = voc_curves(evaluator.evaluate_classes())
    assert set(curves) == {"cat", "traffic light"}  # 'empty' has no ground truth, hence no curve
    paths = plot_pr_curves(curves, str(tmp_path / "plots"), aps=aps, title="VOC IoU 0.5")
    names = sorted(os.path.basename(p) for p in paths)
    assert names == ["pr_cat.png", "pr_summary.png", "pr_traffic_light.png"]
    for path in paths:
        with Image.open(path) as image:
            assert image.format == "PNG" and image.size == (640, 480)
            # Something was drawn: a plot is not a single flat colour.
            assert len(image.convert("L").getcolors(maxcolors=1 << 16)) > 10


def test_names_that_sanitise_alike_do_not_overwrite(tmp_path):
    curve = (np.array([0.5, 1.0]), np.array([1.0, 0.5]))
    paths = plot_pr_curves({"a/b": curve, "a b": curve}, str(tmp_path))
    assert len(set(paths)) == 3 and all(os.path.isfile(p) for p in paths)
