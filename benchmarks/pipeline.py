"""Benchmark: the full training input pipeline against decoding alone.

What is measured, and why:

* Records. The bundled raccoon JPEGs (``tfdet/assets/raccoon``: 24 real
  photos, about 260 x 195 px) converted with ``tfrecord_tools.convert_voc``
  into a temporary folder (``--source raccoon``, the default), then, with
  ``--short-side S`` (default 375), re-encoded (Pillow, quality 90) so the
  shorter side is S: Pascal VOC's typical 500 x 375. Normalised boxes are
  unchanged by the uniform scaling. ``--short-side 0`` keeps the bundled
  sizes, where decoding costs a fraction of a 300 x 300 float batch and the
  ratio says more about the fixed per-image cost than about augmentation.
  Or ``tfdet.data.synthetic`` shapes (``--source synthetic --image-size S``).
  Both sides read the same shards, repeated, from the page cache.
* Baseline ("decode"). ``TFRecordDataset`` -> parse the Example ->
  ``tf.io.decode_image`` (parallel, AUTOTUNE) -> batches of 8 of the decoded
  images' shapes (so batching costs nothing): the cost every pipeline pays.
* Ours ("pipeline"). ``tfdet.data.build_dataset`` as training uses it:
  ``augmentation="ssd"`` (photometric distortion, zoom-out expand, IoU crop,
  flip), 300 x 300 ``stretch`` resize, ground truth padded to 100, batch 8,
  drop remainder, ``deterministic=False``, prefetch.
* Speed. Images per second over ``--images`` images after ``--warmup``
  batches (autotuning and tracing happen in the warm-up), the median of
  ``--repeats`` alternating runs in one process. The ratio pipeline/decode is
  printed; the target is >= 0.70 on 2 cores.
* Cores. ``--cores N`` pins the process to N CPUs (``os.sched_setaffinity``)
  before TensorFlow starts, so tf.data sizes its thread pool to them.

Usage::

    python benchmarks/pipeline.py            # 2 cores, 4000 images, 3 repeats
    python benchmarks/pipeline.py --quick    # 800 images, 1 repeat: a smoke run
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if REPO_ROOT not in sys.path:
    sys.path.insert(0, REPO_ROOT)

BATCH_SIZE = 8
IMAGE_SIZE = (300, 300)


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--source", choices=("raccoon", "synthetic"), default="raccoon")
    parser.add_argument("--image-size", type=int, default=512, help="synthetic image side (default 512)")
    parser.add_argument("--short-side", type=int, default=375,
                        help="raccoon photos re-encoded to this shorter side (default 375; 0: as bundled)")
    parser.add_argument("--images", type=int, default=4000, help="images timed per run")
    parser.add_argument("--warmup", type=int, default=20, help="batches before timing")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--cores", type=int, default=2, help="CPUs to pin to (0: all)")
    parser.add_argument("--quick", action="store_true", help="800 images, 1 repeat")
    args = parser.parse_args(argv)
    if args.quick:
        args.images, args.repeats, args.warmup = 800, 1, 10
    return args


def _rescale_records(directory, short_side):
    """Re-encodes every record's JPEG so its shorter side is ``short_side`` (boxes are normalised)."""
    import glob
    import hashlib
    import io

    from PIL import Image

    from tfrecord_tools import schema
    from tfrecord_tools.reader import iterate_examples
    from tfrecord_tools.tf_example import encode_example
    from tfrecord_tools.tfrecord_io import frame_record
    from tfrecord_tools.writer import ShardedWriter

    paths = sorted(glob.glob(os.path.join(directory, "train-*.tfrecord")))
    examples = [example for _, _, example in iterate_examples(paths)]
    with ShardedWriter(directory, "train", len(paths)) as writer:
        for example in examples:
            image = Image.open(io.BytesIO(example[schema.IMAGE_ENCODED][1][0])).convert("RGB")
            factor = short_side / min(image.size)
            image = image.resize((round(image.width * factor), round(image.height * factor)), Image.BILINEAR)
            buffer = io.BytesIO()
            image.save(buffer, format="JPEG", quality=90)
            data = buffer.getvalue()
            example[schema.IMAGE_ENCODED] = ("bytes", [data])
            example[schema.IMAGE_KEY_SHA256] = ("bytes", [hashlib.sha256(data).hexdigest().encode()])
            example[schema.IMAGE_HEIGHT] = ("int64", [image.height])
            example[schema.IMAGE_WIDTH] = ("int64", [image.width])
            writer.write(frame_record(encode_example(example)))
        writer.commit()


