"""Format-neutral records: what every source format is parsed into.

A format module (``voc``, ``coco``, ``kitti``, ``yolo``) turns its annotation
files into :class:`ImageRecord` objects; the rest of the converter (label
resolution, validation, encoding, sharding) never looks at a source format.

Boxes here are ``(xmin, ymin, xmax, ymax)`` in absolute pixels of the source
annotation, before validation: the order VOC, KITTI and COCO users read in
their files, so error messages quote boxes as the user wrote them.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Optional


@dataclasses.dataclass
class ObjectRecord:
    """One annotated object.

    Attributes:
        box: ``(xmin, ymin, xmax, ymax)`` absolute pixels, as annotated.
        class_name: the class name as the source names it.
        label: label-map id ``1..K``; 0 until the converter resolves it.
        is_crowd, difficult, truncated: 0/1 flags.
        area: area in pixels; ``None`` means "the box area".
        pose: VOC ``<pose>``; empty when absent.
        segmentation: a COCO-style segmentation (list of polygons in absolute
            pixels, or an RLE dict), rasterised into a mask by the worker only
            when masks are requested; ``None`` when the source has none.
        extras: per-object float features (KITTI), schema key -> value.
        ref: how the source names this object ("annotation 42", "line 3"),
            quoted in error messages.
        normalized: ``box`` and polygon coordinates are fractions of the
            image size (YOLO); the worker scales them by the real size.
        index: the object's position in its annotation file (object element,
            line or annotation), reported with problems; -1 when unknown.
    """

    box: tuple[float, float, float, float]
    class_name: str
    label: int = 0
    is_crowd: int = 0
    difficult: int = 0
    truncated: int = 0
    area: Optional[float] = None
    pose: str = ""
    segmentation: Any = None
    extras: dict[str, float] = dataclasses.field(default_factory=dict)
    ref: str = ""
    normalized: bool = False
    index: int = -1


@dataclasses.dataclass
class ImageRecord:
    """One image and its objects, before its bytes are read.

    Attributes:
        image_path: where the image bytes are read from.
        filename: stored as ``image/filename``.
        source_id: stored as ``image/source_id``.
        annotation_file: the file the annotations came from, named in errors
            (the image itself for background images without one).
        objects: the objects, in source order.
        declared_size: ``(width, height)`` the annotation states, checked
            against the image; ``None`` when the format states none.
        image_extras: image-level float list features, schema key -> values.
        refuse_exif_rotation: the labels were made on the EXIF-rotated
            picture (Ultralytics applies the orientation when it loads), so
            an image whose orientation is not 1 cannot be stored unchanged.
    """

    image_path: str
    filename: str
    source_id: str
    annotation_file: str
    objects: list[ObjectRecord] = dataclasses.field(default_factory=list)
    declared_size: Optional[tuple[int, int]] = None
    image_extras: dict[str, list[float]] = dataclasses.field(default_factory=dict)
    refuse_exif_rotation: bool = False


@dataclasses.dataclass
class Problem:
    """A bad input found while converting: a file, the reason, and its scope.

    ``object_index`` is ``None`` when the whole image is unusable, else the
    index of the offending object in its annotation file.
    """

    file: str
    reason: str
    object_index: Optional[int] = None

    def as_dict(self) -> dict:
        entry = {"file": self.file, "reason": self.reason}
        if self.object_index is not None:
            entry["object"] = self.object_index
        return entry

    def __str__(self) -> str:
        where = self.file if self.object_index is None else f"{self.file} (object {self.object_index})"
        return f"{where}: {self.reason}"


@dataclasses.dataclass
class Plan:
    """What a format module found: the images to convert and the problems met.

    Attributes:
        images: the records, in a deterministic order.
        problems: annotation-level problems found while parsing (an XML that
            does not parse, a label file without an image, ...).
        class_names: class names in the order a default label map uses.
        dropped: objects left out on purpose, by reason (``DontCare``, ...).
        notes: counts worth reporting (``background_images``, ...).
    """

    images: list[ImageRecord]
    problems: list[Problem] = dataclasses.field(default_factory=list)
    class_names: list[str] = dataclasses.field(default_factory=list)
    dropped: dict[str, int] = dataclasses.field(default_factory=dict)
    notes: dict[str, int] = dataclasses.field(default_factory=dict)
