"""``tfrecord-tools convert|inspect|verify``."""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Optional, Sequence

_SKIP_HINT = "(use --skip-invalid to skip such inputs and list them in the manifest)"


def _common(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("output")
    group.add_argument("--output-dir", required=True, help="folder for shards, label_map.pbtxt and the manifest")
    group.add_argument("--split", default="train", help="split name: shard and manifest prefix (default: train)")
    group.add_argument("--num-shards", type=int, default=1, help="number of shards (default: 1)")
    group.add_argument("--workers", type=int, default=None, help="worker processes (default: all cores)")
    group.add_argument("--label-map", default=None, help="label map (.pbtxt or .json) to use instead of deriving one")
    group.add_argument("--skip-invalid", action="store_true",
                       help="skip bad images/objects and list them in the manifest instead of stopping")
    group.add_argument("--val-fraction", type=float, default=0.0,
                       help="share of images (chosen by a hash of the file name) written to SPLIT_val")
    group.add_argument("--seed", type=int, default=0, help="salt of the validation hash (default: 0)")
    group.add_argument("--image-check", choices=("decode", "structure"), default="decode",
                       help="decode: decode every image, catching damage TensorFlow would stop on at train time"
                            " (default); structure: headers, JPEG end marker and PNG CRCs only, faster")
    group.add_argument("--quiet", action="store_true", help="no progress bar")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="tfrecord-tools", description="Convert detection datasets into sharded TFRecords, inspect and verify them.")
    commands = parser.add_subparsers(dest="command", required=True)

    convert = commands.add_parser("convert", help="convert a dataset")
    formats = convert.add_subparsers(dest="format", required=True)

    voc = formats.add_parser("voc", help="Pascal VOC XML")
    voc.add_argument("--voc-root", help="a VOCdevkit year folder (Annotations/, JPEGImages/, ImageSets/Main/)")
    voc.add_argument("--split-set", default="train", help="ImageSets/Main/<SPLIT_SET>.txt (default: train)")
    voc.add_argument("--annotations-dir", help="loose layout: folder of XML files")
    voc.add_argument("--images-dir", help="loose layout: folder of images")
    voc.add_argument("--image-set", help="loose layout: file of image ids (file stems) to convert")
    voc.add_argument("--ignore-difficult", action="store_true", help="leave difficult objects out (counted)")
    _common(voc)

    coco = formats.add_parser("coco", help="MS-COCO instances JSON")
    coco.add_argument("--annotations", required=True, help="instances JSON file")
    coco.add_argument("--images-dir", required=True, help="folder the file_name entries are relative to")
    coco.add_argument("--include-masks", action="store_true", help="store one PNG mask per instance")
    _common(coco)

    kitti = formats.add_parser("kitti", help="KITTI object label_2")
    kitti.add_argument("--kitti-root", required=True, help="folder with image_2/ and label_2/ (and calib/)")
    kitti.add_argument("--keep-dontcare", action="store_true", help="keep DontCare regions as a class")
    kitti.add_argument("--classes", help="comma-separated classes to keep, e.g. Car,Pedestrian")
    _common(kitti)

    yolo = formats.add_parser("yolo", help="YOLO / Ultralytics txt labels")
    yolo.add_argument("--images-dir", required=True)
    yolo.add_argument("--labels-dir", required=True)
    yolo.add_argument("--names", required=True, help="Ultralytics data YAML or a text file with one name a line")
    yolo.add_argument("--include-masks", action="store_true", help="store YOLO-seg polygons as PNG masks")
    _common(yolo)

    inspect = commands.add_parser("inspect", help="summarise shards; render some with boxes and masks")
    inspect.add_argument("pattern", help="shard file or glob, e.g. 'out/train-*.tfrecord'")
    inspect.add_argument("--render", type=int, default=0, metavar="N", help="draw the first N records as PNGs")
    inspect.add_argument("--out", default="inspect", help="folder for rendered PNGs (default: ./inspect)")
    inspect.add_argument("--json", action="store_true", help="print the summary as JSON")

    verify = commands.add_parser("verify", help="decode every record; exit 1 on any problem")
    verify.add_argument("pattern", help="shard file or glob")
    verify.add_argument("--quiet", action="store_true", help="no progress bar")
    return parser


