"""tfdet: TensorFlow 2 / Keras 3 detection models fed by TFRecords, and tfrecord-tools."""

import pathlib

from setuptools import find_packages, setup

setup(
    name="tfdet",
    version="0.1.0",
    description="Object detection and instance segmentation for TensorFlow 2 / Keras 3, fed by TFRecords",
    long_description=pathlib.Path(__file__).with_name("README.md").read_text(encoding="utf-8"),
    long_description_content_type="text/markdown",
    license="Apache-2.0",
    python_requires=">=3.10",
    packages=find_packages(include=["tfdet", "tfdet.*", "tfrecord_tools", "tfrecord_tools.*"]),
    package_data={"tfdet": ["assets/raccoon/*", "assets/raccoon/*/*"]},
    include_package_data=True,
    install_requires=[
        "tensorflow==2.21.*",
        "keras>=3.15,<4",
        "tensorboard",
        "numpy",
        "pycocotools",
        # <5: OpenCV 5 removed the Darknet importer, our independent reference for
        # Darknet weights (tests/models/test_darknet_weights.py); nothing needs 5.x.
        "opencv-python-headless>=4.9,<5",
        "lxml",
        "tqdm",
        "pyyaml",
        "matplotlib",
        # Pillow finds truncated JPEGs with a reason (and decodes them 2.4x
        # faster in draft mode); google-crc32c frames TFRecords in C, so the
        # converter never imports TensorFlow (which pulls Keras in).
        "pillow",
        "google-crc32c",
    ],
    extras_require={
        # ONNX export (tfdet export --format onnx) and its check in onnxruntime.
        "onnx": ["tf2onnx>=1.17.0", "onnxruntime>=1.17"],
        "test": ["pytest", "jax", "faster-coco-eval", "tf2onnx>=1.17.0", "onnxruntime>=1.17"],
    },
    entry_points={
        "console_scripts": [
            "tfrecord-tools=tfrecord_tools.cli:main",
            "tfdet=tfdet.cli:entry_point",
        ],
    },
)
