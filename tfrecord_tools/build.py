"""Turns one ImageRecord into a serialised tf.Example: the worker's job.

Runs in worker processes, so it imports nothing heavy: no TensorFlow, no
Keras. Everything that needs the image (its real size, box checks, masks) is
done here, in parallel; the main process only writes the bytes it returns.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
from typing import Optional

from tfrecord_tools import schema
from tfrecord_tools.boxes import InvalidBoxError, validate_box
from tfrecord_tools.images import InvalidImageError, check_declared_size, inspect_image
from tfrecord_tools.masks import InvalidMaskError, encode_png, rasterize
from tfrecord_tools.records import ImageRecord, Problem
from tfrecord_tools.tf_example import BYTES, FLOAT, INT64, encode_example
from tfrecord_tools.tfrecord_io import frame_record


@dataclasses.dataclass
class BuildResult:
    """What a worker sends back for one image.

    Attributes:
        example: the serialised tf.Example framed as a TFRecord record (so
            the checksums are computed in the worker); ``None`` when the
            image is unusable, or when the record went to a spill file.
        problems: the image's problem (when the image is unusable) or the
            objects left out of the example.
        class_names: the class of every object in the example, for counts.
        size: the framed record's length in bytes; 0 when unusable.
    """

    example: Optional[bytes]
    problems: list[Problem]
    class_names: list[str]
    size: int = 0


def warm_up() -> int:
    """A no-op task: submitting one per worker makes the pool start them now."""
    return os.getpid()


def build_example(record: ImageRecord, include_masks: bool = False, image_check: str = "decode") -> BuildResult:
    """Reads, checks and encodes one image and its objects.

    Objects with an invalid box (or, with ``include_masks``, an unusable
    segmentation) are left out and reported; the caller decides whether that
    stops the conversion.
    """
    try:
        with open(record.image_path, "rb") as stream:
            data = stream.read()
    except FileNotFoundError:
        return _unusable(record.image_path, f"image not found (annotated in {record.annotation_file})")
    except OSError as error:
        return _unusable(record.image_path, f"cannot read image ({error.strerror or error})")
    try:
        info = inspect_image(data, image_check)
    except InvalidImageError as error:
        return _unusable(record.image_path, str(error))
    if record.refuse_exif_rotation and info.orientation != 1:
        return _unusable(record.image_path, (
            f"JPEG has EXIF orientation {info.orientation}: its labels refer to the rotated picture but"
            " TensorFlow decodes the stored pixels; rotate the pixels first (e.g. exiftran -ai)"))
    if record.declared_size is not None:
        try:
            check_declared_size(info, record.declared_size)
        except InvalidImageError as error:
            return _unusable(record.annotation_file, f"{error} [{record.image_path}]")

    width, height = info.width, info.height
    problems: list[Problem] = []
    kept = []
    for position, obj in enumerate(record.objects):
        index = obj.index if obj.index >= 0 else position
        box, segmentation = obj.box, obj.segmentation
        if obj.normalized:
            box = (box[0] * width, box[1] * height, box[2] * width, box[3] * height)
            if segmentation is not None:
                segmentation = [_scale_polygon(polygon, width, height) for polygon in segmentation]
        try:
            box = validate_box(box, width, height)
            mask_png = None
            if include_masks:
                if segmentation is None:
                    raise InvalidMaskError("object has no segmentation but masks were requested")
                mask_png = encode_png(rasterize(segmentation, height, width))
        except (InvalidBoxError, InvalidMaskError) as error:
            reason = f"{obj.ref}: {error}" if obj.ref else str(error)
            problems.append(Problem(record.annotation_file, reason, index))
            continue
        kept.append((obj, box, mask_png))

    features = {
        schema.IMAGE_ENCODED: (BYTES, [data]),
        schema.IMAGE_FORMAT: (BYTES, [info.format.encode()]),
        schema.IMAGE_FILENAME: (BYTES, [record.filename.encode("utf-8")]),
        schema.IMAGE_SOURCE_ID: (BYTES, [record.source_id.encode("utf-8")]),
        schema.IMAGE_KEY_SHA256: (BYTES, [hashlib.sha256(data).hexdigest().encode()]),
        schema.IMAGE_HEIGHT: (INT64, [height]),
        schema.IMAGE_WIDTH: (INT64, [width]),
        # The TF OD API normalisation: coordinate / size, no 1-pixel shift.
        schema.OBJECT_XMIN: (FLOAT, [box[0] / width for _, box, _ in kept]),
        schema.OBJECT_YMIN: (FLOAT, [box[1] / height for _, box, _ in kept]),
        schema.OBJECT_XMAX: (FLOAT, [box[2] / width for _, box, _ in kept]),
        schema.OBJECT_YMAX: (FLOAT, [box[3] / height for _, box, _ in kept]),
        schema.OBJECT_CLASS_LABEL: (INT64, [obj.label for obj, _, _ in kept]),
        schema.OBJECT_CLASS_TEXT: (BYTES, [obj.class_name.encode("utf-8") for obj, _, _ in kept]),
        schema.OBJECT_IS_CROWD: (INT64, [obj.is_crowd for obj, _, _ in kept]),
        schema.OBJECT_DIFFICULT: (INT64, [obj.difficult for obj, _, _ in kept]),
        schema.OBJECT_TRUNCATED: (INT64, [obj.truncated for obj, _, _ in kept]),
        schema.OBJECT_AREA: (FLOAT, [
            obj.area if obj.area is not None else (box[2] - box[0]) * (box[3] - box[1])
            for obj, box, _ in kept
        ]),
        schema.OBJECT_POSE: (BYTES, [obj.pose.encode("utf-8") for obj, _, _ in kept]),
    }
    if include_masks:
        features[schema.OBJECT_MASK] = (BYTES, [mask for _, _, mask in kept])
    extra_keys = sorted({key for obj in record.objects for key in obj.extras})
    for key in extra_keys:
        features[key] = (FLOAT, [obj.extras.get(key, 0.0) for obj, _, _ in kept])
    for key, values in record.image_extras.items():
        features[key] = (FLOAT, list(values))
    framed = frame_record(encode_example(features))
    return BuildResult(framed, problems, [obj.class_name for obj, _, _ in kept], len(framed))


def build_chunk(
    records: list[ImageRecord], spill_path: str, include_masks: bool = False, image_check: str = "decode"
) -> list[BuildResult]:
    """Builds a chunk of records into a spill file; returns their results without the bytes.

    The framed records are written back to back into ``spill_path``; the
    main process moves them into the shards with an in-kernel copy. Image
    bytes never travel through a pipe or the main process's memory, and one
    task per chunk keeps the pool's per-task overhead off each image.
    """
    results = []
    with open(spill_path, "wb") as spill:
        for record in records:
            result = build_example(record, include_masks, image_check)
            if result.example is not None:
                spill.write(result.example)
                result.example = None
            results.append(result)
    return results


def _scale_polygon(polygon: list[float], width: int, height: int) -> list[float]:
    return [value * (width if position % 2 == 0 else height) for position, value in enumerate(polygon)]


def _unusable(file: str, reason: str) -> BuildResult:
    return BuildResult(None, [Problem(file, reason)], [])
