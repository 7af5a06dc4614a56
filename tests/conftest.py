"""Shared fixtures: where the real reference datasets live, and skipping without them."""

from __future__ import annotations

import os
import pathlib

import pytest

REPO_ROOT = pathlib.Path(__file__).resolve().parent.parent
# CI lays shared/ beside the clone; TFDET_DATASETS points elsewhere when needed.
DATASETS = pathlib.Path(os.environ.get("TFDET_DATASETS", REPO_ROOT.parent / "shared" / "datasets"))


def dataset_path(name: str) -> pathlib.Path:
    """The folder of a reference dataset, or a skip naming what is missing."""
    path = DATASETS / name
    if not path.is_dir():
        pytest.skip(f"reference dataset {name!r} not found at {path} (set TFDET_DATASETS to its parent folder)")
    return path


@pytest.fixture
def raccoon() -> pathlib.Path:
    return dataset_path("voc_raccoon")


@pytest.fixture
def coco_tiny() -> pathlib.Path:
    return dataset_path("coco_tiny")


@pytest.fixture
def kitti_3() -> pathlib.Path:
    return dataset_path("kitti_3")


@pytest.fixture
def coco128() -> pathlib.Path:
    return dataset_path("yolo_coco128")
