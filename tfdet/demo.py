"""``tfdet demo``: the whole flow on bundled and generated data, no download, on a CPU.

1. The converter on real images: the bundled raccoon subset (Pascal VOC XML)
   becomes sharded TFRecords, verified and rendered.
2. Data: a synthetic shapes set (circles, squares, triangles) written as
   TFRecords through the same writer, a training split and a held-out split.
3. Training: a small detector of the chosen family, with the real trainer
   (``tfdet.training.train``: tf.data pipeline, custom loop, checkpoints,
   TensorBoard, evaluation on the held-out split).
4. Evaluation: COCO AP and AP50 on the held-out images into ``metrics.json``.
5. Export: a SavedModel with the TF Object Detection API signatures.
6. Prediction: the exported model, loaded as a user would, draws its
   detections on held-out images.

The demo networks are the families' own code at CPU scale: the SSD, RetinaNet
and EfficientDet test networks (``network="tiny"``) and YOLOv3-tiny at
128x128 pixels. Everything but the network's size is what a full run does.
"""

from __future__ import annotations

import dataclasses
import json
import os
import time
from importlib import resources
from typing import NamedTuple

class DemoSettings(NamedTuple):
    """How the demo trains one family at CPU scale."""

    overrides: dict  # build_model overrides that make the network CPU-sized
    steps: int
    learning_rate: float
    config: tuple = ()  # further `--set` style config overrides


DEMO_MODELS = {
    "ssd300_vgg16": DemoSettings({"network": "tiny", "image_size": 128}, 1000, 2e-3),
    "yolov3_tiny": DemoSettings({"image_size": 128}, 1500, 1e-3),
    "retinanet_resnet50_fpn": DemoSettings({"network": "tiny", "image_size": 128}, 1000, 2e-3),
    # XLA makes depthwise-convolution gradients ~7x slower on a CPU (docs/architecture.md, Decisions).
    "efficientdet_d0": DemoSettings({"network": "tiny", "image_size": 128}, 1000, 2e-3, ("train.jit_compile=false",)),
}
DEMO_ALIASES = {"ssd": "ssd300_vgg16", "yolo": "yolov3_tiny", "yolov3": "yolov3_tiny", "retinanet": "retinanet_resnet50_fpn",
                "efficientdet": "efficientdet_d0"}
TRAIN_IMAGES = 1024
HELD_OUT_IMAGES = 128
PREDICTED_IMAGES = 8


def bundled_raccoon_dir() -> str:
    """The folder of the bundled raccoon subset (``images/``, ``annotations/``)."""
    return str(resources.files("tfdet") / "assets" / "raccoon")


def demo_model_name(model: str) -> str:
    """The registry name of a demo model or alias (``ssd``, ``yolo``, ...).

    Raises:
        ValueError: the model has no demo settings, listing those that have.
    """
    name = DEMO_ALIASES.get(model, model)
    if name not in DEMO_MODELS:
        known = ", ".join(sorted(DEMO_MODELS) + sorted(DEMO_ALIASES))
        raise ValueError(f"no demo settings for model {model!r}; choose one of: {known}")
    return name