def make_records(source, image_size, short_side, directory):
    """Writes the benchmark shards; returns their glob."""
    if source == "raccoon":
        import tfrecord_tools
        from tfdet.demo import bundled_raccoon_dir

        root = bundled_raccoon_dir()
        tfrecord_tools.convert_voc(directory, annotations_dir=os.path.join(root, "annotations"),
                                   images_dir=os.path.join(root, "images"), num_shards=4, workers=1,
                                   progress=False)
        if short_side:
            _rescale_records(directory, short_side)
    else:
        from tfdet.data.synthetic import write_synthetic_dataset

        write_synthetic_dataset(directory, 64, image_size=image_size, num_shards=4, seed=0)
    return os.path.join(directory, "train-*.tfrecord")


def decode_only(pattern):
    import tensorflow as tf

    from tfdet.data.reader import parse_record

    def decode(serialized):
        image = tf.io.decode_image(parse_record(serialized)["encoded"], channels=3, expand_animations=False)
        return tf.shape(image)

    files = sorted(tf.io.gfile.glob(pattern))
    dataset = tf.data.TFRecordDataset(files).repeat()
    dataset = dataset.map(decode, num_parallel_calls=tf.data.AUTOTUNE, deterministic=False)
    return dataset.batch(BATCH_SIZE).prefetch(tf.data.AUTOTUNE)


def full_pipeline(pattern):
    from tfdet.data import build_dataset

    return build_dataset(pattern, image_size=IMAGE_SIZE, resize_mode="stretch", batch_size=BATCH_SIZE,
                         training=True, augmentation="ssd", max_instances=100, deterministic=False,
                         shuffle_buffer=64)


def images_per_second(dataset, images, warmup):
    iterator = iter(dataset)
    for _ in range(warmup):
        next(iterator)
    batches = max(1, images // BATCH_SIZE)
    start = time.perf_counter()
    for _ in range(batches):
        next(iterator)
    return batches * BATCH_SIZE / (time.perf_counter() - start)


def main(argv=None):
    args = parse_args(argv)
    if args.cores and hasattr(os, "sched_setaffinity"):
        available = sorted(os.sched_getaffinity(0))
        os.sched_setaffinity(0, available[: args.cores])
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    import tensorflow as tf

    with tempfile.TemporaryDirectory(prefix="tfdet-pipeline-bench-") as directory:
        pattern = make_records(args.source, args.image_size, args.short_side, directory)
        datasets = {"decode": decode_only(pattern), "pipeline": full_pipeline(pattern)}
        rates = {name: [] for name in datasets}
        for _ in range(args.repeats):
            for name, dataset in datasets.items():
                rates[name].append(images_per_second(dataset, args.images, args.warmup))
    decode = statistics.median(rates["decode"])
    pipeline = statistics.median(rates["pipeline"])
    size = f"short side {args.short_side}" if args.source == "raccoon" else f"{args.image_size} px"
    print(f"tfdet input pipeline benchmark: TF {tf.__version__}, {cores} cores, {args.source} ({size}), "
          f"{args.images} images x {args.repeats} repeats, batch {BATCH_SIZE}")
    print(f"  decode only          {decode:9.1f} images/s   runs {[round(r) for r in rates['decode']]}")
    print(f"  ssd pipeline 300x300 {pipeline:9.1f} images/s   runs {[round(r) for r in rates['pipeline']]}")
    print(f"  ratio pipeline/decode {pipeline / decode:.2f} (target >= 0.70)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