def _convert(args) -> int:
    import tfrecord_tools

    options = dict(
        split=args.split, num_shards=args.num_shards, workers=args.workers, label_map=args.label_map,
        skip_invalid=args.skip_invalid, val_fraction=args.val_fraction, seed=args.seed,
        image_check=args.image_check, progress=not args.quiet,
    )
    if args.format == "voc":
        if not args.voc_root and not (args.annotations_dir and args.images_dir):
            raise SystemExit("tfrecord-tools: error: voc needs --voc-root, or --annotations-dir and --images-dir")
        manifests = tfrecord_tools.convert_voc(
            args.output_dir, voc_root=args.voc_root, split_set=args.split_set, annotations_dir=args.annotations_dir,
            images_dir=args.images_dir, image_set=args.image_set, ignore_difficult=args.ignore_difficult, **options)
    elif args.format == "coco":
        manifests = tfrecord_tools.convert_coco(
            args.output_dir, annotations=args.annotations, images_dir=args.images_dir,
            include_masks=args.include_masks, **options)
    elif args.format == "kitti":
        classes = [name.strip() for name in args.classes.split(",") if name.strip()] if args.classes else None
        manifests = tfrecord_tools.convert_kitti(
            args.output_dir, kitti_root=args.kitti_root, keep_dontcare=args.keep_dontcare, classes=classes, **options)
    else:
        manifests = tfrecord_tools.convert_yolo(
            args.output_dir, images_dir=args.images_dir, labels_dir=args.labels_dir, names=args.names,
            include_masks=args.include_masks, **options)
    for name, manifest in manifests.items():
        shards = manifest["shards"]
        print(f"{name}: {manifest['images']} images, {manifest['objects']} objects in {len(shards)} shard(s)"
              f" -> {os.path.join(args.output_dir, shards[0]['file']) if len(shards) == 1 else os.path.join(args.output_dir, name + '-*.tfrecord')}")
        if manifest["background_images"]:
            print(f"  background images (no objects): {manifest['background_images']}")
        for reason, count in manifest["dropped"].items():
            print(f"  dropped on purpose: {count} {reason}")
        if manifest["skipped"]:
            print(f"  skipped {len(manifest['skipped'])} invalid item(s), listed in {name}.manifest.json:")
            for entry in manifest["skipped"][:10]:
                where = entry["file"] + (f" (object {entry['object']})" if "object" in entry else "")
                print(f"    {where}: {entry['reason']}")
            if len(manifest["skipped"]) > 10:
                print(f"    ... and {len(manifest['skipped']) - 10} more")
    print(f"label map: {os.path.join(args.output_dir, 'label_map.pbtxt')}")
    return 0


def _inspect(args) -> int:
    from tfrecord_tools.inspect import format_table, summarize

    summary = summarize(args.pattern, render=args.render, out_dir=args.out, progress=not args.json)
    if args.json:
        print(json.dumps(summary, indent=2))
    else:
        print(format_table(summary))
        if summary["rendered"]:
            print(f"\nrendered {len(summary['rendered'])} image(s) into {args.out}/")
    return 0


def _verify(args) -> int:
    from tfrecord_tools.verify import verify

    total, problems = verify(args.pattern, progress=not args.quiet)
    for problem in problems:
        print(problem)
    if problems:
        print(f"FAILED: {len(problems)} problem(s) in {total} record(s)")
        return 1
    print(f"OK: {total} record(s) decode and check out")
    return 0


def main(argv: Optional[Sequence[str]] = None) -> int:
    from tfrecord_tools.errors import ConversionError
    from tfrecord_tools.label_map import LabelMapError

    args = build_parser().parse_args(argv)
    try:
        if args.command == "convert":
            return _convert(args)
        if args.command == "inspect":
            return _inspect(args)
        return _verify(args)
    except ConversionError as error:
        print(f"tfrecord-tools: error: {error}", file=sys.stderr)
        print(f"tfrecord-tools: nothing was written under a final shard name {_SKIP_HINT}", file=sys.stderr)
        return 1
    except (LabelMapError, FileNotFoundError, ValueError) as error:
        print(f"tfrecord-tools: error: {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("tfrecord-tools: interrupted; no partial shard was left", file=sys.stderr)
        return 130
    except BrokenPipeError:  # output piped into `head`: stop quietly
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0


if __name__ == "__main__":
    sys.exit(main())
