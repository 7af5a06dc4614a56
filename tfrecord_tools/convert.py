"""The conversion driver shared by every source format.

plan (format module) -> label map -> checks -> parallel workers -> shards
+ label map + manifest. Bad input either stops the run with a
:class:`ConversionError` naming the file and the reason (the default), or,
with ``skip_invalid``, is left out and listed in the manifest.
"""

from __future__ import annotations

import collections
import concurrent.futures
import contextlib
import dataclasses
import hashlib
import multiprocessing
import os
import shutil
import tempfile
from typing import Callable, Iterable, Iterator, Optional, Union

from tfrecord_tools import schema
from tfrecord_tools.build import BuildResult, build_chunk, build_example, warm_up
from tfrecord_tools.errors import ConversionError
from tfrecord_tools.images import IMAGE_CHECKS
from tfrecord_tools.label_map import LabelMap, LabelMapError, load as load_label_map
from tfrecord_tools.records import ImageRecord, Plan, Problem
from tfrecord_tools.writer import ShardedWriter, write_json_atomic

# Images per task, and tasks in flight per worker: enough to keep every
# worker busy while the main process writes, few enough that memory does not
# grow with the dataset (at most workers * 4 * 16 images are held).
_CHUNK_SIZE = 16
_CHUNKS_IN_FLIGHT_PER_WORKER = 4

VAL_SUFFIX = "_val"


@dataclasses.dataclass
class ConvertOptions:
    """Options every format shares (the ``common`` flags of the command).

    Attributes:
        output_dir: where shards, ``label_map.pbtxt`` and manifests go.
        split: the split name, the prefix of shard and manifest names.
        num_shards: shards of the split.
        workers: worker processes; ``None`` means all cores, 1 runs in-process.
        label_map: a label map (or its path); ``None`` derives one from the data.
        skip_invalid: skip bad images/objects and list them instead of stopping.
        include_masks: rasterise segmentations into ``image/object/mask`` PNGs.
        val_fraction: share of images, chosen by a hash of the file name, that
            go to ``<split>_val`` instead.
        seed: salts that hash, to draw another deterministic split.
        image_check: ``"decode"`` (decode every image: catches damage
            TensorFlow would stop on at train time) or ``"structure"``
            (headers, JPEG end marker, PNG CRCs: catches truncation, faster).
        progress: show a progress bar.
    """

    output_dir: str
    split: str = "train"
    num_shards: int = 1
    workers: Optional[int] = None
    label_map: Union[None, str, LabelMap] = None
    skip_invalid: bool = False
    include_masks: bool = False
    val_fraction: float = 0.0
    seed: int = 0
    image_check: str = "decode"
    progress: bool = True

    def __post_init__(self):
        if self.num_shards < 1:
            raise ValueError("num_shards must be at least 1")
        if not 0.0 <= self.val_fraction < 1.0:
            raise ValueError("val_fraction must be in [0, 1)")
        if self.workers is not None and self.workers < 1:
            raise ValueError("workers must be at least 1")
        if not self.split or os.sep in self.split:
            raise ValueError(f"split must be a plain name, got {self.split!r}")
        if self.image_check not in IMAGE_CHECKS:
            raise ValueError(f"image_check must be one of {IMAGE_CHECKS}, got {self.image_check!r}")


class _Policy:
    """Applies --skip-invalid: collect problems, or stop at the first."""

    def __init__(self, skip_invalid: bool):
        self.skip_invalid = skip_invalid

    def handle(self, problems: Iterable[Problem], skipped: list[dict]) -> None:
        for problem in problems:
            if not self.skip_invalid:
                raise ConversionError(problem.file, problem.reason)  # the reason names the object
            skipped.append(problem.as_dict())


