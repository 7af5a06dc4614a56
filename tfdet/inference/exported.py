"""An exported tfdet SavedModel, loaded as any user would: ``tf.saved_model.load`` and its signature.

Nothing of tfdet's model code is imported: the SavedModel's
``serving_default`` signature does the resize, the network and the NMS.
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np


class PredictError(ValueError):
    """The export cannot be used for prediction (missing, not a tfdet export, bad label map)."""


class ExportedDetector:
    """Runs a tfdet SavedModel on single images.

    Args:
        export_dir: the SavedModel directory (``tfdet export`` writes ``DIR/saved_model``).
        label_map: a label-map path, ``LabelMap`` or ``{id: name}`` overriding the export's own.
    """

    def __init__(self, export_dir: str, label_map: Any = None):
        import tensorflow as tf

        from tfrecord_tools.label_map import LabelMap, LabelMapError, load

        export_dir = os.fspath(export_dir)
        if not os.path.isfile(os.path.join(export_dir, "saved_model.pb")):
            nested = os.path.join(export_dir, "saved_model")
            if os.path.isfile(os.path.join(nested, "saved_model.pb")):
                export_dir = nested  # the folder `tfdet export --output` wrote
            else:
                raise PredictError(f"{export_dir}: no saved_model.pb (not a SavedModel export)")
        try:
            loaded = tf.saved_model.load(export_dir)
        except (OSError, ValueError, tf.errors.OpError) as error:
            raise PredictError(f"{export_dir}: cannot load the SavedModel ({str(error).splitlines()[0]})") from None
        if "serving_default" not in loaded.signatures:
            raise PredictError(f"{export_dir}: the SavedModel has no serving_default signature")
        self.export_dir = export_dir
        self._loaded = loaded  # keeps the variables alive for the signature
        self._serving = loaded.signatures["serving_default"]
        try:
            if isinstance(label_map, LabelMap):
                self.names = dict(label_map.items)
            elif isinstance(label_map, dict):
                self.names = {int(k): str(v) for k, v in label_map.items()}
            else:
                path = label_map or os.path.join(export_dir, "assets", "label_map.pbtxt")
                self.names = dict(load(os.fspath(path)).items) if os.path.isfile(path) else {}
        except LabelMapError as error:
            raise PredictError(str(error)) from None

    def category_list(self) -> list[dict]:
        """COCO ``categories``: ``[{"id", "name"}]`` of the label map."""
        return [{"id": item_id, "name": name} for item_id, name in sorted(self.names.items())]

    def detect(self, image: np.ndarray, threshold: float = 0.0) -> dict[str, np.ndarray]:
        """Detections of one RGB ``uint8 [h, w, 3]`` image with a score of at least ``threshold``.

        Returns:
            ``{"boxes": [n, 4] yxyx pixels of the image, "scores": [n],
            "label_ids": [n] int label-map ids}``, best first.
        """
        import tensorflow as tf

        height, width = image.shape[:2]
        outputs = self._serving(input_tensor=tf.constant(image[None]))
        count = int(outputs["num_detections"][0])
        scores = outputs["detection_scores"][0, :count].numpy()
        keep = scores >= threshold
        boxes = outputs["detection_boxes"][0, :count].numpy().astype(np.float64) * [height, width, height, width]
        label_ids = np.rint(outputs["detection_classes"][0, :count].numpy()).astype(np.int64)
        return {"boxes": boxes[keep], "scores": scores[keep].astype(np.float64), "label_ids": label_ids[keep]}
