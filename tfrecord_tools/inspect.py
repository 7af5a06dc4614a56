"""``tfrecord-tools inspect``: what is in a set of shards, as a table and as pictures."""

from __future__ import annotations

import collections
import os
from typing import Optional

from tfrecord_tools import schema
from tfrecord_tools.reader import expand_pattern, feature, find_label_map, iterate_examples, scalar


def summarize(pattern: str, render: int = 0, out_dir: Optional[str] = None, progress: bool = True) -> dict:
    """Counts records, objects and classes; renders the first ``render`` records as PNGs.

    Returns:
        A summary dict: ``shards``, ``records``, ``objects``, ``classes``
        (name -> objects), ``class_images`` (name -> images containing it),
        ``formats``, ``min_size``/``max_size`` (width, height),
        ``max_objects``, ``background_images``, ``with_masks``, ``crowd``,
        ``difficult``, ``rendered`` (paths).
    """
    from tqdm import tqdm

    paths = expand_pattern(pattern)
    if not paths:
        raise FileNotFoundError(f"{pattern}: no file matches")
    label_map = find_label_map(paths)
    classes: collections.Counter = collections.Counter()
    class_images: collections.Counter = collections.Counter()
    formats: collections.Counter = collections.Counter()
    summary = {"shards": len(paths), "records": 0, "objects": 0, "max_objects": 0, "background_images": 0,
               "with_masks": 0, "crowd": 0, "difficult": 0, "min_size": None, "max_size": None, "rendered": []}
    if render:
        os.makedirs(out_dir, exist_ok=True)
    for path, index, example in tqdm(iterate_examples(paths), unit="rec", disable=not progress, desc="inspect"):
        summary["records"] += 1
        names = [text.decode("utf-8", "replace") for text in feature(example, schema.OBJECT_CLASS_TEXT, [])]
        classes.update(names)
        class_images.update(set(names))
        summary["objects"] += len(names)
        summary["max_objects"] = max(summary["max_objects"], len(names))
        summary["background_images"] += not names
        summary["with_masks"] += bool(feature(example, schema.OBJECT_MASK))
        summary["crowd"] += sum(feature(example, schema.OBJECT_IS_CROWD, []))
        summary["difficult"] += sum(feature(example, schema.OBJECT_DIFFICULT, []))
        formats[scalar(example, schema.IMAGE_FORMAT, b"?").decode()] += 1
        size = (scalar(example, schema.IMAGE_WIDTH, 0), scalar(example, schema.IMAGE_HEIGHT, 0))
        summary["min_size"] = size if summary["min_size"] is None else tuple(map(min, summary["min_size"], size))
        summary["max_size"] = size if summary["max_size"] is None else tuple(map(max, summary["max_size"], size))
        if len(summary["rendered"]) < render:
            from tfrecord_tools.render import render_example

            stem = os.path.splitext(os.path.basename(scalar(example, schema.IMAGE_FILENAME, b"image").decode()))[0]
            target = os.path.join(out_dir, f"{len(summary['rendered']):04d}_{stem}.png")
            render_example(example).save(target)
            summary["rendered"].append(target)
    order = label_map.names if label_map is not None else sorted(classes)
    order += sorted(name for name in classes if name not in order)
    summary["classes"] = {name: classes[name] for name in order}
    summary["class_images"] = {name: class_images[name] for name in order}
    summary["class_ids"] = {name: label_map.id_of(name) if label_map else None for name in order}
    summary["formats"] = dict(formats)
    return summary


def format_table(summary: dict) -> str:
    """The summary as aligned text for a terminal."""
    lines = [
        f"shards {summary['shards']}   records {summary['records']}   objects {summary['objects']}"
        f"   background images {summary['background_images']}   with masks {summary['with_masks']}",
        f"formats {', '.join(f'{k} {v}' for k, v in sorted(summary['formats'].items()))}"
        f"   sizes {summary['min_size']} .. {summary['max_size']} (w, h)"
        f"   objects per image <= {summary['max_objects']}   crowd {summary['crowd']}   difficult {summary['difficult']}",
        "",
    ]
    width = max([5] + [len(name) for name in summary["classes"]])
    lines.append(f"{'id':>4}  {'class':<{width}}  {'objects':>8}  {'images':>7}")
    for name, count in summary["classes"].items():
        class_id = summary["class_ids"].get(name)
        lines.append(f"{class_id if class_id is not None else '-':>4}  {name:<{width}}  {count:>8}  {summary['class_images'][name]:>7}")
    return "\n".join(lines)