def is_validation(filename: str, fraction: float, seed: int) -> bool:
    """Deterministic split: the same file goes to the same side, on every machine."""
    if fraction <= 0.0:
        return False
    digest = hashlib.sha256(f"{seed}:{filename}".encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") / 2.0**64 < fraction


def _resolve_label_map(option, plan: Plan) -> LabelMap:
    if isinstance(option, LabelMap):
        return option
    if option is None:
        return LabelMap.from_names(plan.class_names)
    try:
        return load_label_map(option)
    except LabelMapError as error:
        raise ConversionError(str(option), str(error).split(": ", 1)[-1]) from None


def _check_duplicates(images: list[ImageRecord]) -> tuple[list[ImageRecord], list[Problem]]:
    """Keeps the first image of each file name / source id, reports the rest."""
    seen_names: dict[str, str] = {}
    seen_ids: dict[str, str] = {}
    kept, problems = [], []
    for record in images:
        clash = seen_names.get(record.filename) or seen_ids.get(record.source_id)
        if clash is not None:
            problems.append(Problem(
                record.annotation_file,
                f"duplicate image {record.filename!r} (source id {record.source_id!r}),"
                f" already given by {clash}",
            ))
            continue
        seen_names[record.filename] = record.annotation_file
        seen_ids[record.source_id] = record.annotation_file
        kept.append(record)
    return kept, problems


def _resolve_labels(record: ImageRecord, label_map: LabelMap) -> list[Problem]:
    problems, kept = [], []
    for position, obj in enumerate(record.objects):
        label = label_map.id_of(obj.class_name)
        if label is None:
            where = f"{obj.ref}: " if obj.ref else ""
            index = obj.index if obj.index >= 0 else position
            problems.append(Problem(record.annotation_file, f"{where}class {obj.class_name!r} is not in the label map", index))
            continue
        obj.label = label
        kept.append(obj)
    record.objects = kept
    return problems


@contextlib.contextmanager
def _worker_pool(workers: int, spill_dir: str) -> Iterator[Optional[concurrent.futures.Executor]]:
    """Worker processes, started at once so they spawn while the plan is made.

    Yields ``None`` for one worker: everything then runs in this process.
    Spawned, not forked: workers start clean even when the caller has
    already imported TensorFlow (forking after TF started its threads can
    deadlock). On exit, work not yet started is cancelled, running work is
    waited for, and then the spill folder is removed with whatever it holds.
    """
    executor = None
    try:
        if workers > 1:
            context = multiprocessing.get_context("spawn")
            executor = concurrent.futures.ProcessPoolExecutor(workers, mp_context=context)
            for _ in range(workers):
                executor.submit(warm_up)
        yield executor
    finally:
        if executor is not None:
            executor.shutdown(wait=True, cancel_futures=True)
        shutil.rmtree(spill_dir, ignore_errors=True)


Built = tuple[BuildResult, Optional[int], int]  # result, spill file descriptor, offset in it


def _build_in_order(
    executor: Optional[concurrent.futures.Executor], records: list[ImageRecord], workers: int,
    spill_dir: str, **build_options
) -> Iterator[Built]:
    """Yields ``(result, spill_fd, offset)`` per record, in record order, with bounded memory.

    In-process, the framed record is in ``result.example`` (and ``spill_fd``
    is None). With workers, records go out in chunks, each built into its own
    spill file; at most ``workers * _CHUNKS_IN_FLIGHT_PER_WORKER`` chunks are
    ahead, so memory and disk use do not grow with the dataset. Closing the
    generator early (an error in the caller, Ctrl-C) cancels what has not
    started.
    """
    if executor is None:
        for record in records:
            yield build_example(record, **build_options), None, 0
        return
    window = workers * _CHUNKS_IN_FLIGHT_PER_WORKER
    pending: collections.deque = collections.deque()
    try:
        for index, start in enumerate(range(0, len(records), _CHUNK_SIZE)):
            spill = os.path.join(spill_dir, f"chunk-{index:07d}")
            pending.append((spill, executor.submit(build_chunk, records[start:start + _CHUNK_SIZE], spill, **build_options)))
            if len(pending) >= window:
                yield from _drain(*pending.popleft())
        while pending:
            yield from _drain(*pending.popleft())
    finally:
        for _, future in pending:
            future.cancel()


def _drain(spill: str, future: concurrent.futures.Future) -> Iterator[Built]:
    results = future.result()
    descriptor = os.open(spill, os.O_RDONLY)
    try:
        offset = 0
        for result in results:
            yield result, descriptor, offset
            offset += result.size
    finally:
        os.close(descriptor)
        os.remove(spill)


def _progress(total: int, enabled: bool, description: str):
    from tqdm import tqdm

    return tqdm(total=total, unit="img", desc=description, disable=not enabled, dynamic_ncols=True)


class _SplitStats:
    def __init__(self, name: str, label_map: LabelMap):
        self.name = name
        self.images = 0
        self.objects = 0
        self.background_images = 0
        self.classes = {name: 0 for name in label_map.names}
        self.skipped: list[dict] = []

    def add(self, result: BuildResult) -> None:
        self.images += 1
        self.objects += len(result.class_names)
        self.background_images += not result.class_names
        for class_name in result.class_names:
            self.classes[class_name] = self.classes.get(class_name, 0) + 1


def run_conversion(
    plan: Union[Plan, Callable[[], Plan]], options: ConvertOptions, source_format: str, source: str
) -> dict:
    """Converts a plan into shards, a label map and manifests.

    Args:
        plan: the images and planning problems from a format module, or a
            function making them from an ordered ``map`` function: the worker
            pool's, so formats with one annotation file per image can parse
            them in parallel, or the built-in one for a single worker.
        options: the shared options.
        source_format: ``voc``, ``coco``, ``kitti`` or ``yolo``, for the manifest.
        source: what was converted (a folder or file), for the manifest.

    Returns:
        The manifests, split name -> manifest dict (as written to disk).

    Raises:
        ConversionError: bad input and ``skip_invalid`` is off; nothing is
            left under a final shard name.
    """
    workers = options.workers or os.cpu_count() or 1
    os.makedirs(options.output_dir, exist_ok=True)
    spill_dir = tempfile.mkdtemp(prefix=".tfrecord-tools-", dir=options.output_dir)
    with _worker_pool(workers, spill_dir) as executor:
        if callable(plan):
            plan = plan(executor.map if executor is not None else map)
        return _convert(plan, options, source_format, source, executor, workers, spill_dir)


def _convert(
    plan: Plan, options: ConvertOptions, source_format: str, source: str, executor, workers: int, spill_dir: str
) -> dict:
    policy = _Policy(options.skip_invalid)
    label_map = _resolve_label_map(options.label_map, plan)

    planning_skipped: list[dict] = []
    policy.handle(plan.problems, planning_skipped)
    images, duplicates = _check_duplicates(plan.images)
    policy.handle(duplicates, planning_skipped)
    for record in images:
        policy.handle(_resolve_labels(record, label_map), planning_skipped)

    split_names = [options.split] + ([options.split + VAL_SUFFIX] if options.val_fraction > 0 else [])
    assignment = [int(is_validation(record.filename, options.val_fraction, options.seed)) for record in images]
    shard_counts = [options.num_shards, max(1, round(options.num_shards * options.val_fraction))]
    stats = [_SplitStats(name, label_map) for name in split_names]
    stats[0].skipped.extend(planning_skipped)

    writers = [ShardedWriter(options.output_dir, name, shard_counts[index]) for index, name in enumerate(split_names)]
    for writer in writers:
        writer.__enter__()
    try:
        results = contextlib.closing(_build_in_order(
            executor, images, workers, spill_dir,
            include_masks=options.include_masks, image_check=options.image_check))
        with results as built, _progress(len(images), options.progress, f"{source_format} -> {options.split}") as bar:
            for side, (result, spill_fd, offset) in zip(assignment, built):
                policy.handle(result.problems, stats[side].skipped)
                if result.size:
                    if spill_fd is None:
                        writers[side].write(result.example)
                    else:
                        writers[side].copy_range(spill_fd, offset, result.size)
                    stats[side].add(result)
                bar.update(1)
        shards = [writer.commit() for writer in writers]
    finally:
        for writer in writers:
            writer.__exit__(None, None, None)

    label_map.save(os.path.join(options.output_dir, schema.LABEL_MAP_NAME))
    manifests = {}
    for split_stats, split_shards in zip(stats, shards):
        manifest = {
            "split": split_stats.name,
            "format": source_format,
            "source": source,
            "images": split_stats.images,
            "objects": split_stats.objects,
            "background_images": split_stats.background_images,
            "classes": split_stats.classes,
            "label_map": schema.LABEL_MAP_NAME,
            "skipped": split_stats.skipped,
            "dropped": dict(plan.dropped) if split_stats is stats[0] else {},
            "notes": dict(plan.notes) if split_stats is stats[0] else {},
            "shards": split_shards,
            "options": {
                "include_masks": options.include_masks,
                "skip_invalid": options.skip_invalid,
                "val_fraction": options.val_fraction,
                "seed": options.seed,
            },
        }
        write_json_atomic(os.path.join(options.output_dir, schema.manifest_name(split_stats.name)), manifest)
        manifests[split_stats.name] = manifest
    return manifests
