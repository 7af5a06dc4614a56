"""The README's main job: ``tfdet demo`` on the bundled data."""

from __future__ import annotations

import os
import xml.etree.ElementTree as ElementTree

import pytest
from PIL import Image

from tfdet.demo import bundled_raccoon_dir, run_demo

from .conftest import DATASETS


def _bundled_objects() -> int:
    folder = os.path.join(bundled_raccoon_dir(), "annotations")
    return sum(len(ElementTree.parse(os.path.join(folder, name)).findall("object")) for name in os.listdir(folder))


def test_demo_converts_verifies_and_renders_the_bundled_images(tmp_path):
    result = run_demo(str(tmp_path), workers=1, progress=False)
    manifests = result["manifests"]
    assert sum(m["images"] for m in manifests.values()) == 24 == result["verified"]
    assert sum(m["objects"] for m in manifests.values()) == _bundled_objects()
    assert all(m["skipped"] == [] for m in manifests.values())
    rendered = result["summary"]["rendered"]
    assert len(rendered) == 4
    for path in rendered:
        with Image.open(path) as image:
            assert image.format == "PNG" and image.size[0] > 100


def test_the_cli_demo_prints_its_steps(tmp_path, capsys):
    from tfdet.cli import main

    assert main(["demo", "--out", str(tmp_path), "--workers", "1", "--quiet"]) == 0
    assert "OK: 24 records" in capsys.readouterr().out


def test_bundled_files_are_unchanged_copies_of_the_published_dataset():
    source = DATASETS / "voc_raccoon"
    if not source.is_dir():
        pytest.skip(f"reference dataset voc_raccoon not found at {source}")
    bundled = bundled_raccoon_dir()
    for sub in ("images", "annotations"):
        for name in os.listdir(os.path.join(bundled, sub)):
            with open(os.path.join(bundled, sub, name), "rb") as ours, open(source / sub / name, "rb") as theirs:
                assert ours.read() == theirs.read(), name
    with open(os.path.join(bundled, "LICENSE"), "rb") as ours:
        assert ours.read() == (source / "LICENSE").read_bytes()