def convert_raccoon(out_dir: str, workers: int | None = None, progress: bool = True) -> dict:
    """Converts, verifies and inspects the bundled raccoon subset under ``out_dir``.

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
    verified, problems = verify(os.path.join(records_dir, "*.tfrecord"), progress=False)
    if problems:
        raise RuntimeError("demo records failed verification:\n" + "\n".join(problems))
    renders = os.path.join(out_dir, "inspect")
    summary = summarize(os.path.join(records_dir, "train-*.tfrecord"), render=4, out_dir=renders, progress=False)
    print(f"      {verified} records verified; 4 rendered into {renders}")
    if progress:
        print(format_table(summary))
    return {"manifests": manifests, "verified": verified, "summary": summary}


def demo_config(name: str, data_dir: str, model_dir: str, steps: int | None = None):
    """The experiment config of the demo: the family's preset at CPU scale.

    Args:
        name: a registry name from ``DEMO_MODELS``.
        data_dir: the folder of the synthetic ``train-*`` / ``val-*`` shards.
        model_dir: where the run writes checkpoints, summaries and metrics.
        steps: training steps (default: the model's demo setting).
    """
    from tfdet.config import apply_overrides, preset

    settings = DEMO_MODELS[name]
    steps = int(steps or settings.steps)
    config = preset(name)
    config = dataclasses.replace(
        config, model=dataclasses.replace(config.model, num_classes=None, overrides=dict(settings.overrides)),
    )
    return apply_overrides(config, [
        f"data.train_files={os.path.join(data_dir, 'train-*.tfrecord')}",
        f"data.eval_files={os.path.join(data_dir, 'val-*.tfrecord')}",
        "data.augmentation=flip",
        "data.image_size=null",
        "data.max_instances=8",
        "data.shuffle_buffer=256",
        "data.scale_range=null",
        "train.batch_size=16",
        f"train.steps={steps}",
        "train.steps_per_loop=25",
        "train.multi_scale=[]",
        "train.optimizer.name=adam",
        f"train.optimizer.learning_rate={settings.learning_rate}",
        "train.optimizer.weight_decay=0.0",
        "train.optimizer.clip_norm=10.0",
        "train.schedule.name=cosine",
        f"train.schedule.warmup_steps={min(100, steps // 10)}",
        "train.schedule.boundaries=[]",
        "train.ema.enabled=false",
        f"train.checkpoint_every={max(steps // 2, 1)}",
        "train.log_every=25",
        "train.eval_every=0",
        "eval.metric=coco",
        "eval.best_metric=AP50",
        "eval.batch_size=32",
        "runtime.strategy=auto",
        f"runtime.model_dir={model_dir}",
        *settings.config,
    ])


def _held_out_images(data_dir: str, out_dir: str, count: int) -> str:
    """Writes the first ``count`` held-out images as files (what a user would point predict at)."""
    from tfrecord_tools import schema
    from tfrecord_tools.reader import expand_pattern, iterate_examples, scalar

    os.makedirs(out_dir, exist_ok=True)
    examples = iterate_examples(expand_pattern(os.path.join(data_dir, "val-*.tfrecord")))
    for index, (_, _, example) in zip(range(count), examples):
        extension = "png" if scalar(example, schema.IMAGE_FORMAT) == b"png" else "jpg"
        with open(os.path.join(out_dir, f"held_out_{index:02d}.{extension}"), "wb") as handle:
            handle.write(scalar(example, schema.IMAGE_ENCODED))
    return out_dir


def run_demo(out_dir: str, model: str = "ssd", workers: int | None = None, progress: bool = True,
             steps: int | None = None) -> dict:
    """Runs the whole flow under ``out_dir`` (see the module docstring).

    Args:
        out_dir: output folder (created).
        model: a registry name or alias with demo settings (``DEMO_MODELS``).
        workers: converter worker processes (default: all cores).
        progress: progress bars.
        steps: training steps (default: the model's demo setting).

    Returns:
        ``{"model", "metrics", "saved_model", "predictions", "seconds", ...}``,
        also written to ``out_dir/metrics.json``.
    """
    name = demo_model_name(model)
    start = time.time()
    os.makedirs(out_dir, exist_ok=True)

    print(f"[1/6] converter: bundled raccoon images (Pascal VOC) -> TFRecords in {out_dir}/records")
    convert_raccoon(out_dir, workers=workers, progress=progress)

    from tfdet.data.synthetic import write_synthetic_dataset

    data_dir = os.path.join(out_dir, "data")
    print(f"[2/6] data: {TRAIN_IMAGES} training and {HELD_OUT_IMAGES} held-out synthetic images -> {data_dir}")
    write_synthetic_dataset(data_dir, TRAIN_IMAGES, image_size=128, seed=0, split="train")
    write_synthetic_dataset(data_dir, HELD_OUT_IMAGES, image_size=128, seed=1, split="val", num_shards=1)

    from tfdet.training import load_trained_model, train

    model_dir = os.path.join(out_dir, "model")
    config = demo_config(name, data_dir, model_dir, steps)
    print(f"[3/6] training {name} ({config.model.overrides}) for {config.train.steps} steps -> {model_dir}")
    result = train(config, progress=progress)

    metrics = {key: float(value) for key, value in (result.get("metrics") or {}).items()}
    print(f"[4/6] held-out COCO metrics: AP {metrics.get('AP', float('nan')):.3f}, "
          f"AP50 {metrics.get('AP50', float('nan')):.3f}")

    from tfdet.export import export_saved_model

    saved_model = os.path.join(out_dir, "saved_model")
    print(f"[5/6] exporting a SavedModel -> {saved_model}")
    detector, _, _ = load_trained_model(config, "latest")
    export_saved_model(detector, saved_model, label_map=os.path.join(data_dir, "label_map.pbtxt"), config=config,
                       overwrite=True)

    from tfdet.inference import predict

    predictions = os.path.join(out_dir, "predictions")
    inputs = _held_out_images(data_dir, os.path.join(out_dir, "held_out_images"), PREDICTED_IMAGES)
    print(f"[6/6] predicting with the exported model on {PREDICTED_IMAGES} held-out images -> {predictions}")
    summary = predict(saved_model, inputs, predictions, threshold=0.3)

    report = {
        "model": name,
        "overrides": DEMO_MODELS[name].overrides,
        "steps": int(result.get("step", config.train.steps)),
        "metrics": metrics,
        "saved_model": saved_model,
        "predictions": predictions,
        "predicted_images": summary["images"],
        "model_dir": model_dir,
        "seconds": round(time.time() - start, 1),
    }
    with open(os.path.join(out_dir, "metrics.json.tmp"), "w") as handle:
        json.dump(report, handle, indent=2)
    os.replace(os.path.join(out_dir, "metrics.json.tmp"), os.path.join(out_dir, "metrics.json"))
    return report
