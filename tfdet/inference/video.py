"""Prediction on a video: every frame through the export, an annotated ``mp4v`` video out."""

from __future__ import annotations

import os

from tfdet.inference.draw import draw_detections

DEFAULT_FPS = 25.0


def predict_video(detector, path: str, output_dir: str, threshold: float):
    """Annotates every frame of ``path`` into ``output_dir/<name>.mp4``.

    Frames are decoded by OpenCV (BGR), given to ``serving_default`` as RGB.
    The video is written under a temporary name and renamed when complete.

    Args:
        detector: an ``ExportedDetector``.
        path: the input video.
        output_dir: the output folder.
        threshold: the lowest score drawn and written.

    Returns:
        ``(images, results, outputs, skipped)``: ``images`` one COCO image per
        frame (id = frame index + 1), the COCO results, ``[video path]`` and
        ``[{file, reason}]`` when the video cannot be read at all.
    """
    import cv2

    from tfdet.inference.predictor import coco_results

    capture = cv2.VideoCapture(path)
    if not capture.isOpened():
        return [], [], [], [{"file": path, "reason": "OpenCV cannot open this video"}]
    fps = capture.get(cv2.CAP_PROP_FPS)
    fps = fps if fps and fps > 0 else DEFAULT_FPS
    stem = os.path.splitext(os.path.basename(path))[0]
    output = os.path.join(output_dir, f"{stem}.mp4")
    # The temporary name keeps the .mp4 extension: OpenCV picks the container by it.
    temporary = os.path.join(output_dir, f".{stem}.tmp-{os.getpid()}.mp4")
    writer = None
    images, results = [], []
    try:
        while True:
            ok, frame = capture.read()
            if not ok:
                break
            height, width = frame.shape[:2]
            if writer is None:
                writer = cv2.VideoWriter(temporary, cv2.VideoWriter_fourcc(*"mp4v"), fps, (width, height))
                if not writer.isOpened():
                    raise OSError(f"{output}: OpenCV cannot write mp4v video here")
            image_id = len(images) + 1
            detections = detector.detect(frame[..., ::-1].copy(), threshold)
            results += coco_results(image_id, detections)
            images.append({"id": image_id, "file_name": f"{path}#{image_id - 1}", "height": height, "width": width})
            writer.write(draw_detections(frame, detections["boxes"], detections["label_ids"], detections["scores"],
                                         detector.names))
    except BaseException:
        if os.path.exists(temporary):
            os.remove(temporary)  # never leave half a video behind
        raise
    finally:
        capture.release()
        if writer is not None:
            writer.release()
    if writer is None:
        return [], [], [], [{"file": path, "reason": "no frame could be decoded"}]
    os.replace(temporary, output)
    return images, results, [output], []
