"""Every Tensorpack model-zoo variable list through predict.py: a zoo-named .npz of random values,
built from the list alone (not from our graph), loads with nothing missing or unused and
predict.py draws its detections. In a file of its own so that ``--dist loadfile`` can run it
beside test_model_zoo_compat.py."""
import os
import subprocess
import sys

import cv2
import numpy as np
import pytest

from tests.modeling.test_model_zoo_compat import _reference

from tests.conftest import ROOT

pytestmark = pytest.mark.slow

#: The file each reference list describes, named as in the Tensorpack model zoo (which has no
#: Faster R-CNN file: the no-mask list is R50-FPN with MODE_MASK=False, named after it), and its
#: predict.py configuration: the preset of that file (README, "Model-zoo compatibility").
ZOO_FILES = {
    "tensorpack_r50fpn_mask_variables.json": ("COCO-MaskRCNN-R50FPN2x.npz", ["--preset", "zoo-r50fpn-2x"]),
    "tensorpack_r50fpn_gn_mask_variables.json": ("COCO-MaskRCNN-R50FPN2xGN.npz", ["--preset", "zoo-r50fpn-gn-2x"]),
    "tensorpack_r101fpn_mask_variables.json": ("COCO-MaskRCNN-R101FPN1x.npz", ["--preset", "zoo-r101fpn-1x"]),
    "tensorpack_r50fpn_nomask_variables.json": ("COCO-FasterRCNN-R50FPN.npz", ["--config", "MODE_MASK=False"]),
    "tensorpack_r50c4_mask_variables.json": ("COCO-MaskRCNN-R50C41x.npz", ["--preset", "zoo-r50c4-1x"]),
    "tensorpack_r50fpn_cascade_mask_variables.json": ("COCO-MaskRCNN-R50FPN1xCas.npz",
                                                      ["--preset", "zoo-r50fpn-cascade-1x"]),
}
#: Test-time keys only (no variable depends on them): a 128 px image, few proposals and
#: detections, every detection drawn. They keep one predict.py run of an R50/R101 on 2 CPU cores
#: to seconds; with the defaults (800 px, 1000 proposals) a C4 model runs res5 on 1000 RoIs.
CHEAP_TEST_TIME = ["PREPROC.TEST_SHORT_EDGE_SIZE=128", "PREPROC.MAX_SIZE=160", "RPN.TEST_POST_NMS_TOPK=50",
                   "RPN.TEST_PER_LEVEL_NMS_TOPK=50", "TEST.RESULTS_PER_IM=8", "TEST.RESULT_SCORE_THRESH_VIS=0.0"]


def random_zoo_arrays(reference, seed=0):
    """``{name:0: float32 array}`` with exactly the reference list's names and shapes, built from
    the list alone (not from our graph). Values keep a 50-101-layer forward pass finite and
    tame: He-scaled kernels, norm scales and variances in [0.5, 1.5] except the last norm of each
    residual branch (0.05-0.15, so that the residual sum does not double at every block), small
    biases, shifts and means."""
    rng = np.random.default_rng(seed)
    arrays = {}
    for name, shape in reference.items():
        if name.endswith("/W"):
            fan_in = int(np.prod(shape[:-1]))
            value = rng.standard_normal(shape, dtype=np.float32) * np.float32(np.sqrt(2.0 / fan_in))
        elif name.endswith(("conv3/bn/gamma", "conv3/gn/gamma")):
            value = rng.uniform(0.05, 0.15, shape)
        elif name.endswith(("/gamma", "/variance/EMA")):
            value = rng.uniform(0.5, 1.5, shape)
        else:
            value = rng.standard_normal(shape) * 0.1
        arrays[name + ":0"] = np.asarray(value, np.float32)
    return arrays


@pytest.fixture(scope="module")
def picture(tmp_path_factory):
    """A 120 x 160 BGR JPEG with a few filled shapes, and its decoded pixels."""
    path = str(tmp_path_factory.mktemp("img") / "img.jpg")
    rng = np.random.RandomState(1)
    img = rng.randint(40, 120, (120, 160, 3)).astype(np.uint8)
    cv2.rectangle(img, (20, 15), (70, 90), (30, 200, 60), -1)
    cv2.circle(img, (115, 60), 30, (200, 40, 40), -1)
    cv2.imwrite(path, img)
    return path, cv2.imread(path, cv2.IMREAD_COLOR)


@pytest.mark.parametrize("reference", sorted(ZOO_FILES))
def test_predict_py_draws_with_a_random_model_zoo_file_that_loads_fully(tmp_path, picture, reference):
    """For every reference list: a model-zoo-named .npz of random values (names and shapes from
    the list) loads into ``predict.py`` with its zoo configuration with nothing missing or unused
    (the load report), and ``predict.py --predict`` writes a picture with the detections drawn.
    One process per list, all six: 137 s on the 2-core AMD EPYC (R101 44 s, Cascade 24 s, the
    other R50s 15-18 s each; graph building and loading dominate, the 128 px image costs little)."""
    zoo_name, zoo_args = ZOO_FILES[reference]
    expected = _reference(reference)
    model = str(tmp_path / zoo_name)
    np.savez(model, **random_zoo_arrays(expected))
    image, pixels = picture
    cmd = [sys.executable, os.path.join(ROOT, "predict.py"), "--predict", image, "--load", model,
           "--output-dir", str(tmp_path / "out"), *zoo_args]
    cmd += CHEAP_TEST_TIME if "--config" in zoo_args else ["--config", *CHEAP_TEST_TIME]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600, cwd=ROOT)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-3000:]
    assert f"Loaded {len(expected)} variables from '{model}'." in out, out[-3000:]
    assert "not in the file" not in out and "not used by this graph" not in out and "another shape" not in out
    drawn = cv2.imread(str(tmp_path / "out" / "img.png"), cv2.IMREAD_COLOR)
    assert drawn is not None and drawn.shape == pixels.shape
    detections = int(out.split("img.jpg: ", 1)[1].split(" detections", 1)[0])
    assert detections > 0, out[-2000:]
    # boxes, captions (and masks) are drawn: many pixels differ from the input's
    assert (np.abs(drawn.astype(int) - pixels).max(axis=2) > 0).sum() > 200
