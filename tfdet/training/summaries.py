"""TensorBoard summaries and the console progress bar of a training run.

``model_dir/train``: every loss term (``loss/<term>``, ``loss``), the
learning rate and images per second. ``model_dir/eval``: the evaluation
metrics (``metrics/<name>``) and a few evaluation images with their
predicted boxes. Only the chief writes; other workers get a logger whose
writes do nothing.
"""

from __future__ import annotations

import time

import numpy as np
import tensorflow as tf

from tfdet.training.files import join

# Colours of drawn boxes (RGBA, 0..1), cycled by class.
_BOX_COLOURS = np.array([
    (0.90, 0.10, 0.29, 1.0), (0.24, 0.71, 0.29, 1.0), (1.00, 0.88, 0.10, 1.0), (0.00, 0.51, 0.78, 1.0),
    (0.96, 0.51, 0.19, 1.0), (0.57, 0.12, 0.71, 1.0), (0.27, 0.94, 0.94, 1.0), (0.94, 0.20, 0.90, 1.0),
], dtype=np.float32)


class SummaryLogger:
    """TensorBoard writers for ``model_dir/train`` and ``model_dir/eval``.

    Args:
        model_dir: the run's model directory.
        enabled: ``False`` on non-chief workers: nothing is written.
    """

    def __init__(self, model_dir: str, enabled: bool = True):
        self.enabled = enabled
        self.train_dir = join(model_dir, "train")
        self.eval_dir = join(model_dir, "eval")
        self._train = tf.summary.create_file_writer(self.train_dir) if enabled else None
        self._eval = tf.summary.create_file_writer(self.eval_dir) if enabled else None

    def train_scalars(self, step: int, values: dict) -> None:
        """Writes ``{name: float}`` to the train log at ``step``."""
        self._scalars(self._train, step, values)

    def eval_scalars(self, step: int, values: dict) -> None:
        """Writes ``{name: float}`` to the eval log at ``step`` (names prefixed ``metrics/``)."""
        self._scalars(self._eval, step, {f"metrics/{k}": v for k, v in values.items()})

    def _scalars(self, writer, step, values):
        if writer is None:
            return
        with writer.as_default(step=int(step)):
            for name, value in values.items():
                if value is not None:
                    tf.summary.scalar(name, float(value))
        writer.flush()

    def eval_images(self, step: int, images, detections, max_images: int) -> None:
        """Writes up to ``max_images`` images with their predicted boxes drawn.

        Args:
            images: ``[N, H, W, 3]`` float 0..255 (model input).
            detections: ``boxes [N, D, 4]`` yxyx model-input pixels,
                ``classes [N, D]``, ``scores [N, D]``, ``num_detections [N]``.
            max_images: ``train.summary_images``; 0 writes nothing.
        """
        if self._eval is None or max_images <= 0 or len(images) == 0:
            return
        drawn = draw_detections(images[:max_images], {k: v[:max_images] for k, v in detections.items()})
        with self._eval.as_default(step=int(step)):
            tf.summary.image("detections", drawn, max_outputs=max_images)
        self._eval.flush()

    def close(self) -> None:
        for writer in (self._train, self._eval):
            if writer is not None:
                writer.close()


def draw_detections(images, detections, min_score: float = 0.3) -> np.ndarray:
    """``[N, H, W, 3]`` float 0..1 images with the boxes scoring at least ``min_score`` drawn.

    Uses ``tf.image.draw_bounding_boxes`` (normalised boxes); one colour per class.
    """
    images = np.asarray(images, dtype=np.float32)
    height, width = images.shape[1], images.shape[2]
    boxes = np.asarray(detections["boxes"], dtype=np.float32) / np.array([height, width, height, width], np.float32)
    valid = np.arange(boxes.shape[1])[None, :] < np.asarray(detections["num_detections"])[:, None]
    valid &= np.asarray(detections["scores"]) >= min_score
    boxes = np.where(valid[..., None], boxes, 0.0)  # zero boxes draw nothing visible
    drawn = []
    classes = np.asarray(detections["classes"])
    for index in range(len(images)):
        picture = images[index:index + 1] / 255.0
        for colour_index in np.unique(classes[index][valid[index]]) if valid[index].any() else []:
            mask = valid[index] & (classes[index] == colour_index)
            colour = _BOX_COLOURS[int(colour_index) % len(_BOX_COLOURS)][None]
            picture = tf.image.draw_bounding_boxes(picture, np.where(mask[:, None], boxes[index], 0.0)[None], colour)
        drawn.append(np.asarray(picture)[0])
    return np.clip(np.stack(drawn), 0.0, 1.0)


class ProgressBar:
    """A tqdm bar over the training steps: loss, images/s and the ETA; silent when disabled.

    Args:
        total: ``train.steps``.
        initial: the step training (re)starts from.
        enabled: ``progress=False`` (or a non-chief worker) disables it.
    """

    def __init__(self, total: int, initial: int = 0, enabled: bool = True):
        self._bar = None
        if enabled:
            from tqdm.auto import tqdm

            self._bar = tqdm(total=int(total), initial=int(initial), desc="train", unit="step", dynamic_ncols=True)

    def update(self, steps: int, loss: float, images_per_second: float) -> None:
        if self._bar is not None:
            self._bar.set_postfix(loss=f"{loss:.4f}", img_s=f"{images_per_second:.1f}", refresh=False)
            self._bar.update(int(steps))

    def write(self, message: str) -> None:
        """Prints a line without breaking the bar (plain print when disabled)."""
        if self._bar is not None:
            self._bar.write(message)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()


class Throughput:
    """Images per second over the last host loop."""

    def __init__(self):
        self._start = time.perf_counter()

    def lap(self, images: int) -> float:
        now = time.perf_counter()
        elapsed, self._start = now - self._start, now
        return images / elapsed if elapsed > 0 else 0.0


def plot_training_curves(history: dict, path: str, metric: str | None = None) -> str | None:
    """Writes a PNG with the training loss and the evaluation metric against the step.

    Args:
        history: ``{"loss": [[step, loss], ...], "eval": [{"step": s, name: value, ...}, ...]}``.
        path: the PNG to write (atomically; local or ``gs://``).
        metric: the evaluation metric to plot (``eval.best_metric``).

    Returns:
        ``path``, or ``None`` when there is nothing to plot yet.
    """
    losses = history.get("loss") or []
    evals = [e for e in history.get("eval") or [] if metric and e.get(metric) is not None]
    if not losses and not evals:
        return None
    import io

    import matplotlib

    matplotlib.use("Agg")  # no display needed; safe before pyplot loads
    from matplotlib import pyplot

    from tfdet.training.files import write_bytes_atomic

    figure, loss_axes = pyplot.subplots(figsize=(8, 4.5), dpi=100)
    if losses:
        steps, values = zip(*losses)
        loss_axes.plot(steps, values, color="tab:blue", linewidth=1.2, label="train loss")
    loss_axes.set_xlabel("step")
    loss_axes.set_ylabel("loss", color="tab:blue")
    loss_axes.grid(alpha=0.3)
    if evals:
        metric_axes = loss_axes.twinx()
        metric_axes.plot([e["step"] for e in evals], [e[metric] for e in evals], "o-", color="tab:orange",
                         label=f"eval {metric}")
        metric_axes.set_ylabel(f"eval {metric}", color="tab:orange")
    loss_axes.set_title("training curves")
    figure.tight_layout()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    pyplot.close(figure)
    return write_bytes_atomic(path, buffer.getvalue())
