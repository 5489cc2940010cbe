"""``predict.py`` with test-time augmentation (TEST.AUGMENT) on the tiny COCO set and a random tiny
model: one view at the test size writes the results of no augmentation; the mirrored and resized
views run end to end and are recorded with the metrics; an export with augmentation is refused."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest
from pycocotools import mask as mask_util

from tests.conftest import write_tiny_coco
from tests.engine.test_training import ROOT
from tests.helpers import TINY, config_snapshot, configure, write_random_model

pytestmark = pytest.mark.slow

CONFIG = dict({k: v for k, v in TINY.items() if k != "TRAIN.NUM_GPUS"},
              **{"DATA.VAL": "coco_train2017", "DATA.NUM_WORKERS": 0, "TEST.RESULT_SCORE_THRESH": 0.01})


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """(dataset folder, random model file) of the tiny COCO set without its two annotations that
    pycocotools cannot rasterise."""
    root = str(tmp_path_factory.mktemp("coco"))
    json_path, _ = write_tiny_coco(root)
    data = json.load(open(json_path))
    data["annotations"] = [a for a in data["annotations"] if a["id"] not in (4, 6)]
    json.dump(data, open(json_path, "w"))
    weights = str(tmp_path_factory.mktemp("model") / "model.npz")
    with config_snapshot():
        configure({k: v for k, v in CONFIG.items() if not k.startswith("DATA.")}, class_names=("cat", "dog"),
                  training=False)
        write_random_model(weights, seed=2)
    return root, weights


def predict(setup, *args, config=()):
    root, weights = setup
    values = [f"{k}={v!r}" if not isinstance(v, str) else f"{k}={v}" for k, v in CONFIG.items()]
    cmd = [sys.executable, os.path.join(ROOT, "predict.py"), "--load", weights, *args,
           "--config", f"DATA.BASEDIR={root}", *values, *config]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=600, cwd=ROOT)


def test_one_view_at_the_test_size_writes_the_results_of_no_augmentation(setup, tmp_path):
    """Boxes go back to the image per axis here: with the example's single scale, sqrt(sy * sx), a
    box clipped at the view's border maps back beyond the image's (e.g. x2 = 96 in the 96 x 134 view
    of the 50 x 70 image is 50.08) and is clipped there; its mask, predicted again for the clipped
    box, then differs by up to ~0.003 from the unaugmented one, predicted for the unclipped box."""
    plain, one = str(tmp_path / "plain.json"), str(tmp_path / "one.json")
    for out, config in ((plain, []), (one, ["TEST.AUGMENT.ENABLED=True", "TEST.AUGMENT.FLIP=False"])):
        proc = predict(setup, "--evaluate", out, config=["TEST.BOX_SCALE_PER_AXIS=True"] + config)
        assert proc.returncode == 0, proc.stderr[-3000:]
    assert "Test-time augmentation: 1 view (short edge 96; long edge <= 128)" in proc.stderr + proc.stdout
    a, b = json.load(open(plain)), json.load(open(one))
    assert len(a) >= 20 and len(a) == len(b)
    for x, y in zip(a, b):
        assert (x["image_id"], x["category_id"]) == (y["image_id"], y["category_id"])
        assert x["score"] == pytest.approx(y["score"], abs=1e-6)
        np.testing.assert_allclose(x["bbox"], y["bbox"], atol=1e-3)
        # the mask branch ran on the same boxes mapped into the view and back (float round-off at most)
        mx, my = mask_util.decode(x["segmentation"]), mask_util.decode(y["segmentation"])
        assert (mx != my).sum() <= 2
    recorded = json.load(open(one.replace(".json", "-metrics.json")))["model"]["test_time_augmentation"]
    assert recorded["views"] == [[96, False]] and recorded["nms_thresh"] == 0.5
    assert "test_time_augmentation" not in json.load(open(plain.replace(".json", "-metrics.json")))["model"]


def test_mirrored_and_resized_views_evaluate_and_benchmark_end_to_end(setup, tmp_path):
    out = str(tmp_path / "tta.json")
    proc = predict(setup, "--evaluate", out, "--benchmark", config=["TEST.AUGMENT.ENABLED=True",
                                                                    "TEST.AUGMENT.SHORT_EDGE_SIZES=[96,72]"])
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "4 views (short edge 96, 96 mirrored, 72, 72 mirrored" in proc.stderr + proc.stdout
    # the benchmark times the single view and the four alternately, and their ratio
    (line,) = [x for x in proc.stdout.splitlines() if x.startswith("Inference at 96x128: ")]
    assert "single view median" in line and "test-time augmentation (4 views) median" in line
    assert "over 10 runs; ratio" in line and line.endswith("measured alternately.")
    info = json.load(open(out.replace(".json", "-metrics.json")))
    assert info["model"]["test_time_augmentation"]["views"] == [[96, False], [96, True], [72, False], [72, True]]
    assert info["metrics"]["segm/AP"] is not None
    results = json.load(open(out))
    images = {1: (60, 80), 2: (70, 50), 3: (40, 40)}
    assert {r["image_id"] for r in results} == set(images)
    for r in results:  # boxes and masks in each (non-square) image's own frame
        h, w = images[r["image_id"]]
        x, y, bw, bh = r["bbox"]
        assert x >= 0 and y >= 0 and x + bw <= w + 1e-3 and y + bh <= h + 1e-3
        assert r["segmentation"]["size"] == [h, w]


def test_an_export_with_augmentation_is_refused_in_one_line(setup, tmp_path):
    proc = predict(setup, "--export-pb", str(tmp_path / "m.pb"), config=["TEST.AUGMENT.ENABLED=True"])
    assert proc.returncode != 0 and "Traceback" not in proc.stderr
    assert proc.stderr.strip().splitlines()[-1].startswith("Error: TEST.AUGMENT.ENABLED=True: the exported graph "
                                                           "sees one view")
    assert not (tmp_path / "m.pb").exists()
