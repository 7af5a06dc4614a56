"""Benchmark: tfdet's gather-based RoIAlign against a crop_and_resize RoIAlign, on the CPU.

What is measured, and why:

* Inputs. ``--batch`` images of ``--image`` pixels square, ``--rois`` boxes
  each, ``--channels`` channels, ``--output`` bins (default 2 x 1024 px,
  512 RoIs, 256 channels, 7x7, sampling ratio 2, aligned). Box sides are
  log-uniform in 32..768 px (every FPN level gets RoIs), kept 32 px inside the
  image so every sample lies inside every map: there the two implementations
  compute the same numbers, and the benchmark checks they do.
* Single level. One stride-16 map (``image / 16`` square). Ours:
  ``roi_align`` under ``tf.function(jit_compile=True)``. Baseline: the
  crop_and_resize RoIAlign of the TF Object Detection API / tensorpack
  style, ``tf.image.crop_and_resize`` at ``2 * output`` with boxes shifted so
  its samples are RoIAlign's (see ``tests/core/test_roi_align.py``), then a
  2x2 average pool, under ``tf.function`` (crop_and_resize has no XLA kernel).
* FPN. P2..P5 (strides 4..32). Ours: ``multilevel_roi_align`` (one gather from
  the concatenated pyramid), jit-compiled. Baseline: the usual eager-graph
  recipe: assign levels with eq. 1 of Lin et al., then per level
  ``tf.where`` the RoIs on it, crop_and_resize them from that level, and
  ``tf.scatter_nd`` them back into RoI order.
* Also timed: ours under plain ``tf.function`` (no XLA), to show what the
  compiler contributes.
* Timing. ``time.perf_counter`` around one call including ``.numpy()`` (the
  result is materialised). One warm-up call each (tracing, XLA compilation;
  reported separately), then ``--repeats`` rounds in which every variant runs
  once, alternating, in one process so machine noise hits all alike; the
  median is reported. TensorFlow uses all cores it sees.

Usage::

    python benchmarks/roi_align.py              # the defaults above, 7 repeats
    python benchmarks/roi_align.py --quick      # 128 RoIs, 3 repeats: a smoke run
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from tfdet.core.roi_align import multilevel_roi_align, roi_align  # noqa: E402


def make_inputs(batch, image, rois, channels, seed=0):
    rng = np.random.default_rng(seed)
    pyramid = [
        rng.normal(size=(batch, image >> level, image >> level, channels)).astype(np.float32) for level in range(2, 6)
    ]
    margin = 32.0
    side_h = np.exp(rng.uniform(np.log(32.0), np.log(768.0), size=(batch, rois)))
    side_w = np.exp(rng.uniform(np.log(32.0), np.log(768.0), size=(batch, rois)))
    side_h = np.minimum(side_h, image - 2 * margin)
    side_w = np.minimum(side_w, image - 2 * margin)
    y1 = rng.uniform(margin, image - margin - side_h)
    x1 = rng.uniform(margin, image - margin - side_w)
    boxes = np.stack([y1, x1, y1 + side_h, x1 + side_w], axis=-1).astype(np.float32)
    return pyramid, boxes


def crop_and_resize_roi_align(features, boxes, spatial_scale, output_size, box_indices):
    """RoIAlign (aligned, sampling ratio 2) from crop_and_resize at 2x then a 2x2 average pool.

    ``features [B, H, W, C]``, ``boxes [N, 4]`` image pixels, ``box_indices [N]``
    -> ``[N, out, out, C]``.
    """
    height = tf.cast(tf.shape(features)[1], tf.float32)
    width = tf.cast(tf.shape(features)[2], tf.float32)
    grid = boxes * spatial_scale - 0.5
    extent = grid[:, 2:] - grid[:, :2]
    quarter_bin = extent / (4.0 * output_size)  # half of a sub-bin: bin / (2 * 2)
    scale = tf.stack([height - 1.0, width - 1.0])
    normalised = tf.concat([(grid[:, :2] + quarter_bin) / scale, (grid[:, 2:] - quarter_bin) / scale], axis=1)
    crops = tf.image.crop_and_resize(features, normalised, box_indices, (2 * output_size, 2 * output_size))
    return tf.nn.avg_pool2d(crops, 2, 2, "VALID")


def baseline_single(features, boxes, output_size):
    batch, rois = boxes.shape[0], boxes.shape[1]
    box_indices = tf.repeat(tf.range(batch), rois)
    flat = crop_and_resize_roi_align(features, tf.reshape(boxes, (-1, 4)), 1.0 / 16.0, output_size, box_indices)
    return tf.reshape(flat, (batch, rois, output_size, output_size, -1))


def baseline_multilevel(pyramid, boxes, output_size):
    batch, rois = boxes.shape[0], boxes.shape[1]
    channels = pyramid[0].shape[-1]
    flat_boxes = tf.reshape(boxes, (-1, 4))
    box_indices = tf.repeat(tf.range(batch), rois)
    height = tf.maximum(flat_boxes[:, 2] - flat_boxes[:, 0], 0.0)
    width = tf.maximum(flat_boxes[:, 3] - flat_boxes[:, 1], 0.0)
    size = tf.sqrt(height * width)
    level = tf.clip_by_value(tf.floor(4.0 + tf.math.log(size / 224.0 + 1e-6) / tf.math.log(2.0)), 2.0, 5.0)
    level = tf.cast(level, tf.int32)
    result = tf.zeros((batch * rois, output_size, output_size, channels))
    for offset, features in enumerate(pyramid):
        chosen = tf.where(tf.equal(level, offset + 2))  # [n, 1]
        crops = crop_and_resize_roi_align(
            features,
            tf.gather_nd(flat_boxes, chosen),
            2.0 ** -(offset + 2),
            output_size,
            tf.gather_nd(box_indices, chosen),
        )
        result = tf.tensor_scatter_nd_update(result, chosen, crops)
    return tf.reshape(result, (batch, rois, output_size, output_size, channels))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--image", type=int, default=1024)
    parser.add_argument("--rois", type=int, default=512)
    parser.add_argument("--channels", type=int, default=256)
    parser.add_argument("--output", type=int, default=7)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--quick", action="store_true", help="128 RoIs, 3 repeats")
    args = parser.parse_args(argv)
    if args.quick:
        args.rois, args.repeats = 128, 3

    pyramid_np, boxes_np = make_inputs(args.batch, args.image, args.rois, args.channels)
    pyramid = [tf.constant(p) for p in pyramid_np]
    boxes = tf.constant(boxes_np)
    single = pyramid[2]  # P4, stride 16
    out = args.output

    variants = {
        ("single", "ours (XLA)"): tf.function(lambda f, b: roi_align(f, b, 1.0 / 16.0, out), jit_compile=True),
        ("single", "ours (no XLA)"): tf.function(lambda f, b: roi_align(f, b, 1.0 / 16.0, out)),
        ("single", "crop_and_resize"): tf.function(lambda f, b: baseline_single(f, b, out)),
        ("FPN", "ours (XLA)"): tf.function(lambda b, *p: multilevel_roi_align(list(p), b, out), jit_compile=True),
        ("FPN", "ours (no XLA)"): tf.function(lambda b, *p: multilevel_roi_align(list(p), b, out)),
        ("FPN", "crop_and_resize"): tf.function(lambda b, *p: baseline_multilevel(list(p), b, out)),
    }
    calls = {
        key: (lambda fn=fn: fn(single, boxes).numpy())
        if key[0] == "single"
        else (lambda fn=fn: fn(boxes, *pyramid).numpy())
        for key, fn in variants.items()
    }

    print(f"TensorFlow {tf.__version__} on {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs visible")
    print(
        f"B={args.batch} image={args.image}px R={args.rois} C={args.channels} output={out}x{out} sampling_ratio=2 aligned; "
        f"single level {single.shape[1]}x{single.shape[2]} (stride 16), FPN P2..P5 "
        f"{'/'.join(str(p.shape[1]) for p in pyramid)}"
    )
    results = {}
    for key, call in calls.items():
        start = time.perf_counter()
        results[key] = call()
        print(f"  warm-up {key[0]:<7}{key[1]:<16} {time.perf_counter() - start:7.2f} s (trace + compile + first run)")

    worst = 0.0
    for kind in ("single", "FPN"):
        reference = results[(kind, "crop_and_resize")]
        for impl in ("ours (XLA)", "ours (no XLA)"):
            diff = float(np.max(np.abs(results[(kind, impl)] - reference)))
            worst = max(worst, diff)
            print(f"  {kind}: max |{impl} - crop_and_resize| = {diff:.2e}")
    # crop_and_resize gets normalised coordinates (divided, then multiplied back by H - 1),
    # so positions differ by float rounding; on N(0, 1) features that is ~1e-4 at most.
    if worst > 5e-4:
        print("ERROR: implementations disagree; not timing them")
        return 1

    times = {key: [] for key in calls}
    for _ in range(args.repeats):
        for key, call in calls.items():
            start = time.perf_counter()
            call()
            times[key].append(time.perf_counter() - start)
    medians = {key: statistics.median(t) for key, t in times.items()}
    print(f"median of {args.repeats} (ms):")
    for key, median in medians.items():
        print(
            f"  {key[0]:<7}{key[1]:<16} {1000 * median:9.1f}   "
            f"(min {1000 * min(times[key]):.1f}, max {1000 * max(times[key]):.1f})"
        )
    for kind in ("single", "FPN"):
        ratio = medians[(kind, "crop_and_resize")] / medians[(kind, "ours (XLA)")]
        print(f"  {kind}: crop_and_resize time / ours (XLA) time = {ratio:.2f}  (> 1: ours faster)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
