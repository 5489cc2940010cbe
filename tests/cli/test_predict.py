"""predict.py end to end: visualisation, evaluation with an independent pycocotools check,
re-scoring an existing results file, and unreadable inputs."""
import json
import os
import subprocess
import sys

import pytest

from tests.conftest import write_tiny_coco
from tests.engine.test_training import ROOT, TINY_ARGS, train

EVAL_ARGS = [a for a in TINY_ARGS if not a.startswith("DATA.SEED")] + ["TEST.RESULT_SCORE_THRESH=0.001"]


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    """The tiny COCO set without its deliberately broken annotations (plain pycocotools, used
    below as the independent check, cannot rasterise a two-point polygon)."""
    root = str(tmp_path_factory.mktemp("coco"))
    json_path, _ = write_tiny_coco(root)
    data = json.load(open(json_path))
    data["annotations"] = [a for a in data["annotations"] if a["id"] not in (4, 6)]
    json.dump(data, open(json_path, "w"))
    return root


@pytest.fixture(scope="module")
def trained(dataset, tmp_path_factory):
    logdir = tmp_path_factory.mktemp("run")
    train(dataset, logdir, "TRAIN.NUM_GPUS=1", "TRAIN.GRADIENT_ACCUMULATION=False", "TRAIN.BASE_LR=0.08",
          "TRAIN.WARMUP=8", "TRAIN.LR_SCHEDULE=[8,8,8]", "TRAIN.STEPS_PER_EPOCH=16", "TRAIN.CHECKPOINT_PERIOD=4")
    return str(logdir)


def predict(dataset, *args, config=()):
    cmd = [sys.executable, os.path.join(ROOT, "predict.py"), *args,
           "--config", f"DATA.BASEDIR={dataset}", *EVAL_ARGS, *config]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=600, cwd=ROOT)


def test_predict_writes_a_png_per_readable_image_and_skips_the_others(dataset, trained, tmp_path):
    good = os.path.join(dataset, "train2017", "000000000001.jpg")
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"not a jpeg")
    proc = predict(dataset, "--predict", good, str(broken), str(tmp_path / "missing.jpg"), "--load", trained,
                   "--output-dir", str(tmp_path / "out"))
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert os.path.getsize(tmp_path / "out" / "000000000001.png") > 0
    assert f"Skipping '{broken}': it is not a readable image." in proc.stderr
    assert "missing.jpg': the file does not exist." in proc.stderr
    assert "000000000001.jpg:" in proc.stdout and "detections" in proc.stdout


def test_evaluate_writes_results_and_metrics_that_pycocotools_reproduces(dataset, trained, tmp_path):
    out = str(tmp_path / "eval" / "results.json")
    proc = predict(dataset, "--evaluate", out, "--load", trained)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "| bbox" in proc.stderr + proc.stdout and "| boundary" in proc.stderr + proc.stdout
    results = json.load(open(out))
    saved = json.load(open(out.replace(".json", "-metrics.json")))["metrics"]
    assert results and all({"image_id", "category_id", "bbox", "score", "segmentation"} <= set(r) for r in results)
    # independent recomputation with plain pycocotools
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval
    gt = COCO(os.path.join(dataset, "annotations", "instances_train2017.json"))
    # the results speak the json's language: its category ids (2, 7; not the labels 1, 2), xywh
    # boxes inside each (non-square) image, masks of the image's size
    for r in results:
        img = gt.imgs[r["image_id"]]
        x, y, w, h = r["bbox"]
        assert r["category_id"] in (2, 7) and w >= 0 and h >= 0
        assert x + w <= img["width"] + 0.01 and y + h <= img["height"] + 0.01, (r["bbox"], img)
        assert r["segmentation"]["size"] == [img["height"], img["width"]]
    for iou_type in ("bbox", "segm"):
        ev = COCOeval(gt, gt.loadRes(out), iou_type)
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
        assert saved[f"{iou_type}/AP"] == pytest.approx(max(ev.stats[0], 0), abs=1e-4)
        assert saved[f"{iou_type}/AP50"] == pytest.approx(max(ev.stats[1], 0), abs=1e-4)
    # an existing results file is re-scored without a model
    rescored = predict(dataset, "--evaluate", out)
    assert rescored.returncode == 0, rescored.stderr[-3000:]
    assert "re-scoring it without running the model" in rescored.stderr + rescored.stdout
    again = json.load(open(out.replace(".json", "-metrics.json")))["metrics"]
    assert again == saved


def test_a_missing_validation_split_is_named(dataset, trained, tmp_path):
    proc = predict(dataset, "--evaluate", str(tmp_path / "r.json"), "--load", trained,
                   config=["DATA.VAL=coco_val2017"])
    assert proc.returncode != 0
    assert "coco_val2017" in proc.stderr and "Traceback" not in proc.stderr
