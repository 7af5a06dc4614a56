"""``predict``: an exported detector on images, a folder or a video; pictures plus COCO results.

Writes into ``output_dir``:

* one annotated PNG per image (``<name>.png``), or ``<video name>.mp4``
  (``mp4v``) with every frame annotated;
* ``detections.json``: a COCO result list ``[{image_id, category_id, bbox
  [x, y, w, h] pixels of the original image, score}]`` of the detections
  with ``score >= threshold`` (use ``threshold=0`` for AP);
* ``images.json``: ``{"images": [{id, file_name, height, width}],
  "categories": [{id, name}]}``: image ids are a running index from 1 in
  input order (video: frame index + 1, ``file_name`` = ``video#frame``),
  category ids the label-map ids, so the results can be scored once ground
  truth uses the same ids (``tfdet metrics``).

Images that cannot be decoded and folder entries that are not images are
skipped, named with their reason in the returned summary, and counted.
"""

from __future__ import annotations

import os
from typing import Any, Sequence, Union

import numpy as np

from tfdet.inference.draw import draw_detections
from tfdet.inference.exported import ExportedDetector
from tfdet.inference.inputs import UnreadableImage, collect_inputs, read_image
from tfrecord_tools.writer import write_json_atomic

RESULTS_FILE = "detections.json"
IMAGES_FILE = "images.json"


def coco_results(image_id: int, detections: dict) -> list[dict]:
    """One image's detections (``ExportedDetector.detect``) as COCO result dicts."""
    results = []
    for (y1, x1, y2, x2), label_id, score in zip(detections["boxes"], detections["label_ids"], detections["scores"]):
        results.append({"image_id": int(image_id), "category_id": int(label_id),
                        "bbox": [float(x1), float(y1), float(x2 - x1), float(y2 - y1)], "score": float(score)})
    return results


def _write_png(path: str, image_bgr: np.ndarray) -> None:
    import cv2

    ok, encoded = cv2.imencode(".png", image_bgr)
    if not ok:
        raise OSError(f"{path}: PNG encoding failed")
    temporary = os.path.join(os.path.dirname(path), f".{os.path.basename(path)}.tmp-{os.getpid()}")
    with open(temporary, "wb") as stream:
        stream.write(encoded.tobytes())
    os.replace(temporary, path)


def _output_name(path: str, taken: set) -> str:
    stem, extension = os.path.splitext(os.path.basename(path))
    name = f"{stem}.png"
    if name in taken:  # a.jpg and a.png in one run
        name = f"{stem}_{extension.lstrip('.')}.png"
    counter = 1
    while name in taken:
        name, counter = f"{stem}_{counter}.png", counter + 1
    taken.add(name)
    return name


def predict(
    export_dir: str,
    inputs: Union[str, os.PathLike, Sequence],
    output_dir: str,
    threshold: float = 0.3,
    label_map: Any = None,
) -> dict:
    """Runs an exported detector on images, a folder of images, or a video.

    Args:
        export_dir: a tfdet SavedModel export (or the ``tfdet export --output`` folder).
        inputs: an image path, a folder, a video path, or a list of image paths.
        output_dir: where the annotated files and the JSON files go (created).
        threshold: the lowest score drawn and written.
        label_map: overrides the export's label map (path, ``LabelMap`` or ``{id: name}``).

    Returns:
        ``{"kind", "images" (count processed; video: frames), "detections"
        (count), "skipped" [{file, reason}], "num_skipped", "outputs"
        [annotated files], "results", "images_json", "threshold"}``.

    Raises:
        tfdet.inference.inputs.InputError: a missing input path.
        tfdet.inference.exported.PredictError: an unusable export.
    """
    kind, paths, skipped = collect_inputs(inputs)
    detector = ExportedDetector(export_dir, label_map=label_map)
    os.makedirs(output_dir, exist_ok=True)
    if kind == "video":
        from tfdet.inference.video import predict_video

        images, results, outputs, video_skipped = predict_video(detector, paths[0], output_dir, threshold)
        skipped += video_skipped
    else:
        images, results, outputs = [], [], []
        taken: set = set()
        for path in paths:
            try:
                image = read_image(path)
            except UnreadableImage as error:
                skipped.append({"file": path, "reason": str(error)})
                continue
            image_id = len(images) + 1
            detections = detector.detect(image, threshold)
            results += coco_results(image_id, detections)
            images.append({"id": image_id, "file_name": path, "height": int(image.shape[0]),
                           "width": int(image.shape[1])})
            annotated = draw_detections(image[..., ::-1], detections["boxes"], detections["label_ids"],
                                        detections["scores"], detector.names)
            output = os.path.join(output_dir, _output_name(path, taken))
            _write_png(output, annotated)
            outputs.append(output)
    results_path = os.path.join(output_dir, RESULTS_FILE)
    images_path = os.path.join(output_dir, IMAGES_FILE)
    write_json_atomic(results_path, results)
    write_json_atomic(images_path, {"images": images, "categories": detector.category_list()})
    return {
        "kind": kind,
        "images": len(images),
        "detections": len(results),
        "skipped": skipped,
        "num_skipped": len(skipped),
        "outputs": outputs,
        "results": results_path,
        "images_json": images_path,
        "threshold": float(threshold),
    }
