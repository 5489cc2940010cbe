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



def _box_iou(a, b):
    x1, y1 = max(a[0], b[0]), max(a[1], b[1])
    x2, y2 = min(a[2], b[2]), min(a[3], b[3])
    inter = max(x2 - x1, 0) * max(y2 - y1, 0)
    return inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter)


def test_bf16_inference_gives_the_float32_detections_within_tolerances(dataset, trained, monkeypatch):
    """Every confident float32 detection (score >= 0.2) has a bf16 one of the same class with a
    box IoU >= 0.98, a score within 0.02 and a 28x28 mask within 0.05 per pixel (bf16 keeps 8
    bits of mantissa: the class and box outputs and the mask logits are rounded to ~0.4%; box
    decoding and NMS are float32, tests/engine/test_session.py). On a CPU without AVX-512 the
    bf16 run is TensorFlow's Eigen emulation with the NCHW pooling/deconvolution kept float32."""
    import cv2
    import numpy as np
    from config import config as cfg, finalize_configs
    from maskplus.engine.inference import build_predictor, run_network
    from tests.engine.test_session import emulate_bf16_without_avx512
    from tests.helpers import config_snapshot
    emulate_bf16_without_avx512(monkeypatch)
    images = [cv2.imread(os.path.join(dataset, "train2017", f"00000000000{i}.jpg")) for i in (1, 2)]
    with config_snapshot():
        cfg.update_args([f"DATA.BASEDIR={dataset}", *EVAL_ARGS])
        finalize_configs(is_training=False)
        out = {p: [run_network(build_predictor(trained, p), img) for img in images] for p in ("fp32", "bf16")}
    worst, confident = {"iou": 1.0, "score": 0.0, "mask": 0.0}, 0
    for a, b in zip(out["fp32"], out["bf16"]):
        for k in np.flatnonzero(a.scores >= 0.2):
            same_class = [j for j in range(len(b.boxes)) if b.labels[j] == a.labels[k]]
            assert same_class, f"no bf16 detection of class {a.labels[k]}"
            j = max(same_class, key=lambda j: _box_iou(a.boxes[k], b.boxes[j]))
            confident += 1
            worst["iou"] = min(worst["iou"], _box_iou(a.boxes[k], b.boxes[j]))
            worst["score"] = max(worst["score"], abs(a.scores[k] - b.scores[j]))
            worst["mask"] = max(worst["mask"], float(np.abs(a.masks[k] - b.masks[j]).max()))
    # measured on the AMD EPYC (emulated): 12 detections, IoU >= 0.995, scores within 0.005, masks 0.011
    assert confident >= 4, out["fp32"]
    assert worst["iou"] >= 0.98 and worst["score"] <= 0.02 and worst["mask"] <= 0.05, worst
    assert worst["mask"] > 1e-4, worst  # and bf16 did run: its results are not float32's


def test_a_precision_this_machine_cannot_run_is_one_error_line(dataset, trained, tmp_path):
    from maskplus.precision import PrecisionError, choose, cpu_flags, gpu_capabilities
    proc = predict(dataset, "--evaluate", str(tmp_path / "r.json"), "--load", trained, config=["TEST.PRECISION=fp16"])
    try:
        choose("fp16", cpu_flags(), gpu_capabilities(), "TEST.PRECISION")
    except PrecisionError as e:  # no GPU of compute capability >= 7.0 here
        assert proc.returncode != 0 and "Traceback" not in proc.stderr
        assert proc.stderr.strip().splitlines()[-1] == f"Error: {e}"
        assert not (tmp_path / "r.json").exists()
    else:
        assert proc.returncode == 0, proc.stderr[-3000:]
