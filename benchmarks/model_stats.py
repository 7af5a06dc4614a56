"""Model statistics: parameters and FLOPs at the native input size, optionally the CPU train-step time.

For every registered model (``tfdet.list_models()``, or ``--models``), built
with ``--num-classes`` classes (90, the COCO head of the published counts) and
its default overrides:

* parameters: trainable (the convention of the published EfficientDet counts)
  and all (with BatchNormalization moving statistics);
* multiply-adds and FLOPs of one image at the model's native input size
  (``tfdet.models.flops``: FLOPs = 2 x multiply-adds). Detection papers
  (EfficientDet among them) print the multiply-adds under the name "FLOPs";
  compare the ``MAdds`` column with those.

With ``--step-time``: seconds of one XLA-compiled (``jit_compile=True``)
training step (forward, losses, gradients, SGD update) at batch ``--batch``
(8) on random images with two boxes each, on the CPU, after one warm-up step
that compiles; the median of ``--repeats`` (3) steps. Only for the models in
``--step-models`` (default EfficientDet-D0 and D1: larger ones take minutes
per step on a small CPU). ``--no-xla`` times the same step as a plain
``tf.function`` instead.

Measured on the shared 2-core development machine (load average about 5, so
only indicative): EfficientDet-D0, batch 8, 512x512: 142.7 s per XLA step,
20.4 s per plain ``tf.function`` step. XLA on the CPU is about 7x slower here;
the depthwise convolutions' gradients are the suspect (a tiny EfficientDet
step was 3x slower under XLA too, SSD's dense convolutions are not).

Usage::

    python benchmarks/model_stats.py
    python benchmarks/model_stats.py --models efficientdet_d0 efficientdet_d1 --step-time
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")  # CPU numbers, as the step time promises

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if REPO_ROOT not in sys.path:
    sys.path.insert(0, REPO_ROOT)


def parameter_counts(detector) -> tuple[int, int]:
    """(trainable, all) weights of the detector's network."""
    import numpy as np

    trainable = sum(int(np.prod(w.shape)) for w in detector.trainable_weights)
    total = sum(int(np.prod(w.shape)) for w in detector.weights)
    return trainable, total


def step_seconds(detector, batch: int, repeats: int, jit_compile: bool = True) -> float:
    """Median wall time of one train step after a compiling warm-up."""
    import keras
    import numpy as np
    import tensorflow as tf

    height, width = detector.image_size
    height, width = height or 416, width or 416
    rng = np.random.default_rng(0)
    images = tf.constant(rng.uniform(0, 255, (batch, height, width, 3)).astype(np.float32))
    boxes = np.zeros((batch, 2, 4), np.float32)
    boxes[:, 0] = [0.1 * height, 0.2 * width, 0.6 * height, 0.7 * width]
    boxes[:, 1] = [0.5 * height, 0.1 * width, 0.9 * height, 0.4 * width]
    groundtruth = {"boxes": tf.constant(boxes), "classes": tf.constant(np.zeros((batch, 2), np.int32)),
                   "is_crowd": tf.zeros((batch, 2), tf.int32)}
    optimizer = keras.optimizers.SGD(1e-3, momentum=0.9)

    @tf.function(jit_compile=jit_compile)
    def step(images, groundtruth):
        with tf.GradientTape() as tape:
            losses = detector.compute_losses(detector(images, training=True), groundtruth)
        gradients = tape.gradient(losses["loss"], detector.trainable_variables)
        optimizer.apply_gradients(zip(gradients, detector.trainable_variables))
        return losses["loss"]

    float(step(images, groundtruth))  # compile
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        float(step(images, groundtruth))
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", nargs="*", help="registry names (default: every registered model)")
    parser.add_argument("--num-classes", type=int, default=90)
    parser.add_argument("--step-time", action="store_true", help="also time one XLA train step on the CPU")
    parser.add_argument("--step-models", nargs="*", default=["efficientdet_d0", "efficientdet_d1"])
    parser.add_argument("--no-xla", action="store_true", help="time a plain tf.function step instead of XLA")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args(argv)

    import tfdet
    from tfdet.models.flops import count_multiply_adds

    names = args.models or tfdet.list_models()
    print(f"{'model':<18} {'input':>11} {'trainable':>12} {'all params':>12} {'MAdds (B)':>10} {'FLOPs (B)':>10}"
          + ("  step (s)" if args.step_time else ""), flush=True)
    for name in names:
        detector = tfdet.build_model(name, args.num_classes)
        trainable, total = parameter_counts(detector)
        height, width = detector.image_size
        if height is None or width is None:
            size, madds, flops = "any", "n/a", "n/a"
        else:
            size = f"{height}x{width}"
            multiply_adds = count_multiply_adds(detector)
            madds, flops = f"{multiply_adds / 1e9:.2f}", f"{2 * multiply_adds / 1e9:.2f}"
        line = f"{name:<18} {size:>11} {trainable:>12,} {total:>12,} {madds:>10} {flops:>10}"
        if args.step_time and name in args.step_models:
            line += f"  {step_seconds(detector, args.batch, args.repeats, not args.no_xla):8.2f}"
        print(line, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
