"""Precision-recall curves as PNG files: one per class and a summary with every class.

Input is plain arrays, so VOC results (``ClassResult.recall/precision``) and
COCO results (``CocoEvaluator.pr_curves()``) plot the same way. matplotlib is
imported inside the functions with the Agg backend, so plotting works on
machines without a display and importing this module costs nothing.
"""

from __future__ import annotations

import math
import os
import re
from typing import Iterable, Mapping, Optional

import numpy as np

# A 6.4 x 4.8 inch figure at 100 dpi: 640 x 480 pixels, readable and small.
_DPI = 100
_SIZE = (6.4, 4.8)


def _pyplot():
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def _safe_name(name: str) -> str:
    """A file-name-safe version of a class name ('traffic light' -> 'traffic_light')."""
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("_") or "class"


def _label(name: str, ap: Optional[float]) -> str:
    return name if ap is None or math.isnan(ap) else f"{name} (AP {100 * ap:.2f})"


def plot_pr_curves(
    curves: Mapping[str, tuple[np.ndarray, np.ndarray]],
    out_dir: str,
    aps: Optional[Mapping[str, float]] = None,
    title: str = "",
    summary_name: str = "pr_summary.png",
) -> list[str]:
    """Writes ``pr_<class>.png`` for every class and ``summary_name`` with all of them.

    Args:
        curves: ``{class name: (recall [N], precision [N])}``, values in ``[0, 1]``.
        out_dir: folder to write into (created when missing).
        aps: optional ``{class name: AP}`` shown in legends and titles.
        title: prefix for the figure titles (e.g. ``"VOC IoU 0.5"``).
        summary_name: file name of the summary figure.

    Returns:
        Paths of the written files, per-class ones first, the summary last.
    """
    plt = _pyplot()
    aps = aps or {}
    os.makedirs(out_dir, exist_ok=True)
    written = []
    used_names: set[str] = set()
    for name, (recall, precision) in curves.items():
        stem = _safe_name(name)
        while stem in used_names:  # two names that sanitise alike must not overwrite each other
            stem += "_"
        used_names.add(stem)
        figure, axes = plt.subplots(figsize=_SIZE, dpi=_DPI)
        _draw(axes, recall, precision, _label(name, aps.get(name)))
        _draw_envelope(axes, recall, precision)
        axes.set_title(f"{title} {_label(name, aps.get(name))}".strip())
        path = os.path.join(out_dir, f"pr_{stem}.png")
        figure.savefig(path)
        plt.close(figure)
        written.append(path)

    figure, axes = plt.subplots(figsize=_SIZE, dpi=_DPI)
    for name, (recall, precision) in curves.items():
        _draw(axes, recall, precision, _label(name, aps.get(name)))
    mean = [ap for ap in aps.values() if not math.isnan(ap)]
    axes.set_title(f"{title} precision-recall" + (f", mean AP {100 * np.mean(mean):.2f}" if mean else ""))
    if 0 < len(curves) <= 20:  # beyond that a legend hides the curves
        axes.legend(loc="lower left", fontsize="small")
    path = os.path.join(out_dir, summary_name)
    figure.savefig(path)
    plt.close(figure)
    written.append(path)
    return written


def _draw(axes, recall: Iterable[float], precision: Iterable[float], label: str) -> None:
    recall = np.asarray(recall, dtype=np.float64)
    precision = np.asarray(precision, dtype=np.float64)
    axes.plot(recall, precision, label=label)
    axes.set_xlim(0.0, 1.0)
    axes.set_ylim(0.0, 1.05)
    axes.set_xlabel("recall")
    axes.set_ylabel("precision")
    axes.grid(True, alpha=0.3)


def voc_curves(results: Iterable) -> tuple[dict, dict]:
    """``(curves, aps)`` for ``plot_pr_curves`` from VOC ``ClassResult`` objects.

    Classes without positives (no defined recall) are left out.
    """
    curves, aps = {}, {}
    for result in results:
        if result.num_positives > 0:
            curves[result.name] = (result.recall, result.precision)
            aps[result.name] = result.ap
    return curves, aps


def _draw_envelope(axes, recall: Iterable[float], precision: Iterable[float]) -> None:
    """The monotone precision envelope that all-point AP integrates, dashed."""
    recall = np.asarray(recall, dtype=np.float64)
    precision = np.asarray(precision, dtype=np.float64)
    if recall.size == 0:
        return
    envelope = np.maximum.accumulate(precision[::-1])[::-1]
    axes.step(np.concatenate(([0.0], recall)), np.concatenate(([envelope[0]], envelope)), where="pre",
              linestyle="--", linewidth=1.0, label="interpolated")
    axes.legend(loc="lower left", fontsize="small")
