"""Fixtures of the trainer tests: a small synthetic dataset and tiny-model configs."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def synthetic_data(tmp_path_factory):
    """8 training and 4 evaluation images of 64x64 shapes (3 classes), as TFRecords with a label map."""
    from tfdet.data.synthetic import write_synthetic_dataset

    folder = tmp_path_factory.mktemp("synthetic")
    write_synthetic_dataset(str(folder), 8, image_size=64, split="train", seed=1)
    write_synthetic_dataset(str(folder), 4, image_size=64, split="val", seed=2)
    return folder


def tiny_config(data_folder, model_dir, *, with_eval=True, **train):
    """An ExperimentConfig of the tiny SSD at 64x64 on the synthetic data; ``train`` overrides train.*."""
    from tfdet.config import config_from_dict

    settings = {
        "batch_size": 2, "steps": 4, "steps_per_loop": 2, "checkpoint_every": 2, "log_every": 2,
        "eval_every": 0, "jit_compile": False, "summary_images": 2,
        "optimizer": {"name": "sgd", "learning_rate": 0.01, "momentum": 0.9},
        "schedule": {"name": "constant"},
    }
    settings.update(train)
    return config_from_dict({
        "model": {"name": "ssd300_vgg16", "overrides": {"network": "tiny"}},
        "data": {
            "train_files": f"{data_folder}/train-*.tfrecord",
            "eval_files": f"{data_folder}/val-*.tfrecord" if with_eval else "",
            "image_size": [64, 64], "augmentation": "flip", "deterministic": True, "shuffle_buffer": 8,
        },
        "train": settings,
        "eval": {"batch_size": 2},
        "runtime": {"strategy": "one_device", "model_dir": str(model_dir)},
    })
