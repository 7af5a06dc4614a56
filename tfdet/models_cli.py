"""``tfdet models [NAME]``: the registry's detectors, one line each, or one model's training preset.

``tfdet.cli`` adds the subcommand with ``add_models_parser`` and calls
``run_models``. Listing imports the registry and ``tfdet.config`` only (no
model code, no TensorFlow), so it answers at once.
"""

from __future__ import annotations

import argparse
import difflib
import json
from typing import Any

# One line per registry name. Names the registry lists without a line here still print ("no description").
DESCRIPTIONS = {
    "ssd300_vgg16": "SSD, VGG16 base, 300x300 input, 8732 default boxes on 6 maps (Liu et al. 2016)",
    "ssd512_vgg16": "SSD, VGG16 base, 512x512 input, 24564 default boxes on 7 maps (Liu et al. 2016)",
    "yolov3": "YOLOv3, Darknet-53, 3 scales (strides 8/16/32), 416x416 or any multiple of 32 (Redmon 2018)",
    "yolov3_tiny": "YOLOv3-tiny, 2 scales (strides 16/32), 416x416 or any multiple of 32",
    "retinanet_resnet50_fpn": "RetinaNet, ResNet-50 FPN P3-P7, focal loss (Lin et al. 2017)",
    "retinanet_resnet101_fpn": "RetinaNet, ResNet-101 FPN P3-P7, focal loss (Lin et al. 2017)",
    **{
        f"efficientdet_d{index}": f"EfficientDet-D{index}, EfficientNet-B{min(index, 6)} + BiFPN, "
        f"{size}x{size} input (Tan et al. 2020)"
        for index, size in enumerate((512, 640, 768, 896, 1024, 1280, 1280, 1536))
    },
}


def add_models_parser(commands: Any) -> argparse.ArgumentParser:
    """Adds the ``models`` subcommand to an ``add_subparsers()`` object; returns its parser."""
    parser = commands.add_parser(
        "models",
        help="list the detectors, or show one model's training preset",
        description="Without NAME: every registered detector with a one-line description. With NAME: the "
        "model's training preset, the values a config file with `base: NAME` starts from.",
    )
    parser.add_argument("name", nargs="?", default=None, help="a model name: show its training preset")
    parser.add_argument("--json", action="store_true", help="print JSON instead of text")
    return parser


def _listing(as_json: bool) -> str:
    from tfdet.config import preset_names
    from tfdet.zoo import list_models

    presets = set(preset_names())
    rows = [{"name": name, "description": DESCRIPTIONS.get(name, "(no description)"), "preset": name in presets}
            for name in list_models()]
    if as_json:
        return json.dumps(rows, indent=2)
    width = max((len(row["name"]) for row in rows), default=0)
    lines = [f"{row['name']:<{width}}  {row['description']}" for row in rows]
    lines.append("")
    lines.append("`tfdet models NAME` shows a model's training preset (`base: NAME` in a config file).")
    return "\n".join(lines)


def _preset_text(name: str, as_json: bool) -> str:
    from tfdet.config import config_to_dict, describe, preset
    from tfdet.zoo import list_models

    config = preset(name)
    description = DESCRIPTIONS.get(name, "(no description)")
    registered = name in list_models()
    if as_json:
        return json.dumps({"name": name, "description": description, "registered": registered,
                           "preset": config_to_dict(config)}, indent=2)
    note = "" if registered else "\n(not in this installation's registry yet)"
    return f"{name}: {description}{note}\n\ntraining preset (base: {name}):\n{describe(config)}".rstrip("\n")


def run_models(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    """Runs ``tfdet models``; prints the list or a preset; returns the exit status."""
    if args.name is None:
        print(_listing(args.json))
        return 0
    from tfdet.config import preset_names
    from tfdet.zoo import list_models

    if args.name not in preset_names():
        known = sorted(set(list_models()) | set(preset_names()))
        if args.name in known:
            print(f"{args.name}: {DESCRIPTIONS.get(args.name, '(no description)')}\n(no training preset)")
            return 0
        close = difflib.get_close_matches(args.name, known, n=1, cutoff=0.5)
        hint = f" (did you mean {close[0]}?)" if close else ""
        parser.error(f"unknown model {args.name!r}{hint}; `tfdet models` lists them")
    print(_preset_text(args.name, args.json))
    return 0
