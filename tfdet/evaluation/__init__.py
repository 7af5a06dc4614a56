"""Detection metrics: COCO box/mask AP (COCOeval), Pascal VOC AP, precision-recall plots.

Submodules, imported on first use so that ``import tfdet.evaluation`` stays light:

* ``voc``: VOC devkit matching, 11-point / all-point AP, ``VocEvaluator``.
* ``coco``: ``CocoEvaluator`` around pycocotools (or faster_coco_eval).
* ``curves``: precision-recall PNGs.
* ``cli``: the ``tfdet metrics`` command.

Inputs from models are padded outputs as everywhere in tfdet: boxes ``yxyx``
absolute pixels ``[D, 4]``, scores ``[D]``, classes ``0..K-1`` ``[D]`` and
``num_detections``.
"""

import importlib

_EXPORTS = {
    "VocEvaluator": "voc",
    "evaluator_from_coco": "voc",
    "average_precision": "voc",
    "CocoEvaluator": "coco",
    "evaluate_results": "coco",
    "plot_pr_curves": "curves",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name):
    if name in _EXPORTS:
        module = importlib.import_module(f"{__name__}.{_EXPORTS[name]}")
        return getattr(module, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
