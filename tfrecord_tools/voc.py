"""Pascal VOC XML -> ImageRecords.

Two layouts: a VOCdevkit year folder (``Annotations/``, ``JPEGImages/``,
``ImageSets/Main/<split>.txt``) or loose folders of XML and images with an
optional image-set file. XML is parsed with entity resolution, DTD loading
and network access off; a file that declares entities is refused.
"""

from __future__ import annotations

import os
from typing import Callable, Optional

from lxml import etree

from tfrecord_tools.errors import ConversionError
from tfrecord_tools.records import ImageRecord, ObjectRecord, Plan, Problem

_IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".JPG", ".JPEG", ".PNG")


# One parser per process (lxml parsers are reusable, not shareable across threads).
_PARSER = etree.XMLParser(
    resolve_entities=False, no_network=True, load_dtd=False, dtd_validation=False, huge_tree=False
)


def _children(element) -> dict:
    """Child tag -> element, first occurrence wins (one pass; ``find`` per tag is slower)."""
    children = {}
    for child in element:
        if isinstance(child.tag, str):
            children.setdefault(child.tag, child)
    return children


def _text(children: dict, tag: str) -> Optional[str]:
    child = children.get(tag)
    if child is None or child.text is None:
        return None
    text = child.text.strip()
    return text or None


def _read_image_set(path: str) -> list[str]:
    """Image ids of an ImageSets file; per-class files' second column is ignored."""
    try:
        with open(path, encoding="utf-8") as stream:
            return [line.split()[0] for line in stream if line.strip()]
    except OSError as error:
        raise ConversionError(path, f"cannot read image set ({error.strerror})") from None


def _flag(children: dict, tag: str, ref: str) -> int:
    value = _text(children, tag)
    if value is None:
        return 0
    try:
        return int(float(value) != 0)
    except ValueError:
        raise ValueError(f"{ref}: <{tag}> is {value!r}, not a number") from None


def parse_annotation(xml_path: str, images_dir: str, ignore_difficult: bool, dropped: dict) -> tuple[Optional[ImageRecord], list[Problem]]:
    """Parses one VOC XML file.

    Returns:
        The record (``None`` when the file is unusable) and its problems.
    """
    try:
        tree = etree.parse(xml_path, _PARSER)
    except OSError as error:
        reason = "annotation file not found" if not os.path.exists(xml_path) else f"cannot read ({error})"
        return None, [Problem(xml_path, reason)]
    except etree.XMLSyntaxError as error:
        return None, [Problem(xml_path, f"XML does not parse ({error.msg})")]
    dtd = tree.docinfo.internalDTD
    if dtd is not None and any(True for _ in dtd.iterentities()):
        return None, [Problem(xml_path, "XML declares entities (<!ENTITY>); they are not expanded, so the file is refused")]
    if tree.docinfo.system_url or tree.docinfo.public_id:
        return None, [Problem(xml_path, "XML refers to an external DTD; it is not loaded, so the file is refused")]
    root = tree.getroot()
    if root.tag != "annotation":
        return None, [Problem(xml_path, f"root element is <{root.tag}>, not <annotation>")]

    fields = _children(root)
    filename = _text(fields, "filename")
    stem = os.path.splitext(os.path.basename(xml_path))[0]
    candidates = ([filename] if filename else []) + [stem + extension for extension in _IMAGE_EXTENSIONS]
    image_name = next(
        (name for name in candidates if os.path.isfile(os.path.join(images_dir, name))),
        filename or stem + ".jpg",
    )
    if os.path.basename(image_name) != image_name:
        return None, [Problem(xml_path, f"<filename> {image_name!r} is not a plain file name")]

    declared_size = None
    size = fields.get("size")
    if size is not None:
        size = _children(size)
        try:
            width, height = int(float(_text(size, "width") or 0)), int(float(_text(size, "height") or 0))
        except ValueError:
            return None, [Problem(xml_path, "<size> has a non-numeric width or height")]
        if width > 0 and height > 0:  # some tools write 0 when they did not know
            declared_size = (width, height)

    record = ImageRecord(
        image_path=os.path.join(images_dir, image_name),
        filename=image_name,
        source_id=image_name,  # the TF OD API's choice for VOC
        annotation_file=xml_path,
        declared_size=declared_size,
    )
    problems = []
    for index, element in enumerate(root.iterchildren("object")):
        ref = f"object {index}"
        element = _children(element)
        try:
            name = _text(element, "name")
            if name is None:
                raise ValueError(f"{ref} has no <name>")
            box_element = element.get("bndbox")
            if box_element is None:
                raise ValueError(f"{ref} ({name}) has no <bndbox>")
            box_element = _children(box_element)
            coordinates = []
            for tag in ("xmin", "ymin", "xmax", "ymax"):
                value = _text(box_element, tag)
                if value is None:
                    raise ValueError(f"{ref} ({name}) has no <{tag}>")
                try:
                    coordinates.append(float(value))
                except ValueError:
                    raise ValueError(f"{ref} ({name}): <{tag}> is {value!r}, not a number") from None
            difficult = _flag(element, "difficult", ref)
            truncated = _flag(element, "truncated", ref)
        except ValueError as error:
            problems.append(Problem(xml_path, str(error), index))
            continue
        if difficult and ignore_difficult:
            dropped["difficult"] = dropped.get("difficult", 0) + 1
            continue
        record.objects.append(ObjectRecord(
            box=tuple(coordinates),
            class_name=name,
            difficult=difficult,
            truncated=truncated,
            pose=_text(element, "pose") or "",
            ref=ref,
            index=index,
        ))
    return record, problems


