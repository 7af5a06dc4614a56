"""tfrecord-tools: VOC, COCO, KITTI and YOLO datasets into sharded TFRecords.

Every ``convert_*`` function takes the format's own arguments plus the
shared options of :class:`~tfrecord_tools.convert.ConvertOptions`
(``split``, ``num_shards``, ``workers``, ``label_map``, ``skip_invalid``,
``include_masks``, ``val_fraction``, ``seed``, ``image_check``, ``progress``) and returns the
manifests written, split name -> manifest. Bad input raises
:class:`ConversionError` unless ``skip_invalid`` is set.

This package never imports TensorFlow or Keras: worker processes start in
a fraction of a second and converting needs no model code.
"""

from __future__ import annotations

from typing import Optional, Sequence

from tfrecord_tools.convert import ConvertOptions, run_conversion
from tfrecord_tools.errors import ConversionError
from tfrecord_tools.label_map import LabelMap

__all__ = [
    "ConversionError", "ConvertOptions", "LabelMap",
    "convert_voc", "convert_coco", "convert_kitti", "convert_yolo",
]


def convert_voc(
    output_dir: str,
    *,
    voc_root: Optional[str] = None,
    split_set: str = "train",
    annotations_dir: Optional[str] = None,
    images_dir: Optional[str] = None,
    image_set: Optional[str] = None,
    ignore_difficult: bool = False,
    **options,
) -> dict:
    """Pascal VOC XML (VOCdevkit layout or loose folders) into TFRecords."""
    from tfrecord_tools.voc import plan_voc

    def plan(map_function):
        return plan_voc(voc_root, split_set, annotations_dir, images_dir, image_set, ignore_difficult, map_function)

    return run_conversion(plan, ConvertOptions(output_dir, **options), "voc", voc_root or annotations_dir)


def convert_coco(output_dir: str, *, annotations: str, images_dir: str, **options) -> dict:
    """COCO instances JSON (boxes; masks with ``include_masks=True``) into TFRecords."""
    from tfrecord_tools.coco import plan_coco

    def plan(map_function):  # one JSON file: nothing to parse in parallel
        return plan_coco(annotations, images_dir)

    return run_conversion(plan, ConvertOptions(output_dir, **options), "coco", annotations)


def convert_kitti(
    output_dir: str,
    *,
    kitti_root: str,
    keep_dontcare: bool = False,
    classes: Optional[Sequence[str]] = None,
    **options,
) -> dict:
    """KITTI ``image_2`` + ``label_2`` (+ ``calib``) into TFRecords."""
    from tfrecord_tools.kitti import plan_kitti

    def plan(map_function):  # a few short text lines per image: parsing is cheap
        return plan_kitti(kitti_root, keep_dontcare, classes)

    return run_conversion(plan, ConvertOptions(output_dir, **options), "kitti", kitti_root)


def convert_yolo(output_dir: str, *, images_dir: str, labels_dir: str, names: str, **options) -> dict:
    """YOLO txt labels (boxes, or polygons as masks) into TFRecords."""
    from tfrecord_tools.yolo import plan_yolo

    def plan(map_function):  # a few short text lines per image: parsing is cheap
        return plan_yolo(images_dir, labels_dir, names)

    return run_conversion(plan, ConvertOptions(output_dir, **options), "yolo", labels_dir)
