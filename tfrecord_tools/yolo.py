"""YOLO / Ultralytics txt labels -> ImageRecords.

One label file per image, same relative path under the labels folder with a
``.txt`` suffix. A line is ``class cx cy w h`` (normalised box) or, for
YOLO-seg, ``class x1 y1 x2 y2 ...`` (normalised polygon; the box is its
extent). An image without a label file is a background image: kept and
counted, as Ultralytics does. A label file without an image is reported.
"""

from __future__ import annotations

import os

import yaml

from tfrecord_tools.errors import ConversionError
from tfrecord_tools.records import ImageRecord, ObjectRecord, Plan, Problem

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff", ".gif")


def read_names(path: str) -> list[str]:
    """Class names from an Ultralytics data YAML (``names:`` list or dict) or a text file, one a line."""
    try:
        with open(path, encoding="utf-8") as stream:
            text = stream.read()
    except OSError as error:
        raise ConversionError(path, f"cannot read names ({error.strerror})") from None
    if path.endswith((".yaml", ".yml")):
        try:
            data = yaml.safe_load(text)
        except yaml.YAMLError as error:
            raise ConversionError(path, f"YAML does not parse ({error})") from None
        names = data.get("names") if isinstance(data, dict) else None
        if isinstance(names, dict):
            try:
                keys = sorted(int(key) for key in names)
            except (TypeError, ValueError):
                raise ConversionError(path, "'names' keys must be class indices") from None
            if keys != list(range(len(keys))):
                raise ConversionError(path, "'names' indices must be 0..N-1 without gaps")
            return [str(names[key] if key in names else names[str(key)]) for key in keys]
        if isinstance(names, list) and names:
            return [str(name) for name in names]
        raise ConversionError(path, "no 'names' list or mapping in the data YAML")
    names = [line.strip() for line in text.splitlines() if line.strip()]
    if not names:
        raise ConversionError(path, "names file is empty")
    return names


def parse_label_file(label_path: str, names: list[str]) -> tuple[list[ObjectRecord], list[Problem]]:
    """Parses one label file; coordinates stay normalised (scaled by the worker)."""
    objects, problems = [], []
    with open(label_path, encoding="utf-8") as stream:
        lines = stream.read().splitlines()
    for line_number, line in enumerate(lines, start=1):
        tokens = line.split()
        if not tokens:
            continue
        ref = f"line {line_number}"
        index = line_number - 1
        try:
            class_index = int(tokens[0])
            values = [float(token) for token in tokens[1:]]
        except ValueError:
            problems.append(Problem(label_path, f"{ref}: not numbers: {line.strip()[:60]!r}", index))
            continue
        if not 0 <= class_index < len(names):
            problems.append(Problem(label_path, f"{ref}: class {class_index} is not in 0..{len(names) - 1}", index))
            continue
        if len(values) == 4:
            cx, cy, width, height = values
            box = (cx - width / 2, cy - height / 2, cx + width / 2, cy + height / 2)
            segmentation = None
        elif len(values) >= 6 and len(values) % 2 == 0:
            xs, ys = values[0::2], values[1::2]
            box = (min(xs), min(ys), max(xs), max(ys))
            segmentation = [values]
        else:
            problems.append(Problem(
                label_path, f"{ref}: {len(values)} coordinates; expected 4 (box) or an even number >= 6 (polygon)", index))
            continue
        objects.append(ObjectRecord(
            box=box, class_name=names[class_index], segmentation=segmentation, ref=ref, normalized=True, index=index))
    return objects, problems


def _relative_files(root: str, suffixes: tuple[str, ...]) -> list[str]:
    found = []
    for folder, subfolders, files in os.walk(root):
        subfolders[:] = sorted(name for name in subfolders if not name.startswith("."))
        for name in files:
            if name.lower().endswith(suffixes) and not name.startswith("."):
                found.append(os.path.relpath(os.path.join(folder, name), root))
    return sorted(found)


def plan_yolo(images_dir: str, labels_dir: str, names_file: str) -> Plan:
    """Pairs images and label files; default label map: the names, ids = index + 1."""
    for folder in (images_dir, labels_dir):
        if not os.path.isdir(folder):
            raise ConversionError(folder, "folder not found")
    names = read_names(names_file)
    plan = Plan(images=[], class_names=list(names))
    images = _relative_files(images_dir, IMAGE_EXTENSIONS)
    image_stems = {os.path.splitext(path)[0] for path in images}
    for label in _relative_files(labels_dir, (".txt",)):
        if os.path.splitext(label)[0] not in image_stems:
            plan.problems.append(Problem(os.path.join(labels_dir, label), "label file has no image"))
    background = 0
    for relative in images:
        stem = os.path.splitext(relative)[0]
        label_path = os.path.join(labels_dir, stem + ".txt")
        record = ImageRecord(
            image_path=os.path.join(images_dir, relative),
            filename=relative,
            source_id=stem,
            annotation_file=label_path,
            refuse_exif_rotation=True,
        )
        if os.path.isfile(label_path):
            try:
                record.objects, problems = parse_label_file(label_path, names)
            except (OSError, UnicodeDecodeError) as error:
                plan.problems.append(Problem(label_path, f"cannot read ({error})"))
                continue
            plan.problems.extend(problems)
        else:
            record.annotation_file = record.image_path
            background += 1
        plan.images.append(record)
    plan.notes["images_without_label_file"] = background
    return plan
