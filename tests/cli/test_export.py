"""``predict.py --export-serving/--export-pb`` through the command line, on a 150 x 230 image
that needs resizing (to 83 x 128 at the tiny test size: a short edge of 96 would make it 147 wide,
above the 128 cap): boxes in image coordinates, compared with the in-process predictor, which
maps boxes back by the same rule (whatever that rule is).

The exported graph resizes with TensorFlow's bilinear resize and the predictor with OpenCV's, so
the image is smooth (the two agree within about a grey level there) and boxes are matched with a
tolerance instead of compared in order.
"""
import os
import subprocess
import sys

import cv2
import numpy as np
import pytest

from tests.helpers import TINY, config_snapshot, configure, write_random_model
from tests.engine.test_export import PLAIN_TF
from tests.engine.test_training import ROOT

H, W = 150, 230
CLASSES = ["a", "b", "c"]
EXTRA = {"TEST.RESULT_SCORE_THRESH": 0.0, "TEST.RESULTS_PER_IM": 30}


def _cli_config():
    values = dict({k: v for k, v in TINY.items() if k != "TRAIN.NUM_GPUS"}, **EXTRA)
    return [f"{k}={v!r}" if not isinstance(v, str) else f"{k}={v}" for k, v in values.items()] + \
        [f"DATA.CLASS_NAMES={CLASSES!r}"]


def _smooth_image():
    yy, xx = np.mgrid[0:H, 0:W].astype(np.float32)
    img = np.stack([80 + 60 * np.sin(xx / 23.0), 90 + 50 * np.cos(yy / 17.0), 100 + 0.3 * xx], -1)
    cv2.rectangle(img, (120, 40), (200, 110), (30, 220, 60), -1)   # an object in the wide half
    return cv2.GaussianBlur(img, (0, 0), 4).clip(0, 255).astype(np.uint8)


def _matched_fraction(got, want, tol):
    """Fraction of boxes in ``got`` with a box of the same label in ``want`` within ``tol`` px."""
    hits = 0
    for box, label in zip(got["boxes"], got["labels"]):
        same = want["boxes"][want["labels"] == label]
        hits += len(same) > 0 and np.abs(same - box).max(axis=1).min() <= tol
    return hits / max(1, len(got["boxes"]))


@pytest.mark.slow
def test_predict_cli_exports_a_graph_that_maps_boxes_like_the_predictor(tmp_path):
    from maskplus.engine.inference import build_predictor, run_network
    weights = str(tmp_path / "model.npz")
    image = _smooth_image()
    with config_snapshot():
        configure(EXTRA, class_names=CLASSES, training=False)
        write_random_model(weights)
        out = run_network(build_predictor(weights), image)
    want = {"boxes": out.boxes, "labels": out.labels}
    assert len(out.boxes) >= 10

    saved, frozen = tmp_path / "saved", tmp_path / "model.pb"
    proc = subprocess.run([sys.executable, os.path.join(ROOT, "predict.py"), "--export-serving", str(saved),
                           "--export-pb", str(frozen), "--load", weights, "--config", *_cli_config()],
                          capture_output=True, text=True, timeout=600, cwd=ROOT)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert (saved / "saved_model.pb").is_file() and frozen.is_file()

    np.save(tmp_path / "image.npy", image)
    script = tmp_path / "plain_tf.py"
    script.write_text(PLAIN_TF)
    proc = subprocess.run([sys.executable, str(script), str(tmp_path / "image.npy"), str(saved), str(frozen),
                           str(tmp_path / "out.npz")], capture_output=True, text=True, timeout=300,
                          env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2"))
    assert proc.returncode == 0, proc.stderr[-3000:]
    res = np.load(tmp_path / "out.npz")
    for prefix in ("saved_", "frozen_"):
        got = {"boxes": res[prefix + "boxes"], "labels": res[prefix + "labels"]}
        assert len(got["boxes"]) >= 10
        # boxes in the original 230 x 150 frame, spanning its wide axis (an x/y swap would not)
        assert got["boxes"][:, [0, 2]].max() > H and got["boxes"][:, [1, 3]].max() <= H + 1e-3
        assert got["boxes"][:, [0, 2]].max() <= W + 1e-3 and got["boxes"].min() >= 0
        assert _matched_fraction(got, want, tol=2.0) >= 0.8, (got["boxes"][:5], want["boxes"][:5])
        assert res[prefix + "masks"].shape == (len(got["boxes"]), 28, 28)
