"""tfdet.training: the custom distributed training loop, evaluation during training, checkpoints.

Public API (modules load on first use, so ``import tfdet.training`` is light):

* ``train(config, *, progress=True) -> dict``
* ``evaluate(config, checkpoint=None) -> dict``
* ``load_trained_model(config, checkpoint="latest") -> (detector, prefix, step)``
* ``NonFiniteLossError``

Modules: ``strategy`` (distribution strategies, TPU preflight), ``optimizer``
(optimizers, schedules, precision, EMA), ``steps`` (the distributed step and
host loop), ``checkpoint`` (save/resume/keep-best), ``summaries``
(TensorBoard, progress bar, curves), ``evaluator`` (COCO/VOC during
training), ``trainer`` (``train``/``evaluate``), ``cli`` (``tfdet train``,
``tfdet evaluate``), ``files`` (atomic writes through ``tf.io.gfile``).
"""

import importlib

__all__ = ["train", "evaluate", "load_trained_model", "NonFiniteLossError"]


def __getattr__(name):
    if name in __all__:
        return getattr(importlib.import_module("tfdet.training.trainer"), name)
    raise AttributeError(f"module 'tfdet.training' has no attribute {name!r}")
