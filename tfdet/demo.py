"""``tfdet demo``: the whole flow on the bundled raccoon images, no download.

Today the flow is the data step: VOC XML -> sharded TFRecords with a
validation split, then verify and inspect them, rendering a few records so a
person can see the boxes landed where the annotator drew them.
"""

from __future__ import annotations

import os
from importlib import resources


def bundled_raccoon_dir() -> str:
    """The folder of the bundled raccoon subset (``images/``, ``annotations/``)."""
    return str(resources.files("tfdet") / "assets" / "raccoon")


def run_demo(out_dir: str, workers: int | None = None, progress: bool = True) -> dict:
    """Converts, verifies and inspects the bundled dataset under ``out_dir``.

    Returns:
        ``{"manifests": ..., "verified": records, "summary": inspect summary}``.

    Raises:
        RuntimeError: the written shards do not verify (a bug, not bad data:
            the bundled data is known good).
    """
    import tfrecord_tools
    from tfrecord_tools.inspect import format_table, summarize
    from tfrecord_tools.verify import verify

    source = bundled_raccoon_dir()
    records_dir = os.path.join(out_dir, "records")
    print(f"[1/3] converting {source} (Pascal VOC) -> {records_dir}")
    manifests = tfrecord_tools.convert_voc(
        records_dir,
        annotations_dir=os.path.join(source, "annotations"),
        images_dir=os.path.join(source, "images"),
        num_shards=2,
        val_fraction=0.25,
        workers=workers,
        progress=progress,
    )
    for name, manifest in manifests.items():
        print(f"      {name}: {manifest['images']} images, {manifest['objects']} objects, "
              f"{len(manifest['shards'])} shards")

    print("[2/3] verifying every record")
    verified, problems = verify(os.path.join(records_dir, "*.tfrecord"), progress=progress)
    if problems:
        raise RuntimeError("demo records failed verification:\n" + "\n".join(problems))
    print(f"      OK: {verified} records decode and check out")

    renders = os.path.join(out_dir, "inspect")
    print(f"[3/3] inspecting; drawing 4 records into {renders}")
    summary = summarize(os.path.join(records_dir, "train-*.tfrecord"), render=4, out_dir=renders, progress=False)
    print(format_table(summary))
    return {"manifests": manifests, "verified": verified, "summary": summary}
