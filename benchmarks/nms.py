"""Benchmark: ``tfdet.core.nms.non_max_suppression`` against TensorFlow's NMS on the CPU.

What is measured, and why:

* Inputs. ``B`` images of ``N`` random boxes (yxyx pixels in a 1024 x 1024
  image, sides 16..256, so boxes overlap as detections do) with distinct
  uniform scores; ``max_output_size = 100``, IoU threshold 0.5, no score
  threshold (every box is a candidate: the worst case for the greedy loop).
  Sizes: ``N`` in {1000, 5000} for ``B`` in {1, 8}.
* Ours. ``non_max_suppression`` inside ``tf.function(jit_compile=True)``:
  how a model's post-processing runs it. Fixed size: 100 greedy steps, each
  one IoU row of ``N`` per image.
* Baseline. ``tf.image.non_max_suppression_padded`` (batched, padded, the
  fixed-size op TensorFlow offers) inside ``tf.function`` (graph mode, its
  usual home). It is also tried under ``jit_compile=True``; a row says
  whether that compiled. For ``B = 1`` the plain
  ``tf.image.non_max_suppression`` C++ kernel (NMS V3, not XLA-compilable,
  variable size) is shown for reference.
* Timing. ``time.perf_counter`` around a call and ``.numpy()`` of its
  outputs (so asynchronous execution is counted), after warm-up calls that
  absorb tracing and compiling. The contenders alternate within each repeat,
  in one process, so machine noise hits all alike; the median of
  ``--repeats`` is reported, with the ratio baseline / ours (> 1: ours faster).
* Correctness. Before timing, every contender's kept indices are compared
  with ours for every image; any difference exits non-zero.

Usage::

    python benchmarks/nms.py              # 25 repeats
    python benchmarks/nms.py --repeats 5  # a smoke run
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time

import numpy as np

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")  # the CPU is what this measures

import tensorflow as tf  # noqa: E402

from tfdet.core.nms import non_max_suppression  # noqa: E402

MAX_OUTPUT = 100
IOU_THRESHOLD = 0.5


def make_inputs(batch: int, n: int, seed: int = 0):
    """``boxes [B, N, 4]`` yxyx pixels and distinct ``scores [B, N]``, float32."""
    rng = np.random.default_rng(seed)
    corner = rng.uniform(0, 1024 - 256, size=(batch, n, 2))
    size = rng.uniform(16, 256, size=(batch, n, 2))
    boxes = np.concatenate([corner, corner + size], axis=-1).astype(np.float32)
    scores = np.stack([rng.permutation(n) for _ in range(batch)]).astype(np.float32) / n
    return tf.constant(boxes), tf.constant(scores)


def contenders(batch: int):
    """``name -> callable(boxes, scores) -> list of B kept-index arrays``."""
    ours = tf.function(lambda b, s: non_max_suppression(b, s, MAX_OUTPUT, IOU_THRESHOLD), jit_compile=True)

    def padded(b, s):
        return tf.image.non_max_suppression_padded(b, s, MAX_OUTPUT, IOU_THRESHOLD, pad_to_max_output_size=True)

    padded_graph = tf.function(padded)
    padded_xla = tf.function(padded, jit_compile=True)

    def run_fixed(fn):
        def call(b, s):
            indices, valid = fn(b, s)
            indices, valid = indices.numpy(), valid.numpy()
            return [indices[i, : valid[i]] for i in range(len(valid))]

        return call

    table = {
        "ours (XLA)": run_fixed(ours),
        "non_max_suppression_padded (graph)": run_fixed(padded_graph),
        "non_max_suppression_padded (XLA)": run_fixed(padded_xla),
    }
    if batch == 1:
        v3 = tf.function(lambda b, s: tf.image.non_max_suppression(b[0], s[0], MAX_OUTPUT, IOU_THRESHOLD))
        table["non_max_suppression, V3 kernel (graph)"] = lambda b, s: [v3(b, s).numpy()]
    return table


def time_call(fn, boxes, scores) -> float:
    start = time.perf_counter()
    fn(boxes, scores)
    return time.perf_counter() - start


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=25)
    parser.add_argument("--warmup", type=int, default=3)
    args = parser.parse_args(argv)

    print(f"TensorFlow {tf.__version__}, {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs")
    print(f"max_output_size={MAX_OUTPUT}, iou_threshold={IOU_THRESHOLD}, median of {args.repeats} repeats\n")
    print(f"{'B':>2} {'N':>5}  {'contender':<40} {'median ms':>10} {'vs ours':>8}")
    failed = False
    for batch in (1, 8):
        for n in (1000, 5000):
            boxes, scores = make_inputs(batch, n)
            table = contenders(batch)
            reference = table["ours (XLA)"](boxes, scores)
            usable = {}
            for name, fn in table.items():
                try:
                    for _ in range(args.warmup):
                        kept = fn(boxes, scores)
                except Exception as error:  # noqa: BLE001 -- report what does not compile, go on
                    print(f"{batch:>2} {n:>5}  {name:<40} {'fails: ' + type(error).__name__:>19}")
                    continue
                if any(not np.array_equal(k, r) for k, r in zip(kept, reference)):
                    print(f"{batch:>2} {n:>5}  {name:<40} kept indices differ from ours")
                    failed = True
                    continue
                usable[name] = fn
            samples = {name: [] for name in usable}
            for _ in range(args.repeats):
                for name, fn in usable.items():
                    samples[name].append(time_call(fn, boxes, scores))
            ours = statistics.median(samples["ours (XLA)"])
            for name, times in samples.items():
                median = statistics.median(times)
                print(f"{batch:>2} {n:>5}  {name:<40} {median * 1e3:>10.2f} {median / ours:>7.2f}x")
            print()
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
