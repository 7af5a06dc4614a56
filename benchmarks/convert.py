"""Benchmark: ``tfrecord_tools.convert_voc`` against a TF OD API-style converter.

What is measured, and why:

* Dataset. ``--images`` real Pascal VOC images (default 2000): the 200
  JPEGs and XML files of ``voc_raccoon`` replicated under distinct names
  (``raccoon-1_r007.jpg``, with ``<filename>`` rewritten), images hard-linked.
  Real JPEGs of real sizes (178..2000 px wide), so decoding costs what it
  costs on real data. Every image is read once before timing, so both
  converters find the page cache equally warm.
* Baseline. A plain single-process converter in the style of the TF Object
  Detection API's ``create_pascal_tf_record.py``, written here: XML -> dict
  with lxml, image bytes read, ``PIL.Image.open`` to check the header says
  JPEG (no pixel is decoded), SHA-256, a ``tf.train.Example`` and
  ``tf.io.TFRecordWriter`` shards filled round-robin (record ``i`` into shard
  ``i % N``). Box size comes from the XML; nothing checks the image.
* Ours. ``tfrecord_tools.convert_voc`` with ``--workers`` worker processes and
  the same shard count, run twice: with ``--image-check decode`` (the default:
  the whole JPEG stream is decoded in draft mode) and ``structure`` (segments
  and end-of-image marker only). Both check the XML size against the real
  size and every box against the image, and rename shards into place when
  complete. The comparison is printed with this caveat.
* Speed. ``time.perf_counter`` around the whole conversion call: XML parsing,
  reading, encoding, writing and, for ours, starting the worker pool (users
  pay it). Building the dataset and importing TensorFlow are outside. Each
  side runs ``--repeats`` times, alternating, in one process (so machine
  noise hits both alike); the median is reported.
* Memory. Each side converts ``N/4`` and ``N`` images in a fresh child
  process while a thread samples the summed ``VmRSS`` of that process tree
  (child + workers) every 20 ms. Flat memory means peak(N) / peak(N/4) close
  to 1, far below 4. The baseline's peak includes TensorFlow itself, so the
  RSS after imports is printed too.
* Correctness. After every repeat both outputs are read back with TensorFlow
  (``tf.data.TFRecordDataset``): each must hold N records, and record ``i`` of
  one must equal record ``i`` of the other (same image bytes, file name,
  size, labels, flags; boxes within 1e-6). Any difference exits non-zero, so
  the benchmark never times a converter that writes something else.

Usage::

    python benchmarks/convert.py                 # 2000 images, 2 workers, 8 shards, 3 repeats
    python benchmarks/convert.py --quick         # 400 images, 1 repeat: a smoke run
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import hashlib
import io
import multiprocessing
import os
import platform
import shutil
import statistics
import sys
import tempfile
import threading
import time
from typing import Callable, Optional

import PIL
from lxml import etree
from PIL import Image

# Before any TensorFlow import, here and in spawned children: keep TensorFlow's C++ INFO and
# WARNING logs out of the report (a few lines printed before its logging starts still appear).
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if REPO_ROOT not in sys.path:
    sys.path.insert(0, REPO_ROOT)

import tfrecord_tools  # noqa: E402  (after the repository root is importable)
from tfrecord_tools import label_map as label_map_io  # noqa: E402

SOURCE_DATASET = "voc_raccoon"
SPLIT = "train"
BASELINE_PREFIX = "baseline"
BOX_TOLERANCE = 1e-6
SAMPLE_INTERVAL_S = 0.02
TARGET_SPEEDUP = 1.5

BASELINE_WORK = (
    "baseline: XML -> dict (lxml), read bytes, PIL.Image.open header check (no decode), "
    "SHA-256, tf.train.Example, TFRecordWriter; sizes and boxes taken from the XML unchecked"
)
OURS_WORK = (
    "ours:     XML parse with safe parser, read bytes, JPEG segment walk + end-of-image check, "
    "[decode: full entropy decode in draft mode, finds damaged scan data], EXIF + XML size vs real size "
    "check, box validation and clipping, SHA-256, tf.Example, CRC-framed write, shards renamed atomically"
)


# --------------------------------------------------------------------------- dataset


@dataclasses.dataclass
class Dataset:
    """A VOC dataset in loose-folder layout.

    Attributes:
        annotations_dir: the XML files.
        images_dir: the JPEGs.
        images: number of images.
        objects: number of annotated objects.
        megabytes: total size of the image files.
    """

    annotations_dir: str
    images_dir: str
    images: int
    objects: int
    megabytes: float


def _link_or_copy(source: str, target: str) -> None:
    try:
        os.link(source, target)
    except OSError:
        shutil.copyfile(source, target)


def build_dataset(datasets_dir: str, target_dir: str, num_images: int) -> Dataset:
    """Replicates the raccoon VOC dataset under distinct names until it has ``num_images``.

    Args:
        datasets_dir: the folder holding ``voc_raccoon/{images,annotations}``.
        target_dir: an empty (or absent) folder to build in.
        num_images: images to write.

    Returns:
        The dataset's folders and size.

    Raises:
        SystemExit: the source dataset is missing.
    """
    source = os.path.join(datasets_dir, SOURCE_DATASET)
    source_annotations = os.path.join(source, "annotations")
    source_images = os.path.join(source, "images")
    if not (os.path.isdir(source_annotations) and os.path.isdir(source_images)):
        raise SystemExit(
            f"benchmarks/convert.py: error: {source} has no annotations/ and images/ folders;"
            " pass --datasets pointing at the shared datasets folder (the one holding voc_raccoon/)"
        )
    stems = sorted(name[:-4] for name in os.listdir(source_annotations) if name.endswith(".xml"))
    annotations_dir = os.path.join(target_dir, "annotations")
    images_dir = os.path.join(target_dir, "images")
    os.makedirs(annotations_dir)
    os.makedirs(images_dir)
    parser = etree.XMLParser(resolve_entities=False, no_network=True)
    images = objects = total_bytes = 0
    replica = 0
    while images < num_images:
        for stem in stems:
            if images == num_images:
                break
            tree = etree.parse(os.path.join(source_annotations, stem + ".xml"), parser)
            filename_element = tree.getroot().find("filename")
            extension = os.path.splitext(filename_element.text.strip())[1]
            new_stem = f"{stem}_r{replica:03d}"
            filename_element.text = new_stem + extension
            tree.write(os.path.join(annotations_dir, new_stem + ".xml"), encoding="utf-8", xml_declaration=False)
            image_path = os.path.join(images_dir, new_stem + extension)
            _link_or_copy(os.path.join(source_images, stem + extension), image_path)
            total_bytes += os.path.getsize(image_path)
            objects += len(tree.getroot().findall("object"))
            images += 1
        replica += 1
    return Dataset(annotations_dir, images_dir, images, objects, total_bytes / 1e6)


def warm_page_cache(dataset: Dataset) -> None:
    """Reads every file once, so neither converter pays for cold disk reads."""
    for folder in (dataset.annotations_dir, dataset.images_dir):
        for name in os.listdir(folder):
            with open(os.path.join(folder, name), "rb") as stream:
                stream.read()


# --------------------------------------------------------------------------- baseline


def _xml_to_dict(element) -> dict:
    """``<a><b>1</b><object>..</object><object>..</object></a>`` -> ``{"a": {"b": "1", "object": [..]}}``."""
    if len(element) == 0:
        return {element.tag: element.text}
    content: dict = {}
    for child in element:
        value = _xml_to_dict(child)[child.tag]
        if child.tag == "object":
            content.setdefault("object", []).append(value)
        else:
            content[child.tag] = value
    return {element.tag: content}


def _bytes_feature(train, values: list[bytes]):
    return train.Feature(bytes_list=train.BytesList(value=values))


def _float_feature(train, values: list[float]):
    return train.Feature(float_list=train.FloatList(value=values))


def _int64_feature(train, values: list[int]):
    return train.Feature(int64_list=train.Int64List(value=values))


def _baseline_example(data: dict, images_dir: str, label_map: dict[str, int], train):
    """One annotation dict -> ``tf.train.Example``, as the TF OD API's VOC script builds it.

    Args:
        data: the ``<annotation>`` element as a dict (see ``_xml_to_dict``).
        images_dir: the folder of ``data["filename"]``.
        label_map: class name -> id.
        train: the ``tf.train`` module.
    """
    with open(os.path.join(images_dir, data["filename"]), "rb") as stream:
        encoded = stream.read()
    if Image.open(io.BytesIO(encoded)).format != "JPEG":
        raise ValueError(f"{data['filename']}: image format not JPEG")
    key = hashlib.sha256(encoded).hexdigest()
    width, height = int(data["size"]["width"]), int(data["size"]["height"])
    xmin, ymin, xmax, ymax, texts, labels, difficult, truncated, poses = ([] for _ in range(9))
    for obj in data.get("object", []):
        box = obj["bndbox"]
        xmin.append(float(box["xmin"]) / width)
        ymin.append(float(box["ymin"]) / height)
        xmax.append(float(box["xmax"]) / width)
        ymax.append(float(box["ymax"]) / height)
        texts.append(obj["name"].encode("utf8"))
        labels.append(label_map[obj["name"]])
        difficult.append(int(obj.get("difficult", 0)))
        truncated.append(int(obj.get("truncated", 0)))
        poses.append(obj.get("pose", "").encode("utf8"))
    return train.Example(features=train.Features(feature={
        "image/height": _int64_feature(train, [height]),
        "image/width": _int64_feature(train, [width]),
        "image/filename": _bytes_feature(train, [data["filename"].encode("utf8")]),
        "image/source_id": _bytes_feature(train, [data["filename"].encode("utf8")]),
        "image/key/sha256": _bytes_feature(train, [key.encode("utf8")]),
        "image/encoded": _bytes_feature(train, [encoded]),
        "image/format": _bytes_feature(train, [b"jpeg"]),
        "image/object/bbox/xmin": _float_feature(train, xmin),
        "image/object/bbox/xmax": _float_feature(train, xmax),
        "image/object/bbox/ymin": _float_feature(train, ymin),
        "image/object/bbox/ymax": _float_feature(train, ymax),
        "image/object/class/text": _bytes_feature(train, texts),
        "image/object/class/label": _int64_feature(train, labels),
        "image/object/difficult": _int64_feature(train, difficult),
        "image/object/truncated": _int64_feature(train, truncated),
        "image/object/view": _bytes_feature(train, poses),
    }))


def convert_baseline(dataset: Dataset, output_dir: str, num_shards: int, label_map: dict[str, int]) -> int:
    """The single-process reference converter.

    Args:
        dataset: the VOC folders.
        output_dir: where ``baseline-0000i-of-0000N.tfrecord`` shards go.
        num_shards: shards; record ``i`` goes to shard ``i % num_shards``.
        label_map: class name -> id.

    Returns:
        Records written.
    """
    import tensorflow as tf

    os.makedirs(output_dir, exist_ok=True)
    names = sorted(name for name in os.listdir(dataset.annotations_dir) if name.endswith(".xml"))
    with contextlib.ExitStack() as stack:
        writers = [
            stack.enter_context(tf.io.TFRecordWriter(
                os.path.join(output_dir, f"{BASELINE_PREFIX}-{index:05d}-of-{num_shards:05d}.tfrecord")))
            for index in range(num_shards)
        ]
        for index, name in enumerate(names):
            with open(os.path.join(dataset.annotations_dir, name), "rb") as stream:
                data = _xml_to_dict(etree.fromstring(stream.read()))["annotation"]
            example = _baseline_example(data, dataset.images_dir, label_map, tf.train)
            writers[index % num_shards].write(example.SerializeToString())
    return len(names)


def convert_ours(dataset: Dataset, output_dir: str, num_shards: int, workers: int, image_check: str = "decode") -> int:
    """``tfrecord_tools.convert_voc``; returns the records its manifest lists."""
    manifests = tfrecord_tools.convert_voc(
        output_dir, annotations_dir=dataset.annotations_dir, images_dir=dataset.images_dir,
        num_shards=num_shards, workers=workers, split=SPLIT, progress=False, image_check=image_check,
    )
    return manifests[SPLIT]["images"]


# --------------------------------------------------------------------------- correctness


def _shards(output_dir: str, prefix: str) -> list[str]:
    return sorted(
        os.path.join(output_dir, name) for name in os.listdir(output_dir)
        if name.startswith(prefix + "-") and name.endswith(".tfrecord")
    )


def _records_in_write_order(paths: list[str]) -> list[bytes]:
    """All records of round-robin shards, back in the order they were written (read by TensorFlow)."""
    import tensorflow as tf

    per_shard = [[record.numpy() for record in tf.data.TFRecordDataset(path)] for path in paths]
    ordered = []
    for position in range(max((len(records) for records in per_shard), default=0)):
        ordered.extend(records[position] for records in per_shard if position < len(records))
    return ordered


def _differences(baseline, ours) -> list[str]:
    """What differs between two parsed ``tf.train.Example`` protos (empty when equal)."""
    problems = []
    exact_keys = (
        "image/encoded", "image/filename", "image/source_id", "image/key/sha256", "image/format",
        "image/height", "image/width", "image/object/class/text", "image/object/class/label",
        "image/object/difficult", "image/object/truncated", "image/object/view",
    )
    box_keys = ("image/object/bbox/xmin", "image/object/bbox/ymin", "image/object/bbox/xmax", "image/object/bbox/ymax")
    features_b, features_o = baseline.features.feature, ours.features.feature
    for key in exact_keys + box_keys:
        if key not in features_b or key not in features_o:
            problems.append(f"{key} missing from {'baseline' if key not in features_b else 'ours'}")
            continue
        kind = features_b[key].WhichOneof("kind")
        values_b = list(getattr(features_b[key], kind).value)
        values_o = list(getattr(features_o[key], features_o[key].WhichOneof("kind")).value)
        if key in box_keys:
            equal = len(values_b) == len(values_o) and all(
                abs(b - o) <= BOX_TOLERANCE for b, o in zip(values_b, values_o))
        else:
            equal = values_b == values_o
        if not equal:
            shown = "<image bytes>" if key == "image/encoded" else f"{values_b} vs {values_o}"
            problems.append(f"{key}: {shown}")
    return problems


def compare_outputs(baseline_dir: str, ours_dir: str, expected: int) -> list[str]:
    """Checks both outputs hold ``expected`` records and that record ``i`` agrees on both sides.

    Returns:
        One line per problem; empty when the outputs agree.
    """
    import tensorflow as tf

    baseline = _records_in_write_order(_shards(baseline_dir, BASELINE_PREFIX))
    ours = _records_in_write_order(_shards(ours_dir, SPLIT))
    problems = [
        f"{side} wrote {len(records)} records, expected {expected}"
        for side, records in (("baseline", baseline), ("ours", ours)) if len(records) != expected
    ]
    for index, (record_b, record_o) in enumerate(zip(baseline, ours)):
        example_b, example_o = tf.train.Example.FromString(record_b), tf.train.Example.FromString(record_o)
        filename = example_b.features.feature["image/filename"].bytes_list.value[0].decode()
        problems.extend(f"record {index} ({filename}): {problem}" for problem in _differences(example_b, example_o))
    return problems


# --------------------------------------------------------------------------- memory


def _memory_kb(pid: int) -> tuple[int, int]:
    """``(VmRSS, VmHWM)`` of a process in KiB (zeros when it is gone).

    VmHWM is the peak RSS of the process's own address space; unlike
    ``ru_maxrss`` it does not inherit the peak of the parent it was forked
    from (a spawned child of a process holding TensorFlow would otherwise
    report TensorFlow's size).
    """
    rss = hwm = 0
    try:
        with open(f"/proc/{pid}/status") as stream:
            for line in stream:
                if line.startswith("VmRSS:"):
                    rss = int(line.split()[1])
                elif line.startswith("VmHWM:"):
                    hwm = int(line.split()[1])
    except (FileNotFoundError, ProcessLookupError):
        pass
    return rss, hwm


def _process_tree(root: int) -> list[int]:
    """``root`` and all its descendants."""
    tree, stack = [], [root]
    while stack:
        pid = stack.pop()
        tree.append(pid)
        try:
            for task in os.listdir(f"/proc/{pid}/task"):
                with open(f"/proc/{pid}/task/{task}/children") as stream:
                    stack.extend(int(child) for child in stream.read().split())
        except (FileNotFoundError, ProcessLookupError):
            continue
    return tree


class TreeRssSampler(threading.Thread):
    """Samples a process tree's memory until stopped.

    Attributes:
        peak_kb: the largest summed VmRSS of the tree seen.
        hwm_kb: pid -> the last VmHWM seen, for every process seen.
    """

    def __init__(self, root: int, interval_s: float = SAMPLE_INTERVAL_S):
        super().__init__(daemon=True)
        self.root = root
        self.interval_s = interval_s
        self.peak_kb = 0
        self.hwm_kb: dict[int, int] = {}
        self._stop_event = threading.Event()

    def run(self) -> None:
        while not self._stop_event.is_set():
            total = 0
            for pid in _process_tree(self.root):
                rss, hwm = _memory_kb(pid)
                total += rss
                if hwm:
                    self.hwm_kb[pid] = hwm
            self.peak_kb = max(self.peak_kb, total)
            self._stop_event.wait(self.interval_s)

    def stop(self) -> None:
        self._stop_event.set()
        self.join()


@dataclasses.dataclass
class MemoryResult:
    """Peak memory of one conversion in a fresh process, in MB.

    Attributes:
        tree_peak: peak of the summed RSS of the process and its workers (sampled).
        after_imports: the process's RSS just before converting.
        main_peak: the process's own peak RSS (VmHWM, exact).
        worker_peak: the largest worker's peak RSS (VmHWM, last sample; 0 without workers).
        records: records written.
    """

    tree_peak: float
    after_imports: float
    main_peak: float
    worker_peak: float
    records: int


def _memory_child(side: str, dataset: Dataset, output_dir: str, shards: int, workers: int,
                  label_map: dict[str, int], connection) -> None:
    """Runs one conversion in this fresh process; sends back RSS after imports, VmHWM (KiB), records."""
    if side == "baseline":
        import tensorflow  # noqa: F401  (what the baseline needs, loaded before the reading below)
    after_imports = _memory_kb(os.getpid())[0]
    if side == "baseline":
        records = convert_baseline(dataset, output_dir, shards, label_map)
    else:
        records = convert_ours(dataset, output_dir, shards, workers)
    connection.send((after_imports, _memory_kb(os.getpid())[1], records))
    connection.close()


def measure_memory(side: str, dataset: Dataset, output_dir: str, shards: int, workers: int,
                   label_map: dict[str, int]) -> MemoryResult:
    """Converts in a fresh spawned process, sampling the RSS of its process tree."""
    context = multiprocessing.get_context("spawn")
    receiver, sender = context.Pipe(duplex=False)
    child = context.Process(
        target=_memory_child, args=(side, dataset, output_dir, shards, workers, label_map, sender))
    child.start()
    sender.close()
    sampler = TreeRssSampler(child.pid)
    sampler.start()
    try:
        after_imports, main_peak, records = receiver.recv()
    except EOFError:
        raise SystemExit(f"benchmarks/convert.py: error: the {side} memory run died (exit code {child.exitcode})")
    finally:
        child.join()
        sampler.stop()
    shutil.rmtree(output_dir)
    worker_peak = max((hwm for pid, hwm in sampler.hwm_kb.items() if pid != child.pid), default=0)
    return MemoryResult(sampler.peak_kb / 1024, after_imports / 1024, main_peak / 1024, worker_peak / 1024, records)


# --------------------------------------------------------------------------- driver


def _timed(convert: Callable[[], int]) -> tuple[float, int]:
    start = time.perf_counter()
    records = convert()
    return time.perf_counter() - start, records


def _fresh(path: str) -> str:
    shutil.rmtree(path, ignore_errors=True)
    return path


def _default_datasets() -> str:
    return os.path.join(os.path.dirname(REPO_ROOT), "shared", "datasets")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description="Times tfrecord_tools.convert_voc against a single-process TF OD API-style converter"
                    " on real VOC images, and measures both converters' peak memory.")
    parser.add_argument("--images", type=int, default=None, help="images in the benchmark dataset (default: 2000)")
    parser.add_argument("--workers", type=int, default=2, help="worker processes for ours (default: 2)")
    parser.add_argument("--shards", type=int, default=8, help="output shards for both (default: 8)")
    parser.add_argument("--repeats", type=int, default=None, help="timed runs of each converter (default: 3)")
    parser.add_argument("--datasets", default=_default_datasets(),
                        help=f"folder holding {SOURCE_DATASET}/ (default: %(default)s)")
    parser.add_argument("--work-dir", default=None,
                        help="folder for the dataset and outputs, kept afterwards (default: a temporary folder)")
    parser.add_argument("--quick", action="store_true", help="smoke run: 400 images, 1 repeat (unless given)")
    return parser


def _mb(value: float) -> str:
    return f"{value:,.0f} MB"


def run(args: argparse.Namespace, work_dir: str) -> int:
    """The benchmark proper; returns the exit code."""
    dataset_dir = _fresh(os.path.join(work_dir, f"voc_{args.images}"))
    quarter_dir = _fresh(os.path.join(work_dir, f"voc_{args.images // 4}"))
    dataset = build_dataset(args.datasets, dataset_dir, args.images)
    quarter = build_dataset(args.datasets, quarter_dir, args.images // 4)
    warm_page_cache(dataset)
    label_map_path = os.path.join(args.datasets, SOURCE_DATASET, "training", "object-detection.pbtxt")
    label_map = {name: item_id for item_id, name in label_map_io.load(label_map_path).items}

    import tensorflow as tf  # outside every timed region

    print(f"machine: {os.cpu_count()} cores (load average {os.getloadavg()[0]:.2f}), Python {platform.python_version()},"
          f" TensorFlow {tf.__version__}, Pillow {PIL.__version__}")
    print(f"dataset: {dataset.images} real JPEGs ({dataset.megabytes:.1f} MB, {dataset.objects} boxes) replicated"
          f" from {SOURCE_DATASET} into {dataset_dir}")
    print(f"setup:   {args.shards} shards both sides; ours with {args.workers} workers;"
          f" {args.repeats} repeat(s), alternating, median reported")
    print("work per image (the comparison is not like for like: ours validates, the baseline does not decode):")
    print(f"  {BASELINE_WORK}")
    print(f"  {OURS_WORK}")
    print()

    sides = ("baseline", "ours", "ours_structure")
    outputs = {side: os.path.join(work_dir, f"out_{side}") for side in sides}
    convert = {
        "baseline": lambda: convert_baseline(dataset, outputs["baseline"], args.shards, label_map),
        "ours": lambda: convert_ours(dataset, outputs["ours"], args.shards, args.workers, "decode"),
        "ours_structure": lambda: convert_ours(dataset, outputs["ours_structure"], args.shards, args.workers, "structure"),
    }
    times: dict[str, list[float]] = {side: [] for side in sides}
    for repeat in range(args.repeats):
        # Rotate the order so no side always runs first (cold) or last.
        order = sides[repeat % 3:] + sides[:repeat % 3]
        for side in order:
            _fresh(outputs[side])
            seconds, records = _timed(convert[side])
            times[side].append(seconds)
            print(f"run {repeat + 1}/{args.repeats} {side:<15} {seconds:7.3f} s  {records / seconds:8.1f} images/s"
                  f"  ({records} records)")
        for side in ("ours", "ours_structure"):
            problems = compare_outputs(outputs["baseline"], outputs[side], dataset.images)
            if problems:
                print(f"\nFAILED: {side} and the baseline disagree ({len(problems)} problem(s)):")
                for problem in problems[:20]:
                    print(f"  {problem}")
                return 1
        print(f"           outputs agree: {dataset.images} records each, record by record, all three")

    print("\nmeasuring peak memory in fresh processes ...")
    memory = {
        side: [measure_memory(side, data, os.path.join(work_dir, f"mem_{side}_{data.images}"),
                              args.shards, args.workers, label_map) for data in (quarter, dataset)]
        for side in ("baseline", "ours")
    }
    for side, results in memory.items():
        for data, result in zip((quarter, dataset), results):
            if result.records != data.images:
                print(f"FAILED: {side} memory run wrote {result.records} records, expected {data.images}")
                return 1

    median = {side: statistics.median(values) for side, values in times.items()}
    rate = {side: dataset.images / seconds for side, seconds in median.items()}
    speedup = rate["ours"] / rate["baseline"]
    speedup_structure = rate["ours_structure"] / rate["baseline"]
    n, q = dataset.images, quarter.images
    rows = [
        ("median time", *(f"{median[side]:.3f} s" for side in sides)),
        ("images/s", *(f"{rate[side]:.1f}" for side in sides)),
        ("ratio to baseline", "1.00", f"{speedup:.2f}", f"{speedup_structure:.2f}"),
        ("MB/s of images", *(f"{dataset.megabytes / median[side]:.1f}" for side in sides)),
        ("all runs (s)", *(" ".join(f"{t:.2f}" for t in times[side]) for side in sides)),
        (f"peak RSS, {q} images", _mb(memory["baseline"][0].tree_peak), _mb(memory["ours"][0].tree_peak), "-"),
        (f"peak RSS, {n} images", _mb(memory["baseline"][1].tree_peak), _mb(memory["ours"][1].tree_peak), "-"),
        (f"ratio {n} / {q}",
         f"{memory['baseline'][1].tree_peak / memory['baseline'][0].tree_peak:.2f}",
         f"{memory['ours'][1].tree_peak / memory['ours'][0].tree_peak:.2f}", "-"),
        ("  RSS after imports", _mb(memory["baseline"][1].after_imports), _mb(memory["ours"][1].after_imports), "-"),
        ("  main process peak", _mb(memory["baseline"][1].main_peak), _mb(memory["ours"][1].main_peak), "-"),
        ("  largest worker peak", "-", _mb(memory["ours"][1].worker_peak), "-"),
    ]
    headers = ("", "baseline (TF OD API style)", f"ours, decode ({args.workers} w)", f"ours, structure ({args.workers} w)")
    widths = [max(len(row[column]) for row in rows + [headers]) for column in range(4)]
    print()
    print("  ".join(text.ljust(width) if column == 0 else text.rjust(width)
                    for column, (text, width) in enumerate(zip(headers, widths))))
    for row in rows:
        print("  ".join(text.ljust(width) if column == 0 else text.rjust(width)
                        for column, (text, width) in enumerate(zip(row, widths))))
    print()
    for label, value in (("decode (default)", speedup), ("structure", speedup_structure)):
        print(f"speed ours / baseline, --image-check {label}: {value:.2f}x  (target >= {TARGET_SPEEDUP}x with"
              f" {args.workers} workers: {'met' if value >= TARGET_SPEEDUP else 'NOT met'})")
    print(f"memory ours, {n} vs {q} images: {memory['ours'][1].tree_peak / memory['ours'][0].tree_peak:.2f}x"
          f" (flat means close to 1, far below {n / q:.0f})")
    print("peak RSS = sampled sum of VmRSS over the process and its workers (shared pages counted per process);"
          " the baseline's includes TensorFlow")
    print("outputs: both wrote the same records (image bytes, names, sizes, labels, flags; boxes within"
          f" {BOX_TOLERANCE:g}) in every repeat")
    return 0


def main(argv: Optional[list[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    if args.images is None:
        args.images = 400 if args.quick else 2000
    if args.repeats is None:
        args.repeats = 1 if args.quick else 3
    if args.images < 4 or args.repeats < 1 or args.workers < 1 or args.shards < 1:
        raise SystemExit("benchmarks/convert.py: error: need --images >= 4 and --repeats, --workers, --shards >= 1")
    if not os.path.isdir(args.datasets):
        raise SystemExit(f"benchmarks/convert.py: error: datasets folder {args.datasets} not found (see --datasets)")
    start = time.perf_counter()
    if args.work_dir:
        os.makedirs(args.work_dir, exist_ok=True)
        code = run(args, os.path.abspath(args.work_dir))
    else:
        with tempfile.TemporaryDirectory(prefix="tfdet-bench-") as work_dir:
            code = run(args, work_dir)
    print(f"total benchmark wall time: {time.perf_counter() - start:.1f} s")
    return code


if __name__ == "__main__":
    sys.exit(main())
