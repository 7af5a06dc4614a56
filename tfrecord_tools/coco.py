"""MS-COCO instance JSON -> ImageRecords.

Boxes come from ``bbox`` (``[x, y, width, height]`` in pixels); masks from
``segmentation`` (polygons, compressed or uncompressed RLE) when requested.
Crowd annotations are kept with ``is_crowd=1``, as the TF OD API does when
asked, because evaluators need them to ignore crowd regions.
"""

from __future__ import annotations

import json
import os

from tfrecord_tools.errors import ConversionError
from tfrecord_tools.records import ImageRecord, ObjectRecord, Plan, Problem


def _load_json(path: str) -> dict:
    try:
        with open(path, encoding="utf-8") as stream:
            data = json.load(stream)
    except FileNotFoundError:
        raise ConversionError(path, "annotation file not found") from None
    except OSError as error:
        raise ConversionError(path, f"cannot read ({error.strerror})") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise ConversionError(path, f"JSON does not parse ({error})") from None
    if not isinstance(data, dict):
        raise ConversionError(path, "top level is not a JSON object")
    for key in ("images", "annotations", "categories"):
        if not isinstance(data.get(key), list):
            raise ConversionError(path, f"no {key!r} list (is this a COCO instances file?)")
    return data


def _inside(images_dir: str, file_name: str) -> bool:
    """Whether ``file_name`` stays inside ``images_dir`` (lexically; symlinks are the user's)."""
    if os.path.isabs(file_name):
        return False
    root = os.path.normpath(images_dir)
    path = os.path.normpath(os.path.join(root, file_name))
    return path.startswith(root + os.sep)


def plan_coco(annotations_file: str, images_dir: str) -> Plan:
    """Reads a COCO instances file.

    The default label map is the categories sorted by COCO id, renumbered
    contiguously ``1..K`` (COCO's 80 classes have ids up to 90); a given
    label map is matched by category name.
    """
    if not os.path.isdir(images_dir):
        raise ConversionError(images_dir, "folder not found")
    data = _load_json(annotations_file)
    plan = Plan(images=[])

    categories = {}
    for category in data["categories"]:
        try:
            categories[int(category["id"])] = str(category["name"])
        except (KeyError, TypeError, ValueError):
            raise ConversionError(annotations_file, f"category {category!r} lacks an integer id or a name") from None
    plan.class_names = [categories[key] for key in sorted(categories)]

    by_image: dict[int, list[dict]] = {}
    image_ids, refused_ids = set(), set()
    records = []
    for entry in data["images"]:
        try:
            image_id, file_name = int(entry["id"]), str(entry["file_name"])
            declared = (int(entry["width"]), int(entry["height"])) if "width" in entry and "height" in entry else None
        except (KeyError, TypeError, ValueError):
            plan.problems.append(Problem(annotations_file, f"image entry {str(entry)[:80]} lacks an id or a file_name"))
            continue
        if not _inside(images_dir, file_name):
            plan.problems.append(Problem(annotations_file, f"image {image_id}: file_name {file_name!r} escapes the images folder"))
            refused_ids.add(image_id)  # its annotations go with it, already reported
            continue
        image_ids.add(image_id)
        records.append((image_id, ImageRecord(
            image_path=os.path.join(images_dir, file_name),
            filename=file_name,
            source_id=str(image_id),
            annotation_file=annotations_file,
            declared_size=declared,
        )))
    for annotation in data["annotations"]:
        image_id = annotation.get("image_id")
        if image_id in refused_ids:
            continue
        if image_id not in image_ids:
            plan.problems.append(Problem(
                annotations_file,
                f"annotation {annotation.get('id')} refers to image {image_id}, which is not in 'images'",
            ))
            continue
        by_image.setdefault(image_id, []).append(annotation)

    for image_id, record in records:
        for index, annotation in enumerate(by_image.get(image_id, [])):
            ref = f"image {record.filename}, annotation {annotation.get('id')}"
            category = categories.get(annotation.get("category_id"))
            if category is None:
                plan.problems.append(Problem(
                    record.annotation_file, f"{ref}: category_id {annotation.get('category_id')} is not in 'categories'", index))
                continue
            try:
                x, y, width, height = (float(value) for value in annotation["bbox"])
            except (KeyError, TypeError, ValueError):
                plan.problems.append(Problem(record.annotation_file, f"{ref}: bbox is missing or not [x, y, w, h]", index))
                continue
            area = annotation.get("area")
            record.objects.append(ObjectRecord(
                box=(x, y, x + width, y + height),
                class_name=category,
                is_crowd=int(bool(annotation.get("iscrowd", 0))),
                area=float(area) if isinstance(area, (int, float)) else None,
                segmentation=annotation.get("segmentation"),
                ref=ref,
                index=index,
            ))
        plan.images.append(record)
    return plan