def parse_annotations(xml_paths: list[str], images_dir: str, ignore_difficult: bool) -> list:
    """``parse_annotation`` over a chunk of files: ``[(record, problems, dropped), ...]``."""
    results = []
    for xml_path in xml_paths:
        dropped: dict = {}
        record, problems = parse_annotation(xml_path, images_dir, ignore_difficult, dropped)
        results.append((record, problems, dropped))
    return results


_PARSE_CHUNK = 64


def plan_voc(
    voc_root: Optional[str] = None,
    split_set: Optional[str] = None,
    annotations_dir: Optional[str] = None,
    images_dir: Optional[str] = None,
    image_set: Optional[str] = None,
    ignore_difficult: bool = False,
    map_function: Callable = map,
) -> Plan:
    """Finds and parses the annotations of a VOC dataset.

    Args:
        voc_root: a VOCdevkit year folder (with ``split_set``), or
        annotations_dir, images_dir: loose folders, with ``image_set``
            optionally listing the ids (file stems) to convert.
        ignore_difficult: leave ``difficult`` objects out (counted) instead
            of keeping them flagged.
        map_function: an ordered ``map`` (the worker pool's, to parse the XML
            files in parallel); the built-in by default.

    Returns:
        A plan; classes for a default label map are the names found, sorted.
    """
    if voc_root is not None:
        if annotations_dir or images_dir:
            raise ValueError("give either voc_root or annotations_dir/images_dir, not both")
        annotations_dir = os.path.join(voc_root, "Annotations")
        images_dir = os.path.join(voc_root, "JPEGImages")
        image_set = os.path.join(voc_root, "ImageSets", "Main", f"{split_set or 'train'}.txt")
    if not annotations_dir or not images_dir:
        raise ValueError("VOC needs voc_root, or annotations_dir and images_dir")
    for folder in (annotations_dir, images_dir):
        if not os.path.isdir(folder):
            raise ConversionError(folder, "folder not found")

    if image_set:
        xml_paths = [os.path.join(annotations_dir, image_id + ".xml") for image_id in _read_image_set(image_set)]
    else:
        xml_paths = sorted(
            os.path.join(annotations_dir, name) for name in os.listdir(annotations_dir) if name.endswith(".xml")
        )
    plan = Plan(images=[])
    chunks = [xml_paths[start:start + _PARSE_CHUNK] for start in range(0, len(xml_paths), _PARSE_CHUNK)]
    parsed = map_function(parse_annotations, chunks, [images_dir] * len(chunks), [ignore_difficult] * len(chunks))
    for chunk in parsed:
        for record, problems, dropped in chunk:
            plan.problems.extend(problems)
            for reason, count in dropped.items():
                plan.dropped[reason] = plan.dropped.get(reason, 0) + count
            if record is not None:
                plan.images.append(record)
    plan.class_names = sorted({obj.class_name for record in plan.images for obj in record.objects})
    return plan
