"""KITTI object ``label_2`` -> ImageRecords.

Each label line has 15 columns: ``type truncated occluded alpha x1 y1 x2 y2
h w l x y z rotation_y``. The 2D box is pixels, 0-based. 3D box, alpha and
occlusion travel as KITTI extras; ``calib/<id>.txt`` adds the P2 matrix.
"""

from __future__ import annotations

import os
from typing import Optional, Sequence

from tfrecord_tools import schema
from tfrecord_tools.errors import ConversionError
from tfrecord_tools.records import ImageRecord, ObjectRecord, Plan, Problem

# The KITTI object benchmark's classes, in the devkit's order: the default
# label map, so any subset of KITTI converts to the same ids.
KITTI_CLASSES = ("Car", "Van", "Truck", "Pedestrian", "Person_sitting", "Cyclist", "Tram", "Misc")
DONT_CARE = "DontCare"
_IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg")


def _read_p2(calib_path: str) -> list[float]:
    with open(calib_path, encoding="utf-8") as stream:
        for line in stream:
            if line.startswith("P2:"):
                values = [float(value) for value in line.split()[1:]]
                if len(values) != 12:
                    raise ValueError(f"P2 has {len(values)} values, expected 12")
                return values
    raise ValueError("no P2 line")


def parse_label_file(label_path: str, keep_dontcare: bool, classes: Optional[Sequence[str]], dropped: dict):
    """Parses one ``label_2`` file into objects and problems."""
    objects, problems = [], []
    with open(label_path, encoding="utf-8") as stream:
        lines = stream.read().splitlines()
    for index, line in enumerate(lines):
        if not line.strip():
            continue
        columns = line.split()
        ref = f"line {index + 1}"
        if len(columns) != 15:
            problems.append(Problem(label_path, f"{ref} has {len(columns)} columns, KITTI label_2 has 15", index))
            continue
        name = columns[0]
        try:
            truncation, occluded, alpha, x1, y1, x2, y2, *dimensions = (float(value) for value in columns[1:])
        except ValueError:
            problems.append(Problem(label_path, f"{ref} has a non-numeric column", index))
            continue
        if name == DONT_CARE and not keep_dontcare:
            dropped[DONT_CARE] = dropped.get(DONT_CARE, 0) + 1
            continue
        if classes is not None and name not in classes and name != DONT_CARE:
            dropped["not in --classes"] = dropped.get("not in --classes", 0) + 1
            continue
        extras = dict(zip(schema.KITTI_3D_KEYS, dimensions))  # h w l x y z rot_y, as in label_2
        extras[schema.OBJECT_ALPHA] = alpha
        extras[schema.OBJECT_OCCLUDED] = occluded
        objects.append(ObjectRecord(
            box=(x1, y1, x2, y2),
            class_name=name,
            # KITTI's truncation is a fraction leaving the image; the flag is 0/1.
            truncated=int(truncation > 0.0),
            extras=extras,
            ref=ref,
            index=index,
        ))
    return objects, problems


def plan_kitti(
    kitti_root: str, keep_dontcare: bool = False, classes: Optional[Sequence[str]] = None
) -> Plan:
    """Reads ``kitti_root/image_2`` and ``kitti_root/label_2`` (and ``calib`` when present).

    Args:
        keep_dontcare: keep ``DontCare`` regions as a class (appended to the label map).
        classes: keep only these classes; the default label map is then these, in order.
    """
    image_dir = os.path.join(kitti_root, "image_2")
    label_dir = os.path.join(kitti_root, "label_2")
    calib_dir = os.path.join(kitti_root, "calib")
    for folder in (image_dir, label_dir):
        if not os.path.isdir(folder):
            raise ConversionError(folder, "folder not found (expected KITTI's image_2/ and label_2/)")
    images = {os.path.splitext(name)[0]: name for name in sorted(os.listdir(image_dir))
              if name.lower().endswith(_IMAGE_EXTENSIONS)}
    labels = {os.path.splitext(name)[0] for name in os.listdir(label_dir) if name.endswith(".txt")}
    plan = Plan(images=[])
    for stem in sorted(labels - set(images)):
        plan.problems.append(Problem(os.path.join(label_dir, stem + ".txt"), "label file has no image in image_2/"))
    for stem in sorted(images):
        label_path = os.path.join(label_dir, stem + ".txt")
        if stem not in labels:
            plan.problems.append(Problem(os.path.join(image_dir, images[stem]), "image has no label file in label_2/"))
            continue
        try:
            objects, problems = parse_label_file(label_path, keep_dontcare, classes, plan.dropped)
        except (OSError, UnicodeDecodeError) as error:
            plan.problems.append(Problem(label_path, f"cannot read ({error})"))
            continue
        plan.problems.extend(problems)
        record = ImageRecord(
            image_path=os.path.join(image_dir, images[stem]),
            filename=images[stem],
            source_id=stem,
            annotation_file=label_path,
            objects=objects,
        )
        calib_path = os.path.join(calib_dir, stem + ".txt")
        if os.path.isfile(calib_path):
            try:
                record.image_extras[schema.IMAGE_CALIB_P2] = _read_p2(calib_path)
            except (OSError, ValueError) as error:
                plan.problems.append(Problem(calib_path, f"calibration unreadable ({error})"))
                continue
        plan.images.append(record)

    found = sorted({obj.class_name for record in plan.images for obj in record.objects})
    names = list(classes) if classes is not None else list(KITTI_CLASSES)
    names += [name for name in found if name not in names and name != DONT_CARE]
    if keep_dontcare and DONT_CARE not in names:
        names.append(DONT_CARE)
    plan.class_names = names
    return plan
