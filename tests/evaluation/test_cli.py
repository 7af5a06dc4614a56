"""``tfdet metrics`` as a subprocess, on the metrics_reference toy example in COCO JSON and coco_tiny."""

from __future__ import annotations

import contextlib
import io
import json
import subprocess
import sys

import pytest
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from ..conftest import dataset_path

TIMEOUT = 120
KEYS = ["AP", "AP50", "AP75", "APs", "APm", "APl", "AR1", "AR10", "AR100", "ARs", "ARm", "ARl"]


def run_metrics(*args) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "tfdet.cli", "metrics", *map(str, args)],
                          capture_output=True, text=True, timeout=TIMEOUT)


@pytest.fixture(scope="module")
def toy():
    root = dataset_path("metrics_reference") / "toyexample"
    return root / "gts_coco_format" / "toy_example_coco.JSON", root / "dets_coco_format" / "coco_dets.json"


def test_voc_table_and_json(toy, tmp_path):
    gt, dets = toy
    table = run_metrics("voc", "--gt", gt, "--detections", dets, "--plots", tmp_path)
    assert table.returncode == 0, table.stderr
    assert "89.58" in table.stdout and "mAP" in table.stdout and "all-point" in table.stdout
    assert sorted(p.name for p in tmp_path.iterdir()) == ["pr_cat.png", "pr_summary.png"]

    result = run_metrics("voc", "--gt", gt, "--detections", dets, "--iou", "0.75", "--method", "11point", "--json")
    assert result.returncode == 0, result.stderr
    metrics = json.loads(result.stdout)
    assert set(metrics) == {"mAP", "AP/cat"}
    assert round(100 * metrics["AP/cat"], 2) == 49.24 and metrics["mAP"] == metrics["AP/cat"]


def test_coco_json_equals_plain_pycocotools(tmp_path):
    gt = dataset_path("coco_tiny") / "annotations" / "instances_train2017.json"
    with contextlib.redirect_stdout(io.StringIO()):
        coco = COCO(str(gt))
    # Every other ground-truth box as a detection, shifted by 3 px, with a score that falls with its id.
    results = [{"image_id": a["image_id"], "category_id": a["category_id"], "score": 1.0 / (1 + i),
                "bbox": [a["bbox"][0] + 3, a["bbox"][1], a["bbox"][2], a["bbox"][3]]}
               for i, a in enumerate(coco.dataset["annotations"]) if i % 2 == 0]
    path = tmp_path / "results.json"
    path.write_text(json.dumps(results))
    with contextlib.redirect_stdout(io.StringIO()):
        coco_eval = COCOeval(coco, coco.loadRes(str(path)), "bbox")
        coco_eval.evaluate()
        coco_eval.accumulate()
        coco_eval.summarize()

    result = run_metrics("coco", "--gt", gt, "--detections", path, "--json")
    assert result.returncode == 0, result.stderr
    metrics = json.loads(result.stdout)
    assert list(metrics) == KEYS
    # The CLI uses faster-coco-eval when it is installed: equal to the last few bits.
    assert [metrics[k] for k in KEYS] == pytest.approx([float(v) for v in coco_eval.stats], rel=0, abs=1e-12)

    table = run_metrics("coco", "--gt", gt, "--detections", path, "--iou-type", "bbox")
    assert table.returncode == 0, table.stderr
    assert table.stdout.count("Average Precision") == 6 and table.stdout.count("Average Recall") == 6


def test_bad_usage_and_bad_input(toy, tmp_path):
    gt, dets = toy
    wrong_flag = run_metrics("coco", "--gt", gt, "--detections", dets, "--iou", "0.5")
    assert wrong_flag.returncode == 2 and "voc only" in wrong_flag.stderr
    missing = run_metrics("voc", "--gt", gt, "--detections", tmp_path / "missing.json")
    assert missing.returncode == 1 and "tfdet metrics: error" in missing.stderr and "Traceback" not in missing.stderr
    foreign = tmp_path / "foreign.json"
    foreign.write_text(json.dumps([{"image_id": 999, "category_id": 0, "bbox": [0, 0, 1, 1], "score": 0.5}]))
    mismatch = run_metrics("coco", "--gt", gt, "--detections", foreign)
    assert mismatch.returncode == 1 and "do not match" in mismatch.stderr


def test_building_the_parser_loads_nothing_heavy():
    code = ("import sys, tfdet.cli; tfdet.cli.build_parser(); "
            "print(sorted(m for m in ('numpy', 'pycocotools', 'matplotlib', 'tensorflow') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=TIMEOUT)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"
